//! Serving a router with limits `axum::serve` does not have: a header-read timeout, a cap on
//! open connections, a cap per client address, and a share of the connections reserved for the
//! sources the notify route admits. Used by both listeners of the service.
//!
//! A connection over a cap is closed at once, before anything is read from it (the client sees
//! a reset or EOF and retries, as IOTPay does). A connection that does not finish its request
//! headers within the header-read timeout (also the longest idle time between two requests on
//! a kept-alive connection) is closed. Body uploads are bounded by the route's own timeout.
//!
//! With an allowlist, a peer that is neither in it nor a trusted proxy (whose clients can only
//! be told from the headers) is *unlisted*: it can only take one of the few connections kept
//! for unlisted peers — a load balancer's health checks, a scraper — and never one of the rest,
//! which are reserved for the allowlist and the proxies. So no flood from outside the allowlist
//! can close IOTPay's connections unread. Unlisted peers are not closed at once: `/healthz` and
//! `/readyz` must still answer probes from wherever the load balancer sends them.

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

use crate::env::{invalid, number, whole_number, ConfigError};
use crate::ingest::limiter::bucket_key;

/// Connection limits of one listener.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Longest wait for a request's headers (and for the next request on an idle connection).
    pub header_read_timeout: Duration,
    /// Most open connections in all.
    pub max_connections: usize,
    /// Most open connections from one peer address, IPv6 by /64 (0 = no per-address cap).
    pub max_connections_per_address: usize,
    /// Of `max_connections`, most held by unlisted peers (only with an allowlist; 0 = unlisted
    /// peers are closed at once).
    pub max_unlisted_connections: usize,
    /// The peers the notify route admits (`NOTIFY_ALLOWED_CIDRS`); empty = every peer is listed.
    pub allowed: Vec<IpNet>,
    /// Trusted proxies: always listed, and exempt from the per-address cap (they carry many
    /// clients).
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_address: 256,
            max_unlisted_connections: DEFAULT_MAX_UNLISTED_CONNECTIONS,
            allowed: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Default share of connections for unlisted peers: plenty for health checks and scrapers.
pub const DEFAULT_MAX_UNLISTED_CONNECTIONS: usize = 64;

impl ConnectionLimits {
    /// Reads `HTTP_MAX_CONNECTIONS`, `HTTP_MAX_UNLISTED_CONNECTIONS`, `HTTP_HEADER_READ_TIMEOUT_MS`
    /// and `HTTP_MAX_CONNECTIONS_PER_ADDRESS` through `var`, for a listener whose notify route
    /// admits `allowed` (`NOTIFY_ALLOWED_CIDRS`) and believes `trusted_proxies`.
    pub fn from_vars(
        var: &impl Fn(&'static str) -> Option<String>,
        allowed: &[IpNet],
        trusted_proxies: &[IpNet],
    ) -> Result<Self, ConfigError> {
        let d = Self::default();
        let max_connections = number(var, "HTTP_MAX_CONNECTIONS", d.max_connections)?;
        let max_unlisted_connections = match var("HTTP_MAX_UNLISTED_CONNECTIONS") {
            // Health checks and scrapers need a few; the listed peers keep at least half.
            None => d.max_unlisted_connections.min(max_connections / 2),
            Some(_) => whole_number(var, "HTTP_MAX_UNLISTED_CONNECTIONS", 0)?,
        };
        if max_unlisted_connections >= max_connections {
            return Err(invalid("HTTP_MAX_UNLISTED_CONNECTIONS", "must be less than HTTP_MAX_CONNECTIONS"));
        }
        Ok(Self {
            header_read_timeout: Duration::from_millis(number(
                var,
                "HTTP_HEADER_READ_TIMEOUT_MS",
                d.header_read_timeout.as_millis() as u64,
            )?),
            max_connections,
            max_connections_per_address: whole_number(
                var,
                "HTTP_MAX_CONNECTIONS_PER_ADDRESS",
                d.max_connections_per_address,
            )?,
            max_unlisted_connections,
            // Peers outside the allowlist are told apart at accept; a trusted proxy carries many
            // clients on its connections and is judged per request.
            allowed: allowed.to_vec(),
            trusted_proxies: trusted_proxies.to_vec(),
        })
    }
}

/// Who a peer is, as far as it can be told before anything is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// A trusted proxy: its clients are judged from the headers.
    Proxy,
    /// In the allowlist, or there is none.
    Listed,
    /// Outside the allowlist and not a proxy.
    Unlisted,
}

/// Open connections per peer key ([`bucket_key`]); a slot is given back when its guard drops.
#[derive(Debug, Default, Clone)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct AddressSlot {
    map: PerAddress,
    key: IpAddr,
}

