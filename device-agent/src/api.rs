//! The local inference API for apps on the device (axum), on TCP and/or a Unix socket.
//!
//! - `POST /v1/models/{name}/predict`: JSON `{"input": <nested array>}` (or `"inputs": [..]`
//!   for models with several inputs; optional `"top_k"`, `"raw"`), or the raw form for speed:
//!   `Content-Type: application/octet-stream`, the first input's little-endian bytes, its shape
//!   in an `X-Shape: 1,1,8,8` header. The answer names the model, version and bundle that
//!   produced it, with `latency_ms` and a `prediction_id`.
//! - `POST /v1/models/{name}/feedback`: ground truth for an answer, `{"prediction_id": ..,
//!   "label": ..}` (classification; a string or a class number), `{"prediction_id": ..,
//!   "value": ..}` (regression) or `{"prediction_id": .., "reward": ..}` (any task), with
//!   `"row"` for a batch answer (default 0). Joined to the answer kept on the device and counted
//!   in the telemetry of the version that answered; 404 for an id no longer kept, 409 for a row
//!   that already has its truth.
//! - `GET /v1/models`, `GET /v1/status`, `GET /healthz`, `GET /metrics` (Prometheus).
//! - Errors are JSON `{"error": "..."}` with a 4xx naming the problem (404 unknown model, 400
//!   bad input, 413 body over `api.max_body_bytes`, 415 unknown content type); 500 only when the
//!   engine itself fails. Inference runs on the blocking pool, at most `2 × cores` at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edge_protocol::rest::{FeedbackAnswer, FeedbackRequest, PredictRequest};
use edge_runtime::feedback::{FeedbackError, Truth};
use edge_runtime::json_input::tensor_from_json;
use edge_runtime::{DType, ModelError, PredictOptions, Tensor};
use serde_json::{json, Value};

use crate::core::Core;
use crate::metrics::{self, Refused};
use crate::sensor::SensorSource;
use crate::uplink::LinkState;

/// What the API handlers share.
pub struct Api {
    /// The agent.
    pub core: Arc<Core>,
    /// MQTT link state (for status and metrics).
    pub link: Arc<LinkState>,
    /// Requests refused before reaching a model, by reason.
    pub refused: Refused,
    /// Sensor sources, in config order (their latest answers and counters).
    pub sensors: Vec<Arc<SensorSource>>,
    limit: tokio::sync::Semaphore,
}

impl Api {
    /// The API state.
    pub fn new(core: Arc<Core>, link: Arc<LinkState>, sensors: Vec<Arc<SensorSource>>) -> Arc<Api> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(Api {
            core,
            link,
            refused: Refused::default(),
            sensors,
            limit: tokio::sync::Semaphore::new(cores * 2),
        })
    }
}

