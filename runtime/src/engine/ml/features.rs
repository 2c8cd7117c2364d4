//! The feature transforms of a scikit-learn pipeline, as ONNX Runtime computes them: `Scaler`
//! (`(x − offset) · scale`), `Normalizer` (a row over its max, L1 or L2 norm), `Imputer` (a
//! missing value replaced), `Binarizer` (`x > threshold`), `OneHotEncoder` (integer categories),
//! `LabelEncoder` (numeric keys to numeric values), `ArrayFeatureExtractor` (columns by index),
//! `FeatureVectorizer` (inputs side by side, each cut or padded to its width), and `ZipMap`,
//! whose map of labels to probabilities is the probability tensor it was given.

use std::collections::HashMap;

use tract_nnef::tract_core::internal::*;

use super::record::{NnefForm, Reader, Record};
use super::rows::{Out, Rows};
#[cfg(feature = "onnx")]
pub use parse::register;

/// `value[i]`, or `value[0]` for every `i` when there is one value.
fn per_column(values: &[f32], i: usize) -> f32 {
    if values.len() == 1 {
        values[0]
    } else {
        values[i]
    }
}

/// A per-column attribute's length must be 1 or the row's width.
fn check_width(name: &str, what: &str, values: &[f32], features: usize) -> TractResult<()> {
    ensure!(
        values.len() == 1 || values.len() == features,
        "{name}: {what} has {} values for rows of {features}",
        values.len()
    );
    Ok(())
}

/// `Scaler`: `(x − offset) · scale` per column.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaler {
    offset: Vec<f32>,
    scale: Vec<f32>,
}

impl Scaler {
    /// `offset` and `scale`: one value for every column, or one per column.
    pub fn new(offset: Vec<f32>, scale: Vec<f32>) -> TractResult<Scaler> {
        ensure!(
            !offset.is_empty() && !scale.is_empty(),
            "empty offset or scale"
        );
        Ok(Scaler { offset, scale })
    }
}

impl NnefForm for Scaler {
    const KIND: &'static str = "Scaler";

    fn write(&self, r: &mut Record) {
        r.floats(&self.offset);
        r.floats(&self.scale);
    }

    fn read(r: &mut Reader) -> TractResult<Self> {
        Scaler::new(r.floats("offset")?, r.floats("scale")?)
    }
}

impl Rows for Scaler {
    fn name(&self) -> &'static str {
        "Scaler"
    }

    fn outputs(&self) -> TVec<Out> {
        tvec![Out::F32SameWidth]
    }

    fn run(&self, x: &[f32], rows: usize, features: usize) -> TractResult<TVec<Tensor>> {
        check_width("Scaler", "offset", &self.offset, features)?;
        check_width("Scaler", "scale", &self.scale, features)?;
        let column =
            |values: &[f32]| -> Vec<f32> { (0..features).map(|i| per_column(values, i)).collect() };
        let (offset, scale) = (column(&self.offset), column(&self.scale));
        let mut y = Vec::with_capacity(x.len());
        for row in x.chunks_exact(features.max(1)) {
            y.extend(
                row.iter()
                    .zip(&offset)
                    .zip(&scale)
                    .map(|((&v, &o), &s)| (v - o) * s),
            );
        }
        Ok(tvec!(Tensor::from_shape(&[rows, features], &y)?))
    }
}

/// How `Normalizer` measures a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// Its largest value (not magnitude).
    Max,
    /// `Σ |x|`.
    L1,
    /// `√Σ x²`.
    L2,
}

impl Norm {
    /// From the attribute's text (`MAX`, `L1`, `L2`).
    pub fn parse(text: &str) -> TractResult<Norm> {
        Ok(match text {
            "MAX" => Norm::Max,
            "L1" => Norm::L1,
            "L2" => Norm::L2,
            other => bail!("norm '{other}' (expected MAX, L1 or L2)"),
        })
    }

    /// [`Norm::parse`]'s inverse.
    pub fn name(self) -> &'static str {
        match self {
            Norm::Max => "MAX",
            Norm::L1 => "L1",
            Norm::L2 => "L2",
        }
    }
}

