//! 8-bit activations between our ops in QDQ graphs: where one of our convolutions feeds a
//! quantize→dequantize pair ([`super::fake_quant`]) whose readers are our depthwise or integer
//! 1×1 convolutions (or feeds one of our convolutions that quantizes its input itself),
//! the producer writes the pair's 8-bit values `q` (a `u8` tensor) and the readers take
//! `(q − z) · s` from them: the same values the pair computes, at a quarter of the bytes.
//!
//! In a QDQ MobileNetV2 every inverted-residual block's expanded activation (up to 96×112×112)
//! went through memory four times as f32: the 1×1 convolution's store, the pair's read and
//! write, and the depthwise convolution's read; the depthwise output was read back by the next
//! 1×1 convolution's quantizing pack. Now the expand convolution rounds into bytes in its
//! store, the depthwise convolution copies them into its padded scratch (widening them to
//! floats only where it has no integer kernel) and rounds its own output, and the project
//! convolution's pack only interleaves bytes.
//!
//! This module is the pass that links producers and readers ([`substitute`]); the 8-bit form
//! is [`edge_kernels::U8Form`] (the pair's rounding and its inverse), and the views our ops
//! evaluate on are [`super::activations`].

use edge_kernels::U8Form;
use tract_nnef::tract_core::internal::*;

use super::depthwise::DepthwiseConv;
use super::fake_quant::FakeQuant;
use super::qdense_conv::QDenseConv;
use super::qpointwise::QPointwise;

/// Links producers and readers through 8-bit tensors wherever that gives the same values;
/// returns how many links it made. Runs after our convolutions are substituted.
pub fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    model.compact()?;
    let mut links = 0;
    for id in model.eval_order()? {
        let Some(link) = Link::at(model, id)? else {
            continue;
        };
        link.apply(model)?;
        links += 1;
    }
    model.compact()?;
    Ok(links)
}

/// One producer whose f32 output is only read, through a pair or by a convolution's own
/// quantizer, as the 8-bit values of `form`.
struct Link {
    producer: usize,
    form: U8Form,
    /// The pair between them, bypassed (its readers are the readers below).
    pair: Option<usize>,
    readers: Vec<InletId>,
}

impl Link {
    fn at(model: &TypedModel, id: usize) -> TractResult<Option<Link>> {
        let node = model.node(id);
        let outputs = model.output_outlets()?;
        let out = OutletId::new(id, 0);
        if produces_f32(node.op.as_ref()).is_none()
            || outputs.contains(&out)
            || node.outputs[0].successors.len() != 1
        {
            return Ok(None);
        }
        let next = node.outputs[0].successors[0];
        let reader = model.node(next.node);
        if let Some(form) = quantizes_f32_input(reader.op.as_ref()) {
            return Ok(Some(Link {
                producer: id,
                form,
                pair: None,
                readers: vec![next],
            }));
        }
        let Some(form) = reader.op_as::<FakeQuant>().and_then(FakeQuant::as_u8) else {
            return Ok(None);
        };
        let readers = &reader.outputs[0].successors;
        let all_ours = readers
            .iter()
            .all(|r| reads_as(model.node(r.node).op.as_ref(), form).is_some());
        if outputs.contains(&OutletId::new(reader.id, 0)) || readers.is_empty() || !all_ours {
            return Ok(None);
        }
        Ok(Some(Link {
            producer: id,
            form,
            pair: Some(reader.id),
            readers: readers.to_vec(),
        }))
    }

    fn apply(self, model: &mut TypedModel) -> TractResult<()> {
        let producer = produces_f32(model.node(self.producer).op.as_ref())
            .context("producer changed")?(self.form);
        let node = model.node_mut(self.producer);
        node.outputs[0].fact.datum_type = u8::datum_type();
        node.op = producer;
        for r in &self.readers {
            let reader =
                reads_as(model.node(r.node).op.as_ref(), self.form).context("reader changed")?;
            model.node_mut(r.node).op = reader;
            if self.pair.is_some() {
                model.add_edge(OutletId::new(self.producer, 0), *r)?;
            }
        }
        Ok(())
    }
}

type Rebuild = Box<dyn FnOnce(U8Form) -> Box<dyn TypedOp>>;

/// For our ops that write f32 and can write 8-bit values instead: the op so changed.
fn produces_f32(op: &dyn TypedOp) -> Option<Rebuild> {
    if let Some(dw) = op.downcast_ref::<DepthwiseConv>() {
        if dw.output_form().is_none() {
            let dw = dw.clone();
            return Some(Box::new(move |f| Box::new(dw.with_output(f))));
        }
    }
    if let Some(qp) = op.downcast_ref::<QPointwise>() {
        if qp.output_form().is_none() {
            let qp = qp.clone();
            return Some(Box::new(move |f| Box::new(qp.with_output(f))));
        }
    }
    if let Some(qc) = op.downcast_ref::<QDenseConv>() {
        if qc.output_form().is_none() {
            let qc = qc.clone();
            return Some(Box::new(move |f| Box::new(qc.with_output(f))));
        }
    }
    None
}

/// For our ops that quantize their f32 input themselves: the form they quantize to.
fn quantizes_f32_input(op: &dyn TypedOp) -> Option<U8Form> {
    if let Some(qp) = op.downcast_ref::<QPointwise>() {
        return qp.quantizes_f32_input();
    }
    op.downcast_ref::<DepthwiseConv>()
        .and_then(DepthwiseConv::quantizes_f32_input)
}

/// For our ops that read the pair's f32 output, or quantize their f32 input to its form, and
/// can read its 8-bit values instead: the op so changed.
fn reads_as(op: &dyn TypedOp, form: U8Form) -> Option<Box<dyn TypedOp>> {
    if let Some(dw) = op.downcast_ref::<DepthwiseConv>() {
        if dw.input_form().is_none() {
            return Some(Box::new(dw.with_input(form)));
        }
        if dw.quantizes_f32_input() == Some(form) {
            return Some(Box::new(dw.with_u8_input()));
        }
    }
    if let Some(qp) = op.downcast_ref::<QPointwise>() {
        if qp.quantizes_f32_input() == Some(form) {
            return Some(Box::new(qp.with_u8_input()));
        }
    }
    None
}
