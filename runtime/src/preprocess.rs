//! Input validation and the bundle's own preprocessing (normalization). Every refusal is a typed
//! [`InputError`]; nothing here panics on caller data.

use crate::bundle::{Dim, InputSpec, NanPolicy};
use crate::error::InputError;
use crate::tensor::{Tensor, TensorData};

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

/// Checks `t` against `spec`: dtype, rank and fixed dims, element count, batch, size, NaN policy.
pub fn validate(spec: &InputSpec, t: &Tensor, limits: &InputLimits) -> Result<(), InputError> {
    let name = || spec.name.clone();
    if t.dtype() != spec.dtype {
        return Err(InputError::WrongDtype {
            name: name(),
            expected: spec.dtype.to_string(),
            got: t.dtype().to_string(),
        });
    }
    if t.is_empty() || t.shape.contains(&0) {
        return Err(InputError::Empty { name: name() });
    }
    let shape_ok = t.shape.len() == spec.shape.len()
        && t.shape
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
            got: t.shape.clone(),
        });
    }
    let expected = t
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX);
    if expected != t.len() {
        return Err(InputError::ElementCount {
            name: name(),
            shape: t.shape.clone(),
            expected,
            got: t.len(),
        });
    }
    let batch = t.shape[0];
    if spec.dynamic_batch() && batch > spec.max_batch() {
        return Err(InputError::BatchTooLarge {
            name: name(),
            got: batch,
            max: spec.max_batch(),
        });
    }
    if t.byte_len() > limits.max_bytes {
        return Err(InputError::TooLarge {
            name: name(),
            bytes: t.byte_len(),
            limit: limits.max_bytes,
        });
    }
    if spec.nan_policy == NanPolicy::Reject {
        let bad = match &t.data {
            TensorData::F32(v) => v
                .iter()
                .position(|x| !x.is_finite())
                .map(|i| (i, v[i].to_string())),
            TensorData::F64(v) => v
                .iter()
                .position(|x| !x.is_finite())
                .map(|i| (i, v[i].to_string())),
            _ => None,
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
    let (Some(n), TensorData::F32(data)) = (&spec.normalize, &mut t.data) else {
        return;
    };
    let scale = n.scale.unwrap_or(1.0);
    let axis = spec.layout.channel_axis(t.shape.len());
    let (channels, inner) = match axis {
        Some(a) => (t.shape[a], t.shape[a + 1..].iter().product::<usize>()),
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
