//! The HTTP application: routes, shared state, serving with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::ingest::{self, Ingest, MAX_BODY_BYTES};
use crate::{store, telemetry};

/// State shared by the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The ingest step.
    pub ingest: Ingest,
    /// The database pool.
    pub pool: PgPool,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

impl FromRef<AppState> for Ingest {
    fn from_ref(s: &AppState) -> Ingest {
        s.ingest.clone()
    }
}

/// Builds the router with every route of CONTRACT.md.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/iotpay/notify", post(ingest::notify))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if store::ping(&state.pool, Duration::from_secs(2)).await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

/// A bound, not yet serving, HTTP application.
pub struct App {
    listener: TcpListener,
    router: Router,
}

impl App {
    /// Binds `config.listen_addr` (port 0 picks a free port) and builds the state.
    pub async fn bind(config: &Config, pool: PgPool) -> std::io::Result<Self> {
        let zone = jiff::tz::TimeZone::get(&config.iotpay_time_zone)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let ingest = Ingest::new(
            pool.clone(),
            Arc::new(config.merchants.clone()),
            zone,
            config.store_timeout,
            config.ingest_batch,
        );
        let state = AppState { ingest, pool, metrics: telemetry::metrics_handle() };
        let listener = TcpListener::bind(config.listen_addr).await?;
        Ok(Self { listener, router: router(state) })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then stops accepting and finishes in-flight requests.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        axum::serve(self.listener, self.router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await
    }
}
