//! Helpers for the kernels' tests and the runtime's op tests: deterministic values, the
//! textbook convolution, a closeness check and a sweep of convolution geometries. Not part of
//! the kernels' API (hidden from the docs); kept here so the two crates' tests share one copy.

use crate::geometry::Geometry;

/// `n` values in [-1, 1], scattered by a hash of the index and `seed`.
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|k| {
            let h = (k as u32 ^ seed).wrapping_mul(2654435761).rotate_left(13);
            (h % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// Per-channel int8 weights as a quantizer writes them (`[cout, cin]`, scale `0.01 + 0.003·o`
/// for row `o`), their scales and their float image.
pub fn int8_weights(cout: usize, cin: usize) -> (Vec<i8>, Vec<f32>, Vec<f32>) {
    let raw = values(cout * cin, 5);
    let q: Vec<i8> = raw.iter().map(|v| (v * 127.0).round() as i8).collect();
    let s: Vec<f32> = (0..cout).map(|o| 0.01 + o as f32 * 0.003).collect();
    let w = q
        .iter()
        .enumerate()
        .map(|(k, &v)| v as f32 * s[k / cin])
        .collect();
    (q, s, w)
}

/// `got` equals `want` to float rounding (1e-4 relative), `what` named on failure.
pub fn assert_close(got: &[f32], want: &[f32], what: impl std::fmt::Debug) {
    assert_eq!(got.len(), want.len(), "{what:?}");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "{what:?} at {i}: {a} vs {b}"
        );
    }
}

/// Every valid geometry over `sizes` (h, w), `kernels` (kh, kw) and `pads` (top, left,
/// bottom, right), with strides 1×1, 2×2, 1×2, 3×3 and dilations 1 and 2.
pub fn geometries(
    sizes: &[(usize, usize)],
    kernels: &[(usize, usize)],
    pads: &[(usize, usize, usize, usize)],
) -> Vec<Geometry> {
    let mut all = Vec::new();
    for &(h, w) in sizes {
        for &(kh, kw) in kernels {
            for (sy, sx) in [(1, 1), (2, 2), (1, 2), (3, 3)] {
                for (dy, dx) in [(1, 1), (2, 2)] {
                    for &(pad_top, pad_left, pad_bottom, pad_right) in pads {
                        all.push(Geometry {
                            h,
                            w,
                            kh,
                            kw,
                            sy,
                            sx,
                            dy,
                            dx,
                            pad_top,
                            pad_left,
                            pad_bottom,
                            pad_right,
                        });
                    }
                }
            }
        }
    }
    all.retain(Geometry::valid);
    all
}

/// The textbook one-group convolution of `input` (`[n, channels, h, w]`) with `kernel`
/// (`[O, channels, kh, kw]`) and `bias` (`[O]`) over `g`, zero padding, in f64.
pub fn conv_reference(
    g: &Geometry,
    channels: usize,
    kernel: &[f32],
    bias: &[f32],
    input: &[f32],
    n: usize,
) -> Vec<f32> {
    let (ho, wo) = g.output();
    let outputs = bias.len();
    let mut out = vec![0f32; n * outputs * ho * wo];
    for b in 0..n {
        for o in 0..outputs {
            for y in 0..ho {
                for x in 0..wo {
                    let mut acc = bias[o] as f64;
                    for c in 0..channels {
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let Some((iy, ix)) = g.input_at((y, x), (ky, kx)) else {
                                    continue;
                                };
                                let v = input[((b * channels + c) * g.h + iy) * g.w + ix];
                                let w = kernel[((o * channels + c) * g.kh + ky) * g.kw + kx];
                                acc += v as f64 * w as f64;
                            }
                        }
                    }
                    out[((b * outputs + o) * ho + y) * wo + x] = acc as f32;
                }
            }
        }
    }
    out
}
