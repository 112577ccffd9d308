//! Retention of the append-only tables: `notifications` (every verified notification, repeats
//! included) and `delivery_attempts` (every HTTP attempt). Only rows of final events go: an
//! event confirmed or rejected whose deliveries are all delivered or dropped. A pending or
//! unconfirmed event, or one with a pending or dead delivery (a redrive may still come), keeps
//! its whole history however old. `payment_events` and `deliveries` are never deleted.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Rows deleted per statement, so that no transaction holds locks on a large table for long.
const BATCH: i64 = 5_000;

/// The condition "event `$ev` is final", for the statements below.
const FINAL_EVENT: &str = "e.status IN ('confirmed', 'rejected')
    AND NOT EXISTS (SELECT 1 FROM deliveries open
                     WHERE open.event_id = e.event_id AND open.status IN ('pending', 'dead'))";

/// What a prune removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    /// Rows of `notifications`.
    pub notifications: i64,
    /// Rows of `delivery_attempts`.
    pub delivery_attempts: i64,
}

fn notifications_where() -> String {
    format!(
        "FROM notifications n JOIN payment_events e ON e.event_id = n.event_id
          WHERE n.received_at < $1 AND {FINAL_EVENT}"
    )
}

fn attempts_where() -> String {
    format!(
        "FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
              JOIN payment_events e ON e.event_id = d.event_id
          WHERE a.started_at < $1 AND {FINAL_EVENT}"
    )
}

/// Counts what [`prune`] would delete, deleting nothing.
pub async fn count(pool: &PgPool, older_than: DateTime<Utc>) -> Result<Pruned, sqlx::Error> {
    let (notifications,): (i64,) =
        sqlx::query_as(&format!("SELECT count(*) {}", notifications_where())).bind(older_than).fetch_one(pool).await?;
    let (delivery_attempts,): (i64,) =
        sqlx::query_as(&format!("SELECT count(*) {}", attempts_where())).bind(older_than).fetch_one(pool).await?;
    Ok(Pruned { notifications, delivery_attempts })
}

/// Deletes the notifications received and the delivery attempts started before `older_than`
/// that belong to final events, in batches; returns how many rows went.
pub async fn prune(pool: &PgPool, older_than: DateTime<Utc>) -> Result<Pruned, sqlx::Error> {
    let mut pruned = Pruned::default();
    let notifications =
        format!("DELETE FROM notifications WHERE id IN (SELECT n.id {} ORDER BY n.id LIMIT $2)", notifications_where());
    loop {
        let n = sqlx::query(&notifications).bind(older_than).bind(BATCH).execute(pool).await?.rows_affected();
        pruned.notifications += n as i64;
        if n < BATCH as u64 {
            break;
        }
    }
    let attempts =
        format!("DELETE FROM delivery_attempts WHERE id IN (SELECT a.id {} ORDER BY a.id LIMIT $2)", attempts_where());
    loop {
        let n = sqlx::query(&attempts).bind(older_than).bind(BATCH).execute(pool).await?.rows_affected();
        pruned.delivery_attempts += n as i64;
        if n < BATCH as u64 {
            break;
        }
    }
    Ok(pruned)
}
