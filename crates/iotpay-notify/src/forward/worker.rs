//! The delivery worker: one claim loop per endpoint (so a slow endpoint never delays another),
//! bounded attempts in flight per endpoint, one HTTP client for connection reuse.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::body::ForwardedEvent;
use super::settings::{parse_retry_after, ForwardSettings};
use super::signature::{self, ForwardSecret};
use crate::pressure::{IngestPressure, Slot, Slots};
use crate::store::deliveries::DELIVERIES_CHANNEL;
use crate::store::forward::{self as store, Attempt, AttemptWriter, Claimed, Next};
use crate::store::group_commit::{GroupCommit, GroupSettings};
use crate::store::listen::Wakeups;

/// Largest part of a response body kept with an attempt.
pub const SNIPPET_BYTES: usize = 1024;

/// How soon a lost LISTEN connection is tried again (the claim loops poll meanwhile).
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// How often the backlog gauges are refreshed.
const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// Delivers confirmed events to the configured endpoints until shut down.
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
    /// The notify path of this process, which goes first while it is busy.
    pressure: IngestPressure,
}

struct Inner {
    pool: PgPool,
    client: reqwest::Client,
    secret: ForwardSecret,
    endpoints: Vec<String>,
    settings: ForwardSettings,
    worker_id: String,
    records: GroupCommit<AttemptWriter>,
}

/// What one HTTP attempt produced.
#[derive(Debug, Default)]
struct Response {
    status: Option<u16>,
    error: Option<String>,
    snippet: Option<String>,
    retry_after: Option<Duration>,
}

