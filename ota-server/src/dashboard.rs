//! The fleet dashboard at `/`: one HTML page, one script and one stylesheet, compiled into the
//! binary (fleets are often air-gapped: nothing is loaded from anywhere else, and the
//! Content-Security-Policy says so to the browser). The page is a small single-page app over
//! the same `/v1` API as `edgectl`, with the caller's API token; see `dashboard/app.js`.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/app.js");
const STYLE: &str = include_str!("../dashboard/app.css");

/// Only this origin, for everything; no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The fleet dashboard.
///
/// One self-contained HTML page (with `/ui/app.js` and `/ui/app.css`); sign in with an API
/// token. Access: public (the page calls the API with the token).
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 200, body = String, content_type = "text/html")))]
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// The dashboard's routes (no state: the page calls the API itself).
pub fn routes() -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}
