//! Support vector machines: `SVMClassifier` (libsvm's one-against-one classifiers: votes, or
//! probabilities from Platt's pairwise sigmoids combined by Wu, Lin and Weng's method) and
//! `SVMRegressor`, with the linear, polynomial, RBF and sigmoid kernels; liblinear models (no
//! support vectors) are one linear score per class. As ONNX Runtime computes them
//! (`svmclassifier.cc`, `svmregressor.cc`), including its binary label rule.

use tract_nnef::tract_core::internal::*;

use super::record::{NnefForm, Reader, Record};
use super::rows::{Out, Rows};
use super::{logistic, Labels, Post};
#[cfg(feature = "onnx")]
pub use parse::register;

/// The kernel between an input row and a support vector (or a coefficient row): `gamma`,
/// `coef0` and `degree` are `kernel_params`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[allow(missing_docs)]
pub enum Kernel {
    /// `x · v`.
    Linear,
    /// `(γ x · v + c)^d`.
    Poly { gamma: f32, coef0: f32, degree: f32 },
    /// `exp(−γ |x − v|²)`.
    Rbf { gamma: f32 },
    /// `tanh(γ x · v + c)`.
    Sigmoid { gamma: f32, coef0: f32 },
}

impl Kernel {
    /// From `kernel_type` and `kernel_params` (`[gamma, coef0, degree]`, or none).
    pub fn new(kind: &str, params: &[f32]) -> TractResult<Kernel> {
        let (gamma, coef0, degree) = match params[..] {
            [] => (0.0, 0.0, 0.0),
            [g, c, d, ..] => (g, c, d),
            _ => bail!("kernel_params needs gamma, coef0 and degree"),
        };
        Ok(match kind {
            "LINEAR" => Kernel::Linear,
            "POLY" => Kernel::Poly {
                gamma,
                coef0,
                degree,
            },
            "RBF" => Kernel::Rbf { gamma },
            "SIGMOID" => Kernel::Sigmoid { gamma, coef0 },
            other => bail!("kernel_type '{other}' (expected LINEAR, POLY, RBF or SIGMOID)"),
        })
    }

    /// Its `kernel_type` and `kernel_params` ([`Kernel::new`]'s inverse).
    fn describe(self) -> (&'static str, [f32; 3]) {
        match self {
            Kernel::Linear => ("LINEAR", [0.0; 3]),
            Kernel::Poly {
                gamma,
                coef0,
                degree,
            } => ("POLY", [gamma, coef0, degree]),
            Kernel::Rbf { gamma } => ("RBF", [gamma, 0.0, 0.0]),
            Kernel::Sigmoid { gamma, coef0 } => ("SIGMOID", [gamma, coef0, 0.0]),
        }
    }

    /// The kernel of `x` and every row of `vectors` (`x.len()` values each), plus `c` for
    /// the linear kernel (its bias when it scores coefficient rows).
    fn dots(self, x: &[f32], vectors: &[f32], c: f32) -> Vec<f32> {
        vectors
            .chunks_exact(x.len().max(1))
            .map(|v| match self {
                Kernel::Rbf { gamma } => {
                    let d: f32 = x.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum();
                    (-gamma * d).exp()
                }
                _ => {
                    let dot: f32 = x.iter().zip(v).map(|(a, b)| a * b).sum();
                    match self {
                        Kernel::Linear => dot + c,
                        Kernel::Poly {
                            gamma,
                            coef0,
                            degree,
                        } => (gamma * dot + coef0).powf(degree),
                        Kernel::Sigmoid { gamma, coef0 } => (gamma * dot + coef0).tanh(),
                        Kernel::Rbf { .. } => unreachable!("handled above"),
                    }
                }
            })
            .collect()
    }
}

/// libsvm (support vectors) or liblinear (a coefficient row per class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Svc,
    Linear,
}

/// `SVMClassifier`.
#[derive(Debug, Clone, PartialEq)]
pub struct SvmClassifier {
    kernel: Kernel,
    features: usize,
    mode: Mode,
    per_class: Vec<usize>,
    support: Vec<f32>,
    coefficients: Vec<f32>,
    rho: Vec<f32>,
    prob_a: Vec<f32>,
    prob_b: Vec<f32>,
    labels: Labels,
    all_positive: bool,
    post: Post,
}