/// `Normalizer`: each row over its norm (unchanged when the norm is 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Normalizer(Norm);

impl NnefForm for Normalizer {
    const KIND: &'static str = "Normalizer";

    fn write(&self, r: &mut Record) {
        r.text(self.0.name());
    }

    fn read(r: &mut Reader) -> TractResult<Self> {
        Ok(Normalizer(Norm::parse(&r.text("norm")?)?))
    }
}

impl Rows for Normalizer {
    fn name(&self) -> &'static str {
        "Normalizer"
    }

    fn outputs(&self) -> TVec<Out> {
        tvec![Out::F32SameWidth]
    }

    fn run(&self, x: &[f32], rows: usize, features: usize) -> TractResult<TVec<Tensor>> {
        let mut y = x.to_vec();
        for row in y.chunks_exact_mut(features.max(1)) {
            match self.0 {
                Norm::Max => {
                    let max = row.iter().fold(f32::MIN, |m, &v| m.max(v));
                    if max != 0.0 {
                        row.iter_mut().for_each(|v| *v /= max);
                    }
                }
                Norm::L1 => {
                    let sum: f32 = row.iter().map(|v| v.abs()).sum();
                    if sum != 0.0 {
                        row.iter_mut().for_each(|v| *v /= sum);
                    }
                }
                Norm::L2 => {
                    let sum: f32 = row.iter().map(|v| v * v).sum();
                    if sum != 0.0 {
                        // as ONNX Runtime writes it: the square's share, rooted, with the sign
                        row.iter_mut().for_each(|v| {
                            let r = (*v * *v / sum).sqrt();
                            *v = if *v < 0.0 { -r } else { r };
                        });
                    }
                }
            }
        }
        Ok(tvec!(Tensor::from_shape(&[rows, features], &y)?))
    }
}

/// `Imputer`: values equal to `replaced` (NaN: NaN values) become the column's imputed value.
#[derive(Debug, Clone, PartialEq)]
pub struct Imputer {
    imputed: Vec<f32>,
    replaced: f32,
}

impl Imputer {
    /// One imputed value for every column, or one per column; `replaced` marks a missing value.
    pub fn new(imputed: Vec<f32>, replaced: f32) -> TractResult<Imputer> {
        ensure!(!imputed.is_empty(), "no imputed values");
        Ok(Imputer { imputed, replaced })
    }
}

impl NnefForm for Imputer {
    const KIND: &'static str = "Imputer";

    fn write(&self, r: &mut Record) {
        r.floats(&self.imputed);
        r.float(self.replaced);
    }

    fn read(r: &mut Reader) -> TractResult<Self> {
        Imputer::new(r.floats("imputed")?, r.float("replaced")?)
    }
}

impl Rows for Imputer {
    fn name(&self) -> &'static str {
        "Imputer"
    }

    fn outputs(&self) -> TVec<Out> {
        tvec![Out::F32SameWidth]
    }

    fn run(&self, x: &[f32], rows: usize, features: usize) -> TractResult<TVec<Tensor>> {
        check_width("Imputer", "the imputed values", &self.imputed, features)?;
        let missing = |v: f32| {
            if self.replaced.is_nan() {
                v.is_nan()
            } else {
                v == self.replaced
            }
        };
        let y: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                if missing(v) {
                    per_column(&self.imputed, k % features.max(1))
                } else {
                    v
                }
            })
            .collect();
        Ok(tvec!(Tensor::from_shape(&[rows, features], &y)?))
    }
}

/// `Binarizer`: 1 where `x > threshold`, else 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Binarizer(f32);

impl NnefForm for Binarizer {
    const KIND: &'static str = "Binarizer";

    fn write(&self, r: &mut Record) {
        r.float(self.0);
    }

    fn read(r: &mut Reader) -> TractResult<Self> {
        Ok(Binarizer(r.float("threshold")?))
    }
}

