//! Input validation and the bundle's own preprocessing (normalization). Every refusal is a typed
//! [`InputError`]; nothing here panics on caller data.

use crate::bundle::{Dim, InputSpec, NanPolicy};
use crate::error::InputError;
use crate::tensor::{DType, Tensor, TensorData};

/// Limits on what a caller may send, on top of the spec's shape.
#[derive(Clone, Debug)]
pub struct InputLimits {
    /// Largest input tensor in bytes. Default 256 MiB.
    pub max_bytes: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The float elements of an input, for the NaN policy (integer inputs have none to check).
pub(crate) enum Floats<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    None,
}

/// Checks `t` against `spec`: dtype, rank and fixed dims, element count, batch, size, NaN policy.
pub fn validate(spec: &InputSpec, t: &Tensor, limits: &InputLimits) -> Result<(), InputError> {
    let floats = match &t.data {
        TensorData::F32(v) => Floats::F32(v),
        TensorData::F64(v) => Floats::F64(v),
        _ => Floats::None,
    };
    check_input(spec, t.dtype(), &t.shape, t.len(), floats, limits)
}

/// [`validate`] on the parts of an input, wherever its elements live (a [`Tensor`] or an
/// [`crate::InputBuffer`]).
pub(crate) fn check_input(
    spec: &InputSpec,
    dtype: DType,
    shape: &[usize],
    len: usize,
    floats: Floats<'_>,
    limits: &InputLimits,
) -> Result<(), InputError> {
    let name = || spec.name.clone();
    if dtype != spec.dtype {
        return Err(InputError::WrongDtype {
            name: name(),
            expected: spec.dtype.to_string(),
            got: dtype.to_string(),
        });
    }
    if len == 0 || shape.contains(&0) {
        return Err(InputError::Empty { name: name() });
    }
    let shape_ok = shape.len() == spec.shape.len()
        && shape
            .iter()
            .zip(&spec.shape)
            .all(|(&got, want)| match want {
                Dim::Fixed(n) => got as u64 == *n,
                Dim::Named(_) => got >= 1,
            });
    if !shape_ok {
        return Err(InputError::WrongShape {
            name: name(),
            expected: spec.shape_text(),
            got: shape.to_vec(),
        });
    }
    let expected = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX);
    if expected != len {
        return Err(InputError::ElementCount {
            name: name(),
            shape: shape.to_vec(),
            expected,
            got: len,
        });
    }
    let batch = shape[0];
    if spec.dynamic_batch() && batch > spec.max_batch() {
        return Err(InputError::BatchTooLarge {
            name: name(),
            got: batch,
            max: spec.max_batch(),
        });
    }
    let bytes = len.saturating_mul(dtype.size());
    if bytes > limits.max_bytes {
        return Err(InputError::TooLarge {
            name: name(),
            bytes,
            limit: limits.max_bytes,
        });
    }
    if spec.nan_policy == NanPolicy::Reject {
        let bad = match floats {
            Floats::F32(v) => first_non_finite(v, |x| x.is_finite()).map(|i| (i, v[i].to_string())),
            Floats::F64(v) => first_non_finite(v, |x| x.is_finite()).map(|i| (i, v[i].to_string())),
            Floats::None => None,
        };
        if let Some((index, value)) = bad {
            return Err(InputError::NonFinite {
                name: name(),
                index,
                value,
            });
        }
    }
    Ok(())
}

/// The index of the first value that is not finite. Each block of values is checked without
/// an early exit (so the check vectorizes: an image's 150 000 floats in a few microseconds
/// rather than one compare-and-branch each), then the bad block, if any, is searched.
fn first_non_finite<T: Copy>(values: &[T], finite: impl Fn(T) -> bool) -> Option<usize> {
    const BLOCK: usize = 1024;
    values.chunks(BLOCK).enumerate().find_map(|(b, block)| {
        let all_finite = block.iter().fold(true, |ok, &x| ok & finite(x));
        (!all_finite)
            .then(|| block.iter().position(|&x| !finite(x)))
            .flatten()
            .map(|i| b * BLOCK + i)
    })
}

/// Checks that a spec's normalization fits its shape (done once at load).
pub fn check_normalization(spec: &InputSpec) -> Result<(), String> {
    let Some(n) = &spec.normalize else {
        return Ok(());
    };
    let channels =
        spec.layout
            .channel_axis(spec.shape.len())
            .and_then(|a| match spec.shape.get(a) {
                Some(Dim::Fixed(c)) => Some(*c as usize),
                _ => None,
            });
    for (what, v) in [("mean", &n.mean), ("std", &n.std)] {
        if v.len() > 1 && Some(v.len()) != channels {
            return Err(format!(
                "input '{}': normalize.{what} has {} values but the channel axis has {:?}",
                spec.name,
                v.len(),
                channels
            ));
        }
    }
    if n.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
        return Err(format!(
            "input '{}': normalize.std must be finite and non-zero",
            spec.name
        ));
    }
    Ok(())
}

/// Applies the spec's normalization to a validated f32 tensor, in place.
pub fn normalize(spec: &InputSpec, t: &mut Tensor) {
    if let TensorData::F32(data) = &mut t.data {
        normalize_f32(spec, &t.shape, data);
    }
}

/// [`normalize`] on the elements of a validated f32 input of `shape`, wherever they live.
pub(crate) fn normalize_f32(spec: &InputSpec, shape: &[usize], data: &mut [f32]) {
    let Some(n) = &spec.normalize else {
        return;
    };
    let scale = n.scale.unwrap_or(1.0);
    let axis = spec.layout.channel_axis(shape.len());
    let (channels, inner) = match axis {
        Some(a) => (shape[a], shape[a + 1..].iter().product::<usize>()),
        None => (1, 1),
    };
    let pick = |v: &[f32], c: usize, default: f32| match v.len() {
        0 => default,
        1 => v[0],
        _ => v[c],
    };
    for (i, x) in data.iter_mut().enumerate() {
        let c = if channels > 1 {
            (i / inner) % channels
        } else {
            0
        };
        *x = (*x * scale - pick(&n.mean, c, 0.0)) / pick(&n.std, c, 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::first_non_finite;

    #[test]
    fn the_first_non_finite_value_is_found_in_any_block() {
        let mut v = vec![0.5f32; 5000];
        assert_eq!(first_non_finite(&v, f32::is_finite), None);
        for (at, bad) in [
            (0, f32::NAN),
            (1023, f32::INFINITY),
            (1024, f32::NAN),
            (4999, -f32::INFINITY),
        ] {
            v[at] = bad;
            v[4999.min(at + 7)] = f32::NAN;
            assert_eq!(first_non_finite(&v, f32::is_finite), Some(at));
            v.fill(0.5);
        }
        assert_eq!(
            first_non_finite(&[1.0f64, f64::NAN], f64::is_finite),
            Some(1)
        );
        assert_eq!(first_non_finite::<f32>(&[], f32::is_finite), None);
    }
}
