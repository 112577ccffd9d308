//! The forwarding outbox: deliveries created with the confirmation that requires them.

use sqlx::PgConnection;

/// Channel notified when deliveries are enqueued, so delivery workers wake at once.
pub const DELIVERIES_CHANNEL: &str = "iotpay_deliveries";

/// Creates one pending delivery of `event_id` per endpoint (idempotent), inside the caller's
/// transaction, and wakes delivery workers when it commits. Returns how many were created.
pub async fn enqueue(conn: &mut PgConnection, event_id: &str, endpoints: &[String]) -> Result<u64, sqlx::Error> {
    if endpoints.is_empty() {
        return Ok(0);
    }
    let created = sqlx::query(
        "INSERT INTO deliveries (event_id, endpoint)
         SELECT $1, endpoint FROM unnest($2::text[]) AS endpoint
         ON CONFLICT ON CONSTRAINT deliveries_event_endpoint DO NOTHING",
    )
    .bind(event_id)
    .bind(endpoints)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if created > 0 {
        sqlx::query("SELECT pg_notify($1, $2)").bind(DELIVERIES_CHANNEL).bind(event_id).execute(&mut *conn).await?;
    }
    Ok(created)
}