/// `SVMClassifier`'s attributes (the ONNX names), before they are checked.
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct SvmClassifierSpec {
    pub classlabels: Option<Labels>,
    pub vectors_per_class: Vec<i64>,
    pub support_vectors: Vec<f32>,
    pub coefficients: Vec<f32>,
    pub rho: Vec<f32>,
    pub prob_a: Vec<f32>,
    pub prob_b: Vec<f32>,
    pub kernel_type: String,
    pub kernel_params: Vec<f32>,
    pub post_transform: String,
}

impl SvmClassifier {
    /// Checks `spec` and builds the classifier.
    pub fn new(spec: SvmClassifierSpec) -> TractResult<SvmClassifier> {
        let labels = spec
            .classlabels
            .context("no classlabels_ints or classlabels_strings")?;
        let classes = labels.len();
        ensure!(classes > 0, "no class labels");
        let per_class: Vec<usize> = spec
            .vectors_per_class
            .iter()
            .map(|&v| usize::try_from(v).map_err(|_| format_err!("vectors_per_class {v}")))
            .collect::<TractResult<_>>()?;
        let vectors: usize = per_class.iter().sum();
        let (support, coefficients, rho) = (spec.support_vectors, spec.coefficients, spec.rho);
        let (prob_a, prob_b) = (spec.prob_a, spec.prob_b);
        ensure!(
            prob_a.len() == prob_b.len(),
            "prob_a and prob_b differ in length"
        );
        ensure!(
            !coefficients.is_empty() && !rho.is_empty(),
            "no coefficients or rho"
        );
        let pairs = classes * (classes - 1) / 2;
        let (kernel, features, mode) = if vectors > 0 {
            ensure!(
                per_class.len() == classes,
                "vectors_per_class has {} entries for {classes} classes",
                per_class.len()
            );
            ensure!(
                support.len() % vectors == 0,
                "{} support vector values for {vectors} vectors",
                support.len()
            );
            ensure!(
                coefficients.len() >= (classes - 1) * vectors,
                "{} coefficients, expected {}",
                coefficients.len(),
                (classes - 1) * vectors
            );
            ensure!(
                rho.len() >= pairs,
                "{} rho values for {pairs} class pairs",
                rho.len()
            );
            ensure!(
                prob_a.is_empty() || prob_a.len() >= pairs,
                "{} prob_a values for {pairs} class pairs",
                prob_a.len()
            );
            (
                Kernel::new(&spec.kernel_type, &spec.kernel_params)?,
                support.len() / vectors,
                Mode::Svc,
            )
        } else {
            ensure!(
                coefficients.len() % classes == 0,
                "{} coefficients for {classes} classes",
                coefficients.len()
            );
            (Kernel::Linear, coefficients.len() / classes, Mode::Linear)
        };
        Ok(SvmClassifier {
            all_positive: coefficients.iter().all(|&c| c >= 0.0),
            kernel,
            features,
            mode,
            per_class,
            support,
            coefficients,
            rho,
            prob_a,
            prob_b,
            labels,
            post: Post::parse(&spec.post_transform)?,
        })
    }

    fn classes(&self) -> usize {
        self.labels.len()
    }

    fn pairs(&self) -> usize {
        self.classes() * (self.classes() - 1) / 2
    }

    /// Scores per row: classes, or (libsvm without probabilities) one per class pair, at least 2.
    fn width(&self) -> usize {
        match (self.mode, self.prob_a.is_empty()) {
            (Mode::Svc, true) if self.classes() > 2 => self.pairs(),
            (Mode::Svc, true) => 2,
            _ => self.classes(),
        }
    }

