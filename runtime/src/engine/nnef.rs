//! The pack-time optimized payload ([`PayloadFormat::Nnef`](crate::bundle::PayloadFormat)):
//! tract's NNEF, an uncompressed tar of `graph.nnef`, `graph.quant` and one `.dat` per weight,
//! with tract's `tract_core` and `tract_onnx` extensions and ours, `edgefleet`: the ops tract
//! writes no NNEF for (its quantize and dequantize element-wise ops), the ops our ONNX parser
//! adds (LRN, the classical-ML operators, dynamic quantization, 8-bit weights), and float
//! einsums as they are (tract would write them as prefix matmuls: [`PayloadEinSum`]).
//!
//! Why NNEF: it is tract's own serialization of a typed graph, so the device reads back exactly
//! the graph the packer typed and decluttered, with symbols, quantized datum types and every op
//! tract knows, and needs only `tract-core`, `tract-nnef` and `tract-onnx-opl` to do it: no
//! protobuf, no ONNX translation, no type inference (`tract-hir`). A format of our own would
//! have had to re-invent that mapping op by op.
//!
//! [`translate`] (feature `onnx`, the packer's side) parses, types and declutters an ONNX
//! payload once; [`load`] reads the result on the device, where the instruction-set-dependent
//! passes (declutter choices, our kernels, tract's codegen) still run.

use tract_nnef::ast::{ProtoModel, QuantFormat};
use tract_nnef::internal::*;
use tract_nnef::ser::{invocation, numeric, IntoAst};
use tract_nnef::tract_core::ops::einsum::EinSum;
use tract_nnef::tract_core::ops::element_wise::ElementWiseOp;
use tract_nnef::tract_core::ops::quant::{
    DequantizeLinearF32, LookupTable, QuantizeLinearI8, QuantizeLinearU8,
};
use tract_onnx_opl::WithOnnx;

use super::const_weights::QuantizedWeights;
use super::dynamic_quant::{DynamicQuantize, IntegralToI32};

/// The NNEF framework with every extension a payload may use.
/// Names are written as they are (NNEF's extended identifiers, `i"gpu_0/data_0"`), not mangled
/// to `gpu_0_data_0`: the graph's inputs keep the names the manifest gives them.
/// It is `tract_nnef::nnef()`'s, built with the standard library's fragments read by
/// [`super::nnef_text`] (tract's own parser took ~3 ms of it; `tests/nnef_text.rs` checks the
/// two readers agree).
pub fn framework() -> Nnef {
    use tract_nnef::resource::{DatLoader, GraphNnefLoader, GraphQuantLoader, TypedModelLoader};
    let stdlib =
        super::nnef_text::parse_fragments(STDLIB).unwrap_or_else(tract_nnef::framework::stdlib);
    Nnef {
        stdlib,
        registries: vec![tract_nnef::ops::tract_nnef(), tract_nnef::ops::tract_core()],
        resource_loaders: vec![
            GraphNnefLoader.into_boxed(),
            DatLoader.into_boxed(),
            GraphQuantLoader.into_boxed(),
            TypedModelLoader::new(false).into_boxed(),
        ],
        allow_extended_identifier_syntax: true,
        extern_all_constants: false,
    }
    .with_onnx()
    .with_registry(registry())
}

/// tract's NNEF standard library, the copy `framework` reads (`tests/nnef_text.rs` checks it
/// is the one tract ships).
pub const STDLIB: &str = include_str!("nnef_stdlib.nnef");

/// Reads an optimized payload into a typed graph (with the reader [`prefetch_framework`]
/// started, if any).
pub(crate) fn load(payload: &[u8]) -> TractResult<TypedModel> {
    let started = PREFETCHED.lock().ok().and_then(|mut slot| slot.take());
    let nnef = match started.map(|thread| thread.join()) {
        Some(Ok(nnef)) => nnef,
        _ => framework(),
    };
    match proto_model(&nnef, payload)? {
        Some(proto) => nnef.model_for_proto_model(&proto),
        None => nnef.model_for_read(&mut &payload[..]),
    }
}

