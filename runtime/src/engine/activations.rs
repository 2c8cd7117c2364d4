//! The input and output views our ops evaluate on: an activation is f32, or the 8-bit values
//! of a quantize→dequantize pair's form ([`edge_kernels::U8Form`]) where
//! [`super::u8_activations`] linked two of our ops. [`eval_into`] allocates an op's output of
//! the right type and hands the op both as slices.

use edge_kernels::U8Form;
use tract_nnef::tract_core::internal::*;

/// An op's input values: f32, or the 8-bit form its link was given.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Src<'a> {
    F32(&'a [f32]),
    U8(&'a [u8]),
}

impl Src<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Src::F32(v) => v.len(),
            Src::U8(v) => v.len(),
        }
    }
}

/// An op's output values, written in full by the op.
#[derive(Debug)]
pub(crate) enum Dst<'a> {
    F32(&'a mut [f32]),
    U8(&'a mut [u8]),
}

impl Dst<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Dst::F32(v) => v.len(),
            Dst::U8(v) => v.len(),
        }
    }
}

/// `run` for an op that takes and gives f32 only: an error on 8-bit values.
pub(crate) fn f32_only(
    run: impl FnOnce(&[f32], usize, &mut [f32]) -> TractResult<()>,
) -> impl FnOnce(Src, usize, Dst) -> TractResult<()> {
    move |x, n, out| match (x, out) {
        (Src::F32(x), Dst::F32(out)) => run(x, n, out),
        _ => bail!("this op takes and gives f32 values only"),
    }
}

/// The datum type of an activation in `form` (`None`: f32).
pub(crate) fn datum(form: Option<U8Form>) -> DatumType {
    if form.is_some() {
        u8::datum_type()
    } else {
        f32::datum_type()
    }
}

/// Allocates an output of `shape` (u8 when `u8_out`, else f32) and calls `run(input,
/// output)` on `input`'s f32 or u8 values; `run` must write every output element.
pub(crate) fn eval_into(
    input: &TValue,
    u8_out: bool,
    shape: &[usize],
    run: impl FnOnce(Src, Dst) -> TractResult<()>,
) -> TractResult<TVec<TValue>> {
    let dt = input.datum_type();
    // SAFETY: `run` writes every element.
    let mut output = unsafe {
        if u8_out {
            Tensor::uninitialized::<u8>(shape)?
        } else {
            Tensor::uninitialized::<f32>(shape)?
        }
    };
    {
        let input = input.try_as_plain_ram()?;
        let src = if dt == u8::datum_type() {
            Src::U8(input.as_slice::<u8>()?)
        } else if dt == f32::datum_type() {
            Src::F32(input.as_slice::<f32>()?)
        } else {
            bail!("expects an f32 or u8 input, got {dt:?}")
        };
        let mut out = output.try_as_plain_ram_mut()?;
        let dst = if u8_out {
            Dst::U8(out.as_slice_mut::<u8>()?)
        } else {
            Dst::F32(out.as_slice_mut::<f32>()?)
        };
        run(src, dst)?;
    }
    Ok(tvec!(output.into_tvalue()))
}
