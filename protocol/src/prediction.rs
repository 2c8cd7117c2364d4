//! The answer to one `predict` call: which model answered, and per input row the prediction with
//! its uncertainty (top-k probabilities for classification, a prediction interval for regression).

use serde::{Deserialize, Serialize};

/// Names the deployed model that produced an answer, so every answer is traceable to a bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    /// Model name from the bundle manifest.
    pub model: String,
    /// Semver version from the bundle manifest.
    pub version: String,
    /// `sha256:<hex>` of the whole bundle file.
    pub bundle: String,
}

/// The answer to one predict call (one entry in `results` per input row of the batch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PredictResponse {
    /// Which model answered.
    #[serde(flatten)]
    pub model: ModelRef,
    /// One prediction per row of the input batch, in order.
    pub results: Vec<Prediction>,
    /// Wall time spent inside the runtime for this call (validation, preprocessing, inference,
    /// postprocessing), in milliseconds.
    pub latency_ms: f64,
    /// The model's raw output tensors, only when the caller asked for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub raw: Vec<RawOutput>,
    /// The id to send ground truth for this answer with (`POST /v1/models/{name}/feedback`),
    /// when the server that answered keeps answers for feedback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_id: Option<String>,
}

/// One row's prediction, by task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Prediction {
    /// Classification: the top label, its probability, and the top-k list.
    Classification {
        /// Most probable label.
        label: String,
        /// Index of that label in the model's output.
        class_index: usize,
        /// Probability of the top label (softmax output, in \[0, 1\]).
        probability: f32,
        /// The k most probable labels, most probable first.
        predictions: Vec<ClassProbability>,
    },
    /// Regression: a point estimate and, when the bundle was calibrated, an interval.
    Regression {
        /// Point prediction.
        value: f64,
        /// Split-conformal prediction interval at the bundle's stated coverage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interval: Option<Interval>,
    },
    /// Raw: the output tensors as they came out of the model.
    Raw {
        /// Every output of the model for this row.
        outputs: Vec<RawOutput>,
    },
}

/// One label with its probability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassProbability {
    /// Label text.
    pub label: String,
    /// Probability in \[0, 1\].
    pub probability: f32,
}

/// A prediction interval: the true value lies in \[lower, upper\] with probability `coverage`
/// (marginal coverage, from split-conformal calibration residuals).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
    /// Stated coverage, e.g. 0.9.
    pub coverage: f64,
}

/// One output tensor, flattened in row-major order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RawOutput {
    /// Output name in the model graph.
    pub name: String,
    /// Shape of the tensor.
    pub shape: Vec<usize>,
    /// Values, row-major, converted to f64.
    pub data: Vec<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden vector: the JSON shape of a classification answer is part of the contract.
    #[test]
    fn classification_answer_json_is_stable() {
        let r = PredictResponse {
            model: ModelRef {
                model: "digits".into(),
                version: "1.0.0".into(),
                bundle: "sha256:ab".into(),
            },
            results: vec![Prediction::Classification {
                label: "7".into(),
                class_index: 7,
                probability: 0.5,
                predictions: vec![ClassProbability {
                    label: "7".into(),
                    probability: 0.5,
                }],
            }],
            latency_ms: 1.5,
            raw: vec![],
            prediction_id: None,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"model":"digits","version":"1.0.0","bundle":"sha256:ab","results":[{"task":"classification","label":"7","class_index":7,"probability":0.5,"predictions":[{"label":"7","probability":0.5}]}],"latency_ms":1.5}"#
        );
        let back: PredictResponse = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn regression_answer_json_is_stable() {
        let p = Prediction::Regression {
            value: 10.0,
            interval: Some(Interval {
                lower: 5.0,
                upper: 15.0,
                coverage: 0.9,
            }),
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"task":"regression","value":10.0,"interval":{"lower":5.0,"upper":15.0,"coverage":0.9}}"#
        );
    }
}
