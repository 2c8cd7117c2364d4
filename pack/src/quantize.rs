//! Post-training int8 quantization of an ONNX graph (`edgectl quantize`), in the QDQ format
//! every ONNX tool reads:
//!
//! 1. **Weights**: each constant weight of Conv, Gemm and MatMul becomes int8, symmetric, one scale
//!    per output channel (per tensor before opset 13, where DequantizeLinear has no `axis`),
//!    behind a `DequantizeLinear` that restores the original tensor name. Biases stay float.
//! 2. **Activations** (unless weights-only): the float input of each of those nodes is measured
//!    on calibration rows (min-max, or a percentile of the magnitudes to ignore outliers) and
//!    gets a `QuantizeLinear → DequantizeLinear` pair, u8 asymmetric, one scale per tensor.
//!
//! The graph's interface is unchanged (float in, float out), so a quantized model packs and
//! serves like its float original. Calibration runs tract on the float graph with every measured
//! tensor exposed as an extra output.

use std::collections::{HashMap, HashSet};

use prost::Message;
use tract_onnx::pb::{self, tensor_proto::DataType, AttributeProto, NodeProto, TensorProto};
use tract_onnx::prelude::*;

use edge_bundle::tensor::Tensor as EfTensor;
use edge_runtime::engine::f32_values;

/// How activation ranges are taken from the calibration rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RangeMethod {
    /// The smallest and largest value seen.
    MinMax,
    /// The given percentile (e.g. 99.99) of the values seen at each end.
    Percentile(f64),
}

/// Quantizer settings.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// Quantize the weights only (no calibration needed; the graph still computes in float).
    pub weights_only: bool,
    /// Activation ranges.
    pub range: RangeMethod,
}

/// What the quantizer did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct QuantizeReport {
    /// Weight tensors now stored as int8.
    pub weights_quantized: usize,
    /// Activation tensors given a Quantize/Dequantize pair.
    pub activations_quantized: usize,
    /// Nodes left in float, with the reason.
    pub skipped: Vec<String>,
    /// Whether weights are per output channel (opset ≥ 13).
    pub per_channel: bool,
    /// Model size in bytes, before and after.
    pub bytes_before: usize,
    /// After.
    pub bytes_after: usize,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("{e:#}")
}

fn opset(model: &pb::ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(0)
}

fn attr_i(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn tensor_proto(name: String, dt: DataType, dims: Vec<i64>, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name,
        data_type: dt as i32,
        dims,
        raw_data: raw,
        ..Default::default()
    }
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn node(op: &str, name: String, inputs: Vec<String>, output: String) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name,
        input: inputs,
        output: vec![output],
        ..Default::default()
    }
}

/// The weight input (index 1) of a node we quantize, and its output-channel axis.
fn weight_axis(n: &NodeProto, rank: usize) -> Option<usize> {
    match n.op_type.as_str() {
        "Conv" => Some(0),
        "Gemm" => Some(if attr_i(n, "transB").unwrap_or(0) != 0 {
            0
        } else {
            1
        }),
        "MatMul" if rank == 2 => Some(1),
        _ => None,
    }
}

/// Symmetric int8 per channel along `axis` (or one scale when `per_channel` is false).
fn quantize_weight(
    w: &[f32],
    shape: &[usize],
    axis: usize,
    per_channel: bool,
) -> (Vec<i8>, Vec<f32>) {
    let channels = if per_channel { shape[axis] } else { 1 };
    let inner: usize = shape[axis + 1..].iter().product();
    let channel = |i: usize| {
        if per_channel {
            (i / inner) % channels
        } else {
            0
        }
    };
    let mut max = vec![0f32; channels];
    for (i, v) in w.iter().enumerate() {
        let c = channel(i);
        max[c] = max[c].max(v.abs());
    }
    let scales: Vec<f32> = max
        .iter()
        .map(|m| {
            if *m > 0.0 && m.is_finite() {
                m / 127.0
            } else {
                1.0
            }
        })
        .collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (v / scales[channel(i)])
                .round_ties_even()
                .clamp(-127.0, 127.0) as i8
        })
        .collect();
    (q, scales)
}

