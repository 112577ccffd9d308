//! Harness for forwarding tests: a receiving HTTP server that verifies every request's Standard
//! Webhooks signature and validates its body against docs/forwarded-event.schema.json, plus
//! helpers that confirm events exactly as the confirmation worker does.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use iotpay_notify::config::ForwardSecret;
use iotpay_notify::forward::{signature, ForwardSettings, Forwarder};
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

#[derive(Default)]
struct Inner {
    scripts: HashMap<String, VecDeque<Reply>>,
    /// Answer for requests past the script (default `Ok`).
    default: HashMap<String, Reply>,
    /// Per-request handling delay for every path.
    delay: Duration,
    received: Vec<Received>,
}

/// A receiving endpoint server on 127.0.0.1.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    schema: Arc<jsonschema::Validator>,
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = Receiver { addr, inner: Default::default(), schema: Arc::new(schema()) };
        let app = Router::new().fallback(handle).with_state(me.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        me
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next requests on `path` with `replies`, in order, then `Ok`.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().scripts.entry(path.into()).or_default().extend(replies);
    }

    /// Answers requests past the script on `path` with `reply`.
    pub fn default_reply(&self, path: &str, reply: Reply) {
        self.inner.lock().unwrap().default.insert(path.into(), reply);
    }

    /// Every request takes this long to answer.
    pub fn set_delay(&self, d: Duration) {
        self.inner.lock().unwrap().delay = d;
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path).collect()
    }
}

async fn handle(State(me): State<Receiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let webhook_id = h("webhook-id");
    let timestamp: i64 = h("webhook-timestamp").parse().unwrap_or(0);
    let now = chrono::Utc::now().timestamp();
    let signature_ok =
        signature::verify(&secret(), &webhook_id, timestamp, &body, &h("webhook-signature"), now).is_ok();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let schema_errors = me.schema.iter_errors(&parsed).map(|e| e.to_string()).collect();
    let path = uri.path().to_owned();
    let (reply, delay) = {
        let mut inner = me.inner.lock().unwrap();
        inner.received.push(Received {
            path: path.clone(),
            webhook_id,
            timestamp,
            content_type: h("content-type"),
            at: Instant::now(),
            body: parsed,
            signature_ok,
            schema_errors,
        });
        let scripted = inner.scripts.get_mut(&path).and_then(|q| q.pop_front());
        (scripted.or_else(|| inner.default.get(&path).cloned()).unwrap_or(Reply::Ok), inner.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match reply {
        Reply::Ok => (StatusCode::OK, "ok").into_response(),
        Reply::Status(s) => (StatusCode::from_u16(s).unwrap(), "boom").into_response(),
        Reply::RetryAfter(s, after) => {
            (StatusCode::from_u16(s).unwrap(), [("retry-after", after)], "slow down").into_response()
        }
        Reply::Sleep(d) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "late").into_response()
        }
        Reply::Body(s, body) => (StatusCode::from_u16(s).unwrap(), body).into_response(),
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
