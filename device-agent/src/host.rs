//! The models this device serves, by name, swapped atomically.
//!
//! A request takes a reference-counted handle to the active model and runs on it; activation
//! replaces the handle under a short write lock. Requests already running finish on the model they
//! started with; new requests get the new one. None fail because of a swap (DESIGN decision 6).
//! The old model is freed when its last request returns.
//!
//! Every answer goes through [`ModelHost::serve`]: it is kept for feedback (its prediction id,
//! [`edge_runtime::feedback`]) and, when a shadow of that model runs and the request is sampled,
//! its input and answer go to the shadow worker ([`crate::shadow`]) once it has been made.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use edge_protocol::PredictResponse;
use edge_runtime::feedback::{FeedbackLimits, FeedbackLog};
use edge_runtime::{Model, ModelError, PredictOptions, Tensor};

use crate::shadow::{Activity, Shadow, ShadowRunner};

/// Why a request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No model of that name is active.
    #[error("no model named '{0}' is loaded on this device")]
    UnknownModel(String),
    /// The model refused the input or failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// The active model per name, its shadow and its feedback log.
#[derive(Default)]
pub struct ModelHost {
    active: RwLock<HashMap<String, Arc<Model>>>,
    shadows: RwLock<HashMap<String, Arc<Shadow>>>,
    feedback: RwLock<HashMap<String, Arc<FeedbackLog>>>,
    feedback_limits: FeedbackLimits,
    runner: OnceLock<ShadowRunner>,
    activity: Arc<Activity>,
}

impl ModelHost {
    /// An empty host keeping answers for feedback within `feedback_limits`.
    pub fn new(feedback_limits: FeedbackLimits) -> ModelHost {
        ModelHost {
            feedback_limits,
            ..ModelHost::default()
        }
    }

    /// The feedback log of a model name (made at its first answer).
    pub fn feedback(&self, name: &str) -> Arc<FeedbackLog> {
        if let Some(log) = self
            .feedback
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return log.clone();
        }
        self.feedback
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(FeedbackLog::new(self.feedback_limits)))
            .clone()
    }

    /// Every model name's feedback log.
    pub fn feedback_logs(&self) -> Vec<(String, Arc<FeedbackLog>)> {
        self.feedback
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The shadow running beside a model name.
    pub fn shadow(&self, name: &str) -> Option<Arc<Shadow>> {
        self.shadows
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Every shadow, by model name.
    pub fn shadows(&self) -> Vec<(String, Arc<Shadow>)> {
        let mut v: Vec<_> = self
            .shadows
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Runs `shadow` beside its model name's active model from now on (the worker starts with
    /// the first shadow); returns the one it replaced.
    pub fn set_shadow(&self, name: &str, shadow: Shadow) -> Option<Arc<Shadow>> {
        self.runner
            .get_or_init(|| ShadowRunner::start(self.activity.clone()));
        self.shadows
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), Arc::new(shadow))
    }

    /// Stops a model name's shadow; returns it.
    pub fn remove_shadow(&self, name: &str) -> Option<Arc<Shadow>> {
        self.shadows
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }

    /// Answers with `model` (the active model of its name, taken by the caller): the answer is
    /// kept for feedback, and mirrored to the name's shadow when sampled.
    pub fn serve(
        &self,
        model: &Model,
        inputs: Vec<Tensor>,
        options: &PredictOptions,
    ) -> Result<PredictResponse, ModelError> {
        let name = &model.model_ref().model;
        let mirror = self
            .shadow(name)
            .and_then(|s| s.admit().map(|admission| (s, admission, inputs.clone())));
        // what the shadow worker yields to (tracked once a shadow has ever run here)
        let answering = self.runner.get().map(|_| self.activity.answering());
        let answered = model.predict_with(inputs, options);
        drop(answering);
        let mut answer = answered?;
        self.feedback(name).record(&mut answer);
        if let (Some((shadow, admission, inputs)), Some(runner)) = (mirror, self.runner.get()) {
            runner.submit(shadow, admission, inputs, options.clone(), answer.clone());
        }
        Ok(answer)
    }

    /// The active model of that name (a handle that stays valid across swaps).
    pub fn get(&self, name: &str) -> Option<Arc<Model>> {
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Makes `model` the active model for its name; returns the one it replaced.
    pub fn activate(&self, model: Arc<Model>) -> Option<Arc<Model>> {
        let name = model.manifest().name.clone();
        self.active
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, model)
    }

    /// Removes a model; returns it.
    pub fn remove(&self, name: &str) -> Option<Arc<Model>> {
        self.active
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }

    /// Names and versions of the active models, sorted by name.
    pub fn list(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|m| (m.model_ref().model.clone(), m.model_ref().version.clone()))
            .collect();
        v.sort();
        v
    }

    /// Predicts with the active model of that name.
    pub fn predict(
        &self,
        name: &str,
        inputs: Vec<Tensor>,
        options: &PredictOptions,
    ) -> Result<PredictResponse, HostError> {
        let model = self
            .get(name)
            .ok_or_else(|| HostError::UnknownModel(name.to_string()))?;
        Ok(self.serve(&model, inputs, options)?)
    }
}
