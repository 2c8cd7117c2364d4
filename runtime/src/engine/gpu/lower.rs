//! Lowers tract's decluttered, shape-concrete graph to a `Program` for the `gpu` engine: values
//! (graph inputs, constants, intermediates) and one kernel dispatch per node (a resize one per
//! axis, a product with oversized weights one per column chunk, a dynamic quantization three),
//! with clamps, simple unary ops
//! and a matrix product's bias that follow a node folded into it, and reshapes and exact casts
//! made free (the value keeps its buffer). Needs no GPU: what cannot be lowered is reported as a reason, and the
//! model then runs on the CPU engine.

use std::collections::{HashMap, HashSet};

use tract_nnef::prelude::*;
use tract_nnef::tract_core::ops::array::{Gather, GatherNd, MultiBroadcastTo, Slice, TypedConcat};
use tract_nnef::tract_core::ops::binary::TypedBinOp;
use tract_nnef::tract_core::ops::cast::Cast;
use tract_nnef::tract_core::ops::change_axes::AxisOp;
use tract_nnef::tract_core::ops::cnn::{
    Conv, Deconv, KernelFormat, MaxPool, PaddingSpec, PoolSpec, SumPool,
};
use tract_nnef::tract_core::ops::downsample::Downsample;
use tract_nnef::tract_core::ops::einsum::EinSum;
use tract_nnef::tract_core::ops::element_wise::ElementWiseOp;
use tract_nnef::tract_core::ops::logic::Iff;
use tract_nnef::tract_core::ops::nn::{
    DataFormat, LeakyRelu, NearestUpsample, Reduce, Reducer, Resize, RmsNorm, Softmax, SoftmaxKind,
};
use tract_nnef::tract_core::ops::quant::{
    DequantizeLinearF32, LookupTable, QuantizeLinearI8, QuantizeLinearU8,
};
use tract_nnef::tract_core::ops::source::TypedSource;

use super::kernels::{
    BinaryOp, Kernel, PoolOp, ReduceOp, RowOp, UnaryOp, KERNEL_PARAMS, MATMUL_TILE, MAX_RANK,
};
use crate::engine::dynamic_quant::DynamicQuantize;
use crate::engine::fake_quant::FakeQuant;
use crate::engine::lrn::Lrn;

/// Index of a value in `Program::values`.
pub(crate) type ValueId = usize;

/// Where a value's data comes from.
#[derive(Clone, Debug)]
pub(crate) enum Origin {
    /// Graph input N, uploaded at each run.
    Input(usize),
    /// Constant data, uploaded once.
    Const(Arc<Vec<f32>>),
    /// Written by a step.
    Computed,
}

/// One buffer-sized value.
#[derive(Clone, Debug)]
pub(crate) struct Value {
    pub elements: usize,
    pub origin: Origin,
}

/// One dispatch.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub kernel: Kernel,
    /// Parameter words (see `kernels`); `p[1]` is filled in by the executor.
    pub params: Vec<u32>,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
    /// Workgroups to launch, for kernels that tile their output (else from `p[0]` threads).
    pub groups: Option<[u32; 3]>,
    /// Node name, for errors and profiles.
    pub node: String,
}

/// A lowered graph.
#[derive(Clone, Debug, Default)]
pub(crate) struct Program {
    pub values: Vec<Value>,
    pub steps: Vec<Step>,
    /// Graph outputs: value and shape.
    pub outputs: Vec<(ValueId, Vec<usize>)>,
    /// Graph inputs: value and shape.
    pub inputs: Vec<(ValueId, Vec<usize>)>,
}

/// Epilogue: clamp then one unary op.
#[derive(Clone, Copy, Debug)]
struct Epilogue {
    low: f32,
    high: f32,
    op: UnaryOp,
    param: f32,
}

impl Default for Epilogue {
    fn default() -> Self {
        Epilogue {
            low: f32::NEG_INFINITY,
            high: f32::INFINITY,
            op: UnaryOp::None,
            param: 0.0,
        }
    }
}

fn header(threads: usize, epi: Epilogue) -> Vec<u32> {
    let mut p = vec![0u32; KERNEL_PARAMS];
    p[0] = threads as u32;
    p[2] = epi.op as u32;
    p[3] = epi.low.to_bits();
    p[4] = epi.high.to_bits();
    p[5] = epi.param.to_bits();
    p
}

/// Row-major strides.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Pads `v` on the left to MAX_RANK with `fill`.
fn pad_left(v: &[usize], fill: usize) -> Result<Vec<u32>, String> {
    if v.len() > MAX_RANK {
        return Err(format!(
            "rank {} is above the gpu kernels' {MAX_RANK}",
            v.len()
        ));
    }
    let mut out = vec![fill as u32; MAX_RANK - v.len()];
    out.extend(v.iter().map(|&x| x as u32));
    Ok(out)
}

/// Merges adjacent axes that are contiguous in every stride list (keeps index math short).
fn merge_axes(dims: &[usize], stride_sets: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut d: Vec<usize> = Vec::new();
    let mut s: Vec<Vec<usize>> = vec![Vec::new(); stride_sets.len()];
    for (ax, &dim) in dims.iter().enumerate() {
        if dim == 1 {
            continue;
        }
        let mergeable = !d.is_empty()
            && stride_sets
                .iter()
                .zip(&s)
                .all(|(set, merged)| merged[merged.len() - 1] == set[ax] * dim);
        if mergeable {
            let last = d.len() - 1;
            d[last] *= dim;
            for (set, merged) in stride_sets.iter().zip(s.iter_mut()) {
                let l = merged.len() - 1;
                merged[l] = set[ax];
            }
        } else {
            d.push(dim);
            for (set, merged) in stride_sets.iter().zip(s.iter_mut()) {
                merged.push(set[ax]);
            }
        }
    }
    if d.is_empty() {
        d.push(1);
        for merged in s.iter_mut() {
            merged.push(0);
        }
    }
    (d, s)
}

struct Lowering<'a> {
    model: &'a TypedModel,
    program: Program,
    /// Value of each outlet already lowered.
    outlet_values: HashMap<OutletId, ValueId>,
    /// Nodes folded into their producer's epilogue: their outlet maps to the producer's value.
    folded: HashSet<usize>,
    /// The device's most workgroups per dispatch dimension.
    max_groups: u32,
    /// The device's largest storage binding, bytes.
    max_binding: u64,
}

/// Whether the kernels can hold values of this type: f32, integers as f32 (exact: 8-bit ones
/// always, token ids and indices below 2^24, which `GpuEngine::run` checks) and booleans as 0 / 1;
/// only ops that move, pick or compare values, and the quantize / dequantize steps, may read or
/// write integers and booleans (see `moves_values`).
fn held_as_f32(dt: DatumType) -> bool {
    [
        f32::datum_type(),
        bool::datum_type(),
        u8::datum_type(),
        i8::datum_type(),
        i32::datum_type(),
        i64::datum_type(),
    ]
    .contains(&dt)
}

/// `outlet`'s fact; tract's error as text (a fallback reason).
fn fact_of(model: &TypedModel, outlet: OutletId) -> Result<&TypedFact, String> {
    model.outlet_fact(outlet).map_err(|e| e.to_string())
}

/// The concrete shape of a value the kernels can hold (`held_as_f32`).
fn shape_of(model: &TypedModel, outlet: OutletId) -> Result<Vec<usize>, String> {
    let fact = fact_of(model, outlet)?;
    if !held_as_f32(fact.datum_type) {
        return Err(format!(
            "'{}' carries {:?} tensors (the gpu kernels compute in f32)",
            model.node(outlet.node).name,
            fact.datum_type
        ));
    }
    fact.shape
        .as_concrete()
        .map(|s| s.to_vec())
        .ok_or_else(|| format!("'{}' has a symbolic shape", model.node(outlet.node).name))
}

/// Ops whose result on integers and booleans held as f32 is exact: they move, pick or compare
/// values, or are logical (and the quantize / dequantize steps, which make and read 8-bit ones).
fn moves_values(op: &dyn TypedOp) -> bool {
    logical(op)
        || op.downcast_ref::<AxisOp>().is_some()
        || op.downcast_ref::<TypedConcat>().is_some()
        || op.downcast_ref::<Slice>().is_some()
        || op.downcast_ref::<MaxPool>().is_some()
        || op.downcast_ref::<Downsample>().is_some()
        || op.downcast_ref::<NearestUpsample>().is_some()
        || op.downcast_ref::<DequantizeLinearF32>().is_some()
        || quantize_step(op).is_some()
        || lookup_table(op).is_some()
        || op.downcast_ref::<Gather>().is_some()
        || op.downcast_ref::<GatherNd>().is_some()
        || op.downcast_ref::<MultiBroadcastTo>().is_some()
        || op.downcast_ref::<Cast>().is_some()
}

