//! `bench --pipeline`: end to end through a running service, notification sent → confirmed →
//! delivered. The bench process plays both ends: the sandbox IOTPay query API (its order book holds
//! every order the bench notifies, so each one confirms) and the sink the service forwards to.
//!
//! Times: *sent* is the wall clock when the bench first posted an event's notification;
//! *delivered* is when the sink first accepted that event; *confirmed* is
//! `payment_events.confirmed_at`, read afterwards through `DATABASE_URL` when given (same machine,
//! so one clock). Without a database URL only sent → delivered is reported.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use sqlx::Row;

use super::{drive, BenchPlan, BenchReport, Percentiles};
use crate::config::ForwardSecret;
use crate::domain::MchId;
use crate::sandbox::{Order, Sandbox, SandboxConfig, SendOptions};
use crate::sink::{Sink, SinkConfig};

/// What the pipeline run needs beyond the ingest plan.
#[derive(Debug, Clone)]
pub struct PipelinePlan {
    /// Where to send, how many distinct events, how hard (`count` = events; `repeat_share` adds
    /// repeats on top).
    pub ingest: BenchPlan,
    /// Listen address of the sandbox query API (the service's `IOTPAY_V3_API_URL` host).
    pub sandbox_listen: SocketAddr,
    /// Listen address of the sink (the service's `FORWARD_URLS` host).
    pub sink_listen: SocketAddr,
    /// The service's `FORWARD_SECRET`.
    pub secret: ForwardSecret,
    /// Where to read `confirmed_at` from (optional).
    pub database_url: Option<String>,
    /// Longest wait for the service's `/readyz` before sending.
    pub ready_timeout: Duration,
    /// Longest wait, after the last send, for every event to reach the sink.
    pub settle_timeout: Duration,
}

/// Results of a pipeline run.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    /// The ingest side (every request, repeats included).
    pub ingest: BenchReport,
    /// Distinct events acknowledged with `SUCCESS`.
    pub events: usize,
    /// Of those, delivered to the sink before the settle timeout.
    pub delivered: usize,
    /// Seconds from the first send to the last delivery.
    pub elapsed_secs: f64,
    /// Delivered events per second over that span.
    pub events_per_sec: f64,
    /// Sent → delivered at the sink, milliseconds.
    pub sent_to_delivered_ms: Percentiles,
    /// Sent → `confirmed_at`, milliseconds (with a database URL).
    pub sent_to_confirmed_ms: Option<Percentiles>,
    /// `confirmed_at` → delivered, milliseconds (with a database URL).
    pub confirmed_to_delivered_ms: Option<Percentiles>,
    /// The bench's events in `payment_events` by status (with a database URL).
    pub statuses: Option<BTreeMap<String, usize>>,
    /// Deliveries the sink accepted more than once (at-least-once; expected 0 here).
    pub repeat_deliveries: usize,
}

/// The environment the service under test needs to use this bench's sandbox and sink.
#[derive(Debug, Clone)]
pub struct ServiceEnv {
    /// `IOTPAY_V3_API_URL`.
    pub v3_api_url: String,
    /// `IOTPAY_V2_API_URL`.
    pub v2_api_url: String,
    /// `FORWARD_URLS`.
    pub forward_urls: String,
}

impl std::fmt::Display for ServiceEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IOTPAY_V3_API_URL={} IOTPAY_V2_API_URL={} FORWARD_URLS={} FORWARD_SECRET=<the same secret as the bench>",
            self.v3_api_url, self.v2_api_url, self.forward_urls
        )
    }
}

/// The two ends the bench plays; dropping it stops them.
pub struct Ends {
    sandbox: Sandbox,
    sink: Sink,
}

