//! Turning the task output tensor into answers: softmax and top-k for classification, the value
//! and its split-conformal interval for regression, the tensors for raw models.

use edge_protocol::{ClassProbability, Interval, Prediction, RawOutput};

use crate::bundle::Task;
use crate::error::ModelError;
use crate::tensor::Tensor;

/// Answers plus what the statistics need: (class, probability) per row, or values per row.
pub struct Answers {
    /// One per row (one in all for raw models).
    pub predictions: Vec<Prediction>,
    /// Top-1 class and probability per row (classification).
    pub classes: Vec<(usize, f32)>,
    /// Predicted values (regression).
    pub values: Vec<f64>,
}

/// Numerically stable softmax.
pub fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scores.iter().map(|&s| (s - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Raw output as wire type.
pub fn raw_output(name: &str, t: &Tensor) -> RawOutput {
    RawOutput {
        name: name.to_string(),
        shape: t.shape.clone(),
        data: t.to_f64_vec(),
    }
}

/// Builds the answers for `batch` rows from the task output.
pub fn answer(
    task: &Task,
    output: &Tensor,
    output_names: &[String],
    all: &[Tensor],
    batch: usize,
    top_k: Option<usize>,
) -> Result<Answers, ModelError> {
    let values = output.to_f64_vec();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        if !matches!(task, Task::Raw) {
            return Err(ModelError::Output(format!(
                "the model produced a non-finite value ({}) at element {i}",
                values[i]
            )));
        }
    }
    let mut out = Answers {
        predictions: Vec::new(),
        classes: Vec::new(),
        values: Vec::new(),
    };
    match task {
        Task::Classification {
            labels,
            softmax: apply,
            top_k: default_k,
        } => {
            if batch == 0 || !values.len().is_multiple_of(batch) {
                return Err(ModelError::Output(format!(
                    "{} scores do not split into {batch} rows",
                    values.len()
                )));
            }
            let classes = values.len() / batch;
            if !labels.is_empty() && labels.len() != classes {
                return Err(ModelError::Output(format!(
                    "{classes} scores per row but {} labels",
                    labels.len()
                )));
            }
            let label = |i: usize| labels.get(i).cloned().unwrap_or_else(|| i.to_string());
            let k = top_k.unwrap_or(*default_k as usize).clamp(1, classes);
            for row in values.chunks(classes) {
                let scores: Vec<f32> = row.iter().map(|&v| v as f32).collect();
                let probs = if *apply { softmax(&scores) } else { scores };
                let mut order: Vec<usize> = (0..classes).collect();
                order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
                let top = order[0];
                out.classes.push((top, probs[top]));
                out.predictions.push(Prediction::Classification {
                    label: label(top),
                    class_index: top,
                    probability: probs[top],
                    predictions: order[..k]
                        .iter()
                        .map(|&i| ClassProbability {
                            label: label(i),
                            probability: probs[i],
                        })
                        .collect(),
                });
            }
        }
        Task::Regression {
            coverage,
            half_width,
            ..
        } => {
            if values.len() != batch {
                return Err(ModelError::Output(format!(
                    "regression output has {} values for {batch} rows",
                    values.len()
                )));
            }
            for &value in &values {
                let interval = match (coverage, half_width) {
                    (Some(c), Some(h)) => Some(Interval {
                        lower: value - h,
                        upper: value + h,
                        coverage: *c,
                    }),
                    _ => None,
                };
                out.values.push(value);
                out.predictions
                    .push(Prediction::Regression { value, interval });
            }
        }
        Task::Raw => {
            let outputs = output_names
                .iter()
                .zip(all)
                .map(|(n, t)| raw_output(n, t))
                .collect();
            out.predictions.push(Prediction::Raw { outputs });
        }
    }
    Ok(out)
}
