//! The notify route's front door: a layer in front of the body limit, load shedding and the
//! concurrency limit, deciding from the peer address and headers alone.
//!
//! - A source outside `NOTIFY_ALLOWED_CIDRS` (or one a trusted proxy could not name) gets `403`
//!   at once, before its body is read or a request slot is taken.
//! - An address with failure budget left goes on to the route as usual.
//! - An address out of budget is on probation: it gets `429` at once unless it announces a small
//!   body ([`PROBATION_MAX_BODY`]); that body is read within [`PROBATION_READ_TIMEOUT`], on one of
//!   [`PROBATION_SLOTS`] separate slots (never the route's), and let through only if its sign
//!   verifies under a configured key. So a correctly signed notification is never refused by the
//!   budget, while a flood costs one short read and one MD5 per request and no log line.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::guard::GuardError;
use super::Ingest;

/// Largest body read from an address on probation (a notification is about 1 KiB).
pub const PROBATION_MAX_BODY: usize = 16 * 1024;
/// Longest wait for the body of an address on probation.
pub const PROBATION_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Bodies of addresses on probation read at once, across all of them.
pub const PROBATION_SLOTS: usize = 64;

/// The admitted client of a request (set by [`gate`] for the handler).
#[derive(Debug, Clone, Copy)]
pub struct Admitted {
    /// The client's canonical address.
    pub ip: IpAddr,
}

/// The slots that bound probation reads.
#[derive(Debug, Clone)]
pub struct Probation(Arc<Semaphore>);

impl Default for Probation {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(PROBATION_SLOTS)))
    }
}

/// The middleware: see the module documentation.
pub async fn gate(
    State(ingest): State<Ingest>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let guard = ingest.guard();
    let client = guard.client(peer.ip(), request.headers());
    let ip = match guard.admit(client) {
        Ok(ip) => ip,
        Err(e) => return refuse(e),
    };
    request.extensions_mut().insert(Admitted { ip });
    if guard.has_budget(ip) {
        return next.run(request).await;
    }
    match on_probation(&ingest, request).await {
        Ok(request) => {
            metrics::counter!("iotpay_notify_probation_total", "result" => "passed").increment(1);
            next.run(request).await
        }
        Err(response) => response,
    }
}

/// Reads a small body of an address out of budget and keeps the request only if it is signed
/// with a configured key.
async fn on_probation(ingest: &Ingest, request: Request) -> Result<Request, Response> {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_none_or(|n| n > PROBATION_MAX_BODY) {
        return Err(refuse(GuardError::RateLimited));
    }
    let Ok(_slot) = ingest.probation().0.clone().try_acquire_owned() else {
        // Every probation slot is busy: shed like any overload (IOTPay re-sends a 503).
        metrics::counter!("iotpay_notifications_total", "outcome" => "overloaded").increment(1);
        return Err((StatusCode::SERVICE_UNAVAILABLE, "FAIL").into_response());
    };
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, PROBATION_MAX_BODY);
    let Ok(Ok(bytes)) = tokio::time::timeout(PROBATION_READ_TIMEOUT, read).await else {
        return Err(refuse(GuardError::RateLimited));
    };
    if !ingest.signed_by_configured_key(&parts.headers, &bytes, parts.uri.query().unwrap_or_default().as_bytes()) {
        return Err(refuse(GuardError::RateLimited));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// A refusal by the guard: counted, never logged one by one (a flood must stay cheap).
fn refuse(e: GuardError) -> Response {
    let err = super::IngestError::Guarded(e);
    metrics::counter!("iotpay_notifications_total", "outcome" => err.outcome()).increment(1);
    (err.status(), "FAIL").into_response()
}
