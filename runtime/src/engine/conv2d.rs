//! What our two-dimensional convolution ops (depthwise, im2col, integer im2col) share on the
//! graph side: the [`Geometry`] of a tract `Conv` node ([`conv_geometry`]), its constant
//! weights ([`constant_kernel_and_bias`]), and the shapes of their input and output planes
//! ([`Planes`]: check and allocate in `eval`, facts, cost).

use edge_kernels::Geometry;
use tract_nnef::tract_core::internal::*;
use tract_nnef::tract_core::ops::cnn::{Conv, KernelFormat, PoolSpec};
use tract_nnef::tract_core::ops::nn::DataFormat;

use super::activations::{eval_into, Dst, Src};

/// The geometry of a float, channel-first, two-dimensional `conv` at `node` whose input plane
/// size is known, with whether its input has a batch axis (`NCHW` rather than `CHW`); `None`
/// for any other convolution.
pub(crate) fn conv_geometry(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
) -> TractResult<Option<(Geometry, bool)>> {
    if conv.q_params.is_some() || node.inputs.len() != 3 || conv.kernel_fmt != KernelFormat::OIHW {
        return Ok(None);
    }
    plane_geometry(model, node.inputs[0], &conv.pool_spec)
}

/// The geometry of a window op (convolution, pooling) described by `spec` over the f32,
/// channel-first, two-dimensional value at `input` whose plane size is known, with whether it
/// has a batch axis; `None` for any other (and where tract's padding, e.g. ONNX's `ceil_mode`,
/// gives an output size the geometry does not).
pub(crate) fn plane_geometry(
    model: &TypedModel,
    input: OutletId,
    spec: &PoolSpec,
) -> TractResult<Option<(Geometry, bool)>> {
    if !matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
        || spec.kernel_shape.len() != 2
    {
        return Ok(None);
    }
    let batched = spec.data_format == DataFormat::NCHW;
    let input = model.outlet_fact(input)?;
    let rank = if batched { 4 } else { 3 };
    if input.datum_type != f32::datum_type() || input.rank() != rank {
        return Ok(None);
    }
    let (Ok(h), Ok(w)) = (
        input.shape[rank - 2].to_usize(),
        input.shape[rank - 1].to_usize(),
    ) else {
        return Ok(None);
    };
    let padding = spec.computed_padding(&[h, w]);
    let geometry = Geometry {
        h,
        w,
        kh: spec.kernel_shape[0],
        kw: spec.kernel_shape[1],
        sy: spec.stride(0),
        sx: spec.stride(1),
        dy: spec.dilation(0),
        dx: spec.dilation(1),
        pad_top: padding[0].pad_before,
        pad_left: padding[1].pad_before,
        pad_bottom: padding[0].pad_after,
        pad_right: padding[1].pad_after,
    };
    let fits =
        geometry.valid() && geometry.output() == (padding[0].convoluted, padding[1].convoluted);
    Ok(fits.then_some((geometry, batched)))
}

/// A convolution node's constant f32 kernel (`outputs · per_output` values) and bias (one per
/// output, a single value repeated), or `None` when either is not such a constant.
pub(crate) fn constant_kernel_and_bias(
    model: &TypedModel,
    node: &TypedNode,
    outputs: usize,
    per_output: usize,
) -> TractResult<Option<(Vec<f32>, Vec<f32>)>> {
    let (Some(kernel), Some(bias)) = (
        model.outlet_fact(node.inputs[1])?.konst.clone(),
        model.outlet_fact(node.inputs[2])?.konst.clone(),
    ) else {
        return Ok(None);
    };
    if kernel.datum_type() != f32::datum_type()
        || kernel.len() != outputs * per_output
        || bias.datum_type() != f32::datum_type()
        || (bias.len() != outputs && bias.len() != 1)
    {
        return Ok(None);
    }
    let bias = super::f32_values(&bias)?;
    let bias = if bias.len() == 1 {
        vec![bias[0]; outputs]
    } else {
        bias
    };
    Ok(Some((super::f32_values(&kernel)?, bias)))
}

/// The shapes of a channel-first 2-D convolution op (input `[N, C, H, W]` or `[C, H, W]` f32,
/// output `[N, O, ho, wo]` or `[O, ho, wo]`) and what ours do with them: check the input and
/// allocate the output in `eval`, facts, cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Planes {
    pub geometry: Geometry,
    pub batched: bool,
    pub inputs: usize,
    pub outputs: usize,
}

impl Planes {
    /// Checks `input`'s shape (f32 or 8-bit values), allocates the output (8-bit when
    /// `u8_out`, else f32) and calls `run(input, images, output)`, which must write every
    /// output element. Ops that take f32 only pass their run through
    /// [`super::activations::f32_only`].
    pub(crate) fn eval(
        &self,
        input: TValue,
        u8_out: bool,
        run: impl FnOnce(Src, usize, Dst) -> TractResult<()>,
    ) -> TractResult<TVec<TValue>> {
        let shape = input.shape();
        let g = self.geometry;
        let chw = &shape[shape.len().saturating_sub(3)..];
        ensure!(
            shape.len() == 3 + self.batched as usize && chw == [self.inputs, g.h, g.w],
            "convolution expects [{}{}, {}, {}], got {shape:?}",
            if self.batched { "N, " } else { "" },
            self.inputs,
            g.h,
            g.w
        );
        let n = if self.batched { shape[0] } else { 1 };
        let (ho, wo) = g.output();
        let mut out_shape: TVec<usize> = tvec![self.outputs, ho, wo];
        if self.batched {
            out_shape.insert(0, n);
        }
        eval_into(&input, u8_out, &out_shape, |x, out| run(x, n, out))
    }

    /// The output fact, of `dt`.
    pub(crate) fn output_facts(
        &self,
        inputs: &[&TypedFact],
        dt: DatumType,
    ) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].rank() == 3 + self.batched as usize);
        let (ho, wo) = self.geometry.output();
        let mut shape: TVec<TDim> = tvec![self.outputs.into(), ho.into(), wo.into()];
        if self.batched {
            shape.insert(0, inputs[0].shape[0].clone());
        }
        Ok(tvec!(dt.fact(shape)))
    }

    /// Multiply-adds: `per_output` for each output element.
    pub(crate) fn cost(
        &self,
        inputs: &[&TypedFact],
        per_output: usize,
    ) -> TractResult<TVec<(Cost, TDim)>> {
        let (ho, wo) = self.geometry.output();
        let images = if self.batched {
            inputs[0].shape[0].clone()
        } else {
            1.into()
        };
        let per_image = self.outputs * ho * wo * per_output;
        Ok(tvec!((Cost::FMA(f32::datum_type()), images * per_image)))
    }
}
