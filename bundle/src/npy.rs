//! NumPy `.npy` files (format versions 1–3, little-endian, C order): read into and write from
//! [`Tensor`]. Enough for calibration data, test sets and reference outputs; refuses the rest
//! (Fortran order, big-endian, object arrays) with a clear message.

use std::io::Read;

use crate::tensor::{DType, Tensor};

/// Why an `.npy` file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// I/O failure.
    #[error("cannot read .npy: {0}")]
    Io(#[from] std::io::Error),
    /// Not an npy file or a header this reader does not handle.
    #[error("not a supported .npy file: {0}")]
    Format(String),
}

const MAGIC: &[u8] = b"\x93NUMPY";
/// Largest header accepted: real headers are about 128 bytes.
const MAX_HEADER: usize = 1 << 16;

fn header_value<'a>(header: &'a str, key: &str) -> Result<&'a str, NpyError> {
    let pat = format!("'{key}':");
    let start = header
        .find(&pat)
        .ok_or_else(|| NpyError::Format(format!("header has no '{key}'")))?
        + pat.len();
    Ok(header[start..].trim_start())
}

/// Reads an `.npy` stream; `max_bytes` bounds the data size (against a header that lies).
pub fn read(mut r: impl Read, max_bytes: u64) -> Result<Tensor, NpyError> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic[..6] != MAGIC {
        return Err(NpyError::Format("bad magic".into()));
    }
    let header_len = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)?;
            u32::from_le_bytes(b) as usize
        }
        v => return Err(NpyError::Format(format!("format version {v}"))),
    };
    if header_len > MAX_HEADER {
        return Err(NpyError::Format(format!("header of {header_len} bytes")));
    }
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header)?;
    let header =
        String::from_utf8(header).map_err(|_| NpyError::Format("header is not text".into()))?;

    let descr = header_value(&header, "descr")?;
    let descr = descr.trim_start_matches(['\'', '"']);
    let descr = &descr[..descr.find(['\'', '"']).unwrap_or(descr.len())];
    let dtype = match descr {
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        "<i8" => DType::I64,
        "<i4" => DType::I32,
        "|u1" | "<u1" => DType::U8,
        "|i1" | "<i1" => DType::I8,
        other => {
            return Err(NpyError::Format(format!(
                "dtype '{other}' (supported: <f4 <f8 <i8 <i4 |u1 |i1)"
            )))
        }
    };
    if header_value(&header, "fortran_order")?.starts_with("True") {
        return Err(NpyError::Format(
            "Fortran order; save with np.ascontiguousarray".into(),
        ));
    }
    let shape_text = header_value(&header, "shape")?;
    let open = shape_text
        .find('(')
        .ok_or_else(|| NpyError::Format("bad shape".into()))?;
    let close = shape_text
        .find(')')
        .ok_or_else(|| NpyError::Format("bad shape".into()))?;
    let shape = shape_text[open + 1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| NpyError::Format(format!("bad dimension '{s}'")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let count = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| NpyError::Format("shape overflows".into()))?;
    let bytes = count
        .checked_mul(dtype.size() as u64)
        .filter(|&b| b <= max_bytes)
        .ok_or_else(|| {
            NpyError::Format(format!(
                "data of shape {shape:?} is over the {max_bytes}-byte limit"
            ))
        })?;
    let mut data = vec![0u8; bytes as usize];
    r.read_exact(&mut data).map_err(|_| {
        NpyError::Format(format!(
            "file ends before the {bytes} data bytes its header promises"
        ))
    })?;
    Tensor::from_le_bytes(dtype, shape, &data)
        .ok_or_else(|| NpyError::Format("size mismatch".into()))
}

/// Serializes a tensor as an `.npy` (version 1) byte vector.
pub fn write(t: &Tensor) -> Vec<u8> {
    let descr = match t.dtype() {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::U8 => "|u1",
        DType::I8 => "|i1",
    };
    let shape = match t.shape.len() {
        1 => format!("({},)", t.shape[0]),
        _ => format!(
            "({})",
            t.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.byte_len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_lies() {
        let t = Tensor::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let bytes = write(&t);
        assert_eq!(read(&bytes[..], 1 << 20).unwrap(), t);
        // a header promising more data than present
        assert!(read(&bytes[..bytes.len() - 1], 1 << 20).is_err());
        // over the byte limit
        assert!(read(&bytes[..], 8).is_err());
        assert!(read(&b"not numpy at all"[..], 1 << 20).is_err());
    }
}
