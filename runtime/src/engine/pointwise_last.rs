//! Channel-last (NHWC) f32 1×1 convolutions for the `cpu` engine on AVX-512: the einsums tract
//! makes of 1×1 `Conv`s once its layout pass has turned a TensorFlow-style graph (transposes
//! around every convolution) channel-last, with the bias `Add` and the ReLU/ReLU6 clamp that
//! follow it fused in. tract folds the transposes it could not cancel into the einsum, so the
//! input and the output may each have their channels last or first (`NHWI,OI->NHWO`,
//! `IHW,OI->NHWO`, `NHWI,OI->NOHW`; [`super::pointwise`] keeps the all-channel-first form).
//!
//! The product is [`super::pointwise`]'s 8×48 micro-kernel with the operands' roles swapped:
//! its eight broadcast rows are eight points (their channels packed `[I + 1][8]` per call, the
//! extra channel a constant 1), and its 48 vector columns are output channels, read from the
//! weights packed at load as panels of 48 columns (`[⌈O/48⌉][I + 1][48]`, the extra row the
//! bias), so every read is sequential and the bias is one more step of the reduction. Each
//! panel stays in L2 while every group of points passes over it; panels are split over the
//! plan's threads. tract ran these as its packed matmul, repacking the activations per call.

use std::cell::Cell;

use super::threads::par_rows;
use edge_kernels::pointwise::Kernel;
use edge_kernels::tile::{COLS, ROWS};
use edge_kernels::Isa;
use tract_nnef::tract_core::internal::*;

use super::conv1x1::SharedOut;
use super::Floats;

/// Replaces every channel-last 1×1 convolution einsum this op handles (with the bias `Add` and
/// the clamp after it); returns how many it replaced. Does nothing on CPUs without AVX-512F.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let kind = Kernel::best(Isa::host());
    if !kind.is_vector() {
        return Ok(0);
    }
    let mut replaced = 0;
    for id in model.eval_order()? {
        let Some(op) = PointwiseLast::at(model, id, kind)? else {
            continue;
        };
        let (input, last) = (model.node(id).inputs[0], op.1);
        super::replace_run(model, input, id, last, op.0)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// The op: input `[…, I]` or `[I, …]` f32, output `[…, O]` or `[O, …]` (the same points in
/// the same order; axes of size 1 anywhere).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PointwiseLast {
    cin: usize,
    cout: usize,
    /// The input's shape.
    in_shape: Vec<usize>,
    /// The output's shape.
    shape: Vec<usize>,
    /// The input's channels are its last axis (else its first, size-1 axes aside).
    in_last: bool,
    /// The output's channels are its last axis (else its first).
    out_last: bool,
    /// `[⌈O/48⌉][I + 1][48]`: panel `b` row `i` column `c` is `W[48b + c][i]`, row `I` the
    /// bias; zero columns past `O`.
    panels: Floats,
    /// Outputs clamped to `[lo, hi]` (f32 bits).
    clamp: Option<(u32, u32)>,
    kind: Kernel,
}

