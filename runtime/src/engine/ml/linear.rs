//! Linear models: `LinearClassifier` (logistic regression, linear SVMs from liblinear) and
//! `LinearRegressor`, as ONNX Runtime computes them: `x · coefficientsᵀ + intercepts`, then the
//! label (the largest score; one score against zero for a single class) and the post-transform
//! (one score takes only `PROBIT`, or becomes `[1 − s, s]` for a two-label classifier).

use tract_nnef::tract_core::internal::*;

use super::record::{NnefForm, Reader, Record};
use super::rows::{Out, Rows};
use super::{probit, Labels, Post};
#[cfg(feature = "onnx")]
pub use parse::register;

/// `x · Wᵀ + b` for each row: `w` is `[targets, features]`.
fn affine(x: &[f32], features: usize, w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let targets = w.len() / features.max(1);
    let mut out = Vec::with_capacity(x.len() / features.max(1) * targets);
    for row in x.chunks_exact(features.max(1)) {
        for (t, wt) in w.chunks_exact(features.max(1)).enumerate() {
            let dot: f32 = row.iter().zip(wt).map(|(a, b)| a * b).sum();
            out.push(dot + b.map_or(0.0, |b| b[t]));
        }
    }
    out
}

/// `LinearClassifier`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearClassifier {
    coefficients: Vec<f32>,
    intercepts: Vec<f32>,
    features: usize,
    labels: Labels,
    /// One score and two labels: the scores are `[1 − s, s]`.
    second_class: bool,
    post: Post,
}

impl LinearClassifier {
    /// `coefficients` `[classes, features]` (the class count is `intercepts`' length).
    pub fn new(
        coefficients: Vec<f32>,
        intercepts: Vec<f32>,
        labels: Labels,
        post: Post,
    ) -> TractResult<LinearClassifier> {
        let classes = intercepts.len();
        ensure!(
            classes > 0,
            "no intercepts (the class count is read from them)"
        );
        ensure!(
            !coefficients.is_empty() && coefficients.len().is_multiple_of(classes),
            "{} coefficients for {classes} classes",
            coefficients.len()
        );
        Ok(LinearClassifier {
            features: coefficients.len() / classes,
            coefficients,
            intercepts,
            second_class: classes == 1 && labels.len() == 2,
            labels,
            post,
        })
    }
}

impl NnefForm for LinearClassifier {
    const KIND: &'static str = "LinearClassifier";

    fn write(&self, r: &mut Record) {
        r.floats(&self.coefficients);
        r.floats(&self.intercepts);
        r.labels(&self.labels);
        r.text(self.post.name());
    }

    fn read(r: &mut Reader) -> TractResult<Self> {
        LinearClassifier::new(
            r.floats("coefficients")?,
            r.floats("intercepts")?,
            r.labels()?,
            r.post()?,
        )
    }
}

impl Rows for LinearClassifier {
    fn name(&self) -> &'static str {
        "LinearClassifier"
    }

    fn outputs(&self) -> TVec<Out> {
        let classes = if self.second_class {
            2
        } else {
            self.intercepts.len()
        };
        tvec![Out::Label, Out::F32(classes)]
    }

    fn features(&self) -> Option<usize> {
        Some(self.features)
    }

    fn run(&self, x: &[f32], rows: usize, features: usize) -> TractResult<TVec<Tensor>> {
        let scores = affine(x, features, &self.coefficients, Some(&self.intercepts));
        let classes = self.intercepts.len();
        let mut labels = Vec::with_capacity(rows);
        let mut out = Vec::with_capacity(rows * classes.max(2));
        for row in scores.chunks_exact(classes) {
            if classes == 1 {
                let s = row[0];
                let (pos, neg) = if self.labels.len() == 2 {
                    (self.labels.value(1), self.labels.value(0))
                } else {
                    (1, 0)
                };
                labels.push(if s > 0.0 { pos } else { neg });
                if self.post == Post::Probit {
                    out.push(probit(s));
                    if self.second_class {
                        out.push(0.0);
                    }
                } else if self.second_class {
                    out.extend([1.0 - s, s]);
                } else {
                    out.push(s);
                }
            } else {
                let best = (1..classes).fold(0, |b, k| if row[k] > row[b] { k } else { b });
                labels.push(self.labels.value(best));
                let at = out.len();
                out.extend_from_slice(row);
                self.post.apply(&mut out[at..]);
            }
        }
        let width = out.len() / rows.max(1);
        Ok(tvec!(
            Tensor::from_shape(&[rows], &labels)?,
            Tensor::from_shape(&[rows, width], &out)?
        ))
    }
}

