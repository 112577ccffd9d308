//! Who may talk to the notify route: the source-network allowlist, the client address behind
//! trusted proxies, and a per-address budget of failed requests.
//!
//! A flood of forged notifications must not starve real ones: every failed request that is not
//! correctly signed spends a token of its source address, and an address with no tokens left is
//! put on probation (see [`super::gate`]): it is answered 429 at once unless it sends a small body
//! whose sign verifies. Verified notifications spend nothing and are never refused by the
//! budget, so IOTPay's own traffic is never limited by an attacker sharing its address.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

use super::limiter::FailureBudget;
use crate::env::{invalid, ConfigError};

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

impl GuardSettings {
    /// Reads `NOTIFY_ALLOWED_CIDRS`, `NOTIFY_TRUSTED_PROXIES` and `NOTIFY_FAILURES_PER_MINUTE`
    /// (default 60) through `var`.
    pub fn from_vars(var: &impl Fn(&'static str) -> Option<String>) -> Result<Self, ConfigError> {
        let networks = |name: &'static str| -> Result<Vec<IpNet>, ConfigError> {
            var(name).map_or(Ok(Vec::new()), |v| parse_networks(&v).map_err(|r| invalid(name, r)))
        };
        Ok(Self {
            allowed: networks("NOTIFY_ALLOWED_CIDRS")?,
            trusted_proxies: networks("NOTIFY_TRUSTED_PROXIES")?,
            failures_per_minute: match var("NOTIFY_FAILURES_PER_MINUTE") {
                None => 60,
                Some(v) => v.parse().map_err(|_| invalid("NOTIFY_FAILURES_PER_MINUTE", "expected a whole number"))?,
            },
        })
    }
}

/// Why a request is refused before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The source address is outside `NOTIFY_ALLOWED_CIDRS`, or could not be told.
    #[error("source address not allowed")]
    NotAllowed,
    /// The source address spent its failure budget and did not send a correctly signed body.
    #[error("too many failed requests from this address")]
    RateLimited,
}

/// The client of a request, as far as it can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// The client's canonical address.
    Addr(IpAddr),
    /// A trusted proxy forwarded an entry that is not an address: an unknown, refused source.
    Unknown,
}

/// The guard in front of the notify route.
#[derive(Debug)]
pub struct Guard {
    settings: GuardSettings,
    budget: FailureBudget,
}

impl Guard {
    /// Builds a guard.
    pub fn new(settings: GuardSettings) -> Self {
        let budget = FailureBudget::new(settings.failures_per_minute);
        Self { settings, budget }
    }

    fn trusted(&self, ip: &IpAddr) -> bool {
        self.settings.trusted_proxies.iter().any(|n| n.contains(ip))
    }

    /// The client: the TCP peer, or — only when the peer is a trusted proxy — the right-most
    /// `X-Forwarded-For` entry that is not itself a trusted proxy. Walking right to left, only
    /// trusted proxies are skipped: an entry that is unparseable ends the walk as
    /// [`Client::Unknown`] (never skipped, since everything left of it was written by whoever
    /// wrote it). `ip:port` and `[v6]:port` entries are read as proxies write them; every
    /// address is canonical (`::ffff:1.2.3.4` is `1.2.3.4`).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Client {
        let peer = peer.to_canonical();
        if !self.trusted(&peer) {
            return Client::Addr(peer);
        }
        let mut entries: Vec<&str> = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let Ok(text) = value.to_str() else { return Client::Unknown };
            entries.extend(text.split(',').map(str::trim));
        }
        let mut leftmost = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = parse_forwarded(entry) else { return Client::Unknown };
            if !self.trusted(&ip) {
                return Client::Addr(ip);
            }
            leftmost = ip;
        }
        // Every hop is a trusted proxy: the request started inside; the first hop is the client.
        Client::Addr(leftmost)
    }

    /// The client's address as [`Guard::client`] tells it, for the audit log; `None` if unknown.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        match self.client(peer, headers) {
            Client::Addr(ip) => Some(ip),
            Client::Unknown => None,
        }
    }

    /// Refuses unknown sources and addresses outside the allowlist.
    pub fn admit(&self, client: Client) -> Result<IpAddr, GuardError> {
        let Client::Addr(ip) = client else { return Err(GuardError::NotAllowed) };
        let ip = ip.to_canonical();
        if !self.settings.allowed.is_empty() && !self.settings.allowed.iter().any(|n| n.contains(&ip)) {
            return Err(GuardError::NotAllowed);
        }
        Ok(ip)
    }

    /// Refuses addresses outside the allowlist or out of failure budget (no probation: callers
    /// that can read the body use [`super::gate`], which lets correctly signed bodies through).
    pub fn check(&self, ip: IpAddr) -> Result<(), GuardError> {
        let ip = self.admit(Client::Addr(ip))?;
        if self.budget.has_budget(ip) {
            Ok(())
        } else {
            Err(GuardError::RateLimited)
        }
    }

    /// True while `ip` has failure budget left.
    pub fn has_budget(&self, ip: IpAddr) -> bool {
        self.budget.has_budget(ip.to_canonical())
    }

    /// Spends one token of `ip`'s failure budget.
    pub fn record_failure(&self, ip: IpAddr) {
        self.budget.spend(ip.to_canonical());
    }

    /// How many address buckets the budget tracks now (bounded).
    pub fn tracked_addresses(&self) -> usize {
        self.budget.len()
    }
}

