//! The confirmation queue over `payment_events`: claim due pending events with a lease, then
//! record one decision per check, guarded by the lease token.
//!
//! A claim is its own short transaction; the IOTPay query happens after it commits, with no row
//! lock held; the decision is a second transaction that applies only while the claim's token is
//! still on the row, so a worker whose lease expired (and whose event was re-claimed) cannot
//! overwrite a later decision.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::{PgPool, Row};

use super::group_commit::BatchWrite;
use super::row::event_columns;
use super::{deliveries, EventStatus, StoreError, StoredEvent};

/// Channel notified (by a trigger, migration 0003) when an event row is inserted.
pub const PENDING_CHANNEL: &str = "iotpay_events_pending";
/// Channel notified, at commit, when an event becomes `confirmed`.
pub const CONFIRMED_CHANNEL: &str = "payment_events_confirmed";

/// A pending event claimed for one check.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedEvent {
    /// The event as stored.
    #[sqlx(flatten)]
    pub event: StoredEvent,
    /// Checks so far, this one included.
    pub confirm_attempts: i32,
    /// Earlier checks, in a row, on which IOTPay answered that it does not know the order (an
    /// answer that finds the order, and an operator's recheck, start the count again).
    pub not_found_checks: i32,
    /// Seconds since the first of those answers (database clock); `None` when there is none.
    pub not_found_secs: Option<i64>,
    /// The claim's token: the decision applies only while it is still on the row.
    pub leased_by: String,
}

/// What to record after one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// IOTPay agrees: `confirmed`, and the forwarding outbox filled in the same transaction.
    Confirmed,
    /// IOTPay contradicts the notification: `rejected` with this reason.
    Rejected(String),
    /// Inconclusive: check again after `delay`, unless the give-up window has passed, in which
    /// case the event becomes `unconfirmed` with `give_up_reason`.
    Retry {
        /// Why this check was inconclusive (kept in `last_check_error`).
        reason: String,
        /// When to check again.
        delay: Duration,
        /// The `status_reason` if this was the last chance.
        give_up_reason: String,
    },
    /// Never confirmable: `unconfirmed` at once with this reason.
    Unconfirmed(String),
}

/// What the decision did to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Now `confirmed`; this many deliveries were enqueued.
    Confirmed {
        /// Deliveries created.
        deliveries: u64,
    },
    /// Now `rejected`.
    Rejected,
    /// Still `pending`, checked again later.
    Rescheduled,
    /// Now `unconfirmed`.
    Unconfirmed,
    /// The lease was lost (expired and re-claimed, or already decided): nothing written.
    LeaseLost,
}

/// Claims up to `limit` due pending events for `lease`, marking them with `token`.
/// One short transaction: the locks are gone when this returns.
pub async fn claim_due(
    pool: &PgPool,
    limit: usize,
    lease: Duration,
    token: &str,
) -> Result<Vec<ClaimedEvent>, StoreError> {
    let mut tx = super::begin_queue_tx(pool).await?;
    let claimed = sqlx::query_as::<_, ClaimedEvent>(concat!(
        r#"
        WITH due AS (
            SELECT event_id FROM payment_events
             WHERE status = 'pending'
               AND next_check_at <= now()
               AND (lease_until IS NULL OR lease_until <= now())
             ORDER BY next_check_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED
        )
        UPDATE payment_events p
           SET lease_until = now() + $2::float8 * interval '1 millisecond',
               leased_by = $3,
               confirm_attempts = p.confirm_attempts + 1,
               last_checked_at = now()
          FROM due
         WHERE p.event_id = due.event_id
        RETURNING p.confirm_attempts, p.leased_by, p.not_found_checks,
                  floor(EXTRACT(EPOCH FROM now() - p.first_not_found_at))::bigint AS not_found_secs, "#,
        event_columns!("p")
    ))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(millis(lease))
    .bind(token)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// The decision of one check, to be recorded under the claim that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The event checked.
    pub event_id: String,
    /// The claim's token ([`ClaimedEvent::leased_by`]).
    pub token: String,
    /// What to record.
    pub verdict: Verdict,
    /// What IOTPay's answer said about the order (kept in `not_found_checks`, `first_not_found_at`).
    pub answer: OrderAnswer,
}

/// What one check learnt about whether IOTPay knows the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderAnswer {
    /// IOTPay described the order (whatever its status): the not-found count starts again.
    Found,
    /// IOTPay answered that it does not know the order: counted, and its first time kept.
    NotFound,
    /// No answer about the order (a timeout, a FAIL about something else, no query made).
    Unknown,
}

impl OrderAnswer {
    fn as_str(self) -> &'static str {
        match self {
            OrderAnswer::Found => "found",
            OrderAnswer::NotFound => "not_found",
            OrderAnswer::Unknown => "unknown",
        }
    }
}