impl Rows for Binarizer {
    fn name(&self) -> &'static str {
        "Binarizer"
    }

    fn outputs(&self) -> TVec<Out> {
        tvec![Out::F32SameWidth]
    }

    fn run(&self, x: &[f32], rows: usize, features: usize) -> TractResult<TVec<Tensor>> {
        let y: Vec<f32> = x.iter().map(|&v| f32::from(u8::from(v > self.0))).collect();
        Ok(tvec!(Tensor::from_shape(&[rows, features], &y)?))
    }
}

/// `OneHotEncoder` over integer categories: output `input shape + [categories]`, f32.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OneHot {
    cats: Vec<i64>,
    /// An unknown value gives a row of zeros (else it is an error).
    zeros: bool,
}

impl OneHot {
    /// Over `cats`; `zeros`: an unknown value gives zeros instead of an error.
    pub fn new(cats: Vec<i64>, zeros: bool) -> TractResult<OneHot> {
        ensure!(!cats.is_empty(), "no categories");
        Ok(OneHot { cats, zeros })
    }
}

impl NnefForm for OneHot {
    const KIND: &'static str = "OneHotEncoder";

    fn write(&self, r: &mut Record) {
        r.ints(&self.cats);
        r.int(i64::from(self.zeros));
    }

    fn read(r: &mut Reader) -> TractResult<Self> {
        OneHot::new(r.ints("categories")?, r.int("zeros")? != 0)
    }
}

impl Op for OneHot {
    fn name(&self) -> StaticName {
        "EdgeOneHotEncoder".into()
    }

    op_as_typed_op!();
}

impl EvalOp for OneHot {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let index: HashMap<i64, usize> =
            self.cats.iter().enumerate().map(|(i, &c)| (c, i)).collect();
        let values = input.cast_to::<i64>()?;
        let values = values.try_as_plain_ram()?;
        let values = values.as_slice::<i64>()?;
        let c = self.cats.len();
        let mut y = vec![0f32; values.len() * c];
        for (k, v) in values.iter().enumerate() {
            match index.get(v) {
                Some(&i) => y[k * c + i] = 1.0,
                None if self.zeros => {}
                None => bail!("OneHotEncoder: value {v} is not a category (zeros = 0)"),
            }
        }
        let mut shape: TVec<usize> = input.shape().into();
        shape.push(c);
        Ok(tvec!(Tensor::from_shape(&shape, &y)?.into_tvalue()))
    }
}

impl TypedOp for OneHot {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape = inputs[0].shape.to_tvec();
        shape.push(self.cats.len().into());
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}

#[derive(Debug, Clone, PartialEq)]
enum Keys {
    Ints(Vec<i64>),
    Floats(Vec<f32>),
}

impl Keys {
    fn len(&self) -> usize {
        match self {
            Keys::Ints(k) => k.len(),
            Keys::Floats(k) => k.len(),
        }
    }
}

/// Values, with the default for a key that is not there.
#[derive(Debug, Clone, PartialEq)]
enum Values {
    Ints(Vec<i64>, i64),
    Floats(Vec<f32>, f32),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::Ints(v, _) => v.len(),
            Values::Floats(v, _) => v.len(),
        }
    }

    fn datum(&self) -> DatumType {
        match self {
            Values::Ints(..) => i64::datum_type(),
            Values::Floats(..) => f32::datum_type(),
        }
    }
}

/// `LabelEncoder` (ai.onnx.ml 2+) over numeric keys and values: each value's mapping, or the
/// default; a float key matches by value (NaN matches NaN).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelEncoder {
    keys: Keys,
    values: Values,
}

impl LabelEncoder {
    /// As many keys as values.
    fn new(keys: Keys, values: Values) -> TractResult<LabelEncoder> {
        let (nk, nv) = (keys.len(), values.len());
        ensure!(nk == nv, "{nk} keys for {nv} values");
        Ok(LabelEncoder { keys, values })
    }