/// `LinearRegressor`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearRegressor {
    coefficients: Vec<f32>,
    intercepts: Option<Vec<f32>>,
    features: usize,
    post: Post,
}

impl LinearRegressor {
    /// `coefficients` `[targets, features]`; `intercepts` apply when there is one per target.
    pub fn new(
        coefficients: Vec<f32>,
        targets: i64,
        intercepts: Vec<f32>,
        post: Post,
    ) -> TractResult<LinearRegressor> {
        ensure!(targets > 0, "targets {targets}");
        let targets = targets as usize;
        ensure!(
            !coefficients.is_empty() && coefficients.len().is_multiple_of(targets),
            "{} coefficients for {targets} targets",
            coefficients.len()
        );
        Ok(LinearRegressor {
            features: coefficients.len() / targets,
            coefficients,
            intercepts: (intercepts.len() == targets).then_some(intercepts),
            post,
        })
    }
}

impl NnefForm for LinearRegressor {
    const KIND: &'static str = "LinearRegressor";

    fn write(&self, r: &mut Record) {
        r.floats(&self.coefficients);
        r.int((self.coefficients.len() / self.features) as i64);
        r.floats(self.intercepts.as_deref().unwrap_or_default());
        r.text(self.post.name());
    }

    fn read(r: &mut Reader) -> TractResult<Self> {
        LinearRegressor::new(
            r.floats("coefficients")?,
            r.int("targets")?,
            r.floats("intercepts")?,
            r.post()?,
        )
    }
}

impl Rows for LinearRegressor {
    fn name(&self) -> &'static str {
        "LinearRegressor"
    }

    fn outputs(&self) -> TVec<Out> {
        tvec![Out::F32(self.coefficients.len() / self.features)]
    }

    fn features(&self) -> Option<usize> {
        Some(self.features)
    }

    fn run(&self, x: &[f32], rows: usize, features: usize) -> TractResult<TVec<Tensor>> {
        let targets = self.coefficients.len() / self.features;
        let mut y = affine(x, features, &self.coefficients, self.intercepts.as_deref());
        if targets == 1 {
            if self.post == Post::Probit {
                y.iter_mut().for_each(|v| *v = probit(*v));
            }
        } else {
            y.chunks_exact_mut(targets).for_each(|r| self.post.apply(r));
        }
        Ok(tvec!(Tensor::from_shape(&[rows, targets], &y)?))
    }
}

// f32 parameters: see `rows`' module doc on `Eq`
impl Eq for LinearClassifier {}
impl Eq for LinearRegressor {}

#[cfg(feature = "onnx")]
mod parse {
    use tract_onnx::model::{OnnxOpRegister, ParsingContext};
    use tract_onnx::pb::NodeProto;
    use tract_onnx::tract_hir::internal::*;

    use super::super::rows::parsed;
    use super::super::{Labels, Post};
    use super::{LinearClassifier, LinearRegressor};

    /// Registers both (in place of tract's).
    pub fn register(reg: &mut OnnxOpRegister) {
        reg.insert("LinearClassifier", classifier);
        reg.insert("LinearRegressor", regressor);
    }

    fn classifier(
        _: &ParsingContext,
        node: &NodeProto,
    ) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
        let what = || format!("LinearClassifier '{}'", node.name);
        let coefficients = node.get_attr_vec::<f32>("coefficients")?;
        let intercepts = node
            .get_attr_opt_vec::<f32>("intercepts")?
            .unwrap_or_default();
        let labels = Labels::of(node, "classlabels_ints", "classlabels_strings")?
            .with_context(|| format!("{}: no classlabels_ints or classlabels_strings", what()))?;
        parsed(
            LinearClassifier::new(coefficients, intercepts, labels, Post::of(node)?)
                .with_context(what)?,
        )
    }

    fn regressor(
        _: &ParsingContext,
        node: &NodeProto,
    ) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
        let what = || format!("LinearRegressor '{}'", node.name);
        let coefficients = node.get_attr_vec::<f32>("coefficients")?;
        let targets = node.get_attr_opt::<i64>("targets")?.unwrap_or(1);
        let intercepts = node
            .get_attr_opt_vec::<f32>("intercepts")?
            .unwrap_or_default();
        parsed(
            LinearRegressor::new(coefficients, targets, intercepts, Post::of(node)?)
                .with_context(what)?,
        )
    }
}
