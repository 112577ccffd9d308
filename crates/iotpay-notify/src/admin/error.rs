//! The one error type of the admin API boundary: each variant is mapped once to a status and to
//! the JSON body `{"error": {"code", "message", "field"?}}`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why an admin API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid `Authorization: Bearer` token.
    #[error("a valid Authorization: Bearer token is required")]
    Unauthorized,
    /// A query parameter, path segment or body field is malformed or unknown.
    #[error("{message}")]
    BadRequest {
        /// The offending field (query parameter, body field or path segment).
        field: Option<String>,
        /// What is wrong with it.
        message: String,
    },
    /// The body is not `application/json`.
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The resource is not in a state that allows the action.
    #[error("{0}")]
    Conflict(String),
    /// The database did not answer (connection lost, pool exhausted, server shutting down).
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database answered with an error: a bug or an input the checks let through. Not
    /// `503`: retrying will not help, and the request must not look like an outage.
    #[error("internal error")]
    Internal(#[source] sqlx::Error),
    /// A refusal made by the HTTP layer before any handler (wrong method, body too large,
    /// request too slow, undecodable path), given the API's error body.
    #[error("{message}")]
    Rejected {
        /// Its status.
        status: StatusCode,
        /// What the layer said.
        message: String,
    },
}

impl ApiError {
    /// A `400` naming `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadRequest { field: Some(field.into()), message: message.into() }
    }

    /// A `400` about the request as a whole.
    pub fn bad(message: impl Into<String>) -> Self {
        ApiError::BadRequest { field: None, message: message.into() }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Rejected { status, .. } => (*status, rejection_code(*status)),
        }
    }
}

/// The `code` of a refusal by the HTTP layer.
fn rejection_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// True when `e` says the database could not be reached or is going away, rather than that it
/// refused this statement.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        // SQLSTATE class 08 (connection exception), 53 (insufficient resources: too many
        // connections, out of memory or disk), 57P01-57P03 (server shutting down or starting).
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("08") || c.starts_with("53") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            ApiError::Unavailable(e)
        } else {
            ApiError::Internal(e)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            ApiError::Unavailable(e) => tracing::warn!(error = %e, "admin API: database unavailable"),
            ApiError::Internal(e) => tracing::error!(error = %e, "admin API: the database refused a statement"),
            _ => {}
        }
        let mut error = json!({ "code": code, "message": self.to_string() });
        if let ApiError::BadRequest { field: Some(f), .. } = &self {
            error["field"] = json!(f);
        }
        let mut response = (status, axum::Json(json!({ "error": error }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Middleware of the whole admin listener: an error answer under `/api/` that is not JSON (made
/// by axum or tower before or around a handler: `405`, `408`, `413`, a path it could not decode)
/// gets the API's error body, so every API error has one shape.
pub async fn api_errors_as_json(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !api || is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    // The layer's own text says what was wrong (e.g. "length limit exceeded"); it is short.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("refused").to_owned() } else { text };
    let mut json = ApiError::Rejected { status, message }.into_response();
    // Keep what the client needs from the original answer (e.g. `Allow` on a 405).
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            json.headers_mut().insert(name, v.clone());
        }
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_failures_are_503() {
        let status = |e: sqlx::Error| ApiError::from(e).status_and_code().0;
        assert_eq!(status(sqlx::Error::PoolTimedOut), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(sqlx::Error::PoolClosed), StatusCode::SERVICE_UNAVAILABLE);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(status(sqlx::Error::Io(refused)), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(sqlx::Error::RowNotFound), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status(sqlx::Error::ColumnNotFound("x".into())), StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// The admin router puts `api_errors_as_json` outside tower-http's `TimeoutLayer` (60 s there):
    /// a request that outlives it under `/api/` gets the API's JSON error, elsewhere the layer's own.
    #[tokio::test]
    async fn a_timeout_under_api_gets_the_api_error_body() {
        use axum::body::Body;
        use tower::ServiceExt as _;
        let slow = || async {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            "late"
        };
        let app = axum::Router::new()
            .route("/api/v1/slow", axum::routing::get(slow))
            .route("/slow", axum::routing::get(slow))
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                std::time::Duration::from_millis(20),
            ))
            .layer(axum::middleware::from_fn(api_errors_as_json));
        let get = |path: &str| axum::http::Request::get(path).body(Body::empty()).unwrap();

        let api = app.clone().oneshot(get("/api/v1/slow")).await.unwrap();
        assert_eq!(api.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(api.headers()[header::CONTENT_TYPE], "application/json");
        let body: serde_json::Value =
            serde_json::from_slice(&axum::body::to_bytes(api.into_body(), 4096).await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "request_timeout", "{body}");

        let page = app.oneshot(get("/slow")).await.unwrap();
        assert_eq!(page.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(page.headers().get(header::CONTENT_TYPE).is_none_or(|v| v != "application/json"));
    }
}