impl Ends {
    /// Starts the sandbox and the sink on the plan's addresses.
    pub async fn start(plan: &PipelinePlan) -> anyhow::Result<Self> {
        let mch_id = MchId::parse(&plan.ingest.mch_id).map_err(|e| anyhow::anyhow!("merchant id: {e}"))?;
        let mut config = SandboxConfig::new(mch_id, plan.ingest.key.clone());
        config.listen = plan.sandbox_listen;
        let sandbox = Sandbox::start(config).await?;
        let mut sink_config = SinkConfig::new(plan.secret.clone());
        sink_config.listen = plan.sink_listen;
        let sink = Sink::start(sink_config).await?;
        Ok(Self { sandbox, sink })
    }

    /// What the service must be configured with.
    pub fn service_env(&self) -> ServiceEnv {
        ServiceEnv {
            v3_api_url: self.sandbox.v3_api_url(),
            v2_api_url: self.sandbox.v2_api_url(),
            forward_urls: self.sink.url(),
        }
    }

    /// Books `count` orders in the sandbox (the mix of [`super::signed_bodies`]: 70 % v3 payments,
    /// 15 % v3 refunds of the payment before, 15 % v2 payments) and returns their signed
    /// notifications with `repeat_share` repeats mixed in, each with its `pay_order_id`.
    pub fn book(&self, count: usize, repeat_share: f64) -> anyhow::Result<Vec<(String, String)>> {
        let mut out: Vec<(String, String)> = Vec::with_capacity(count + count / 4);
        let mut last_payment: Option<String> = None;
        let mut rng = rand::rng();
        for i in 0..count {
            let amount = 100 + (i % 10_000) as i64;
            let order: Order = match (i % 20, &last_payment) {
                (14..=16, Some(original)) => self.sandbox.create_v3_refund(original, amount / 2)?,
                (17..=19, _) => self.sandbox.create_v2_payment(amount),
                _ => {
                    let o = self.sandbox.create_v3_payment(amount * 2);
                    last_payment = Some(o.pay_order_id.clone());
                    o
                }
            };
            let body = self.sandbox.notification(&order, &SendOptions::default()).to_string();
            out.push((order.pay_order_id, body));
            if rand::Rng::random_bool(&mut rng, repeat_share.clamp(0.0, 1.0)) {
                let j = rand::Rng::random_range(&mut rng, 0..out.len());
                out.push(out[j].clone());
            }
        }
        Ok(out)
    }
}

