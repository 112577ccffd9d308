//! The whole service in one process: the HTTP app and the background workers (confirmation,
//! reconciliation, forwarding), started together, supervised together, stopped together.
//! `serve` and `demo` both run this.

use std::net::SocketAddr;

use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminApp, AdminSettings};
use crate::app::{App, Listeners};
use crate::config::Config;
use crate::confirm::Confirmer;
use crate::forward::Forwarder;
use crate::health::Health;
use crate::reconcile::{Parts, Reconciler};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A worker's HTTP client could not be built.
    #[error("building a worker's HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A running service; stops when its shutdown token is cancelled, or when one of its tasks fails.
pub struct Running {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    /// The caller's token: cancelled, everything stops (the listeners first).
    shutdown: CancellationToken,
    /// The workers' token, a child of `shutdown`: after a failure the workers stop first.
    work: CancellationToken,
    /// The HTTP and admin servers (each resolves once it ended and was accounted for).
    listeners: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    health: Health,
}

/// Binds the HTTP app and starts it with every worker the configuration asks for.
///
/// Every long-lived task is supervised by the app's [`Health`]: the workers, the group-commit
/// writers their constructors start (inside [`Health::scope`]), the readiness probe and both
/// listeners. One that ends unexpectedly fails `/readyz` and makes [`Running::wait`] an error.
pub async fn start(config: &Config, pool: PgPool, shutdown: CancellationToken) -> Result<Running, StartError> {
    let listeners = Listeners::bind(config).map_err(|e| StartError::Bind { addr: e.addr, source: e.source })?;
    start_on(config, pool, shutdown, listeners).await
}

/// [`start`] on listeners bound beforehand (`serve` binds them before migrating).
pub async fn start_on(
    config: &Config,
    pool: PgPool,
    shutdown: CancellationToken,
    listeners: Listeners,
) -> Result<Running, StartError> {
    let tokio_listener = |l, addr| crate::app::tokio_listener(l).map_err(|source| StartError::Bind { addr, source });
    let app = App::on(tokio_listener(listeners.public, config.listen_addr)?, config, pool.clone());
    let addr = app.local_addr();
    let health = app.health();
    // Listeners::bind binds the admin port only when ADMIN_TOKENS is set.
    let admin = match (listeners.admin, admin_settings(config)) {
        (Some(l), Some(settings)) => {
            let l = tokio_listener(l, config.admin_listen_addr)?;
            Some(AdminApp::on(l, settings, pool.clone(), app.readiness(), health.clone()))
        }
        _ => None,
    };
    if admin.is_none() {
        tracing::warn!("ADMIN_TOKENS is not set: the admin listener (API and console) is not started");
    }
    let admin_addr = admin.as_ref().map(AdminApp::local_addr);
    // Everything that can fail is built before anything is spawned: an error leaves no task behind.
    let pressure = app.pressure();
    let confirmer = health.scope(|| confirmer(pool.clone(), config))?.yielding_to(pressure.clone());
    let reconciler = reconciler(pool.clone(), config)?;
    let forwarder = match health.scope(|| forwarder(pool, config)).transpose()? {
        Some(forwarder) => Some(forwarder.yielding_to(pressure)),
        None => {
            tracing::info!("FORWARD_URLS is empty: confirmed events are not forwarded");
            None
        }
    };
    let work = shutdown.child_token();
    let mut workers = vec![
        health.spawn_until("confirm-worker", &work, confirmer.run(work.clone())),
        health.spawn_until("reconcile-worker", &work, reconciler.run(work.clone())),
    ];
    if let Some(forwarder) = forwarder {
        workers.push(health.spawn_until("forward-worker", &work, forwarder.run(work.clone())));
    }
    let stop = shutdown.clone();
    let mut listeners =
        vec![health.spawn_until("http-server", &shutdown, app.serve(async move { stop.cancelled().await }))];
    if let Some(admin) = admin {
        let stop = shutdown.clone();
        listeners.push(health.spawn_until(
            "admin-server",
            &shutdown,
            admin.serve(async move { stop.cancelled().await }),
        ));
    }
    Ok(Running { addr, admin_addr, shutdown, work, listeners, workers, health })
}

/// The admin listener's settings, from the configuration; `None` when `ADMIN_TOKENS` is not set
/// (no admin listener).
pub fn admin_settings(config: &Config) -> Option<AdminSettings> {
    Some(AdminSettings {
        tokens: config.admin_tokens.clone()?,
        merchants: std::sync::Arc::new(config.merchants.clone()),
        reconcile_after: config.reconcile.after,
    })
}

/// The confirmation worker as the service runs it, from the configuration (its decision writers
/// start: call within a runtime, and within [`Health::scope`] to have them supervised).
pub fn confirmer(pool: PgPool, config: &Config) -> Result<Confirmer, reqwest::Error> {
    Ok(Confirmer::new(pool, config.query_client()?, config.confirm.clone(), config.forward_urls.clone()))
}

/// The reconciler replica the service runs, from the configuration; its claims last as long as
/// the confirmation worker's.
pub fn reconciler(pool: PgPool, config: &Config) -> Result<Reconciler, reqwest::Error> {
    let parts = Parts {
        client: config.query_client()?,
        settings: config.reconcile.clone(),
        lease: config.confirm.lease,
        forward_urls: config.forward_urls.clone(),
        zone: config.iotpay_time_zone.clone(),
    };
    Ok(Reconciler::new(pool, parts, &format!("reconciler-{}", std::process::id())))
}

/// The forwarding worker, from the configuration; `None` when `FORWARD_URLS` is empty.
pub fn forwarder(pool: PgPool, config: &Config) -> Option<Result<Forwarder, reqwest::Error>> {
    let secret = config.forward_secret.clone().filter(|_| !config.forward_urls.is_empty())?;
    Some(Forwarder::new(pool, config.forward_urls.clone(), secret, config.forward.clone(), None))
}

impl Running {
    /// The HTTP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address; `None` when `ADMIN_TOKENS` is not set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Adds a background task to supervise like the built-in workers: if it ends (returns or
    /// panics) before shutdown is requested, the service fails (see [`Running::wait`]).
    pub fn supervise(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.workers.push(self.health.spawn_until("supervised-task", &self.work, task));
    }

    /// Waits until shutdown is requested, in-flight requests are answered and workers stopped.
    ///
    /// A supervised task that ends unexpectedly (a panic, an error, a bug returning early) does
    /// not leave the service limping: `/readyz` turns `503` at once, the workers stop (in-flight
    /// checks and deliveries get their grace) while the listeners still answer, so a balancer
    /// sees the `503` and notifications are still stored meanwhile if the store path works; then
    /// the listeners stop and this returns an error, so the process exits non-zero and its
    /// supervisor restarts it.
    pub async fn wait(self) -> std::io::Result<()> {
        let failed = tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = self.health.failed() => true,
        };
        let mut workers = self.workers;
        if failed {
            self.work.cancel();
            for worker in workers.drain(..) {
                let _ = worker.await;
            }
            self.shutdown.cancel();
        }
        for listener in self.listeners {
            let _ = listener.await;
        }
        for worker in workers {
            let _ = worker.await;
        }
        match self.health.failure() {
            Some(why) => Err(std::io::Error::other(format!("a background task stopped unexpectedly: {why}"))),
            None => Ok(()),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
