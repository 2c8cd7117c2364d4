//! The HTTP API (axum). Callers are an admin token (viewer / operator / admin), a device (its
//! device token), or nobody; every route names what it needs and refuses others with a JSON
//! error (401 without or with an unknown credential, 403 with too small a role or the wrong kind
//! of caller). This slice serves enrollment, devices, bundles, artifacts (Range, ETag), rollouts
//! (create, list, show, pause / resume / abort / rollback; two rollouts of one model over
//! overlapping cohorts are refused), tokens, `/metrics`, `/v1/openapi.json` and `/healthz`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edge_bundle::trust::TrustRoot;
use edge_protocol::enroll::EnrollRequest;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self, Action, Role, TokenRecord};
use crate::bundles::{BundleError, Bundles};
use crate::devices::{self, DeviceRecord, EnrollError};
use crate::engine::{phase_key, DesiredRecord};
use crate::health::PhaseAggregate;
use crate::ingest::{installs_key, EventRecord, InstallTally};
use crate::metrics::{gauge, Metrics};
use crate::ratelimit::RateLimiter;
use crate::rollout::{Rollout, RolloutSpec};
use crate::selector::Selector;
use crate::store::{Records, Store, Table};

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
        }
    }
}

type App<S> = Arc<AppState<S>>;

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

/// An API error: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn caller<S: Store + ?Sized>(app: &AppState<S>, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer <token>",
        ));
    };
    let internal =
        |e: crate::store::StoreError| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    if let Some(t) = auth::authenticate(&app.records, token).map_err(internal)? {
        return Ok(Caller::Token(t));
    }
    if let Some(d) = devices::device_by_token(&app.records, token).map_err(internal)? {
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
fn require_reader_or_device<S: Store + ?Sized>(
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

/// The router.
///
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so the device routes
/// are rate-limited per peer address (without it, all callers share one bucket).
pub fn router<S: Store + ?Sized + 'static>(app: App<S>, max_bundle_bytes: usize) -> Router {
    let device_facing = Router::new()
        .route("/v1/devices/enroll", post(enroll::<S>))
        .route("/v1/artifacts/{sha}", get(artifact::<S>))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            rate_limit::<S>,
        ));
    Router::new()
        .merge(device_facing)
        .route("/v1/devices", get(list_devices::<S>))
        .route("/v1/devices/{id}", get(show_device::<S>))
        .route("/v1/devices/{id}/events", get(device_events::<S>))
        .route("/metrics", get(metrics::<S>))
        .route(
            "/v1/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .route(
            "/v1/bundles",
            post(upload_bundle::<S>)
                .get(list_bundles::<S>)
                .layer(DefaultBodyLimit::max(max_bundle_bytes)),
        )
        .route(
            "/v1/bundles/{sha}",
            get(show_bundle::<S>).delete(delete_bundle::<S>),
        )
        .route(
            "/v1/rollouts",
            post(create_rollout::<S>).get(list_rollouts::<S>),
        )
        .route("/v1/rollouts/{id}", get(show_rollout::<S>))
        .route("/v1/rollouts/{id}/series", get(rollout_series::<S>))
        .route("/v1/whoami", get(whoami::<S>))
        .route("/v1/rollouts/{id}/{action}", post(rollout_action::<S>))
        .route("/v1/tokens", post(create_token::<S>))
        .route("/v1/enrollment-tokens", post(create_enrollment_token::<S>))
        .route("/healthz", get(healthz::<S>))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .with_state(app)
        .merge(crate::dashboard::routes())
}

fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
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

fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")))
}

async fn blocking<T: IntoResponse + Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => v.into_response(),
        Ok(Err(r)) => r.into_response(),
        Err(e) => internal(format!("task failed: {e}")).into_response(),
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn enroll<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    blocking(move || {
        let body = body_or_error(body)?;
        let request: EnrollRequest = json_body(&body)?;
        devices::enroll(&app.records, &request, (app.now)())
            .map(Json)
            .map_err(|e| match e {
                EnrollError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
                EnrollError::Forbidden(m) => error(StatusCode::FORBIDDEN, m),
                e @ EnrollError::Conflict(_) => error(StatusCode::CONFLICT, e.to_string()),
                EnrollError::Store(e) => internal(e),
            })
    })
    .await
}

fn device_json(d: &DeviceRecord) -> serde_json::Value {
    json!({
        "id": d.id, "tags": d.tags, "public_key": d.public_key, "agent_version": d.agent_version,
        "enrolled_at": d.enrolled_at, "last_seen": d.last_seen, "online": d.online,
        "reported": d.reported,
        "uplink": {"messages": d.messages, "last_seq": d.last_seq, "duplicates": d.duplicates,
                   "requests": d.requests},
    })
}