/// The payload's tar read as tract's `proto_model_for_read` reads it, its `graph.nnef` with
/// [`super::nnef_text`] (~30× faster than tract's parser on int8 MobileNetV2's 100 KB of
/// text). `None`: a payload this does not read the same way (sub-models, a compressed tar, a
/// text the fast parser does not take), which tract then reads as a whole.
fn proto_model(nnef: &Nnef, payload: &[u8]) -> TractResult<Option<ProtoModel>> {
    use tract_nnef::resource::{GRAPH_NNEF_FILENAME, GRAPH_QUANT_FILENAME};
    if payload.starts_with(&[0x1f, 0x8b]) {
        return Ok(None);
    }
    let mut graph = None;
    let mut resources: HashMap<String, Arc<dyn Resource>> = HashMap::new();
    let mut tar = tar::Archive::new(payload);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_path_buf();
        let path = path.strip_prefix("./").unwrap_or(&path).to_path_buf();
        // tract skips any path with a component starting with "." (macOS's tar)
        if path
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
        {
            continue;
        }
        if path.components().count() > 1 && path.ends_with(GRAPH_NNEF_FILENAME) {
            return Ok(None); // a sub-model
        }
        if path.as_os_str() == GRAPH_NNEF_FILENAME {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text)?;
            graph = Some(text);
            continue;
        }
        for loader in &nnef.resource_loaders {
            let loaded = loader
                .try_load(&path, &mut entry, nnef)
                .with_context(|| format!("loading {path:?} ({:?})", loader.name()))?;
            if let Some((id, resource)) = loaded {
                ensure!(
                    resources.insert(id.clone(), resource).is_none(),
                    "{id:?} is in the payload twice"
                );
                break;
            }
        }
    }
    let graph = graph.with_context(|| format!("the payload has no {GRAPH_NNEF_FILENAME}"))?;
    let Some(doc) = super::nnef_text::parse_document(&graph) else {
        return Ok(None);
    };
    let mut tensors = HashMap::new();
    let mut quantization = None;
    let mut others = HashMap::new();
    for (id, resource) in resources {
        if id == GRAPH_QUANT_FILENAME {
            let Ok(formats) = resource.downcast_arc::<HashMap<String, QuantFormat>>() else {
                bail!("{GRAPH_QUANT_FILENAME} was not read as quantization formats");
            };
            let formats = Arc::unwrap_or_clone(formats);
            quantization = Some(
                formats
                    .into_iter()
                    .map(|(k, v)| (Identifier(k), v))
                    .collect(),
            );
        } else if let Some(list) = resource.downcast_ref::<Vec<(String, Arc<Tensor>)>>() {
            for (name, tensor) in list {
                tensors.insert(Identifier::from(&**name), Arc::clone(tensor));
            }
        } else {
            match resource.downcast_arc::<Tensor>() {
                Ok(tensor) => {
                    tensors.insert(Identifier::from(&*id), tensor);
                }
                Err(resource) => {
                    others.insert(id, resource);
                }
            }
        }
    }
    let proto = ProtoModel {
        doc,
        tensors,
        quantization,
        resources: others,
    };
    proto.validate()?;
    Ok(Some(proto))
}

/// Drops a reader [`prefetch_framework`] started that no [`load`] took (an ONNX payload's
/// load, or one that failed first; [`super::PayloadReader`] does it): its thread finishes on
/// its own.
pub(crate) fn forget_prefetched() {
    if let Ok(mut slot) = PREFETCHED.lock() {
        slot.take();
    }
}

/// The reader [`prefetch_framework`] is building, for the next [`load`].
static PREFETCHED: std::sync::Mutex<Option<std::thread::JoinHandle<Nnef>>> =
    std::sync::Mutex::new(None);

