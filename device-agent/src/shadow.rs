//! Shadow evaluation (a rollout's shadow phase): a candidate loaded beside the active model runs
//! on a sampled share of live requests **after** their answer was made, on one worker thread of
//! its own, and never answers. Its answers are compared with the active model's
//! ([`ShadowAgreement`]); its own requests, errors and latency are its model's counters, so the
//! telemetry window of a shadow is the candidate's window plus the agreement.
//!
//! The shadow's CPU is bounded by a budget in cores: a leaky bucket of busy time drains at the
//! budget's rate; a sampled request is charged its expected cost (the running mean of the
//! shadow's runs) when admitted, the difference when it has run, and is skipped when the charge
//! would take the bucket over its burst (so over any stretch of time the shadow uses at most
//! `budget` of one core, plus one burst). The queue to the worker is short; a request that
//! finds it full is skipped, never waited for.
//!
//! The worker yields to answered requests: it starts a run only once no answered request has
//! been running for [`QUIET`] (the gap between an app's frames), waiting at most [`PATIENCE`]
//! before it runs anyway (a device busy all the time still gets its shadow sampled, slowly).
//! Both models on one machine share its caches and memory bandwidth, so a run that overlaps an
//! answered request slows it (`bench/shadow.sh`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_protocol::{PredictResponse, Prediction, ShadowAgreement};
use edge_runtime::{Model, PredictOptions, Tensor};

use crate::slots::SlotRef;

/// Requests waiting for the shadow worker at most.
const QUEUE: usize = 8;

/// How long no answered request must have been running before a shadow run starts.
pub const QUIET: Duration = Duration::from_millis(1);

/// The longest a shadow run waits for [`QUIET`] before it runs anyway.
pub const PATIENCE: Duration = Duration::from_millis(250);

