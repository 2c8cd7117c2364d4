//! ONNX `LRN` (local response normalization across channels, in AlexNet, ZFNet, GoogLeNet and
//! the Inception family), registered into the ONNX parser in place of tract's.
//!
//! tract 0.23.9 evaluates LRN one element at a time through dynamic-rank indexing, with one
//! `powf` per element: ~60% of GoogLeNet's time here. This op walks contiguous channel planes:
//! for each channel the squares of its window of planes are summed into one plane, then
//! `y = x · (bias + α/size · Σ)^−β`, with `β = 0.75` (every model above) as
//! `1 / (√b · √√b)` and `β = 0.5, 1` likewise, so the loops vectorize; other β use `powf`.

use tract_nnef::tract_core::internal::*;
#[cfg(feature = "onnx")]
use tract_onnx::{
    model::{OnnxOpRegister, ParsingContext},
    pb::NodeProto,
    tract_hir::internal::*,
};

/// Registers `LRN` into an ONNX parser's registry.
#[cfg(feature = "onnx")]
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("LRN", parse);
}

#[cfg(feature = "onnx")]
fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let op = Lrn::new(
        node.get_attr_opt("alpha")?.unwrap_or(0.0001),
        node.get_attr_opt("beta")?.unwrap_or(0.75),
        node.get_attr_opt("bias")?.unwrap_or(1.0),
        node.get_attr("size")?,
    );
    ensure!(op.size > 0, "LRN size must be positive");
    Ok((inference_wrap(op, 1, rules), vec![]))
}

#[cfg(feature = "onnx")]
fn rules<'p>(
    _op: &dyn Op,
    s: &mut Solver,
    inputs: &'p [TensorProxy],
    outputs: &'p [TensorProxy],
) -> InferenceResult {
    check_input_arity(inputs, 1)?;
    check_output_arity(outputs, 1)?;
    s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
    s.equals(&inputs[0].shape, &outputs[0].shape)?;
    Ok(())
}

/// Registers [`Lrn`]'s NNEF form (`edgefleet_lrn`, the parameters of `tract_onnx_lrn`) for the
/// optimized payload.
pub(crate) fn register_nnef(reg: &mut tract_nnef::internal::Registry) {
    use tract_nnef::internal::*;
    use tract_nnef::ser::{invocation, numeric};
    reg.register_dumper(|ast, node, op: &Lrn| {
        let input = ast.mapping[&node.inputs[0]].clone();
        let f = f32::from_bits;
        Ok(Some(invocation(
            "edgefleet_lrn",
            &[input],
            &[
                ("alpha", numeric(f(op.alpha))),
                ("beta", numeric(f(op.beta))),
                ("bias", numeric(f(op.bias))),
                ("size", numeric(op.size)),
            ],
        )))
    });
    reg.register_primitive(
        "edgefleet_lrn",
        &tract_onnx_opl::lrn::parameters(),
        &[("output", TypeName::Scalar.tensor())],
        |builder, call| {
            let input = call.named_arg_as(builder, "input")?;
            let size: usize = call.named_arg_as(builder, "size")?;
            ensure!(size > 0, "LRN size must be positive");
            let op = Lrn::new(
                call.named_arg_as(builder, "alpha")?,
                call.named_arg_as(builder, "beta")?,
                call.named_arg_as(builder, "bias")?,
                size,
            );
            builder.wire(op, &[input])
        },
    );
}

/// Local response normalization over axis 1; f32 parameters kept as bits (ops are `Eq + Hash`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lrn {
    alpha: u32,
    beta: u32,
    bias: u32,
    size: usize,
}

impl Lrn {
    /// The op for these parameters.
    pub fn new(alpha: f32, beta: f32, bias: f32, size: usize) -> Lrn {
        Lrn {
            alpha: alpha.to_bits(),
            beta: beta.to_bits(),
            bias: bias.to_bits(),
            size,
        }
    }

    /// `(alpha, beta, bias, size)`, as in the ONNX node.
    pub(crate) fn parameters(&self) -> (f32, f32, f32, usize) {
        (
            f32::from_bits(self.alpha),
            f32::from_bits(self.beta),
            f32::from_bits(self.bias),
            self.size,
        )
    }

