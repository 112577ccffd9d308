//! The reconciliation queue over `expected_orders`: claim due orders with a lease (`FOR UPDATE
//! SKIP LOCKED`), query IOTPay outside any transaction, then record the decisions of many
//! queries in one transaction (group commit), each guarded by its claim's lease token, exactly
//! as the confirmation queue does.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::PgPool;

use super::group_commit::BatchWrite;
use super::row::event_columns;
use super::{begin_queue_tx, EventStatus, StoreError, StoredEvent};
use crate::domain::EventType;

mod found;
mod types;
use found::store_found;
pub use types::{Applied, ClaimedOrder, FoundPayment, OrderDecision, Outcome};

/// Claims up to `limit` due expected orders for `lease`, each with what its stored payment
/// events say. One short transaction.
pub async fn claim_due(
    pool: &PgPool,
    worker: &str,
    limit: i64,
    lease: Duration,
) -> Result<Vec<ClaimedOrder>, StoreError> {
    let token = format!("{worker}:{}", uuid::Uuid::new_v4());
    let mut tx = begin_queue_tx(pool).await?;
    let mut orders = sqlx::query_as::<_, ClaimedOrder>(
        "WITH due AS (
             SELECT mch_id, mch_order_no FROM expected_orders
              WHERE state = 'expected' AND next_check_at <= now()
                AND (lease_until IS NULL OR lease_until < now())
              ORDER BY next_check_at
              LIMIT $1
              FOR UPDATE SKIP LOCKED)
         UPDATE expected_orders o
            SET lease_until = now() + make_interval(secs => $2), leased_by = $3
           FROM due
          WHERE o.mch_id = due.mch_id AND o.mch_order_no = due.mch_order_no
         RETURNING o.mch_id, o.mch_order_no, o.api_version, o.amount, o.currency, o.checks, o.leased_by,
                   o.expires_at <= now() AS expired, NULL::text AS paid_event,
                   NULL::text AS contradicting_event, NULL::text AS failed_event,
                   false AS notification_pending",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .bind(&token)
    .fetch_all(&mut *tx)
    .await?;
    if !orders.is_empty() {
        // The orders' payment events, looked up by order number (a few rows each). A separate
        // statement rather than subqueries of the claim: with sorting disabled in a queue
        // transaction, a subquery that picks the oldest event walked a whole status index.
        let mchs: Vec<&str> = orders.iter().map(|o| o.mch_id.as_str()).collect();
        let nos: Vec<&str> = orders.iter().map(|o| o.mch_order_no.as_str()).collect();
        let events: Vec<StoredEvent> = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!("e"),
            " FROM unnest($1::text[], $2::text[]) AS o(mch_id, mch_order_no)
               JOIN payment_events e ON e.mch_id = o.mch_id AND e.mch_order_no = o.mch_order_no
              WHERE e.event_type IN ('payment.succeeded', 'payment.failed')",
        ))
        .bind(&mchs)
        .bind(&nos)
        .fetch_all(&mut *tx)
        .await?;
        for order in &mut orders {
            let (mch, no) = (order.mch_id.clone(), order.mch_order_no.clone());
            order.read_events(events.iter().filter(|e| e.mch_id.as_str() == mch && e.mch_order_no == no));
        }
    }
    tx.commit().await?;
    Ok(orders)
}

impl ClaimedOrder {
    /// Fills in what the order's payment events say; the oldest event wins where several could.
    fn read_events<'a>(&mut self, events: impl Iterator<Item = &'a StoredEvent>) {
        let mut events: Vec<&StoredEvent> = events.collect();
        events.sort_by(|a, b| (a.created_at, &a.event_id).cmp(&(b.created_at, &b.event_id)));
        let first = |pick: &dyn Fn(&StoredEvent) -> bool| events.iter().find(|e| pick(e)).map(|e| e.event_id.clone());
        let paid = |e: &StoredEvent| e.event_type == EventType::PaymentSucceeded && e.status == EventStatus::Confirmed;
        let agrees = |e: &StoredEvent| e.amount == self.amount && e.currency.as_str() == self.currency;
        self.paid_event = first(&|e| paid(e) && agrees(e));
        self.contradicting_event = first(&|e| paid(e) && !agrees(e));
        self.failed_event = first(&|e| e.event_type == EventType::PaymentFailed && e.status == EventStatus::Confirmed);
        self.notification_pending = events.iter().any(|e| e.status == EventStatus::Pending);
    }
}