impl PointwiseLast {
    /// The op for the einsum at `id` with the last node it replaces, or `None`.
    fn at(model: &TypedModel, id: usize, kind: Kernel) -> TractResult<Option<(Self, usize)>> {
        let node = model.node(id);
        let Some((weights, [x, w], y)) = super::conv1x1::f32_einsum_with_constant(model, id)?
        else {
            return Ok(None);
        };
        let [o, i] = w.chars().collect::<Vec<_>>()[..] else {
            return Ok(None);
        };
        let (x_fact, y_fact) = (
            model.outlet_fact(node.inputs[0])?,
            model.outlet_fact(OutletId::new(id, 0))?,
        );
        let (Some(x_shape), Some(y_shape)) =
            (x_fact.shape.as_concrete(), y_fact.shape.as_concrete())
        else {
            return Ok(None);
        };
        if o == i
            || x_fact.datum_type != f32::datum_type()
            || weights.datum_type() != f32::datum_type()
            || weights.rank() != 2
            || x_shape.len() != x.len()
            || y_shape.len() != y.len()
        {
            return Ok(None);
        }
        // the axes that matter: the channel and the points (size-1 axes lay nothing out)
        let laid_out = |axes: &str, shape: &[usize], channel: char, other: char| {
            let kept: Vec<(char, usize)> = axes
                .chars()
                .zip(shape.iter().copied())
                .filter(|&(c, n)| c == channel || n != 1)
                .collect();
            let at = kept.iter().position(|&(c, _)| c == channel)?;
            let last = at + 1 == kept.len();
            if (at != 0 && !last) || kept.iter().any(|&(c, _)| c == other) {
                return None;
            }
            let points: Vec<(char, usize)> =
                kept.into_iter().filter(|&(c, _)| c != channel).collect();
            Some((last, points))
        };
        let (Some((in_last, x_points)), Some((out_last, y_points))) =
            (laid_out(&x, x_shape, i, o), laid_out(&y, y_shape, o, i))
        else {
            return Ok(None);
        };
        let (cout, cin) = (weights.shape()[0], weights.shape()[1]);
        let points: usize = y_points.iter().map(|p| p.1).product();
        if x_points != y_points
            || !(in_last || out_last)
            || x.chars().filter(|&c| c == i).count() != 1
            || y.chars().filter(|&c| c == o).count() != 1
            || x_shape[x.find(i).expect("found")] != cin
            || y_shape[y.find(o).expect("found")] != cout
            || points < ROWS
        {
            return Ok(None);
        }
        let weights = super::f32_values(&weights)?;
        let (mut last, mut bias) = (id, vec![0f32; cout]);
        let axis = y.find(o).expect("found");
        if let Some((add, extra)) = super::conv1x1::following_bias(model, id, axis, cout)? {
            (bias, last) = (extra, add);
        }
        let (last, clamp) = super::following_clamp(model, last)?;
        let op = PointwiseLast::new(cin, cout, &weights, &bias, points, kind)?;
        let op = PointwiseLast {
            clamp: clamp.map(|(lo, hi)| (lo.to_bits(), hi.to_bits())),
            in_shape: x_shape.to_vec(),
            shape: y_shape.to_vec(),
            in_last,
            out_last,
            ..op
        };
        Ok(Some((op, last)))
    }

    /// The op for explicit weights (`[O, I]` row-major) and bias (`[O]`) over `points`
    /// points, channels last in and out.
    fn new(
        cin: usize,
        cout: usize,
        weights: &[f32],
        bias: &[f32],
        points: usize,
        kind: Kernel,
    ) -> TractResult<Self> {
        ensure!(cin > 0 && cout > 0 && weights.len() == cin * cout && bias.len() == cout);
        let depth = cin + 1;
        let mut panels = vec![0f32; cout.div_ceil(COLS) * depth * COLS];
        for o in 0..cout {
            let panel = &mut panels[(o / COLS) * depth * COLS..][..depth * COLS];
            for i in 0..cin {
                panel[i * COLS + o % COLS] = weights[o * cin + i];
            }
            panel[cin * COLS + o % COLS] = bias[o];
        }
        Ok(PointwiseLast {
            cin,
            cout,
            in_shape: vec![points, cin],
            shape: vec![points, cout],
            in_last: true,
            out_last: true,
            panels: Floats(panels),
            clamp: None,
            kind,
        })
    }

    /// `output[p][o] = clamp(bias[o] + Σ_i W[o][i] · input[p][i])` for every point `p` (each
    /// side channel-first instead where the op says so).
    fn run(&self, kind: Kernel, input: &[f32], output: &mut [f32]) -> TractResult<()> {
        if self.out_last {
            return self.run_last(kind, input, output);
        }
        thread_local! {
            /// The channel-last output, before its transpose.
            static LAST: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
        }
        super::scratch::with(&LAST, |last| {
            last.resize(output.len(), 0.0);
            self.run_last(kind, input, last)?;
            let points = output.len() / self.cout;
            for (p, row) in last.chunks_exact(self.cout).enumerate() {
                for (o, &v) in row.iter().enumerate() {
                    output[o * points + p] = v;
                }
            }
            Ok(())
        })
    }

