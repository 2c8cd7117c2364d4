//! What a plain ONNX file says about itself: its graph inputs (name, element type, dims,
//! symbolic or fixed) and outputs, read from the protobuf without building a tract model. Used
//! to pack arbitrary `.onnx` files on the fly (`edgectl bench MODEL.onnx`) and by the quantizer.

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::pb::type_proto::Value as TypeValue;
use tract_onnx::prelude::Framework;

use edge_bundle::tensor::DType;
use edge_bundle::{Dim, InputSpec, Layout, NanPolicy};

/// One graph input or output as the file declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphValue {
    /// Name in the graph.
    pub name: String,
    /// Element type, if it is one the runtime exchanges (`None`: e.g. bool, f16, string).
    pub dtype: Option<DType>,
    /// ONNX element type code, for messages when `dtype` is `None`.
    pub onnx_type: i32,
    /// Declared dims (`Dim::Named` for symbolic or unknown ones).
    pub dims: Vec<Dim>,
}

/// The interface of an ONNX graph.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphInterface {
    /// Inputs that are not initializers, in graph order.
    pub inputs: Vec<GraphValue>,
    /// Outputs, in graph order.
    pub outputs: Vec<GraphValue>,
}

fn dtype(code: i32) -> Option<DType> {
    match DataType::try_from(code).ok()? {
        DataType::Float => Some(DType::F32),
        DataType::Double => Some(DType::F64),
        DataType::Int64 => Some(DType::I64),
        DataType::Int32 => Some(DType::I32),
        DataType::Uint8 => Some(DType::U8),
        DataType::Int8 => Some(DType::I8),
        _ => None,
    }
}

fn value(v: &tract_onnx::pb::ValueInfoProto) -> GraphValue {
    let (onnx_type, dims) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => {
            let dims = t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .enumerate()
                        .map(|(ix, d)| match &d.value {
                            Some(DimValue::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as u64),
                            Some(DimValue::DimParam(p)) if !p.is_empty() => Dim::Named(p.clone()),
                            _ => Dim::Named(format!("{}_dim{ix}", v.name)),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (t.elem_type, dims)
        }
        None => (0, Vec::new()),
    };
    GraphValue {
        name: v.name.clone(),
        dtype: dtype(onnx_type),
        onnx_type,
        dims,
    }
}

/// The graph of ONNX bytes (what the readers below look at).
fn graph(onnx: &[u8]) -> Result<tract_onnx::pb::GraphProto, String> {
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &onnx[..])
        .map_err(|e| format!("not an ONNX model: {e}"))?;
    proto
        .graph
        .ok_or_else(|| "the ONNX model has no graph".to_string())
}

/// Reads the graph interface of ONNX bytes.
pub fn interface(onnx: &[u8]) -> Result<GraphInterface, String> {
    let graph = graph(onnx)?;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    Ok(GraphInterface {
        inputs: graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .map(value)
            .collect(),
        outputs: graph.output.iter().map(value).collect(),
    })
}

/// The class labels of the graph's classifier (`ai.onnx.ml` `TreeEnsembleClassifier`,
/// `LinearClassifier` or `SVMClassifier`: `classlabels_strings`, else `classlabels_int64s` as
/// text), in the order of its probability columns; `None` when the graph has no such node.
/// Several classifiers must agree (a graph that disagrees gets no labels from here).
pub fn class_labels(onnx: &[u8]) -> Result<Option<Vec<String>>, String> {
    let graph = graph(onnx)?;
    let mut found: Option<Vec<String>> = None;
    for node in graph.node.iter().filter(|n| {
        n.domain == "ai.onnx.ml"
            && matches!(
                n.op_type.as_str(),
                "TreeEnsembleClassifier" | "LinearClassifier" | "SVMClassifier"
            )
    }) {
        let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
        let labels: Vec<String> = match (attr("classlabels_strings"), attr("classlabels_int64s")) {
            (Some(a), _) if !a.strings.is_empty() => a
                .strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
            (_, Some(a)) => a.ints.iter().map(|i| i.to_string()).collect(),
            _ => continue,
        };
        match &found {
            Some(previous) if *previous != labels => return Ok(None),
            _ => found = Some(labels),
        }
    }
    Ok(found)
}

/// Whether the graph quantizes anywhere (QDQ, QOperator or dynamic quantization): then its
/// outputs differ between our instruction-set paths by more than float rounding (a value one
/// float bit apart can land one 8-bit step apart at a pair, and the step travels on).
pub fn is_quantized(onnx: &[u8]) -> Result<bool, String> {
    let graph = graph(onnx)?;
    Ok(graph.node.iter().any(|n| {
        matches!(
            n.op_type.as_str(),
            "QuantizeLinear"
                | "DequantizeLinear"
                | "DynamicQuantizeLinear"
                | "ConvInteger"
                | "MatMulInteger"
        ) || n.op_type.starts_with("QLinear")
    }))
}

