//! Harness for forwarding tests: the development tools' sink (it verifies every request's
//! Standard Webhooks signature), scripted per path, with every body validated against
//! docs/forwarded-event.schema.json, plus helpers that confirm events exactly as the
//! confirmation worker does.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use iotpay_devtools::sink::{self, Answer, Sink, SinkConfig, Verdict};
use iotpay_notify::config::ForwardSecret;
use iotpay_notify::forward::{ForwardSettings, Forwarder};
use iotpay_notify::store;
use serde_json::Value;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub fn secret() -> ForwardSecret {
    ForwardSecret::parse(SECRET).unwrap()
}

/// What the receiver answers to one request on a path.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 `ok`.
    Ok,
    /// This status with body `boom`.
    Status(u16),
    /// This status with a `Retry-After` header.
    RetryAfter(u16, &'static str),
    /// Waits, then 200.
    Sleep(Duration),
    /// This status with this body.
    Body(u16, &'static str),
}

impl Reply {
    fn answer(self) -> Answer {
        let status = |s: u16| StatusCode::from_u16(s).unwrap();
        match self {
            Reply::Ok => Answer::new(StatusCode::OK, "ok"),
            Reply::Status(s) => Answer::new(status(s), "boom"),
            Reply::RetryAfter(s, after) => Answer::new(status(s), "slow down").with_header("retry-after", after),
            Reply::Sleep(d) => Answer::new(StatusCode::OK, "late").after(d),
            Reply::Body(s, body) => Answer::new(status(s), body),
        }
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub webhook_id: String,
    pub timestamp: i64,
    pub content_type: String,
    pub at: Instant,
    pub body: Value,
    pub signature_ok: bool,
    pub schema_errors: Vec<String>,
}

/// Checks what every endpoint must get: a verified signature, a body valid against the schema,
/// JSON, and the event id as `webhook-id`.
pub fn assert_well_formed(received: &[Received]) {
    for r in received {
        assert!(r.signature_ok, "signature of {} on {} does not verify", r.webhook_id, r.path);
        assert!(r.schema_errors.is_empty(), "body violates the schema: {:?}\n{}", r.schema_errors, r.body);
        assert_eq!(r.content_type, "application/json");
        assert_eq!(r.body["data"]["event_id"], r.webhook_id.as_str(), "webhook-id is the event id");
    }
}

/// A receiving endpoint on 127.0.0.1: a [`Sink`] that answers `ok` unless scripted.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    sink: Arc<Sink>,
    schema: Arc<jsonschema::Validator>,
    /// The sink's records seen so far, with their schema check (each body is checked once).
    seen: Arc<Mutex<Vec<Received>>>,
}

/// docs/forwarded-event.schema.json, the contract of forwarded events.
pub const FORWARDED_EVENT_SCHEMA: &str = include_str!("../../docs/forwarded-event.schema.json");

pub fn schema() -> jsonschema::Validator {
    // Embedded at compile time: a path read at run time breaks when a shared target directory
    // holds a test binary built from another (since deleted) checkout.
    let schema: Value = serde_json::from_str(FORWARDED_EVENT_SCHEMA).expect("the schema is JSON");
    jsonschema::options().should_validate_formats(true).build(&schema).expect("the schema is valid JSON Schema")
}

impl Receiver {
    pub async fn start() -> Receiver {
        let sink = Sink::start(SinkConfig::new(secret())).await.unwrap();
        sink.set_fallback(Some(Reply::Ok.answer()));
        Receiver { addr: sink.addr(), sink: Arc::new(sink), schema: Arc::new(schema()), seen: Arc::default() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests on `path` with `replies`, in order, then `Ok`.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.sink.script(path, replies.into_iter().map(Reply::answer));
    }

    /// Answers requests past the script on `path` with `reply`.
    pub fn default_reply(&self, path: &str, reply: Reply) {
        self.sink.set_default(path, Some(reply.answer()));
    }

    /// Every request takes this long to answer.
    pub fn set_delay(&self, d: Duration) {
        self.sink.set_delay(d);
    }

    pub fn received(&self) -> Vec<Received> {
        let mut seen = self.seen.lock().unwrap();
        let new = self.sink.received_since(seen.len());
        seen.extend(new.into_iter().map(|r| self.check(r)));
        seen.clone()
    }

    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path).collect()
    }

    fn check(&self, r: sink::Received) -> Received {
        let content_type = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        Received {
            schema_errors: self.schema.iter_errors(&r.body).map(|e| e.to_string()).collect(),
            signature_ok: r.verdict != Verdict::BadSignature,
            path: r.path,
            webhook_id: r.webhook_id,
            timestamp: r.timestamp.unwrap_or(0),
            content_type,
            at: r.at,
            body: r.body,
        }
    }
}