    /// The position of the key of `v`, if any.
    fn find(&self, v: f64) -> Option<usize> {
        match &self.keys {
            Keys::Ints(k) => k.iter().position(|&x| x as f64 == v),
            Keys::Floats(k) => k
                .iter()
                .position(|&x| x as f64 == v || (x.is_nan() && v.is_nan())),
        }
    }
}

impl NnefForm for LabelEncoder {
    const KIND: &'static str = "LabelEncoder";

    fn write(&self, r: &mut Record) {
        match &self.keys {
            Keys::Ints(k) => {
                r.int(0);
                r.ints(k);
            }
            Keys::Floats(k) => {
                r.int(1);
                r.floats(k);
            }
        }
        match &self.values {
            Values::Ints(v, d) => {
                r.int(0);
                r.ints(v);
                r.int(*d);
            }
            Values::Floats(v, d) => {
                r.int(1);
                r.floats(v);
                r.float(*d);
            }
        }
    }

    fn read(r: &mut Reader) -> TractResult<Self> {
        let keys = match r.int("the key type")? {
            0 => Keys::Ints(r.ints("keys")?),
            _ => Keys::Floats(r.floats("keys")?),
        };
        let values = match r.int("the value type")? {
            0 => Values::Ints(r.ints("values")?, r.int("default")?),
            _ => Values::Floats(r.floats("values")?, r.float("default")?),
        };
        LabelEncoder::new(keys, values)
    }
}

impl Op for LabelEncoder {
    fn name(&self) -> StaticName {
        "EdgeLabelEncoder".into()
    }

    op_as_typed_op!();
}

impl EvalOp for LabelEncoder {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let x = input.cast_to::<f64>()?;
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<f64>()?;
        let shape = input.shape();
        let out = match &self.values {
            Values::Ints(v, d) => {
                let y: Vec<i64> = x
                    .iter()
                    .map(|&k| self.find(k).map_or(*d, |i| v[i]))
                    .collect();
                Tensor::from_shape(shape, &y)?
            }
            Values::Floats(v, d) => {
                let y: Vec<f32> = x
                    .iter()
                    .map(|&k| self.find(k).map_or(*d, |i| v[i]))
                    .collect();
                Tensor::from_shape(shape, &y)?
            }
        };
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for LabelEncoder {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.values.datum().fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// `ArrayFeatureExtractor`: `X[…, indices]` (a rank-1 `X` gives `[1, indices]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArrayFeatureExtractor;

impl NnefForm for ArrayFeatureExtractor {
    const KIND: &'static str = "ArrayFeatureExtractor";

    fn write(&self, _: &mut Record) {}

    fn read(_: &mut Reader) -> TractResult<Self> {
        Ok(ArrayFeatureExtractor)
    }
}

impl Op for ArrayFeatureExtractor {
    fn name(&self) -> StaticName {
        "EdgeArrayFeatureExtractor".into()
    }

    op_as_typed_op!();
}

/// Copies `x`'s columns `indices` of each of its rows of `width`.
fn pick<T: Datum + Copy>(x: &Tensor, width: usize, indices: &[usize]) -> TractResult<Vec<T>> {
    let x = x.try_as_plain_ram()?;
    let x = x.as_slice::<T>()?;
    Ok(x.chunks_exact(width.max(1))
        .flat_map(|row| indices.iter().map(move |&i| row[i]))
        .collect())
}

impl EvalOp for ArrayFeatureExtractor {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, indices) = args_2!(inputs);
        let shape = x.shape();
        let width = *shape.last().context("ArrayFeatureExtractor of a scalar")?;
        let indices = indices.cast_to::<i64>()?;
        let indices: Vec<usize> = indices
            .try_as_plain_ram()?
            .as_slice::<i64>()?
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .filter(|&i| i < width)
                    .with_context(|| format!("ArrayFeatureExtractor: index {i} of {width} columns"))
            })
            .collect::<TractResult<_>>()?;
        let mut out_shape: TVec<usize> = if shape.len() == 1 {
            tvec![1]
        } else {
            shape[..shape.len() - 1].into()
        };
        out_shape.push(indices.len());
        let dt = x.datum_type();
        let y = if dt == f32::datum_type() {
            Tensor::from_shape(&out_shape, &pick::<f32>(&x, width, &indices)?)?
        } else if dt == f64::datum_type() {
            Tensor::from_shape(&out_shape, &pick::<f64>(&x, width, &indices)?)?
        } else if dt == i64::datum_type() {
            Tensor::from_shape(&out_shape, &pick::<i64>(&x, width, &indices)?)?
        } else if dt == i32::datum_type() {
            Tensor::from_shape(&out_shape, &pick::<i32>(&x, width, &indices)?)?
        } else {
            bail!("ArrayFeatureExtractor on {dt:?} (f32, f64, i64 and i32 are supported)")
        };
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for ArrayFeatureExtractor {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        let n: TDim = inputs[1].shape.iter().product();
        let mut shape: TVec<TDim> = if x.rank() == 1 {
            tvec![1.into()]
        } else {
            x.shape[..x.rank() - 1].into()
        };
        shape.push(n);
        Ok(tvec!(x.datum_type.fact(shape)))
    }

    as_op!();
}