impl Forwarder {
    /// Builds the worker; `worker_id` names it in claims and attempt rows (host:pid by default).
    pub fn new(
        pool: PgPool,
        endpoints: Vec<String>,
        secret: ForwardSecret,
        settings: ForwardSettings,
        worker_id: Option<String>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(settings.concurrency_per_endpoint)
            .user_agent(concat!("iotpay-notify/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let worker_id = worker_id.unwrap_or_else(default_worker_id);
        let group = GroupSettings {
            max_batch: settings.concurrency_per_endpoint.max(1) * endpoints.len().max(1),
            max_wait: Duration::ZERO,
            writers: 2,
        };
        let records = GroupCommit::start(pool.clone(), AttemptWriter, group);
        let inner = Arc::new(Inner { pool, client, secret, endpoints, settings, worker_id, records });
        Ok(Self { inner, pressure: IngestPressure::default() })
    }

    /// Uses fewer request slots while `pressure` says the notify path is busy (see
    /// [`crate::pressure`]).
    pub fn yielding_to(mut self, pressure: IngestPressure) -> Self {
        self.pressure = pressure;
        self
    }

    /// Runs the LISTEN task, one claim loop per endpoint and the stats task until `shutdown`;
    /// then waits for attempts in flight to be recorded (each is bounded by the timeout).
    pub async fn run(self, shutdown: CancellationToken) {
        let wakeups = Wakeups::listen(self.inner.pool.clone(), DELIVERIES_CHANNEL, LISTEN_RETRY, shutdown.clone());
        let mut tasks = JoinSet::new();
        tasks.spawn(stats_loop(self.inner.pool.clone(), shutdown.clone()));
        for endpoint in self.inner.endpoints.clone() {
            tasks.spawn(self.clone().endpoint_loop(endpoint, wakeups.clone(), shutdown.clone()));
        }
        tracing::info!(worker = %self.inner.worker_id, endpoints = self.inner.endpoints.len(), "forwarder started");
        tasks.join_all().await;
    }

    async fn endpoint_loop(self, endpoint: String, mut wakeups: Wakeups, shutdown: CancellationToken) {
        let s = &self.inner.settings;
        let slots = Slots::new(s.concurrency_per_endpoint, self.pressure.clone());
        let mut in_flight = JoinSet::new();
        let mut db_backoff = Duration::ZERO;
        while !shutdown.is_cancelled() {
            while in_flight.try_join_next().is_some() {}
            let free = slots.claimable(in_flight.len());
            if free > 0 {
                match store::claim(&self.inner.pool, &endpoint, free, s.lease(), &self.inner.worker_id).await {
                    Ok(claimed) => {
                        db_backoff = Duration::ZERO;
                        for c in claimed {
                            let (me, slot) = (self.clone(), slots.take());
                            in_flight.spawn(async move { me.deliver(c, slot).await });
                        }
                    }
                    Err(e) => {
                        db_backoff = (db_backoff * 2).clamp(Duration::from_millis(200), Duration::from_secs(10));
                        tracing::warn!(endpoint = %endpoint_label(&endpoint), error = %e, "claim failed");
                    }
                }
            }
            let idle = if db_backoff.is_zero() { s.poll_interval } else { db_backoff };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wakeups.next() => {}
                _ = slots.freed() => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
        in_flight.join_all().await;
    }

    /// One attempt: sign, POST outside any transaction, record the outcome under the lease.
    /// The slot (which bounds requests in flight to the endpoint) is given back once the answer
    /// is in, before the outcome commits; the lease keeps the delivery ours until then.
    async fn deliver(&self, c: Claimed, slot: Slot) {
        let s = &self.inner.settings;
        let label = endpoint_label(&c.endpoint);
        let body = ForwardedEvent::from_row(&c.event).to_bytes();
        let attempt = c.attempts + 1;
        let started_at = Utc::now();
        let t0 = Instant::now();
        let response = self.post(&c.endpoint, &c.event.event_id, body).await;
        let duration = t0.elapsed();
        drop(slot);
        metrics::histogram!("iotpay_forward_attempt_duration_seconds", "endpoint" => label.clone())
            .record(duration.as_secs_f64());
        metrics::counter!("iotpay_forward_attempts_total", "endpoint" => label.clone(), "result" => result_class(&response))
            .increment(1);

        let ok = response.status.is_some_and(|st| (200..300).contains(&st));
        let next = if ok {
            Next::Delivered
        } else {
            let retry_after = match response.status {
                Some(429 | 503) => response.retry_after,
                _ => None,
            };
            match s.next_delay(attempt as u32, retry_after) {
                Some(d) => Next::Retry(d),
                None => Next::Dead,
            }
        };
        let error = match (&response.error, response.status) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(st)) if !ok => Some(format!("HTTP {st}")),
            _ => None,
        };
        let record = Attempt {
            delivery_id: c.delivery_id,
            lease_token: c.lease_token,
            attempt,
            started_at,
            duration,
            http_status: response.status,
            error: error.clone(),
            response_snippet: response.snippet,
            worker: self.inner.worker_id.clone(),
            next,
        };
        match self.record_with_retries(record).await {
            Some(true) => {
                let outcome = match next {
                    Next::Delivered => "delivered",
                    Next::Retry(_) => "retry",
                    Next::Dead => "dead",
                };
                metrics::counter!("iotpay_forward_deliveries_total", "endpoint" => label.clone(), "outcome" => outcome)
                    .increment(1);
                match next {
                    Next::Delivered => tracing::info!(
                        event_id = %c.event.event_id, endpoint = %label, attempt,
                        status = response.status, latency_ms = duration.as_millis() as u64, "event delivered"
                    ),
                    Next::Retry(d) => tracing::warn!(
                        event_id = %c.event.event_id, endpoint = %label, attempt, error = error.as_deref(),
                        retry_in_ms = d.as_millis() as u64, "delivery failed, will retry"
                    ),
                    Next::Dead => tracing::error!(
                        event_id = %c.event.event_id, endpoint = %label, attempt, error = error.as_deref(),
                        "delivery dead: retry schedule exhausted (redrive with `iotpay-notify deliveries redrive`)"
                    ),
                }
            }
            Some(false) => {
                metrics::counter!("iotpay_forward_lease_lost_total", "endpoint" => label.clone()).increment(1);
                tracing::warn!(event_id = %c.event.event_id, endpoint = %label, "lease lost before the result was recorded");
            }
            None => tracing::error!(
                event_id = %c.event.event_id, endpoint = %label,
                "could not record the attempt; the delivery will be retried when its lease expires"
            ),
        }
    }

    async fn record_with_retries(&self, a: Attempt) -> Option<bool> {
        let mut wait = Duration::from_millis(100);
        for _ in 0..5 {
            match self.inner.records.submit(a.clone()).await {
                Ok(held) => return Some(held),
                Err(e) => tracing::warn!(delivery_id = a.delivery_id, error = %e, "recording an attempt failed"),
            }
            tokio::time::sleep(wait).await;
            wait *= 3;
        }
        None
    }

    async fn post(&self, endpoint: &str, event_id: &str, body: Vec<u8>) -> Response {
        let timestamp = Utc::now().timestamp();
        let signature = signature::sign(&self.inner.secret, event_id, timestamp, &body);
        let deadline = tokio::time::Instant::now() + self.inner.settings.timeout;
        let request = self
            .inner
            .client
            .post(endpoint)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("webhook-id", event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send();
        let mut resp = match tokio::time::timeout_at(deadline, request).await {
            Err(_) => return Response { error: Some("timeout".into()), ..Default::default() },
            Ok(Err(e)) => return Response { error: Some(describe(&e)), ..Default::default() },
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        // The answer is known; a body that does not arrive in time only shortens the snippet.
        let mut buf = Vec::new();
        while buf.len() < SNIPPET_BYTES {
            match tokio::time::timeout_at(deadline, resp.chunk()).await {
                Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk),
                _ => break,
            }
        }
        Response { status: Some(status), error: None, snippet: snippet(&buf), retry_after }
    }
}

/// Keeps the first 1 KiB of a body as text, cut on a character boundary.
fn snippet(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SNIPPET_BYTES)]);
    let mut end = text.len().min(SNIPPET_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(text[..end].to_owned())
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else {
        "request error"
    };
    // The source chain says why (refused, reset, DNS) without the URL, which may hold credentials.
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}

