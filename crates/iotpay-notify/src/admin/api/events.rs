//! `GET /api/v1/events`, `GET /api/v1/events/{event_id}`, `POST /api/v1/events/{event_id}/recheck`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::input;
use crate::admin::error::ApiError;
use crate::admin::AdminState;
use crate::store::admin::{self as queries, Cursor, EventFilter, ListedEvent, Recheck};
use crate::store::{ops, EventStatus};

/// API versions an event can have.
pub const API_VERSIONS: &[&str] = &["v1", "v2", "v3"];
/// Default and largest page.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

/// A page of the event list and where the next one starts.
#[derive(Debug, serde::Serialize)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<ListedEvent>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The list's query: filters, `limit`, `cursor`.
pub struct ListQuery {
    /// What to match.
    pub filter: EventFilter,
    /// Start after this position.
    pub cursor: Option<Cursor>,
    /// Page size.
    pub limit: i64,
}

impl ListQuery {
    /// Reads and validates the query string.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let q = input::query(
            raw,
            &[
                "status",
                "event_type",
                "api_version",
                "mch_id",
                "mch_order_no",
                "pay_order_id",
                "id",
                "created_since",
                "created_until",
                "limit",
                "cursor",
            ],
        )?;
        let text = |k: &str| q.get(k).map(|v| input::text(k, v)).transpose();
        let status = q
            .get("status")
            .map(|s| {
                EventStatus::parse(s)
                    .ok_or_else(|| ApiError::field("status", format!("expected one of {}", EventStatus::choices())))
            })
            .transpose()?;
        let api_version = q.get("api_version").cloned();
        if let Some(v) = &api_version {
            if !API_VERSIONS.contains(&v.as_str()) {
                return Err(ApiError::field("api_version", format!("expected one of {}", API_VERSIONS.join(", "))));
            }
        }
        let filter = EventFilter {
            status,
            event_type: text("event_type")?,
            api_version,
            mch_id: text("mch_id")?,
            mch_order_no: text("mch_order_no")?,
            pay_order_id: text("pay_order_id")?,
            any_id: text("id")?,
            created_since: q.get("created_since").map(|v| input::time("created_since", v)).transpose()?,
            created_until: q.get("created_until").map(|v| input::time("created_until", v)).transpose()?,
        };
        if let (Some(since), Some(until)) = (filter.created_since, filter.created_until) {
            if since > until {
                return Err(ApiError::field("created_until", "must not be before created_since"));
            }
        }
        let limit = q.get("limit").map(|v| input::number("limit", v, 1, MAX_LIMIT)).transpose()?;
        let cursor = q.get("cursor").map(|v| input::decode_cursor("cursor", v)).transpose()?;
        Ok(ListQuery { filter, cursor, limit: limit.unwrap_or(DEFAULT_LIMIT) })
    }

    /// Runs the query: one page and the cursor of the next.
    pub async fn page(&self, state: &AdminState) -> Result<EventPage, ApiError> {
        let mut events = queries::list_events(&state.pool, &self.filter, self.cursor.as_ref(), self.limit).await?;
        let more = events.len() as i64 > self.limit;
        events.truncate(self.limit as usize);
        let next_cursor = match (more, events.last()) {
            (true, Some(last)) => Some(input::encode_cursor(&Cursor {
                created_at: last.event.created_at,
                event_id: last.event.event_id.clone(),
            })),
            _ => None,
        };
        Ok(EventPage { events, next_cursor })
    }
}

/// `GET /api/v1/events`: filtered, newest first, keyset-paginated.
pub async fn list(State(state): State<AdminState>, RawQuery(raw): RawQuery) -> Result<Json<EventPage>, ApiError> {
    let query = ListQuery::parse(raw.as_deref())?;
    Ok(Json(query.page(&state).await?))
}

/// `GET /api/v1/events/{event_id}`: the document of `events show --json`.
pub async fn show(
    State(state): State<AdminState>,
    Path(event_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    input::query(raw.as_deref(), &[])?;
    let event_id = input::event_id("event_id", &event_id)?;
    let detail = ops::show_event(&state.pool, &event_id).await?;
    let detail = detail.ok_or_else(|| ApiError::NotFound(format!("no event {event_id}")))?;
    Ok(Json(detail.document()))
}

/// `POST /api/v1/events/{event_id}/recheck`: an `unconfirmed` event goes back to `pending` for
/// one more check; `409` for any other status.
pub async fn recheck(
    State(state): State<AdminState>,
    Path(event_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    input::query(raw.as_deref(), &[])?;
    let event_id = input::event_id("event_id", &event_id)?;
    input::json_object(&headers, &body, &[], true)?;
    match queries::recheck(&state.pool, &event_id).await? {
        Recheck::Queued => {
            tracing::info!(event_id, "operator re-check: unconfirmed event back to pending");
            Ok(Json(json!({ "event_id": event_id, "status": EventStatus::Pending })))
        }
        Recheck::Unknown => Err(ApiError::NotFound(format!("no event {event_id}"))),
        Recheck::NotUnconfirmed(status) => {
            Err(ApiError::Conflict(format!("event {event_id} is {status}; only unconfirmed events are re-checked")))
        }
    }
}