    /// [`PointwiseLast::run`] into a channel-last output.
    fn run_last(&self, kind: Kernel, input: &[f32], output: &mut [f32]) -> TractResult<()> {
        let (cin, cout, depth) = (self.cin, self.cout, self.cin + 1);
        ensure!(input.len().is_multiple_of(cin) && output.len() == input.len() / cin * cout);
        let points = input.len() / cin;
        let groups = points.div_ceil(ROWS);
        thread_local! {
            /// The points' channels as the tile's broadcast rows: `[group][I + 1][8]`.
            static PACKED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
        }
        super::scratch::with(&PACKED, |packed| {
            packed.clear();
            packed.resize(groups * depth * ROWS, 0.0);
            for (g, group) in packed.chunks_exact_mut(depth * ROWS).enumerate() {
                let rows = ROWS.min(points - g * ROWS);
                if self.in_last {
                    for (r, point) in input[g * ROWS * cin..].chunks(cin).take(rows).enumerate() {
                        for (i, &v) in point.iter().enumerate() {
                            group[i * ROWS + r] = v;
                        }
                    }
                } else {
                    for (i, step) in group.chunks_exact_mut(ROWS).take(cin).enumerate() {
                        step[..rows].copy_from_slice(&input[i * points + g * ROWS..][..rows]);
                    }
                }
                group[cin * ROWS..][..rows].fill(1.0);
            }
            let clamp = self
                .clamp
                .map(|(lo, hi)| (f32::from_bits(lo), f32::from_bits(hi)));
            let out = SharedOut(output.as_mut_ptr());
            let zero = [0f32; ROWS];
            let mut panels: Vec<usize> = (0..cout.div_ceil(COLS)).collect();
            let packed = &packed[..];
            // (blocking the points so that their packed channels stay in L2 while every panel
            // passes was measured slower on the NHWC ResNet-50: 43 → 48 ms)
            par_rows(&mut panels, 1, points * cin * cout, |_, chunk| {
                for &b in chunk.iter() {
                    let panel = &self.panels.0[b * depth * COLS..][..depth * COLS];
                    let (c0, cols) = (b * COLS, COLS.min(cout - b * COLS));
                    for g in 0..groups {
                        let rows = ROWS.min(points - g * ROWS);
                        // SAFETY: the panel holds `depth` rows of 48 columns (read `cols` of
                        // each); the group holds `depth · 8` values; output rows `g·8..g·8 +
                        // rows` (points) at stride `cout`, columns `c0..c0 + cols` of each,
                        // are inside `output` and written by this panel's thread alone.
                        unsafe {
                            kind.tile(
                                depth,
                                panel.as_ptr(),
                                (COLS, cout),
                                &packed[g * depth * ROWS..][..depth * ROWS],
                                &zero,
                                out.at(g * ROWS * cout + c0),
                                rows,
                                cols,
                                clamp,
                            )
                        }
                    }
                }
                Ok(())
            })
        })
    }
}

