//! The HTTP API (axum), one router per resource: [`devices`] (enrollment, devices, events),
//! [`bundles`], [`artifacts`] (Range, ETag), [`rollouts`] (create, list, show with live phase
//! health, chart series, pause / resume / abort / rollback), [`tokens`] (API and enrollment
//! tokens, whoami) and [`ops`] (`/metrics`, `/healthz`, `/v1/openapi.json`). Request and response
//! bodies are `edge_protocol::rest` types; the OpenAPI document is derived from them and from
//! each handler's annotation ([`openapi`]).
//!
//! Callers are an admin token (viewer / operator / admin), a device (its device token), or
//! nobody. A handler that needs a role takes [`Authorized<Viewer>`], [`Authorized<Operator>`]
//! or [`Authorized<Admin>`]: the extractor refuses others before the handler runs (401 without
//! or with an unknown credential, 403 with too small a role or the wrong kind of caller), so no
//! handler repeats the check. Every refusal is an [`ApiError`], sent as `{"error": reason}`.

pub mod artifacts;
pub mod bundles;
pub mod devices;
pub mod openapi;
pub mod ops;
pub mod rollouts;
pub mod tokens;

use std::marker::PhantomData;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use edge_bundle::trust::TrustRoot;
use serde::Deserialize;

use crate::auth::{self, Action, TokenRecord};
use crate::bundles::Bundles;
use crate::devices::{device_by_token, DeviceRecord};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::store::{Records, Store};

/// What the handlers share.
pub struct AppState<S: Store + ?Sized> {
    /// Typed store.
    pub records: Records<S>,
    /// Bundle registry.
    pub bundles: Arc<Bundles<S>>,
    /// Fleet trust root.
    pub trust: TrustRoot,
    /// The clock (unix seconds); a parameter so tests can move time.
    pub now: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Counters shown at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Rate limit of the device-facing routes.
    pub device_limiter: RateLimiter,
    /// Whether the fleet loop is connected to the broker (`None`: no fleet loop).
    pub broker_connected: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    /// Whether this server leads the rollout engine now, and its replica name (set by `serve`).
    pub engine_leader: Option<(Arc<dyn Fn() -> bool + Send + Sync>, String)>,
}

impl<S: Store + ?Sized> AppState<S> {
    /// State with fresh counters, device routes limited to 20 requests/s per address (burst
    /// 100), and no fleet loop.
    pub fn new(
        records: Records<S>,
        bundles: Bundles<S>,
        trust: TrustRoot,
        now: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> AppState<S> {
        AppState {
            records,
            bundles: Arc::new(bundles),
            trust,
            now,
            metrics: Arc::new(Metrics::default()),
            device_limiter: RateLimiter::new(20.0, 100.0),
            broker_connected: None,
            engine_leader: None,
        }
    }
}

/// The handlers' state.
pub type App<S> = Arc<AppState<S>>;

/// Largest request body other than bundle uploads.
pub const MAX_JSON_BYTES: usize = 1 << 20;

/// Who is calling.
#[derive(Clone, Debug)]
pub enum Caller {
    /// An admin token.
    Token(TokenRecord),
    /// A device, by its device token.
    Device(Box<DeviceRecord>),
}

/// An API error: a status and a message, sent as `edge_protocol::rest::ApiError`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(edge_protocol::rest::ApiError { error: self.1 }),
        )
            .into_response()
    }
}

/// An [`ApiError`] with this status.
pub fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

/// A 500 with the cause.
pub fn internal(e: impl std::fmt::Display) -> ApiError {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The caller of a request, by its bearer token.
pub fn caller<S: Store + ?Sized>(
    app: &AppState<S>,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <token>",
        ));
    };
    if let Some(t) = auth::authenticate(&app.records, token).map_err(internal)? {
        return Ok(Caller::Token(t));
    }
    if let Some(d) = device_by_token(&app.records, token).map_err(internal)? {
        return Ok(Caller::Device(Box::new(d)));
    }
    Err(error(StatusCode::UNAUTHORIZED, "unknown token"))
}