/// Starts building the NNEF reader on another thread, for a load that verifies the bundle
/// first: building it (tract parses its NNEF standard library and registers every op) is ~10
/// ms, about what the verification takes, and the two overlap on a board's second core. The
/// next [`load`] takes it; at most one waits (nothing is kept once a load has taken it).
pub(crate) fn prefetch_framework() {
    let Ok(mut slot) = PREFETCHED.lock() else {
        return;
    };
    if slot.is_none() {
        *slot = std::thread::Builder::new()
            .name("edge-nnef-reader".into())
            .spawn(framework)
            .ok();
    }
}

/// Writes `model` as an optimized payload: deterministic (fixed timestamps), uncompressed (the
/// weights rarely compress and the device would pay the inflate at every load). An op with no
/// NNEF form fails with its node named.
pub fn write(model: &TypedModel) -> TractResult<Vec<u8>> {
    let mut model = model.clone();
    // text properties (an ONNX file's metadata: PaddleOCR's character list) that tract's NNEF
    // reader cannot read back once written (newlines, quotes, non-ASCII): the device does not
    // use them, and the manifest keeps the ONNX file's digest
    model.properties.retain(|_, value| {
        value.datum_type() != String::datum_type()
            || value
                .try_as_plain_ram()
                .and_then(|v| v.as_slice::<String>().map(|s| s.to_vec()))
                .is_ok_and(|texts| {
                    texts.iter().all(|t| {
                        t.chars()
                            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ')
                    })
                })
    });
    for node in &mut model.nodes {
        if let Some(einsum) = node.op_as::<EinSum>() {
            if einsum.q_params.is_none() {
                node.op = Box::new(PayloadEinSum(einsum.clone()));
            }
        }
    }
    let mut out = Vec::new();
    framework().write_to_tar_with_config(&model, &mut out, false, true)?;
    Ok(out)
}

/// A float einsum as the payload carries it: its own expression (`NIHW,OI->NOHW`), read back as
/// the same `EinSum`. tract's NNEF writer turns every einsum into a prefix matmul with reshapes
/// around it, a form our kernels' matchers do not read and tract's declutter folds back only
/// with its layout pass, which quantized graphs skip on boards with integer kernels (that cost
/// MobileNetV2 int8 2.8× the instructions on neoverse-n1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PayloadEinSum(EinSum);

impl Op for PayloadEinSum {
    fn name(&self) -> StaticName {
        "EdgePayloadEinSum".into()
    }

    op_as_typed_op!();
}

impl EvalOp for PayloadEinSum {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.0.eval(ctx, inputs)
    }
}

impl TypedOp for PayloadEinSum {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.0.output_facts(inputs)
    }

    as_op!();
}

/// Registers tract's `QuantizeLinear{U8,I8}` element-wise op `$op` (zero point of type `$zp`) as
/// the NNEF primitive `$name(input, scale, zero_point)`, its output type from the quantization
/// file.
macro_rules! register_quantize {
    ($reg:expr, $name:literal, $op:ident, $zp:ty) => {
        $reg.register_element_wise(
            $name,
            std::any::TypeId::of::<$op>(),
            Box::new(|ast, node| {
                let op = mini_op::<$op>(node)?;
                quantize_call(ast, node, $name, op.scale, op.zero_point as i64)
            }),
            quantize_params(),
            |builder, call| {
                let (input, scale, zero_point) = quantize_args(builder, call)?;
                let op = $op {
                    scale,
                    zero_point: <$zp>::try_from(zero_point)?,
                };
                builder.wire(ElementWiseOp(Box::new(op), quant_dt(call)), &[input])
            },
        )
    };
}

