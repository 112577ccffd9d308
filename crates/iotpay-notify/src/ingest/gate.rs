//! The notify route's front door: a layer in front of the body limit, load shedding and the
//! concurrency limit, deciding from the peer address and headers alone.
//!
//! - A source outside `NOTIFY_ALLOWED_CIDRS` (or one a trusted proxy could not name) gets `403`
//!   at once, before its body is read or a request slot is taken.
//! - An address with failure budget left goes on to the route as usual.
//! - An address out of budget is on probation: its body is read, up to [`PROBATION_MAX_BODY`]
//!   (announced larger: `429` at once) and within [`PROBATION_READ_TIMEOUT`], whether it comes
//!   with a `Content-Length` or chunked, and let through only if its sign verifies under a
//!   configured key. So a correctly signed notification is never refused by the budget, while
//!   a flood costs one short read and one MD5 per request and no log line.
//!
//! Probation reads take no slot from a pool: a pool is something an attacker can hold, and
//! whoever holds it refuses the genuine notifications that need it (a shared pool lets one
//! address refuse everyone's; a pool per address lets one address refuse its neighbours' behind
//! the same NAT or proxy). They are bounded instead by the connection caps of [`crate::serve`]:
//! HTTP/1.1 reads one request at a time per connection, so at most one probation read per open
//! connection, each at most 16 KiB (hyper itself may buffer up to about 400 KiB of headers per
//! connection) and 2 s.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::guard::GuardError;
use super::Ingest;

/// Largest body read from an address on probation: a notification is about 1 KiB.
pub const PROBATION_MAX_BODY: usize = 16 * 1024;
/// Longest wait for the body of an address on probation, after its headers.
pub const PROBATION_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The admitted client of a request (set by [`gate`] for the handler).
#[derive(Debug, Clone, Copy)]
pub struct Admitted {
    /// The client's canonical address.
    pub ip: IpAddr,
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
    // Without a Content-Length (chunked) the body is read under the same cap: it is how some
    // senders and proxies send, and a signed one must pass. (hyper already answered `400` to a
    // malformed Content-Length.)
    if announced.is_some_and(|n| n > PROBATION_MAX_BODY) {
        return Err(refuse(GuardError::RateLimited));
    }
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