/// An admin caller whose role allows `action`.
fn require<S: Store + ?Sized>(
    app: &AppState<S>,
    headers: &HeaderMap,
    action: Action,
) -> Result<TokenRecord, ApiError> {
    match caller(app, headers)? {
        Caller::Token(t) if t.role.allows(action) => Ok(t),
        Caller::Token(t) => Err(error(
            StatusCode::FORBIDDEN,
            format!("role {:?} may not {action:?}", t.role).to_lowercase(),
        )),
        Caller::Device(_) => Err(error(
            StatusCode::FORBIDDEN,
            "devices may not use the admin API",
        )),
    }
}

/// A caller allowed to read device `id`: a token that may read, or that device itself.
pub fn require_reader_or_device<S: Store + ?Sized>(
    app: &AppState<S>,
    headers: &HeaderMap,
    id: &str,
) -> Result<(), ApiError> {
    match caller(app, headers)? {
        Caller::Token(t) if t.role.allows(Action::Read) => Ok(()),
        Caller::Device(d) if d.id == id => Ok(()),
        Caller::Device(_) => Err(error(
            StatusCode::FORBIDDEN,
            "a device may read only itself",
        )),
        Caller::Token(_) => Err(error(StatusCode::FORBIDDEN, "role may not read")),
    }
}

/// The role a handler needs, as a type ([`Viewer`], [`Operator`], [`Admin`]).
pub trait Needs: Send + Sync + 'static {
    /// What the role must allow.
    const ACTION: Action;
}

/// Needs a token that may read.
pub struct Viewer;
/// Needs a token that may manage bundles and rollouts.
pub struct Operator;
/// Needs a token that may manage tokens and enrollment.
pub struct Admin;

impl Needs for Viewer {
    const ACTION: Action = Action::Read;
}
impl Needs for Operator {
    const ACTION: Action = Action::Operate;
}
impl Needs for Admin {
    const ACTION: Action = Action::Administer;
}

/// An admin token allowed to do what `R` needs: the extractor that guards a handler.
pub struct Authorized<R: Needs> {
    /// The token's record (its name signs operator actions in the decision log).
    pub token: TokenRecord,
    role: PhantomData<R>,
}

impl<S: Store + ?Sized + 'static, R: Needs> FromRequestParts<App<S>> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App<S>) -> Result<Self, ApiError> {
        let (app, headers) = (app.clone(), parts.headers.clone());
        let token = tokio::task::spawn_blocking(move || require(&app, &headers, R::ACTION))
            .await
            .map_err(|e| internal(format!("task failed: {e}")))??;
        Ok(Authorized {
            token,
            role: PhantomData,
        })
    }
}

/// The request body, or why it could not be read (over the limit: 413).
pub fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        let status = r.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is over the limit".to_string()
        } else {
            r.body_text()
        };
        error(status, msg)
    })
}

/// A JSON body as `T`, or a 400 saying what is wrong with it.
pub fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")))
}

/// Runs store work off the async threads.
pub async fn blocking<T: IntoResponse + Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => v.into_response(),
        Ok(Err(r)) => r.into_response(),
        Err(e) => internal(format!("task failed: {e}")).into_response(),
    }
}

/// A bundle id from a path or a spec: `sha256:<64 hex>` or `<64 hex>`, as lower-case hex.
pub fn sha_param(sha: &str) -> Result<String, ApiError> {
    let s = sha
        .strip_prefix("sha256:")
        .unwrap_or(sha)
        .to_ascii_lowercase();
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s)
    } else {
        Err(error(
            StatusCode::BAD_REQUEST,
            "bundle id must be sha256:<64 hex> or <64 hex>",
        ))
    }
}

/// The router: every resource's routes, the dashboard, JSON 404/405 fallbacks.
///
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so the device routes
/// are rate-limited per peer address (without it, all callers share one bucket).
pub fn router<S: Store + ?Sized + 'static>(app: App<S>, max_bundle_bytes: usize) -> Router {
    let device_facing = devices::device_routes::<S>()
        .merge(artifacts::routes::<S>())
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            ops::rate_limit::<S>,
        ));
    Router::new()
        .merge(device_facing)
        .merge(devices::routes::<S>())
        .merge(bundles::routes::<S>(max_bundle_bytes))
        .merge(rollouts::routes::<S>())
        .merge(tokens::routes::<S>())
        .merge(ops::routes::<S>())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .with_state(app)
        .merge(crate::dashboard::routes())
}