async fn list_devices<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
) -> Response {
    blocking(move || {
        require(&app, &headers, Action::Read)?;
        let all: Vec<DeviceRecord> = app
            .records
            .list(Table::Devices, "", usize::MAX)
            .map_err(internal)?;
        Ok(Json(
            json!({"devices": all.iter().map(device_json).collect::<Vec<_>>()}),
        ))
    })
    .await
}

async fn show_device<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    blocking(move || {
        require_reader_or_device(&app, &headers, &id)?;
        let d: DeviceRecord = app
            .records
            .get(Table::Devices, &id)
            .map_err(internal)?
            .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no device '{id}'")))?;
        let mut v = device_json(&d);
        // its own recent telemetry: on the device's page only, not in the (fleet-sized) list
        v["recent"] = json!(d.recent);
        Ok(Json(v))
    })
    .await
}

async fn upload_bundle<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    blocking(move || {
        let body = body_or_error(body)?;
        let who = require(&app, &headers, Action::Operate)?;
        app.bundles
            .upload(&body, &app.trust, &who.name, (app.now)())
            .map(|r| (StatusCode::CREATED, Json(r)))
            .map_err(|e| match e {
                BundleError::Refused(_) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
                BundleError::TooLarge { .. } => error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
                e => internal(e),
            })
    })
    .await
}

async fn list_bundles<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
) -> Response {
    blocking(move || {
        require(&app, &headers, Action::Read)?;
        Ok(Json(
            json!({"bundles": app.bundles.list().map_err(internal)?}),
        ))
    })
    .await
}

fn sha_param(sha: &str) -> Result<String, ApiError> {
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

async fn show_bundle<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    Path(sha): Path<String>,
) -> Response {
    blocking(move || {
        require(&app, &headers, Action::Read)?;
        let sha = sha_param(&sha)?;
        let record = app
            .bundles
            .get(&sha)
            .map_err(internal)?
            .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no bundle sha256:{sha}")))?;
        // the signed manifest (inputs, output, self-test, quantization, reference) and the
        // rollouts that shipped it
        let manifest = app.bundles.manifest(&sha);
        let rollouts: Vec<Rollout> = app
            .records
            .list(Table::Rollouts, "", usize::MAX)
            .map_err(internal)?;
        let used_by: Vec<serde_json::Value> = rollouts
            .iter()
            .filter(|r| r.spec.bundle.trim_start_matches("sha256:") == sha)
            .map(|r| json!({"id": r.id, "status": r.status, "selector": r.spec.selector}))
            .collect();
        let mut v = serde_json::to_value(&record).map_err(internal)?;
        v["manifest"] = serde_json::to_value(&manifest).map_err(internal)?;
        v["rollouts"] = json!(used_by);
        Ok(Json(v))
    })
    .await
}

async fn delete_bundle<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    Path(sha): Path<String>,
) -> Response {
    blocking(move || {
        require(&app, &headers, Action::Operate)?;
        let sha = sha_param(&sha)?;
        let used_by: Option<String> = app
            .records
            .list::<crate::rollout::Rollout>(Table::Rollouts, "", usize::MAX)
            .map_err(internal)?
            .into_iter()
            .find(|r| r.spec.bundle.trim_start_matches("sha256:") == sha && !r.status.is_final())
            .map(|r| r.id);
        app.bundles
            .delete(&sha, used_by.as_deref())
            .map(|_| StatusCode::NO_CONTENT)
            .map_err(|e| match e {
                BundleError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
                BundleError::InUse { .. } => error(StatusCode::CONFLICT, e.to_string()),
                e => internal(e),
            })
    })
    .await
}

/// `bytes=N-` or `bytes=N-M` against a length → the inclusive range, or `None` if unsatisfiable.
fn parse_range(v: &str, len: u64) -> Option<(u64, u64)> {
    let spec = v.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end: u64 = if b.trim().is_empty() {
        len.checked_sub(1)?
    } else {
        b.trim().parse::<u64>().ok()?.min(len.checked_sub(1)?)
    };
    (start <= end && start < len).then_some((start, end))
}