/// The router.
pub fn router(api: Arc<Api>) -> Router {
    let max = api.core.config.api.max_body_bytes;
    Router::new()
        .route("/v1/models/{name}/predict", post(predict))
        .route("/v1/models/{name}/feedback", post(feedback))
        .route("/v1/models", get(models))
        .route("/v1/sensors", get(sensors))
        .route("/v1/sensors/{name}", get(sensor))
        .route("/v1/status", get(status))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint; see /v1/models".into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: predict is POST, the rest GET".into(),
            )
        })
        .layer(DefaultBodyLimit::max(max))
        .with_state(api)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn predict(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let bad = |api: &Api, message: String| {
        api.refused.bad_request.fetch_add(1, Ordering::Relaxed);
        error(StatusCode::BAD_REQUEST, message)
    };
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                api.refused.too_large.fetch_add(1, Ordering::Relaxed);
                return error(
                    status,
                    format!(
                        "request body is over the {}-byte limit (api.max_body_bytes)",
                        api.core.config.api.max_body_bytes
                    ),
                );
            }
            return bad(&api, rejection.body_text());
        }
    };
    let Some(model) = api.core.host.get(&name) else {
        api.refused.not_found.fetch_add(1, Ordering::Relaxed);
        let loaded: Vec<String> = api.core.host.list().into_iter().map(|(n, _)| n).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!("no model named '{name}' is loaded on this device (loaded: {loaded:?})"),
        );
    };
    let specs = &model.manifest().inputs;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let mut options = PredictOptions::default();
    let inputs: Vec<Tensor> = match content_type.as_str() {
        "application/json" => {
            let request: PredictRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => return bad(&api, format!("body is not a predict request: {e}")),
            };
            options.top_k = request.top_k;
            options.raw = request.raw;
            let values = match (request.input, request.inputs) {
                (Some(v), None) => vec![v],
                (None, Some(vs)) => vs,
                _ => {
                    return bad(
                        &api,
                        "give exactly one of \"input\" (a nested array) or \"inputs\" (one per model input)".into(),
                    )
                }
            };
            if values.len() != specs.len() {
                return bad(
                    &api,
                    format!(
                        "model '{name}' takes {} input(s), got {}",
                        specs.len(),
                        values.len()
                    ),
                );
            }
            let mut tensors = Vec::with_capacity(values.len());
            for (v, spec) in values.iter().zip(specs) {
                // image inputs arrive as pixel values; everything else in the input's dtype
                let dtype = if spec.image.is_some() {
                    DType::F32
                } else {
                    spec.dtype
                };
                match tensor_from_json(v, dtype) {
                    Ok(t) => tensors.push(t),
                    Err(e) => return bad(&api, format!("input '{}': {e}", spec.name)),
                }
            }
            tensors
        }
        "application/octet-stream" => {
            if specs.len() != 1 {
                return bad(
                    &api,
                    format!(
                        "the raw form takes one input; model '{name}' has {}",
                        specs.len()
                    ),
                );
            }
            let Some(shape) = headers.get("x-shape").and_then(|v| v.to_str().ok()) else {
                return bad(
                    &api,
                    "raw input needs an X-Shape header, e.g. X-Shape: 1,1,8,8".into(),
                );
            };
            let shape: Result<Vec<usize>, _> = shape
                .split(',')
                .map(|d| d.trim().parse::<usize>())
                .collect();
            let Ok(shape) = shape else {
                return bad(
                    &api,
                    "X-Shape must be comma-separated sizes, e.g. 1,1,8,8".into(),
                );
            };
            let dtype = specs[0].dtype;
            match Tensor::from_le_bytes(dtype, shape.clone(), &body) {
                Some(t) => vec![t],
                None => {
                    return bad(
                        &api,
                        format!(
                            "raw body is {} bytes; shape {shape:?} of {dtype} needs {}",
                            body.len(),
                            shape.iter().product::<usize>().saturating_mul(dtype.size())
                        ),
                    )
                }
            }
        }
        other => {
            api.refused.bad_request.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content type '{other}' is not accepted; send application/json or application/octet-stream"),
            );
        }
    };
    let _permit = api.limit.acquire().await;
    let core = api.core.clone();
    let answer =
        tokio::task::spawn_blocking(move || core.host.serve(&model, inputs, &options)).await;
    match answer {
        Ok(Ok(r)) => Json(r).into_response(),
        Ok(Err(e @ (ModelError::Input(_) | ModelError::Output(_)))) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("inference task failed: {e}"),
        ),
    }
}