/// Running statistics of one activation tensor.
#[derive(Default)]
struct Range {
    min: f32,
    max: f32,
    sample: Vec<f32>,
}

const SAMPLE_PER_RUN: usize = 8192;

impl Range {
    fn observe(&mut self, values: &[f32]) {
        for &v in values.iter().filter(|v| v.is_finite()) {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        let step = (values.len() / SAMPLE_PER_RUN).max(1);
        self.sample
            .extend(values.iter().step_by(step).filter(|v| v.is_finite()));
    }

    fn bounds(&mut self, method: RangeMethod) -> (f32, f32) {
        match method {
            RangeMethod::MinMax => (self.min, self.max),
            RangeMethod::Percentile(p) => {
                if self.sample.is_empty() {
                    return (self.min, self.max);
                }
                self.sample.sort_by(f32::total_cmp);
                let at = |q: f64| {
                    let i = ((self.sample.len() - 1) as f64 * q).round() as usize;
                    self.sample[i]
                };
                (at(1.0 - p / 100.0), at(p / 100.0))
            }
        }
    }
}

/// u8 asymmetric parameters covering `[lo, hi]` (and 0, so zero padding is exact).
fn activation_params(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zp = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zp)
}

fn to_tract(t: &EfTensor) -> Result<Tensor, String> {
    let v: Vec<f32> = t.to_f64_vec().into_iter().map(|v| v as f32).collect();
    tract_ndarray::ArrayD::from_shape_vec(t.shape.clone(), v)
        .map(|a| a.into_tensor())
        .map_err(err)
}

