//! Confirmation: every stored event is checked against IOTPay's query API before anyone may
//! trust it. Only an event IOTPay's own answer agrees with becomes `confirmed` (and only those
//! reach the forwarding outbox); a contradiction is `rejected`; an inconclusive answer is asked
//! again with backoff until the give-up window, then `unconfirmed`.
//!
//! The worker wakes on `LISTEN iotpay_events_pending` (a trigger notifies once per statement that
//! inserted new events), sleeps until the next retry is due, and polls only as a fallback. Claims go through
//! [`crate::store::confirm`] with a lease, so any number of replicas can run it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{number, Config, ConfigError};
use crate::domain::{ApiVersion, EventType, MchId, PayOrderId};
use crate::iotpay::query::{QueriedOrder, QueryClient, QueryError, QueryTimeouts};
use crate::pressure::{IngestPressure, Slot, Slots};
use crate::store::confirm::{self as queue, Applied, ClaimedEvent, Decided, Verdict, PENDING_CHANNEL};
use crate::store::group_commit::{BatchWrite, GroupCommit, GroupSettings};
use crate::store::StoreError;

/// How long a stopping worker waits for in-flight checks before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Knobs of the confirmation worker (environment variables named on each field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmSettings {
    /// `CONFIRM_FIRST_RETRY_MS`: base delay of the first retry (jittered down to half of it).
    pub first_retry: Duration,
    /// `CONFIRM_MAX_BACKOFF_MS`: longest delay between two checks.
    pub max_backoff: Duration,
    /// `CONFIRM_GIVE_UP_AFTER_SECS`: after this long since the event was stored, an
    /// inconclusive check makes it `unconfirmed`.
    pub give_up_after: Duration,
    /// `CONFIRM_CONCURRENCY`: most checks in flight per process.
    pub concurrency: usize,
    /// `IOTPAY_QUERY_TIMEOUT_MS`: longest wait for one query, body included.
    pub query_timeout: Duration,
    /// `IOTPAY_CONNECT_TIMEOUT_MS`: longest wait for the connection (capped by the query timeout).
    pub connect_timeout: Duration,
    /// `CONFIRM_LEASE_SECS`: how long a claim keeps other workers off an event; must exceed the
    /// query timeout so that a live worker never loses its event mid-query.
    pub lease: Duration,
    /// `CONFIRM_POLL_INTERVAL_MS`: longest sleep between two looks at the queue (fallback for
    /// a lost notification).
    pub poll_interval: Duration,
}

impl Default for ConfirmSettings {
    fn default() -> Self {
        Self {
            first_retry: Duration::from_millis(2_000),
            max_backoff: Duration::from_millis(300_000),
            give_up_after: Duration::from_secs(86_400),
            concurrency: 16,
            query_timeout: Duration::from_millis(10_000),
            connect_timeout: Duration::from_millis(3_000),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(5_000),
        }
    }
}

impl ConfirmSettings {
    /// Reads the knobs through `var` (as [`Config::from_lookup`] does); unset means default.
    pub fn from_vars(var: &impl Fn(&'static str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let ms = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            Ok(Duration::from_millis(number(var, name, default.as_millis() as u64)?))
        };
        let settings = Self {
            first_retry: ms("CONFIRM_FIRST_RETRY_MS", d.first_retry)?,
            max_backoff: ms("CONFIRM_MAX_BACKOFF_MS", d.max_backoff)?,
            give_up_after: Duration::from_secs(number(var, "CONFIRM_GIVE_UP_AFTER_SECS", d.give_up_after.as_secs())?),
            concurrency: number(var, "CONFIRM_CONCURRENCY", d.concurrency)?,
            query_timeout: ms("IOTPAY_QUERY_TIMEOUT_MS", d.query_timeout)?,
            connect_timeout: ms("IOTPAY_CONNECT_TIMEOUT_MS", d.connect_timeout)?,
            lease: Duration::from_secs(number(var, "CONFIRM_LEASE_SECS", d.lease.as_secs())?),
            poll_interval: ms("CONFIRM_POLL_INTERVAL_MS", d.poll_interval)?,
        };
        if settings.lease <= settings.query_timeout {
            return Err(ConfigError::Invalid {
                var: "CONFIRM_LEASE_SECS",
                reason: "must be longer than IOTPAY_QUERY_TIMEOUT_MS".into(),
            });
        }
        Ok(settings)
    }