/// `FeatureVectorizer`: the inputs (each `[N, d]` or `[N]`, cast to f32) side by side, input
/// `i` cut or zero-padded to `dims[i]` columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FeatureVectorizer {
    dims: Vec<usize>,
}

impl NnefForm for FeatureVectorizer {
    const KIND: &'static str = "FeatureVectorizer";

    fn write(&self, r: &mut Record) {
        let dims: Vec<i64> = self.dims.iter().map(|&d| d as i64).collect();
        r.ints(&dims);
    }

    fn read(r: &mut Reader) -> TractResult<Self> {
        Ok(FeatureVectorizer {
            dims: r.sizes("input dimensions")?,
        })
    }
}

impl Op for FeatureVectorizer {
    fn name(&self) -> StaticName {
        "EdgeFeatureVectorizer".into()
    }

    op_as_typed_op!();
}

impl EvalOp for FeatureVectorizer {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let n = inputs
            .first()
            .map_or(0, |x| x.shape().first().copied().unwrap_or(1));
        let width: usize = self.dims.iter().sum();
        let mut y = vec![0f32; n * width];
        let mut at = 0;
        for (x, &d) in inputs.iter().zip(&self.dims) {
            let shape = x.shape();
            ensure!(
                shape.first().copied().unwrap_or(1) == n,
                "FeatureVectorizer: inputs with {n} and {shape:?} rows"
            );
            let cols = shape.iter().skip(1).product::<usize>();
            let values = super::super::f32_values(x)?;
            for r in 0..n {
                let take = cols.min(d);
                y[r * width + at..][..take].copy_from_slice(&values[r * cols..][..take]);
            }
            at += d;
        }
        Ok(tvec!(Tensor::from_shape(&[n, width], &y)?.into_tvalue()))
    }
}

impl TypedOp for FeatureVectorizer {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == self.dims.len() && !inputs.is_empty(),
            "FeatureVectorizer: {} inputs for {} input dimensions",
            inputs.len(),
            self.dims.len()
        );
        let n = inputs[0]
            .shape
            .iter()
            .next()
            .cloned()
            .unwrap_or_else(|| 1.into());
        Ok(tvec!(f32::fact([
            n,
            self.dims.iter().sum::<usize>().into()
        ])))
    }

    as_op!();
}

// f32 parameters: see `rows`' module doc on `Eq`
impl Eq for Scaler {}
impl Eq for Normalizer {}
impl Eq for Imputer {}
impl Eq for Binarizer {}
impl Eq for LabelEncoder {}

#[cfg(feature = "onnx")]
mod parse {
    use tract_nnef::tract_core::ops::cast::cast;
    use tract_onnx::model::{OnnxOpRegister, ParsingContext};
    use tract_onnx::pb::NodeProto;
    use tract_onnx::tract_hir::internal::*;

    use super::super::rows::{parsed, RowOp, Rows};
    use super::*;