    /// One row: its scores (`width()` of them) and label.
    fn row(&self, x: &[f32]) -> (Vec<f32>, i64) {
        let classes = self.classes();
        let have_proba = !self.prob_a.is_empty();
        let mut votes = vec![0i64; classes];
        let mut scores: Vec<f32>;
        if self.mode == Mode::Linear {
            scores = self.kernel.dots(x, &self.coefficients, self.rho[0]);
        } else {
            let k = self.kernel.dots(x, &self.support, 0.0);
            let vectors = k.len();
            let mut start = Vec::with_capacity(classes);
            let mut acc = 0;
            for &n in &self.per_class {
                start.push(acc);
                acc += n;
            }
            scores = Vec::with_capacity(self.pairs());
            let mut pair = 0;
            for i in 0..classes - 1 {
                for j in i + 1..classes {
                    let mut sum = 0f64;
                    let (si, sj) = (start[i], start[j]);
                    for m in 0..self.per_class[i] {
                        sum +=
                            self.coefficients[vectors * (j - 1) + si + m] as f64 * k[si + m] as f64;
                    }
                    for m in 0..self.per_class[j] {
                        sum += self.coefficients[vectors * i + sj + m] as f64 * k[sj + m] as f64;
                    }
                    sum += self.rho[pair] as f64;
                    pair += 1;
                    scores.push(sum as f32);
                    votes[if sum > 0.0 { i } else { j }] += 1;
                }
            }
            if have_proba {
                scores = self.probabilities(&scores);
            }
        }
        // the winner: most votes (libsvm), else the largest score
        let (maxclass, max_weight) = if self.mode == Mode::Svc {
            let best = (0..classes).fold(0, |b, c| if votes[c] > votes[b] { c } else { b });
            (best, 0.0)
        } else {
            let best = (1..scores.len()).fold(0, |b, c| if scores[c] > scores[b] { c } else { b });
            (best, scores[best])
        };
        let label = if self.pairs() == 1 {
            if classes == 2 {
                if !have_proba
                    && ((self.all_positive && max_weight >= 0.5)
                        || (max_weight > 0.0 && !self.all_positive))
                {
                    self.labels.value(1)
                } else {
                    self.labels.value(maxclass)
                }
            } else {
                i64::from(max_weight > 0.0)
            }
        } else {
            self.labels.value(maxclass)
        };
        // post-transform; libsvm without probabilities and two classes writes `[−s, s]` (none)
        // or `[1 − s, s]`
        let second = (self.mode == Mode::Svc && !have_proba && classes <= 2)
            .then_some(self.post == Post::None);
        if scores.len() >= 2 {
            self.post.apply(&mut scores);
        } else if let (Some(&s), Some(none)) = (scores.first(), second) {
            scores = if self.post == Post::Probit {
                vec![super::probit(s), 0.0]
            } else if none {
                vec![-s, s]
            } else {
                vec![1.0 - s, s]
            };
        } else if self.post == Post::Probit {
            scores.iter_mut().for_each(|s| *s = super::probit(*s));
        }
        scores.resize(self.width(), 0.0);
        (scores, label)
    }

    /// Class probabilities from the pairwise decision values: Platt's sigmoid per pair, then
    /// the pairwise coupling of Wu, Lin and Weng (libsvm's `multiclass_probability`).
    fn probabilities(&self, decisions: &[f32]) -> Vec<f32> {
        let k = self.classes();
        let mut r = vec![0f32; k * k];
        let mut index = 0;
        for i in 0..k - 1 {
            for j in i + 1..k {
                let p = 1.0 - logistic(decisions[index] * self.prob_a[index] + self.prob_b[index]);
                let p = p.clamp(1e-7, 1.0 - 1e-7);
                r[i * k + j] = p;
                r[j * k + i] = 1.0 - p;
                index += 1;
            }
        }
        multiclass_probability(k, &r)
    }
}

/// libsvm's pairwise coupling (as ONNX Runtime's `multiclass_probability` computes it, in f32,
/// at most 100 iterations).
fn multiclass_probability(k: usize, r: &[f32]) -> Vec<f32> {
    let mut q = vec![0f32; k * k];
    let mut qp = vec![0f32; k];
    let mut p = vec![1.0 / k as f32; k];
    let eps = 0.005 / k as f32;
    for i in 0..k {
        for j in 0..i {
            q[i * k + i] += r[j * k + i] * r[j * k + i];
            q[i * k + j] = q[j * k + i];
        }
        for j in i + 1..k {
            q[i * k + i] += r[j * k + i] * r[j * k + i];
            q[i * k + j] = -r[j * k + i] * r[i * k + j];
        }
    }
    for _ in 0..100 {
        let mut pqp = 0.0;
        for i in 0..k {
            qp[i] = (0..k).map(|j| q[i * k + j] * p[j]).sum();
            pqp += p[i] * qp[i];
        }
        let max_error = (0..k).map(|i| (qp[i] - pqp).abs()).fold(0f32, f32::max);
        if max_error < eps {
            break;
        }
        for i in 0..k {
            let diff = (-qp[i] + pqp) / q[i * k + i];
            p[i] += diff;
            pqp = (pqp + diff * (diff * q[i * k + i] + 2.0 * qp[i])) / (1.0 + diff) / (1.0 + diff);
            for j in 0..k {
                qp[j] = (qp[j] + diff * q[i * k + j]) / (1.0 + diff);
                p[j] /= 1.0 + diff;
            }
        }
    }
    p
}

