//! The runtime's own tensor: an element type, a shape and a flat row-major buffer. It is what
//! callers hand to `predict` and what engines return; engines convert to their own types.

use std::fmt;

use minicbor::{Decode, Encode};

/// Element types a model input or output may have.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize,
)]
#[cbor(index_only)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float.
    #[n(0)]
    F32,
    /// 64-bit float (accepted from files, never fed to a model as is).
    #[n(1)]
    F64,
    /// 64-bit signed integer.
    #[n(2)]
    I64,
    /// 32-bit signed integer.
    #[n(3)]
    I32,
    /// 8-bit unsigned integer.
    #[n(4)]
    U8,
    /// 8-bit signed integer.
    #[n(5)]
    I8,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::U8 | DType::I8 => 1,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::U8 => "u8",
            DType::I8 => "i8",
        };
        f.write_str(s)
    }
}

/// Flat, row-major element storage.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// i64 elements.
    I64(Vec<i64>),
    /// i32 elements.
    I32(Vec<i32>),
    /// u8 elements.
    U8(Vec<u8>),
    /// i8 elements.
    I8(Vec<i8>),
}

/// A dense tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements.
    pub data: TensorData,
}

impl Tensor {
    /// An f32 tensor. The caller keeps `shape` and `data` consistent; `predict` checks it.
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        Tensor {
            shape,
            data: TensorData::F32(data),
        }
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        match &self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::U8(_) => DType::U8,
            TensorData::I8(_) => DType::I8,
        }
    }

    /// Number of stored elements.
    pub fn len(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I8(v) => v.len(),
        }
    }

    /// True when no element is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the element buffer in bytes.
    pub fn byte_len(&self) -> usize {
        self.len() * self.dtype().size()
    }

    /// Every element as f64 (for statistics and comparisons).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F64(v) => v.clone(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    /// Element `i` as f64 (`None` past the end).
    pub fn value_f64(&self, i: usize) -> Option<f64> {
        match &self.data {
            TensorData::F32(v) => v.get(i).map(|&x| x as f64),
            TensorData::F64(v) => v.get(i).copied(),
            TensorData::I64(v) => v.get(i).map(|&x| x as f64),
            TensorData::I32(v) => v.get(i).map(|&x| x as f64),
            TensorData::U8(v) => v.get(i).map(|&x| x as f64),
            TensorData::I8(v) => v.get(i).map(|&x| x as f64),
        }
    }

    /// Rows `start..end` along the first axis (a batch slice).
    pub fn rows(&self, start: usize, end: usize) -> Tensor {
        let row: usize = self.shape.iter().skip(1).product();
        let (a, b) = (start * row, end * row);
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = end - start;
        }
        let data = match &self.data {
            TensorData::F32(v) => TensorData::F32(v[a..b].to_vec()),
            TensorData::F64(v) => TensorData::F64(v[a..b].to_vec()),
            TensorData::I64(v) => TensorData::I64(v[a..b].to_vec()),
            TensorData::I32(v) => TensorData::I32(v[a..b].to_vec()),
            TensorData::U8(v) => TensorData::U8(v[a..b].to_vec()),
            TensorData::I8(v) => TensorData::I8(v[a..b].to_vec()),
        };
        Tensor { shape, data }
    }

    /// Little-endian bytes of the elements (the form stored in manifests).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_len());
        match &self.data {
            TensorData::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::F64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::I64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::I32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::U8(v) => out.extend_from_slice(v),
            TensorData::I8(v) => v.iter().for_each(|x| out.push(*x as u8)),
        }
        out
    }

    /// Builds a tensor from little-endian bytes; `None` when the byte count does not fit.
    pub fn from_le_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Option<Tensor> {
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
        if bytes.len() != count.checked_mul(dtype.size())? {
            return None;
        }
        fn chunks<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            b.chunks_exact(N)
                .map(|c| f(c.try_into().expect("exact chunk")))
                .collect()
        }
        let data = match dtype {
            DType::F32 => TensorData::F32(chunks(bytes, f32::from_le_bytes)),
            DType::F64 => TensorData::F64(chunks(bytes, f64::from_le_bytes)),
            DType::I64 => TensorData::I64(chunks(bytes, i64::from_le_bytes)),
            DType::I32 => TensorData::I32(chunks(bytes, i32::from_le_bytes)),
            DType::U8 => TensorData::U8(bytes.to_vec()),
            DType::I8 => TensorData::I8(bytes.iter().map(|&b| b as i8).collect()),
        };
        Some(Tensor { shape, data })
    }
}
