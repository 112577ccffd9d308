//! The reconciler: claims due expected orders, queries IOTPay by `mchOrderNo` outside any
//! transaction (only for orders no usable notification settles), and records the decisions
//! through group commit, each under its claim's lease. Any number of replicas may run.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::rules::{backoff, decide, without_query};
use super::ReconcileSettings;
use crate::domain::{ApiVersion, MchId};
use crate::iotpay::query::{FoundOrder, QueryClient, QueryError};
use crate::iotpay::TimeZone;
use crate::store::group_commit::{GroupCommit, GroupSettings};
use crate::store::reconcile::{self, Applied, ClaimedOrder, DecisionWriter, OrderDecision, Outcome};
use crate::store::StoreError;

/// Orders claimed per look at the queue (all looked at concurrently).
const BATCH: i64 = 16;

/// One reconciler replica.
#[derive(Clone)]
pub struct Reconciler {
    pool: PgPool,
    client: QueryClient,
    settings: ReconcileSettings,
    lease: Duration,
    zone: TimeZone,
    decisions: GroupCommit<DecisionWriter>,
    name: String,
}

/// The parts a reconciler is built from.
pub struct Parts {
    /// IOTPay's query API.
    pub client: QueryClient,
    /// Its knobs.
    pub settings: ReconcileSettings,
    /// How long a claim holds an order.
    pub lease: Duration,
    /// Where found payments are forwarded.
    pub forward_urls: Vec<String>,
    /// The zone of v3/v2 `paySuccTime` (`IOTPAY_TIME_ZONE`).
    pub zone: TimeZone,
}

impl Reconciler {
    /// Builds a replica named `name` (its lease tokens start with it). Starts its decision
    /// writers: call within a runtime.
    pub fn new(pool: PgPool, parts: Parts, name: &str) -> Self {
        let writer = DecisionWriter { forward_urls: parts.forward_urls };
        let group = GroupSettings { max_batch: BATCH as usize, max_wait: Duration::ZERO, writers: 2 };
        let decisions = GroupCommit::start(pool.clone(), writer, group);
        Self {
            pool,
            client: parts.client,
            settings: parts.settings,
            lease: parts.lease,
            zone: parts.zone,
            decisions,
            name: name.to_owned(),
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut counted: Option<Instant> = None;
        loop {
            let worked = match self.run_once().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "reconciler: database unavailable");
                    0
                }
            };
            if counted.is_none_or(|at| at.elapsed() >= self.settings.gauge_interval) {
                self.publish_gauges().await;
                counted = Some(Instant::now());
            }
            if worked == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.settings.poll_interval) => {}
                }
            } else if shutdown.is_cancelled() {
                return;
            }
        }
    }

    /// Claims one batch of due orders and decides each; returns how many were claimed.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let claimed = reconcile::claim_due(&self.pool, &self.name, BATCH, self.lease).await?;
        let n = claimed.len();
        let mut tasks = JoinSet::new();
        for order in claimed {
            let me = self.clone();
            tasks.spawn(async move { me.reconcile(order).await });
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "a reconciliation panicked; its lease will expire");
            }
        }
        Ok(n)
    }

    /// `iotpay_expected_orders{state}`: orders by the state the API shows.
    async fn publish_gauges(&self) {
        match reconcile::count_by_state(&self.pool).await {
            Ok(counts) => {
                for state in ["expected", "paid", "cancelled", "expired", "mismatch"] {
                    let n = counts.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
                    metrics::gauge!("iotpay_expected_orders", "state" => state).set(n as f64);
                }
            }
            Err(e) => tracing::warn!(error = %e, "expected orders could not be counted"),
        }
    }

    async fn reconcile(&self, order: ClaimedOrder) {
        let retry = backoff(order.checks, self.settings.first_retry, self.settings.max_backoff);
        let (outcome, queried) = match without_query(&order, retry) {
            Some(outcome) => (outcome, false),
            None => {
                let (answer, outcome) = decide(&order, self.query(&order).await, retry, &self.zone);
                metrics::counter!("iotpay_reconciliation_queries_total", "result" => answer.as_str()).increment(1);
                (outcome, true)
            }
        };
        let decision = OrderDecision {
            mch_id: order.mch_id.clone(),
            mch_order_no: order.mch_order_no.clone(),
            token: order.leased_by.clone(),
            outcome,
            queried,
            retry: self.settings.first_retry,
        };
        let applied = self.decisions.submit(decision.clone()).await;
        let (mch_id, mch_order_no) = (&order.mch_id, &order.mch_order_no);
        match (applied, &decision.outcome) {
            (Ok(Applied::Paid { stored: true, deliveries }), Outcome::Paid(p)) => {
                metrics::counter!("iotpay_reconciliation_payments_found_total").increment(1);
                tracing::warn!(
                    mch_id,
                    mch_order_no,
                    event_id = p.event_id,
                    deliveries,
                    "payment found by reconciliation: IOTPay's notification never arrived"
                );
            }
            (Ok(Applied::Paid { .. }), _) => tracing::info!(mch_id, mch_order_no, "order paid"),
            (Ok(Applied::Settled), Outcome::Settled { state, reason, .. }) => {
                tracing::info!(mch_id, mch_order_no, state, reason, "order settled")
            }
            (Ok(Applied::Rescheduled), Outcome::Retry { reason, .. }) => {
                tracing::debug!(mch_id, mch_order_no, reason, "order not settled yet")
            }
            (Ok(Applied::LeaseLost), _) => {
                tracing::info!(mch_id, mch_order_no, "reconciliation lease lost; decision dropped")
            }
            (Ok(_), _) => {}
            (Err(e), _) => tracing::warn!(error = %e, mch_id, mch_order_no, "reconciliation not recorded"),
        }
    }

    async fn query(&self, order: &ClaimedOrder) -> Result<FoundOrder, QueryError> {
        let version = ApiVersion::parse(&order.api_version)
            .ok_or_else(|| QueryError::Unparseable(format!("stored api_version {}", order.api_version)))?;
        let mch = MchId::parse(&order.mch_id).map_err(|_| QueryError::NoSigningKey(order.mch_id.clone()))?;
        self.client.query_by_mch_order_no(version, &mch, &order.mch_order_no).await
    }
}