/// Records the decision of one check, only if `token` still holds the lease, as an answer that
/// says nothing about the order ([`OrderAnswer::Unknown`]). See [`apply_batch`].
pub async fn apply(
    pool: &PgPool,
    event_id: &str,
    token: &str,
    verdict: &Verdict,
    give_up_after: Duration,
    forward_urls: &[String],
) -> Result<Applied, StoreError> {
    let one = Decided {
        event_id: event_id.to_owned(),
        token: token.to_owned(),
        verdict: verdict.clone(),
        answer: OrderAnswer::Unknown,
    };
    let mut applied = apply_batch(pool, std::slice::from_ref(&one), give_up_after, forward_urls).await?;
    Ok(applied.pop().expect("one result per decision"))
}

/// The confirmation queue's writer: decisions finishing together recorded in one transaction
/// ([`apply_batch`]).
pub struct DecisionWriter {
    /// How long after its first notification an event is given up on (`CONFIRM_GIVE_UP_AFTER_SECS`).
    pub give_up_after: Duration,
    /// Where each confirmation is delivered.
    pub forward_urls: Vec<String>,
}

impl BatchWrite for DecisionWriter {
    type Item = Decided;
    type Output = Applied;
    const NAME: &'static str = "confirm";

    async fn write(&self, pool: &PgPool, items: &[Decided]) -> Result<Vec<Applied>, StoreError> {
        apply_batch(pool, items, self.give_up_after, &self.forward_urls).await
    }
}

