//! Nested JSON arrays as tensors: the shape is inferred from the nesting, values are converted to
//! the input's dtype. JSON has no NaN or infinities, so the strings numpy users write (`"NaN"`,
//! `"inf"`, `"-Infinity"`) are accepted and left for the input's NaN policy to judge. Used by the
//! CLI (`.json` input files) and the agent's local API.

use crate::tensor::{DType, Tensor, TensorData};

/// Why a JSON value is not a tensor.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct JsonInputError(pub String);

macro_rules! bail {
    ($($t:tt)*) => { return Err(JsonInputError(format!($($t)*))) };
}

/// A nested JSON array → tensor of `dtype` (a scalar row is refused: models take batches).
pub fn tensor_from_json(value: &serde_json::Value, dtype: DType) -> Result<Tensor, JsonInputError> {
    let mut shape = Vec::new();
    let mut cursor = value;
    while let serde_json::Value::Array(items) = cursor {
        shape.push(items.len());
        match items.first() {
            Some(first) => cursor = first,
            None => break,
        }
    }
    if shape.is_empty() {
        bail!(
            "JSON input must be a nested array (e.g. [[1.0, 2.0]]), got {}",
            kind(value)
        );
    }
    let mut flat = Vec::new();
    flatten(value, &shape, 0, &mut flat)?;
    let data = match dtype {
        DType::F32 => TensorData::F32(flat.iter().map(|&v| v as f32).collect()),
        DType::F64 => TensorData::F64(flat),
        DType::I64 | DType::I32 | DType::U8 | DType::I8 => {
            if let Some(v) = flat.iter().find(|v| v.fract() != 0.0) {
                bail!("input is {dtype} but the JSON holds the non-integer {v}");
            }
            match dtype {
                DType::I64 => TensorData::I64(flat.iter().map(|&v| v as i64).collect()),
                DType::I32 => TensorData::I32(flat.iter().map(|&v| v as i32).collect()),
                DType::U8 => TensorData::U8(flat.iter().map(|&v| v as u8).collect()),
                _ => TensorData::I8(flat.iter().map(|&v| v as i8).collect()),
            }
        }
    };
    Ok(Tensor { shape, data })
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn flatten(
    v: &serde_json::Value,
    shape: &[usize],
    depth: usize,
    out: &mut Vec<f64>,
) -> Result<(), JsonInputError> {
    if depth == shape.len() {
        let n = match v {
            serde_json::Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| JsonInputError("number out of range".into()))?,
            // JSON has no NaN: accept the strings numpy users write, so the NaN policy can judge
            serde_json::Value::String(s) if matches!(s.as_str(), "NaN" | "nan") => f64::NAN,
            serde_json::Value::String(s) if matches!(s.as_str(), "Infinity" | "inf") => {
                f64::INFINITY
            }
            serde_json::Value::String(s) if matches!(s.as_str(), "-Infinity" | "-inf") => {
                f64::NEG_INFINITY
            }
            other => bail!(
                "JSON input holds {} where a number was expected",
                kind(other)
            ),
        };
        out.push(n);
        return Ok(());
    }
    let items = v.as_array().ok_or_else(|| {
        JsonInputError(format!(
            "JSON input is ragged: {} at depth {depth} where an array was expected",
            kind(v)
        ))
    })?;
    if items.len() != shape[depth] {
        bail!(
            "JSON input is ragged: an array of {} at depth {depth}, expected {}",
            items.len(),
            shape[depth]
        );
    }
    items
        .iter()
        .try_for_each(|i| flatten(i, shape, depth + 1, out))
}
