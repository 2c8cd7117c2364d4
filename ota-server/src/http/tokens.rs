//! Tokens: who the caller is, API tokens with a role, enrollment tokens for devices. Secrets are
//! shown once, in the answer that creates them.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use edge_protocol::rest::{
    ApiError as ErrorBody, EnrollmentTokenCreated, NewEnrollmentToken, NewToken, TokenCreated,
    Whoami,
};

use super::{blocking, body_or_error, internal, json_body, Admin, App, Authorized, Viewer};
use crate::auth;
use crate::devices;
use crate::store::Store;

/// The token routes.
pub fn routes<S: Store + ?Sized + 'static>() -> Router<App<S>> {
    Router::new()
        .route("/v1/whoami", get(whoami::<S>))
        .route("/v1/tokens", post(create_token::<S>))
        .route("/v1/enrollment-tokens", post(create_enrollment_token::<S>))
}

/// The caller's token name, role and what it may do.
///
/// Access: viewer.
#[utoipa::path(get, path = "/v1/whoami", tag = "tokens", security(("bearer" = [])),
    responses((status = 200, body = Whoami), (status = "4XX", body = ErrorBody)))]
pub async fn whoami<S: Store + ?Sized + 'static>(who: Authorized<Viewer>) -> Json<Whoami> {
    let t = who.token;
    Json(Whoami {
        name: t.name,
        role: t.role,
        may: t.role.permissions(),
    })
}

/// Create an API token with a role.
///
/// Access: admin.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", security(("bearer" = [])),
    request_body = NewToken,
    responses((status = 201, body = TokenCreated), (status = "4XX", body = ErrorBody)))]
pub async fn create_token<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    _: Authorized<Admin>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    blocking(move || {
        let body = body_or_error(body)?;
        let req: NewToken = json_body(&body)?;
        let (token, record) =
            auth::create_token(&app.records, &req.name, req.role, (app.now)()).map_err(internal)?;
        Ok((
            StatusCode::CREATED,
            Json(TokenCreated {
                token,
                name: record.name,
                role: record.role,
            }),
        ))
    })
    .await
}

/// Create an enrollment token.
///
/// How many devices may enroll with it, and the tags they get. Access: admin.
#[utoipa::path(post, path = "/v1/enrollment-tokens", tag = "tokens", security(("bearer" = [])),
    request_body = NewEnrollmentToken,
    responses((status = 201, body = EnrollmentTokenCreated), (status = "4XX", body = ErrorBody)))]
pub async fn create_enrollment_token<S: Store + ?Sized + 'static>(
    State(app): State<App<S>>,
    _: Authorized<Admin>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    blocking(move || {
        let body = body_or_error(body)?;
        let req: NewEnrollmentToken = json_body(&body)?;
        let token = devices::create_enrollment_token(&app.records, &req.name, req.uses, req.tags)
            .map_err(internal)?;
        Ok((
            StatusCode::CREATED,
            Json(EnrollmentTokenCreated {
                token,
                name: req.name,
                uses: req.uses,
            }),
        ))
    })
    .await
}
