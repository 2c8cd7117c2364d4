//! Rollouts: create (two rollouts of one model over overlapping cohorts are refused), list,
//! show with the live health of the current phase, chart series, and the operator actions
//! pause / resume / abort / rollback.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use edge_bundle::ReferenceStats;
use edge_protocol::rest::{
    ApiError as ErrorBody, PhaseProgress, RolloutCharts, RolloutList, RolloutSpec, RolloutView,
};

use super::{
    blocking, body_or_error, error, internal, json_body, sha_param, ApiError, App, AppState,
    Authorized, Operator, Viewer,
};
use crate::devices::DeviceRecord;
use crate::health::{phase_health, PhaseAggregate};
use crate::rollout::{Lifecycle, Rollout};
use crate::store::{Store, Table};
use crate::telemetry_keys::phase_key;

/// The rollout routes.
pub fn routes<S: Store + ?Sized + 'static>() -> Router<App<S>> {
    Router::new()
        .route(
            "/v1/rollouts",
            post(create_rollout::<S>).get(list_rollouts::<S>),
        )
        .route("/v1/rollouts/{id}", get(show_rollout::<S>))
        .route("/v1/rollouts/{id}/series", get(rollout_series::<S>))
        .route("/v1/rollouts/{id}/pause", post(pause_rollout::<S>))
        .route("/v1/rollouts/{id}/resume", post(resume_rollout::<S>))
        .route("/v1/rollouts/{id}/abort", post(abort_rollout::<S>))
        .route("/v1/rollouts/{id}/rollback", post(rollback_rollout::<S>))
}

/// Create a rollout.
///
/// A bundle already uploaded, a cohort selector, phases, gates and what to do when a gate
/// fails. Refused (409) while another live rollout of the same model may reach the same
/// devices. Access: operator.
#[utoipa::path(post, path = "/v1/rollouts", tag = "rollouts", security(("bearer" = [])),
    request_body = RolloutSpec,
    responses((status = 201, body = Rollout), (status = "4XX", body = ErrorBody)))]
pub async fn create_rollout<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    _: Authorized<Operator>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    blocking(move || {
        let body = body_or_error(body)?;
        let mut spec: RolloutSpec = json_body(&body)?;
        spec.check()
            .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        let sha = sha_param(&spec.bundle)?;
        let bundle = app.bundles.get(&sha).map_err(internal)?.ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                format!("no bundle sha256:{sha}; upload it first"),
            )
        })?;
        let existing: Vec<Rollout> = app
            .records
            .list(Table::Rollouts, "", usize::MAX)
            .map_err(internal)?;
        for other in existing
            .iter()
            .filter(|r| r.model == bundle.name && !r.status.is_final())
        {
            if spec.selector.may_overlap(&other.spec.selector) {
                return Err(error(
                    StatusCode::CONFLICT,
                    format!(
                        "rollout {} of model '{}' ({:?}) already covers devices this selector may \
                         select ('{}' vs '{}'); finish, abort or roll it back first",
                        other.id,
                        other.model,
                        other.status,
                        spec.selector.as_str(),
                        other.spec.selector.as_str()
                    ),
                ));
            }
        }
        let devices: Vec<DeviceRecord> = app
            .records
            .list(Table::Devices, "", usize::MAX)
            .map_err(internal)?;
        let unable = unable_to_read(&devices, &spec.selector, &bundle.payload_format);
        if !unable.is_empty() {
            return Err(error(
                StatusCode::CONFLICT,
                format!(
                    "{} targeted device(s) cannot read this bundle's '{}' payload (they report \
                     reading only {}): {}{}; repack the model with `edgectl pack --payload {}` \
                     or update those agents, or narrow the selector",
                    unable.len(),
                    bundle.payload_format,
                    unable[0].1.join(", "),
                    unable
                        .iter()
                        .take(20)
                        .map(|(id, _)| id.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    if unable.len() > 20 { ", ..." } else { "" },
                    unable[0].1.first().map_or("onnx", String::as_str),
                ),
            ));
        }
        let n = app.records.store().increment("rollout").map_err(internal)?;
        let id = format!("r-{n}");
        spec.bundle = format!("sha256:{sha}");
        let rollout = Rollout::new(id.clone(), bundle.name, bundle.version, spec, (app.now)());
        app.records
            .put(Table::Rollouts, &id, &rollout)
            .map_err(internal)?;
        Ok((StatusCode::CREATED, Json(rollout)))
    })
    .await
}

