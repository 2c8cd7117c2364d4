//! Dynamic quantization graphs (ONNX Runtime's `quantize_dynamic`: `DynamicQuantizeLinear →
//! ConvInteger → Cast → Mul`) on the `cpu` engine: our own `DynamicQuantizeLinear`, and the
//! int32 round trip of [`super::qops`]'s ConvInteger expansion folded away.
//!
//! tract 0.23.9 runs `DynamicQuantizeLinear` as an ndarray fold for the range and a scalar
//! division and rounding per element (compiled for baseline x86-64, the rounding is a libm
//! call): 26 of 59 ms of ONNX Runtime's dynamic MobileNetV2 here. This op computes the same
//! range, scale and zero point, and the same `clamp(round_even(x / scale) + zp)` per element
//! (a division, as ONNX and tract do, not a multiplication by the reciprocal), in loops
//! compiled for AVX-512 or AVX2 when the CPU has them ([`edge_kernels::elementwise`]).
//!
//! The ConvInteger expansion ends in an [`IntegralToI32`] cast (its float sums are integers);
//! when the graph casts that int32 straight back to f32, as every dynamic quantizer's graph
//! does, both casts are dropped.

use edge_kernels::{elementwise, Isa};
use tract_nnef::tract_core::internal::*;
use tract_nnef::tract_core::ops::cast::Cast;

/// Replaces tract's `DynamicQuantizeLinearU8` by [`DynamicQuantize`] and drops every
/// [`IntegralToI32`] → `Cast(f32)` round trip; returns how many nodes it replaced or dropped.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut changed = replace_tracts_op(model)?;
    for id in model.eval_order()? {
        let node = model.node(id);
        if node.op_is::<IntegralToI32>() {
            let from = OutletId::new(id, 0);
            let outputs = model.output_outlets()?;
            let succ = &node.outputs[0].successors;
            let back = succ.len() == 1
                && !outputs.contains(&from)
                && model
                    .node(succ[0].node)
                    .op_as::<Cast>()
                    .is_some_and(|c| c.to == f32::datum_type());
            if back {
                let cast = succ[0].node;
                let mut patch = TypedModelPatch::default();
                let tap = patch.tap_model(model, node.inputs[0])?;
                patch.shunt_outside(model, OutletId::new(cast, 0), tap)?;
                patch.apply(model)?;
                changed += 1;
            }
        }
    }
    Ok(changed)
}

/// Replaces tract-onnx's `DynamicQuantizeLinearU8` by [`DynamicQuantize`] (same values, any
/// instruction set): the packer's step too, since tract's op lives in tract-onnx, which device
/// builds do not link. Returns how many it replaced.
pub fn replace_tracts_op(model: &mut TypedModel) -> TractResult<usize> {
    let mut changed = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        // matched by name: tract-onnx keeps the op's type private
        if node.op.name() == "DynamicQuantizeLinearU8" && node.outputs.len() == 3 {
            let mut patch = TypedModelPatch::default();
            let tap = patch.tap_model(model, node.inputs[0])?;
            let wires = patch.wire_node(&node.name, DynamicQuantize, &[tap])?;
            for (slot, wire) in wires.iter().enumerate() {
                patch.shunt_outside(model, OutletId::new(id, slot), *wire)?;
            }
            patch.apply(model)?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// ONNX `DynamicQuantizeLinear`: f32 → (u8 tensor, f32 scale, u8 zero point), values equal to
/// tract's `DynamicQuantizeLinearU8`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DynamicQuantize;

impl Op for DynamicQuantize {
    fn name(&self) -> StaticName {
        "EdgeDynamicQuantizeLinear".into()
    }

    fn validation(&self) -> Validation {
        Validation::Accurate
    }

    op_as_typed_op!();
}

impl EvalOp for DynamicQuantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(input.datum_type() == f32::datum_type(), "expects f32");
        let plain = input.try_as_plain_ram()?;
        let x = plain.as_slice::<f32>()?;
        let isa = Isa::host();
        let (scale, zero_point) = elementwise::dynamic_scale_and_zero_point(isa, x);
        // SAFETY: `quantize_dynamic` writes every element
        let mut y = unsafe { Tensor::uninitialized::<u8>(input.shape())? };
        elementwise::quantize_dynamic(
            isa,
            x,
            scale,
            zero_point,
            y.try_as_plain_ram_mut()?.as_slice_mut::<u8>()?,
        );
        Ok(tvec!(
            y.into_tvalue(),
            tensor0(scale).into_tvalue(),
            tensor0(zero_point).into_tvalue()
        ))
    }
}