/// `POST /v1/models/{name}/feedback`.
async fn feedback(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: Result<Json<FeedbackRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(b) => b,
        Err(rejection) => {
            api.refused.bad_request.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::BAD_REQUEST,
                format!("body is not a feedback request: {}", rejection.body_text()),
            );
        }
    };
    let truth = match (request.label, request.value, request.reward) {
        (Some(label), None, None) => match label {
            Value::String(s) => Truth::Label(s),
            Value::Number(n) if n.is_u64() => Truth::Label(n.to_string()),
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("\"label\" must be a label text or a class number, not {other}"),
                )
            }
        },
        (None, Some(v), None) => Truth::Value(v),
        (None, None, Some(r)) => Truth::Reward(r),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give exactly one of \"label\", \"value\" or \"reward\"".into(),
            )
        }
    };
    if api.core.host.get(&name).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no model named '{name}' is loaded on this device"),
        );
    }
    let log = api.core.host.feedback(&name);
    match log.join(&request.prediction_id, request.row, truth) {
        Ok((version, correct)) => Json(FeedbackAnswer {
            prediction_id: request.prediction_id,
            version,
            correct,
        })
        .into_response(),
        Err(e @ FeedbackError::Unknown { .. }) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ FeedbackError::AlreadyJoined(..)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// `GET /v1/models` and the `models` part of status.
pub fn models_json(core: &Core) -> Value {
    let slot = |s: &Option<crate::slots::SlotRef>| {
        s.as_ref()
            .map(|s| json!({"version": s.version, "bundle": format!("sha256:{}", s.sha256)}))
    };
    // slot state comes from redb (readers never wait for an install in progress)
    let mut out = Vec::new();
    for (name, s) in core.slots.models().unwrap_or_default() {
        let serving = core.host.get(&name);
        let state = match (&serving, s.trial.is_some()) {
            (Some(_), true) => "trial",
            (Some(_), false) => "serving",
            (None, _) => "not serving",
        };
        out.push(json!({
            "name": name,
            "state": state,
            "serving": serving.map(|m| json!({
                "version": m.model_ref().version,
                "bundle": m.model_ref().bundle,
                "engine": m.engine_name(),
                "engine_choice": m.engine_choice(),
                "task": serde_json::to_value(&m.manifest().output.task).ok().and_then(|v| v.get("task").cloned()),
                "inputs": m.manifest().inputs.iter().map(|i| json!({"name": i.name, "dtype": i.dtype.to_string()})).collect::<Vec<_>>(),
            })),
            "slots": {"active": slot(&s.active), "trial": slot(&s.trial), "previous": slot(&s.previous), "shadow": slot(&s.shadow)},
            "shadow": core.host.shadow(&name).map(|sh| json!({
                "version": sh.slot.version,
                "sample": f64::from(sh.sample_ppm) / 1e6,
                "cpu_budget": sh.budget,
                "requests": sh.model.stats().requests,
            })),
            "floor": s.floor,
            "bad_versions": s.bad,
        }));
    }
    Value::Array(out)
}

async fn models(State(api): State<Arc<Api>>) -> Response {
    let core = api.core.clone();
    match tokio::task::spawn_blocking(move || models_json(&core)).await {
        Ok(v) => Json(json!({ "models": v })).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The agent's status document (`GET /v1/status`, `edge-agent status`).
pub fn status_json(core: &Core, connected: Option<bool>) -> Value {
    let outbox = core.outbox.stats().ok();
    json!({
        "device_id": core.device_id,
        "agent_version": env!("CARGO_PKG_VERSION"),
        "running": connected.is_some(),
        "uptime_s": connected.map(|_| core.started.elapsed().as_secs()),
        "server": core.config.server.as_ref().map(|s| json!({"url": s.url, "mqtt": s.mqtt, "connected": connected})),
        "applied_generation": core.state.applied_generation().ok(),
        "last_sync": core.state.last_sync().ok().filter(|t| *t > 0),
        "outbox": outbox.map(|o| json!({
            "queued": o.queued, "bytes": o.bytes, "max_bytes": core.config.telemetry.outbox_max_bytes,
            "dropped_telemetry": o.dropped_telemetry, "dropped_events": o.dropped_events, "next_seq": o.next_seq,
        })),
        "models": models_json(core),
    })
}

async fn status(State(api): State<Arc<Api>>) -> Response {
    let core = api.core.clone();
    let connected = api.link.connected.load(Ordering::Relaxed);
    match tokio::task::spawn_blocking(move || status_json(&core, Some(connected))).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn sensors(State(api): State<Arc<Api>>) -> Response {
    let list: Vec<Value> = api.sensors.iter().map(|s| s.to_json()).collect();
    Json(json!({ "sensors": list })).into_response()
}

async fn sensor(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    match api.sensors.iter().find(|s| s.config.name == name) {
        Some(s) => Json(s.to_json()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no sensor named '{name}'; see /v1/sensors"),
        ),
    }
}

async fn healthz(State(api): State<Arc<Api>>) -> Response {
    Json(json!({"status": "ok", "models_serving": api.core.host.list().len()})).into_response()
}

async fn metrics_text(State(api): State<Arc<Api>>) -> Response {
    let a = api.clone();
    match tokio::task::spawn_blocking(move || {
        metrics::render(&a.core, &a.link, &a.refused, &a.sensors)
    })
    .await
    {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