/// Records one decision; see [`apply_batch`].
pub async fn apply(pool: &PgPool, decision: &OrderDecision, endpoints: &[String]) -> Result<Applied, StoreError> {
    let mut applied = apply_batch(pool, std::slice::from_ref(decision), endpoints).await?;
    Ok(applied.pop().expect("one result per decision"))
}

/// The reconciliation queue's writer: looks finishing together recorded in one transaction
/// ([`apply_batch`]).
pub struct DecisionWriter {
    /// Where each found payment is delivered.
    pub forward_urls: Vec<String>,
}

impl BatchWrite for DecisionWriter {
    type Item = OrderDecision;
    type Output = Applied;
    const NAME: &'static str = "reconcile";

    async fn write(&self, pool: &PgPool, items: &[OrderDecision]) -> Result<Vec<Applied>, StoreError> {
        apply_batch(pool, items, &self.forward_urls).await
    }
}

/// Records many decisions in ONE transaction. Each applies only while its token still holds the
/// order's lease; a decision whose lease was lost writes nothing, not even its found payment.
/// Results are in input order.
///
/// A found payment is stored as [`store_found`] says; the order becomes `paid` once the event
/// is `confirmed` (stored here, or confirmed from its notification meanwhile). When a
/// notification of the same payment is still pending, its confirmation decides and the order is
/// looked at again after [`OrderDecision::retry`].
pub async fn apply_batch(
    pool: &PgPool,
    decisions: &[OrderDecision],
    endpoints: &[String],
) -> Result<Vec<Applied>, StoreError> {
    if decisions.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = begin_queue_tx(pool).await?;
    let mchs: Vec<&str> = decisions.iter().map(|d| d.mch_id.as_str()).collect();
    let nos: Vec<&str> = decisions.iter().map(|d| d.mch_order_no.as_str()).collect();
    let tokens: Vec<&str> = decisions.iter().map(|d| d.token.as_str()).collect();
    // Locked in key order, so that concurrent batches cannot deadlock on orders.
    let owned: HashSet<(String, String)> = sqlx::query_as::<_, (String, String)>(
        "SELECT o.mch_id, o.mch_order_no
           FROM expected_orders o
           JOIN unnest($1::text[], $2::text[], $3::text[]) AS d(mch_id, mch_order_no, token)
             ON o.mch_id = d.mch_id AND o.mch_order_no = d.mch_order_no AND o.leased_by = d.token
          WHERE o.state = 'expected'
          ORDER BY o.mch_id, o.mch_order_no
          FOR UPDATE OF o",
    )
    .bind(&mchs)
    .bind(&nos)
    .bind(&tokens)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let mine: Vec<&OrderDecision> =
        decisions.iter().filter(|d| owned.contains(&(d.mch_id.clone(), d.mch_order_no.clone()))).collect();

    let found: Vec<(&OrderDecision, &FoundPayment)> = mine
        .iter()
        .filter_map(|d| match &d.outcome {
            Outcome::Paid(p) => Some((*d, p)),
            _ => None,
        })
        .collect();
    let stored = store_found(&mut tx, &found, endpoints).await?;
    let found_ids: Vec<&str> = found.iter().map(|(_, p)| p.event_id.as_str()).collect();
    let confirmed: HashSet<String> = if found_ids.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar("SELECT event_id FROM payment_events WHERE event_id = ANY($1) AND status = 'confirmed'")
            .bind(&found_ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect()
    };

    let mut rows = Rows::default();
    let mut applied: HashMap<(&str, &str), Applied> = HashMap::with_capacity(mine.len());
    for &d in &mine {
        let key = (d.mch_id.as_str(), d.mch_order_no.as_str());
        match &d.outcome {
            Outcome::Paid(p) if confirmed.contains(&p.event_id) => {
                rows.push(d, "paid", Some(&p.event_id), None, Duration::ZERO);
                let deliveries = stored.get(p.event_id.as_str()).copied();
                applied
                    .insert(key, Applied::Paid { stored: deliveries.is_some(), deliveries: deliveries.unwrap_or(0) });
            }
            Outcome::Paid(p) => {
                let reason = format!(
                    "IOTPay reports it paid; the notification of the same payment ({}) is still being confirmed",
                    p.event_id
                );
                rows.push(d, "expected", None, Some(&reason), d.retry);
                applied.insert(key, Applied::Rescheduled);
            }
            Outcome::Settled { state, event_id, reason } => {
                rows.push(d, state, event_id.as_deref(), Some(reason), Duration::ZERO);
                applied.insert(
                    key,
                    if *state == "paid" { Applied::Paid { stored: false, deliveries: 0 } } else { Applied::Settled },
                );
            }
            Outcome::Retry { reason, delay } => {
                rows.push(d, "expected", None, Some(reason), *delay);
                applied.insert(key, Applied::Rescheduled);
            }
        }
    }
    if !mine.is_empty() {
        sqlx::query(
            "UPDATE expected_orders o
                SET state = d.state, event_id = COALESCE(d.event_id, o.event_id),
                    lease_until = NULL, leased_by = NULL, last_error = d.reason,
                    checks = o.checks + CASE WHEN d.queried THEN 1 ELSE 0 END,
                    last_checked_at = CASE WHEN d.queried THEN now() ELSE o.last_checked_at END,
                    -- A settled order is never due again; an unsettled one is looked at again
                    -- after its delay, but at expires_at at the latest while that is ahead, so
                    -- that it is decided when it expires rather than a backoff later.
                    next_check_at = CASE WHEN d.state <> 'expected' THEN 'infinity'
                                         WHEN o.expires_at > now()
                                         THEN LEAST(now() + make_interval(secs => d.delay), o.expires_at)
                                         ELSE now() + make_interval(secs => d.delay) END,
                    decided_at = CASE WHEN d.state <> 'expected' THEN now() END
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::bool[])
                    AS d(mch_id, mch_order_no, state, event_id, reason, delay, queried)
              WHERE o.mch_id = d.mch_id AND o.mch_order_no = d.mch_order_no",
        )
        .bind(&rows.mch_id)
        .bind(&rows.mch_order_no)
        .bind(&rows.state)
        .bind(&rows.event_id)
        .bind(&rows.reason)
        .bind(&rows.delay)
        .bind(&rows.queried)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(decisions
        .iter()
        .map(|d| applied.remove(&(d.mch_id.as_str(), d.mch_order_no.as_str())).unwrap_or(Applied::LeaseLost))
        .collect())
}

