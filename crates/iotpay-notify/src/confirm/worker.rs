//! The confirmation worker loop: claims due events under a lease, queries IOTPay, and records
//! decisions through group commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::rules::{backoff, decide, never_confirmable, order_answer, settle_not_found, Decision};
use super::settings::ConfirmSettings;
use crate::iotpay::query::{QueriedOrder, QueryClient, QueryError};
use crate::pressure::{IngestPressure, Slot, Slots};
use crate::store::confirm::{
    self as queue, Applied, ClaimedEvent, Decided, DecisionWriter, OrderAnswer, Verdict, PENDING_CHANNEL,
};
use crate::store::group_commit::{GroupCommit, GroupSettings};
use crate::store::listen::Wakeups;
use crate::store::StoredEvent;

/// How long a stopping worker waits for in-flight checks before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The confirmation worker of one process.
pub struct Confirmer {
    pool: PgPool,
    client: QueryClient,
    settings: ConfirmSettings,
    decisions: GroupCommit<DecisionWriter>,
    /// One per query in flight (`CONFIRM_CONCURRENCY`).
    slots: Slots,
}

impl Confirmer {
    /// Builds the worker from its parts (starts its decision writers: call within a runtime).
    pub fn new(pool: PgPool, client: QueryClient, settings: ConfirmSettings, forward_urls: Vec<String>) -> Self {
        let writer = DecisionWriter { give_up_after: settings.give_up_after, forward_urls };
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
        let mut wakeups = Wakeups::listen(this.pool.clone(), PENDING_CHANNEL, poll, shutdown.clone());
        let mut checks: JoinSet<()> = JoinSet::new();
        let mut sweep = true;
        let mut last_stats = Instant::now();
        tracing::info!(concurrency = this.settings.concurrency, "confirmation worker started");
        loop {
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
                _ = wakeups.next() => sweep = true,
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
        let (decision, answer) = match never_confirmable(&event.event) {
            Some(decision) => (decision, OrderAnswer::Unknown),
            None => {
                let answer = self.query(&event.event).await;
                (decide(&event.event, &answer), order_answer(&answer))
            }
        };
        let decision = match decision {
            Decision::NotFound(reason) => {
                settle_not_found(&event, &reason, self.settings.not_found_checks, self.settings.not_found_min_age)
            }
            other => other,
        };
        drop(slot);
        let verdict = match &decision {
            Decision::Confirmed => Verdict::Confirmed,
            Decision::Rejected(r) => Verdict::Rejected(r.clone()),
            Decision::Unconfirmed(r) => Verdict::Unconfirmed(r.clone()),
            // NotFound was settled above into Rejected or Retry; both arms keep the match total.
            Decision::Retry(r) | Decision::NotFound(r) => Verdict::Retry {
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
        let decided =
            Decided { event_id: event.event.event_id.clone(), token: event.leased_by.clone(), verdict, answer };
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
        let (id, mch, order) = (&event.event.event_id, &event.event.mch_id, &event.event.pay_order_id);
        let attempt = event.confirm_attempts;
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

    async fn query(&self, event: &StoredEvent) -> Result<QueriedOrder, QueryError> {
        let version = event.api_version;
        let started = Instant::now();
        let answer = self.client.query(version, &event.mch_id, &event.pay_order_id).await;
        let result = match &answer {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        metrics::histogram!("iotpay_query_duration_seconds", "api_version" => version.as_str(), "result" => result)
            .record(started.elapsed().as_secs_f64());
        answer
    }
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

/// Logs a check that panicked (its event's lease expires and it is checked again).
fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "a confirmation check panicked; its lease will expire");
    }
}