    /// The query client's timeouts.
    pub fn timeouts(&self) -> QueryTimeouts {
        QueryTimeouts { connect: self.connect_timeout.min(self.query_timeout), total: self.query_timeout }
    }
}

/// What one check concludes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// IOTPay's answer agrees with the event.
    Confirmed,
    /// IOTPay's answer contradicts the event (the reason says how).
    Rejected(String),
    /// Nothing conclusive yet (the reason says why); ask again later.
    Retry(String),
    /// The event can never be confirmed (the reason says why).
    Unconfirmed(String),
}

/// Decides one check: the stored `event` against IOTPay's `answer`.
///
/// Safe side everywhere: only an answer that agrees on every identity and money field IOTPay
/// sent, with a final status that matches the event's type, confirms.
/// - `*.succeeded` events: status 2 or 3 confirms, 9 rejects.
/// - `*.failed` events: status 9 confirms the failure (the row stays `payment.failed` /
///   `refund.failed`: never a success); 2 or 3 rejects it (IOTPay says it succeeded).
/// - v1 (general API) only: status 4 (cancelled by the system) counts as 9 (cancelled by the payer).
/// - status 0, 1 or any other value: retry.
/// - `transaction.unrecognized`: never confirmed.
pub fn decide(event: &ClaimedEvent, answer: &Result<QueriedOrder, QueryError>) -> Decision {
    if let Some(decision) = never_confirmable(event) {
        return decision;
    }
    let event_type = EventType::parse(&event.event_type).unwrap_or(EventType::Unrecognized);
    let order = match answer {
        Err(QueryError::NotFound(msg)) => return Decision::Rejected(format!("order unknown to IOTPay: {msg}")),
        Err(e) => return Decision::Retry(e.to_string()),
        Ok(order) => order,
    };
    if let Some(reason) = contradiction(event, event_type, order) {
        return Decision::Rejected(reason);
    }
    let v1_cancelled = order.api_version == ApiVersion::V1 && order.status == 4;
    match (event_type.is_success(), order.status) {
        (_, 0) => Decision::Retry("IOTPay reports status 0 (pending)".into()),
        (_, 1) => Decision::Retry("IOTPay reports status 1 (unknown)".into()),
        (true, 2 | 3) | (false, 9) => Decision::Confirmed,
        (false, 4) if v1_cancelled => Decision::Confirmed,
        (true, 4) if v1_cancelled => Decision::Rejected("IOTPay reports status 4 (cancelled by the system)".into()),
        (true, 9) => Decision::Rejected("IOTPay reports status 9 (failed)".into()),
        (false, s @ (2 | 3)) => {
            Decision::Rejected(format!("IOTPay reports status {s} (succeeded) but the notification reported a failure"))
        }
        (_, s) => Decision::Retry(format!("IOTPay reports unknown status {s}")),
    }
}

/// The decision for an event no answer could ever confirm (`transaction.unrecognized`: this
/// service does not know what its `payType` means), so it is decided without asking IOTPay.
pub fn never_confirmable(event: &ClaimedEvent) -> Option<Decision> {
    match EventType::parse(&event.event_type) {
        Some(t) if t != EventType::Unrecognized => None,
        _ => Some(Decision::Unconfirmed(format!(
            "{} events are never confirmed (payType {})",
            event.event_type,
            event.pay_type.as_deref().unwrap_or("none")
        ))),
    }
}

