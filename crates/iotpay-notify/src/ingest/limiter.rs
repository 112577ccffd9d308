//! The per-address failure budget: a token bucket per client address, in a bounded map.
//!
//! The map is sharded (one lock per shard, so addresses do not contend on one mutex) and each
//! shard keeps at most a fixed number of buckets, dropping the least recently used first: memory
//! and per-request cost stay flat however many new addresses arrive, and an address that keeps
//! sending (an attacker on probation, or IOTPay) stays tracked however many others churn past
//! it. The shard of a key is chosen by a hasher keyed at random per process, so nobody can aim
//! a churn of fresh addresses at the shard holding a given bucket. IPv6 clients are bucketed by
//! /64, the smallest block a host usually gets, so one host cannot mint fresh budgets.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
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
    /// When the bucket was last used, in its shard's use counter.
    used: u64,
}

#[derive(Debug, Default)]
struct Shard {
    buckets: HashMap<IpAddr, Bucket>,
    /// Keys by last use; the first is evicted first.
    by_use: BTreeMap<u64, IpAddr>,
    uses: u64,
}

impl Shard {
    /// The bucket of `key`, marked as just used.
    fn touch(&mut self, key: IpAddr) -> Option<&mut Bucket> {
        self.uses += 1;
        let now = self.uses;
        let bucket = self.buckets.get_mut(&key)?;
        self.by_use.remove(&bucket.used);
        bucket.used = now;
        self.by_use.insert(now, key);
        Some(bucket)
    }

    /// Makes room for one more bucket by dropping the least recently used ones.
    fn evict_to(&mut self, max: usize) {
        while self.buckets.len() >= max {
            let Some((_, oldest)) = self.by_use.pop_first() else { break };
            self.buckets.remove(&oldest);
        }
    }
}

/// Failed requests an address may make per minute, refilled continuously.
#[derive(Debug)]
pub struct FailureBudget {
    per_minute: u32,
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
}

impl FailureBudget {
    /// A budget of `per_minute` failures per address per minute (0 = unlimited).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// True while `ip` may fail again.
    pub fn has_budget(&self, ip: IpAddr) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let key = bucket_key(ip);
        let mut shard = self.shard(&key);
        match shard.touch(key) {
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
            shard.evict_to(MAX_TRACKED / SHARDS);
            shard.buckets.insert(key, Bucket { tokens: capacity, at: Instant::now(), used: 0 });
        }
        let bucket = shard.touch(key).expect("inserted above");
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

    fn shard_index(&self, key: &IpAddr) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    fn shard(&self, key: &IpAddr) -> std::sync::MutexGuard<'_, Shard> {
        // A panic while holding a shard cannot leave a bucket half-written; keep serving.
        self.shards[self.shard_index(key)].lock().unwrap_or_else(|e| e.into_inner())
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
    fn the_map_is_bounded_and_evicts_the_least_recently_used() {
        let budget = FailureBudget::new(1);
        let (idle, busy): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        budget.spend(idle);
        budget.spend(busy);
        assert!(!budget.has_budget(idle) && !budget.has_budget(busy));
        for i in 0..(MAX_TRACKED as u32 * 2) {
            budget.spend(IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i)));
            // `busy` keeps sending while the others churn past it: it must stay out of budget.
            assert!(!budget.has_budget(busy), "a bucket in use was evicted after {i} new addresses");
        }
        assert!(budget.len() <= MAX_TRACKED);
        assert!(budget.has_budget(idle), "the least recently used bucket was evicted");
    }

    #[test]
    fn the_shard_of_a_key_is_not_predictable_across_processes() {
        // Two budgets stand for two processes: a fixed hasher would place every key alike.
        let (a, b) = (FailureBudget::new(1), FailureBudget::new(1));
        let keys: Vec<IpAddr> = (0..64u32).map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0c00_0000 + i))).collect();
        let placed = |f: &FailureBudget| keys.iter().map(|k| f.shard_index(k)).collect::<Vec<_>>();
        assert_ne!(placed(&a), placed(&b));
    }
}