/// Records many decisions in ONE statement (one transaction, one round trip). Each applies only
/// while its token still holds the lease. Every confirmation enqueues one delivery per
/// `forward_urls` entry and notifies [`CONFIRMED_CHANNEL`] with its event id; delivery workers
/// get one wake-up for the whole batch. Results are in input order.
///
/// The database clock decides the give-up moment, so replicas with skewed clocks agree; the last
/// retry is scheduled at the deadline itself, never past it.
pub async fn apply_batch(
    pool: &PgPool,
    decisions: &[Decided],
    give_up_after: Duration,
    forward_urls: &[String],
) -> Result<Vec<Applied>, StoreError> {
    if decisions.is_empty() {
        return Ok(Vec::new());
    }
    let n = decisions.len();
    let (mut ids, mut tokens, mut kinds) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut reasons, mut give_up_reasons, mut delays) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let mut answers = Vec::with_capacity(n);
    for d in decisions {
        ids.push(d.event_id.as_str());
        tokens.push(d.token.as_str());
        let (kind, reason, give_up, delay) = match &d.verdict {
            // A decision's kind is the status it sets, or `retry` (the SQL settles that one).
            Verdict::Confirmed => (EventStatus::Confirmed.as_str(), None, None, 0),
            Verdict::Rejected(r) => (EventStatus::Rejected.as_str(), Some(r), None, 0),
            Verdict::Unconfirmed(r) => (EventStatus::Unconfirmed.as_str(), Some(r), None, 0),
            Verdict::Retry { reason, delay, give_up_reason } => {
                ("retry", Some(reason), Some(give_up_reason), millis(*delay))
            }
        };
        answers.push(d.answer.as_str());
        kinds.push(kind);
        // Reasons quote IOTPay's own messages; Postgres text cannot hold U+0000.
        reasons.push(reason.map(|r| r.replace('\0', "")));
        give_up_reasons.push(give_up.map(|r| r.replace('\0', "")));
        delays.push(delay as f64);
    }
    let mut tx = super::begin_queue_tx(pool).await?;
    let rows = sqlx::query(
        r#"
        WITH decided AS (
            UPDATE payment_events p
               SET status = CASE WHEN d.kind <> 'retry' THEN d.kind
                                 WHEN now() >= p.created_at + $7::float8 * interval '1 millisecond' THEN 'unconfirmed'
                                 ELSE 'pending' END,
                   status_reason = CASE WHEN d.kind IN ('rejected', 'unconfirmed') THEN d.reason
                                        WHEN d.kind = 'retry'
                                             AND now() >= p.created_at + $7::float8 * interval '1 millisecond'
                                        THEN d.give_up_reason END,
                   confirmed_at = CASE WHEN d.kind = 'confirmed' THEN now() ELSE p.confirmed_at END,
                   decided_at = CASE WHEN d.kind <> 'retry'
                                       OR now() >= p.created_at + $7::float8 * interval '1 millisecond'
                                     THEN now() END,
                   last_check_error = CASE d.kind WHEN 'confirmed' THEN NULL
                                                  WHEN 'retry' THEN d.reason ELSE p.last_check_error END,
                   next_check_at = CASE WHEN d.kind <> 'retry' THEN p.next_check_at
                                        ELSE LEAST(now() + d.delay_ms * interval '1 millisecond',
                                                   p.created_at + $7::float8 * interval '1 millisecond') END,
                   -- "Not found" must hold over checks spanning a minimum time: count the answers
                   -- in a row and keep when the first came; an answer that finds the order resets both.
                   not_found_checks = CASE d.answer WHEN 'not_found' THEN p.not_found_checks + 1
                                                    WHEN 'found' THEN 0 ELSE p.not_found_checks END,
                   first_not_found_at = CASE d.answer WHEN 'not_found' THEN COALESCE(p.first_not_found_at, now())
                                                      WHEN 'found' THEN NULL ELSE p.first_not_found_at END,
                   lease_until = NULL, leased_by = NULL, updated_at = now()
              FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], $11::text[])
                   AS d(event_id, token, kind, reason, give_up_reason, delay_ms, answer)
             -- "Not decided" rather than `status = 'pending'` (the same rows, by the CHECK
             -- constraint): that condition is the predicate of the pending index, and with
             -- statistics from a small table the planner walked that whole index for each batch
             -- instead of looking rows up by key.
             WHERE p.event_id = d.event_id AND p.leased_by = d.token
               AND p.status NOT IN ('confirmed', 'rejected', 'unconfirmed')
            RETURNING p.event_id, d.token, p.status, p.confirm_attempts, p.last_checked_at,
                      CASE WHEN p.status = 'pending' THEN p.last_check_error ELSE p.status_reason END AS reason
        ), logged AS (
            -- The operator's timeline of checks (migration 0006).
            INSERT INTO confirmation_checks (event_id, attempt, started_at, result, reason)
            SELECT event_id, GREATEST(confirm_attempts, 1), COALESCE(last_checked_at, now()),
                   CASE status WHEN 'pending' THEN 'retry' ELSE status END, reason
              FROM decided
        ), enqueued AS (
            INSERT INTO deliveries (event_id, endpoint)
            SELECT decided.event_id, endpoint
              FROM decided, unnest($8::text[]) AS endpoint
             WHERE decided.status = 'confirmed'
            ON CONFLICT ON CONSTRAINT deliveries_event_endpoint DO NOTHING
            RETURNING event_id
        ), wake AS (
            SELECT pg_notify($10, '') FROM (SELECT 1 FROM enqueued LIMIT 1) AS any_enqueued
        )
        SELECT decided.event_id, decided.token, decided.status,
               (SELECT count(*) FROM enqueued WHERE enqueued.event_id = decided.event_id) AS deliveries,
               CASE WHEN decided.status = 'confirmed' THEN pg_notify($9, decided.event_id) END AS notified,
               (SELECT count(*) FROM wake) AS woken
          FROM decided
        "#,
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(&kinds)
    .bind(&reasons)
    .bind(&give_up_reasons)
    .bind(&delays)
    .bind(millis(give_up_after) as f64)
    .bind(forward_urls)
    .bind(CONFIRMED_CHANNEL)
    .bind(deliveries::DELIVERIES_CHANNEL)
    .bind(&answers)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut outcome: HashMap<(String, String), Applied> = HashMap::with_capacity(rows.len());
    for row in rows {
        let applied = match row.try_get("status")? {
            EventStatus::Confirmed => Applied::Confirmed { deliveries: row.try_get::<i64, _>("deliveries")? as u64 },
            EventStatus::Rejected => Applied::Rejected,
            EventStatus::Unconfirmed => Applied::Unconfirmed,
            EventStatus::Pending => Applied::Rescheduled,
        };
        outcome.insert((row.try_get("event_id")?, row.try_get("token")?), applied);
    }
    Ok(decisions
        .iter()
        .map(|d| outcome.remove(&(d.event_id.clone(), d.token.clone())).unwrap_or(Applied::LeaseLost))
        .collect())
}

/// The confirmation backlog, for metrics and for how long the worker may sleep.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PendingStats {
    /// Events still `pending`.
    pub pending: i64,
    /// Age of the oldest pending event, in seconds (0 when none).
    pub oldest_age_secs: f64,
    /// Time until the next pending event is due (due now = zero); `None` when none is pending.
    pub next_due_in: Option<Duration>,
}

/// Reads the backlog.
pub async fn pending_stats(pool: &PgPool) -> Result<PendingStats, StoreError> {
    let row = sqlx::query(
        "SELECT count(*) AS pending,
                COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS oldest_age,
                EXTRACT(EPOCH FROM min(GREATEST(next_check_at, COALESCE(lease_until, next_check_at))) - now())::float8
                    AS next_due_in
           FROM payment_events WHERE status = 'pending'",
    )
    .fetch_one(pool)
    .await?;
    let next_due_in: Option<f64> = row.try_get("next_due_in")?;
    Ok(PendingStats {
        pending: row.try_get("pending")?,
        oldest_age_secs: row.try_get("oldest_age")?,
        next_due_in: next_due_in.map(|s| Duration::from_secs_f64(s.max(0.0))),
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