async fn artifact<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    Path(sha): Path<String>,
) -> Response {
    let app2 = app.clone();
    let h2 = headers.clone();
    let checked = tokio::task::spawn_blocking(move || -> Result<std::path::PathBuf, ApiError> {
        let who = caller(&app2, &h2)?;
        let sha = sha_param(&sha)?;
        match who {
            Caller::Device(d) => {
                // a device fetches only what it is told to run
                let desired: Option<DesiredRecord> =
                    app2.records.get(Table::Desired, &d.id).map_err(internal)?;
                if !desired.is_some_and(|r| r.models.iter().any(|m| m.sha256 == sha)) {
                    return Err(error(
                        StatusCode::FORBIDDEN,
                        format!("bundle {sha} is not in device '{}''s desired state", d.id),
                    ));
                }
            }
            Caller::Token(t) if t.role.allows(Action::Read) => {}
            Caller::Token(_) => return Err(error(StatusCode::FORBIDDEN, "role may not read")),
        }
        if app2.bundles.get(&sha).map_err(internal)?.is_none() {
            return Err(error(StatusCode::NOT_FOUND, format!("no artifact {sha}")));
        }
        Ok(app2.bundles.path(&sha))
    })
    .await;
    let path = match checked {
        Ok(Ok(p)) => p,
        Ok(Err(r)) => return r.into_response(),
        Err(e) => return internal(e).into_response(),
    };
    let etag = format!(
        "\"{}\"",
        path.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
    );
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) => return internal(format!("artifact file: {e}")).into_response(),
    };
    let base = [
        (header::ETAG, etag),
        (header::ACCEPT_RANGES, "bytes".to_string()),
    ];
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(r) => match parse_range(r, len) {
            Some(range) => Some(range),
            None => {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{len}"))],
                    Json(json!({"error": format!("range '{r}' does not fit {len} bytes")})),
                )
                    .into_response()
            }
        },
    };
    let (start, end) = range.unwrap_or((0, len.saturating_sub(1)));
    // only the requested part is read
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&path)?;
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((end + 1 - start) as usize);
        f.take(if len == 0 { 0 } else { end + 1 - start })
            .read_to_end(&mut buf)?;
        Ok(buf)
    })
    .await;
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return internal(format!("artifact file: {e}")).into_response(),
        Err(e) => return internal(e).into_response(),
    };
    match range {
        None => (StatusCode::OK, base, Body::from(bytes)).into_response(),
        Some((start, end)) => (
            StatusCode::PARTIAL_CONTENT,
            base,
            [(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"))],
            Body::from(bytes),
        )
            .into_response(),
    }
}

async fn create_rollout<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    blocking(move || {
        let body = body_or_error(body)?;
        require(&app, &headers, Action::Operate)?;
        let spec: RolloutSpec = json_body(&body)?;
        spec.check().map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        let selector = Selector::parse(&spec.selector).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
        let sha = sha_param(&spec.bundle)?;
        let bundle = app
            .bundles
            .get(&sha)
            .map_err(internal)?
            .ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("no bundle sha256:{sha}; upload it first")))?;
        let existing: Vec<Rollout> = app.records.list(Table::Rollouts, "", usize::MAX).map_err(internal)?;
        for other in existing.iter().filter(|r| r.model == bundle.name && !r.status.is_final()) {
            let other_selector = Selector::parse(&other.spec.selector).unwrap_or_default();
            if selector.may_overlap(&other_selector) {
                return Err(error(
                    StatusCode::CONFLICT,
                    format!(
                        "rollout {} of model '{}' ({:?}) already covers devices this selector may select ('{}' vs '{}'); finish, abort or roll it back first",
                        other.id, other.model, other.status, spec.selector, other.spec.selector
                    ),
                ));
            }
        }
        let n = app.records.store().increment("rollout").map_err(internal)?;
        let id = format!("r-{n}");
        let mut spec = spec;
        spec.bundle = format!("sha256:{sha}");
        let rollout = Rollout::new(id.clone(), bundle.name, bundle.version, spec, (app.now)());
        app.records.put(Table::Rollouts, &id, &rollout).map_err(internal)?;
        Ok((StatusCode::CREATED, Json(rollout)))
    })
    .await
}

async fn list_rollouts<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
) -> Response {
    blocking(move || {
        require(&app, &headers, Action::Read)?;
        let all: Vec<Rollout> = app
            .records
            .list(Table::Rollouts, "", usize::MAX)
            .map_err(internal)?;
        Ok(Json(json!({ "rollouts": all })))
    })
    .await
}

/// The rollout `id`, or 404.
fn load_rollout<S: Store + ?Sized>(app: &AppState<S>, id: &str) -> Result<Rollout, ApiError> {
    app.records
        .get(Table::Rollouts, id)
        .map_err(internal)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no rollout '{id}'")))
}