/// Runs the float graph on every calibration row and measures `names`.
fn calibrate(
    onnx: &tract_onnx::Onnx,
    model: &pb::ModelProto,
    names: &[String],
    rows: &[Vec<EfTensor>],
    method: RangeMethod,
) -> Result<HashMap<String, (f32, f32)>, String> {
    let parsed = onnx.parse(model, None).map_err(err)?;
    let mut inference = parsed.model;
    let outlets = names
        .iter()
        .map(|n| {
            parsed
                .outlets_by_name
                .get(n)
                .copied()
                .ok_or_else(|| format!("tensor '{n}' not found in the graph"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    inference.select_output_outlets(&outlets).map_err(err)?;
    let first = rows.first().ok_or("no calibration rows")?;
    for (ix, t) in first.iter().enumerate() {
        inference
            .set_input_fact(
                ix,
                InferenceFact::dt_shape(f32::datum_type(), t.shape.clone()),
            )
            .map_err(err)?;
    }
    let shapes: Vec<&[usize]> = first.iter().map(|t| &t.shape[..]).collect();
    let plan = inference
        .into_optimized()
        .map_err(|e| format!("calibration rows shaped {shapes:?} do not fit the graph: {e:#}"))?
        .into_runnable()
        .map_err(err)?;
    let mut ranges: Vec<Range> = names.iter().map(|_| Range::default()).collect();
    for row in rows {
        let inputs = row.iter().map(to_tract).collect::<Result<TVec<_>, _>>()?;
        let outputs = plan
            .run(inputs.into_iter().map(|t| t.into_tvalue()).collect())
            .map_err(|e| format!("calibration run failed: {e:#}"))?;
        for (range, out) in ranges.iter_mut().zip(outputs) {
            range.observe(&f32_values(&out).map_err(err)?);
        }
    }
    Ok(names
        .iter()
        .cloned()
        .zip(ranges.iter_mut().map(|r| r.bounds(method)))
        .collect())
}

/// Quantizes ONNX bytes. `calibration`: rows, each the graph's inputs (already normalized as
/// the graph expects them); unused when `weights_only`.
pub fn quantize(
    onnx: &[u8],
    calibration: &[Vec<EfTensor>],
    options: &QuantizeOptions,
) -> Result<(Vec<u8>, QuantizeReport), String> {
    let mut model = pb::ModelProto::decode(onnx).map_err(|e| format!("not an ONNX model: {e}"))?;
    let per_channel = opset(&model) >= 13;
    let onnx_parser = edge_runtime::engine::onnx_parser();
    let mut report = QuantizeReport {
        per_channel,
        bytes_before: onnx.len(),
        ..Default::default()
    };
    let graph = model.graph.as_ref().ok_or("the ONNX model has no graph")?;
    let initializers: HashMap<String, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect();

    // 1. which nodes, which weights, which activations
    let mut weights: Vec<(String, usize)> = Vec::new(); // (initializer name, axis)
    let mut seen = HashSet::new();
    let mut activations: Vec<String> = Vec::new();
    for n in &graph.node {
        if !matches!(n.op_type.as_str(), "Conv" | "Gemm" | "MatMul") || n.input.len() < 2 {
            continue;
        }
        let Some(&ix) = initializers.get(&n.input[1]) else {
            report.skipped.push(format!(
                "{} {}: weight is not a constant",
                n.op_type, n.name
            ));
            continue;
        };
        let w = &graph.initializer[ix];
        if w.data_type != DataType::Float as i32 {
            report
                .skipped
                .push(format!("{} {}: weight is not f32", n.op_type, n.name));
            continue;
        }
        let Some(axis) = weight_axis(n, w.dims.len()) else {
            report.skipped.push(format!(
                "{} {}: weight of rank {}",
                n.op_type,
                n.name,
                w.dims.len()
            ));
            continue;
        };
        if n.op_type == "Gemm" && attr_i(n, "transA").unwrap_or(0) != 0 {
            report
                .skipped
                .push(format!("Gemm {}: transA is not quantized", n.name));
            continue;
        }
        if seen.insert(n.input[1].clone()) {
            weights.push((n.input[1].clone(), axis));
        }
        if !options.weights_only
            && !initializers.contains_key(&n.input[0])
            && !activations.contains(&n.input[0])
        {
            activations.push(n.input[0].clone());
        }
    }
    if weights.is_empty() {
        return Err(
            "nothing to quantize: no Conv, Gemm or MatMul with a constant f32 weight".into(),
        );
    }

    // 2. activation ranges
    let ranges = if activations.is_empty() {
        HashMap::new()
    } else {
        if calibration.is_empty() {
            return Err("static quantization needs calibration rows (or use weights-only)".into());
        }
        calibrate(
            &onnx_parser,
            &model,
            &activations,
            calibration,
            options.range,
        )?
    };

    // 3. rewrite the graph
    let graph = model.graph.as_mut().expect("checked above");
    let mut new_nodes: Vec<NodeProto> = Vec::new();
    for (name, axis) in &weights {
        let ix = graph
            .initializer
            .iter()
            .position(|t| &t.name == name)
            .expect("found above");
        let proto = graph.initializer.remove(ix);
        let t =
            tract_onnx::tensor::load_tensor(&*onnx_parser.provider, &proto, None).map_err(err)?;
        let shape = t.shape().to_vec();
        let values = f32_values(&t).map_err(err)?;
        let (q, scales) = quantize_weight(&values, &shape, *axis, per_channel);
        let dims: Vec<i64> = shape.iter().map(|d| *d as i64).collect();
        let n = scales.len() as i64;
        let scale_dims = if per_channel { vec![n] } else { vec![] };
        graph.initializer.push(tensor_proto(
            format!("{name}_quantized"),
            DataType::Int8,
            dims,
            q.iter().map(|v| *v as u8).collect(),
        ));
        graph.initializer.push(tensor_proto(
            format!("{name}_scale"),
            DataType::Float,
            scale_dims.clone(),
            scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
        ));
        graph.initializer.push(tensor_proto(
            format!("{name}_zero_point"),
            DataType::Int8,
            scale_dims,
            vec![0u8; n as usize],
        ));
        graph.input.retain(|i| &i.name != name);
        let mut dq = node(
            "DequantizeLinear",
            format!("{name}_dequantize"),
            vec![
                format!("{name}_quantized"),
                format!("{name}_scale"),
                format!("{name}_zero_point"),
            ],
            name.clone(),
        );
        if per_channel {
            dq.attribute.push(int_attr("axis", *axis as i64));
        }
        new_nodes.push(dq);
        report.weights_quantized += 1;
    }
    let old_nodes = std::mem::take(&mut graph.node);
    let mut pending: HashSet<&str> = activations.iter().map(String::as_str).collect();
    let mut rewired: HashMap<String, String> = HashMap::new();
    for mut n in old_nodes {
        let quantized_op = matches!(n.op_type.as_str(), "Conv" | "Gemm" | "MatMul")
            && n.input.len() >= 2
            && seen.contains(&n.input[1]);
        if quantized_op {
            let x = n.input[0].clone();
            if pending.remove(x.as_str()) {
                let (lo, hi) = ranges[&x];
                let (scale, zp) = activation_params(lo, hi);
                graph.initializer.push(tensor_proto(
                    format!("{x}_act_scale"),
                    DataType::Float,
                    vec![],
                    scale.to_le_bytes().to_vec(),
                ));
                graph.initializer.push(tensor_proto(
                    format!("{x}_act_zero_point"),
                    DataType::Uint8,
                    vec![],
                    vec![zp],
                ));
                let params = [format!("{x}_act_scale"), format!("{x}_act_zero_point")];
                new_nodes.push(node(
                    "QuantizeLinear",
                    format!("{x}_quantize"),
                    vec![x.clone(), params[0].clone(), params[1].clone()],
                    format!("{x}_q"),
                ));
                new_nodes.push(node(
                    "DequantizeLinear",
                    format!("{x}_dequantize"),
                    vec![format!("{x}_q"), params[0].clone(), params[1].clone()],
                    format!("{x}_dq"),
                ));
                rewired.insert(x.clone(), format!("{x}_dq"));
                report.activations_quantized += 1;
            }
            if let Some(dq) = rewired.get(&x) {
                n.input[0] = dq.clone();
            }
        }
        new_nodes.push(n);
    }
    graph.node = new_nodes;
    let bytes = model.encode_to_vec();
    report.bytes_after = bytes.len();
    Ok((bytes, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_round_trip_within_half_a_step_per_channel() {
        let w = [1.0f32, -0.5, 0.25, 0.0, 100.0, -3.0];
        let (q, s) = quantize_weight(&w, &[2, 3], 0, true);
        assert_eq!(s.len(), 2);
        for (i, v) in w.iter().enumerate() {
            let back = q[i] as f32 * s[i / 3];
            assert!((back - v).abs() <= s[i / 3] / 2.0 + 1e-6, "{v} -> {back}");
        }
        assert_eq!(q[0], 127);
        assert_eq!(q[4], 127);
        // all-zero channel: a usable scale, zeros out
        let (q, s) = quantize_weight(&[0.0, 0.0], &[1, 2], 0, true);
        assert_eq!((q, s), (vec![0, 0], vec![1.0]));
    }

    #[test]
    fn activation_params_cover_zero_and_the_range() {
        let (s, z) = activation_params(0.0, 6.0);
        assert_eq!(z, 0);
        assert!((s - 6.0 / 255.0).abs() < 1e-7);
        let (s, z) = activation_params(-1.0, 1.0);
        assert!((z as f32 * s - 1.0).abs() < s);
        let mut r = Range::default();
        let mut v: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        v.push(1000.0);
        r.observe(&v);
        let (lo, hi) = r.bounds(RangeMethod::Percentile(99.0));
        assert!(hi < 1.0 && lo >= 0.0, "{lo} {hi}");
        assert_eq!(r.bounds(RangeMethod::MinMax), (0.0, 1000.0));
    }
}