fn result_class(r: &Response) -> &'static str {
    match r.status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(_) => "5xx",
        None if r.error.as_deref() == Some("timeout")
            || r.error.as_deref().is_some_and(|e| e.starts_with("timeout")) =>
        {
            "timeout"
        }
        None => "error",
    }
}

/// The endpoint as a metric label or log field: scheme, host, port and path only, so
/// credentials in the user-info or query string never leave the database.
pub fn endpoint_label(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}{}{}", u.scheme(), u.host_str().unwrap_or(""), port, u.path())
        }
        Err(_) => "invalid-url".into(),
    }
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Refreshes the backlog, oldest-pending-age and dead gauges.
async fn stats_loop(pool: PgPool, shutdown: CancellationToken) {
    let mut seen: Vec<String> = Vec::new();
    loop {
        match store::stats(&pool).await {
            Ok(rows) => {
                // Endpoints that emptied out drop to zero rather than keep their last value.
                for label in &seen {
                    if !rows.iter().any(|r| &endpoint_label(&r.endpoint) == label) {
                        set_gauges(label, 0, 0.0, 0);
                    }
                }
                seen = rows.iter().map(|r| endpoint_label(&r.endpoint)).collect();
                for r in rows {
                    set_gauges(&endpoint_label(&r.endpoint), r.pending, r.oldest_pending_age_secs, r.dead);
                }
            }
            Err(e) => tracing::debug!(error = %e, "delivery stats unavailable"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(STATS_INTERVAL) => {}
        }
    }
}

fn set_gauges(label: &str, pending: i64, oldest: f64, dead: i64) {
    metrics::gauge!("iotpay_forward_backlog", "endpoint" => label.to_owned()).set(pending as f64);
    metrics::gauge!("iotpay_forward_oldest_pending_age_seconds", "endpoint" => label.to_owned()).set(oldest);
    metrics::gauge!("iotpay_forward_dead", "endpoint" => label.to_owned()).set(dead as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_drop_credentials() {
        assert_eq!(
            endpoint_label("https://user:pw@hooks.internal:8443/iotpay?token=abc"),
            "https://hooks.internal:8443/iotpay"
        );
        assert_eq!(endpoint_label("http://127.0.0.1/x"), "http://127.0.0.1/x");
    }

    #[test]
    fn snippets_are_bounded_and_cut_on_characters() {
        assert_eq!(snippet(b""), None);
        let long = "é".repeat(1000);
        let s = snippet(long.as_bytes()).unwrap();
        assert!(s.len() <= SNIPPET_BYTES && s.chars().all(|c| c == 'é'), "{}", s.len());
        let invalid = vec![0xff; 2000];
        assert!(snippet(&invalid).unwrap().len() <= SNIPPET_BYTES);
    }
}