/// List rollouts.
///
/// Access: viewer.
#[utoipa::path(get, path = "/v1/rollouts", tag = "rollouts", security(("bearer" = [])),
    responses((status = 200, body = RolloutList), (status = "4XX", body = ErrorBody)))]
pub async fn list_rollouts<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    _: Authorized<Viewer>,
) -> Response {
    blocking(move || {
        let rollouts: Vec<Rollout> = app
            .records
            .list(Table::Rollouts, "", usize::MAX)
            .map_err(internal)?;
        Ok(Json(RolloutList { rollouts }))
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

/// The reference statistics of a rollout's bundle (what PSI is measured against).
fn reference_of<S: Store + ?Sized>(app: &AppState<S>, r: &Rollout) -> ReferenceStats {
    app.bundles
        .reference(r.spec.bundle.trim_start_matches("sha256:"))
}

/// Chart data of a rollout.
///
/// Per phase and per version (new, previous) minute points of the gate metrics, the gates,
/// the decision log. Access: viewer.
#[utoipa::path(get, path = "/v1/rollouts/{id}/series", tag = "rollouts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Rollout id")),
    responses((status = 200, body = RolloutCharts), (status = "4XX", body = ErrorBody)))]
pub async fn rollout_series<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    _: Authorized<Viewer>,
    Path(id): Path<String>,
) -> Response {
    blocking(move || {
        let r = load_rollout(&app, &id)?;
        let reference = reference_of(&app, &r);
        crate::charts::rollout_charts(&app.records, &r, &reference)
            .map(Json)
            .map_err(internal)
    })
    .await
}

/// A rollout with its live phase health.
///
/// Its transitions, device counts per phase, and the current phase's health: the same values,
/// PSI included, that the engine's gate judges. Access: viewer.
#[utoipa::path(get, path = "/v1/rollouts/{id}", tag = "rollouts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Rollout id")),
    responses((status = 200, body = RolloutView), (status = "4XX", body = ErrorBody)))]
pub async fn show_rollout<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    _: Authorized<Viewer>,
    Path(id): Path<String>,
) -> Response {
    blocking(move || {
        let r = load_rollout(&app, &id)?;
        Ok(Json(rollout_view(&app, r)?))
    })
    .await
}

/// The devices `selector` targets whose last hello says they cannot read a `format` payload,
/// with the formats they do read. Devices that never said hello are not judged (the agent
/// refuses such a bundle itself, with the reason in its events).
fn unable_to_read(
    devices: &[DeviceRecord],
    selector: &crate::selector::Selector,
    format: &str,
) -> Vec<(String, Vec<String>)> {
    devices
        .iter()
        .filter(|d| selector.matches(&d.tags))
        .filter_map(|d| {
            let reported = d.reported.as_ref()?;
            (!reported.payload_formats.iter().any(|f| f == format))
                .then(|| (d.id.clone(), reported.payload_formats.clone()))
        })
        .collect()
}

/// A rollout with the live health of its current phase and its device counts.
pub fn rollout_view<S: Store + ?Sized>(
    app: &AppState<S>,
    r: Rollout,
) -> Result<RolloutView, ApiError> {
    let devices: Vec<DeviceRecord> = app
        .records
        .list(Table::Devices, "", usize::MAX)
        .map_err(internal)?;
    let in_phase = devices
        .iter()
        .filter(|d| r.judged_on(&d.id, &d.tags))
        .count() as u64;
    let now = (app.now)();
    let health =
        phase_health(&app.records, &r, in_phase, &reference_of(app, &r), now).map_err(internal)?;
    let selected = devices
        .iter()
        .filter(|d| r.spec.selector.matches(&d.tags))
        .count() as u64;
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
        let mut progress = PhaseProgress {
            phase: i,
            percent: p.percent,
            soak_seconds: p.soak_seconds,
            targeted: 0,
            updated: 0,
            rolled_back: 0,
            healthy: 0,
            reached: i <= r.phase,
        };
        for d in devices
            .iter()
            .filter(|d| r.reaches_at(&d.id, &d.tags, p.percent))
        {
            let model = d
                .reported
                .as_ref()
                .and_then(|rep| rep.models.iter().find(|m| m.name == r.model));
            let on = model.is_some_and(|m| m.active.as_deref() == Some(r.version.as_str()));
            let bad = model.is_some_and(|m| m.bad_versions.contains(&r.version));
            progress.targeted += 1;
            progress.updated += u64::from(on);
            progress.rolled_back += u64::from(bad);
            progress.healthy += u64::from(on && !bad && reporting.devices.contains(&d.id));
        }
        phases.push(progress);
    }
    Ok(RolloutView {
        selected_devices: selected,
        phase_devices: health.devices,
        health,
        phases_detail: phases,
        rollout: r,
    })
}