impl NnefForm for SvmClassifier {
    const KIND: &'static str = "SVMClassifier";

    fn write(&self, r: &mut Record) {
        let (kind, params) = self.kernel.describe();
        r.labels(&self.labels);
        let per_class: Vec<i64> = self.per_class.iter().map(|&v| v as i64).collect();
        r.ints(&per_class);
        r.floats(&self.support);
        r.floats(&self.coefficients);
        r.floats(&self.rho);
        r.floats(&self.prob_a);
        r.floats(&self.prob_b);
        r.text(kind);
        r.floats(&params);
        r.text(self.post.name());
    }

    fn read(r: &mut Reader) -> TractResult<Self> {
        SvmClassifier::new(SvmClassifierSpec {
            classlabels: Some(r.labels()?),
            vectors_per_class: r.ints("vectors_per_class")?,
            support_vectors: r.floats("support_vectors")?,
            coefficients: r.floats("coefficients")?,
            rho: r.floats("rho")?,
            prob_a: r.floats("prob_a")?,
            prob_b: r.floats("prob_b")?,
            kernel_type: r.text("kernel_type")?,
            kernel_params: r.floats("kernel_params")?,
            post_transform: r.text("post_transform")?,
        })
    }
}

impl Rows for SvmClassifier {
    fn name(&self) -> &'static str {
        "SVMClassifier"
    }

    fn outputs(&self) -> TVec<Out> {
        tvec![Out::Label, Out::F32(self.width())]
    }

    fn features(&self) -> Option<usize> {
        Some(self.features)
    }

    fn run(&self, x: &[f32], rows: usize, features: usize) -> TractResult<TVec<Tensor>> {
        let (mut labels, mut scores) = (Vec::with_capacity(rows), Vec::new());
        for row in x.chunks_exact(features.max(1)).take(rows) {
            let (s, l) = self.row(row);
            scores.extend(s);
            labels.push(l);
        }
        Ok(tvec!(
            Tensor::from_shape(&[rows], &labels)?,
            Tensor::from_shape(&[rows, self.width()], &scores)?
        ))
    }
}

/// `SVMRegressor` (`one_class`: the sign of the decision value).
#[derive(Debug, Clone, PartialEq)]
pub struct SvmRegressor {
    kernel: Kernel,
    features: usize,
    vectors: usize,
    support: Vec<f32>,
    coefficients: Vec<f32>,
    rho: f32,
    one_class: bool,
}

impl SvmRegressor {
    /// From `n_supports`, `support_vectors`, `coefficients`, `rho`, the kernel and `one_class`.
    pub fn new(
        n_supports: i64,
        support: Vec<f32>,
        coefficients: Vec<f32>,
        rho: &[f32],
        kernel: (&str, &[f32]),
        one_class: bool,
    ) -> TractResult<SvmRegressor> {
        let vectors =
            usize::try_from(n_supports).map_err(|_| format_err!("n_supports {n_supports}"))?;
        ensure!(
            !coefficients.is_empty() && !rho.is_empty(),
            "no coefficients or rho"
        );
        let (kernel, features) = if vectors > 0 {
            ensure!(
                support.len().is_multiple_of(vectors) && coefficients.len() >= vectors,
                "{} support values, {} coefficients for {vectors} vectors",
                support.len(),
                coefficients.len()
            );
            (Kernel::new(kernel.0, kernel.1)?, support.len() / vectors)
        } else {
            (Kernel::Linear, coefficients.len())
        };
        Ok(SvmRegressor {
            kernel,
            features,
            vectors,
            support,
            coefficients,
            rho: rho[0],
            one_class,
        })
    }
}

impl NnefForm for SvmRegressor {
    const KIND: &'static str = "SVMRegressor";

    fn write(&self, r: &mut Record) {
        let (kind, params) = self.kernel.describe();
        r.int(self.vectors as i64);
        r.floats(&self.support);
        r.floats(&self.coefficients);
        r.float(self.rho);
        r.text(kind);
        r.floats(&params);
        r.int(i64::from(self.one_class));
    }

