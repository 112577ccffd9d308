//! `iotpay-notify bench`: a load generator for `POST /iotpay/notify` that operators can point at
//! any deployment. Notifications are signed up front so the generator measures the service, not
//! its own MD5.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};

use crate::domain::MerchantKey;
use crate::iotpay::sign;

pub mod pipeline;

/// What to send and how hard.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// Base URL of the service, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// Merchant id the service accepts.
    pub mch_id: String,
    /// That merchant's key.
    pub key: MerchantKey,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Total requests (stops earlier if `duration` passes).
    pub count: usize,
    /// Longest run.
    pub duration: Duration,
    /// Share of requests that repeat an earlier notification (IOTPay re-sends), 0..1.
    pub repeat_share: f64,
}

/// Results of one run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Requests sent.
    pub requests: usize,
    /// Wall time, seconds.
    pub elapsed_secs: f64,
    /// Requests per second.
    pub throughput: f64,
    /// Latency percentiles in milliseconds.
    pub latency_ms: Percentiles,
    /// Answers by HTTP status (`error` for transport failures).
    pub statuses: BTreeMap<String, usize>,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of `samples` (sorted in place).
    pub fn of(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1000.0
        };
        Self { p50: at(0.50), p90: at(0.90), p99: at(0.99), max: at(1.0) }
    }
}

/// Builds `count` signed notification bodies: a realistic mix of v3 payments (70 %), v3 refunds
/// (15 %) and v2 payments (15 %), with `repeat_share` of them repeating an earlier one.
pub fn signed_bodies(mch_id: &str, key: &MerchantKey, count: usize, repeat_share: f64, run_id: &str) -> Vec<String> {
    let mut bodies: Vec<String> = Vec::with_capacity(count);
    let mut rng = rand::rng();
    for i in 0..count {
        if i > 0 && rand::Rng::random_bool(&mut rng, repeat_share.clamp(0.0, 1.0)) {
            let j = rand::Rng::random_range(&mut rng, 0..i);
            bodies.push(bodies[j].clone());
            continue;
        }
        let amount = 100 + (i % 10_000) as i64;
        let fields = match i % 20 {
            0..=13 => json!({
                "payOrderId": format!("PB{run_id}{i}"), "mchId": mch_id, "mchOrderNo": format!("bench-{run_id}-{i}"),
                "originalOrderId": "", "amount": amount, "currency": "CAD", "payType": "pay", "refundable": amount,
                "status": 2, "paySuccTime": "2026-11-22 10:00:00", "cardNum": "432567******2266",
                "expiryDate": "0729", "invoiceNum": "", "authNum": "A1", "transNum": format!("T{i}"), "channel": "PF_CC"
            }),
            14..=16 => json!({
                "payOrderId": format!("RB{run_id}{i}"), "mchId": mch_id, "mchOrderNo": format!("bench-{run_id}-{i}-r"),
                "originalOrderId": format!("PB{run_id}{}", i.saturating_sub(1)), "amount": amount / 2,
                "currency": "CAD", "payType": "refund", "refundable": 0, "status": 2,
                "paySuccTime": "2026-11-22 10:00:01", "cardNum": "432567******2266", "expiryDate": "0729",
                "transNum": format!("T{i}"), "channel": "PF_CC"
            }),
            _ => json!({
                "payOrderId": format!("P2B{run_id}{i}"), "mchId": mch_id, "mchOrderNo": format!("bench2-{run_id}-{i}"),
                "transId": format!("66{i}"), "currency": "CAD", "amount": amount, "status": 3,
                "paySuccTime": "2026-11-22 10:00:02", "cardType": "V", "cardNum": "450116XXXXXX7214",
                "expirationDate": "0729"
            }),
        };
        let Value::Object(mut fields) = fields else { unreachable!("built from object literals") };
        sign::sign_object(&mut fields, key);
        bodies.push(Value::Object(fields).to_string());
    }
    bodies
}

/// Sends the plan's notifications at its concurrency over keep-alive connections.
pub async fn run(plan: &BenchPlan) -> anyhow::Result<BenchReport> {
    let run_id = format!("{:x}", rand::random::<u32>());
    let bodies = Arc::new(signed_bodies(&plan.mch_id, &plan.key, plan.count, plan.repeat_share, &run_id));
    Ok(drive(plan, bodies).await?.0)
}

/// One request `drive` made: which body, when it left (wall clock), and the HTTP status.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Index into the bodies.
    pub index: usize,
    /// Wall-clock time the request was sent (comparable with the database's timestamps).
    pub at: SystemTime,
    /// HTTP status, `None` for a transport failure.
    pub status: Option<u16>,
}

/// Posts `bodies` in order at the plan's concurrency (stops early when `plan.duration` passes)
/// and reports, along with the figures, every request made.
pub async fn drive(plan: &BenchPlan, bodies: Arc<Vec<String>>) -> anyhow::Result<(BenchReport, Vec<Sent>)> {
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(plan.concurrency).timeout(Duration::from_secs(30)).build()?;
    let url = format!("{}/iotpay/notify", plan.base_url.trim_end_matches('/'));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + plan.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..plan.concurrency.max(1) {
        let (client, url, bodies, next) = (client.clone(), url.clone(), bodies.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut sent = Vec::new();
            let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= bodies.len() || Instant::now() >= deadline {
                    break;
                }
                let (t0, at) = (Instant::now(), SystemTime::now());
                let result =
                    client.post(&url).header("content-type", "application/json").body(bodies[i].clone()).send().await;
                let status = match result {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let _ = resp.bytes().await;
                        Some(status)
                    }
                    Err(_) => None,
                };
                latencies.push(t0.elapsed());
                sent.push(Sent { index: i, at, status });
                *statuses.entry(status.map_or_else(|| "error".to_owned(), |s| s.to_string())).or_default() += 1;
            }
            (latencies, sent, statuses)
        });
    }
    let mut latencies = Vec::with_capacity(bodies.len());
    let mut sent = Vec::with_capacity(bodies.len());
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (l, s, st) = done?;
        latencies.extend(l);
        sent.extend(s);
        for (k, v) in st {
            *statuses.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let report = BenchReport {
        requests: latencies.len(),
        elapsed_secs: elapsed,
        throughput: latencies.len() as f64 / elapsed,
        latency_ms: Percentiles::of(&mut latencies),
        statuses,
    };
    Ok((report, sent))
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "requests     {}", self.requests)?;
        writeln!(f, "elapsed      {:.2} s", self.elapsed_secs)?;
        writeln!(f, "throughput   {:.0} notifications/s", self.throughput)?;
        let l = &self.latency_ms;
        writeln!(f, "latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}", l.p50, l.p90, l.p99, l.max)?;
        let answers: Vec<String> = self.statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        write!(f, "answers      {}", answers.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iotpay::Params;

    #[test]
    fn percentiles_pick_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(&mut []).max, 0.0);
    }

    #[test]
    fn generated_bodies_verify_and_mix_versions() {
        let key = MerchantKey::new("k");
        let bodies = signed_bodies("100", &key, 200, 0.1, "r");
        let mut kinds = std::collections::HashSet::new();
        for b in &bodies {
            let p = Params::from_json(b.as_bytes()).unwrap();
            assert!(sign::verify(&p, p.text("sign").unwrap(), std::slice::from_ref(&key)));
            let n = crate::iotpay::Notification::from_params(&p).unwrap();
            kinds.insert(n.event_type.as_str().to_owned() + n.api_version.as_str());
        }
        assert_eq!(kinds.len(), 3, "{kinds:?}");
    }
}
