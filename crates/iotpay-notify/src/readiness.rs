//! Readiness answered from memory: one background probe pings the database at most once per
//! [`PROBE_INTERVAL`], and `/readyz` reads its latest result. However often `/readyz` is called
//! (it is unauthenticated on the public port), the database sees one `SELECT 1` per interval.

use std::time::Duration;

use axum::http::StatusCode;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Time between two probes.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for one probe's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The latest probe result; `None` until the first probe has answered.
#[derive(Clone)]
pub struct Readiness {
    rx: watch::Receiver<Option<bool>>,
}

/// The writing side, owned by the probe loop.
pub struct Probe {
    tx: watch::Sender<Option<bool>>,
    pool: PgPool,
}

/// A readiness state and the probe that keeps it fresh (run it with [`Probe::run`]).
pub fn new(pool: PgPool) -> (Readiness, Probe) {
    let (tx, rx) = watch::channel(None);
    (Readiness { rx }, Probe { tx, pool })
}

impl Readiness {
    /// True when the last probe reached the database. Before the first probe has answered, waits
    /// for it (at most the probe timeout and a little more). False once the probe is gone: its
    /// last answer is no longer news.
    pub async fn is_ready(&self) -> bool {
        let mut rx = self.rx.clone();
        if rx.has_changed().is_err() {
            return false;
        }
        let first = tokio::time::timeout(PROBE_TIMEOUT + Duration::from_millis(500), async {
            rx.wait_for(Option::is_some).await.map(|v| v.unwrap_or(false)).unwrap_or(false)
        });
        first.await.unwrap_or(false)
    }
}

/// `/readyz` of both listeners: from the background probe, never a query per request, and
/// failing for good once a supervised background task stopped ([`crate::health`]).
pub async fn answer(readiness: &Readiness, health: &crate::health::Health) -> (StatusCode, &'static str) {
    if !health.is_ok() {
        (StatusCode::SERVICE_UNAVAILABLE, "a background task stopped")
    } else if readiness.is_ready().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
    }
}

impl Probe {
    /// Probes until `stop` is cancelled. The service supervises it ([`crate::app::App::serve`]):
    /// were it to stop early, `/readyz` would otherwise repeat its last answer for good.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let ok = crate::store::ping(&self.pool, PROBE_TIMEOUT).await;
            // Only the transitions are logged: an outage is one line when it starts and one
            // when it ends, not one per probe.
            match self.tx.send_replace(Some(ok)) {
                Some(true) | None if !ok => tracing::error!("not ready: the database does not answer"),
                Some(false) if ok => tracing::info!("ready again: the database answers"),
                _ => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
    }
}
