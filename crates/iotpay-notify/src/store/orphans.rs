//! Deliveries to endpoints that are no longer configured: list, drop, or move them.
//!
//! The forwarding worker only claims deliveries of `FORWARD_URLS`; a delivery to an endpoint
//! removed from it would stay `pending` (or `dead`) forever without these.

use serde::Serialize;
use sqlx::PgPool;

use super::deliveries::DELIVERIES_CHANNEL;

/// Pending and dead deliveries of one endpoint.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EndpointBacklog {
    /// The endpoint (user-info masked when printed).
    #[serde(serialize_with = "crate::redact::serialize_masked_url")]
    pub endpoint: String,
    /// Deliveries still `pending`.
    pub pending: i64,
    /// Deliveries `dead`.
    pub dead: i64,
}

/// Endpoints with pending or dead deliveries that are not in `configured`.
pub async fn orphans(pool: &PgPool, configured: &[String]) -> Result<Vec<EndpointBacklog>, sqlx::Error> {
    sqlx::query_as(
        "SELECT endpoint,
                count(*) FILTER (WHERE status = 'pending') AS pending,
                count(*) FILTER (WHERE status = 'dead') AS dead
           FROM deliveries
          WHERE status IN ('pending', 'dead') AND NOT (endpoint = ANY($1))
          GROUP BY endpoint ORDER BY endpoint",
    )
    .bind(configured)
    .fetch_all(pool)
    .await
}

/// Every endpoint that has a pending or dead delivery (what redrive, drop and move can act on):
/// the candidates when an operator names an endpoint by its masked form or label.
pub async fn endpoints_with_backlog(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT endpoint FROM deliveries WHERE status IN ('pending', 'dead') ORDER BY endpoint")
        .fetch_all(pool)
        .await
}

/// Marks every pending or dead delivery to `endpoint` as `dropped` (kept for the record, never
/// sent); returns how many.
pub async fn drop_endpoint(pool: &PgPool, endpoint: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE deliveries
            SET status = 'dropped', lease_token = NULL, lease_until = NULL, leased_by = NULL, updated_at = now()
          WHERE endpoint = $1 AND status IN ('pending', 'dead')",
    )
    .bind(endpoint)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// What [`move_endpoint`] did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Moved {
    /// Deliveries re-addressed to the new endpoint, pending and due now.
    pub moved: u64,
    /// Deliveries dropped because their event already has a delivery to the new endpoint.
    pub already_there: u64,
}

/// Re-addresses pending and dead deliveries from `from` to `to`, pending and due now with a fresh
/// schedule, and wakes the workers; one transaction. An event that already has a delivery to `to`
/// keeps that one and its old delivery is dropped (one delivery per event and endpoint).
pub async fn move_endpoint(pool: &PgPool, from: &str, to: &str) -> Result<Moved, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let already_there = sqlx::query(
        "UPDATE deliveries d
            SET status = 'dropped', lease_token = NULL, lease_until = NULL, leased_by = NULL, updated_at = now()
          WHERE d.endpoint = $1 AND d.status IN ('pending', 'dead')
            AND EXISTS (SELECT 1 FROM deliveries o WHERE o.event_id = d.event_id AND o.endpoint = $2)",
    )
    .bind(from)
    .bind(to)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let moved = sqlx::query(
        "UPDATE deliveries
            SET endpoint = $2, status = 'pending', attempts = 0, next_attempt_at = now(), dead_at = NULL,
                lease_token = NULL, lease_until = NULL, leased_by = NULL, updated_at = now()
          WHERE endpoint = $1 AND status IN ('pending', 'dead')",
    )
    .bind(from)
    .bind(to)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved > 0 {
        sqlx::query("SELECT pg_notify($1, '')").bind(DELIVERIES_CHANNEL).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Moved { moved, already_there })
}
