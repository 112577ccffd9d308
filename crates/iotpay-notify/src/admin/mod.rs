//! The admin listener (`ADMIN_LISTEN_ADDR`): the JSON API under `/api/v1` (bearer tokens) and the
//! operator console at `/` (session cookie), plus `/healthz`, `/readyz` and `/metrics`. It has its
//! own router and state, separate from the public notify listener, and starts only when
//! `ADMIN_TOKENS` is set.

pub mod api;
pub mod auth;
pub mod console;
pub mod error;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::iotpay::Merchants;
use crate::readiness::Readiness;
use crate::telemetry;
use auth::AdminTokens;
use error::ApiError;

/// Largest admin request body.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest admin request (long polls included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// State shared by the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// The database pool.
    pub pool: PgPool,
    /// Accepted bearer tokens.
    pub tokens: Arc<AdminTokens>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The database's reachability (shared with the public listener's probe).
    pub readiness: Readiness,
    /// Whether every background worker is still running.
    pub health: crate::health::Health,
    /// How long a console session lasts.
    pub session_ttl: Duration,
    /// Merchants whose orders may be registered.
    pub merchants: Arc<Merchants>,
    /// How long after registration an order is first reconciled.
    pub reconcile_after: Duration,
}

/// Every admin route: `/api/...` behind bearer tokens, the console, health and metrics.
pub fn router(state: AdminState) -> Router {
    let api = api::routes()
        .fallback(|| async { ApiError::NotFound("no such API route".into()) })
        .layer(middleware::from_fn_with_state(state.clone(), auth::require_bearer));
    Router::new()
        .nest("/api", api)
        .merge(console::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AdminState>| async move { crate::readiness::answer(&s.readiness, &s.health).await }),
        )
        .route("/metrics", get(|State(s): State<AdminState>| async move { telemetry::metrics_answer(&s.metrics) }))
        .layer(middleware::from_fn(security_headers))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        // Outside the limits, so their refusals under /api/ get the API's error body too.
        .layer(middleware::from_fn(error::api_errors_as_json))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Headers every admin answer carries: nothing is cached, framed, sniffed or loaded from elsewhere.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response.into_response()
}

/// What the admin listener is configured with: its tokens (`ADMIN_TOKENS`: without them there is
/// no admin listener) and what its routes need.
#[derive(Clone)]
pub struct AdminSettings {
    /// Accepted bearer tokens.
    pub tokens: AdminTokens,
    /// Merchants whose orders may be registered.
    pub merchants: Arc<Merchants>,
    /// How long after registration an order is first reconciled (`RECONCILE_AFTER_SECS`).
    pub reconcile_after: Duration,
}

/// A bound, not yet serving, admin listener.
pub struct AdminApp {
    listener: TcpListener,
    router: Router,
}

impl AdminApp {
    /// Binds `addr` (`ADMIN_LISTEN_ADDR`).
    pub async fn bind(
        addr: SocketAddr,
        settings: AdminSettings,
        pool: PgPool,
        readiness: Readiness,
        health: crate::health::Health,
    ) -> std::io::Result<Self> {
        Ok(Self::on(TcpListener::bind(addr).await?, settings, pool, readiness, health))
    }

    /// Serves on an already bound `listener`.
    pub fn on(
        listener: TcpListener,
        settings: AdminSettings,
        pool: PgPool,
        readiness: Readiness,
        health: crate::health::Health,
    ) -> Self {
        let state = AdminState {
            pool,
            tokens: Arc::new(settings.tokens),
            metrics: telemetry::metrics_handle(),
            readiness,
            health,
            session_ttl: console::SESSION_TTL,
            merchants: settings.merchants,
            reconcile_after: settings.reconcile_after,
        };
        Self { listener, router: router(state) }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        crate::serve::serve_with_limits(self.listener, self.router, crate::serve::ConnectionLimits::default(), shutdown)
            .await
    }
}