/// Comparisons, logical ops, NaN tests and Where: 0 / 1 results (or a pick), exact on any
/// value held as f32.
fn logical(op: &dyn TypedOp) -> bool {
    let binary = op
        .downcast_ref::<TypedBinOp>()
        .and_then(|b| BinaryOp::from_tract_name(b.0.name()))
        .is_some_and(|b| b as u32 >= BinaryOp::And as u32);
    let unary = op
        .downcast_ref::<ElementWiseOp>()
        .is_some_and(|e| ["IsNan", "Not"].contains(&&*e.0.name()));
    binary || unary || op.downcast_ref::<Iff>().is_some()
}

/// tract's byte table op (what a dequantize → f32 op → quantize chain on 8-bit values becomes).
fn lookup_table(op: &dyn TypedOp) -> Option<&LookupTable> {
    op.downcast_ref::<ElementWiseOp>()?
        .0
        .downcast_ref::<LookupTable>()
}

/// `[1 / scale, zero point, lo, hi]` of a QuantizeLinear to u8 or i8.
fn quantize_step(op: &dyn TypedOp) -> Option<[f32; 4]> {
    let ew = op.downcast_ref::<ElementWiseOp>()?;
    if let Some(q) = ew.0.downcast_ref::<QuantizeLinearU8>() {
        return Some([q.scale, q.zero_point as f32, 0.0, 255.0]);
    }
    let q = ew.0.downcast_ref::<QuantizeLinearI8>()?;
    Some([q.scale, q.zero_point as f32, -128.0, 127.0])
}

/// A quantize or a dequantize step on its own (a pair with a reshape between) as the
/// FakeQuant kernel's parameters, the other half the identity.
fn quantize_half(op: &dyn TypedOp) -> Option<[f32; 6]> {
    if let Some([inv, zp, lo, hi]) = quantize_step(op) {
        return Some([inv, zp, lo, hi, 1.0, 0.0]);
    }
    let dq = op.downcast_ref::<DequantizeLinearF32>()?;
    Some([
        1.0,
        0.0,
        f32::NEG_INFINITY,
        f32::INFINITY,
        dq.scale,
        dq.zero_point as f32,
    ])
}

/// The node being lowered: what every op's lowering reads.
struct At<'m> {
    id: usize,
    node: &'m TypedNode,
    /// Its (only) output.
    out: OutletId,
    out_shape: Vec<usize>,
    /// Output elements (at least 1).
    out_elements: usize,
}

/// A scalar constant (any rank, one element) feeding `outlet`, if it is one.
fn scalar_const(model: &TypedModel, outlet: OutletId) -> Option<f32> {
    let fact = model.outlet_fact(outlet).ok()?;
    let k = fact.konst.as_ref()?;
    if k.len() != 1 {
        return None;
    }
    k.cast_to_scalar::<f32>().ok()
}

impl<'a> Lowering<'a> {
    fn new_value(&mut self, elements: usize, origin: Origin) -> ValueId {
        self.program.values.push(Value { elements, origin });
        self.program.values.len() - 1
    }

    /// The value of an input outlet, uploading it if it is a constant.
    fn value_of(&mut self, outlet: OutletId) -> Result<ValueId, String> {
        if let Some(&v) = self.outlet_values.get(&outlet) {
            return Ok(v);
        }
        let fact = fact_of(self.model, outlet)?;
        if let Some(k) = &fact.konst {
            let data = super::super::f32_values(k).map_err(|e| e.to_string())?;
            let v = self.new_value(data.len().max(1), Origin::Const(Arc::new(data)));
            self.outlet_values.insert(outlet, v);
            return Ok(v);
        }
        Err(format!(
            "'{}' is used before it is computed",
            self.model.node(outlet.node).name
        ))
    }

    /// Folds the chain of clamps (Max/Min with a scalar) and at most one unary op that follows
    /// `node`'s output, when each is its producer's only consumer. Returns the epilogue and the
    /// last node of the chain (whose outlet the step's output stands for).
    fn fold_epilogue(&mut self, node: usize) -> (Epilogue, usize) {
        let mut epi = Epilogue::default();
        let mut last = node;
        loop {
            let outlet = OutletId::new(last, 0);
            if self
                .model
                .output_outlets()
                .is_ok_and(|o| o.contains(&outlet))
            {
                break;
            }
            let succ = self.model.outlet_successors(outlet);
            if succ.len() != 1 || self.model.node(last).outputs.len() != 1 {
                break;
            }
            let next = self.model.node(succ[0].node);
            if let Some(bin) = next.op_as::<TypedBinOp>() {
                if bin.1.is_some() || epi.op != UnaryOp::None {
                    break;
                }
                let other = next.inputs[1 - succ[0].slot];
                let Some(c) = scalar_const(self.model, other) else {
                    break;
                };
                match bin.0.name() {
                    "Max" => epi.low = epi.low.max(c),
                    "Min" => epi.high = epi.high.min(c),
                    _ => break,
                }
            } else if let Some(ew) = next.op_as::<ElementWiseOp>() {
                if ew.1.is_some() || epi.op != UnaryOp::None {
                    break;
                }
                let Some(op) = UnaryOp::from_tract_name(&ew.0.name()) else {
                    break;
                };
                epi.op = op;
                if let Some(l) = ew.0.downcast_ref::<LeakyRelu>() {
                    epi.param = l.alpha;
                }
            } else {
                break;
            }
            if shape_of(self.model, OutletId::new(next.id, 0)).ok()
                != shape_of(self.model, outlet).ok()
            {
                break;
            }
            self.folded.insert(next.id);
            last = next.id;
        }
        (epi, last)
    }

    /// Appends one dispatch of `kernel` writing `output` (threads: `params[0]`).
    fn dispatch(
        &mut self,
        node: usize,
        kernel: Kernel,
        params: Vec<u32>,
        inputs: Vec<ValueId>,
        output: ValueId,
        groups: Option<[u32; 3]>,
    ) {
        self.program.steps.push(Step {
            kernel,
            params,
            inputs,
            output,
            groups,
            node: self.model.node(node).name.clone(),
        });
    }

    /// One dispatch into a new value, which stands for `node`'s output and, when an epilogue
    /// folded the nodes after it, `last`'s.
    fn push_step(
        &mut self,
        node: usize,
        kernel: Kernel,
        params: Vec<u32>,
        inputs: Vec<ValueId>,
        out_elements: usize,
        last: usize,
    ) {
        let output = self.new_value(out_elements, Origin::Computed);
        self.dispatch(node, kernel, params, inputs, output, None);
        self.outlet_values.insert(OutletId::new(last, 0), output);
        if last != node {
            self.outlet_values.insert(OutletId::new(node, 0), output);
        }
    }

    /// Lowers node `id`: sources become inputs, constants wait for their first use, and every
    /// other op goes to the lowering of its family ([`Lowering::lower_op`]).
    fn lower_node(&mut self, id: usize) -> Result<(), String> {
        let model = self.model;
        let node = model.node(id);
        let out = OutletId::new(id, 0);
        let op = &node.op;
        if op.downcast_ref::<TypedSource>().is_some() {
            let ix = model
                .input_outlets()
                .map_err(|e| e.to_string())?
                .iter()
                .position(|o| o.node == id)
                .ok_or("a source that is not a graph input")?;
            let shape = shape_of(model, out)?;
            let v = self.new_value(shape.iter().product::<usize>().max(1), Origin::Input(ix));
            self.outlet_values.insert(out, v);
            self.program.inputs.push((v, shape));
            return Ok(());
        }
        if fact_of(model, out)?.konst.is_some() && node.outputs.len() == 1 {
            // constants (and anything tract folded to one) are uploaded when first used
            return Ok(());
        }
        if op.downcast_ref::<DynamicQuantize>().is_some() {
            return self.lower_dynamic_quantize(id);
        }
        if node.outputs.len() != 1 {
            return Err(format!(
                "'{}' ({}) has several outputs",
                node.name,
                op.name()
            ));
        }
        if !moves_values(op.as_ref()) {
            self.check_f32(node)?;
        }
        let out_shape = shape_of(model, out)?;
        let at = At {
            id,
            node,
            out,
            out_elements: out_shape.iter().product::<usize>().max(1),
            out_shape,
        };
        self.lower_op(&at)
    }