/// Applies an operator action to rollout `id` and stores it.
async fn act<S: Store + ?Sized + 'static>(
    app: App<S>,
    who: String,
    id: String,
    action: fn(&mut Rollout, u64, &str) -> Result<edge_protocol::rest::Transition, String>,
) -> Response {
    blocking(move || {
        // guarded on the record as read: a replica's engine step that moved the rollout in
        // between makes this read it again rather than undo that step
        for _ in 0..8 {
            let read = app
                .records
                .store()
                .get(Table::Rollouts, &id)
                .map_err(internal)?
                .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no rollout '{id}'")))?;
            let mut r: Rollout =
                crate::store::decode(Table::Rollouts, &id, &read).map_err(internal)?;
            action(&mut r, (app.now)(), &who).map_err(|e| error(StatusCode::CONFLICT, e))?;
            match app.records.store().write(vec![
                crate::store::Write::Expect(Table::Rollouts, id.clone(), Some(read)),
                crate::store::put(Table::Rollouts, &id, &r),
            ]) {
                Ok(()) => return Ok(Json(r)),
                Err(crate::store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(internal(e)),
            }
        }
        Err(error(
            StatusCode::CONFLICT,
            format!("rollout '{id}' keeps changing under this action; try again"),
        ))
    })
    .await
}

/// Pause a rollout.
///
/// Devices keep what they have. Access: operator.
#[utoipa::path(post, path = "/v1/rollouts/{id}/pause", tag = "rollouts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Rollout id")),
    responses((status = 200, body = Rollout), (status = "4XX", body = ErrorBody)))]
pub async fn pause_rollout<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    who: Authorized<Operator>,
    Path(id): Path<String>,
) -> Response {
    act(app, who.token.name, id, Rollout::pause).await
}

/// Resume a paused rollout.
///
/// The phase's soak starts over. Access: operator.
#[utoipa::path(post, path = "/v1/rollouts/{id}/resume", tag = "rollouts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Rollout id")),
    responses((status = 200, body = Rollout), (status = "4XX", body = ErrorBody)))]
pub async fn resume_rollout<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    who: Authorized<Operator>,
    Path(id): Path<String>,
) -> Response {
    act(app, who.token.name, id, Rollout::resume).await
}

/// Abort a rollout.
///
/// Stopped for good; devices keep what they have. Access: operator.
#[utoipa::path(post, path = "/v1/rollouts/{id}/abort", tag = "rollouts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Rollout id")),
    responses((status = 200, body = Rollout), (status = "4XX", body = ErrorBody)))]
pub async fn abort_rollout<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    who: Authorized<Operator>,
    Path(id): Path<String>,
) -> Response {
    act(app, who.token.name, id, Rollout::abort).await
}

/// Roll a rollout back.
///
/// Its devices get their previous version. Access: operator.
#[utoipa::path(post, path = "/v1/rollouts/{id}/rollback", tag = "rollouts", security(("bearer" = [])),
    params(("id" = String, Path, description = "Rollout id")),
    responses((status = 200, body = Rollout), (status = "4XX", body = ErrorBody)))]
pub async fn rollback_rollout<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    who: Authorized<Operator>,
    Path(id): Path<String>,
) -> Response {
    act(app, who.token.name, id, Rollout::rollback).await
}
