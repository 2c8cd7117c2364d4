//! What most `ai.onnx.ml` operators are: a function of each row of an `[N, F]` input (cast to
//! f32, as ONNX Runtime does) giving one or two outputs of `[N, columns]`. [`RowOp`] is the
//! tract op and `RowExpansion` the parser's view for any such [`Rows`] function, so each
//! operator writes only its arithmetic.
//!
//! The operators hold f32 parameters and declare `Eq` (tract compares ops to merge copies of
//! one): a NaN parameter only makes an op unequal to itself, which keeps two copies apart.

use tract_nnef::tract_core::internal::*;

use super::rows_f32;
#[cfg(feature = "onnx")]
pub use parse::parsed;

/// An output of a row function: its type and its columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    /// f32, `columns` per row.
    F32(usize),
    /// f32, as many columns as the input has.
    F32SameWidth,
    /// i64, one per row, rank 1 (a label).
    Label,
}

/// A function of each row.
pub trait Rows: std::fmt::Debug + Clone + PartialEq + Eq + Send + Sync + 'static {
    /// The operator's name (for errors and graphs).
    fn name(&self) -> &'static str;
    /// Its outputs.
    fn outputs(&self) -> TVec<Out>;
    /// The input columns it needs, if fixed.
    fn features(&self) -> Option<usize> {
        None
    }
    /// The outputs for `rows` rows of `features` values (`x` row-major).
    fn run(&self, x: &[f32], rows: usize, features: usize) -> TractResult<TVec<Tensor>>;
}

/// The tract op running a [`Rows`] function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowOp<R: Rows>(pub R);

impl<R: Rows> Op for RowOp<R> {
    fn name(&self) -> StaticName {
        format!("Edge{}", self.0.name()).into()
    }

    op_as_typed_op!();
}

impl<R: Rows> EvalOp for RowOp<R> {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let (x, rows, features) = rows_f32(&input)?;
        if let Some(want) = self.0.features() {
            ensure!(
                features == want,
                "{} expects rows of {want} features, got {features}",
                self.0.name()
            );
        }
        Ok(self
            .0
            .run(&x, rows, features)?
            .into_iter()
            .map(Tensor::into_tvalue)
            .collect())
    }
}

impl<R: Rows> TypedOp for RowOp<R> {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        let (n, f): (TDim, TDim) = match x.rank() {
            2 => (x.shape[0].clone(), x.shape[1].clone()),
            1 => (1.into(), x.shape[0].clone()),
            r => bail!("{} expects a [N, F] input, got rank {r}", self.0.name()),
        };
        Ok(self
            .0
            .outputs()
            .into_iter()
            .map(|o| match o {
                Out::F32(c) => f32::fact([n.clone(), c.into()]),
                Out::F32SameWidth => f32::fact([n.clone(), f.clone()]),
                Out::Label => i64::fact([n.clone()]),
            })
            .collect())
    }

    as_op!();
}

#[cfg(feature = "onnx")]
mod parse {
    use tract_onnx::tract_hir::internal::*;

    use super::{Out, RowOp, Rows};

    /// The parser's view of a [`Rows`] operator: one input, its outputs' types and shapes.
    #[derive(Debug, Clone)]
    pub struct RowExpansion<R: Rows>(pub R);

    impl<R: Rows> Expansion for RowExpansion<R> {
        fn name(&self) -> StaticName {
            self.0.name().into()
        }

        fn nboutputs(&self) -> TractResult<usize> {
            Ok(self.0.outputs().len())
        }

        fn rules<'r, 'p: 'r, 's: 'r>(
            &'s self,
            s: &mut Solver<'r>,
            inputs: &'p [TensorProxy],
            outputs: &'p [TensorProxy],
        ) -> InferenceResult {
            check_input_arity(inputs, 1)?;
            let outs = self.0.outputs();
            check_output_arity(outputs, outs.len())?;
            for (proxy, out) in outputs.iter().zip(outs) {
                match out {
                    Out::Label => {
                        s.equals(&proxy.datum_type, i64::datum_type())?;
                        s.equals(&proxy.rank, 1)?;
                    }
                    Out::F32(c) => {
                        s.equals(&proxy.datum_type, f32::datum_type())?;
                        s.equals(&proxy.rank, 2)?;
                        s.equals(&proxy.shape[1], c.to_dim())?;
                    }
                    Out::F32SameWidth => {
                        s.equals(&proxy.datum_type, f32::datum_type())?;
                        s.equals(&proxy.rank, 2)?;
                    }
                }
            }
            s.given(&inputs[0].rank, move |s, rank| {
                for (proxy, out) in outputs.iter().zip(self.0.outputs()) {
                    if rank == 2 {
                        s.equals(&proxy.shape[0], &inputs[0].shape[0])?;
                        if out == Out::F32SameWidth {
                            s.equals(&proxy.shape[1], &inputs[0].shape[1])?;
                        }
                    } else {
                        s.equals(&proxy.shape[0], 1.to_dim())?;
                        if out == Out::F32SameWidth {
                            s.equals(&proxy.shape[1], &inputs[0].shape[0])?;
                        }
                    }
                }
                Ok(())
            })?;
            Ok(())
        }

        fn wire(
            &self,
            prefix: &str,
            model: &mut TypedModel,
            inputs: &[OutletId],
        ) -> TractResult<TVec<OutletId>> {
            model.wire_node(prefix, RowOp(self.0.clone()), inputs)
        }
    }

    /// Boxes a [`Rows`] operator for the parser's registry.
    pub fn parsed<R: Rows>(rows: R) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
        Ok((expand(RowExpansion(rows)), vec![]))
    }
}
