//! The reconciler: claims due expected orders, queries IOTPay by `mchOrderNo` outside any
//! transaction, and records each decision under its lease. Any number of replicas may run.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::rules::{backoff, decide};
use super::ReconcileSettings;
use crate::config::Config;
use crate::domain::{ApiVersion, MchId};
use crate::iotpay::query::{QueryClient, QueryError};
use crate::store::reconcile::{self, ClaimedOrder, Outcome};

/// Orders claimed per look at the queue (all queried concurrently).
const BATCH: i64 = 16;

/// One reconciler replica.
#[derive(Clone)]
pub struct Reconciler {
    pool: PgPool,
    client: QueryClient,
    settings: ReconcileSettings,
    lease: Duration,
    forward_urls: Arc<Vec<String>>,
    name: String,
}

impl Reconciler {
    /// Builds a replica named `name` (its lease tokens start with it).
    pub fn new(
        pool: PgPool,
        client: QueryClient,
        settings: ReconcileSettings,
        lease: Duration,
        forward_urls: Vec<String>,
        name: &str,
    ) -> Self {
        Self { pool, client, settings, lease, forward_urls: Arc::new(forward_urls), name: name.to_owned() }
    }

    /// Builds the replica the service runs.
    pub fn from_config(pool: PgPool, config: &Config) -> Result<Self, reqwest::Error> {
        let client = config.query_client()?;
        let name = format!("reconciler-{}", std::process::id());
        Ok(Self::new(pool, client, config.reconcile.clone(), config.confirm.lease, config.forward_urls.clone(), &name))
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let worked = match self.run_once().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "reconciler: database unavailable");
                    0
                }
            };
            if worked == 0 {
                self.publish_gauges().await;
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
    pub async fn run_once(&self) -> Result<usize, crate::store::StoreError> {
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
        if let Ok(counts) = reconcile::count_by_state(&self.pool).await {
            for state in ["expected", "paid", "cancelled", "expired", "mismatch"] {
                let n = counts.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
                metrics::gauge!("iotpay_expected_orders", "state" => state).set(n as f64);
            }
        }
    }

    async fn reconcile(&self, order: ClaimedOrder) {
        let answer =
            if order.notified { Err(QueryError::Fail("not queried".into())) } else { self.query(&order).await };
        if !order.notified {
            let result = match &answer {
                Ok(_) => "answered",
                Err(e) => e.kind(),
            };
            metrics::counter!("iotpay_reconciliation_queries_total", "result" => result).increment(1);
        }
        let retry = backoff(order.checks - 1, self.settings.first_retry, self.settings.max_backoff);
        let outcome = decide(&order, answer, retry);
        match reconcile::apply(&self.pool, &order, &outcome, &self.forward_urls).await {
            Ok(true) => match &outcome {
                Outcome::Paid(p) => {
                    metrics::counter!("iotpay_reconciliation_payments_found_total").increment(1);
                    tracing::warn!(
                        mch_id = order.mch_id,
                        mch_order_no = order.mch_order_no,
                        event_id = p.event_id,
                        "payment found by reconciliation: IOTPay's notification never arrived"
                    );
                }
                Outcome::Final(state, reason) => {
                    tracing::info!(
                        mch_id = order.mch_id,
                        mch_order_no = order.mch_order_no,
                        state,
                        reason,
                        "order settled"
                    )
                }
                _ => {}
            },
            Ok(false) => {
                tracing::info!(mch_order_no = order.mch_order_no, "reconciliation lease lost; decision dropped")
            }
            Err(e) => tracing::warn!(error = %e, mch_order_no = order.mch_order_no, "reconciliation not recorded"),
        }
    }

    async fn query(&self, order: &ClaimedOrder) -> Result<crate::iotpay::query::QueriedOrder, QueryError> {
        let version = match order.api_version.as_str() {
            "v1" => ApiVersion::V1,
            "v2" => ApiVersion::V2,
            _ => ApiVersion::V3,
        };
        let mch = MchId::parse(&order.mch_id).map_err(|_| QueryError::NoSigningKey(order.mch_id.clone()))?;
        self.client.query_by_mch_order_no(version, &mch, &order.mch_order_no).await.map(|found| found.order)
    }
}