impl TypedOp for DynamicQuantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(
            u8::fact(inputs[0].shape.clone()),
            f32::fact([0usize; 0]),
            u8::fact([0usize; 0])
        ))
    }

    as_op!();
}

/// f32 → i32 for values known to be integers (the float sums of integer products), so that a
/// cast back to f32 right after is the identity and both can go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IntegralToI32;

impl Op for IntegralToI32 {
    fn name(&self) -> StaticName {
        "EdgeIntegralToI32".into()
    }

    op_as_typed_op!();
}

impl EvalOp for IntegralToI32 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let int = input.cast_to_dt(i32::datum_type())?.into_owned();
        Ok(tvec!(int.into_tvalue()))
    }
}

impl TypedOp for IntegralToI32 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(i32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use tract_onnx::prelude::{InferenceFact, InferenceModelExt};

    /// tract's own `DynamicQuantizeLinearU8` (its type is private: parsed from a one-node
    /// ONNX graph) on an f32 input of `len` values.
    fn tracts_op(len: usize) -> TypedModel {
        use tract_nnef::prelude::Framework;
        use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
        use tract_onnx::pb::{type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
        use tract_onnx::pb::{TensorShapeProto, TypeProto, ValueInfoProto};
        let info = |name: &str| ValueInfoProto {
            name: name.into(),
            ..Default::default()
        };
        let input = ValueInfoProto {
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: 1, // FLOAT
                    shape: Some(TensorShapeProto {
                        dim: vec![Dimension {
                            value: Some(dimension::Value::DimValue(len as i64)),
                            ..Default::default()
                        }],
                    }),
                })),
                ..Default::default()
            }),
            ..info("x")
        };
        let proto = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                name: "dql".into(),
                node: vec![NodeProto {
                    op_type: "DynamicQuantizeLinear".into(),
                    input: vec!["x".into()],
                    output: vec!["y".into(), "s".into(), "z".into()],
                    ..Default::default()
                }],
                input: vec![input],
                output: vec![info("y"), info("s"), info("z")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let model = crate::engine::onnx_parser()
            .model_for_proto_model(&proto)
            .unwrap()
            .with_input_fact(0, f32::fact([len]).into())
            .unwrap();
        let typed = model.into_typed().unwrap().into_decluttered().unwrap();
        assert!(typed
            .nodes()
            .iter()
            .any(|n| n.op.name() == "DynamicQuantizeLinearU8"));
        typed
    }

    /// tract's own op and ours: same scale, zero point and values, on ranges that are all
    /// positive, all negative, mixed, with NaN and ±∞ among the values, every tail length.
    #[test]
    fn matches_tracts_dynamic_quantize_linear() {
        let mut cases: Vec<Vec<f32>> = vec![
            vec![0., 2., -3., -2.5, 1.34, 0.5],
            vec![-1., -2.1, -1.3, -2.5, -3.34, -4.],
            vec![1., 2.1, 1.3, 2.5, 3.34, 4., 1.5, 2.6, 3.9, 4., 3., 2.345],
        ];
        let long: Vec<f32> = (0..77)
            .map(|i| (i as f32 * 0.37).sin() * 5.0 - 1.0)
            .collect();
        for len in [1, 15, 16, 17, 33, 77] {
            cases.push(long[..len].to_vec());
        }
        let mut with_nan = long.clone();
        with_nan[20] = f32::NAN;
        cases.push(with_nan);
        cases.push(vec![0.0; 5]);
        for x in cases {
            let model = tracts_op(x.len());
            let run = |model: &TypedModel| {
                let plan = model.clone().into_runnable().unwrap();
                plan.run(tvec!(tensor1(&x).into_tvalue())).unwrap()
            };
            let want = run(&model);
            let mut ours = model.clone();
            assert_eq!(substitute(&mut ours).unwrap(), 1);
            let got = run(&ours);
            for (slot, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.clone().into_tensor(),
                    w.clone().into_tensor(),
                    "output {slot} of {x:?}"
                );
            }
        }
    }
}
