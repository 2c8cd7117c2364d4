//! Devices: enrollment (public, rate-limited), the device list, one device with its recent
//! telemetry, and its reconcile event history.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use edge_protocol::enroll::{EnrollRequest, EnrollResponse};
use edge_protocol::rest::{
    ApiError as ErrorBody, DeviceEvents, DeviceList, DeviceView, UplinkCounters,
};

use super::{
    blocking, body_or_error, error, internal, json_body, require_reader_or_device, App, Authorized,
    Viewer,
};
use crate::devices::{self, DeviceRecord, EnrollError};
use crate::ingest::EventRecord;
use crate::store::{Store, Table};

/// The device-facing route (rate-limited by the caller).
pub fn device_routes<S: Store + ?Sized + 'static>() -> Router<App<S>> {
    Router::new().route("/v1/devices/enroll", post(enroll::<S>))
}

/// The device routes.
pub fn routes<S: Store + ?Sized + 'static>() -> Router<App<S>> {
    Router::new()
        .route("/v1/devices", get(list_devices::<S>))
        .route("/v1/devices/{id}", get(show_device::<S>))
        .route("/v1/devices/{id}/events", get(device_events::<S>))
}

/// A device as the API shows it; `recent` only on its own page.
pub fn device_view(d: &DeviceRecord, with_recent: bool) -> DeviceView {
    DeviceView {
        id: d.id.clone(),
        tags: d.tags.clone(),
        public_key: d.public_key.clone(),
        agent_version: d.agent_version.clone(),
        enrolled_at: d.enrolled_at,
        last_seen: d.last_seen,
        online: d.online,
        reported: d.reported.clone(),
        uplink: UplinkCounters {
            messages: d.messages,
            last_seq: d.last_seq,
            duplicates: d.duplicates,
            requests: d.requests,
        },
        recent: with_recent.then(|| d.recent.clone()),
    }
}

/// Enroll a device.
///
/// With an enrollment token or a pre-authorized key, and a proof of key possession; returns
/// its device token. Access: public (rate-limited per address).
#[utoipa::path(post, path = "/v1/devices/enroll", tag = "devices",
    request_body = EnrollRequest,
    responses((status = 200, body = EnrollResponse), (status = "4XX", body = ErrorBody)))]
pub async fn enroll<S: Store + ?Sized + 'static>(
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

/// List devices.
///
/// Tags, online, last seen, reported state, uplink counters (messages, duplicates refused,
/// predictions counted). Access: viewer.
#[utoipa::path(get, path = "/v1/devices", tag = "devices", security(("bearer" = [])),
    responses((status = 200, body = DeviceList), (status = "4XX", body = ErrorBody)))]
pub async fn list_devices<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    _: Authorized<Viewer>,
) -> Response {
    blocking(move || {
        let all: Vec<DeviceRecord> = app
            .records
            .list(Table::Devices, "", usize::MAX)
            .map_err(internal)?;
        Ok(Json(DeviceList {
            devices: all.iter().map(|d| device_view(d, false)).collect(),
        }))
    })
    .await
}

/// One device.
///
/// As in the list, plus its own telemetry per minute, the last 30 minutes it reported.
/// Access: viewer, or the device itself.
#[utoipa::path(get, path = "/v1/devices/{id}", tag = "devices", security(("bearer" = [])),
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = "4XX", body = ErrorBody)))]
pub async fn show_device<S: Store + ?Sized + 'static>(
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
        Ok(Json(device_view(&d, true)))
    })
    .await
}

/// A device's reconcile event history, oldest first.
///
/// Access: viewer, or the device itself.
#[utoipa::path(get, path = "/v1/devices/{id}/events", tag = "devices", security(("bearer" = [])),
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceEvents), (status = "4XX", body = ErrorBody)))]
pub async fn device_events<S: Store + ?Sized + 'static>(
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
        Ok(Json(DeviceEvents { device: id, events }))
    })
    .await
}