    /// Normalizes `input`, laid out `[N, C, plane]` row-major, into `output`.
    pub fn run(&self, input: &[f32], n: usize, c: usize, output: &mut [f32]) {
        let (alpha, beta, bias, _) = self.parameters();
        let plane = input.len() / (n * c).max(1);
        let scale = alpha / self.size as f32;
        let (before, after) = ((self.size - 1) / 2, self.size / 2);
        let mut sum = vec![0f32; plane];
        for b in 0..n {
            let image = &input[b * c * plane..][..c * plane];
            for ch in 0..c {
                sum.fill(0.0);
                let (lo, hi) = (ch.saturating_sub(before), (ch + after).min(c - 1));
                for x in image[lo * plane..(hi + 1) * plane].chunks_exact(plane) {
                    for (s, v) in sum.iter_mut().zip(x) {
                        *s += v * v;
                    }
                }
                let x = &image[ch * plane..][..plane];
                let y = &mut output[(b * c + ch) * plane..][..plane];
                let base = sum.iter().map(|s| bias + scale * s);
                // y = x / base^beta, with the common betas as square roots (vectorizable)
                if beta == 0.75 {
                    for ((y, x), d) in y.iter_mut().zip(x).zip(base) {
                        let r = d.sqrt();
                        *y = x / (r * r.sqrt());
                    }
                } else if beta == 0.5 {
                    for ((y, x), d) in y.iter_mut().zip(x).zip(base) {
                        *y = x / d.sqrt();
                    }
                } else if beta == 1.0 {
                    for ((y, x), d) in y.iter_mut().zip(x).zip(base) {
                        *y = x / d;
                    }
                } else {
                    for ((y, x), d) in y.iter_mut().zip(x).zip(base) {
                        *y = x / d.powf(beta);
                    }
                }
            }
        }
    }
}

impl Op for Lrn {
    fn name(&self) -> StaticName {
        "EdgeLrn".into()
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Lrn {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape().to_vec();
        ensure!(shape.len() >= 2, "LRN needs [N, C, ...], got {shape:?}");
        let dt = input.datum_type();
        let input = input.cast_to::<f32>()?;
        // SAFETY: `run` writes every element.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        {
            let input = input.try_as_plain_ram()?;
            let mut out = output.try_as_plain_ram_mut()?;
            self.run(
                input.as_slice::<f32>()?,
                shape[0],
                shape[1],
                out.as_slice_mut::<f32>()?,
            );
        }
        if dt != f32::datum_type() {
            output = output.cast_to_dt(dt)?.into_owned();
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Lrn {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].rank() >= 2, "LRN needs [N, C, ...]");
        Ok(tvec!(inputs[0].without_value()))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb;

    /// A one-node ONNX graph: `y = LRN(x)`, x f32 of `shape`.
    fn lrn_graph(shape: &[i64], size: i64, alpha: f32, beta: f32, bias: f32) -> Vec<u8> {
        let float = |name: &str, f: f32| pb::AttributeProto {
            name: name.into(),
            r#type: pb::attribute_proto::AttributeType::Float as i32,
            f,
            ..Default::default()
        };
        let size = pb::AttributeProto {
            name: "size".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: size,
            ..Default::default()
        };
        let attributes = vec![
            float("alpha", alpha),
            float("beta", beta),
            float("bias", bias),
            size,
        ];
        edge_pack::onnx_graph::single_node_graph("LRN", shape, attributes)
    }

    /// Same outputs as tract's own LRN (the ONNX definition, element by element) for window
    /// sizes odd and even, the betas with a square-root path and one without, and ranks 3–4.
    #[test]
    fn matches_tracts_own_lrn() {
        let cases: [(&[i64], i64, f32, f32, f32); 6] = [
            (&[2, 7, 5, 6], 5, 1e-4, 0.75, 1.0),
            (&[1, 16, 3, 3], 5, 0.5, 0.75, 2.0),
            (&[1, 3, 4, 4], 2, 0.3, 0.5, 1.0),
            (&[1, 4, 8], 3, 0.2, 1.0, 0.5),
            (&[1, 6, 2, 2], 4, 0.1, 0.6, 1.5),
            (&[1, 1, 9, 2], 1, 0.9, 0.75, 1.0),
        ];
        for (shape, size, alpha, beta, bias) in cases {
            let onnx = lrn_graph(shape, size, alpha, beta, bias);
            let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            let input: Vec<f32> = (0..dims.iter().product::<usize>())
                .map(|i| (i as f32 * 0.77).sin() * 3.0)
                .collect();
            let input = tract_ndarray::ArrayD::from_shape_vec(&dims[..], input)
                .unwrap()
                .into_tensor();
            let run = |parser: tract_onnx::Onnx, ours: bool| {
                let typed = parser
                    .model_for_read(&mut &onnx[..])
                    .unwrap()
                    .into_optimized()
                    .unwrap();
                let found = typed.nodes().iter().any(|n| n.op_is::<Lrn>());
                assert_eq!(found, ours, "which LRN ran");
                let out = typed
                    .into_runnable()
                    .unwrap()
                    .run(tvec![input.clone().into_tvalue()])
                    .unwrap();
                super::super::f32_values(&out[0]).unwrap()
            };
            let want = run(tract_onnx::onnx(), false);
            let got = run(super::super::onnx_parser(), true);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 2e-6 * (1.0 + b.abs()),
                    "{shape:?} size {size} beta {beta}: {a} vs {b}"
                );
            }
        }
    }
}
