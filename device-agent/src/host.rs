//! The models this device serves, by name, swapped atomically.
//!
//! A request takes a reference-counted handle to the active model and runs on it; activation
//! replaces the handle under a short write lock. Requests already running finish on the model they
//! started with; new requests get the new one. None fail because of a swap (DESIGN decision 6).
//! The old model is freed when its last request returns.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use edge_protocol::PredictResponse;
use edge_runtime::{Model, ModelError, PredictOptions, Tensor};

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

/// The active model per name.
#[derive(Default)]
pub struct ModelHost {
    active: RwLock<HashMap<String, Arc<Model>>>,
}

impl ModelHost {
    /// An empty host.
    pub fn new() -> ModelHost {
        ModelHost::default()
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
        Ok(model.predict_with(inputs, options)?)
    }
}
