//! The whole service in one process: the HTTP app and the background workers (confirmation,
//! forwarding), started together and stopped together. `serve` and `demo` both run this.

use std::net::SocketAddr;

use sqlx::PgPool;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::admin::AdminApp;
use crate::app::{App, Listeners};
use crate::config::Config;
use crate::health::Health;

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

/// A running service; stops when its shutdown token is cancelled.
pub struct Running {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    admin: Option<JoinHandle<std::io::Result<()>>>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    workers: JoinSet<()>,
    health: Health,
}

/// Binds the HTTP app and starts it with every worker the configuration asks for.
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
    let admin = match listeners.admin {
        Some(l) => {
            let l = tokio_listener(l, config.admin_listen_addr)?;
            AdminApp::on(l, config, pool.clone(), app.readiness(), health.clone())
        }
        None => None,
    };
    if admin.is_none() {
        tracing::warn!("ADMIN_TOKENS is not set: the admin listener (API and console) is not started");
    }
    let admin_addr = admin.as_ref().map(AdminApp::local_addr);
    let mut workers = JoinSet::new();
    let pressure = app.pressure();
    crate::confirm::spawn(&mut workers, pool.clone(), config, shutdown.clone(), pressure.clone())?;
    workers.spawn(crate::reconcile::Reconciler::from_config(pool.clone(), config)?.run(shutdown.clone()));
    match (config.forward_urls.is_empty(), config.forward_secret.clone()) {
        (false, Some(secret)) => {
            let forwarder = crate::forward::Forwarder::new(
                pool,
                config.forward_urls.clone(),
                secret,
                config.forward.clone(),
                None,
            )?
            .yielding_to(pressure);
            workers.spawn(forwarder.run(shutdown.clone()));
        }
        _ => tracing::info!("FORWARD_URLS is empty: confirmed events are not forwarded"),
    }
    let stop = shutdown.clone();
    let server = tokio::spawn(app.serve(async move { stop.cancelled().await }));
    let admin = admin.map(|a| {
        let stop = shutdown.clone();
        tokio::spawn(a.serve(async move { stop.cancelled().await }))
    });
    Ok(Running { addr, admin_addr, admin, shutdown, server, workers, health })
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
        self.workers.spawn(task);
    }

    /// Waits until shutdown is requested, in-flight requests are answered and workers stopped.
    ///
    /// A worker that ends before shutdown was requested (a panic, or a bug returning early) does
    /// not leave the service limping: `/readyz` turns `503`, the service shuts down, and this
    /// returns an error, so the process exits non-zero and its supervisor restarts it.
    pub async fn wait(mut self) -> std::io::Result<()> {
        let mut server = self.server;
        let mut failed: Option<String> = None;
        let served = loop {
            tokio::select! {
                served = &mut server => break served,
                Some(done) = self.workers.join_next(), if !self.workers.is_empty() => {
                    if !self.shutdown.is_cancelled() && failed.is_none() {
                        let why = match done {
                            Err(e) if e.is_panic() => "panicked".to_owned(),
                            Err(e) => e.to_string(),
                            Ok(()) => "returned".to_owned(),
                        };
                        self.health.fail();
                        tracing::error!(why, "a background worker stopped unexpectedly; shutting down");
                        failed = Some(why);
                        self.shutdown.cancel();
                    }
                }
            }
        };
        let served = match served {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        };
        // The server also ends if its listener fails; the workers must stop either way.
        self.shutdown.cancel();
        if let Some(admin) = self.admin {
            let _ = admin.await;
        }
        self.workers.join_all().await;
        match failed {
            Some(why) => Err(std::io::Error::other(format!("a background worker stopped unexpectedly ({why})"))),
            None => served,
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
