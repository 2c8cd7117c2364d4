//! Turning an input file into a tensor for a model's first input: `.npy` as is, `.json` nested
//! arrays (shape inferred, converted to the input's dtype), PNG/JPEG images (resized and laid out
//! per the input spec, pixel values mapped through its `image.range`).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use edge_runtime::bundle::{Dim, InputSpec, Layout};
use edge_runtime::{DType, Tensor};

/// Largest input file read (1 GiB): the runtime's own limits apply after this.
const MAX_FILE: u64 = 1 << 30;

/// Loads `path` for `spec`.
pub fn load(path: &Path, spec: &InputSpec) -> Result<Tensor> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "npy" => load_npy(path),
        "json" => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            let value = value.get("input").cloned().unwrap_or(value);
            from_json(&value, spec.dtype)
        }
        "png" | "jpg" | "jpeg" => load_image(path, spec),
        _ => bail!(
            "input {} has an unknown type; use .npy, .json, .png or .jpg",
            path.display()
        ),
    }
}

/// Reads a `.npy` file.
pub fn load_npy(path: &Path) -> Result<Tensor> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    edge_runtime::npy::read(std::io::BufReader::new(f), MAX_FILE)
        .with_context(|| format!("cannot read {}", path.display()))
}

/// A nested JSON array → tensor of `dtype` (a scalar row is refused: models take batches).
pub fn from_json(value: &serde_json::Value, dtype: DType) -> Result<Tensor> {
    Ok(edge_runtime::json_input::tensor_from_json(value, dtype)?)
}

fn load_image(path: &Path, spec: &InputSpec) -> Result<Tensor> {
    let image_spec = spec.image.as_ref().ok_or_else(|| {
        anyhow!(
            "this model's input '{}' does not take images (no [input.image] in its spec)",
            spec.name
        )
    })?;
    if spec.dtype != DType::F32 {
        bail!(
            "image inputs need an f32 model input, '{}' is {}",
            spec.name,
            spec.dtype
        );
    }
    let fixed = |i: usize| match spec.shape.get(i) {
        Some(Dim::Fixed(n)) => Ok(*n as u32),
        _ => Err(anyhow!(
            "input '{}' has no fixed size on axis {i}",
            spec.name
        )),
    };
    let (c, h, w) = match spec.layout {
        Layout::NCHW if spec.shape.len() == 4 => (fixed(1)?, fixed(2)?, fixed(3)?),
        Layout::NHWC if spec.shape.len() == 4 => (fixed(3)?, fixed(1)?, fixed(2)?),
        _ => bail!("input '{}' is not an NCHW/NHWC image", spec.name),
    };
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()?
        .decode()
        .with_context(|| format!("cannot decode image {}", path.display()))?;
    let img = img.resize_exact(w, h, image::imageops::FilterType::Triangle);
    let pixels: Vec<u8> = match c {
        1 => img.to_luma8().into_raw(),
        3 => img.to_rgb8().into_raw(),
        _ => bail!("input '{}' has {c} channels; images give 1 or 3", spec.name),
    };
    let [lo, hi] = image_spec.range;
    let map = |p: u8| {
        let p = if image_spec.invert { 255 - p } else { p };
        lo + (hi - lo) * p as f32 / 255.0
    };
    let (c, h, w) = (c as usize, h as usize, w as usize);
    let mut data = vec![0f32; c * h * w];
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let v = map(pixels[(y * w + x) * c + ch]);
                let at = match spec.layout {
                    Layout::NCHW => ch * h * w + y * w + x,
                    _ => (y * w + x) * c + ch,
                };
                data[at] = v;
            }
        }
    }
    let shape = match spec.layout {
        Layout::NCHW => vec![1, c, h, w],
        _ => vec![1, h, w, c],
    };
    Ok(Tensor::f32(shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_nested_arrays() {
        let t = from_json(&serde_json::json!([[1, 2], [3, 4]]), DType::F32).unwrap();
        assert_eq!(t.shape, vec![2, 2]);
        assert!(from_json(&serde_json::json!([[1, 2], [3]]), DType::F32).is_err());
        assert!(from_json(&serde_json::json!(3), DType::F32).is_err());
        assert!(from_json(&serde_json::json!([1.5]), DType::I64).is_err());
        let nan = from_json(&serde_json::json!([["NaN", 1]]), DType::F32).unwrap();
        assert!(nan.to_f64_vec()[0].is_nan());
    }
}
