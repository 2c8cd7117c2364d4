//! Ground truth joined to answers: every answer recorded here gets a prediction id; an app that
//! later learns the truth (a label, a true value, a reward) sends it with that id, and it is
//! joined to what the model answered. The memory is bounded in count and in time: the oldest
//! answers are forgotten first, and none is kept longer than the configured time. What was
//! joined is summed per model version ([`FeedbackStats`]) until the caller takes it (the agent's
//! telemetry window; an app through the C ABI).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edge_protocol::{FeedbackStats, PredictResponse, Prediction};

/// What an app says was true for one answer (one row of it).
#[derive(Clone, Debug, PartialEq)]
pub enum Truth {
    /// The true class label (classification).
    Label(String),
    /// The true value (regression).
    Value(f64),
    /// A reward for the answer (any task), e.g. 1 for a click.
    Reward(f64),
}

/// How much the log keeps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeedbackLimits {
    /// Answers kept (the oldest are forgotten first). 0 turns feedback off.
    pub answers: usize,
    /// Longest an answer is kept.
    pub max_age: Duration,
}

impl Default for FeedbackLimits {
    fn default() -> Self {
        FeedbackLimits {
            answers: 10_000,
            max_age: Duration::from_secs(3600),
        }
    }
}

/// Why feedback was not joined.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FeedbackError {
    /// Not an id this log gave, or an answer already forgotten.
    #[error("no answer with prediction id '{id}' is kept (answers are kept for {max_age_s} s, the last {answers}); send feedback sooner or raise the limits")]
    Unknown {
        /// The id.
        id: String,
        /// The log's limits.
        max_age_s: u64,
        /// The log's limits.
        answers: usize,
    },
    /// That row already has its truth.
    #[error("prediction '{0}' row {1} already has feedback")]
    AlreadyJoined(String, usize),
    /// The answer has fewer rows.
    #[error("prediction '{id}' has {rows} row(s); row {row} does not exist")]
    NoRow {
        /// The id.
        id: String,
        /// Its rows.
        rows: usize,
        /// The row asked for.
        row: usize,
    },
    /// A label for a regression answer, a value for a classification one, NaN, ...
    #[error("{0}")]
    Mismatch(String),
}

/// What the answer was, per row, as far as the truth is compared with it.
#[derive(Clone, Debug)]
enum Answered {
    Class(String),
    Value(f64, Option<(f64, f64)>),
    Raw,
}

struct Kept {
    version: String,
    at: Instant,
    rows: Vec<(Answered, bool)>,
}

#[derive(Default)]
struct Inner {
    kept: HashMap<u64, Kept>,
    order: VecDeque<u64>,
    next: u64,
    sums: BTreeMap<String, FeedbackStats>,
}