    /// Refuses a node that computes on anything but f32 (constant inputs, such as sizes, axes
    /// and weights, are each op's business).
    fn check_f32(&self, node: &TypedNode) -> Result<(), String> {
        let out = OutletId::new(node.id, 0);
        for outlet in node.inputs.iter().chain([&out]) {
            let fact = fact_of(self.model, *outlet)?;
            let dt = fact.datum_type;
            if dt != f32::datum_type() && (fact.konst.is_none() || *outlet == out) {
                return Err(format!(
                    "'{}' ({}) computes on {dt:?} tensors (the gpu kernels compute in f32)",
                    node.name,
                    node.op.name()
                ));
            }
        }
        Ok(())
    }

    /// The lowering of `at`'s op, by its family.
    fn lower_op(&mut self, at: &At) -> Result<(), String> {
        let op = at.node.op.as_ref();
        let (id, out_shape, out_elements) = (at.id, &at.out_shape[..], at.out_elements);
        if let Some(parameters) = quantize_half(op) {
            return self.lower_fake_quant(id, parameters, out_elements);
        }
        if let Some(cast) = op.downcast_ref::<Cast>() {
            return self.lower_cast(at, cast);
        }
        if let Some(gather) = op.downcast_ref::<Gather>() {
            return self.lower_gather(at, gather);
        }
        if let Some(gnd) = op.downcast_ref::<GatherNd>() {
            return self.lower_gather_nd(id, gnd, out_elements);
        }
        if op.downcast_ref::<Iff>().is_some() {
            return self.lower_broadcasting(id, Kernel::Select, 0, out_shape);
        }
        if op.downcast_ref::<MultiBroadcastTo>().is_some() {
            let src = broadcast_strides(&self.in_shape(at, 0)?, out_shape)?;
            let (dims, s) = merge_axes(out_shape, &[src, strides(out_shape)]);
            return self.lower_copy(at, 0, (&dims, &s[0], &s[1]));
        }
        if let Some(lut) = lookup_table(op) {
            return self.lower_lut(at, lut);
        }
        if let Some(axis_op) = op.downcast_ref::<AxisOp>() {
            return self.lower_axis_op(at, axis_op);
        }
        if let Some(bin) = op.downcast_ref::<TypedBinOp>() {
            return self.lower_binary(at, bin);
        }
        if let Some(ew) = op.downcast_ref::<ElementWiseOp>() {
            return self.lower_unary(at, ew);
        }
        if let Some(conv) = op.downcast_ref::<Conv>() {
            return self.lower_conv(id, conv, out_shape);
        }
        if let Some(es) = op.downcast_ref::<EinSum>() {
            return self.lower_einsum(id, es, out_shape);
        }
        if let Some(mp) = op.downcast_ref::<MaxPool>() {
            if mp.with_index_outputs.is_some() {
                return Err("MaxPool with index outputs".into());
            }
            return self.lower_pool(id, &mp.pool_spec, PoolOp::Max, out_shape);
        }
        if let Some(sp) = op.downcast_ref::<SumPool>() {
            let kind = match (sp.normalize, sp.count_include_pad) {
                (false, _) => PoolOp::Sum,
                (true, true) => PoolOp::AvgWithPad,
                (true, false) => PoolOp::AvgNoPad,
            };
            return self.lower_pool(id, &sp.pool_spec, kind, out_shape);
        }
        if let Some(r) = op.downcast_ref::<Reduce>() {
            return self.lower_reduce(at, r);
        }
        if let Some(cat) = op.downcast_ref::<TypedConcat>() {
            return self.lower_concat(at, cat);
        }
        if let Some(sl) = op.downcast_ref::<Slice>() {
            let istrides = strides(&self.in_shape(at, 0)?);
            let start = sl.start.to_i64().map_err(|e| e.to_string())? as usize;
            let (dims, s) = merge_axes(out_shape, &[istrides.clone(), strides(out_shape)]);
            return self.lower_copy(at, start * istrides[sl.axis], (&dims, &s[0], &s[1]));
        }
        if let Some(sm) = op.downcast_ref::<Softmax>() {
            return self.lower_softmax(at, sm);
        }
        if let Some(rms) = op.downcast_ref::<RmsNorm>() {
            let eps = rms.eps.cast_to_scalar::<f32>().map_err(|e| e.to_string())?;
            let (len, inner) = (out_shape[rms.axis], &out_shape[rms.axis + 1..]);
            return self.lower_rows(id, RowOp::RmsNorm, eps, len, inner);
        }
        if let Some(up) = op.downcast_ref::<NearestUpsample>() {
            return self.lower_upsample(at, up);
        }
        if let Some(ds) = op.downcast_ref::<Downsample>() {
            return self.lower_downsample(at, ds);
        }
        if let Some(rs) = op.downcast_ref::<Resize>() {
            return self.lower_resize(id, rs, out_shape);
        }
        if let Some(de) = op.downcast_ref::<Deconv>() {
            return self.lower_deconv(id, de, out_shape);
        }
        if let Some(fq) = op.downcast_ref::<FakeQuant>() {
            return self.lower_fake_quant(id, fq.parameters(), out_elements);
        }
        if let Some(lrn) = op.downcast_ref::<Lrn>() {
            return self.lower_lrn(at, lrn);
        }
        Err(format!("op {} ('{}')", op.name(), at.node.name))
    }

    /// The shape of `at`'s input `slot`.
    fn in_shape(&self, at: &At, slot: usize) -> Result<Vec<usize>, String> {
        shape_of(self.model, at.node.inputs[slot])
    }

    /// A copy of `at`'s input 0 from element `offset` on through `(dims, source strides, output
    /// strides)`, with the epilogue that follows folded in.
    fn lower_copy(
        &mut self,
        at: &At,
        offset: usize,
        (dims, src, dst): (&[usize], &[usize], &[usize]),
    ) -> Result<(), String> {
        let input = self.value_of(at.node.inputs[0])?;
        let (epi, last) = self.fold_epilogue(at.id);
        let params = copy_params(at.out_elements, epi, offset, 0, dims, src, dst)?;
        self.push_step(
            at.id,
            Kernel::Copy,
            params,
            vec![input],
            at.out_elements,
            last,
        );
        Ok(())
    }

    /// Casts: held values that stay what they are (to f32, or integers to a wide integer: f32
    /// to an integer would truncate, a narrower integer wrap) are the same value; to bool is a
    /// unary step.
    fn lower_cast(&mut self, at: &At, cast: &Cast) -> Result<(), String> {
        let from = fact_of(self.model, at.node.inputs[0])?.datum_type;
        let wide_integer = cast.to == i32::datum_type() || cast.to == i64::datum_type();
        let input = self.value_of(at.node.inputs[0])?;
        if cast.to == bool::datum_type() && from != bool::datum_type() {
            let epi = Epilogue {
                op: UnaryOp::NonZero,
                ..Default::default()
            };
            let params = header(at.out_elements, epi);
            self.push_step(
                at.id,
                Kernel::Unary,
                params,
                vec![input],
                at.out_elements,
                at.id,
            );
            return Ok(());
        }
        let exact = cast.to == from
            || cast.to == f32::datum_type()
            || from == bool::datum_type()
            || (wide_integer && !from.is_float());
        if !exact {
            return Err(format!(
                "cast '{}' from {from:?} to {:?}",
                at.node.name, cast.to
            ));
        }
        self.outlet_values.insert(at.out, input);
        Ok(())
    }

    fn lower_gather(&mut self, at: &At, gather: &Gather) -> Result<(), String> {
        let data_shape = self.in_shape(at, 0)?;
        let indices: usize = self.in_shape(at, 1)?.iter().product();
        let axis = gather.axis;
        let inner: usize = data_shape[axis + 1..].iter().product();
        let data = self.value_of(at.node.inputs[0])?;
        let ix = self.value_of(at.node.inputs[1])?;
        let (epi, last) = self.fold_epilogue(at.id);
        let mut p = header(at.out_elements, epi);
        p.extend([data_shape[axis], indices.max(1), inner.max(1)].map(|v| v as u32));
        self.push_step(
            at.id,
            Kernel::Gather,
            p,
            vec![data, ix],
            at.out_elements,
            last,
        );
        Ok(())
    }