/// Input specs for the graph inputs with every dim made concrete: `shapes` gives a full shape
/// by input name; otherwise a symbolic leading dim becomes 1 and any other symbolic dim is an
/// error naming the input (the caller passes `--shape NAME=1x3x224x224`).
pub fn concrete_inputs(
    interface: &GraphInterface,
    shapes: &[(String, Vec<u64>)],
) -> Result<Vec<InputSpec>, String> {
    for (name, _) in shapes {
        if !interface.inputs.iter().any(|i| &i.name == name) {
            return Err(format!(
                "--shape names '{name}', which is not a graph input (inputs: {})",
                interface
                    .inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    interface
        .inputs
        .iter()
        .map(|i| {
            let dtype = i.dtype.ok_or_else(|| {
                format!(
                    "input '{}' has ONNX element type {}, which the runtime does not exchange \
                     (f32, f64, i64, i32, u8, i8)",
                    i.name, i.onnx_type
                )
            })?;
            let dims: Vec<u64> = match shapes.iter().find(|(n, _)| n == &i.name) {
                Some((_, s)) => {
                    if s.len() != i.dims.len() && !i.dims.is_empty() {
                        return Err(format!(
                            "--shape {}: {} dims given, the graph declares {}",
                            i.name,
                            s.len(),
                            i.dims.len()
                        ));
                    }
                    for (ix, (given, declared)) in s.iter().zip(&i.dims).enumerate() {
                        if let Dim::Fixed(n) = declared {
                            if n != given {
                                return Err(format!(
                                    "--shape {}: dim {ix} is fixed at {n} in the graph, not {given}",
                                    i.name
                                ));
                            }
                        }
                    }
                    s.clone()
                }
                None => i
                    .dims
                    .iter()
                    .enumerate()
                    .map(|(ix, d)| match d {
                        Dim::Fixed(n) => Ok(*n),
                        Dim::Named(_) if ix == 0 => Ok(1),
                        Dim::Named(s) => Err(format!(
                            "input '{}' has a symbolic dim '{s}' at axis {ix}; give its shape \
                             with --shape {}=...",
                            i.name, i.name
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            };
            if dims.is_empty() || dims.contains(&0) {
                return Err(format!(
                    "input '{}' needs a non-empty shape with no zero dims (got {dims:?})",
                    i.name
                ));
            }
            let layout = match (dims.len(), dtype) {
                (4, DType::F32) => Layout::NCHW,
                (2, _) => Layout::NC,
                _ => Layout::Other,
            };
            Ok(InputSpec {
                name: i.name.clone(),
                dtype,
                shape: dims.into_iter().map(Dim::Fixed).collect(),
                layout,
                max_batch: None,
                nan_policy: NanPolicy::default(),
                normalize: None,
                image: None,
                feature_names: Vec::new(),
            })
        })
        .collect()
}

/// Parses `NAME=1x3x224x224[;NAME2=...]` (also accepting `,` between dims).
pub fn parse_shapes(text: &str) -> Result<Vec<(String, Vec<u64>)>, String> {
    text.split(';')
        .filter(|s| !s.trim().is_empty())
        .map(|part| {
            let (name, dims) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}': expected NAME=DIMS, e.g. input=1x3x224x224"))?;
            let dims = dims
                .split(['x', ','])
                .map(|d| {
                    d.trim()
                        .parse::<u64>()
                        .map_err(|_| format!("'{part}': '{d}' is not a dimension"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((name.trim().to_string(), dims))
        })
        .collect()
}

/// A one-node ONNX graph (`y = Relu(x)`, x: f32 `[1, n]`): what `edgectl bench` runs to measure an
/// engine's fixed cost per inference (dispatch, synchronization, copies) apart from the model.
pub fn one_op_graph(n: usize) -> Vec<u8> {
    single_node_graph("Relu", &[1, n as i64], vec![])
}

/// A one-node ONNX graph, opset 13: `y = OP(x)` with these attributes, x and y f32 of `dims`.
pub fn single_node_graph(
    op: &str,
    dims: &[i64],
    attribute: Vec<tract_onnx::pb::AttributeProto>,
) -> Vec<u8> {
    use prost::Message;
    use tract_onnx::pb;
    let value = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: op.to_lowercase(),
            node: vec![pb::NodeProto {
                op_type: op.into(),
                input: vec!["x".into()],
                output: vec!["y".into()],
                attribute,
                ..Default::default()
            }],
            input: vec![value("x")],
            output: vec![value("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_reject_junk() {
        assert_eq!(
            parse_shapes("x=1x3x224x224;mask=1,128").unwrap(),
            vec![
                ("x".into(), vec![1, 3, 224, 224]),
                ("mask".into(), vec![1, 128])
            ]
        );
        assert!(parse_shapes("x").is_err());
        assert!(parse_shapes("x=1xa").is_err());
    }

    #[test]
    fn digits_interface_and_concrete_shapes() {
        let onnx = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/digits/model.onnx"
        ))
        .unwrap();
        let itf = interface(&onnx).unwrap();
        assert_eq!(itf.inputs.len(), 1);
        assert_eq!(itf.inputs[0].dtype, Some(DType::F32));
        assert_eq!(itf.inputs[0].dims.len(), 4);
        let specs = concrete_inputs(&itf, &[]).unwrap();
        assert_eq!(specs[0].shape[0], Dim::Fixed(1));
        let specs =
            concrete_inputs(&itf, &[(itf.inputs[0].name.clone(), vec![4, 1, 8, 8])]).unwrap();
        assert_eq!(specs[0].shape[0], Dim::Fixed(4));
        let err = concrete_inputs(&itf, &[(itf.inputs[0].name.clone(), vec![1, 2, 8, 8])]);
        assert!(err.unwrap_err().contains("fixed at 1"));
        assert!(concrete_inputs(&itf, &[("nope".into(), vec![1])]).is_err());
        assert!(interface(b"not onnx").is_err());
    }
}
