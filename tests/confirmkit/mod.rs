//! Harness of the confirmation tests: a fake IOTPay (an axum app on a random port, scripted per
//! payOrderId) that answers the worker's queries, and a harness owning a database, the HTTP app
//! and the workers, with helpers that read the outcome from Postgres.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use iotpay_devtools::testing::TestDatabase;
use iotpay_notify::service;
use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::{signed, test_config, v3_pay, TestApp, KEY};

// ---------------------------------------------------------------- the fake IOTPay

/// One scripted answer of the fake IOTPay.
#[derive(Clone, Debug)]
pub enum Reply {
    /// retCode SUCCESS with this order, signed with the merchant's key.
    Order(Value),
    /// The same, signed with a key that is not the merchant's.
    WrongSign(Value),
    /// retCode FAIL "order not exist".
    NotFound,
    /// retCode FAIL with this message.
    Fail(&'static str),
    /// A bare HTTP status.
    Status(u16),
    /// Waits, then answers.
    Delay(Duration, Box<Reply>),
    /// 200 with this body as it is.
    Raw(&'static str),
    /// A redirect to the same API (a client that followed it would get an answer).
    Redirect,
}

#[derive(Default)]
pub struct FakeState {
    /// Per payOrderId; the last reply repeats once the others are used.
    pub scripts: HashMap<String, VecDeque<Reply>>,
    /// (path, body) of every request, in arrival order.
    pub requests: Vec<(String, Value)>,
    /// Requests being answered now, and the most there ever were at once.
    pub in_flight: usize,
    pub max_in_flight: usize,
}

#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<FakeState>>,
}

impl Fake {
    pub async fn start() -> Fake {
        let state: Arc<Mutex<FakeState>> = Arc::default();
        let app = axum::Router::new().fallback(fake_query).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Fake { addr, state }
    }

    pub fn script(&self, pay_order_id: &str, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().scripts.insert(pay_order_id.to_owned(), replies.into_iter().collect());
    }

