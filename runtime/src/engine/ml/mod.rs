//! The `ai.onnx.ml` operators that scikit-learn (skl2onnx), LightGBM and XGBoost (onnxmltools)
//! export, as our own ops registered into tract's ONNX parser: tree ensembles
//! ([`trees`]: `TreeEnsembleClassifier`, `TreeEnsembleRegressor`, `TreeEnsemble`), support vector
//! machines ([`svm`]), linear models ([`linear`]), and the feature transforms of a pipeline
//! ([`features`]: `Scaler`, `Normalizer`, `Imputer`, `Binarizer`, `OneHotEncoder`,
//! `LabelEncoder`, `ArrayFeatureExtractor`, `FeatureVectorizer`, `ZipMap`).
//!
//! Their results follow ONNX Runtime's implementation, the reference users compare with, where
//! the standard leaves room: the binary-classifier score layouts, which post-transforms apply to a
//! single score, which classes may win. Class labels that are strings come out as the label's
//! index (the runtime's tensors hold numbers; the bundle's output spec carries the names), and
//! `ZipMap`'s map of labels to probabilities comes out as the probability tensor it was made from.

pub mod features;
pub mod linear;
mod nnef_form;
mod record;
mod rows;
pub mod svm;
pub mod trees;

use tract_nnef::tract_core::internal::*;
#[cfg(feature = "onnx")]
use tract_onnx::{
    model::OnnxOpRegister,
    pb::{tensor_proto, NodeProto, TensorProto},
};

/// The NNEF forms of the operators, which device builds read: [`trees::Trees`] as its own
/// primitive, the others through [`nnef_form`].
pub(crate) use nnef_form::inputs_array;

pub(crate) fn register_nnef(reg: &mut tract_nnef::internal::Registry) {
    trees::register_nnef(reg);
    nnef_form::register_nnef(reg);
}

/// Adds the operators to an ONNX parser's registry (in place of tract's own where it has one).
#[cfg(feature = "onnx")]
pub fn register(reg: &mut OnnxOpRegister) {
    trees::register(reg);
    svm::register(reg);
    linear::register(reg);
    features::register(reg);
}

/// What a model's scores go through last (ONNX `post_transform`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Post {
    /// As they are.
    None,
    /// `1 / (1 + e^-x)` each.
    Logistic,
    /// Softmax over the row.
    Softmax,
    /// Softmax over the row's non-zero scores (zeros stay zero).
    SoftmaxZero,
    /// `√2 · erf⁻¹(2x − 1)` each.
    Probit,
}

impl Post {
    /// From the attribute's text (`NONE`, `LOGISTIC`, ...).
    pub fn parse(text: &str) -> TractResult<Post> {
        Ok(match text {
            "NONE" => Post::None,
            "LOGISTIC" => Post::Logistic,
            "SOFTMAX" => Post::Softmax,
            "SOFTMAX_ZERO" => Post::SoftmaxZero,
            "PROBIT" => Post::Probit,
            other => bail!(
                "post_transform '{other}' (expected NONE, LOGISTIC, SOFTMAX, SOFTMAX_ZERO or PROBIT)"
            ),
        })
    }

    /// The attribute's text ([`Post::parse`]'s inverse).
    pub fn name(self) -> &'static str {
        match self {
            Post::None => "NONE",
            Post::Logistic => "LOGISTIC",
            Post::Softmax => "SOFTMAX",
            Post::SoftmaxZero => "SOFTMAX_ZERO",
            Post::Probit => "PROBIT",
        }
    }

    /// From `post_transform` of `node` (default `NONE`).
    #[cfg(feature = "onnx")]
    pub fn of(node: &NodeProto) -> TractResult<Post> {
        Post::parse(
            node.get_attr_opt::<&str>("post_transform")?
                .unwrap_or("NONE"),
        )
    }

    /// Applies to a row of at least two scores.
    pub fn apply(self, scores: &mut [f32]) {
        match self {
            Post::None => {}
            Post::Logistic => scores.iter_mut().for_each(|s| *s = logistic(*s)),
            Post::Probit => scores.iter_mut().for_each(|s| *s = probit(*s)),
            Post::Softmax => softmax(scores),
            Post::SoftmaxZero => softmax_zero(scores),
        }
    }
}

/// `1 / (1 + e^-x)`, computed on `|x|` so that it does not overflow.
pub fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 {
        1.0 - v
    } else {
        v
    }
}

/// `√2 · erf⁻¹(2x − 1)` with the approximation of erf⁻¹ ONNX Runtime uses.
pub fn probit(x: f32) -> f32 {
    std::f32::consts::SQRT_2 * erf_inv(2.0 * x - 1.0)
}

/// Winitzki's approximation of erf⁻¹ (a = 0.147), as ONNX Runtime computes it.
fn erf_inv(x: f32) -> f32 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let l = ((1.0 - x) * (1.0 + x)).ln();
    let v = 2.0 / (std::f32::consts::PI * 0.147) + 0.5 * l;
    let v2 = 1.0 / 0.147 * l;
    sign * (-v + (v * v - v2).sqrt()).sqrt()
}

/// Softmax over `scores`, the largest subtracted first.
pub fn softmax(scores: &mut [f32]) {
    let top = scores.iter().fold(f32::MIN, |m, &v| m.max(v));
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - top).exp();
        sum += *s;
    }
    scores.iter_mut().for_each(|s| *s /= sum);
}

/// Softmax over the scores that are not zero (to 1e-7); zeros are scaled, not exponentiated.
pub fn softmax_zero(scores: &mut [f32]) {
    let top = scores.iter().fold(f32::MIN, |m, &v| m.max(v));
    let neg_top = (-top).exp();
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        if s.abs() > 1e-7 {
            *s = (*s - top).exp();
            sum += *s;
        } else {
            *s *= neg_top;
        }
    }
    scores.iter_mut().for_each(|s| *s /= sum);
}