/// Waits for the service to answer `/readyz`.
pub async fn wait_ready(base_url: &str, timeout: Duration) -> anyhow::Result<()> {
    let url = format!("{}/readyz", base_url.trim_end_matches('/'));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + timeout;
    loop {
        if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("the service at {base_url} was not ready within {}s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends every notification, waits for the events to reach the sink, and measures.
pub async fn run(plan: &PipelinePlan, ends: &Ends) -> anyhow::Result<PipelineReport> {
    let booked = ends.book(plan.ingest.count, plan.ingest.repeat_share)?;
    let bodies: Arc<Vec<String>> = Arc::new(booked.iter().map(|(_, b)| b.clone()).collect());
    let mut ingest_plan = plan.ingest.clone();
    ingest_plan.count = bodies.len();
    let (ingest, sent) = drive(&ingest_plan, bodies).await?;

    // First send of each event, and which events the service acknowledged.
    let mut first_sent: HashMap<&str, SystemTime> = HashMap::new();
    let mut acknowledged: HashMap<&str, bool> = HashMap::new();
    for s in &sent {
        let id = booked[s.index].0.as_str();
        let t = first_sent.entry(id).or_insert(s.at);
        *t = (*t).min(s.at);
        *acknowledged.entry(id).or_default() |= s.status == Some(200);
    }
    let expected = acknowledged.values().filter(|ok| **ok).count();
    let deadline = Instant::now() + plan.settle_timeout;
    while ends.sink.accepted_count() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut delivered_at: HashMap<String, SystemTime> = HashMap::new();
    let mut repeat_deliveries = 0;
    for r in ends.sink.accepted() {
        if r.repeat {
            repeat_deliveries += 1;
            continue;
        }
        delivered_at.entry(r.data("pay_order_id")).or_insert(r.received_at);
    }
    let span = |from: SystemTime, to: SystemTime| to.duration_since(from).unwrap_or_default();
    let mut to_delivered = Vec::new();
    let mut last = None::<SystemTime>;
    for (id, at) in &delivered_at {
        if let Some(sent_at) = first_sent.get(id.as_str()) {
            to_delivered.push(span(*sent_at, *at));
            last = Some(last.map_or(*at, |l: SystemTime| l.max(*at)));
        }
    }
    let first = first_sent.values().min().copied();
    let elapsed = match (first, last) {
        (Some(f), Some(l)) => span(f, l).as_secs_f64(),
        _ => 0.0,
    };

    let (mut sent_to_confirmed_ms, mut confirmed_to_delivered_ms, mut statuses) = (None, None, None);
    if let Some(url) = &plan.database_url {
        let pool = crate::store::connect_lazy(url, 1)?;
        let ids: Vec<String> = first_sent.keys().map(|s| (*s).to_owned()).collect();
        let rows = sqlx::query(
            "SELECT pay_order_id, status, EXTRACT(EPOCH FROM confirmed_at)::float8 AS confirmed
               FROM payment_events WHERE mch_id = $1 AND pay_order_id = ANY($2)",
        )
        .bind(&plan.ingest.mch_id)
        .bind(&ids)
        .fetch_all(&pool)
        .await?;
        let (mut to_confirmed, mut confirmed_to_delivered) = (Vec::new(), Vec::new());
        let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
        for row in rows {
            let id: String = row.try_get("pay_order_id")?;
            *by_status.entry(row.try_get("status")?).or_default() += 1;
            let Some(confirmed) = row.try_get::<Option<f64>, _>("confirmed")? else { continue };
            let confirmed = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(confirmed);
            if let Some(sent_at) = first_sent.get(id.as_str()) {
                to_confirmed.push(span(*sent_at, confirmed));
            }
            if let Some(at) = delivered_at.get(&id) {
                confirmed_to_delivered.push(span(confirmed, *at));
            }
        }
        pool.close().await;
        sent_to_confirmed_ms = Some(Percentiles::of(&mut to_confirmed));
        confirmed_to_delivered_ms = Some(Percentiles::of(&mut confirmed_to_delivered));
        statuses = Some(by_status);
    }

    Ok(PipelineReport {
        ingest,
        events: expected,
        delivered: to_delivered.len(),
        elapsed_secs: elapsed,
        events_per_sec: if elapsed > 0.0 { to_delivered.len() as f64 / elapsed } else { 0.0 },
        sent_to_delivered_ms: Percentiles::of(&mut to_delivered),
        sent_to_confirmed_ms,
        confirmed_to_delivered_ms,
        statuses,
        repeat_deliveries,
    })
}

impl std::fmt::Display for PipelineReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.ingest)?;
        writeln!(
            f,
            "pipeline     {} of {} events delivered in {:.2} s",
            self.delivered, self.events, self.elapsed_secs
        )?;
        writeln!(f, "pipeline     {:.0} events/s (first send to last delivery)", self.events_per_sec)?;
        let line = |f: &mut std::fmt::Formatter<'_>, name: &str, p: &Percentiles| {
            writeln!(f, "{name} p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}", p.p50, p.p90, p.p99, p.max)
        };
        line(f, "sent→delivered ms  ", &self.sent_to_delivered_ms)?;
        if let Some(p) = &self.sent_to_confirmed_ms {
            line(f, "sent→confirmed ms  ", p)?;
        }
        if let Some(p) = &self.confirmed_to_delivered_ms {
            line(f, "confirmed→delivered", p)?;
        }
        if let Some(s) = &self.statuses {
            let parts: Vec<String> = s.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            writeln!(f, "event status {}", parts.join(", "))?;
        }
        write!(f, "repeat deliveries {}", self.repeat_deliveries)
    }
}
