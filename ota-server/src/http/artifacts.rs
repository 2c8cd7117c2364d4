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
    // only the requested part is read, a chunk at a time
    let count = if len == 0 { 0 } else { end + 1 - start };
    let body = file_body(path, start, count);
    let length = [(header::CONTENT_LENGTH, count.to_string())];
    match range {
        None => (StatusCode::OK, base, length, body).into_response(),
        Some((start, end)) => (
            StatusCode::PARTIAL_CONTENT,
            base,
            length,
            [(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"))],
            body,
        )
            .into_response(),
    }
}

/// Bytes of an artifact read at a time: a download in flight holds one chunk, not the bundle
/// (bundles run to hundreds of MB, and a rollout phase opens thousands of downloads at once).
const CHUNK: u64 = 64 * 1024;

/// `count` bytes of the file at `path` from `start`, read a chunk at a time as the client takes
/// them. An artifact is immutable once stored (content-addressed, renamed into place), so each
/// chunk may open it again. A read error ends the body early: the client's digest check fails
/// and it downloads again.
fn file_body(path: std::path::PathBuf, start: u64, count: u64) -> Body {
    let chunks =
        futures_util::stream::unfold((path, start, count), |(path, at, left)| async move {
            if left == 0 {
                return None;
            }
            let n = left.min(CHUNK);
            let file = path.clone();
            let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                use std::io::{Read, Seek, SeekFrom};
                let mut f = std::fs::File::open(&file)?;
                f.seek(SeekFrom::Start(at))?;
                let mut buf = vec![0; n as usize];
                f.read_exact(&mut buf)?;
                Ok(buf)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let left = if read.is_ok() { left - n } else { 0 };
            Some((read, (path, at + n, left)))
        });
    Body::from_stream(chunks)
}

#[cfg(test)]
mod tests {
    use super::{file_body, parse_range, CHUNK};

    #[tokio::test]
    async fn artifacts_stream_in_chunks_whole_or_in_part() {
        let dir = std::env::temp_dir().join(format!("edgefleet-artifact-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.efb");
        let bytes: Vec<u8> = (0..(3 * CHUNK + 123))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        let read = |start: u64, count: u64| {
            let body = file_body(path.clone(), start, count);
            async move { axum::body::to_bytes(body, usize::MAX).await }
        };
        assert_eq!(read(0, bytes.len() as u64).await.unwrap(), bytes);
        let (start, count) = (CHUNK - 5, CHUNK + 10);
        let part = read(start, count).await.unwrap();
        assert_eq!(part, bytes[start as usize..(start + count) as usize]);
        assert!(read(0, 0).await.unwrap().is_empty());
        std::fs::remove_file(&path).unwrap();
        assert!(
            read(0, 10).await.is_err(),
            "a read error ends the body with an error"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