/// The `edgefleet` NNEF extension.
fn registry() -> Registry {
    let mut reg = Registry::new("edgefleet").with_doc(
        "Extension `edgefleet`: tract's quantize/dequantize element-wise ops and the ops of edgefleet's ONNX parser.",
    );
    let input = || TypeName::Scalar.tensor().named("input");
    // tract folds ONNX's erf-based GELU (BERT, MiniLM) into this op and writes no NNEF for it
    reg.register_unit_element_wise(
        "edgefleet_gelu_exact",
        &tract_nnef::tract_core::ops::nn::GeluExact {},
    );
    register_quantize!(reg, "edgefleet_quantize_u8", QuantizeLinearU8, u8);
    register_quantize!(reg, "edgefleet_quantize_i8", QuantizeLinearI8, i8);
    reg.register_element_wise(
        "edgefleet_lookup_table",
        std::any::TypeId::of::<LookupTable>(),
        Box::new(|ast, node| {
            let op = mini_op::<LookupTable>(node)?;
            let input = ast.mapping[&node.inputs[0]].clone();
            let table =
                ast.konst_variable(format!("{}.table", node.name), &rctensor1(op.table.table()))?;
            Ok(Some(invocation(
                "edgefleet_lookup_table",
                &[input, table],
                &[],
            )))
        }),
        vec![input(), TypeName::Integer.tensor().named("table")],
        |builder, call| {
            let input = call.named_arg_as(builder, "input")?;
            let table: Arc<Tensor> = call.named_arg_as(builder, "table")?;
            let table = table.try_as_plain_ram()?.as_slice::<u8>()?.to_vec();
            ensure!(
                table.len() == 256,
                "a lookup table of {} entries",
                table.len()
            );
            let op = LookupTable {
                table: tract_linalg::routines::lut_u8(&table)?,
            };
            builder.wire(ElementWiseOp(Box::new(op), quant_dt(call)), &[input])
        },
    );
    reg.register_dumper(|ast, node, op: &PayloadEinSum| {
        Ok(Some(invocation(
            "edgefleet_einsum",
            &[super::ml::inputs_array(ast, node)],
            &[("expr", tract_nnef::ser::string(op.0.axes.to_string()))],
        )))
    });
    reg.register_primitive(
        "edgefleet_einsum",
        &[
            TypeName::Scalar.tensor().array().named("inputs"),
            TypeName::String.named("expr"),
        ],
        &[("output", TypeName::Scalar.tensor())],
        |builder, call| {
            let inputs: TVec<OutletId> = call.named_arg_as(builder, "inputs")?;
            let expr: String = call.named_arg_as(builder, "expr")?;
            let axes: AxesMapping = expr
                .parse()
                .with_context(|| format!("edgefleet_einsum: expression '{expr}'"))?;
            builder.wire(EinSum::new(axes, f32::datum_type()), &inputs)
        },
    );
    reg.register_dumper(|ast, node, op: &DequantizeLinearF32| {
        quantize_call(
            ast,
            node,
            "edgefleet_dequantize_f32",
            op.scale,
            op.zero_point as i64,
        )
    });
    reg.register_primitive(
        "edgefleet_dequantize_f32",
        &quantize_params(),
        &[("output", TypeName::Scalar.tensor())],
        |builder, call| {
            let (input, scale, zero_point) = quantize_args(builder, call)?;
            let zero_point = i32::try_from(zero_point)?;
            builder.wire(DequantizeLinearF32 { scale, zero_point }, &[input])
        },
    );
    reg.register_dumper(|ast, node, _: &DynamicQuantize| {
        let input = ast.mapping[&node.inputs[0]].clone();
        Ok(Some(invocation(
            "edgefleet_dynamic_quantize_u8",
            &[input],
            &[],
        )))
    });
    reg.register_primitive(
        "edgefleet_dynamic_quantize_u8",
        &[input()],
        &[
            ("output", TypeName::Scalar.tensor()),
            ("scale", TypeName::Scalar.tensor()),
            ("zero_point", TypeName::Scalar.tensor()),
        ],
        |builder, call| {
            let input = call.named_arg_as(builder, "input")?;
            builder.wire(DynamicQuantize, &[input])
        },
    );
    reg.register_dumper(|ast, node, _: &IntegralToI32| {
        let input = ast.mapping[&node.inputs[0]].clone();
        Ok(Some(invocation("edgefleet_integral_to_i32", &[input], &[])))
    });
    reg.register_primitive(
        "edgefleet_integral_to_i32",
        &[input()],
        &[("output", TypeName::Integer.tensor())],
        |builder, call| {
            let input = call.named_arg_as(builder, "input")?;
            builder.wire(IntegralToI32, &[input])
        },
    );
    reg.register_dumper(|ast, node, op: &QuantizedWeights| {
        let data = ast.konst_variable(format!("{}.q", node.name), &op.data)?;
        let scale = ast.konst_variable(format!("{}.scale", node.name), &rctensor1(&op.scale.0))?;
        let zero_point = ast.konst_variable(
            format!("{}.zero_point", node.name),
            &rctensor1(&op.zero_point.0),
        )?;
        Ok(Some(invocation(
            "edgefleet_quantized_weights",
            &[data, scale, zero_point],
            &[("axis", numeric(op.axis))],
        )))
    });
    reg.register_primitive(
        "edgefleet_quantized_weights",
        &[
            TypeName::Scalar.tensor().named("data"),
            TypeName::Scalar.tensor().named("scale"),
            TypeName::Scalar.tensor().named("zero_point"),
            TypeName::Integer.named("axis"),
        ],
        &[("output", TypeName::Scalar.tensor())],
        |builder, call| {
            let data: Arc<Tensor> = call.named_arg_as(builder, "data")?;
            let scale: Arc<Tensor> = call.named_arg_as(builder, "scale")?;
            let zero_point: Arc<Tensor> = call.named_arg_as(builder, "zero_point")?;
            let axis = call.named_arg_as(builder, "axis")?;
            let values = |t: &Tensor| -> TractResult<Vec<f32>> {
                Ok(t.cast_to::<f32>()?
                    .try_as_plain_ram()?
                    .as_slice::<f32>()?
                    .to_vec())
            };
            let op =
                QuantizedWeights::new(data, values(&scale)?, values(&zero_point)?, axis, true)?;
            builder.wire(op, &[])
        },
    );
    super::lrn::register_nnef(&mut reg);
    super::ml::register_nnef(&mut reg);
    reg
}

