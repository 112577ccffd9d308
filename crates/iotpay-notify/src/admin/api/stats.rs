//! `GET /api/v1/stats`.

use axum::extract::{RawQuery, State};
use axum::Json;

use super::input;
use crate::admin::error::ApiError;
use crate::admin::AdminState;
use crate::store::admin::{self as queries, Stats};

/// Counts by status, per-endpoint backlog, oldest pending and dead, and the last hour per minute.
pub async fn stats(State(state): State<AdminState>, RawQuery(raw): RawQuery) -> Result<Json<Stats>, ApiError> {
    input::query(raw.as_deref(), &[])?;
    Ok(Json(queries::stats(&state.pool).await?))
}