impl PerAddress {
    fn take(&self, key: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot { map: self.clone(), key })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.map.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// The connection slots of one listener.
struct Slots {
    limits: ConnectionLimits,
    /// For listed peers and proxies.
    listed: Arc<Semaphore>,
    /// For unlisted peers (none without an allowlist).
    unlisted: Arc<Semaphore>,
    per_address: PerAddress,
}

/// What an admitted connection holds until it closes.
type Held = (OwnedSemaphorePermit, Option<AddressSlot>);

impl Slots {
    fn new(limits: ConnectionLimits) -> Self {
        let total = limits.max_connections.max(1);
        // Without an allowlist nobody is unlisted; with one, the listed peers keep at least one.
        let unlisted = if limits.allowed.is_empty() { 0 } else { limits.max_unlisted_connections.min(total - 1) };
        Self {
            listed: Arc::new(Semaphore::new(total - unlisted)),
            unlisted: Arc::new(Semaphore::new(unlisted)),
            per_address: PerAddress::default(),
            limits,
        }
    }

    fn classify(&self, peer: IpAddr) -> Peer {
        if self.limits.trusted_proxies.iter().any(|n| n.contains(&peer)) {
            Peer::Proxy
        } else if self.limits.allowed.is_empty() || self.limits.allowed.iter().any(|n| n.contains(&peer)) {
            Peer::Listed
        } else {
            Peer::Unlisted
        }
    }

    /// Takes a connection slot of the peer's class and the peer's own slot, or counts the
    /// refusal (the caller then drops the connection, closing it unread).
    fn admit(&self, peer: IpAddr) -> Option<Held> {
        let peer = peer.to_canonical();
        let class = self.classify(peer);
        let pool = if class == Peer::Unlisted { &self.unlisted } else { &self.listed };
        let Ok(permit) = pool.clone().try_acquire_owned() else {
            let reason = if class == Peer::Unlisted { "max_unlisted_connections" } else { "max_connections" };
            metrics::counter!("iotpay_connections_refused_total", "reason" => reason).increment(1);
            return None;
        };
        if self.limits.max_connections_per_address == 0 || class == Peer::Proxy {
            return Some((permit, None));
        }
        match self.per_address.take(bucket_key(peer), self.limits.max_connections_per_address) {
            Some(slot) => Some((permit, Some(slot))),
            None => {
                metrics::counter!("iotpay_connections_refused_total", "reason" => "per_address").increment(1);
                None
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
    let header_read_timeout = limits.header_read_timeout;
    let slots = Slots::new(limits);
    let tracker = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
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
        let Some(held) = slots.admit(peer.ip()) else { continue };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let stop = stop.clone();
        tracker.spawn(async move {
            let _held = held;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(allowed: &str, proxies: &str, max: usize, per_address: usize, unlisted: usize) -> Slots {
        Slots::new(ConnectionLimits {
            max_connections: max,
            max_connections_per_address: per_address,
            max_unlisted_connections: unlisted,
            allowed: crate::ingest::guard::parse_networks(allowed).unwrap(),
            trusted_proxies: crate::ingest::guard::parse_networks(proxies).unwrap(),
            ..ConnectionLimits::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_per_address_cap_counts_an_ipv6_64_as_one_address() {
        let s = slots("", "", 100, 2, 0);
        let held: Vec<_> = ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9"].iter().map(|a| s.admit(ip(a))).collect();
        assert!(held.iter().all(Option::is_some));
        assert!(s.admit(ip("2001:db8:1:2:abcd::77")).is_none(), "a third address of the same /64");
        assert!(s.admit(ip("2001:db8:1:3::1")).is_some(), "another /64");
        drop(held);
        assert!(s.admit(ip("2001:db8:1:2::5")).is_some(), "slots come back when connections close");
    }

    #[test]
    fn zero_turns_the_per_address_cap_off_and_proxies_are_exempt() {
        let s = slots("", "10.0.0.0/8", 100, 0, 0);
        let held: Vec<_> = (0..50).map(|_| s.admit(ip("203.0.113.9"))).collect();
        assert!(held.iter().all(Option::is_some));
        let s = slots("", "10.0.0.0/8", 100, 1, 0);
        let held: Vec<_> = (0..50).map(|_| s.admit(ip("::ffff:10.0.0.5"))).collect();
        assert!(held.iter().all(Option::is_some), "a (mapped) trusted proxy has no per-address cap");
    }

    #[test]
    fn unlisted_peers_cannot_take_the_listed_peers_connections() {
        let s = slots("198.51.100.0/24", "10.0.0.1", 10, 0, 3);
        let strangers: Vec<_> = (0..3).map(|i| s.admit(ip(&format!("203.0.113.{i}")))).collect();
        assert!(strangers.iter().all(Option::is_some));
        assert!(s.admit(ip("203.0.113.200")).is_none(), "the unlisted share is full");
        let listed: Vec<_> =
            (0..7).map(|i| s.admit(ip(if i % 2 == 0 { "198.51.100.7" } else { "10.0.0.1" }))).collect();
        assert!(listed.iter().all(Option::is_some), "the other 7 are theirs");
        assert!(s.admit(ip("198.51.100.8")).is_none(), "and the total is still capped");
        // Without an allowlist every peer is listed and shares the whole cap.
        let open = slots("", "", 4, 0, 3);
        let all: Vec<_> = (0..4).map(|i| open.admit(ip(&format!("203.0.113.{i}")))).collect();
        assert!(all.iter().all(Option::is_some));
        // 0 closes unlisted peers at once.
        assert!(slots("198.51.100.0/24", "", 10, 0, 0).admit(ip("203.0.113.1")).is_none());
    }
}