async fn whoami<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
) -> Response {
    blocking(move || {
        let t = require(&app, &headers, Action::Read)?;
        let may = |a: Action| t.role.allows(a);
        Ok(Json(json!({
            "name": t.name, "role": t.role,
            "may": {"read": may(Action::Read), "operate": may(Action::Operate), "administer": may(Action::Administer)},
        })))
    })
    .await
}

async fn rollout_series<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    blocking(move || {
        require(&app, &headers, Action::Read)?;
        let r = load_rollout(&app, &id)?;
        let sha = r.spec.bundle.trim_start_matches("sha256:");
        let reference = app
            .bundles
            .manifest(sha)
            .map(|m| m.reference)
            .unwrap_or_default();
        crate::charts::rollout_charts(&app.records, &r, &reference)
            .map(Json)
            .map_err(internal)
    })
    .await
}

async fn show_rollout<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    blocking(move || {
        require(&app, &headers, Action::Read)?;
        let r = load_rollout(&app, &id)?;
        Ok(Json(rollout_view(&app, r)?))
    })
    .await
}

/// A rollout with the live health of its current phase and its device counts.
fn rollout_view<S: Store + ?Sized>(
    app: &AppState<S>,
    r: Rollout,
) -> Result<serde_json::Value, ApiError> {
    let aggregate: PhaseAggregate = app
        .records
        .get(Table::Telemetry, &phase_key(&r.id, r.phase))
        .map_err(internal)?
        .unwrap_or_default();
    let installs: InstallTally = app
        .records
        .get(Table::Telemetry, &installs_key(&r.id, r.phase))
        .map_err(internal)?
        .unwrap_or_default();
    let devices: Vec<DeviceRecord> = app
        .records
        .list(Table::Devices, "", usize::MAX)
        .map_err(internal)?;
    let selector = Selector::parse(&r.spec.selector).unwrap_or_default();
    let selected = devices.iter().filter(|d| selector.matches(&d.tags)).count() as u64;
    let in_phase = devices
        .iter()
        .filter(|d| selector.matches(&d.tags) && crate::cohort::in_phase(&d.id, &r.id, r.percent()))
        .count() as u64;
    let (installed, failed) = installs.counts();
    let health = aggregate.health(in_phase, installed, failed, &Default::default());
    let mut v = serde_json::to_value(&r).map_err(internal)?;
    v["selected_devices"] = json!(selected);
    v["phase_devices"] = json!(in_phase);
    v["health"] = serde_json::to_value(&health).map_err(internal)?;
    // per phase (cumulative, as phases are): devices targeted, updated to this version, rolled
    // back from it, and healthy (updated and reporting telemetry in that phase)
    let mut phases = Vec::new();
    for (i, p) in r.spec.phases.iter().enumerate() {
        let reporting: PhaseAggregate = if i <= r.phase {
            app.records
                .get(Table::Telemetry, &phase_key(&r.id, i))
                .map_err(internal)?
                .unwrap_or_default()
        } else {
            PhaseAggregate::default()
        };
        let (mut targeted, mut updated, mut rolled_back, mut healthy) = (0u64, 0u64, 0u64, 0u64);
        for d in devices.iter().filter(|d| {
            selector.matches(&d.tags) && crate::cohort::in_phase(&d.id, &r.id, p.percent)
        }) {
            targeted += 1;
            let model = d
                .reported
                .as_ref()
                .and_then(|rep| rep.models.iter().find(|m| m.name == r.model));
            let on = model.is_some_and(|m| m.active.as_deref() == Some(r.version.as_str()));
            let bad = model.is_some_and(|m| m.bad_versions.contains(&r.version));
            updated += u64::from(on);
            rolled_back += u64::from(bad);
            healthy += u64::from(on && !bad && reporting.devices.contains(&d.id));
        }
        phases.push(
            json!({"phase": i, "percent": p.percent, "soak_seconds": p.soak_seconds,
            "targeted": targeted, "updated": updated, "rolled_back": rolled_back,
            "healthy": healthy, "reached": i <= r.phase}),
        );
    }
    v["phases_detail"] = json!(phases);
    Ok(v)
}

async fn rollout_action<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    blocking(move || {
        let who = require(&app, &headers, Action::Operate)?;
        let mut r = load_rollout(&app, &id)?;
        let now = (app.now)();
        let done = match action.as_str() {
            "pause" => r.pause(now, &who.name),
            "resume" => r.resume(now, &who.name),
            "abort" => r.abort(now, &who.name),
            "rollback" => r.rollback(now, &who.name),
            other => {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    format!("unknown action '{other}' (pause, resume, abort, rollback)"),
                ))
            }
        };
        done.map_err(|e| error(StatusCode::CONFLICT, e))?;
        app.records
            .put(Table::Rollouts, &id, &r)
            .map_err(internal)?;
        Ok(Json(r))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: Role,
}