/// The columns of the order update, one entry per decision.
#[derive(Default)]
struct Rows<'a> {
    mch_id: Vec<&'a str>,
    mch_order_no: Vec<&'a str>,
    state: Vec<&'a str>,
    event_id: Vec<Option<&'a str>>,
    reason: Vec<Option<String>>,
    delay: Vec<f64>,
    queried: Vec<bool>,
}

impl<'a> Rows<'a> {
    fn push(
        &mut self,
        d: &'a OrderDecision,
        state: &'a str,
        event_id: Option<&'a str>,
        reason: Option<&str>,
        delay: Duration,
    ) {
        self.mch_id.push(&d.mch_id);
        self.mch_order_no.push(&d.mch_order_no);
        self.state.push(state);
        self.event_id.push(event_id);
        // Reasons quote IOTPay's own messages; Postgres text cannot hold U+0000.
        self.reason.push(reason.filter(|r| !r.is_empty()).map(|r| r.replace('\0', "")));
        self.delay.push(delay.as_secs_f64());
        self.queried.push(d.queried);
    }
}

/// Expected orders by the state the API shows, for the `iotpay_expected_orders` gauge. Orders
/// stored `paid` are counted from the state index alone (migration 0011); only the others, few
/// next to them, are looked up against their payment events (a confirmed payment settles an order whatever
/// the reconciler stored, as in [`super::orders::show`]).
pub async fn count_by_state(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT state, count(*) FROM (
             SELECT CASE WHEN p.agrees IS NULL THEN o.state WHEN p.agrees THEN 'paid' ELSE 'mismatch' END AS state
               FROM expected_orders o
               LEFT JOIN LATERAL (
                   SELECT bool_or(e.amount = o.amount AND e.currency = o.currency) AS agrees
                     FROM payment_events e
                    WHERE e.mch_id = o.mch_id AND e.mch_order_no = o.mch_order_no
                      AND e.event_type = 'payment.succeeded' AND e.status = 'confirmed'
               ) p ON true
              WHERE o.state IN ('expected', 'cancelled', 'expired', 'mismatch')
             UNION ALL
             SELECT state FROM expected_orders WHERE state = 'paid'
         ) s
         GROUP BY state",
    )
    .fetch_all(pool)
    .await?)
}
