//! Serving a router with limits `axum::serve` does not have: a header-read timeout, a cap on
//! open connections, and a cap per client address. Used by every listener of the service.
//!
//! A connection over a cap is closed at once, before anything is read from it (the client sees
//! a reset or EOF and retries, as IOTPay does). A connection that does not finish its request
//! headers within the header-read timeout (also the longest idle time between two requests on
//! a kept-alive connection) is closed. Body uploads are bounded by the route's own timeout.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Connection limits of one listener.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Longest wait for a request's headers (and for the next request on an idle connection).
    pub header_read_timeout: Duration,
    /// Most open connections in all.
    pub max_connections: usize,
    /// Most open connections from one peer address (0 = no per-address cap).
    pub max_connections_per_address: usize,
    /// Peers exempt from the per-address cap (trusted proxies carry many clients).
    pub exempt: Vec<IpNet>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_address: 256,
            exempt: Vec::new(),
        }
    }
}

/// Open connections per peer address; a slot is given back when its guard drops.
#[derive(Debug, Default, Clone)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct AddressSlot {
    map: PerAddress,
    ip: IpAddr,
}

impl PerAddress {
    fn take(&self, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot { map: self.clone(), ip })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.map.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` resolves; then stops accepting,
/// lets each connection finish its in-flight request, and returns once all are closed.
/// Handlers get the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve_with_limits(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_address = PerAddress::default();
    let tracker = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    metrics::counter!("iotpay_connections_refused_total", "reason" => "accept_error").increment(1);
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slots) = admit(&open, &per_address, &limits, peer.ip()) else { continue };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let stop = stop.clone();
        tracker.spawn(async move {
            let _slots = slots;
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Takes a connection slot and the peer's slot, or counts the refusal (the caller then drops
/// the connection, closing it unread).
fn admit(
    open: &Arc<Semaphore>,
    per_address: &PerAddress,
    limits: &ConnectionLimits,
    peer: IpAddr,
) -> Option<(OwnedSemaphorePermit, Option<AddressSlot>)> {
    let Ok(permit) = open.clone().try_acquire_owned() else {
        metrics::counter!("iotpay_connections_refused_total", "reason" => "max_connections").increment(1);
        return None;
    };
    let peer = peer.to_canonical();
    if limits.max_connections_per_address == 0 || limits.exempt.iter().any(|n| n.contains(&peer)) {
        return Some((permit, None));
    }
    match per_address.take(peer, limits.max_connections_per_address) {
        Some(slot) => Some((permit, Some(slot))),
        None => {
            metrics::counter!("iotpay_connections_refused_total", "reason" => "per_address").increment(1);
            None
        }
    }
}