    /// tract's byte lookup tables (quantized activations): the 256 values as a constant.
    fn lower_lut(&mut self, at: &At, lut: &LookupTable) -> Result<(), String> {
        let signed = fact_of(self.model, at.out)?.datum_type == i8::datum_type();
        let table: Vec<f32> = lut
            .table
            .table()
            .iter()
            .map(|&b| if signed { b as i8 as f32 } else { b as f32 })
            .collect();
        if table.len() != 256 {
            return Err(format!(
                "lookup table '{}' of {}",
                at.node.name,
                table.len()
            ));
        }
        let input = self.value_of(at.node.inputs[0])?;
        let tv = self.new_value(256, Origin::Const(Arc::new(table)));
        let (epi, last) = self.fold_epilogue(at.id);
        let params = header(at.out_elements, epi);
        self.push_step(
            at.id,
            Kernel::Lut,
            params,
            vec![input, tv],
            at.out_elements,
            last,
        );
        Ok(())
    }

    /// A moved axis is a strided copy; adding, removing or reshaping axes keeps the bytes.
    fn lower_axis_op(&mut self, at: &At, axis_op: &AxisOp) -> Result<(), String> {
        let AxisOp::Move(from, to) = axis_op else {
            let input = self.value_of(at.node.inputs[0])?;
            self.outlet_values.insert(at.out, input);
            return Ok(());
        };
        let ishape = self.in_shape(at, 0)?;
        let istrides = strides(&ishape);
        let mut perm: Vec<usize> = (0..ishape.len()).collect();
        let ax = perm.remove(*from);
        perm.insert(*to, ax);
        let dims: Vec<usize> = perm.iter().map(|&a| ishape[a]).collect();
        let src: Vec<usize> = perm.iter().map(|&a| istrides[a]).collect();
        let dst = strides(&dims);
        self.lower_copy(at, 0, (&dims, &src, &dst))
    }

    /// A binary op; a clamp by a scalar of an already computed value is a unary step.
    fn lower_binary(&mut self, at: &At, bin: &TypedBinOp) -> Result<(), String> {
        let name = bin.0.name();
        let bop = BinaryOp::from_tract_name(name)
            .filter(|_| bin.1.is_none())
            .ok_or_else(|| format!("binary op {name}"))?;
        let inputs = &at.node.inputs;
        for (slot, other) in [(0usize, 1usize), (1, 0)] {
            if let (Some(c), BinaryOp::Max | BinaryOp::Min) =
                (scalar_const(self.model, inputs[other]), bop)
            {
                if scalar_const(self.model, inputs[slot]).is_some()
                    || self.in_shape(at, slot)?.iter().product::<usize>().max(1) != at.out_elements
                {
                    break;
                }
                let input = self.value_of(inputs[slot])?;
                let (mut epi, last) = self.fold_epilogue(at.id);
                if bop == BinaryOp::Max {
                    epi.low = epi.low.max(c);
                } else {
                    epi.high = epi.high.min(c);
                }
                let params = header(at.out_elements, epi);
                self.push_step(
                    at.id,
                    Kernel::Unary,
                    params,
                    vec![input],
                    at.out_elements,
                    last,
                );
                return Ok(());
            }
        }
        self.lower_broadcasting(at.id, Kernel::Binary, bop as u32, &at.out_shape)
    }

    fn lower_unary(&mut self, at: &At, ew: &ElementWiseOp) -> Result<(), String> {
        let name = ew.0.name();
        let uop = UnaryOp::from_tract_name(&name)
            .filter(|_| ew.1.is_none())
            .ok_or_else(|| format!("element-wise op {name}"))?;
        let input = self.value_of(at.node.inputs[0])?;
        let mut epi = Epilogue {
            op: uop,
            ..Default::default()
        };
        if let Some(l) = ew.0.downcast_ref::<LeakyRelu>() {
            epi.param = l.alpha;
        }
        let params = header(at.out_elements, epi);
        self.push_step(
            at.id,
            Kernel::Unary,
            params,
            vec![input],
            at.out_elements,
            at.id,
        );
        Ok(())
    }

    /// A reduction: the kept axes and the reduced ones, each merged, as strides into the input.
    fn lower_reduce(&mut self, at: &At, r: &Reduce) -> Result<(), String> {
        let rop = match r.reducer {
            Reducer::Sum => ReduceOp::Sum,
            Reducer::Max => ReduceOp::Max,
            Reducer::Min => ReduceOp::Min,
            Reducer::Prod => ReduceOp::Prod,
            Reducer::MeanOfSquares => ReduceOp::MeanOfSquares,
            ref other => return Err(format!("reduction {other:?}")),
        };
        let ishape = self.in_shape(at, 0)?;
        let istrides = strides(&ishape);
        let axes = |reduced: bool| -> Vec<usize> {
            ishape
                .iter()
                .enumerate()
                .map(|(ax, &d)| {
                    if r.axes.contains(&ax) == reduced {
                        d
                    } else {
                        1
                    }
                })
                .collect()
        };
        let (kd, ks) = merge_axes(&axes(false), std::slice::from_ref(&istrides));
        let (rd, rs) = merge_axes(&axes(true), std::slice::from_ref(&istrides));
        let input = self.value_of(at.node.inputs[0])?;
        let (epi, last) = self.fold_epilogue(at.id);
        let mut p = header(at.out_elements, epi);
        p.push(rop as u32);
        p.push(0);
        p.extend(pad_left(&kd, 1)?);
        p.extend(pad_left(&ks[0], 0)?);
        p.extend(pad_left(&rd, 1)?);
        p.extend(pad_left(&rs[0], 0)?);
        self.push_step(at.id, Kernel::Reduce, p, vec![input], at.out_elements, last);
        Ok(())
    }

    /// Each input copied into its place of one output.
    fn lower_concat(&mut self, at: &At, cat: &TypedConcat) -> Result<(), String> {
        let output = self.new_value(at.out_elements, Origin::Computed);
        let ostrides = strides(&at.out_shape);
        let mut offset = 0usize;
        for slot in 0..at.node.inputs.len() {
            let ishape = self.in_shape(at, slot)?;
            let input = self.value_of(at.node.inputs[slot])?;
            let n: usize = ishape.iter().product();
            if n > 0 {
                let (dims, s) = merge_axes(&ishape, &[strides(&ishape), ostrides.clone()]);
                let at_offset = offset * ostrides[cat.axis];
                let epi = Epilogue::default();
                let params = copy_params(n, epi, 0, at_offset, &dims, &s[0], &s[1])?;
                self.dispatch(at.id, Kernel::Copy, params, vec![input], output, None);
            }
            offset += ishape[cat.axis];
        }
        self.outlet_values.insert(at.out, output);
        Ok(())
    }

    /// Softmax or log-softmax over adjacent axes (opset < 13 flattens the trailing ones): rows.
    fn lower_softmax(&mut self, at: &At, sm: &Softmax) -> Result<(), String> {
        let name = &at.node.name;
        if sm.quant_output_dt.is_some() {
            return Err(format!("quantized softmax '{name}'"));
        }
        let (Some(&first), Some(&last)) = (sm.axes.first(), sm.axes.last()) else {
            return Err(format!("softmax '{name}' over no axis"));
        };
        if sm.axes.iter().enumerate().any(|(k, &a)| a != first + k) {
            return Err(format!("softmax '{name}' over apart axes"));
        }
        let kind = match sm.kind {
            SoftmaxKind::LogSoftmax => RowOp::LogSoftmax,
            _ => RowOp::Softmax,
        };
        let len: usize = at.out_shape[first..=last].iter().product();
        self.lower_rows(at.id, kind, 0.0, len, &at.out_shape[last + 1..])
    }

    /// `out[.., y·s + r, ..] = in[.., y, ..]`: each axis as (y, r), r with source stride 0.
    fn lower_upsample(&mut self, at: &At, up: &NearestUpsample) -> Result<(), String> {
        let ishape = self.in_shape(at, 0)?;
        let (istrides, ostrides) = (strides(&ishape), strides(&at.out_shape));
        let (mut dims, mut src, mut dst) = (Vec::new(), Vec::new(), Vec::new());
        for (ax, &scale) in up.scales.iter().enumerate() {
            dims.extend([ishape[ax], scale]);
            src.extend([istrides[ax], 0]);
            dst.extend([ostrides[ax] * scale, ostrides[ax]]);
        }
        let (dims, s) = merge_axes(&dims, &[src, dst]);
        self.lower_copy(at, 0, (&dims, &s[0], &s[1]))
    }

