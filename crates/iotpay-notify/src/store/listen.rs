//! LISTEN with reconnect: one task per channel turns Postgres NOTIFYs into wake-ups, and keeps
//! re-establishing its connection while the database is away. Both workers poll as well, so a
//! lost connection only costs promptness, never an event.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Wake-ups from one LISTEN channel; clones share the task. A burst of announcements between two
/// looks is one wake-up (a `watch` keeps only the latest value), which is what a sweep wants.
#[derive(Clone)]
pub struct Wakeups {
    channel: &'static str,
    changed: watch::Receiver<u64>,
    shutdown: CancellationToken,
}

impl Wakeups {
    /// Listens on `channel` until `shutdown`, retrying a lost or refused connection every
    /// `retry`. Spawns the listening task: call within a runtime.
    pub fn listen(pool: PgPool, channel: &'static str, retry: Duration, shutdown: CancellationToken) -> Self {
        let (wake, changed) = watch::channel(0u64);
        tokio::spawn(run(pool, channel, retry, wake, shutdown.clone()));
        Self { channel, changed, shutdown }
    }

    /// Resolves at the next announcement, or when a (re)connection may have missed some; never
    /// after shutdown.
    ///
    /// # Panics
    /// When the listening task stopped before shutdown (it panicked): the panic moves into the
    /// worker that waits here, which is supervised, so the service fails its health instead of
    /// running on without wake-ups.
    pub async fn next(&mut self) {
        if self.changed.changed().await.is_err() {
            assert!(self.shutdown.is_cancelled(), "the LISTEN task of {} stopped", self.channel);
            std::future::pending::<()>().await;
        }
    }
}

async fn run(
    pool: PgPool,
    channel: &'static str,
    retry: Duration,
    wake: watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    // One warning per outage, not one per retry.
    let mut warned = false;
    while !shutdown.is_cancelled() {
        let attempt = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match attempt.await {
            Ok(mut listener) => {
                if warned {
                    tracing::info!(channel, "LISTEN connection is back");
                }
                // Anything stored while nobody listened was not announced: sweep now.
                wake.send_modify(|n| *n += 1);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        // `try_recv` answers `None` when sqlx re-established the connection
                        // itself: announcements may have been lost meanwhile, so wake as well.
                        r = listener.try_recv() => match r {
                            Ok(_) => wake.send_modify(|n| *n += 1),
                            Err(e) => {
                                tracing::warn!(channel, error = %e, "LISTEN connection lost; polling until it is back");
                                warned = true;
                                break;
                            }
                        },
                    }
                }
            }
            Err(e) if !warned => {
                tracing::warn!(channel, error = %e, "cannot LISTEN; polling meanwhile");
                warned = true;
            }
            Err(e) => tracing::debug!(channel, error = %e, "cannot LISTEN yet"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}
