//! Softmax over an axis that is not the innermost, substituted for tract's `Softmax` on f32
//! values: tract reduces each strided row through an ndarray iterator with a scalar `exp`
//! (YOLOv8's DFL head, a softmax over axis 1 of `[1, 16, 4, 2100]`, took 11% of the model's
//! time); ours walks whole planes of contiguous values with a vectorized `exp`
//! (`edge_kernels::elementwise::softmax_planes`). A softmax over the innermost axis stays
//! tract's (its kernel is already a contiguous one).

use edge_kernels::Isa;
use tract_nnef::tract_core::internal::*;
use tract_nnef::tract_core::ops::nn::{Softmax, SoftmaxKind};

/// Smallest run of values after the axis worth replacing tract's softmax for.
const MIN_INNER: usize = 8;

/// Replaces every f32 softmax over one axis with at least [`MIN_INNER`] values after it.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(op) = node.op_as::<Softmax>() else {
            continue;
        };
        if op.kind != SoftmaxKind::Softmax || op.quant_output_dt.is_some() || op.axes.len() != 1 {
            continue;
        }
        let input = node.inputs[0];
        let fact = model.outlet_fact(input)?;
        let Some(shape) = fact.shape.as_concrete() else {
            continue;
        };
        if fact.datum_type != f32::datum_type() {
            continue;
        }
        let axis = op.axes[0];
        let inner: usize = shape[axis + 1..].iter().product();
        if inner < MIN_INNER {
            continue;
        }
        let op = PlaneSoftmax {
            shape: shape.to_vec(),
            axis: shape[axis],
            inner,
        };
        super::replace_run(model, input, id, id, op)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// Softmax over axis `axis` of a value whose `inner` values after that axis are contiguous.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlaneSoftmax {
    shape: Vec<usize>,
    axis: usize,
    inner: usize,
}

impl Op for PlaneSoftmax {
    fn name(&self) -> StaticName {
        "EdgePlaneSoftmax".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} planes of {} values",
            self.axis, self.inner
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for PlaneSoftmax {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.shape() == self.shape.as_slice() && input.datum_type() == f32::datum_type(),
            "softmax expects f32 {:?}, got {:?} {:?}",
            self.shape,
            input.datum_type(),
            input.shape()
        );
        let mut scratch = vec![0f32; 2 * self.inner];
        Ok(tvec!(super::map_f32_in_place(input, |data| {
            edge_kernels::elementwise::softmax_planes(
                Isa::host(),
                data,
                self.axis,
                self.inner,
                &mut scratch,
            )
        })?))
    }
}

impl TypedOp for PlaneSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].without_value()))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn softmax_model(shape: &[usize], axis: usize) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(shape)).unwrap();
        let y = model
            .wire_node(
                "softmax",
                Softmax::new(tvec![axis], None, SoftmaxKind::Softmax),
                &[x],
            )
            .unwrap()[0];
        model.select_output_outlets(&[y]).unwrap();
        model
    }

    /// Our softmax against tract's on the DFL head's shape and others; the innermost axis and
    /// short runs stay tract's.
    #[test]
    fn plane_softmax_matches_tract() {
        for (shape, axis, ours) in [
            (&[1, 16, 4, 100][..], 1, true),
            (&[2, 3, 5, 7][..], 1, true),
            (&[4, 9, 8][..], 0, true),
            (&[1, 16, 4, 100][..], 3, false),
            (&[3, 5, 4][..], 1, false),
        ] {
            let model = softmax_model(shape, axis);
            let n: usize = shape.iter().product();
            let input = tract_ndarray::ArrayD::from_shape_vec(
                shape,
                (0..n).map(|i| (i as f32 * 0.37).sin() * 12.0).collect(),
            )
            .unwrap()
            .into_tensor();
            let want = super::super::run_f32(model.clone(), &input, true);
            let mut substituted = model.into_decluttered().unwrap();
            assert_eq!(
                substitute(&mut substituted).unwrap(),
                ours as usize,
                "{shape:?} axis {axis}"
            );
            let got = super::super::run_f32(substituted, &input, true);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-6, "{shape:?} axis {axis}: {a} vs {b}");
            }
        }
    }
}