/// Answered requests running now and when the last one ended: what the worker yields to.
#[derive(Debug)]
pub struct Activity {
    running: AtomicUsize,
    /// Microseconds since `epoch` at which the last answered request ended.
    last_end_us: AtomicU64,
    epoch: Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            running: AtomicUsize::new(0),
            last_end_us: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

/// An answered request in progress (ends when dropped).
pub struct Answering<'a>(&'a Activity);

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        let now = self.0.epoch.elapsed().as_micros() as u64;
        self.0.last_end_us.store(now, Ordering::Release);
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    /// Marks an answered request as running until the guard is dropped.
    pub fn answering(&self) -> Answering<'_> {
        self.running.fetch_add(1, Ordering::AcqRel);
        Answering(self)
    }

    /// Whether no answered request has run for [`QUIET`].
    fn quiet(&self) -> bool {
        let idle_since = self.last_end_us.load(Ordering::Acquire);
        self.running.load(Ordering::Acquire) == 0
            && self.epoch.elapsed().as_micros() as u64 >= idle_since + QUIET.as_micros() as u64
    }

    /// Waits for [`QUIET`], at most [`PATIENCE`].
    fn wait_quiet(&self) {
        let start = Instant::now();
        while !self.quiet() && start.elapsed() < PATIENCE {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Busy time the bucket may run ahead of the budget.
const BURST: Duration = Duration::from_millis(100);

/// What a job costs the worker besides its run (the queue hand-off, waking the thread): charged
/// with every run, or a model that answers in tens of microseconds would overrun its budget by
/// a third (`bench/shadow.sh`, digits: 0.65 cores used of 0.5 before this charge).
const JOB_OVERHEAD: Duration = Duration::from_micros(20);

/// A candidate running as a shadow.
pub struct Shadow {
    /// The candidate.
    pub model: Arc<Model>,
    /// Its bundle.
    pub slot: SlotRef,
    /// Generation that asked for it.
    pub generation: u64,
    /// Share of requests mirrored, parts per million.
    pub sample_ppm: u32,
    /// CPU budget, cores.
    pub budget: f64,
    state: Mutex<ShadowState>,
}

struct ShadowState {
    /// Sampling credit, in ppm: a request is mirrored each time it passes a million.
    credit: u64,
    /// Busy time not yet drained (and charged for admitted runs), seconds.
    debt: f64,
    last_drain: Instant,
    /// Running mean of a run's time, seconds (what an admitted request is charged).
    cost: f64,
    /// Counts since the last window.
    agreement: ShadowAgreement,
}

impl Shadow {
    /// A shadow of `model` mirroring `sample_ppm` of requests within `cpu_millicores`.
    pub fn new(
        model: Arc<Model>,
        slot: SlotRef,
        generation: u64,
        sample_ppm: u32,
        cpu_millicores: u32,
    ) -> Shadow {
        Shadow {
            model,
            slot,
            generation,
            sample_ppm: sample_ppm.min(1_000_000),
            budget: (f64::from(cpu_millicores) / 1000.0).clamp(0.001, 1.0),
            state: Mutex::new(ShadowState {
                credit: 0,
                debt: 0.0,
                last_drain: Instant::now(),
                cost: 0.0,
                agreement: ShadowAgreement::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ShadowState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this request is mirrored: sampled, and the budget allows (a sampled request
    /// over budget is counted as skipped). An admitted request is charged its expected cost,
    /// returned as its [`Admission`].
    pub fn admit(&self) -> Option<Admission> {
        let mut s = self.lock();
        s.credit += u64::from(self.sample_ppm);
        if s.credit < 1_000_000 {
            return None;
        }
        s.credit -= 1_000_000;
        let now = Instant::now();
        let drained = now.duration_since(s.last_drain).as_secs_f64() * self.budget;
        s.debt = (s.debt - drained).max(0.0);
        s.last_drain = now;
        if s.debt + s.cost > BURST.as_secs_f64() {
            s.agreement.skipped_budget += 1;
            return None;
        }
        s.debt += s.cost;
        Some(Admission { charged: s.cost })
    }

    /// A run that was admitted but not run gives its charge back.
    fn refund(&self, admission: Admission) {
        let mut s = self.lock();
        s.debt = (s.debt - admission.charged).max(0.0);
        s.agreement.skipped_busy += 1;
    }

    /// Runs the candidate on `inputs` and compares with the active model's `answer`.
    fn run(
        &self,
        admission: Admission,
        inputs: Vec<Tensor>,
        options: &PredictOptions,
        answer: &PredictResponse,
    ) {
        let start = Instant::now();
        let mine = self.model.predict_with(inputs, options);
        let mut compared = ShadowAgreement::default();
        if let Ok(mine) = &mine {
            compare(answer, mine, &mut compared);
        }
        drop(mine);
        // the whole job is charged: inference, comparison, freeing the answer, the hand-off
        let busy = (start.elapsed() + JOB_OVERHEAD).as_secs_f64();
        let mut s = self.lock();
        s.debt = (s.debt + busy - admission.charged).max(0.0);
        s.cost = if s.cost == 0.0 {
            busy
        } else {
            0.9 * s.cost + 0.1 * busy
        };
        s.agreement.merge(&compared);
    }

    /// The agreement counts since the last take.
    pub fn take(&self) -> ShadowAgreement {
        let mut s = self.lock();
        let mut out = std::mem::take(&mut s.agreement);
        out.active_version.clear();
        out
    }
}

/// A mirrored request's charge against the budget.
#[derive(Clone, Copy, Debug)]
pub struct Admission {
    charged: f64,
}

/// Adds the comparison of one pair of answers, row by row.
pub fn compare(active: &PredictResponse, shadow: &PredictResponse, into: &mut ShadowAgreement) {
    for (a, s) in active.results.iter().zip(&shadow.results) {
        into.compared += 1;
        match (a, s) {
            (
                Prediction::Classification {
                    label: la,
                    predictions: pa,
                    ..
                },
                Prediction::Classification {
                    label: ls,
                    predictions: ps,
                    ..
                },
            ) => {
                into.agreed += u64::from(la == ls);
                let k = pa.len().max(ps.len()).max(1);
                let shared = pa
                    .iter()
                    .filter(|x| ps.iter().any(|y| y.label == x.label))
                    .count();
                into.topk_overlap += shared as f64 / k as f64;
            }
            (
                Prediction::Regression {
                    value: va,
                    interval,
                },
                Prediction::Regression { value: vs, .. },
            ) => {
                into.values += 1;
                into.abs_delta += (va - vs).abs();
                if let Some(i) = interval {
                    into.with_interval += 1;
                    into.inside_interval += u64::from(i.lower <= *vs && *vs <= i.upper);
                }
            }
            _ => {}
        }
    }
}

struct Job {
    shadow: Arc<Shadow>,
    admission: Admission,
    inputs: Vec<Tensor>,
    options: PredictOptions,
    answer: PredictResponse,
}

/// The shadow worker: one thread, a short queue.
pub struct ShadowRunner {
    queue: SyncSender<Job>,
}

impl ShadowRunner {
    /// Starts the worker thread (it ends when the runner is dropped); it yields to the answered
    /// requests `activity` counts.
    pub fn start(activity: Arc<Activity>) -> ShadowRunner {
        let (queue, jobs) = sync_channel::<Job>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("shadow".into())
            .spawn(move || {
                for job in jobs {
                    activity.wait_quiet();
                    job.shadow
                        .run(job.admission, job.inputs, &job.options, &job.answer);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the shadow worker; shadows will skip");
        }
        ShadowRunner { queue }
    }

    /// Hands a mirrored request to the worker; a full queue skips it.
    pub fn submit(
        &self,
        shadow: Arc<Shadow>,
        admission: Admission,
        inputs: Vec<Tensor>,
        options: PredictOptions,
        answer: PredictResponse,
    ) {
        let job = Job {
            shadow,
            admission,
            inputs,
            options,
            answer,
        };
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                job.shadow.refund(job.admission)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_protocol::{ClassProbability, Interval, ModelRef};

    fn answer(results: Vec<Prediction>) -> PredictResponse {
        PredictResponse {
            model: ModelRef {
                model: "m".into(),
                version: "1".into(),
                bundle: "sha256:00".into(),
            },
            results,
            latency_ms: 1.0,
            raw: vec![],
            prediction_id: None,
        }
    }

    fn class(top: &[&str]) -> Prediction {
        Prediction::Classification {
            label: top[0].into(),
            class_index: 0,
            probability: 0.5,
            predictions: top
                .iter()
                .map(|l| ClassProbability {
                    label: (*l).into(),
                    probability: 0.5,
                })
                .collect(),
        }
    }

    #[test]
    fn answers_compare_by_top1_topk_and_interval() {
        let mut agg = ShadowAgreement::default();
        compare(
            &answer(vec![class(&["1", "2"]), class(&["3", "4"])]),
            &answer(vec![class(&["1", "5"]), class(&["4", "3"])]),
            &mut agg,
        );
        assert_eq!((agg.compared, agg.agreed), (2, 1));
        assert!((agg.topk_overlap - 1.5).abs() < 1e-12);
        let reg = |v: f64| Prediction::Regression {
            value: v,
            interval: Some(Interval {
                lower: v - 1.0,
                upper: v + 1.0,
                coverage: 0.9,
            }),
        };
        compare(
            &answer(vec![reg(10.0), reg(10.0)]),
            &answer(vec![reg(10.5), reg(12.0)]),
            &mut agg,
        );
        assert_eq!(
            (agg.values, agg.with_interval, agg.inside_interval),
            (2, 2, 1)
        );
        assert!((agg.abs_delta - 2.5).abs() < 1e-12);
    }
}