/// A classifier's class labels: integers, or strings (output as their index).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Labels {
    /// `classlabels_int64s` (or `classlabels_ints`).
    Ints(Vec<i64>),
    /// `classlabels_strings`: the label output is the index into these.
    Strings(Vec<String>),
}

impl Labels {
    /// From `NAME_int64s` / `NAME_strings` (e.g. `classlabels`), or `None` when neither is set.
    #[cfg(feature = "onnx")]
    pub fn of(node: &NodeProto, ints: &str, strings: &str) -> TractResult<Option<Labels>> {
        let i = node.get_attr_opt_slice::<i64>(ints)?;
        let s = node.get_attr_opt_tvec::<String>(strings)?;
        match (i, s) {
            (Some(i), None) => Ok(Some(Labels::Ints(i.to_vec()))),
            (None, Some(s)) => Ok(Some(Labels::Strings(s.into_iter().collect()))),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => bail!(
                "{} '{}': both {ints} and {strings} are set",
                node.op_type,
                node.name
            ),
        }
    }

    /// How many.
    pub fn len(&self) -> usize {
        match self {
            Labels::Ints(v) => v.len(),
            Labels::Strings(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The label output's value for class `k`: the label, or its index for strings.
    pub fn value(&self, k: usize) -> i64 {
        match self {
            Labels::Ints(v) => v.get(k).copied().unwrap_or(0),
            Labels::Strings(_) => k as i64,
        }
    }

    /// The class names, as text (for the bundle's output spec).
    pub fn names(&self) -> Vec<String> {
        match self {
            Labels::Ints(v) => v.iter().map(|l| l.to_string()).collect(),
            Labels::Strings(v) => v.clone(),
        }
    }
}

/// An input tensor's values as f32 rows `[N, F]` (a rank-1 input is one row): f32, f64, i64
/// and i32 are accepted, as ONNX allows for these operators.
pub fn rows_f32(input: &TValue) -> TractResult<(Vec<f32>, usize, usize)> {
    let shape = input.shape();
    let (n, f) = match shape {
        [f] => (1, *f),
        [n, f] => (*n, *f),
        _ => bail!("expects a [N, F] input, got {shape:?}"),
    };
    let dt = input.datum_type();
    ensure!(
        [
            f32::datum_type(),
            f64::datum_type(),
            i64::datum_type(),
            i32::datum_type()
        ]
        .contains(&dt),
        "expects f32, f64, i64 or i32 features, got {dt:?}"
    );
    Ok((super::f32_values(input)?, n, f))
}

/// The floats of a tensor attribute (f32, f64 or f16; in the typed fields or as raw bytes).
#[cfg(feature = "onnx")]
pub fn tensor_floats(t: &TensorProto) -> TractResult<Vec<f32>> {
    use tensor_proto::DataType;
    let raw = &t.raw_data;
    Ok(match DataType::try_from(t.data_type) {
        Ok(DataType::Float) if raw.is_empty() => t.float_data.clone(),
        Ok(DataType::Float) => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Ok(DataType::Double) if raw.is_empty() => t.double_data.iter().map(|&v| v as f32).collect(),
        Ok(DataType::Double) => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        Ok(DataType::Float16) if raw.is_empty() => t
            .int32_data
            .iter()
            .map(|&v| f16::from_bits(v as u16).to_f32())
            .collect(),
        Ok(DataType::Float16) => raw
            .chunks_exact(2)
            .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        _ => bail!(
            "tensor attribute '{}' of data type {} (expected float, double or float16)",
            t.name,
            t.data_type
        ),
    })
}

/// The bytes of a uint8 tensor attribute.
#[cfg(feature = "onnx")]
pub fn tensor_bytes(t: &TensorProto) -> TractResult<Vec<u8>> {
    use tensor_proto::DataType;
    match DataType::try_from(t.data_type) {
        Ok(DataType::Uint8) if t.raw_data.is_empty() => {
            Ok(t.int32_data.iter().map(|&v| v as u8).collect())
        }
        Ok(DataType::Uint8) => Ok(t.raw_data.clone()),
        _ => bail!(
            "tensor attribute '{}' of data type {} (expected uint8)",
            t.name,
            t.data_type
        ),
    }
}

/// An attribute array that must have `n` entries.
#[cfg(feature = "onnx")]
pub fn exactly<T>(node: &NodeProto, name: &str, v: Vec<T>, n: usize) -> TractResult<Vec<T>> {
    ensure!(
        v.len() == n,
        "{} '{}': {name} has {} entries, expected {n}",
        node.op_type,
        node.name,
        v.len()
    );
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_post_transforms_are_onnx_runtimes() {
        // values computed with ONNX Runtime's formulas (ml_common.h)
        assert!((logistic(0.0) - 0.5).abs() < 1e-7);
        assert!((logistic(-100.0) - 0.0).abs() < 1e-7 && logistic(100.0) == 1.0);
        let mut s = [1.0f32, 2.0, 3.0];
        softmax(&mut s);
        let e: Vec<f32> = [1.0f32, 2.0, 3.0].iter().map(|v| (v - 3.0).exp()).collect();
        let sum: f32 = e.iter().sum();
        for (a, b) in s.iter().zip(&e) {
            assert!((a - b / sum).abs() < 1e-7);
        }
        let mut z = [0.0f32, 2.0, 1.0];
        softmax_zero(&mut z);
        assert_eq!(z[0], 0.0);
        assert!((z[1] + z[2] - 1.0).abs() < 1e-6);
        assert!(probit(0.5).abs() < 1e-6 && (probit(0.8413) - 1.0).abs() < 0.01);
    }
}