    /// Every `stride`-th element of an axis from `modulo` on: a strided copy.
    fn lower_downsample(&mut self, at: &At, ds: &Downsample) -> Result<(), String> {
        if ds.stride <= 0 {
            return Err(format!(
                "downsample '{}' with stride {}",
                at.node.name, ds.stride
            ));
        }
        let istrides = strides(&self.in_shape(at, 0)?);
        let mut src = istrides.clone();
        src[ds.axis] *= ds.stride as usize;
        let (dims, s) = merge_axes(&at.out_shape, &[src, strides(&at.out_shape)]);
        let offset = ds.modulo * istrides[ds.axis];
        self.lower_copy(at, offset, (&dims, &s[0], &s[1]))
    }

    fn lower_lrn(&mut self, at: &At, lrn: &Lrn) -> Result<(), String> {
        let ishape = self.in_shape(at, 0)?;
        if ishape.len() < 2 {
            return Err(format!("LRN '{}' on rank {}", at.node.name, ishape.len()));
        }
        let (alpha, beta, bias, size) = lrn.parameters();
        let input = self.value_of(at.node.inputs[0])?;
        let (epi, last) = self.fold_epilogue(at.id);
        let mut p = header(at.out_elements, epi);
        p.extend([
            ishape[1] as u32,
            ishape[2..].iter().product::<usize>() as u32,
        ]);
        p.push(size as u32);
        p.extend([
            (alpha / size as f32).to_bits(),
            beta.to_bits(),
            bias.to_bits(),
        ]);
        self.push_step(at.id, Kernel::Lrn, p, vec![input], at.out_elements, last);
        Ok(())
    }

    /// An element-wise step over broadcast operands (`Binary`: `op` its code; `Select`): every
    /// input of the node read at output coordinates, the axes merged where all allow it.
    fn lower_broadcasting(
        &mut self,
        id: usize,
        kernel: Kernel,
        op: u32,
        out_shape: &[usize],
    ) -> Result<(), String> {
        let node = self.model.node(id);
        let mut inputs = vec![];
        let mut stride_sets = vec![];
        for &outlet in &node.inputs {
            inputs.push(self.value_of(outlet)?);
            let shape = shape_of(self.model, outlet)?;
            stride_sets.push(broadcast_strides(&shape, out_shape)?);
        }
        let (dims, s) = merge_axes(out_shape, &stride_sets);
        let out_elements = out_shape.iter().product::<usize>().max(1);
        let (epi, last) = self.fold_epilogue(id);
        let mut p = header(out_elements, epi);
        p.extend([dims.len() as u32, op]);
        p.extend(pad_left(&dims, 1)?);
        // three stride sets whatever the operand count (BROADCAST in kernels.rs)
        for set in &s {
            p.extend(pad_left(set, 0)?);
        }
        p.resize(KERNEL_PARAMS + 2 + 4 * MAX_RANK, 0);
        self.push_step(id, kernel, p, inputs, out_elements, last);
        Ok(())
    }

    /// GatherNd with constant indices: each index tuple is a row of the data viewed as
    /// `[rows, inner]`, so it is a Gather of precomputed row numbers.
    fn lower_gather_nd(
        &mut self,
        id: usize,
        gnd: &GatherNd,
        out_elements: usize,
    ) -> Result<(), String> {
        let node = self.model.node(id);
        let data_shape = shape_of(self.model, node.inputs[0])?;
        let fact = fact_of(self.model, node.inputs[1])?;
        let (Some(indices), 0) = (&fact.konst, gnd.batch_dims) else {
            return Err(format!(
                "GatherNd '{}' with computed indices or batch dims",
                node.name
            ));
        };
        let indices = indices
            .cast_to::<i64>()
            .map_err(|e| e.to_string())?
            .to_plain_array_view::<i64>()
            .map_err(|e| e.to_string())?
            .iter()
            .copied()
            .collect::<Vec<i64>>();
        let depth = *fact
            .shape
            .as_concrete()
            .and_then(|s| s.last())
            .unwrap_or(&0);
        if depth == 0 || depth > data_shape.len() {
            return Err(format!("GatherNd '{}': index depth {depth}", node.name));
        }
        let rows: usize = data_shape[..depth].iter().product();
        if rows > 1 << 24 {
            return Err(format!("GatherNd '{}' over {rows} rows", node.name));
        }
        let inner: usize = data_shape[depth..].iter().product();
        let mut table = vec![];
        for tuple in indices.chunks(depth) {
            let mut row = 0i64;
            for (&ix, &dim) in tuple.iter().zip(&data_shape) {
                let ix = if ix < 0 { ix + dim as i64 } else { ix };
                if !(0..dim as i64).contains(&ix) {
                    return Err(format!("GatherNd '{}': index {ix} out of range", node.name));
                }
                row = row * dim as i64 + ix;
            }
            table.push(row as f32);
        }
        let data = self.value_of(node.inputs[0])?;
        let count = table.len();
        let tv = self.new_value(count.max(1), Origin::Const(Arc::new(table)));
        let (epi, last) = self.fold_epilogue(id);
        let mut p = header(out_elements, epi);
        p.extend([rows, count.max(1), inner.max(1)].map(|v| v as u32));
        self.push_step(id, Kernel::Gather, p, vec![data, tv], out_elements, last);
        Ok(())
    }

    /// ONNX DynamicQuantizeLinear (dynamic quantization graphs): the range and the pair
    /// `[scale, zero point]` in one single-workgroup dispatch, the u8 values (held as f32) from
    /// them, and the pair copied out as the op's scalar outputs 1 and 2.
    fn lower_dynamic_quantize(&mut self, id: usize) -> Result<(), String> {
        let node = self.model.node(id);
        let n = shape_of(self.model, node.inputs[0])?
            .iter()
            .product::<usize>()
            .max(1);
        let x = self.value_of(node.inputs[0])?;
        let pair = self.new_value(2, Origin::Computed);
        let mut p = header(1, Epilogue::default());
        p.push(n as u32);
        self.dispatch(id, Kernel::DynamicRange, p, vec![x], pair, Some([1, 1, 1]));
        let q = self.new_value(n, Origin::Computed);
        let p = header(n, Epilogue::default());
        self.dispatch(id, Kernel::DynamicQuantize, p, vec![x, pair], q, None);
        self.outlet_values.insert(OutletId::new(id, 0), q);
        for slot in 1..3 {
            let v = self.new_value(1, Origin::Computed);
            let p = copy_params(1, Epilogue::default(), slot - 1, 0, &[1], &[1], &[1])?;
            self.dispatch(id, Kernel::Copy, p, vec![pair], v, None);
            self.outlet_values.insert(OutletId::new(id, slot), v);
        }
        Ok(())
    }

    /// A `FakeQuant` step: `[1 / scale, zero point, lo, hi]` of the quantize half, `[scale, zero
    /// point]` of the dequantize half.
    fn lower_fake_quant(
        &mut self,
        id: usize,
        parameters: [f32; 6],
        elements: usize,
    ) -> Result<(), String> {
        let input = self.value_of(self.model.node(id).inputs[0])?;
        let (epi, last) = self.fold_epilogue(id);
        let mut p = header(elements, epi);
        p.extend(parameters.map(f32::to_bits));
        self.push_step(id, Kernel::FakeQuant, p, vec![input], elements, last);
        Ok(())
    }

    /// A `Rows` step: `kind` along an axis of `len` with `inner` elements after it.
    fn lower_rows(
        &mut self,
        id: usize,
        kind: RowOp,
        eps: f32,
        len: usize,
        inner: &[usize],
    ) -> Result<(), String> {
        let node = self.model.node(id);
        let elements: usize = shape_of(self.model, OutletId::new(id, 0))?.iter().product();
        let inner: usize = inner.iter().product();
        let input = self.value_of(node.inputs[0])?;
        let (epi, last) = self.fold_epilogue(id);
        let mut p = header(elements / len.max(1), epi);
        p.extend([len as u32, inner.max(1) as u32, kind as u32, eps.to_bits()]);
        self.push_step(id, Kernel::Rows, p, vec![input], elements.max(1), last);
        Ok(())
    }