async fn create_token<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    blocking(move || {
        let body = body_or_error(body)?;
        require(&app, &headers, Action::Administer)?;
        let req: NewToken = json_body(&body)?;
        let (token, record) =
            auth::create_token(&app.records, &req.name, req.role, (app.now)()).map_err(internal)?;
        Ok((
            StatusCode::CREATED,
            Json(json!({"token": token, "name": record.name, "role": record.role})),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEnrollmentToken {
    name: String,
    #[serde(default)]
    uses: Option<u64>,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
}

async fn create_enrollment_token<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    blocking(move || {
        let body = body_or_error(body)?;
        require(&app, &headers, Action::Administer)?;
        let req: NewEnrollmentToken = json_body(&body)?;
        let token = devices::create_enrollment_token(&app.records, &req.name, req.uses, req.tags)
            .map_err(internal)?;
        Ok((
            StatusCode::CREATED,
            Json(json!({"token": token, "name": req.name, "uses": req.uses})),
        ))
    })
    .await
}

async fn rate_limit<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    match app.device_limiter.check(peer) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            Metrics::add(&app.metrics.rate_limited, 1);
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                Json(json!({"error": format!("too many requests from {peer}; retry in {secs} s")})),
            )
                .into_response()
        }
    }
}

async fn healthz<S: Store + ?Sized + 'static>(State(app): State<App<S>>) -> Response {
    let broker = app.broker_connected.as_ref().map(|f| f());
    let store_ok = {
        let a = app.clone();
        tokio::task::spawn_blocking(move || {
            a.records.store().get(Table::Counters, "rollout").is_ok()
        })
        .await
        .unwrap_or(false)
    };
    let status = if store_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"status": if store_ok { "ok" } else { "store unavailable" }, "store": store_ok, "broker_connected": broker})),
    )
        .into_response()
}

async fn metrics<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
) -> Response {
    blocking(move || {
        require(&app, &headers, Action::Read)?;
        let mut out = app.metrics.render();
        let devices: Vec<DeviceRecord> = app
            .records
            .list(Table::Devices, "", usize::MAX)
            .map_err(internal)?;
        let online = devices.iter().filter(|d| d.online).count() as u64;
        gauge(
            &mut out,
            "edgefleet_devices",
            "Enrolled devices.",
            &[("", devices.len() as u64)],
        );
        gauge(
            &mut out,
            "edgefleet_devices_online",
            "Devices online now.",
            &[("", online)],
        );
        let rollouts: Vec<Rollout> = app
            .records
            .list(Table::Rollouts, "", usize::MAX)
            .map_err(internal)?;
        let mut by_status: std::collections::BTreeMap<String, u64> = Default::default();
        for r in &rollouts {
            *by_status
                .entry(format!("{:?}", r.status).to_lowercase())
                .or_default() += 1;
        }
        let labels: Vec<(String, u64)> = by_status
            .into_iter()
            .map(|(k, v)| (format!("status=\"{k}\""), v))
            .collect();
        let samples: Vec<(&str, u64)> = labels.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        gauge(
            &mut out,
            "edgefleet_rollouts",
            "Rollouts by status.",
            &samples,
        );
        Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
    })
    .await
}

async fn device_events<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    blocking(move || {
        require_reader_or_device(&app, &headers, &id)?;
        if app
            .records
            .get::<DeviceRecord>(Table::Devices, &id)
            .map_err(internal)?
            .is_none()
        {
            return Err(error(StatusCode::NOT_FOUND, format!("no device '{id}'")));
        }
        let events: Vec<EventRecord> = app
            .records
            .list(Table::Events, &format!("{id}/"), usize::MAX)
            .map_err(internal)?;
        Ok(Json(json!({"device": id, "events": events})))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Some((0, 9)));
        assert_eq!(parse_range("bytes=4-", 10), Some((4, 9)));
        assert_eq!(parse_range("bytes=2-5", 10), Some((2, 5)));
        assert_eq!(parse_range("bytes=2-50", 10), Some((2, 9)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("bytes=5-2", 10), None);
        assert_eq!(parse_range("bytes=-5", 10), None);
        assert_eq!(parse_range("items=0-", 10), None);
        assert_eq!(parse_range("bytes=0-", 0), None);
    }
}
