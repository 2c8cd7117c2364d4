//! Operations: Prometheus metrics, the health check, this API's OpenAPI document, and the
//! rate limit of the device-facing routes.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use edge_protocol::rest::{ApiError as ErrorBody, Healthz};

use super::{blocking, internal, App, Authorized, Viewer};
use crate::devices::DeviceRecord;
use crate::metrics::{gauge, Metrics};
use crate::rollout::Rollout;
use crate::store::{Store, Table};

/// The operations routes.
pub fn routes<S: Store + ?Sized + 'static>() -> Router<App<S>> {
    Router::new()
        .route("/metrics", get(metrics::<S>))
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(healthz::<S>))
}

/// This document.
///
/// The OpenAPI 3.1 description of every route, derived from the handlers and the
/// `edge_protocol::rest` types. Access: public.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "ops",
    responses((status = 200, body = Object, description = "An OpenAPI 3.1 document")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi::document())
}

/// Rate limit of the device-facing routes, per peer address (429 with Retry-After).
pub async fn rate_limit<S: Store + ?Sized + 'static>(
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
                Json(ErrorBody {
                    error: format!("too many requests from {peer}; retry in {secs} s"),
                }),
            )
                .into_response()
        }
    }
}

/// Liveness, store and broker connection.
///
/// 503 while the store does not answer. Access: public.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, body = Healthz), (status = 503, body = Healthz)))]
pub async fn healthz<S: Store + ?Sized + 'static>(State(app): State<App<S>>) -> Response {
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
        Json(Healthz {
            status: if store_ok { "ok" } else { "store unavailable" }.to_string(),
            store: store_ok,
            broker_connected: broker,
            engine_leader: app.engine_leader.as_ref().map(|(f, _)| f()),
            replica: app.engine_leader.as_ref().map(|(_, r)| r.clone()),
        }),
    )
        .into_response()
}

/// Prometheus metrics.
///
/// Text exposition format: API and ingest counters, devices, devices online, rollouts by
/// status. Access: viewer.
#[utoipa::path(get, path = "/metrics", tag = "ops", security(("bearer" = [])),
    responses((status = 200, body = String, content_type = "text/plain; version=0.0.4"),
              (status = "4XX", body = ErrorBody)))]
pub async fn metrics<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    _: Authorized<Viewer>,
) -> Response {
    blocking(move || {
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