/// The first field on which IOTPay's answer contradicts the event, as a reason text.
/// A field IOTPay did not send (v2) cannot contradict; see README for which ones v2 checks.
fn contradiction(event: &ClaimedEvent, event_type: EventType, order: &QueriedOrder) -> Option<String> {
    let differs = |field: &str, ours: Option<&str>, theirs: Option<&str>| {
        Some(format!("{field} differs: notification {}, IOTPay {}", ours.unwrap_or("none"), theirs.unwrap_or("none")))
    };
    if order.pay_order_id != event.pay_order_id {
        return differs("pay_order_id", Some(&event.pay_order_id), Some(&order.pay_order_id));
    }
    if let Some(m) = order.mch_id.as_deref().filter(|m| *m != event.mch_id) {
        return differs("mch_id", Some(&event.mch_id), Some(m));
    }
    if let Some(m) = order.mch_order_no.as_deref().filter(|m| *m != event.mch_order_no) {
        return differs("mch_order_no", Some(&event.mch_order_no), Some(m));
    }
    if let Some(a) = order.amount.filter(|a| *a != event.amount) {
        return differs("amount", Some(&event.amount.to_string()), Some(&a.to_string()));
    }
    if let Some(c) = order.currency.as_deref().filter(|c| !c.eq_ignore_ascii_case(&event.currency)) {
        return differs("currency", Some(&event.currency), Some(c));
    }
    let is_refund = matches!(event_type, EventType::RefundSucceeded | EventType::RefundFailed);
    match order.api_version {
        ApiVersion::V3 => {
            if order.pay_type.as_deref() != event.pay_type.as_deref() {
                return differs("pay_type", event.pay_type.as_deref(), order.pay_type.as_deref());
            }
            if is_refund && order.original_order_id.as_deref() != event.original_order_id.as_deref() {
                return differs(
                    "original_order_id",
                    event.original_order_id.as_deref(),
                    order.original_order_id.as_deref(),
                );
            }
        }
        // v1 has no payType and no refunds; its mchId, mchOrderNo, amount and currency, required
        // in every v1 answer, were compared above.
        ApiVersion::V1 => {}
        ApiVersion::V2 => {
            // A v2 notification is always a payment: an order that IOTPay calls a refund, or
            // that refunds another order, contradicts it. Other v2 payType values are undocumented.
            if order.pay_type.as_deref().is_some_and(|p| p.eq_ignore_ascii_case("refund")) {
                return differs("pay_type", Some("pay (v2 payment)"), order.pay_type.as_deref());
            }
            if order.original_order_id.is_some() {
                return differs("original_order_id", None, order.original_order_id.as_deref());
            }
        }
    }
    None
}