    fn read(r: &mut Reader) -> TractResult<Self> {
        let vectors = r.int("n_supports")?;
        let support = r.floats("support_vectors")?;
        let coefficients = r.floats("coefficients")?;
        let rho = r.floats("rho")?;
        let kind = r.text("kernel_type")?;
        let params = r.floats("kernel_params")?;
        let one_class = r.int("one_class")? != 0;
        SvmRegressor::new(
            vectors,
            support,
            coefficients,
            &rho,
            (&kind, &params),
            one_class,
        )
    }
}

impl Rows for SvmRegressor {
    fn name(&self) -> &'static str {
        "SVMRegressor"
    }

    fn outputs(&self) -> TVec<Out> {
        tvec![Out::F32(1)]
    }

    fn features(&self) -> Option<usize> {
        Some(self.features)
    }

    fn run(&self, x: &[f32], rows: usize, features: usize) -> TractResult<TVec<Tensor>> {
        let mut y = Vec::with_capacity(rows);
        for row in x.chunks_exact(features.max(1)).take(rows) {
            let v = if self.vectors > 0 {
                let k = self.kernel.dots(row, &self.support, 0.0);
                k.iter()
                    .zip(&self.coefficients)
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
                    + self.rho
            } else {
                Kernel::Linear.dots(row, &self.coefficients, self.rho)[0]
            };
            y.push(if self.one_class {
                if v > 0.0 {
                    1.0
                } else {
                    -1.0
                }
            } else {
                v
            });
        }
        Ok(tvec!(Tensor::from_shape(&[rows, 1], &y)?))
    }
}

// f32 parameters: see `rows`' module doc on `Eq`
impl Eq for SvmClassifier {}
impl Eq for SvmRegressor {}
impl Eq for Kernel {}

#[cfg(feature = "onnx")]
mod parse {
    use tract_onnx::model::{OnnxOpRegister, ParsingContext};
    use tract_onnx::pb::NodeProto;
    use tract_onnx::tract_hir::internal::*;

    use super::super::rows::parsed;
    use super::super::Labels;
    use super::{SvmClassifier, SvmClassifierSpec, SvmRegressor};

    /// Registers both.
    pub fn register(reg: &mut OnnxOpRegister) {
        reg.insert("SVMClassifier", classifier);
        reg.insert("SVMRegressor", regressor);
    }

    /// `kernel_type` (default `LINEAR`) and `kernel_params`.
    fn kernel(node: &NodeProto) -> TractResult<(String, Vec<f32>)> {
        Ok((
            node.get_attr_opt::<&str>("kernel_type")?
                .unwrap_or("LINEAR")
                .to_string(),
            node.get_attr_opt_vec::<f32>("kernel_params")?
                .unwrap_or_default(),
        ))
    }

    fn classifier(
        _: &ParsingContext,
        node: &NodeProto,
    ) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
        let floats = |name: &str| -> TractResult<Vec<f32>> {
            Ok(node.get_attr_opt_vec::<f32>(name)?.unwrap_or_default())
        };
        let (kernel_type, kernel_params) = kernel(node)?;
        let spec = SvmClassifierSpec {
            classlabels: Labels::of(node, "classlabels_ints", "classlabels_strings")?,
            vectors_per_class: node
                .get_attr_opt_vec::<i64>("vectors_per_class")?
                .unwrap_or_default(),
            support_vectors: floats("support_vectors")?,
            coefficients: node.get_attr_vec::<f32>("coefficients")?,
            rho: node.get_attr_vec::<f32>("rho")?,
            prob_a: floats("prob_a")?,
            prob_b: floats("prob_b")?,
            kernel_type,
            kernel_params,
            post_transform: node
                .get_attr_opt::<&str>("post_transform")?
                .unwrap_or("NONE")
                .to_string(),
        };
        parsed(SvmClassifier::new(spec).with_context(|| format!("SVMClassifier '{}'", node.name))?)
    }

    fn regressor(
        _: &ParsingContext,
        node: &NodeProto,
    ) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
        let (kernel_type, kernel_params) = kernel(node)?;
        let op = SvmRegressor::new(
            node.get_attr::<i64>("n_supports")?,
            node.get_attr_opt_vec::<f32>("support_vectors")?
                .unwrap_or_default(),
            node.get_attr_vec::<f32>("coefficients")?,
            &node.get_attr_vec::<f32>("rho")?,
            (&kernel_type, &kernel_params),
            node.get_attr_opt::<i64>("one_class")?.unwrap_or(0) != 0,
        )
        .with_context(|| format!("SVMRegressor '{}'", node.name))?;
        parsed(op)
    }
}
