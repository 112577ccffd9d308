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
    /// The database did not answer.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
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
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Unavailable(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Unavailable(e) = &self {
            tracing::warn!(error = %e, "admin API: database unavailable");
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