/// Delay before check number `checks_done + 1`: `first * 2^(checks_done - 1)`, capped at `max`,
/// with "equal jitter" (a uniform point in the upper half, from `jitter` in `[0, 1)`), so the
/// first retry comes within `first` and replicas do not retry in lockstep.
pub fn backoff(checks_done: u32, first: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = checks_done.saturating_sub(1).min(32);
    let base = first.saturating_mul(1u32 << exp.min(31)).min(max);
    let half = base / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// The confirmation worker of one process.
pub struct Confirmer {
    pool: PgPool,
    client: QueryClient,
    settings: ConfirmSettings,
    decisions: GroupCommit<Decisions>,
    /// One per query in flight (`CONFIRM_CONCURRENCY`).
    slots: Slots,
}

/// Records decisions through group commit: checks finishing together share one transaction.
struct Decisions {
    give_up_after: Duration,
    forward_urls: Vec<String>,
}

impl BatchWrite for Decisions {
    type Item = Decided;
    type Output = Applied;
    const NAME: &'static str = "confirm";

    async fn write(&self, pool: &PgPool, items: &[Decided]) -> Result<Vec<Applied>, StoreError> {
        queue::apply_batch(pool, items, self.give_up_after, &self.forward_urls).await
    }
}

impl Confirmer {
    /// Builds the worker from the service configuration.
    pub fn from_config(pool: PgPool, config: &Config) -> Result<Self, reqwest::Error> {
        let client = QueryClient::new(
            &config.v3_api_url,
            &config.v2_api_url,
            &config.v1_api_url,
            Arc::new(config.merchants.clone()),
            config.confirm.timeouts(),
        )?;
        Ok(Self::new(pool, client, config.confirm.clone(), config.forward_urls.clone()))
    }

    /// Builds the worker from its parts (starts its decision writers: call within a runtime).
    pub fn new(pool: PgPool, client: QueryClient, settings: ConfirmSettings, forward_urls: Vec<String>) -> Self {
        let writer = Decisions { give_up_after: settings.give_up_after, forward_urls };
        let group = GroupSettings { max_batch: settings.concurrency.max(1), max_wait: Duration::ZERO, writers: 2 };
        let decisions = GroupCommit::start(pool.clone(), writer, group);
        let slots = Slots::new(settings.concurrency, IngestPressure::default());
        Self { pool, client, settings, decisions, slots }
    }

    /// Uses fewer query slots while `pressure` says the notify path is busy (see [`crate::pressure`]).
    pub fn yielding_to(mut self, pressure: IngestPressure) -> Self {
        self.slots = Slots::new(self.settings.concurrency, pressure);
        self
    }

    /// Runs until `shutdown`, then gives in-flight checks [`SHUTDOWN_GRACE`] to finish.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let poll = this.settings.poll_interval;
        let mut listener: Option<PgListener> = None;
        let mut listen_retry_at = Instant::now();
        let mut checks: JoinSet<()> = JoinSet::new();
        let mut sweep = true;
        let mut last_stats = Instant::now();
        tracing::info!(concurrency = this.settings.concurrency, "confirmation worker started");
        loop {
            if listener.is_none() && Instant::now() >= listen_retry_at {
                listener = this.listen().await;
                if listener.is_none() {
                    listen_retry_at = Instant::now() + poll;
                }
                // Events stored while nobody listened were not announced.
                sweep = true;
            }
            let mut drained = false;
            if sweep {
                match this.claim_into(&mut checks).await {
                    Claim::Filled => continue,
                    Claim::Drained => drained = true,
                    Claim::NoRoom | Claim::Failed => {}
                }
            }
            let mut sleep = poll;
            // Nothing due now: learn when the next retry is. Otherwise refresh the gauges now and
            // then only: the backlog count reads every pending row, too costly for every wake-up.
            if drained || last_stats.elapsed() >= poll {
                last_stats = Instant::now();
                match queue::pending_stats(&this.pool).await {
                    Ok(stats) => {
                        metrics::gauge!("iotpay_confirm_pending_events").set(stats.pending as f64);
                        metrics::gauge!("iotpay_confirm_oldest_pending_age_seconds").set(stats.oldest_age_secs);
                        if let Some(due) = stats.next_due_in {
                            // A floor, so a row another worker is about to claim cannot spin this loop.
                            sleep = due.clamp(Duration::from_millis(10), poll);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "confirmation backlog could not be read"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                wake = next_notification(&mut listener) => {
                    if let Err(e) = wake {
                        tracing::warn!(error = %e, "LISTEN connection lost; polling until it is back");
                        listener = None;
                        listen_retry_at = Instant::now() + poll;
                    }
                    sweep = true;
                }
                _ = tokio::time::sleep(sleep) => sweep = true,
                _ = this.slots.freed() => sweep = true,
                Some(done) = checks.join_next(), if !checks.is_empty() => {
                    reap(done);
                    sweep = true;
                }
            }
        }
        // In-flight checks get a short grace to record their decision; past it they are dropped,
        // which is safe: an undecided event is checked again once its lease expires.
        let drain = async { while checks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("confirmation checks still running at shutdown; their leases will expire");
            checks.shutdown().await;
        }
        tracing::info!("confirmation worker stopped");
    }

    async fn listen(&self) -> Option<PgListener> {
        let attempt = async {
            let mut l = PgListener::connect_with(&self.pool).await?;
            l.listen(PENDING_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match attempt.await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN {PENDING_CHANNEL}; polling meanwhile");
                None
            }
        }
    }

    /// Claims as many due events as there is room for and starts their checks.
    async fn claim_into(self: &Arc<Self>, checks: &mut JoinSet<()>) -> Claim {
        // `len` counts finished checks until they are joined: without this, a busy worker saw one
        // free slot per wake-up and claimed one event per transaction, so throughput was bound by
        // the claim's round trip whatever CONFIRM_CONCURRENCY said.
        while let Some(done) = checks.try_join_next() {
            reap(done);
        }
        let free = self.slots.claimable(checks.len());
        if free == 0 {
            return Claim::NoRoom;
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        match queue::claim_due(&self.pool, free, self.settings.lease, &token).await {
            Ok(events) => {
                let filled = if events.len() == free { Claim::Filled } else { Claim::Drained };
                for event in events {
                    let this = Arc::clone(self);
                    let slot = self.slots.take();
                    checks.spawn(async move { this.check(event, slot).await });
                }
                filled
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim pending events");
                Claim::Failed
            }
        }
    }

    /// Queries IOTPay for one claimed event (no transaction open) and records the decision.
    /// The query slot is given back before the decision commits: the slot bounds the load on
    /// IOTPay, and the lease, not the slot, protects the event until its decision is recorded.
    async fn check(&self, event: ClaimedEvent, slot: Slot) {
        let decision = match never_confirmable(&event) {
            Some(decision) => decision,
            None => decide(&event, &self.query(&event).await),
        };
        drop(slot);
        let verdict = match &decision {
            Decision::Confirmed => Verdict::Confirmed,
            Decision::Rejected(r) => Verdict::Rejected(r.clone()),
            Decision::Unconfirmed(r) => Verdict::Unconfirmed(r.clone()),
            Decision::Retry(r) => Verdict::Retry {
                reason: r.clone(),
                delay: backoff(
                    event.confirm_attempts.max(1) as u32,
                    self.settings.first_retry,
                    self.settings.max_backoff,
                    rand::random::<f64>(),
                ),
                give_up_reason: format!(
                    "no conclusive answer from IOTPay within {}s ({} checks); last: {r}",
                    self.settings.give_up_after.as_secs(),
                    event.confirm_attempts
                ),
            },
        };
        let decided = Decided { event_id: event.event_id.clone(), token: event.leased_by.clone(), verdict };
        let applied = self.decisions.submit(decided).await;
        let outcome = match &applied {
            Ok(Applied::Confirmed { .. }) => "confirmed",
            Ok(Applied::Rejected) => "rejected",
            Ok(Applied::Rescheduled) => "retry",
            Ok(Applied::Unconfirmed) => "unconfirmed",
            Ok(Applied::LeaseLost) => "lease_lost",
            Err(_) => "store_error",
        };
        metrics::counter!("iotpay_confirmations_total", "outcome" => outcome).increment(1);
        let (id, mch, order, attempt) = (&event.event_id, &event.mch_id, &event.pay_order_id, event.confirm_attempts);
        match (applied, &decision) {
            (Ok(Applied::Confirmed { deliveries }), _) => {
                tracing::info!(event_id = %id, mch_id = %mch, pay_order_id = %order, attempt, deliveries, "event confirmed")
            }
            (Ok(Applied::Rejected), Decision::Rejected(reason)) => tracing::error!(
                event_id = %id, mch_id = %mch, pay_order_id = %order, attempt, %reason,
                "event REJECTED: IOTPay contradicts the notification (forged, corrupted, or misconfigured)"
            ),
            (Ok(Applied::Unconfirmed), _) => tracing::error!(
                event_id = %id, mch_id = %mch, pay_order_id = %order, attempt, decision = ?decision,
                "event UNCONFIRMED: it will not be forwarded"
            ),
            (Ok(Applied::Rescheduled), Decision::Retry(reason)) => {
                tracing::warn!(event_id = %id, pay_order_id = %order, attempt, %reason, "confirmation inconclusive; will retry")
            }
            (Ok(Applied::LeaseLost), _) => {
                tracing::warn!(event_id = %id, attempt, "lease lost before the decision; another check owns the event")
            }
            (Ok(other), _) => tracing::warn!(event_id = %id, ?other, ?decision, "unexpected decision record"),
            (Err(e), _) => tracing::warn!(
                event_id = %id, attempt, error = %e,
                "decision not recorded; the event will be checked again when its lease expires"
            ),
        }
    }

    async fn query(&self, event: &ClaimedEvent) -> Result<QueriedOrder, QueryError> {
        let (Some(version), Ok(mch_id), Ok(pay_order_id)) = (
            ApiVersion::parse(&event.api_version),
            MchId::parse(&event.mch_id),
            PayOrderId::parse(&event.pay_order_id),
        ) else {
            return Err(QueryError::Unparseable("stored event has an invalid api_version or id".into()));
        };
        let started = Instant::now();
        let answer = self.client.query(version, &mch_id, &pay_order_id).await;
        let result = match &answer {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        metrics::histogram!("iotpay_query_duration_seconds", "api_version" => version.as_str(), "result" => result)
            .record(started.elapsed().as_secs_f64());
        answer
    }
}

async fn next_notification(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    let Some(l) = listener.as_mut() else {
        return std::future::pending().await;
    };
    // `None` means the connection dropped and was re-established: announcements may be lost, sweep.
    if l.try_recv().await?.is_some() {
        // One sweep serves a burst: drop the announcements already buffered.
        while l.next_buffered().is_some() {}
    }
    Ok(())
}

/// What one look at the queue found.
enum Claim {
    /// Every free slot was filled: more may be due right now.
    Filled,
    /// Fewer due events than free slots: nothing more is due now.
    Drained,
    /// No slot was free (or allowed, while the notify path is busy).
    NoRoom,
    /// The database could not be asked.
    Failed,
}

/// Starts the worker into `workers`; it stops when `shutdown` is cancelled.
pub fn spawn(
    workers: &mut JoinSet<()>,
    pool: PgPool,
    config: &Config,
    shutdown: CancellationToken,
    pressure: IngestPressure,
) -> Result<(), reqwest::Error> {
    let confirmer = Confirmer::from_config(pool, config)?.yielding_to(pressure);
    workers.spawn(confirmer.run(shutdown));
    Ok(())
}

/// Logs a check that panicked (its event's lease expires and it is checked again).
fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "a confirmation check panicked; its lease will expire");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str) -> ClaimedEvent {
        let refund = event_type.starts_with("refund");
        ClaimedEvent {
            event_id: "evt_1".into(),
            event_type: event_type.into(),
            api_version: "v3".into(),
            mch_id: "100".into(),
            mch_order_no: "o1".into(),
            pay_order_id: "PC1".into(),
            original_order_id: refund.then(|| "PC0".to_owned()),
            amount: 1500,
            currency: "CAD".into(),
            pay_type: Some(if refund { "refund" } else { "pay" }.into()),
            confirm_attempts: 1,
            leased_by: "t".into(),
        }
    }

    fn order_for(e: &ClaimedEvent, status: i64) -> QueriedOrder {
        QueriedOrder {
            api_version: ApiVersion::parse(&e.api_version).unwrap(),
            pay_order_id: e.pay_order_id.clone(),
            status,
            mch_id: Some(e.mch_id.clone()),
            mch_order_no: Some(e.mch_order_no.clone()),
            amount: Some(e.amount),
            currency: Some(e.currency.clone()),
            pay_type: e.pay_type.clone(),
            original_order_id: e.original_order_id.clone(),
            pay_succ_time: None,
            signed: true,
        }
    }

    fn rejected(d: Decision, needle: &str) {
        match d {
            Decision::Rejected(r) => assert!(r.contains(needle), "{r} should mention {needle}"),
            other => panic!("expected rejection mentioning {needle}, got {other:?}"),
        }
    }

    #[test]
    fn agreeing_success_confirms() {
        for t in ["payment.succeeded", "refund.succeeded"] {
            let e = event(t);
            assert_eq!(decide(&e, &Ok(order_for(&e, 2))), Decision::Confirmed, "{t}");
            assert_eq!(decide(&e, &Ok(order_for(&e, 3))), Decision::Confirmed, "{t}");
        }
    }

    #[test]
    fn each_differing_field_rejects() {
        let e = event("refund.succeeded");
        type Change = fn(&mut QueriedOrder);
        let cases: [(&str, Change); 7] = [
            ("pay_order_id", |o| o.pay_order_id = "PC9".into()),
            ("mch_id", |o| o.mch_id = Some("999".into())),
            ("mch_order_no", |o| o.mch_order_no = Some("other".into())),
            ("amount", |o| o.amount = Some(1501)),
            ("currency", |o| o.currency = Some("USD".into())),
            ("pay_type", |o| o.pay_type = Some("pay".into())),
            ("original_order_id", |o| o.original_order_id = Some("PC7".into())),
        ];
        for (field, change) in cases {
            let mut o = order_for(&e, 2);
            change(&mut o);
            rejected(decide(&e, &Ok(o)), field);
        }
        let mut o = order_for(&e, 2);
        o.original_order_id = None;
        rejected(decide(&e, &Ok(o)), "original_order_id differs: notification PC0, IOTPay none");
    }

    #[test]
    fn a_contradiction_rejects_even_while_pending() {
        let e = event("payment.succeeded");
        let mut o = order_for(&e, 0);
        o.amount = Some(1);
        rejected(decide(&e, &Ok(o)), "amount differs: notification 1500, IOTPay 1");
    }

    #[test]
    fn status_rules() {
        let e = event("payment.succeeded");
        rejected(decide(&e, &Ok(order_for(&e, 9))), "status 9");
        assert!(matches!(decide(&e, &Ok(order_for(&e, 0))), Decision::Retry(r) if r.contains("status 0")));
        assert!(matches!(decide(&e, &Ok(order_for(&e, 1))), Decision::Retry(r) if r.contains("status 1")));
        assert!(matches!(decide(&e, &Ok(order_for(&e, 4))), Decision::Retry(r) if r.contains("unknown status 4")));
    }

    #[test]
    fn failures_confirm_only_as_failures() {
        for t in ["payment.failed", "refund.failed"] {
            let e = event(t);
            assert_eq!(decide(&e, &Ok(order_for(&e, 9))), Decision::Confirmed, "{t}: IOTPay agrees it failed");
            rejected(decide(&e, &Ok(order_for(&e, 2))), "succeeded");
            assert!(matches!(decide(&e, &Ok(order_for(&e, 0))), Decision::Retry(_)));
        }
    }

    #[test]
    fn unrecognized_is_never_confirmed() {
        let mut e = event("transaction.unrecognized");
        e.pay_type = Some("preauth".into());
        let o = order_for(&e, 2);
        assert!(matches!(decide(&e, &Ok(o)), Decision::Unconfirmed(r) if r.contains("preauth")));
    }

    #[test]
    fn query_errors_retry_except_definite_not_found() {
        let e = event("payment.succeeded");
        rejected(decide(&e, &Err(QueryError::NotFound("order not exist".into()))), "order unknown to IOTPay");
        for err in [
            QueryError::Timeout,
            QueryError::Connect("refused".into()),
            QueryError::Transport("reset".into()),
            QueryError::HttpStatus(500),
            QueryError::HttpStatus(404),
            QueryError::Unparseable("x".into()),
            QueryError::BadSign,
            QueryError::Fail("busy".into()),
            QueryError::NoSigningKey("100".into()),
        ] {
            assert!(matches!(decide(&e, &Err(err.clone())), Decision::Retry(_)), "{err:?}");
        }
    }

    #[test]
    fn v2_checks_what_the_order_carries() {
        let mut e = event("payment.succeeded");
        e.api_version = "v2".into();
        e.pay_type = None;
        let mut o = order_for(&e, 3);
        (o.mch_id, o.amount, o.currency, o.pay_type) = (None, None, None, None);
        assert_eq!(decide(&e, &Ok(o.clone())), Decision::Confirmed, "absent fields cannot contradict");
        let mut sandbox = o.clone();
        sandbox.amount = Some(1);
        rejected(decide(&e, &Ok(sandbox)), "amount");
        let mut refund = o.clone();
        refund.pay_type = Some("refund".into());
        rejected(decide(&e, &Ok(refund)), "pay_type");
        let mut refund = o;
        refund.original_order_id = Some("P0".into());
        rejected(decide(&e, &Ok(refund)), "original_order_id");
    }

    #[test]
    fn v1_rules() {
        let mut e = event("payment.succeeded");
        (e.api_version, e.pay_type, e.pay_order_id) = ("v1".into(), None, "WJ1".into());
        assert_eq!(decide(&e, &Ok(order_for(&e, 2))), Decision::Confirmed);
        assert_eq!(decide(&e, &Ok(order_for(&e, 3))), Decision::Confirmed);
        rejected(decide(&e, &Ok(order_for(&e, 4))), "status 4 (cancelled by the system)");
        rejected(decide(&e, &Ok(order_for(&e, 9))), "status 9");
        for pending in [0, 1] {
            assert!(matches!(decide(&e, &Ok(order_for(&e, pending))), Decision::Retry(_)), "status {pending}");
        }
        assert!(matches!(decide(&e, &Ok(order_for(&e, 7))), Decision::Retry(_)), "unknown status");
        for (field, change) in [
            ("amount", (|o: &mut QueriedOrder| o.amount = Some(15000)) as fn(&mut QueriedOrder)),
            ("currency", |o| o.currency = Some("CNY".into())),
            ("mch_order_no", |o| o.mch_order_no = Some("other".into())),
            ("mch_id", |o| o.mch_id = Some("999".into())),
            ("pay_order_id", |o| o.pay_order_id = "WJ2".into()),
        ] {
            let mut o = order_for(&e, 2);
            change(&mut o);
            rejected(decide(&e, &Ok(o)), field);
        }
        // A v1 payment IOTPay calls failed is confirmed only as that failure.
        let mut failed = e.clone();
        failed.event_type = "payment.failed".into();
        assert_eq!(decide(&failed, &Ok(order_for(&failed, 4))), Decision::Confirmed);
        assert_eq!(decide(&failed, &Ok(order_for(&failed, 9))), Decision::Confirmed);
        rejected(decide(&failed, &Ok(order_for(&failed, 2))), "succeeded");
        // Status 4 keeps its old meaning (unknown: retry) for the card APIs.
        let v3 = event("payment.succeeded");
        assert!(matches!(decide(&v3, &Ok(order_for(&v3, 4))), Decision::Retry(_)));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let first = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, first, max, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(1, first, max, 1.0), Duration::from_secs(2));
        assert!(backoff(1, first, max, 0.999) <= Duration::from_secs(5), "first retry within 5 s");
        assert_eq!(backoff(2, first, max, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(3, first, max, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(20, first, max, 1.0), max);
        assert_eq!(backoff(u32::MAX, first, max, 0.0), max / 2);
        assert_eq!(backoff(0, first, max, 1.0), first);
    }

    #[test]
    fn settings_defaults_and_validation() {
        let none = |_: &'static str| None;
        let d = ConfirmSettings::from_vars(&none).unwrap();
        assert_eq!(d, ConfirmSettings::default());
        assert!(d.first_retry <= Duration::from_secs(5));
        assert_eq!(d.give_up_after, Duration::from_secs(86_400));
        let short_lease = |k: &'static str| match k {
            "CONFIRM_LEASE_SECS" => Some("5".to_owned()),
            "IOTPAY_QUERY_TIMEOUT_MS" => Some("5000".to_owned()),
            _ => None,
        };
        assert!(matches!(
            ConfirmSettings::from_vars(&short_lease),
            Err(ConfigError::Invalid { var: "CONFIRM_LEASE_SECS", .. })
        ));
        let bad = |k: &'static str| (k == "CONFIRM_CONCURRENCY").then(|| "0".to_owned());
        assert!(matches!(
            ConfirmSettings::from_vars(&bad),
            Err(ConfigError::Invalid { var: "CONFIRM_CONCURRENCY", .. })
        ));
    }
}
