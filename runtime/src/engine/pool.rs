//! Max and average pooling for the `cpu` engine: a tract op that replaces tract's `MaxPool`
//! (without index outputs) and `SumPool` (ONNX `AveragePool`) over f32, channel-first,
//! two-dimensional values.
//!
//! tract 0.23.9 walks each window through a generic patch iterator: SqueezeNet's three 3×3
//! stride-2 max pools took 2.3 ms of a 10 ms run (ONNX Runtime: 0.2 ms), Inception v2's
//! pools 7.6 ms of 26. Ours copy each plane once into the stride phases convolutions use
//! (padding −∞ for a max, zero for a sum) and fold every output row over its taps' contiguous
//! runs ([`edge_kernels::pool`]); an average then multiplies by one over its divisor (the
//! window's size, or its taps on the input when padding is not counted).

use std::cell::Cell;

use edge_kernels::pool::{pool_planes, valid_taps, Reduce};
use edge_kernels::Geometry;
use tract_nnef::tract_core::internal::*;
use tract_nnef::tract_core::ops::cnn::{MaxPool, SumPool};

use super::activations::f32_only;
use super::conv2d::{plane_geometry, Planes};
use super::Floats;

/// Replaces every max and sum pool this op handles; returns how many it replaced.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let (spec, reduce, divisor) = if let Some(pool) = node.op_as::<MaxPool>() {
            if pool.with_index_outputs.is_some() {
                continue;
            }
            (&pool.pool_spec, Reduce::Max, Divisor::None)
        } else if let Some(pool) = node.op_as::<SumPool>() {
            let divisor = match (pool.normalize, pool.count_include_pad) {
                (false, _) => Divisor::None,
                (true, true) => Divisor::Window,
                (true, false) => Divisor::ValidTaps,
            };
            (&pool.pool_spec, Reduce::Sum, divisor)
        } else {
            continue;
        };
        let input = node.inputs[0];
        let Some((geometry, batched)) = plane_geometry(model, input, spec)? else {
            continue;
        };
        let channels = model.outlet_fact(input)?.shape[batched as usize].to_usize()?;
        let op = Pool::new(geometry, batched, channels, reduce, divisor);
        super::replace_run(model, input, id, id, op)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// What an average divides its sum by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Divisor {
    /// Nothing (a max, or a plain sum).
    None,
    /// The window's size (padding counted).
    Window,
    /// The window's taps that fall on the input.
    ValidTaps,
}

/// The pooling op: input `[N, C, H, W]` (or `[C, H, W]`) f32, output `[N, C, ho, wo]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pool {
    geometry: Geometry,
    batched: bool,
    channels: usize,
    reduce: Reduce,
    /// Per output position, the factor an average applies (none for a max or a sum).
    scale: Option<Floats>,
}

impl Pool {
    fn new(
        geometry: Geometry,
        batched: bool,
        channels: usize,
        reduce: Reduce,
        divisor: Divisor,
    ) -> Self {
        let (ho, wo) = geometry.output();
        let scale = match divisor {
            Divisor::None => None,
            Divisor::Window => Some(vec![1.0 / (geometry.kh * geometry.kw) as f32; ho * wo]),
            Divisor::ValidTaps => Some(
                valid_taps(&geometry)
                    .into_iter()
                    .map(|n| if n > 0.0 { 1.0 / n } else { 0.0 })
                    .collect(),
            ),
        };
        Pool {
            geometry,
            batched,
            channels,
            reduce,
            scale: scale.map(Floats),
        }
    }

    fn planes(&self) -> Planes {
        Planes {
            geometry: self.geometry,
            batched: self.batched,
            inputs: self.channels,
            outputs: self.channels,
        }
    }

    /// Pools `input` (`[n, C, H, W]`) into `output` (`[n, C, ho, wo]`).
    fn run(&self, input: &[f32], output: &mut [f32]) -> TractResult<()> {
        let g = &self.geometry;
        let (ho, wo) = g.output();
        ensure!(input.len() % (g.h * g.w).max(1) == 0);
        ensure!(input.len() / (g.h * g.w).max(1) * ho * wo == output.len());
        thread_local! {
            /// The padded phases of one plane, kept between calls.
            static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
        }
        super::scratch::with(&SCRATCH, |scratch| {
            scratch.resize(g.scratch_len(), 0.0);
            let scale = self.scale.as_ref().map(|s| s.0.as_slice());
            pool_planes(g, self.reduce, input, output, scratch, scale);
        });
        Ok(())
    }
}