    /// tract's `Resize` (linear, cubic or nearest, any coordinate transform): one `Resample`
    /// step per resized axis, through the op's own per-axis plan of taps and weights.
    fn lower_resize(&mut self, id: usize, rs: &Resize, out_shape: &[usize]) -> Result<(), String> {
        let node = self.model.node(id);
        let konst = |ix: Option<usize>| -> Result<Option<Arc<Tensor>>, String> {
            let Some(ix) = ix.filter(|&ix| ix < node.inputs.len()) else {
                return Ok(None);
            };
            let fact = fact_of(self.model, node.inputs[ix])?;
            match &fact.konst {
                Some(k) => Ok(Some(k.clone())),
                None => Err(format!("resize '{}' with computed scales", node.name)),
            }
        };
        let mut shape = shape_of(self.model, node.inputs[0])?;
        let scales: Vec<f32> =
            match konst(rs.optional_scales_input)?.filter(|s| s.len() == shape.len()) {
                Some(s) => s
                    .cast_to::<f32>()
                    .and_then(|s| Ok(s.to_plain_array_view::<f32>()?.iter().copied().collect()))
                    .map_err(|e| e.to_string())?,
                None => out_shape
                    .iter()
                    .zip(&shape)
                    .map(|(&o, &i)| o as f32 / i as f32)
                    .collect(),
            };
        let mut value = self.value_of(node.inputs[0])?;
        let resized: Vec<usize> = (0..shape.len())
            .filter(|&ax| !(shape[ax] == out_shape[ax] && scales[ax] == 1.0))
            .collect();
        if resized.is_empty() {
            self.outlet_values.insert(OutletId::new(id, 0), value);
            return Ok(());
        }
        let (epi, last) = self.fold_epilogue(id);
        for (k, &ax) in resized.iter().enumerate() {
            let (len_in, len_out) = (shape[ax], out_shape[ax]);
            let plan = rs.plan_axis(scales[ax], len_in, len_out);
            let mut table: Vec<f32> = plan
                .indices
                .iter()
                .map(|&i| f32::from_bits(i as u32))
                .collect();
            table.extend(plan.weights.iter().enumerate().map(|(t, &w)| {
                if plan.extrapolated[t / plan.window] {
                    0.0
                } else {
                    w
                }
            }));
            let tv = self.new_value(table.len(), Origin::Const(Arc::new(table)));
            shape[ax] = len_out;
            let elements: usize = shape.iter().product::<usize>().max(1);
            let step_epi = if k + 1 == resized.len() {
                epi
            } else {
                Epilogue::default()
            };
            let mut p = header(elements, step_epi);
            let inner: usize = shape[ax + 1..].iter().product();
            p.extend([len_in, len_out, inner, plan.window].map(|v| v as u32));
            let output = self.new_value(elements, Origin::Computed);
            self.dispatch(id, Kernel::Resample, p, vec![value, tv], output, None);
            value = output;
        }
        self.outlet_values.insert(OutletId::new(last, 0), value);
        self.outlet_values.insert(OutletId::new(id, 0), value);
        Ok(())
    }

    fn lower_deconv(&mut self, id: usize, de: &Deconv, out_shape: &[usize]) -> Result<(), String> {
        let node = self.model.node(id);
        if node.inputs.len() != 3 {
            return Err(format!("transposed convolution '{}' inputs", node.name));
        }
        let spec = &de.pool_spec;
        let ishape = shape_of(self.model, node.inputs[0])?;
        let (n, c, hw) = nchw(spec, &ishape)?;
        let kernel = fact_of(self.model, node.inputs[1])?
            .konst
            .clone()
            .ok_or_else(|| {
                format!(
                    "transposed convolution '{}' with a computed kernel",
                    node.name
                )
            })?;
        // [G, O/G, C/G, spatial..] row-major: the CONV kernel's indexing
        let kernel = kernel
            .cast_to::<f32>()
            .and_then(|k| de.kernel_format.kernel_as_group_o_i_hw(&k, de.group))
            .and_then(|k| super::super::f32_values(&k))
            .map_err(|e| e.to_string())?;
        let kv = self.new_value(kernel.len(), Origin::Const(Arc::new(kernel)));
        let o = spec.output_channels;
        let has_bias = self.bias_kind(node, 2, o)?;
        let computed = spec
            .padding
            .compute_for_deconv(
                &hw,
                &spec.kernel_shape,
                &spec.dilations(),
                &spec.strides(),
                &de.adjustments,
            )
            .map_err(|e| e.to_string())?;
        let (ph, pw) = match computed.as_slice() {
            [w] => (0, w.pad_before),
            [h, w] => (h.pad_before, w.pad_before),
            _ => return Err(format!("{}-d padding", computed.len())),
        };
        let x = self.value_of(node.inputs[0])?;
        let b = self.value_of(node.inputs[2])?;
        let (oh, ow) = spatial_pair(&out_shape[out_shape.len() - hw.len()..]);
        let (kh, kw) = spatial_pair(&spec.kernel_shape);
        let (sh, sw) = spatial_pair(&spec.strides());
        let (dh, dw) = spatial_pair(&spec.dilations());
        let (h, w) = spatial_pair(&hw);
        let out_elements: usize = out_shape.iter().product();
        let (epi, last) = self.fold_epilogue(id);
        let mut p = header(out_elements, epi);
        p.extend(
            [
                n, c, h, w, o, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw, de.group,
            ]
            .iter()
            .map(|&v| v as u32),
        );
        p.push(has_bias);
        self.push_step(id, Kernel::Deconv, p, vec![x, kv, b], out_elements, last);
        Ok(())
    }

    /// The bias word of a convolution: 1 per output channel, 2 one scalar.
    fn bias_kind(&self, node: &TypedNode, slot: usize, channels: usize) -> Result<u32, String> {
        let len = fact_of(self.model, node.inputs[slot])?
            .shape
            .as_concrete()
            .map(|s| s.iter().product::<usize>())
            .unwrap_or(0);
        match len {
            1 => Ok(2),
            l if l == channels => Ok(1),
            _ => Err(format!("convolution '{}' bias of {len}", node.name)),
        }
    }

    fn lower_conv(&mut self, id: usize, conv: &Conv, out_shape: &[usize]) -> Result<(), String> {
        let node = self.model.node(id);
        if conv.q_params.is_some() || node.inputs.len() != 3 {
            return Err(format!("quantized convolution '{}'", node.name));
        }
        let ishape = shape_of(self.model, node.inputs[0])?;
        let (n, c, hw) = nchw(&conv.pool_spec, &ishape)?;
        let (oh, ow) = match out_shape.len() - ishape.len() + hw.len() {
            1 => (1, out_shape[out_shape.len() - 1]),
            _ => (
                out_shape[out_shape.len() - 2],
                out_shape[out_shape.len() - 1],
            ),
        };
        let o = conv.pool_spec.output_channels;
        let kfact = fact_of(self.model, node.inputs[1])?;
        let kernel = kfact
            .konst
            .clone()
            .ok_or_else(|| format!("convolution '{}' with a computed kernel", node.name))?;
        let kernel = oihw(&kernel, conv.kernel_fmt, conv.group).map_err(|e| e.to_string())?;
        let kv = self.new_value(kernel.len(), Origin::Const(Arc::new(kernel)));
        let has_bias = self.bias_kind(node, 2, o)?;
        let x = self.value_of(node.inputs[0])?;
        let b = self.value_of(node.inputs[2])?;
        let (kh, kw) = spatial_pair(&conv.pool_spec.kernel_shape);
        let (sh, sw) = spatial_pair(&conv.pool_spec.strides());
        let (dh, dw) = spatial_pair(&conv.pool_spec.dilations());
        let (ph, pw) = padding(&conv.pool_spec, &hw)?;
        let (h, w) = spatial_pair(&hw);
        let out_elements: usize = out_shape.iter().product();
        let (epi, last) = self.fold_epilogue(id);
        // one thread per four outputs of a row
        let mut p = header(n * o * oh * ow.div_ceil(4), epi);
        p.extend(
            [
                n, c, h, w, o, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw, conv.group,
            ]
            .iter()
            .map(|&v| v as u32),
        );
        p.push(has_bias);
        self.push_step(id, Kernel::Conv, p, vec![x, kv, b], out_elements, last);
        Ok(())
    }

