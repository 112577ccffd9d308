//! The HTTP application: routes, shared state, serving with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::BoxError;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::ingest::guard::Guard;
use crate::ingest::{self, Ingest, MAX_BODY_BYTES};
use crate::pressure::IngestPressure;
use crate::readiness::{self, Probe, Readiness};
use crate::telemetry;
use tokio_util::sync::CancellationToken;

/// State shared by the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The ingest step.
    pub ingest: Ingest,
    /// The database pool.
    pub pool: PgPool,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The database's reachability, refreshed in the background (`/readyz` reads it).
    pub readiness: Readiness,
    /// Whether every background worker is still running.
    pub health: crate::health::Health,
}

impl FromRef<AppState> for Ingest {
    fn from_ref(s: &AppState) -> Ingest {
        s.ingest.clone()
    }
}

/// Builds the router with every route of CONTRACT.md.
pub fn router(state: AppState, limits: RouteLimits) -> Router {
    // The gate is the outermost layer: a refused source is answered from its address and
    // headers alone, before it can hold a request slot or have its body read.
    let notify = post(ingest::notify)
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(refused))
                .load_shed()
                .concurrency_limit(limits.max_concurrent_requests)
                .timeout(limits.request_timeout),
        )
        .layer(axum::middleware::from_fn_with_state(state.ingest.clone(), ingest::gate::gate));
    Router::new()
        .route("/iotpay/notify", notify)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Limits on the notify route.
#[derive(Debug, Clone, Copy)]
pub struct RouteLimits {
    /// Longest request, body upload included.
    pub request_timeout: Duration,
    /// Most requests in progress; more are shed.
    pub max_concurrent_requests: usize,
}

/// Requests refused by the route's limits, in the route's own answer format.
async fn refused(error: BoxError) -> (StatusCode, &'static str) {
    let (status, outcome) = if error.is::<tower::timeout::error::Elapsed>() {
        (StatusCode::REQUEST_TIMEOUT, "timeout")
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "refused")
    };
    metrics::counter!("iotpay_notifications_total", "outcome" => outcome).increment(1);
    tracing::warn!(outcome, "notification refused by route limits");
    (status, "FAIL")
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    readiness::answer(&state.readiness, &state.health).await
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    telemetry::metrics_answer(&state.metrics)
}

/// A bound, not yet serving, HTTP application.
pub struct App {
    listener: TcpListener,
    router: Router,
    pressure: IngestPressure,
    readiness: Readiness,
    probe: Probe,
    connections: crate::serve::ConnectionLimits,
    health: crate::health::Health,
}

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({var})")]
pub struct BindError {
    /// The variable that names the address.
    pub var: &'static str,
    /// The address.
    pub addr: SocketAddr,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// The service's listeners, bound before anything else is done (migrations included): an address
/// in use fails at once, and the socket that was checked is the one that serves, so nothing can
/// take the port in between.
#[derive(Debug)]
pub struct Listeners {
    /// `LISTEN_ADDR`.
    pub public: std::net::TcpListener,
    /// `ADMIN_LISTEN_ADDR`; `None` (and the port left unbound) when `ADMIN_TOKENS` is not set.
    pub admin: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Binds `LISTEN_ADDR`, and `ADMIN_LISTEN_ADDR` when `ADMIN_TOKENS` is set.
    pub fn bind(config: &Config) -> Result<Self, BindError> {
        let bind = |var, addr| std::net::TcpListener::bind(addr).map_err(|source| BindError { var, addr, source });
        let public = bind("LISTEN_ADDR", config.listen_addr)?;
        let admin = match config.admin_tokens {
            Some(_) => Some(bind("ADMIN_LISTEN_ADDR", config.admin_listen_addr)?),
            None => None,
        };
        Ok(Self { public, admin })
    }
}

/// A bound listener for tokio (inside the runtime).
pub fn tokio_listener(listener: std::net::TcpListener) -> std::io::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

impl App {
    /// Binds `config.listen_addr` (port 0 picks a free port) and builds the state.
    pub async fn bind(config: &Config, pool: PgPool) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen_addr).await?;
        Ok(Self::on(listener, config, pool))
    }

    /// Builds the state to serve on an already bound `listener`.
    pub fn on(listener: TcpListener, config: &Config, pool: PgPool) -> Self {
        let zone = config.iotpay_time_zone.clone();
        let health = crate::health::Health::default();
        // Its group-commit writers are supervised by this app's health.
        let ingest = health.scope(|| {
            Ingest::new(
                pool.clone(),
                Arc::new(config.merchants.clone()),
                zone,
                config.store_timeout,
                config.ingest_batch,
                Guard::new(config.guard.clone()),
            )
        });
        let pressure = ingest.pressure();
        let (readiness, probe) = readiness::new(pool.clone());
        let state = AppState {
            ingest,
            pool,
            metrics: telemetry::metrics_handle(),
            readiness: readiness.clone(),
            health: health.clone(),
        };
        let limits = RouteLimits {
            request_timeout: config.request_timeout,
            max_concurrent_requests: config.max_concurrent_requests,
        };
        Self {
            listener,
            router: router(state, limits),
            pressure,
            readiness,
            probe,
            connections: config.connections.clone(),
            health,
        }
    }

    /// How busy the notify path is; background workers of this process yield to it.
    pub fn pressure(&self) -> IngestPressure {
        self.pressure.clone()
    }

    /// The database's reachability as `/readyz` reports it (shared with the admin listener).
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// What `/readyz` reports about the background workers.
    pub fn health(&self) -> crate::health::Health {
        self.health.clone()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then stops accepting and finishes in-flight requests.
    /// The readiness probe runs meanwhile, supervised: if it stops, `/readyz` fails.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let stop_probe = CancellationToken::new();
        let probe = self.health.spawn_until("readiness-probe", &stop_probe, self.probe.run(stop_probe.clone()));
        let served = crate::serve::serve_with_limits(self.listener, self.router, self.connections, shutdown).await;
        stop_probe.cancel();
        let _ = probe.await;
        served
    }
}
