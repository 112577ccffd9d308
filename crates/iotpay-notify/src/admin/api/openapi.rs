//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 description of this API, kept beside the code
//! (`openapi.json`) and checked against the router by the test suite.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// Serves [`DOCUMENT`].
pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