    fn lower_einsum(&mut self, id: usize, es: &EinSum, out_shape: &[usize]) -> Result<(), String> {
        let node = self.model.node(id);
        if es.q_params.is_some() || node.inputs.len() != 2 || es.operating_dt != f32::datum_type() {
            return Err(format!("einsum '{}' ({})", node.name, es.axes));
        }
        let sa_shape = shape_of(self.model, node.inputs[0])?;
        let sb_shape = shape_of(self.model, node.inputs[1])?;
        let (sa, sb) = (strides(&sa_shape), strides(&sb_shape));
        let mut out_dims = vec![1usize; out_shape.len()];
        let mut a_out = vec![0usize; out_shape.len()];
        let mut b_out = vec![0usize; out_shape.len()];
        let (mut red_dims, mut a_red, mut b_red) = (Vec::new(), Vec::new(), Vec::new());
        let mut einsum_axes = Vec::new();
        for axis in es.axes.iter_all_axes() {
            if axis.inputs[0].len() > 1 || axis.inputs[1].len() > 1 || axis.outputs[0].len() > 1 {
                return Err(format!(
                    "einsum '{}' with a repeated axis ({})",
                    node.name, es.axes
                ));
            }
            let ia = axis.inputs[0].first().copied();
            let ib = axis.inputs[1].first().copied();
            let dim = ia
                .map(|p| sa_shape[p])
                .or(ib.map(|p| sb_shape[p]))
                .unwrap_or(1);
            let stride_a = ia
                .map(|p| if sa_shape[p] == 1 { 0 } else { sa[p] })
                .unwrap_or(0);
            let stride_b = ib
                .map(|p| if sb_shape[p] == 1 { 0 } else { sb[p] })
                .unwrap_or(0);
            einsum_axes.push((dim, stride_a, stride_b, axis.outputs[0].first().copied()));
            match axis.outputs[0].first() {
                Some(&o) => {
                    out_dims[o] = out_shape[o];
                    a_out[o] = stride_a;
                    b_out[o] = stride_b;
                }
                None => {
                    red_dims.push(dim);
                    a_red.push(stride_a);
                    b_red.push(stride_b);
                }
            }
        }
        if self.lower_matmul(id, &einsum_axes, out_shape)? {
            return Ok(());
        }
        let (od, os) = merge_axes(&out_dims, &[a_out, b_out]);
        let (rd, rs) = merge_axes(&red_dims, &[a_red, b_red]);
        if rd.len() > 4 {
            return Err(format!(
                "einsum '{}' reduces over more than 4 axes",
                node.name
            ));
        }
        let a = self.value_of(node.inputs[0])?;
        let b = self.value_of(node.inputs[1])?;
        let out_elements: usize = out_shape.iter().product::<usize>().max(1);
        let (epi, last) = self.fold_epilogue(id);
        let mut p = header(out_elements, epi);
        p.push(rd.len() as u32);
        p.push(0);
        p.extend(pad_left(&od, 1)?);
        p.extend(pad_left(&os[0], 0)?);
        p.extend(pad_left(&os[1], 0)?);
        let pad4 = |v: &[usize], fill: usize| {
            let mut out = vec![fill as u32; 4 - v.len()];
            out.extend(v.iter().map(|&x| x as u32));
            out
        };
        p.extend(pad4(&rd, 1));
        p.extend(pad4(&rs[0], 0));
        p.extend(pad4(&rs[1], 0));
        self.push_step(id, Kernel::Einsum, p, vec![a, b], out_elements, last);
        Ok(())
    }

    /// An Add of a constant that broadcasts to `id`'s output and is its only reader: the bias a
    /// `Matmul` can add in its epilogue. Returns the Add's node and the constant's strides at
    /// output coordinates.
    fn foldable_bias(
        &self,
        id: usize,
        out_shape: &[usize],
    ) -> Option<(usize, OutletId, Vec<usize>)> {
        let outlet = OutletId::new(id, 0);
        if self.model.output_outlets().ok()?.contains(&outlet) {
            return None;
        }
        let succ = self.model.outlet_successors(outlet);
        let [next] = succ else { return None };
        let node = self.model.node(next.node);
        let bin = node.op_as::<TypedBinOp>()?;
        if bin.0.name() != "Add" || bin.1.is_some() {
            return None;
        }
        let other = node.inputs[1 - next.slot];
        let fact = self.model.outlet_fact(other).ok()?;
        fact.konst.as_ref()?;
        let shape = fact.shape.as_concrete()?.to_vec();
        if shape_of(self.model, OutletId::new(node.id, 0)).ok()? != out_shape {
            return None;
        }
        let strides = broadcast_strides(&shape, out_shape).ok()?;
        Some((node.id, other, strides))
    }

    /// Lowers an einsum that is a batched matrix product (each output axis read by one operand
    /// or, as a batch axis, by both; the summed axes read by both; each group one axis once
    /// merged) to the tiled `Matmul` kernel, folding a bias Add and the epilogue. `axes`: (size,
    /// a stride, b stride, output axis) per einsum axis. `Ok(false)`: not one; use the generic
    /// kernel.
    fn lower_matmul(
        &mut self,
        id: usize,
        axes: &[(usize, usize, usize, Option<usize>)],
        out_shape: &[usize],
    ) -> Result<bool, String> {
        let ostrides = strides(out_shape);
        let bias = self.foldable_bias(id, out_shape);
        let bias_strides = |o: usize| bias.as_ref().map_or(0, |b| b.2[o]);
        // per group: dims and stride sets (batch: a, b, out, bias; m: a, out, bias; n: b, out,
        // bias; k: a, b)
        let (mut batch, mut m, mut n, mut k) = (
            (Vec::new(), vec![Vec::new(); 4]),
            (Vec::new(), vec![Vec::new(); 3]),
            (Vec::new(), vec![Vec::new(); 3]),
            (Vec::new(), vec![Vec::new(); 2]),
        );
        fn push(group: &mut (Vec<usize>, Vec<Vec<usize>>), dim: usize, strides: &[usize]) {
            group.0.push(dim);
            for (set, &s) in group.1.iter_mut().zip(strides) {
                set.push(s);
            }
        }
        for &(dim, sa, sb, out) in axes {
            if dim == 1 {
                continue;
            }
            match (out, sa != 0, sb != 0) {
                (Some(o), true, true) => {
                    push(&mut batch, dim, &[sa, sb, ostrides[o], bias_strides(o)])
                }
                (Some(o), true, false) => push(&mut m, dim, &[sa, ostrides[o], bias_strides(o)]),
                (Some(o), false, true) => push(&mut n, dim, &[sb, ostrides[o], bias_strides(o)]),
                (None, true, true) => push(&mut k, dim, &[sa, sb]),
                _ => return Ok(false),
            }
        }
        let one = |group: &(Vec<usize>, Vec<Vec<usize>>)| {
            let (d, s) = merge_axes(&group.0, &group.1);
            (d.len() == 1).then(|| (d[0], s.iter().map(|v| v[0]).collect::<Vec<usize>>()))
        };
        let (Some(batch), Some(m), Some(n), Some(k)) = (one(&batch), one(&m), one(&n), one(&k))
        else {
            return Ok(false);
        };
        let node = self.model.node(id);
        // a constant right operand above the device's binding limit (a classifier's weights on
        // lavapipe or a mobile GPU: 128 MB) goes up in column chunks that each fit
        let b_fact = fact_of(self.model, node.inputs[1])?;
        let b_elements = b_fact
            .shape
            .as_concrete()
            .map_or(0, |s| s.iter().product::<usize>());
        let budget = (self.max_binding.saturating_sub(16) / 4) as usize;
        let chunks = match &b_fact.konst {
            Some(konst) if b_elements > budget && batch.0 == 1 => {
                let per_chunk = budget / k.0.max(1);
                let per_chunk = if per_chunk >= MATMUL_TILE as usize {
                    per_chunk / MATMUL_TILE as usize * MATMUL_TILE as usize
                } else {
                    per_chunk
                };
                if per_chunk == 0 {
                    return Err(format!(
                        "einsum '{}': one column of its weights is above the binding limit",
                        node.name
                    ));
                }
                let flat = super::super::f32_values(konst).map_err(|e| e.to_string())?;
                let mut chunks = Vec::new();
                for n0 in (0..n.0).step_by(per_chunk) {
                    let cols = per_chunk.min(n.0 - n0);
                    let mut slice = Vec::with_capacity(k.0 * cols);
                    for kk in 0..k.0 {
                        slice.extend((n0..n0 + cols).map(|c| flat[kk * k.1[1] + c * n.1[0]]));
                    }
                    chunks.push((n0, cols, slice));
                }
                Some(chunks)
            }
            _ => None,
        };
        // a matrix–vector product wastes most of a 32×32 tile: the generic kernel does better
        if chunks.is_none() && (m.0 < 16 || n.0 < 16) {
            return Ok(false);
        }
        let limit = self.max_groups;
        let widest = chunks
            .as_ref()
            .map_or(n.0, |c| c.iter().map(|c| c.1).max().unwrap_or(0));
        let groups = [
            (widest as u32).div_ceil(MATMUL_TILE),
            (m.0 as u32).div_ceil(MATMUL_TILE),
            batch.0 as u32,
        ];
        if groups.iter().any(|&g| g > limit) {
            return Ok(false);
        }
        let a = self.value_of(node.inputs[0])?;
        let (bias_value, start) = match &bias {
            Some((add, konst, _)) => {
                self.folded.insert(*add);
                (Some(self.value_of(*konst)?), *add)
            }
            None => (None, id),
        };
        let (epi, last) = self.fold_epilogue(start);
        let out_elements: usize = out_shape.iter().product::<usize>().max(1);
        // (b value, b's k and n strides, first column, columns) per dispatch
        let pieces = match chunks {
            None => vec![(self.value_of(node.inputs[1])?, k.1[1], n.1[0], 0, n.0)],
            Some(chunks) => chunks
                .into_iter()
                .map(|(n0, cols, slice)| {
                    let v = self.new_value(slice.len(), Origin::Const(Arc::new(slice)));
                    (v, cols, 1, n0, cols)
                })
                .collect(),
        };
        let output = self.new_value(out_elements, Origin::Computed);
        for (b, sbk, sbn, n0, cols) in pieces {
            let mut p = header(out_elements, epi);
            p.extend([m.0, cols, k.0, usize::from(bias.is_some())].map(|v| v as u32));
            p.extend([batch.1[0], m.1[0], k.1[0]].map(|v| v as u32));
            p.extend([batch.1[1], sbk, sbn].map(|v| v as u32));
            p.extend([batch.1[2], m.1[1], n.1[1]].map(|v| v as u32));
            p.extend([batch.1[3], m.1[2], n.1[2]].map(|v| v as u32));
            p.extend([n0 * n.1[1], n0 * n.1[2]].map(|v| v as u32));
            // without a bias the third binding is any buffer: the input `a`
            let inputs = vec![a, b, bias_value.unwrap_or(a)];
            let tiles = [(cols as u32).div_ceil(MATMUL_TILE), groups[1], groups[2]];
            self.dispatch(id, Kernel::Matmul, p, inputs, output, Some(tiles));
        }
        for outlet in [id, start, last] {
            self.outlet_values.insert(OutletId::new(outlet, 0), output);
        }
        Ok(true)
    }