/// Settings with a millisecond schedule so tests stay fast.
pub fn fast_settings(schedule_ms: &[u64]) -> ForwardSettings {
    ForwardSettings {
        schedule: schedule_ms.iter().map(|ms| Duration::from_millis(*ms)).collect(),
        timeout: Duration::from_secs(5),
        concurrency_per_endpoint: 4,
        poll_interval: Duration::from_millis(50),
        retry_after_max: Duration::from_secs(30),
        jitter: 0.1,
    }
}

/// A running forwarder; stops (and waits) on `stop`.
pub struct Running {
    token: CancellationToken,
    handle: JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.handle).await.expect("forwarder stops").unwrap();
    }
}

pub fn start(pool: &PgPool, endpoints: &[String], settings: ForwardSettings, worker: &str) -> Running {
    let f = Forwarder::new(pool.clone(), endpoints.to_vec(), secret(), settings, Some(worker.into())).unwrap();
    let token = CancellationToken::new();
    let handle = tokio::spawn(f.run(token.clone()));
    Running { token, handle }
}

/// Inserts `n` pending v3 payment events directly (ids `evt_` + md5, as the schema requires).
pub async fn insert_events(pool: &PgPool, prefix: &str, n: i64) -> Vec<String> {
    sqlx::query_scalar(
        "INSERT INTO payment_events (event_id, event_type, api_version, mch_id, mch_order_no, pay_order_id,
                                     amount, currency, iotpay_status, pay_type, refundable, card_num, channel)
         SELECT 'evt_' || md5($1 || i), 'payment.succeeded', 'v3', '10000701', 'order-' || $1 || i, $1 || i,
                100 + i, 'CAD', 2, 'pay', 100 + i, '432567******2266', 'PF_CC'
           FROM generate_series(1, $2) AS i
         RETURNING event_id",
    )
    .bind(prefix)
    .bind(n)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Confirms every event and enqueues their deliveries in ONE transaction: the whole backlog
/// appears at once, as after an outage of the endpoints.
pub async fn confirm_at_once(pool: &PgPool, event_ids: &[String], endpoints: &[String]) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE payment_events SET status = 'confirmed', confirmed_at = now()")
        .execute(&mut *tx)
        .await
        .unwrap();
    for id in event_ids {
        store::deliveries::enqueue(&mut tx, id, endpoints).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// Confirms events the way the confirmation worker does: one transaction per event that sets
/// `confirmed`, enqueues one delivery per endpoint and notifies table consumers.
pub async fn confirm(pool: &PgPool, event_ids: &[String], endpoints: &[String]) {
    for id in event_ids {
        let mut tx = pool.begin().await.unwrap();
        let updated = sqlx::query(
            "UPDATE payment_events SET status = 'confirmed', confirmed_at = now(), updated_at = now()
              WHERE event_id = $1 AND status = 'pending'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(updated, 1, "event {id} was pending");
        store::deliveries::enqueue(&mut tx, id, endpoints).await.unwrap();
        sqlx::query("SELECT pg_notify('payment_events_confirmed', $1)").bind(id).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    }
}

/// Polls `check` until it returns true or `within` elapses (then panics with `what`).
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Counts deliveries with this status.
pub async fn deliveries_with(pool: &PgPool, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = $1").bind(status).fetch_one(pool).await.unwrap()
}

/// Status and attempts of the delivery of `event_id` to `endpoint`.
pub async fn delivery(pool: &PgPool, event_id: &str, endpoint: &str) -> (String, i32) {
    sqlx::query_as("SELECT status, attempts FROM deliveries WHERE event_id = $1 AND endpoint = $2")
        .bind(event_id)
        .bind(endpoint)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The recorded attempts of that delivery: (attempt, http_status, error, snippet, duration_ms).
pub async fn attempts(
    pool: &PgPool,
    event_id: &str,
    endpoint: &str,
) -> Vec<(i32, Option<i32>, Option<String>, Option<String>, i32)> {
    sqlx::query_as(
        "SELECT a.attempt, a.http_status, a.error, a.response_snippet, a.duration_ms
           FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
          WHERE d.event_id = $1 AND d.endpoint = $2 ORDER BY a.id",
    )
    .bind(event_id)
    .bind(endpoint)
    .fetch_all(pool)
    .await
    .unwrap()
}
