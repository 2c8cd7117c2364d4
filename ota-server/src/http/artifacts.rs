//! Artifacts: bundle downloads for devices and operators, with byte ranges (resumed downloads
//! on flaky links) and ETags. A device may fetch only what its desired state names.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use edge_protocol::rest::ApiError as ErrorBody;

use super::{caller, error, internal, sha_param, ApiError, App, Caller};
use crate::auth::Action;
use crate::engine::DesiredRecord;
use crate::store::{Store, Table};

/// The artifact route (device-facing, rate-limited by the caller).
pub fn routes<S: Store + ?Sized + 'static>() -> Router<App<S>> {
    Router::new().route("/v1/artifacts/{sha}", get(artifact::<S>))
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

/// Download a bundle.
///
/// The `.efb` bytes, with `Range` (206) and `ETag` / `If-None-Match` (304). A device gets only
/// bundles in its desired state. Access: viewer, or a device.
#[utoipa::path(get, path = "/v1/artifacts/{sha}", tag = "artifacts", security(("bearer" = [])),
    params(("sha" = String, Path, description = "sha256:<64 hex> or <64 hex>"),
           ("Range" = Option<String>, Header, description = "bytes=N- or bytes=N-M")),
    responses((status = 200, body = Vec<u8>, content_type = "application/octet-stream"),
              (status = 206, body = Vec<u8>, content_type = "application/octet-stream"),
              (status = 304, description = "Not modified (If-None-Match)"),
              (status = "4XX", body = ErrorBody)))]
pub async fn artifact<S: Store + ?Sized + 'static>(
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
                // a device fetches only what it is told to run (a model or a shadow)
                let desired: Option<DesiredRecord> =
                    app2.records.get(Table::Desired, &d.id).map_err(internal)?;
                let wanted = |r: &DesiredRecord| {
                    let shadows = r.shadows.iter().map(|s| &s.target);
                    r.models.iter().chain(shadows).any(|m| m.sha256 == sha)
                };
                if !desired.is_some_and(|r| wanted(&r)) {
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
                    Json(ErrorBody {
                        error: format!("range '{r}' does not fit {len} bytes"),
                    }),
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