    pub fn requests(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn requests_for(&self, pay_order_id: &str) -> usize {
        self.requests().iter().filter(|(_, b)| b["payOrderId"] == json!(pay_order_id)).count()
    }
}

async fn fake_query(State(state): State<Arc<Mutex<FakeState>>>, uri: Uri, Json(body): Json<Value>) -> Response {
    let path = uri.path().to_owned();
    let reply = {
        let mut s = state.lock().unwrap();
        s.requests.push((path.clone(), body.clone()));
        let id = body["payOrderId"].as_str().unwrap_or_default().to_owned();
        match s.scripts.get_mut(&id) {
            Some(q) if q.len() > 1 => q.pop_front().unwrap(),
            Some(q) if q.len() == 1 => q[0].clone(),
            _ => Reply::NotFound,
        }
    };
    let member = if path.starts_with("/v2/") { "order" } else { "retData" };
    {
        let mut s = state.lock().unwrap();
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
    }
    let response = answer(reply, member).await;
    state.lock().unwrap().in_flight -= 1;
    response
}

async fn answer(mut reply: Reply, member: &str) -> Response {
    while let Reply::Delay(d, inner) = reply {
        tokio::time::sleep(d).await;
        reply = *inner;
    }
    let signed_with = |order: Value, key: &str| -> Value { serde_json::from_str(&signed(order, key)).unwrap() };
    match reply {
        Reply::Order(order) => {
            Json(json!({"retCode": "SUCCESS", "retMsg": "", member: signed_with(order, KEY)})).into_response()
        }
        Reply::WrongSign(order) => {
            Json(json!({"retCode": "SUCCESS", "retMsg": "", member: signed_with(order, "NOT-THE-KEY")})).into_response()
        }
        Reply::NotFound => Json(json!({"retCode": "FAIL", "retMsg": "order not exist"})).into_response(),
        Reply::Fail(msg) => Json(json!({"retCode": "FAIL", "retMsg": msg})).into_response(),
        Reply::Status(code) => (StatusCode::from_u16(code).unwrap(), "upstream trouble").into_response(),
        Reply::Raw(body) => (StatusCode::OK, body).into_response(),
        Reply::Redirect => (StatusCode::FOUND, [("location", "/v3/cc_query")], "").into_response(),
        Reply::Delay(..) => unreachable!(),
    }
}

/// The order IOTPay's v3 query reports for a notification built with `common::v3_pay` / `v3_refund`.
pub fn v3_order_of(notification: &Value, status: i64) -> Value {
    let mut order = notification.clone();
    order["status"] = json!(status);
    order["invoiceNum"] = json!("INV1");
    order
}

pub fn v3_ok(pay_order_id: &str, amount: i64) -> Reply {
    Reply::Order(v3_order_of(&v3_pay(pay_order_id, amount), 2))
}

// ---------------------------------------------------------------- harness

pub const FORWARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Fast knobs so the suite stays quick: millisecond backoff, 2 s lease.
pub const FAST: [(&str, &str); 6] = [
    ("CONFIRM_FIRST_RETRY_MS", "40"),
    ("CONFIRM_MAX_BACKOFF_MS", "200"),
    ("CONFIRM_POLL_INTERVAL_MS", "200"),
    ("CONFIRM_LEASE_SECS", "2"),
    ("IOTPAY_QUERY_TIMEOUT_MS", "1500"),
    ("IOTPAY_CONNECT_TIMEOUT_MS", "500"),
];

pub struct Harness {
    pub db: TestDatabase,
    pub app: TestApp,
    pub fake: Fake,
    pub stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Harness {
    /// A database, the HTTP app and the fake IOTPay; no worker yet.
    pub async fn new() -> Harness {
        let db = TestDatabase::create().await;
        let app = TestApp::spawn(&db).await;
        let fake = Fake::start().await;
        Harness { db, app, fake, stop: CancellationToken::new() }
    }

    pub fn config(&self, extra: &[(&str, &str)]) -> iotpay_notify::config::Config {
        let v3 = format!("http://{}/v3", self.fake.addr);
        let v2 = format!("http://{}/v2", self.fake.addr);
        let mut env: Vec<(&str, &str)> = vec![("IOTPAY_V3_API_URL", &v3), ("IOTPAY_V2_API_URL", &v2)];
        env.extend(FAST);
        env.extend(extra);
        test_config(&self.db.url(), &env)
    }

    /// Starts one confirmation worker; returns its task (abort it to "kill" the worker).
    pub fn worker(&self, extra: &[(&str, &str)]) -> JoinHandle<()> {
        let config = self.config(extra);
        let confirmer = service::confirmer(self.db.pool.clone(), &config).unwrap();
        tokio::spawn(confirmer.run(self.stop.child_token()))
    }

    pub async fn notify(&self, fields: Value) {
        assert_eq!(self.app.post_json(&signed(fields, KEY)).await, (200, "SUCCESS".into()));
    }

    pub async fn decided(&self, pay_order_id: &str) -> PgRow {
        wait_decided(&self.db.pool, pay_order_id, Duration::from_secs(10)).await
    }
}

pub async fn event(pool: &PgPool, pay_order_id: &str) -> PgRow {
    sqlx::query("SELECT * FROM payment_events WHERE pay_order_id = $1")
        .bind(pay_order_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Polls until the event is no longer `pending`; panics at the deadline.
pub async fn wait_decided(pool: &PgPool, pay_order_id: &str, within: Duration) -> PgRow {
    let deadline = Instant::now() + within;
    loop {
        if let Some(row) = sqlx::query("SELECT * FROM payment_events WHERE pay_order_id = $1 AND status <> 'pending'")
            .bind(pay_order_id)
            .fetch_optional(pool)
            .await
            .unwrap()
        {
            return row;
        }
        assert!(Instant::now() < deadline, "{pay_order_id} still pending after {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn status(row: &PgRow) -> (String, Option<String>) {
    (row.get("status"), row.get("status_reason"))
}

pub async fn deliveries_of(pool: &PgPool, pay_order_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM deliveries d JOIN payment_events e USING (event_id) WHERE e.pay_order_id = $1",
    )
    .bind(pay_order_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub fn forward_env() -> [(&'static str, &'static str); 2] {
    [("FORWARD_URLS", "http://127.0.0.1:9/a,http://127.0.0.1:9/b"), ("FORWARD_SECRET", FORWARD_SECRET)]
}