/// One `X-Forwarded-For` entry: `ip`, `ip:port`, `[v6]` or `[v6]:port`, canonical.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let ip = if let Ok(ip) = entry.parse::<IpAddr>() {
        ip
    } else if let Some(rest) = entry.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inner.parse::<std::net::Ipv6Addr>().ok()?.into()
    } else {
        let (host, port) = entry.rsplit_once(':')?;
        if !is_port(port) {
            return None;
        }
        host.parse::<std::net::Ipv4Addr>().ok()?.into()
    };
    Some(ip.to_canonical())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u16>().is_ok()
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
        let addr = |s: &str| Client::Addr(ip(s));
        assert_eq!(g.client(ip("203.0.113.9"), &xff("1.2.3.4")), addr("203.0.113.9"), "untrusted peer");
        assert_eq!(g.client(ip("10.0.0.5"), &xff("1.2.3.4")), addr("1.2.3.4"));
        // A client-supplied first entry cannot hide the real client: right-most untrusted wins.
        assert_eq!(g.client(ip("10.0.0.5"), &xff("6.6.6.6, 1.2.3.4, 10.0.0.7")), addr("1.2.3.4"));
        assert_eq!(g.client(ip("10.0.0.5"), &xff("52.60.1.1, x, 6.6.6.6")), addr("6.6.6.6"));
        assert_eq!(g.client(ip("10.0.0.5"), &xff("52.60.1.1, 6.6.6.6, x")), Client::Unknown);
        assert_eq!(g.client(ip("10.0.0.5"), &xff("1.2.3.4:5678, 10.0.0.7:80")), addr("1.2.3.4"));
        assert_eq!(g.client(ip("10.0.0.5"), &xff("[2001:db8::1]:443")), addr("2001:db8::1"));
        assert_eq!(g.client(ip("10.0.0.5"), &xff("::ffff:1.2.3.4")), addr("1.2.3.4"));
        assert_eq!(g.client(ip("::ffff:10.0.0.5"), &xff("1.2.3.4")), addr("1.2.3.4"), "mapped peer is trusted");
        assert_eq!(g.client(ip("10.0.0.5"), &HeaderMap::new()), addr("10.0.0.5"));
        assert_eq!(g.client(ip("10.0.0.5"), &xff("garbage")), Client::Unknown);
        assert_eq!(g.client(ip("10.0.0.5"), &xff("1.2.3.4:99999")), Client::Unknown);
    }

    #[test]
    fn allowlist_refuses_other_networks() {
        let g = guard("198.51.100.0/24, 2001:db8::1", "", 0);
        assert_eq!(g.check(ip("198.51.100.20")), Ok(()));
        assert_eq!(g.check(ip("2001:db8::1")), Ok(()));
        assert_eq!(g.check(ip("203.0.113.1")), Err(GuardError::NotAllowed));
        assert_eq!(g.check(ip("::ffff:198.51.100.20")), Ok(()), "canonical before matching");
        assert_eq!(g.admit(Client::Unknown), Err(GuardError::NotAllowed));
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
