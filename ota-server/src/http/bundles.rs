//! Bundles: upload (verified against the trust root before it is stored), list, show (with the
//! signed manifest and the rollouts that shipped it), delete.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use edge_protocol::rest::{ApiError as ErrorBody, Bundle, BundleList, BundleView, RolloutRef};

use super::{
    blocking, body_or_error, error, internal, sha_param, App, Authorized, Operator, Viewer,
};
use crate::bundles::BundleError;
use crate::rollout::Rollout;
use crate::store::{Store, Table};

/// The bundle routes; uploads may be up to `max_bundle_bytes`.
pub fn routes<S: Store + ?Sized + 'static>(max_bundle_bytes: usize) -> Router<App<S>> {
    Router::new()
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
}

/// The rollouts that ship bundle `sha` (hex).
fn rollouts_of<S: Store + ?Sized>(
    app: &super::AppState<S>,
    sha: &str,
) -> Result<Vec<Rollout>, super::ApiError> {
    let all: Vec<Rollout> = app
        .records
        .list(Table::Rollouts, "", usize::MAX)
        .map_err(internal)?;
    Ok(all
        .into_iter()
        .filter(|r| r.spec.bundle.trim_start_matches("sha256:") == sha)
        .collect())
}

/// Upload a bundle.
///
/// The `.efb` bytes; verified against the trust root (signatures, threshold, sizes, digest)
/// before anything is stored. Access: operator.
#[utoipa::path(post, path = "/v1/bundles", tag = "bundles", security(("bearer" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
                 description = "A signed bundle (.efb), as `edgectl pack` writes it"),
    responses((status = 201, body = Bundle), (status = "4XX", body = ErrorBody)))]
pub async fn upload_bundle<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    who: Authorized<Operator>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    blocking(move || {
        let body = body_or_error(body)?;
        app.bundles
            .upload(&body, &app.trust, &who.token.name, (app.now)())
            .map(|r| (StatusCode::CREATED, Json(r)))
            .map_err(|e| match e {
                BundleError::Refused(_) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
                BundleError::TooLarge { .. } => error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
                e => internal(e),
            })
    })
    .await
}

/// List bundles.
///
/// Access: viewer.
#[utoipa::path(get, path = "/v1/bundles", tag = "bundles", security(("bearer" = [])),
    responses((status = 200, body = BundleList), (status = "4XX", body = ErrorBody)))]
pub async fn list_bundles<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    _: Authorized<Viewer>,
) -> Response {
    blocking(move || {
        Ok(Json(BundleList {
            bundles: app.bundles.list().map_err(internal)?,
        }))
    })
    .await
}

/// A bundle.
///
/// Its record, the signed manifest (inputs, output, self-test, quantization, reference
/// statistics) and the rollouts that used it. Access: viewer.
#[utoipa::path(get, path = "/v1/bundles/{sha}", tag = "bundles", security(("bearer" = [])),
    params(("sha" = String, Path, description = "sha256:<64 hex> or <64 hex>")),
    responses((status = 200, body = BundleView), (status = "4XX", body = ErrorBody)))]
pub async fn show_bundle<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    _: Authorized<Viewer>,
    Path(sha): Path<String>,
) -> Response {
    blocking(move || {
        let sha = sha_param(&sha)?;
        let bundle = app
            .bundles
            .get(&sha)
            .map_err(internal)?
            .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no bundle sha256:{sha}")))?;
        let manifest = app
            .bundles
            .manifest(&sha)
            .map(|m| serde_json::to_value(&m))
            .transpose()
            .map_err(internal)?;
        let rollouts = rollouts_of(&app, &sha)?
            .into_iter()
            .map(|r| RolloutRef {
                id: r.id,
                status: r.status,
                selector: r.spec.selector,
            })
            .collect();
        Ok(Json(BundleView {
            bundle,
            manifest,
            rollouts,
        }))
    })
    .await
}

/// Delete a bundle no live rollout uses.
///
/// Access: operator.
#[utoipa::path(delete, path = "/v1/bundles/{sha}", tag = "bundles", security(("bearer" = [])),
    params(("sha" = String, Path, description = "sha256:<64 hex> or <64 hex>")),
    responses((status = 204, description = "Deleted"), (status = "4XX", body = ErrorBody)))]
pub async fn delete_bundle<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    _: Authorized<Operator>,
    Path(sha): Path<String>,
) -> Response {
    blocking(move || {
        let sha = sha_param(&sha)?;
        let used_by = rollouts_of(&app, &sha)?
            .into_iter()
            .find(|r| !r.status.is_final())
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