    fn lower_pool(
        &mut self,
        id: usize,
        spec: &PoolSpec,
        kind: PoolOp,
        out_shape: &[usize],
    ) -> Result<(), String> {
        let node = self.model.node(id);
        let ishape = shape_of(self.model, node.inputs[0])?;
        let (n, c, hw) = nchw(spec, &ishape)?;
        let (h, w) = spatial_pair(&hw);
        let (oh, ow) = if hw.len() == 1 {
            (1, out_shape[out_shape.len() - 1])
        } else {
            (
                out_shape[out_shape.len() - 2],
                out_shape[out_shape.len() - 1],
            )
        };
        let (kh, kw) = spatial_pair(&spec.kernel_shape);
        let (sh, sw) = spatial_pair(&spec.strides());
        let (dh, dw) = spatial_pair(&spec.dilations());
        let (ph, pw) = padding(spec, &hw)?;
        let x = self.value_of(node.inputs[0])?;
        let out_elements: usize = out_shape.iter().product();
        let (epi, last) = self.fold_epilogue(id);
        let mut p = header(out_elements, epi);
        p.extend(
            [n, c, h, w, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw]
                .iter()
                .map(|&v| v as u32),
        );
        p.push(kind as u32);
        self.push_step(id, Kernel::Pool, p, vec![x], out_elements, last);
        Ok(())
    }
}

fn copy_params(
    n: usize,
    epi: Epilogue,
    src_offset: usize,
    dst_offset: usize,
    dims: &[usize],
    src: &[usize],
    dst: &[usize],
) -> Result<Vec<u32>, String> {
    let mut p = header(n, epi);
    p.push(src_offset as u32);
    p.push(dst_offset as u32);
    p.extend(pad_left(dims, 1)?);
    p.extend(pad_left(src, 0)?);
    p.extend(pad_left(dst, 0)?);
    Ok(p)
}

/// Strides of `input` read at output coordinates (0 on broadcast axes).
fn broadcast_strides(input: &[usize], output: &[usize]) -> Result<Vec<usize>, String> {
    if input.len() > output.len() {
        return Err("broadcast to a lower rank".into());
    }
    let padded: Vec<usize> = std::iter::repeat_n(1, output.len() - input.len())
        .chain(input.iter().copied())
        .collect();
    let s = strides(&padded);
    Ok(padded
        .iter()
        .zip(s)
        .map(|(&d, s)| if d == 1 { 0 } else { s })
        .collect())
}

/// N, C and the spatial dims of an NCHW / CHW input (1 or 2 spatial axes).
fn nchw(spec: &PoolSpec, shape: &[usize]) -> Result<(usize, usize, Vec<usize>), String> {
    let (n, rest) = match spec.data_format {
        DataFormat::NCHW => (shape[0], &shape[1..]),
        DataFormat::CHW => (1, shape),
        other => return Err(format!("{other:?} data layout")),
    };
    let hw = rest[1..].to_vec();
    if hw.is_empty() || hw.len() > 2 {
        return Err(format!("{}-d convolution or pooling", hw.len()));
    }
    Ok((n, rest[0], hw))
}

/// (H, W) of 1 or 2 spatial values (1-D as H = 1).
fn spatial_pair(v: &[usize]) -> (usize, usize) {
    match v {
        [w] => (1, *w),
        [h, w, ..] => (*h, *w),
        [] => (1, 1),
    }
}

fn padding(spec: &PoolSpec, hw: &[usize]) -> Result<(usize, usize), String> {
    if matches!(spec.padding, PaddingSpec::ExplicitOnnxPool(_, _, true)) {
        return Err("ceil-mode pooling".into());
    }
    let computed = spec.computed_padding(hw);
    Ok(match computed.as_slice() {
        [w] => (0, w.pad_before),
        [h, w] => (h.pad_before, w.pad_before),
        _ => return Err(format!("{}-d padding", computed.len())),
    })
}

/// The kernel as O, I/group, H, W f32 values.
fn oihw(kernel: &Tensor, fmt: KernelFormat, group: usize) -> TractResult<Vec<f32>> {
    let k = kernel.cast_to::<f32>()?.into_owned();
    let view = k.to_plain_array_view::<f32>()?;
    let rank = view.ndim();
    let perm: Vec<usize> = match fmt {
        KernelFormat::OIHW => (0..rank).collect(),
        // HWIO: spatial.., I, O  → O, I, spatial..
        KernelFormat::HWIO => {
            let mut p = vec![rank - 1, rank - 2];
            p.extend(0..rank - 2);
            p
        }
        // OHWI: O, spatial.., I → O, I, spatial..
        KernelFormat::OHWI => {
            let mut p = vec![0, rank - 1];
            p.extend(1..rank - 1);
            p
        }
    };
    let _ = group;
    Ok(view
        .permuted_axes(perm)
        .as_standard_layout()
        .iter()
        .copied()
        .collect())
}

/// Lowers `model` (decluttered, every shape concrete) for a device that launches at most
/// `max_groups` workgroups per dispatch dimension and binds at most `max_binding` bytes.
pub(crate) fn lower(
    model: &TypedModel,
    max_groups: u32,
    max_binding: u64,
) -> Result<Program, String> {
    let mut l = Lowering {
        model,
        program: Program::default(),
        outlet_values: HashMap::new(),
        folded: HashSet::new(),
        max_groups,
        max_binding,
    };
    for id in model.eval_order().map_err(|e| e.to_string())? {
        if l.folded.contains(&id) {
            continue;
        }
        l.lower_node(id)?;
    }
    // graph input order (sources were met in evaluation order)
    let values = &l.program.values;
    l.program
        .inputs
        .sort_by_key(|(v, _)| match values[*v].origin {
            Origin::Input(ix) => ix,
            _ => usize::MAX,
        });
    let outputs = model.output_outlets().map_err(|e| e.to_string())?.to_vec();
    for o in outputs {
        let shape = shape_of(model, o)?;
        let v = l.value_of(o)?;
        l.program.outputs.push((v, shape));
    }
    Ok(l.program)
}