impl Op for Pool {
    fn name(&self) -> StaticName {
        match self.reduce {
            Reduce::Max => "EdgeMaxPool".into(),
            Reduce::Sum if self.scale.is_some() => "EdgeAveragePool".into(),
            Reduce::Sum => "EdgeSumPool".into(),
        }
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} channels, {:?}",
            self.channels, self.geometry
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Pool {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // `run` writes every output element
        self.planes().eval(
            args_1!(inputs),
            false,
            f32_only(|x, _, out| self.run(x, out)),
        )
    }
}

impl TypedOp for Pool {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.planes().output_facts(inputs, f32::datum_type())
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_nnef::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
    use tract_nnef::tract_core::ops::nn::DataFormat;

    fn pool_model(
        shape: [usize; 4],
        kernel: [usize; 2],
        strides: [usize; 2],
        padding: PaddingSpec,
        op: impl Fn(PoolSpec) -> Box<dyn TypedOp>,
    ) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(shape)).unwrap();
        let spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![kernel[0], kernel[1]],
            padding,
            dilations: None,
            strides: Some(tvec![strides[0], strides[1]]),
            input_channels: shape[1],
            output_channels: shape[1],
        };
        let y = model.wire_node("pool", op(spec), &[x]).unwrap()[0];
        model.select_output_outlets(&[y]).unwrap();
        model
    }

    /// A case: name, input shape, kernel, strides, padding.
    type Case = (
        &'static str,
        [usize; 4],
        [usize; 2],
        [usize; 2],
        PaddingSpec,
    );
    /// A pool op made from its spec.
    type Maker = Box<dyn Fn(PoolSpec) -> Box<dyn TypedOp>>;

    /// Ours against tract's on max pools and on averages with and without the padding counted.
    #[test]
    fn pools_match_tracts() {
        let cases: Vec<Case> = vec![
            (
                "3x3 s2 valid",
                [1, 4, 15, 15],
                [3, 3],
                [2, 2],
                PaddingSpec::Valid,
            ),
            (
                "3x3 s1 padded",
                [2, 3, 9, 10],
                [3, 3],
                [1, 1],
                PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
            ),
            ("2x2 s2", [1, 5, 8, 8], [2, 2], [2, 2], PaddingSpec::Valid),
            (
                "5x5 same",
                [1, 2, 11, 7],
                [5, 5],
                [1, 1],
                PaddingSpec::SameUpper,
            ),
        ];
        for (what, shape, kernel, strides, padding) in cases {
            let makers: Vec<(&str, Maker)> = vec![
                ("max", Box::new(|spec| Box::new(MaxPool::new(spec, None)))),
                (
                    "avg",
                    Box::new(|spec| Box::new(SumPool::new(spec, false, true))),
                ),
                (
                    "avg+pad",
                    Box::new(|spec| Box::new(SumPool::new(spec, true, true))),
                ),
                (
                    "sum",
                    Box::new(|spec| Box::new(SumPool::new(spec, true, false))),
                ),
            ];
            for (kind, make) in makers {
                let model = pool_model(shape, kernel, strides, padding.clone(), &make);
                let n: usize = shape.iter().product();
                let input = tract_ndarray::ArrayD::from_shape_vec(
                    &shape[..],
                    (0..n).map(|i| (i as f32 * 0.37).sin() * 5.0).collect(),
                )
                .unwrap()
                .into_tensor();
                let want = super::super::run_f32(model.clone(), &input, true);
                let mut ours = model.into_decluttered().unwrap();
                assert_eq!(substitute(&mut ours).unwrap(), 1, "{what} {kind}");
                let got = super::super::run_f32(ours, &input, true);
                assert_eq!(got.len(), want.len(), "{what} {kind}");
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-5, "{what} {kind}: {a} vs {b}");
                }
            }
        }
    }
}
