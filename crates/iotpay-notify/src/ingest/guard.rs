//! Who may talk to the notify route: the source-network allowlist, the client address behind
//! trusted proxies, and a per-address budget of failed requests.
//!
//! A flood of forged notifications must not starve real ones: every failed request (bad sign,
//! unparseable, unknown merchant...) spends a token of its source address, and an address with
//! no tokens left is answered 429 before any parsing or hashing. Verified notifications spend
//! nothing, so IOTPay's own traffic is never limited by an attacker's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Guard configuration.
#[derive(Debug, Clone, Default)]
pub struct GuardSettings {
    /// Source networks allowed to post notifications; empty = any.
    pub allowed: Vec<IpNet>,
    /// Proxies whose `X-Forwarded-For` is believed; empty = the header is ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// Failed requests an address may make per minute (also the burst); 0 = no limit.
    pub failures_per_minute: u32,
}

/// Why a request is refused before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The source address is outside `NOTIFY_ALLOWED_CIDRS`.
    #[error("source address not allowed")]
    NotAllowed,
    /// The source address spent its failure budget.
    #[error("too many failed requests from this address")]
    RateLimited,
}

/// Entries kept before idle, full buckets are dropped (bounds memory under a spoofed-XFF or
/// many-address flood).
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The guard in front of the notify route.
#[derive(Debug)]
pub struct Guard {
    settings: GuardSettings,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Guard {
    /// Builds a guard.
    pub fn new(settings: GuardSettings) -> Self {
        Self { settings, buckets: Mutex::new(HashMap::new()) }
    }

    /// The client's address: the TCP peer, or — only when the peer is a trusted proxy — the
    /// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.settings.trusted_proxies.iter().any(|n| n.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map_while(|s| s.trim().parse::<IpAddr>().ok())
            .collect();
        hops.iter().rev().find(|ip| !trusted(ip)).or(hops.first()).copied().unwrap_or(peer)
    }

    /// Refuses addresses outside the allowlist or out of failure budget.
    pub fn check(&self, ip: IpAddr) -> Result<(), GuardError> {
        if !self.settings.allowed.is_empty() && !self.settings.allowed.iter().any(|n| n.contains(&ip)) {
            return Err(GuardError::NotAllowed);
        }
        if self.settings.failures_per_minute == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().expect("guard lock");
        match buckets.get_mut(&ip).map(|b| self.refill(b)) {
            Some(tokens) if tokens < 1.0 => Err(GuardError::RateLimited),
            _ => Ok(()),
        }
    }

    /// Spends one token of `ip`'s failure budget.
    pub fn record_failure(&self, ip: IpAddr) {
        if self.settings.failures_per_minute == 0 {
            return;
        }
        let capacity = f64::from(self.settings.failures_per_minute);
        let mut buckets = self.buckets.lock().expect("guard lock");
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            let now = Instant::now();
            buckets.retain(|_, b| now.duration_since(b.at).as_secs_f64() < 60.0);
        }
        let bucket = buckets.entry(ip).or_insert(Bucket { tokens: capacity, at: Instant::now() });
        let tokens = self.refill(bucket);
        bucket.tokens = (tokens - 1.0).max(0.0);
    }

    fn refill(&self, bucket: &mut Bucket) -> f64 {
        let capacity = f64::from(self.settings.failures_per_minute);
        let now = Instant::now();
        let earned = now.duration_since(bucket.at).as_secs_f64() * capacity / 60.0;
        bucket.tokens = (bucket.tokens + earned).min(capacity);
        bucket.at = now;
        bucket.tokens
    }
}

/// Parses a comma-separated list of CIDRs or bare addresses.
pub fn parse_networks(s: &str) -> Result<Vec<IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("`{p}` is not a CIDR or an IP address"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allowed: &str, proxies: &str, per_minute: u32) -> Guard {
        Guard::new(GuardSettings {
            allowed: parse_networks(allowed).unwrap(),
            trusted_proxies: parse_networks(proxies).unwrap(),
            failures_per_minute: per_minute,
        })
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let g = guard("", "10.0.0.0/8", 0);
        assert_eq!(g.client_ip(ip("203.0.113.9"), &xff("1.2.3.4")), ip("203.0.113.9"), "untrusted peer");
        assert_eq!(g.client_ip(ip("10.0.0.5"), &xff("1.2.3.4")), ip("1.2.3.4"));
        // A client-supplied first entry cannot hide the real client: right-most untrusted wins.
        assert_eq!(g.client_ip(ip("10.0.0.5"), &xff("6.6.6.6, 1.2.3.4, 10.0.0.7")), ip("1.2.3.4"));
        assert_eq!(g.client_ip(ip("10.0.0.5"), &HeaderMap::new()), ip("10.0.0.5"));
        assert_eq!(g.client_ip(ip("10.0.0.5"), &xff("garbage")), ip("10.0.0.5"));
    }

    #[test]
    fn allowlist_refuses_other_networks() {
        let g = guard("198.51.100.0/24, 2001:db8::1", "", 0);
        assert_eq!(g.check(ip("198.51.100.20")), Ok(()));
        assert_eq!(g.check(ip("2001:db8::1")), Ok(()));
        assert_eq!(g.check(ip("203.0.113.1")), Err(GuardError::NotAllowed));
        assert_eq!(guard("", "", 0).check(ip("203.0.113.1")), Ok(()));
        assert!(parse_networks("nope").is_err());
    }

    #[test]
    fn failures_spend_a_per_address_budget() {
        let g = guard("", "", 3);
        let (bad, good) = (ip("203.0.113.1"), ip("198.51.100.1"));
        for _ in 0..3 {
            assert_eq!(g.check(bad), Ok(()));
            g.record_failure(bad);
        }
        assert_eq!(g.check(bad), Err(GuardError::RateLimited));
        assert_eq!(g.check(good), Ok(()), "another address is unaffected");
    }
}