    /// Registers the transforms.
    pub fn register(reg: &mut OnnxOpRegister) {
        reg.insert("Scaler", scaler);
        reg.insert("Normalizer", normalizer);
        reg.insert("Imputer", imputer);
        reg.insert("Binarizer", binarizer);
        reg.insert("OneHotEncoder", one_hot);
        reg.insert("LabelEncoder", label_encoder);
        reg.insert("ArrayFeatureExtractor", |_, _| {
            Ok((expand(ArrayFeatureExtractor), vec![]))
        });
        reg.insert("FeatureVectorizer", feature_vectorizer);
        reg.insert("ZipMap", |_, _| Ok((expand(ZipMap), vec![])));
    }

    /// The rules of an operator whose one output has its one input's type and shape.
    fn same_as_input<'r, 'p: 'r>(
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn scaler(
        _: &ParsingContext,
        node: &NodeProto,
    ) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
        let offset = node
            .get_attr_opt_vec::<f32>("offset")?
            .unwrap_or_else(|| vec![0.0]);
        let scale = node
            .get_attr_opt_vec::<f32>("scale")?
            .unwrap_or_else(|| vec![1.0]);
        parsed(Scaler::new(offset, scale).with_context(|| format!("Scaler '{}'", node.name))?)
    }

    fn normalizer(
        _: &ParsingContext,
        node: &NodeProto,
    ) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
        let norm = Norm::parse(node.get_attr_opt::<&str>("norm")?.unwrap_or("MAX"))
            .with_context(|| format!("Normalizer '{}'", node.name))?;
        parsed(Normalizer(norm))
    }

    fn imputer(
        _: &ParsingContext,
        node: &NodeProto,
    ) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
        let floats = node.get_attr_opt_vec::<f32>("imputed_value_floats")?;
        let ints = node.get_attr_opt_vec::<i64>("imputed_value_int64s")?;
        let (imputed, replaced) = match (floats, ints) {
            (Some(f), None) => (
                f,
                node.get_attr_opt::<f32>("replaced_value_float")?
                    .unwrap_or(0.0),
            ),
            (None, Some(i)) => (
                i.iter().map(|&v| v as f32).collect(),
                node.get_attr_opt::<i64>("replaced_value_int64")?
                    .unwrap_or(0) as f32,
            ),
            _ => bail!(
                "Imputer '{}': set exactly one of imputed_value_floats and imputed_value_int64s",
                node.name
            ),
        };
        let imputer =
            Imputer::new(imputed, replaced).with_context(|| format!("Imputer '{}'", node.name))?;
        Ok((expand(SameType(imputer)), vec![]))
    }

    fn binarizer(
        _: &ParsingContext,
        node: &NodeProto,
    ) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
        let threshold = node.get_attr_opt::<f32>("threshold")?.unwrap_or(0.0);
        Ok((expand(SameType(Binarizer(threshold))), vec![]))
    }

    /// A row operator whose output keeps the input's type and shape (computed in f32, cast back).
    #[derive(Debug, Clone)]
    struct SameType<R: Rows>(R);

    impl<R: Rows> Expansion for SameType<R> {
        fn name(&self) -> StaticName {
            self.0.name().into()
        }

        fn rules<'r, 'p: 'r, 's: 'r>(
            &'s self,
            s: &mut Solver<'r>,
            inputs: &'p [TensorProxy],
            outputs: &'p [TensorProxy],
        ) -> InferenceResult {
            same_as_input(s, inputs, outputs)
        }

        fn wire(
            &self,
            prefix: &str,
            model: &mut TypedModel,
            inputs: &[OutletId],
        ) -> TractResult<TVec<OutletId>> {
            let fact = model.outlet_fact(inputs[0])?.clone();
            let mut x = inputs[0];
            if fact.rank() == 1 {
                x = model.wire_node(format!("{prefix}.row"), AxisOp::Add(0), &[x])?[0];
            }
            let mut y = model.wire_node(prefix, RowOp(self.0.clone()), &[x])?[0];
            if fact.rank() == 1 {
                y = model.wire_node(format!("{prefix}.unrow"), AxisOp::Rm(0), &[y])?[0];
            }
            if fact.datum_type != f32::datum_type() {
                y = model.wire_node(format!("{prefix}.cast"), cast(fact.datum_type), &[y])?[0];
            }
            Ok(tvec!(y))
        }
    }

    fn one_hot(
        _: &ParsingContext,
        node: &NodeProto,
    ) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
        let Some(cats) = node.get_attr_opt_vec::<i64>("cats_int64s")? else {
            bail!(
                "OneHotEncoder '{}': string categories (cats_strings) need string inputs, which this \
                 runtime does not take; encode the column as integers before export",
                node.name
            );
        };
        let zeros = node.get_attr_opt::<i64>("zeros")?.unwrap_or(1) != 0;
        let op =
            OneHot::new(cats, zeros).with_context(|| format!("OneHotEncoder '{}'", node.name))?;
        Ok((expand(op), vec![]))
    }

    impl Expansion for OneHot {
        fn name(&self) -> StaticName {
            "OneHotEncoder".into()
        }

        fn rules<'r, 'p: 'r, 's: 'r>(
            &'s self,
            s: &mut Solver<'r>,
            inputs: &'p [TensorProxy],
            outputs: &'p [TensorProxy],
        ) -> InferenceResult {
            check_input_arity(inputs, 1)?;
            check_output_arity(outputs, 1)?;
            s.equals(&outputs[0].datum_type, f32::datum_type())?;
            s.equals(&outputs[0].rank, inputs[0].rank.bex() + 1)?;
            s.given(&inputs[0].rank, move |s, rank| {
                for ax in 0..rank as usize {
                    s.equals(&outputs[0].shape[ax], &inputs[0].shape[ax])?;
                }
                s.equals(&outputs[0].shape[rank as usize], self.cats.len().to_dim())
            })
        }

        fn wire(
            &self,
            prefix: &str,
            model: &mut TypedModel,
            inputs: &[OutletId],
        ) -> TractResult<TVec<OutletId>> {
            model.wire_node(prefix, self.clone(), inputs)
        }
    }

    fn label_encoder(
        _: &ParsingContext,
        node: &NodeProto,
    ) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
        let what = || format!("LabelEncoder '{}'", node.name);
        let keys = match (
            node.get_attr_opt_vec::<i64>("keys_int64s")?,
            node.get_attr_opt_vec::<f32>("keys_floats")?,
        ) {
            (Some(k), None) => Keys::Ints(k),
            (None, Some(k)) => Keys::Floats(k),
            _ => bail!(
                "{}: only numeric keys (keys_int64s or keys_floats) are supported: string keys need \
                 string inputs, which this runtime does not take",
                what()
            ),
        };
        let values = match (
            node.get_attr_opt_vec::<i64>("values_int64s")?,
            node.get_attr_opt_vec::<f32>("values_floats")?,
        ) {
            (Some(v), None) => {
                Values::Ints(v, node.get_attr_opt::<i64>("default_int64")?.unwrap_or(-1))
            }
            (None, Some(v)) => Values::Floats(
                v,
                node.get_attr_opt::<f32>("default_float")?.unwrap_or(-0.0),
            ),
            _ => bail!(
                "{}: only numeric values (values_int64s or values_floats) are supported",
                what()
            ),
        };
        Ok((
            expand(LabelEncoder::new(keys, values).with_context(what)?),
            vec![],
        ))
    }

    impl Expansion for LabelEncoder {
        fn name(&self) -> StaticName {
            "LabelEncoder".into()
        }

        fn rules<'r, 'p: 'r, 's: 'r>(
            &'s self,
            s: &mut Solver<'r>,
            inputs: &'p [TensorProxy],
            outputs: &'p [TensorProxy],
        ) -> InferenceResult {
            check_input_arity(inputs, 1)?;
            check_output_arity(outputs, 1)?;
            s.equals(&outputs[0].datum_type, self.values.datum())?;
            s.equals(&outputs[0].shape, &inputs[0].shape)?;
            Ok(())
        }

        fn wire(
            &self,
            prefix: &str,
            model: &mut TypedModel,
            inputs: &[OutletId],
        ) -> TractResult<TVec<OutletId>> {
            model.wire_node(prefix, self.clone(), inputs)
        }
    }

    impl Expansion for ArrayFeatureExtractor {
        fn name(&self) -> StaticName {
            "ArrayFeatureExtractor".into()
        }

        fn rules<'r, 'p: 'r, 's: 'r>(
            &'s self,
            s: &mut Solver<'r>,
            inputs: &'p [TensorProxy],
            outputs: &'p [TensorProxy],
        ) -> InferenceResult {
            check_input_arity(inputs, 2)?;
            check_output_arity(outputs, 1)?;
            s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
            s.given(&inputs[0].rank, move |s, rank| {
                let rank = rank as usize;
                s.equals(&outputs[0].rank, rank.max(2) as i64)?;
                for ax in 0..rank.saturating_sub(1) {
                    s.equals(&outputs[0].shape[ax], &inputs[0].shape[ax])?;
                }
                Ok(())
            })
        }

        fn wire(
            &self,
            prefix: &str,
            model: &mut TypedModel,
            inputs: &[OutletId],
        ) -> TractResult<TVec<OutletId>> {
            model.wire_node(prefix, self.clone(), inputs)
        }
    }

    fn feature_vectorizer(
        _: &ParsingContext,
        node: &NodeProto,
    ) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
        let dims: Vec<usize> = node
            .get_attr_opt_vec::<i64>("inputdimensions")?
            .unwrap_or_default()
            .into_iter()
            .map(|d| {
                usize::try_from(d).map_err(|_| {
                    format_err!("FeatureVectorizer '{}': input dimension {d}", node.name)
                })
            })
            .collect::<TractResult<_>>()?;
        ensure!(
            dims.len() == node.input.len(),
            "FeatureVectorizer '{}': {} dimensions for {} inputs",
            node.name,
            dims.len(),
            node.input.len()
        );
        Ok((expand(FeatureVectorizer { dims }), vec![]))
    }

    impl Expansion for FeatureVectorizer {
        fn name(&self) -> StaticName {
            "FeatureVectorizer".into()
        }

        fn rules<'r, 'p: 'r, 's: 'r>(
            &'s self,
            s: &mut Solver<'r>,
            inputs: &'p [TensorProxy],
            outputs: &'p [TensorProxy],
        ) -> InferenceResult {
            check_input_arity(inputs, self.dims.len())?;
            check_output_arity(outputs, 1)?;
            s.equals(&outputs[0].datum_type, f32::datum_type())?;
            s.equals(&outputs[0].rank, 2)?;
            s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
            s.equals(
                &outputs[0].shape[1],
                self.dims.iter().sum::<usize>().to_dim(),
            )?;
            Ok(())
        }

        fn wire(
            &self,
            prefix: &str,
            model: &mut TypedModel,
            inputs: &[OutletId],
        ) -> TractResult<TVec<OutletId>> {
            model.wire_node(prefix, self.clone(), inputs)
        }
    }

    /// `ZipMap`: the probabilities it was given, as a tensor (its labels belong in the bundle's
    /// output spec).
    #[derive(Debug, Clone)]
    pub struct ZipMap;

    impl Expansion for ZipMap {
        fn name(&self) -> StaticName {
            "ZipMap".into()
        }

        fn rules<'r, 'p: 'r, 's: 'r>(
            &'s self,
            s: &mut Solver<'r>,
            inputs: &'p [TensorProxy],
            outputs: &'p [TensorProxy],
        ) -> InferenceResult {
            same_as_input(s, inputs, outputs)
        }

        fn wire(
            &self,
            _prefix: &str,
            _model: &mut TypedModel,
            inputs: &[OutletId],
        ) -> TractResult<TVec<OutletId>> {
            Ok(inputs.into())
        }
    }
}
