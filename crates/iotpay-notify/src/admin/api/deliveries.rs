//! `POST /api/v1/deliveries/redrive`.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Map, Value};

use super::input;
use crate::admin::error::ApiError;
use crate::admin::AdminState;
use crate::forward::worker::endpoint_label;
use crate::redact;
use crate::store::ops::{self, RedriveFilter};
use crate::store::orphans;

/// Which deliveries to redrive, as validated from the body. (Not `Debug`: an endpoint URL may
/// carry a password and must not reach a log line by accident.)
#[derive(Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every delivery of this event.
    Event(String),
    /// Every delivery to this endpoint URL.
    Endpoint(String),
    /// Every delivery.
    All,
}

/// Reads `{"event_id"} | {"endpoint"} | {"all": true}` and the optional `include_pending`.
pub fn parse_body(body: &Map<String, Value>) -> Result<(Selector, bool), ApiError> {
    let include_pending = match body.get("include_pending") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::field("include_pending", "expected true or false")),
    };
    let given: Vec<&str> = ["event_id", "endpoint", "all"].into_iter().filter(|k| body.contains_key(*k)).collect();
    let selector =
        match given.as_slice() {
            ["event_id"] => match &body["event_id"] {
                Value::String(s) => Selector::Event(input::event_id("event_id", s)?),
                _ => return Err(ApiError::field("event_id", "expected a string")),
            },
            ["endpoint"] => match &body["endpoint"] {
                Value::String(s) if !s.is_empty() && s.len() <= 2048 && !s.chars().any(char::is_control) => {
                    Selector::Endpoint(s.clone())
                }
                _ => return Err(ApiError::field(
                    "endpoint",
                    "expected the endpoint URL as configured in FORWARD_URLS, or its masked form as this API shows it",
                )),
            },
            ["all"] => match &body["all"] {
                Value::Bool(true) => Selector::All,
                _ => return Err(ApiError::field("all", "expected true")),
            },
            _ => return Err(ApiError::bad("give exactly one of event_id, endpoint or all")),
        };
    Ok((selector, include_pending))
}

/// Dead deliveries (and with `include_pending`, idle pending ones) of the selection back in the
/// queue, due now; answers `{"redriven": [...]}`.
pub async fn redrive(
    State(state): State<AdminState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    input::query(raw.as_deref(), &[])?;
    let body = input::json_object(&headers, &body, &["event_id", "endpoint", "all", "include_pending"], false)?;
    let (selector, include_pending) = parse_body(&body)?;
    // Every answer of this API masks endpoint passwords, so a script may send back what it was
    // shown: resolved to the one stored endpoint it names.
    let endpoint = match &selector {
        Selector::Endpoint(given) => {
            let known = orphans::endpoints_with_backlog(&state.pool).await?;
            let found =
                redact::resolve_endpoint(given, &known).map_err(|e| ApiError::field("endpoint", e.to_string()))?;
            Some(found.unwrap_or(given).to_owned())
        }
        _ => None,
    };
    let filter = match &selector {
        Selector::Event(id) => RedriveFilter { event_id: Some(id), include_pending, ..Default::default() },
        Selector::Endpoint(_) => RedriveFilter { endpoint: endpoint.as_deref(), include_pending, ..Default::default() },
        Selector::All => RedriveFilter { include_pending, ..Default::default() },
    };
    let rows = ops::redrive_with(&state.pool, filter).await?;
    // The label, never the URL: it may carry a password.
    let target = match &selector {
        Selector::Event(id) => id.clone(),
        Selector::Endpoint(_) => endpoint_label(endpoint.as_deref().unwrap_or_default()),
        Selector::All => "all".to_owned(),
    };
    tracing::info!(target, include_pending, redriven = rows.len(), "operator redrive");
    Ok(Json(json!({ "redriven": rows })))
}