impl Op for PointwiseLast {
    fn name(&self) -> StaticName {
        "EdgePointwiseLast".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels (last axis), {}, clamp {:?}",
            self.cin,
            self.cout,
            self.kind.name(),
            self.clamp
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for PointwiseLast {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(input.datum_type() == f32::datum_type());
        ensure!(
            input.shape() == self.in_shape.as_slice(),
            "1×1 convolution expects {:?}, got {:?}",
            self.in_shape,
            input.shape()
        );
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let mut output = vec![0f32; self.shape.iter().product()];
        self.run(self.kind, x, &mut output)?;
        Ok(tvec!(tract_ndarray::ArrayD::from_shape_vec(
            &*self.shape,
            output
        )?
        .into_tensor()
        .into_tvalue()))
    }
}

impl TypedOp for PointwiseLast {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&self.shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let points = self.shape.iter().product::<usize>() / self.cout;
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            (points * self.cin * self.cout).into()
        )))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_kernels::testing::values;

    /// Every kernel against the textbook sum, on point and channel tails and with a clamp.
    #[test]
    fn matches_the_textbook_sum() {
        for &(points, cin, cout) in &[(8, 3, 5), (49, 64, 100), (30, 17, 48), (200, 9, 97)] {
            let (w, b, x) = (
                values(cin * cout, 1),
                values(cout, 2),
                values(points * cin, 3),
            );
            for clamp in [None, Some((0.0f32, 0.5f32))] {
                for (kind, in_last, out_last) in Kernel::available(Isa::host())
                    .into_iter()
                    .flat_map(|k| [(k, true, true), (k, false, true), (k, true, false)])
                {
                    let mut op = PointwiseLast::new(cin, cout, &w, &b, points, kind).unwrap();
                    op.clamp = clamp.map(|(lo, hi)| (lo.to_bits(), hi.to_bits()));
                    (op.in_last, op.out_last) = (in_last, out_last);
                    // the same values laid out channel-first where the op reads them so
                    let xs: Vec<f32> = if in_last {
                        x.clone()
                    } else {
                        (0..cin * points)
                            .map(|k| x[(k % points) * cin + k / points])
                            .collect()
                    };
                    let mut got = vec![f32::NAN; points * cout];
                    op.run(kind, &xs, &mut got).unwrap();
                    for p in 0..points {
                        for o in 0..cout {
                            let mut acc = b[o] as f64;
                            for i in 0..cin {
                                acc += w[o * cin + i] as f64 * x[p * cin + i] as f64;
                            }
                            let v = acc as f32;
                            let want = clamp.map_or(v, |(lo, hi)| v.max(lo).min(hi));
                            let g = got[if out_last {
                                p * cout + o
                            } else {
                                o * points + p
                            }];
                            assert!(
                                (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                "{kind:?} {points}x{cin}->{cout} [{p}][{o}]: {g} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The einsums tract leaves in an NHWC graph, each with a bias `Add` on its channel axis
    /// and a ReLU: substituted (bias and clamp fused) and equal to tract's evaluation.
    #[test]
    fn replaces_the_einsums_of_channel_last_graphs() {
        use tract_nnef::tract_core::ops::einsum::EinSum;
        use tract_nnef::tract_core::ops::math;
        if !Kernel::best(Isa::host()).is_vector() {
            return;
        }
        let (cin, cout) = (12, 20);
        for (axes, x_shape, bias_shape) in [
            ("NHWI,OI->NHWO", vec![1, 5, 6, cin], vec![1, 1, 1, cout]),
            ("IHW,OI->NHWO", vec![cin, 5, 6], vec![1, 1, 1, cout]),
            ("NHWI,OI->NOHW", vec![1, 5, 6, cin], vec![1, cout, 1, 1]),
            ("NHWI,OI->OHW", vec![1, 5, 6, cin], vec![cout, 1, 1]),
        ] {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact(&x_shape)).unwrap();
            let w = tract_ndarray::Array2::from_shape_vec((cout, cin), values(cout * cin, 4))
                .unwrap()
                .into_tensor();
            let w = model.add_const("w", w).unwrap();
            let einsum = EinSum::new(axes.parse().unwrap(), f32::datum_type());
            let y = model.wire_node("einsum", einsum, &[x, w]).unwrap()[0];
            let rank = bias_shape.len();
            let b = tract_ndarray::ArrayD::from_shape_vec(bias_shape, values(cout, 5))
                .unwrap()
                .into_tensor();
            let b = model.add_const("b", b).unwrap();
            let y = model.wire_node("bias", math::add(), &[y, b]).unwrap()[0];
            let zero = tract_ndarray::ArrayD::from_shape_vec(vec![1; rank], vec![0f32])
                .unwrap()
                .into_tensor();
            let zero = model.add_const("zero", zero).unwrap();
            let y = model.wire_node("relu", math::max(), &[y, zero]).unwrap()[0];
            model.select_output_outlets(&[y]).unwrap();
            let n: usize = x_shape.iter().product();
            let input = tract_ndarray::ArrayD::from_shape_vec(x_shape.clone(), values(n, 6))
                .unwrap()
                .into_tensor();
            let want = super::super::run_f32(model.clone(), &input, true);
            let mut ours = model;
            assert_eq!(substitute(&mut ours).unwrap(), 1, "{axes}");
            // the source, the constants tract keeps, our op: bias and clamp are gone
            assert!(
                !ours
                    .nodes()
                    .iter()
                    .any(|n| n.name == "bias" || n.name == "relu"),
                "{axes}"
            );
            let got = super::super::run_f32(ours, &input, true);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{axes}: {a} vs {b}"
                );
            }
        }
    }
}