/// The element-wise op inside a node known to wrap an `O`.
fn mini_op<O: ElementWiseMiniOp>(node: &TypedNode) -> TractResult<&O> {
    node.op_as::<ElementWiseOp>()
        .and_then(|e| e.0.downcast_ref::<O>())
        .with_context(|| format!("node {} is not the element-wise op expected", node.name))
}

fn quantize_params() -> Vec<Parameter> {
    vec![
        TypeName::Scalar.tensor().named("input"),
        TypeName::Scalar.named("scale"),
        TypeName::Integer.named("zero_point"),
    ]
}

fn quantize_call(
    ast: &mut IntoAst,
    node: &TypedNode,
    name: &str,
    scale: f32,
    zero_point: i64,
) -> TractResult<Option<Arc<RValue>>> {
    let input = ast.mapping[&node.inputs[0]].clone();
    Ok(Some(invocation(
        name,
        &[input],
        &[
            ("scale", numeric(scale)),
            ("zero_point", numeric(zero_point)),
        ],
    )))
}

fn quantize_args(
    builder: &mut ModelBuilder,
    call: &ResolvedInvocation,
) -> TractResult<(OutletId, f32, i64)> {
    Ok((
        call.named_arg_as(builder, "input")?,
        call.named_arg_as(builder, "scale")?,
        call.named_arg_as(builder, "zero_point")?,
    ))
}

/// The output datum type the quantization file gives the node (a quantized `u8`/`i8`), if any.
fn quant_dt(call: &ResolvedInvocation) -> Option<DatumType> {
    call.dt_from_quant_file.first().copied().flatten()
}
