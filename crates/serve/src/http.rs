//! What every route shares: JSON errors that carry the request's id, the request id itself, the bearer
//! token check and the per-request metrics.

use crate::metrics::RequestLabels;
use crate::routes::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The header a request's id travels in, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// A request's id: the client's `x-request-id` when it sent a usable one, or one the server made.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// An error answer: `{"error": ..., "id": ...}` with a status.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
    /// Seconds to wait before retrying (503 only).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Ids made by the server: a per-process prefix from the start time, then a counter.
fn next_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        format!("{:08x}", (nanos ^ (nanos >> 32)) as u32)
    });
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A client id is kept when it is 1 to 128 visible ASCII characters.
fn usable_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let visible = text.bytes().all(|b| b.is_ascii_graphic());
    (visible && (1..=128).contains(&text.len())).then(|| text.to_string())
}

/// Gives every request an id (in its extensions and in the answer's `x-request-id`), checks the bearer
/// token where one is required, and records the request in the metrics. Errors answered here carry the
/// id in their JSON too.
pub async fn around(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(usable_id)
        .unwrap_or_else(next_id);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other".to_string(), |p| p.as_str().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = if needs_token(&route) && !authorised(&state, &request) {
        // The body is read (and dropped) first, so that a client still sending it gets the answer
        // rather than a broken connection.
        let _ = axum::body::to_bytes(request.into_body(), state.config.max_body).await;
        let e = ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        with_id(e.into_response(), &id).await
    } else {
        let response = match tokio::time::timeout(state.config.timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("no answer within {} ms", state.config.timeout.as_millis()),
            )
            .into_response(),
        };
        if response.status().is_success() {
            response
        } else {
            with_id(response, &id).await
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    state
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Adds `"id"` to a JSON error body (answers that are not JSON objects are left as they are).
async fn with_id(response: Response, id: &str) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert("id".into(), id.into());
            parts.headers.remove(header::CONTENT_LENGTH);
            serde_json::to_vec(&map).unwrap_or_default()
        }
        // Axum's own rejections (a body over the limit) are plain text: answered as JSON errors.
        _ if !bytes.is_empty() && !parts.headers.get(header::CONTENT_TYPE).is_some_and(is_json) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let message = String::from_utf8_lossy(&bytes).into_owned();
            serde_json::to_vec(&json!({ "error": message, "id": id })).unwrap_or_default()
        }
        _ => bytes.to_vec(),
    };
    Response::from_parts(parts, axum::body::Body::from(body))
}

fn is_json(value: &HeaderValue) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.starts_with("application/json"))
}

/// The page and the health checks are open; everything else needs the token when there is one.
fn needs_token(route: &str) -> bool {
    !matches!(
        route,
        "/" | "/healthz" | "/v2/health/live" | "/v2/health/ready"
    )
}

fn authorised(state: &AppState, request: &Request) -> bool {
    let Some(token) = &state.config.token else {
        return true;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret!", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }

    #[test]
    fn client_ids_are_kept_only_when_visible_ascii_and_short() {
        assert_eq!(
            usable_id(&HeaderValue::from_static("abc-1")),
            Some("abc-1".into())
        );
        assert_eq!(usable_id(&HeaderValue::from_static("a b")), None);
        assert_eq!(
            usable_id(&HeaderValue::from_str(&"x".repeat(129)).unwrap()),
            None
        );
        assert_ne!(next_id(), next_id());
    }

    #[test]
    fn only_the_page_and_health_checks_are_open() {
        assert!(!needs_token("/"));
        assert!(!needs_token("/healthz"));
        assert!(needs_token("/v1/predict"));
        assert!(needs_token("/metrics"));
        assert!(needs_token("other"));
    }
}