/// The join memory of one model (every version of it) and its sums since the last take.
pub struct FeedbackLog {
    limits: FeedbackLimits,
    /// Distinguishes this log's ids from another process's (a restart forgets every answer).
    prefix: String,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for FeedbackLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedbackLog")
            .field("limits", &self.limits)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl FeedbackLog {
    /// An empty log.
    pub fn new(limits: FeedbackLimits) -> FeedbackLog {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        FeedbackLog {
            limits,
            prefix: format!("{:08x}", (nanos ^ (nanos >> 32)) as u32),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `answer` and gives it its prediction id (nothing when feedback is off).
    pub fn record(&self, answer: &mut PredictResponse) {
        if self.limits.answers == 0 {
            return;
        }
        let rows = answer
            .results
            .iter()
            .map(|p| {
                let a = match p {
                    Prediction::Classification { label, .. } => Answered::Class(label.clone()),
                    Prediction::Regression { value, interval } => {
                        Answered::Value(*value, interval.as_ref().map(|i| (i.lower, i.upper)))
                    }
                    Prediction::Raw { .. } => Answered::Raw,
                };
                (a, false)
            })
            .collect();
        let now = Instant::now();
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        inner.kept.insert(
            id,
            Kept {
                version: answer.model.version.clone(),
                at: now,
                rows,
            },
        );
        inner.order.push_back(id);
        self.forget(&mut inner, now);
        answer.prediction_id = Some(format!("{}-{id:x}", self.prefix));
    }

    /// Drops answers over the count or past their age.
    fn forget(&self, inner: &mut Inner, now: Instant) {
        while let Some(&oldest) = inner.order.front() {
            let expired = inner
                .kept
                .get(&oldest)
                .is_none_or(|k| now.duration_since(k.at) > self.limits.max_age);
            if inner.order.len() > self.limits.answers || expired {
                inner.order.pop_front();
                inner.kept.remove(&oldest);
            } else {
                break;
            }
        }
    }

    /// Joins the truth for row `row` of the answer `id`; returns the version that answered and
    /// whether it was right (classification labels; `None` for values and rewards).
    pub fn join(
        &self,
        id: &str,
        row: usize,
        truth: Truth,
    ) -> Result<(String, Option<bool>), FeedbackError> {
        let unknown = || FeedbackError::Unknown {
            id: id.to_string(),
            max_age_s: self.limits.max_age.as_secs(),
            answers: self.limits.answers,
        };
        let key = id
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .ok_or_else(unknown)?;
        if let Truth::Value(v) | Truth::Reward(v) = &truth {
            if !v.is_finite() {
                return Err(FeedbackError::Mismatch(format!(
                    "feedback value {v} is not a finite number"
                )));
            }
        }
        let mut inner = self.lock();
        self.forget(&mut inner, Instant::now());
        let kept = inner.kept.get_mut(&key).ok_or_else(unknown)?;
        let rows = kept.rows.len();
        let (answered, joined) = kept.rows.get_mut(row).ok_or(FeedbackError::NoRow {
            id: id.to_string(),
            rows,
            row,
        })?;
        if *joined {
            return Err(FeedbackError::AlreadyJoined(id.to_string(), row));
        }
        let mut add = FeedbackStats::default();
        let right = match (&*answered, &truth) {
            (Answered::Class(predicted), Truth::Label(label)) => {
                let ok = predicted == label;
                add.labelled = 1;
                add.correct = u64::from(ok);
                add.per_class = vec![(label.clone(), 1, u64::from(ok))];
                Some(ok)
            }
            (Answered::Value(v, interval), Truth::Value(t)) => {
                add.values = 1;
                add.abs_error = (v - t).abs();
                add.sq_error = (v - t) * (v - t);
                if let Some((lo, hi)) = interval {
                    add.with_interval = 1;
                    add.inside_interval = u64::from(*lo <= *t && *t <= *hi);
                }
                None
            }
            (_, Truth::Reward(r)) => {
                add.rewards = 1;
                add.reward_sum = *r;
                add.reward_sq_sum = r * r;
                None
            }
            (Answered::Class(_), Truth::Value(_)) => {
                return Err(FeedbackError::Mismatch(
                    "this answer is a classification: send a \"label\" (or a \"reward\")".into(),
                ))
            }
            (Answered::Value(..), Truth::Label(_)) => {
                return Err(FeedbackError::Mismatch(
                    "this answer is a regression: send a \"value\" (or a \"reward\")".into(),
                ))
            }
            (Answered::Raw, _) => {
                return Err(FeedbackError::Mismatch(
                    "this model answers raw tensors: only a \"reward\" can be joined".into(),
                ))
            }
        };
        *joined = true;
        let version = kept.version.clone();
        inner.sums.entry(version.clone()).or_default().merge(&add);
        Ok((version, right))
    }

    /// What was joined since the last take, per version.
    pub fn take(&self) -> BTreeMap<String, FeedbackStats> {
        std::mem::take(&mut self.lock().sums)
    }

    /// Answers kept now.
    pub fn kept(&self) -> usize {
        self.lock().kept.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_protocol::{ClassProbability, Interval, ModelRef};

    fn answer(version: &str, results: Vec<Prediction>) -> PredictResponse {
        PredictResponse {
            model: ModelRef {
                model: "m".into(),
                version: version.into(),
                bundle: "sha256:00".into(),
            },
            results,
            latency_ms: 1.0,
            raw: vec![],
            prediction_id: None,
        }
    }

    fn class(label: &str) -> Prediction {
        Prediction::Classification {
            label: label.into(),
            class_index: 0,
            probability: 0.9,
            predictions: vec![ClassProbability {
                label: label.into(),
                probability: 0.9,
            }],
        }
    }

    #[test]
    fn labels_values_and_rewards_are_joined_once_per_row() {
        let log = FeedbackLog::new(FeedbackLimits::default());
        let mut a = answer("1.0.0", vec![class("7"), class("3")]);
        log.record(&mut a);
        let id = a.prediction_id.clone().unwrap();
        assert_eq!(
            log.join(&id, 0, Truth::Label("7".into())).unwrap(),
            ("1.0.0".to_string(), Some(true))
        );
        assert_eq!(
            log.join(&id, 0, Truth::Label("7".into())),
            Err(FeedbackError::AlreadyJoined(id.clone(), 0))
        );
        assert_eq!(
            log.join(&id, 1, Truth::Label("8".into())).unwrap().1,
            Some(false)
        );
        assert!(matches!(
            log.join(&id, 2, Truth::Label("8".into())),
            Err(FeedbackError::NoRow { rows: 2, .. })
        ));
        let mut r = answer(
            "2.0.0",
            vec![Prediction::Regression {
                value: 10.0,
                interval: Some(Interval {
                    lower: 8.0,
                    upper: 12.0,
                    coverage: 0.9,
                }),
            }],
        );
        log.record(&mut r);
        let rid = r.prediction_id.clone().unwrap();
        assert!(matches!(
            log.join(&rid, 0, Truth::Label("x".into())),
            Err(FeedbackError::Mismatch(_))
        ));
        assert!(matches!(
            log.join(&rid, 0, Truth::Value(f64::NAN)),
            Err(FeedbackError::Mismatch(_))
        ));
        log.join(&rid, 0, Truth::Value(13.0)).unwrap();
        let sums = log.take();
        let v1 = &sums["1.0.0"];
        assert_eq!((v1.labelled, v1.correct), (2, 1));
        assert_eq!(
            v1.per_class,
            vec![("7".to_string(), 1, 1), ("8".to_string(), 1, 0)]
        );
        let v2 = &sums["2.0.0"];
        assert_eq!((v2.values, v2.with_interval, v2.inside_interval), (1, 1, 0));
        assert!((v2.abs_error - 3.0).abs() < 1e-12);
        assert!(log.take().is_empty(), "taken");
    }

    #[test]
    fn memory_is_bounded_in_count_and_age() {
        let log = FeedbackLog::new(FeedbackLimits {
            answers: 3,
            max_age: Duration::from_secs(3600),
        });
        let ids: Vec<String> = (0..5)
            .map(|_| {
                let mut a = answer("1", vec![class("1")]);
                log.record(&mut a);
                a.prediction_id.unwrap()
            })
            .collect();
        assert_eq!(log.kept(), 3);
        assert!(matches!(
            log.join(&ids[0], 0, Truth::Reward(1.0)),
            Err(FeedbackError::Unknown { .. })
        ));
        log.join(&ids[4], 0, Truth::Reward(1.0)).unwrap();
        assert!(matches!(
            log.join("bogus", 0, Truth::Reward(1.0)),
            Err(FeedbackError::Unknown { .. })
        ));
        let aged = FeedbackLog::new(FeedbackLimits {
            answers: 10,
            max_age: Duration::ZERO,
        });
        let mut a = answer("1", vec![class("1")]);
        aged.record(&mut a);
        std::thread::sleep(Duration::from_millis(2));
        assert!(aged
            .join(&a.prediction_id.unwrap(), 0, Truth::Reward(1.0))
            .is_err());
        let off = FeedbackLog::new(FeedbackLimits {
            answers: 0,
            max_age: Duration::from_secs(1),
        });
        let mut a = answer("1", vec![class("1")]);
        off.record(&mut a);
        assert_eq!(a.prediction_id, None);
    }
}
