//! The per-address failure budget: a token bucket per client address, in a bounded map.
//!
//! The map is sharded (one lock per shard, so addresses do not contend on one mutex) and each
//! shard keeps at most a fixed number of buckets, dropping the oldest-created first: memory and
//! per-request cost stay flat however many new addresses arrive. IPv6 clients are bucketed by
//! /64, the smallest block a host usually gets, so one host cannot mint fresh budgets.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept in all (rounded down to a multiple of the shard count).
pub const MAX_TRACKED: usize = 16_384;
const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Shard {
    buckets: HashMap<IpAddr, Bucket>,
    /// Keys in creation order; the front is evicted first.
    order: VecDeque<IpAddr>,
}

/// Failed requests an address may make per minute, refilled continuously.
#[derive(Debug)]
pub struct FailureBudget {
    per_minute: u32,
    shards: Vec<Mutex<Shard>>,
}

impl FailureBudget {
    /// A budget of `per_minute` failures per address per minute (0 = unlimited).
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect() }
    }

    /// True while `ip` may fail again.
    pub fn has_budget(&self, ip: IpAddr) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let key = bucket_key(ip);
        let mut shard = self.shard(&key);
        match shard.buckets.get_mut(&key) {
            Some(b) => self.refill(b) >= 1.0,
            None => true,
        }
    }

    /// Spends one token of `ip`'s budget.
    pub fn spend(&self, ip: IpAddr) {
        if self.per_minute == 0 {
            return;
        }
        let key = bucket_key(ip);
        let capacity = f64::from(self.per_minute);
        let mut shard = self.shard(&key);
        if !shard.buckets.contains_key(&key) {
            while shard.buckets.len() >= MAX_TRACKED / SHARDS {
                let Some(oldest) = shard.order.pop_front() else { break };
                shard.buckets.remove(&oldest);
            }
            shard.buckets.insert(key, Bucket { tokens: capacity, at: Instant::now() });
            shard.order.push_back(key);
        }
        let bucket = shard.buckets.get_mut(&key).expect("inserted above");
        let tokens = self.refill(bucket);
        bucket.tokens = (tokens - 1.0).max(0.0);
    }

    /// Buckets tracked now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).buckets.len()).sum()
    }

    /// True when no bucket is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &IpAddr) -> std::sync::MutexGuard<'_, Shard> {
        use std::hash::BuildHasher;
        // A fixed hasher: shard choice only spreads lock contention, it guards nothing.
        let hasher = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        let i = (hasher.hash_one(key) as usize) % SHARDS;
        // A panic while holding a shard cannot leave a bucket half-written; keep serving.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refill(&self, bucket: &mut Bucket) -> f64 {
        let capacity = f64::from(self.per_minute);
        let now = Instant::now();
        let earned = now.duration_since(bucket.at).as_secs_f64() * capacity / 60.0;
        bucket.tokens = (bucket.tokens + earned).min(capacity);
        bucket.at = now;
        bucket.tokens
    }
}

/// The budget's key: the canonical IPv4 address, or the IPv6 /64 network.
pub fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v6_shares_a_bucket_per_64_and_v4_mapped_is_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(bucket_key(a), bucket_key(b));
        assert_ne!(bucket_key(a), bucket_key(c));
        assert_eq!(bucket_key("::ffff:1.2.3.4".parse().unwrap()), "1.2.3.4".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_map_is_bounded_and_evicts_the_oldest() {
        let budget = FailureBudget::new(1);
        let first: IpAddr = "10.0.0.1".parse().unwrap();
        budget.spend(first);
        assert!(!budget.has_budget(first));
        for i in 0..(MAX_TRACKED as u32 * 2) {
            budget.spend(IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i)));
        }
        assert!(budget.len() <= MAX_TRACKED);
        assert!(budget.has_budget(first), "the oldest bucket was evicted");
    }
}
