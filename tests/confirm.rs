//! Black-box tests of confirmation: notifications go in through the HTTP app, a fake IOTPay
//! (an axum app on a random port, scripted per payOrderId) answers the worker's queries, and
//! the outcome is read from `payment_events` / `deliveries` in a real Postgres.

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::*;
use iotpay_devtools::testing::TestDatabase;
use iotpay_notify::domain::MerchantKey;
use iotpay_notify::iotpay::sign;
use iotpay_notify::service;
use iotpay_notify::store::confirm::{self as queue, Applied, Decided, OrderAnswer, Verdict};
use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- the fake IOTPay

/// One scripted answer of the fake IOTPay.
#[derive(Clone, Debug)]
enum Reply {
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
struct FakeState {
    /// Per payOrderId; the last reply repeats once the others are used.
    scripts: HashMap<String, VecDeque<Reply>>,
    /// (path, body) of every request, in arrival order.
    requests: Vec<(String, Value)>,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: usize,
    max_in_flight: usize,
}

#[derive(Clone)]
struct Fake {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    async fn start() -> Fake {
        let state: Arc<Mutex<FakeState>> = Arc::default();
        let app = axum::Router::new().fallback(fake_query).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Fake { addr, state }
    }

    fn script(&self, pay_order_id: &str, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().scripts.insert(pay_order_id.to_owned(), replies.into_iter().collect());
    }

    fn requests(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().requests.clone()
    }

    fn requests_for(&self, pay_order_id: &str) -> usize {
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
fn v3_order_of(notification: &Value, status: i64) -> Value {
    let mut order = notification.clone();
    order["status"] = json!(status);
    order["invoiceNum"] = json!("INV1");
    order
}

fn v3_ok(pay_order_id: &str, amount: i64) -> Reply {
    Reply::Order(v3_order_of(&v3_pay(pay_order_id, amount), 2))
}

// ---------------------------------------------------------------- harness

const FORWARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Fast knobs so the suite stays quick: millisecond backoff, 2 s lease.
const FAST: [(&str, &str); 6] = [
    ("CONFIRM_FIRST_RETRY_MS", "40"),
    ("CONFIRM_MAX_BACKOFF_MS", "200"),
    ("CONFIRM_POLL_INTERVAL_MS", "200"),
    ("CONFIRM_LEASE_SECS", "2"),
    ("IOTPAY_QUERY_TIMEOUT_MS", "1500"),
    ("IOTPAY_CONNECT_TIMEOUT_MS", "500"),
];

struct Harness {
    db: TestDatabase,
    app: TestApp,
    fake: Fake,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Harness {
    /// A database, the HTTP app and the fake IOTPay; no worker yet.
    async fn new() -> Harness {
        let db = TestDatabase::create().await;
        let app = TestApp::spawn(&db).await;
        let fake = Fake::start().await;
        Harness { db, app, fake, stop: CancellationToken::new() }
    }

    fn config(&self, extra: &[(&str, &str)]) -> iotpay_notify::config::Config {
        let v3 = format!("http://{}/v3", self.fake.addr);
        let v2 = format!("http://{}/v2", self.fake.addr);
        let mut env: Vec<(&str, &str)> = vec![("IOTPAY_V3_API_URL", &v3), ("IOTPAY_V2_API_URL", &v2)];
        env.extend(FAST);
        env.extend(extra);
        test_config(&self.db.url(), &env)
    }

    /// Starts one confirmation worker; returns its task (abort it to "kill" the worker).
    fn worker(&self, extra: &[(&str, &str)]) -> JoinHandle<()> {
        let config = self.config(extra);
        let confirmer = service::confirmer(self.db.pool.clone(), &config).unwrap();
        tokio::spawn(confirmer.run(self.stop.child_token()))
    }

    async fn notify(&self, fields: Value) {
        assert_eq!(self.app.post_json(&signed(fields, KEY)).await, (200, "SUCCESS".into()));
    }

    async fn decided(&self, pay_order_id: &str) -> PgRow {
        wait_decided(&self.db.pool, pay_order_id, Duration::from_secs(10)).await
    }
}

async fn event(pool: &PgPool, pay_order_id: &str) -> PgRow {
    sqlx::query("SELECT * FROM payment_events WHERE pay_order_id = $1")
        .bind(pay_order_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Polls until the event is no longer `pending`; panics at the deadline.
async fn wait_decided(pool: &PgPool, pay_order_id: &str, within: Duration) -> PgRow {
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

async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn status(row: &PgRow) -> (String, Option<String>) {
    (row.get("status"), row.get("status_reason"))
}

async fn deliveries_of(pool: &PgPool, pay_order_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM deliveries d JOIN payment_events e USING (event_id) WHERE e.pay_order_id = $1",
    )
    .bind(pay_order_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn forward_env() -> [(&'static str, &'static str); 2] {
    [("FORWARD_URLS", "http://127.0.0.1:9/a,http://127.0.0.1:9/b"), ("FORWARD_SECRET", FORWARD_SECRET)]
}

// ---------------------------------------------------------------- agreement

#[tokio::test]
async fn agreeing_v3_payment_is_confirmed_by_one_signed_query() {
    let h = Harness::new().await;
    h.fake.script("PC1", [v3_ok("PC1", 1500)]);
    h.worker(&[]);
    h.notify(v3_pay("PC1", 1500)).await;

    let e = h.decided("PC1").await;
    assert_eq!(status(&e), ("confirmed".into(), None));
    assert!(e.get::<Option<chrono::DateTime<chrono::Utc>>, _>("confirmed_at").is_some());
    assert_eq!(e.get::<i32, _>("confirm_attempts"), 1);
    assert_eq!(e.get::<Option<String>, _>("leased_by"), None, "the lease is released");

    let requests = h.fake.requests();
    assert_eq!(requests.len(), 1);
    let (path, body) = &requests[0];
    assert_eq!(path, "/v3/cc_query");
    assert_eq!(body["mchId"], json!(MCH));
    assert_eq!(body["payOrderId"], json!("PC1"));
    // Signed with the merchant's FIRST key (KEY; ROTATED_KEY is second).
    let expected = sign::sign_pairs([("mchId", MCH), ("payOrderId", "PC1")], &MerchantKey::new(KEY));
    assert_eq!(body["sign"], json!(expected));
    assert_eq!(body.as_object().unwrap().len(), 3, "mchId, payOrderId, sign only: {body}");

    // The outcome, the query latency and the backlog are exported.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = h.app.client.get(h.app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let has = |needle: &str| text.contains(needle);
        if has(r#"iotpay_confirmations_total{outcome="confirmed"}"#)
            && has(r#"iotpay_query_duration_seconds_bucket{api_version="v3",result="ok""#)
            && has("iotpay_confirm_pending_events")
            && has("iotpay_confirm_oldest_pending_age_seconds")
        {
            break;
        }
        assert!(Instant::now() < deadline, "confirmation metrics missing from:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn pending_then_unknown_then_success_is_confirmed_on_the_third_check() {
    let h = Harness::new().await;
    let n = v3_pay("PC2", 700);
    h.fake.script(
        "PC2",
        [Reply::Order(v3_order_of(&n, 0)), Reply::Order(v3_order_of(&n, 1)), Reply::Order(v3_order_of(&n, 2))],
    );
    h.worker(&[]);
    h.notify(n).await;
    let e = h.decided("PC2").await;
    assert_eq!(status(&e), ("confirmed".into(), None));
    assert_eq!(e.get::<i32, _>("confirm_attempts"), 3);
    assert_eq!(h.fake.requests_for("PC2"), 3);
}

#[tokio::test]
async fn http_500_then_success_is_confirmed() {
    let h = Harness::new().await;
    h.fake.script("PC3", [Reply::Status(500), Reply::Status(502), v3_ok("PC3", 100)]);
    h.worker(&[]);
    h.notify(v3_pay("PC3", 100)).await;
    let e = h.decided("PC3").await;
    assert_eq!(status(&e).0, "confirmed");
    assert_eq!(e.get::<i32, _>("confirm_attempts"), 3);
}

#[tokio::test]
async fn timeout_then_success_is_confirmed() {
    let h = Harness::new().await;
    h.fake.script("PC4", [Reply::Delay(Duration::from_secs(3), Box::new(v3_ok("PC4", 100))), v3_ok("PC4", 100)]);
    h.worker(&[("IOTPAY_QUERY_TIMEOUT_MS", "300")]);
    let started = Instant::now();
    h.notify(v3_pay("PC4", 100)).await;
    let e = h.decided("PC4").await;
    assert_eq!(status(&e).0, "confirmed");
    assert_eq!(e.get::<i32, _>("confirm_attempts"), 2);
    assert!(started.elapsed() < Duration::from_secs(3), "the slow answer was not waited for");
}

#[tokio::test]
async fn inconclusive_check_is_recorded_while_pending() {
    let h = Harness::new().await;
    let n = v3_pay("PC5", 100);
    h.fake.script("PC5", [Reply::Order(v3_order_of(&n, 0))]);
    h.worker(&[("CONFIRM_FIRST_RETRY_MS", "60000"), ("CONFIRM_MAX_BACKOFF_MS", "60000")]);
    h.notify(n).await;
    let fake = h.fake.clone();
    wait_until("first check", Duration::from_secs(5), || fake.requests_for("PC5") == 1).await;
    // The decision lands right after the answer; poll for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let e = loop {
        let e = event(&h.db.pool, "PC5").await;
        if e.get::<Option<String>, _>("last_check_error").is_some() || Instant::now() > deadline {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(status(&e), ("pending".into(), None));
    assert_eq!(e.get::<Option<String>, _>("last_check_error").as_deref(), Some("IOTPay reports status 0 (pending)"));
    let wait: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM next_check_at - last_checked_at)::float8 FROM payment_events WHERE pay_order_id = 'PC5'",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert!((29.0..=61.0).contains(&wait), "next check in [first/2, first] = [30 s, 60 s], got {wait}");
}

// ---------------------------------------------------------------- contradiction

#[tokio::test]
async fn status_9_is_rejected_and_never_enqueued() {
    let h = Harness::new().await;
    let n = v3_pay("PR9", 100);
    h.fake.script("PR9", [Reply::Order(v3_order_of(&n, 9))]);
    h.worker(&forward_env());
    h.notify(n).await;
    let e = h.decided("PR9").await;
    assert_eq!(status(&e), ("rejected".into(), Some("IOTPay reports status 9 (failed)".into())));
    assert!(e.get::<Option<chrono::DateTime<chrono::Utc>>, _>("confirmed_at").is_none());
    assert_eq!(deliveries_of(&h.db.pool, "PR9").await, 0);
}

#[tokio::test]
async fn amount_currency_order_no_and_pay_type_mismatches_are_rejected() {
    let h = Harness::new().await;
    let cases = [
        ("PMA", "amount", json!(1501), "amount differs: notification 1500, IOTPay 1501"),
        ("PMC", "currency", json!("USD"), "currency differs: notification CAD, IOTPay USD"),
        (
            "PMO",
            "mchOrderNo",
            json!("someone-else"),
            "mch_order_no differs: notification order-PMO, IOTPay someone-else",
        ),
        ("PMT", "payType", json!("refund"), "pay_type differs: notification pay, IOTPay refund"),
        ("PMM", "mchId", json!(OTHER_MCH), "mch_id differs: notification 10000701, IOTPay 20000002"),
    ];
    for (id, field, value, _) in &cases {
        let mut order = v3_order_of(&v3_pay(id, 1500), 2);
        order[*field] = value.clone();
        h.fake.script(id, [Reply::Order(order)]);
    }
    h.worker(&forward_env());
    for (id, ..) in &cases {
        h.notify(v3_pay(id, 1500)).await;
    }
    for (id, _, _, reason) in &cases {
        let e = h.decided(id).await;
        assert_eq!(status(&e), ("rejected".into(), Some(reason.to_string())), "{id}");
        assert_eq!(deliveries_of(&h.db.pool, id).await, 0, "{id}");
    }
}

/// Several "not found" checks spanning a minimum age (issue 11): knobs shortened for the test.
const NOT_FOUND_FAST: [(&str, &str); 2] = [("CONFIRM_NOT_FOUND_CHECKS", "3"), ("CONFIRM_NOT_FOUND_MIN_AGE_SECS", "1")];

#[tokio::test]
async fn order_unknown_to_iotpay_is_rejected_after_several_checks_over_a_minimum_age() {
    let h = Harness::new().await;
    h.fake.script("PNF", [Reply::NotFound]);
    let mut env = forward_env().to_vec();
    env.extend(NOT_FOUND_FAST);
    h.worker(&env);
    let started = Instant::now();
    h.notify(v3_pay("PNF", 100)).await;
    let e = h.decided("PNF").await;
    let (status_text, reason) = status(&e);
    assert_eq!(status_text, "rejected");
    let reason = reason.unwrap();
    assert!(reason.starts_with("order unknown to IOTPay: order not exist (on "), "{reason}");
    assert!(started.elapsed() >= Duration::from_secs(1), "not before the minimum age");
    let checks: i32 = e.get("not_found_checks");
    assert!(checks >= 3, "{checks}");
    assert!(h.fake.requests_for("PNF") >= 3);
    assert_eq!(deliveries_of(&h.db.pool, "PNF").await, 0);
}

/// Issue 11: IOTPay may not know an order yet right after notifying it. With the default knobs,
/// a few "not found" answers followed by the order confirm it.
#[tokio::test]
async fn an_order_iotpay_does_not_know_yet_is_confirmed_once_it_does() {
    let h = Harness::new().await;
    h.fake.script("PLAG", [Reply::NotFound, Reply::NotFound, Reply::NotFound, v3_ok("PLAG", 100)]);
    h.worker(&forward_env());
    h.notify(v3_pay("PLAG", 100)).await;
    let e = h.decided("PLAG").await;
    assert_eq!(status(&e), ("confirmed".into(), None));
    assert_eq!(h.fake.requests_for("PLAG"), 4);
}

/// Issue 11: "mchId not exist" is a merchant setup problem, not an answer about the order: it is
/// retried and, if it never clears, ends `unconfirmed`, never `rejected`.
#[tokio::test]
async fn a_merchant_level_error_is_retried_and_never_rejects() {
    let h = Harness::new().await;
    h.fake.script("PMCH", [Reply::Fail("mchId not exist")]);
    let mut env = forward_env().to_vec();
    env.extend(NOT_FOUND_FAST);
    env.push(("CONFIRM_GIVE_UP_AFTER_SECS", "2"));
    h.worker(&env);
    h.notify(v3_pay("PMCH", 100)).await;
    let e = wait_decided(&h.db.pool, "PMCH", Duration::from_secs(15)).await;
    let (status_text, reason) = status(&e);
    assert_eq!(status_text, "unconfirmed");
    assert!(reason.unwrap().contains("IOTPay answered FAIL: mchId not exist"));
    assert!(h.fake.requests_for("PMCH") >= 3);
    let checks: i32 = e.get("not_found_checks");
    assert_eq!(checks, 0);
}

/// Issue 11 audit: the minimum age of "not found" is measured from IOTPay's first such answer,
/// not from when the event was stored. An event stored an hour ago (a backlog, a worker outage)
/// that IOTPay does not know for a few seconds is not rejected: once IOTPay knows it, it confirms.
#[tokio::test]
async fn an_old_event_is_not_rejected_by_a_few_quick_not_found_answers() {
    let h = Harness::new().await;
    h.fake.script("POLD", [Reply::NotFound, Reply::NotFound, Reply::NotFound, Reply::NotFound, v3_ok("POLD", 100)]);
    h.notify(v3_pay("POLD", 100)).await;
    sqlx::query("UPDATE payment_events SET created_at = now() - interval '1 hour' WHERE pay_order_id = 'POLD'")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let mut env = forward_env().to_vec();
    env.extend([("CONFIRM_NOT_FOUND_CHECKS", "3"), ("CONFIRM_NOT_FOUND_MIN_AGE_SECS", "60")]);
    h.worker(&env);
    let e = h.decided("POLD").await;
    assert_eq!(status(&e), ("confirmed".into(), None), "four quick not-found answers do not span 60 s");
    assert_eq!(h.fake.requests_for("POLD"), 5);
    assert_eq!(e.get::<i32, _>("not_found_checks"), 0, "the answer that found the order reset the count");
    assert!(e.get::<Option<chrono::DateTime<chrono::Utc>>, _>("first_not_found_at").is_none());
}

/// Issue 11 audit: only "not found" answers in a row count. An answer that finds the order
/// (here: still pending) starts the count again; an answer about nothing (a FAIL about something
/// else) leaves it as it is. And "mchOrderNo not exist" is about the order. IOTPay answers "not
/// found" from the last scripted reply on until the 1 s span is reached, so the counts are read
/// against the requests IOTPay got.
#[tokio::test]
async fn only_not_found_answers_in_a_row_count_toward_a_rejection() {
    let h = Harness::new().await;
    let pending = Reply::Order(v3_order_of(&v3_pay("PRESET", 100), 0));
    h.fake.script("PRESET", [Reply::NotFound, Reply::NotFound, pending, Reply::NotFound]);
    h.fake.script("PKEEP", [Reply::NotFound, Reply::NotFound, Reply::Fail("system busy"), Reply::NotFound]);
    h.fake.script("PMNO", [Reply::Fail("mchOrderNo not exist")]);
    let mut env = forward_env().to_vec();
    env.extend(NOT_FOUND_FAST);
    h.worker(&env);
    for id in ["PRESET", "PKEEP", "PMNO"] {
        h.notify(v3_pay(id, 100)).await;
    }
    // (event, answers that are not a "not found" of the final run, the message)
    for (id, not_counted, message) in
        [("PRESET", 3, "order not exist"), ("PKEEP", 1, "order not exist"), ("PMNO", 0, "mchOrderNo not exist")]
    {
        let e = h.decided(id).await;
        let (status_text, reason) = status(&e);
        assert_eq!(status_text, "rejected", "{id}: {reason:?}");
        let checks = e.get::<i32, _>("not_found_checks");
        assert!(checks >= 3, "{id}: {checks}");
        assert_eq!(checks as usize, h.fake.requests_for(id) - not_counted, "{id}");
        let reason = reason.unwrap();
        assert!(
            reason.starts_with(&format!("order unknown to IOTPay: {message} (on {checks} checks over ")),
            "{id}: {reason}"
        );
        assert_eq!(deliveries_of(&h.db.pool, id).await, 0, "{id}");
    }
}

/// Issue 11 audit: an operator's recheck asks afresh; "not found" answers from before it (two,
/// over an hour) do not count toward a rejection.
#[tokio::test]
async fn a_recheck_starts_the_not_found_count_again() {
    let h = Harness::new().await;
    h.notify(v3_pay("PRCK", 100)).await;
    sqlx::query(
        "UPDATE payment_events SET status = 'unconfirmed', status_reason = 'gave up', decided_at = now(),
                not_found_checks = 2, first_not_found_at = now() - interval '1 hour'
          WHERE pay_order_id = 'PRCK'",
    )
    .execute(&h.db.pool)
    .await
    .unwrap();
    let event_id: String = event(&h.db.pool, "PRCK").await.get("event_id");
    let queued = iotpay_notify::store::admin::recheck(&h.db.pool, &event_id).await.unwrap();
    assert_eq!(queued, iotpay_notify::store::admin::Recheck::Queued);
    let e = event(&h.db.pool, "PRCK").await;
    assert_eq!(e.get::<i32, _>("not_found_checks"), 0);
    assert!(e.get::<Option<chrono::DateTime<chrono::Utc>>, _>("first_not_found_at").is_none());

    h.fake.script("PRCK", [Reply::NotFound]);
    let mut env = forward_env().to_vec();
    env.extend(NOT_FOUND_FAST);
    h.worker(&env);
    let started = Instant::now();
    let e = h.decided("PRCK").await;
    assert_eq!(status(&e).0, "rejected");
    assert!(started.elapsed() >= Duration::from_secs(1), "a new 1 s span, not the hour before the recheck");
    assert!(h.fake.requests_for("PRCK") >= 3, "three answers after the recheck, not one");
    assert_eq!(e.get::<i32, _>("not_found_checks") as usize, h.fake.requests_for("PRCK"));
}

#[tokio::test]
async fn a_response_with_a_wrong_sign_is_never_trusted() {
    let h = Harness::new().await;
    // The forged answer agrees in every field: only its sign is wrong.
    h.fake.script("PWS", [Reply::WrongSign(v3_order_of(&v3_pay("PWS", 100), 2))]);
    h.worker(&[("CONFIRM_GIVE_UP_AFTER_SECS", "1"), forward_env()[0], forward_env()[1]]);
    h.notify(v3_pay("PWS", 100)).await;
    let e = h.decided("PWS").await;
    let (s, reason) = status(&e);
    assert_eq!(s, "unconfirmed");
    let reason = reason.unwrap();
    assert!(reason.contains("last: response sign invalid"), "{reason}");
    assert!(h.fake.requests_for("PWS") >= 2, "asked again before giving up");
    assert_eq!(deliveries_of(&h.db.pool, "PWS").await, 0);
}

// ---------------------------------------------------------------- v2, refunds, failures

#[tokio::test]
async fn v2_flow_queries_v2_and_checks_what_its_order_carries() {
    let h = Harness::new().await;
    // The documented v2 order: no mchId, amount or currency to compare.
    h.fake.script(
        "P2OK",
        [Reply::Order(json!({"payOrderId": "P2OK", "mchOrderNo": "m-P2OK", "transid": "660012345678", "status": 3,
                              "paySuccTime": "2021-04-07 19:44:51", "originalOrderId": "", "payType": ""}))],
    );
    // The sandbox's v2 order also carries the amount: a different one rejects.
    h.fake.script(
        "P2AM",
        [Reply::Order(json!({"payOrderId": "P2AM", "mchOrderNo": "m-P2AM", "transid": "1", "status": 3,
                              "mchId": MCH, "amount": 1, "currency": "CAD"}))],
    );
    h.worker(&[]);
    h.notify(v2_pay("P2OK", 2000)).await;
    h.notify(v2_pay("P2AM", 2000)).await;
    assert_eq!(status(&h.decided("P2OK").await), ("confirmed".into(), None));
    assert_eq!(
        status(&h.decided("P2AM").await),
        ("rejected".into(), Some("amount differs: notification 2000, IOTPay 1".into()))
    );
    assert!(h.fake.requests().iter().all(|(path, _)| path == "/v2/cc_query"), "{:?}", h.fake.requests());
}

#[tokio::test]
async fn refund_is_queried_by_its_own_id_and_checked_against_the_original() {
    let h = Harness::new().await;
    h.fake.script("RC1", [Reply::Order(v3_order_of(&v3_refund("RC1", "PC1", 500), 2))]);
    let mut other = v3_order_of(&v3_refund("RC2", "PC1", 500), 2);
    other["originalOrderId"] = json!("PC9");
    h.fake.script("RC2", [Reply::Order(other)]);
    h.worker(&forward_env());
    h.notify(v3_refund("RC1", "PC1", 500)).await;
    h.notify(v3_refund("RC2", "PC1", 500)).await;

    let e = h.decided("RC1").await;
    assert_eq!(status(&e), ("confirmed".into(), None));
    assert_eq!(e.get::<String, _>("event_type"), "refund.succeeded");
    assert_eq!(deliveries_of(&h.db.pool, "RC1").await, 2);
    assert_eq!(
        status(&h.decided("RC2").await),
        ("rejected".into(), Some("original_order_id differs: notification PC1, IOTPay PC9".into()))
    );
    assert_eq!(deliveries_of(&h.db.pool, "RC2").await, 0);
    assert_eq!(h.fake.requests_for("RC1"), 1, "queried by the refund's own payOrderId");
    assert_eq!(h.fake.requests_for("PC1"), 0);
}

#[tokio::test]
async fn failures_are_confirmed_only_as_failures_and_unrecognized_never() {
    let h = Harness::new().await;
    let mut failed = v3_pay("PF1", 100);
    failed["status"] = json!(9);
    h.fake.script("PF1", [Reply::Order(v3_order_of(&failed, 9))]);
    let mut contradicted = v3_pay("PF2", 100);
    contradicted["status"] = json!(9);
    h.fake.script("PF2", [Reply::Order(v3_order_of(&contradicted, 2))]);
    let mut odd = v3_pay("PX1", 100);
    odd["payType"] = json!("preauth");
    h.fake.script("PX1", [Reply::Order(v3_order_of(&odd, 2))]);
    h.worker(&[]);
    h.notify(failed).await;
    h.notify(contradicted).await;
    h.notify(odd).await;

    let e = h.decided("PF1").await;
    assert_eq!(status(&e), ("confirmed".into(), None));
    assert_eq!(e.get::<String, _>("event_type"), "payment.failed", "confirmed as the failure it is");
    assert_eq!(
        status(&h.decided("PF2").await),
        ("rejected".into(), Some("IOTPay reports status 2 (succeeded) but the notification reported a failure".into()))
    );
    assert_eq!(
        status(&h.decided("PX1").await),
        ("unconfirmed".into(), Some("transaction.unrecognized events are never confirmed (payType preauth)".into()))
    );
    assert_eq!(h.fake.requests_for("PX1"), 0, "an unrecognized event is not even queried");
}

#[tokio::test]
async fn no_conclusive_answer_within_the_window_gives_up_as_unconfirmed() {
    let h = Harness::new().await;
    let n = v3_pay("PGU", 100);
    h.fake.script("PGU", [Reply::Order(v3_order_of(&n, 0))]);
    h.worker(&[("CONFIRM_GIVE_UP_AFTER_SECS", "1"), forward_env()[0], forward_env()[1]]);
    h.notify(n).await;
    let e = h.decided("PGU").await;
    let (s, reason) = status(&e);
    assert_eq!(s, "unconfirmed");
    let reason = reason.unwrap();
    assert!(
        reason.starts_with("no conclusive answer from IOTPay within 1s (")
            && reason.ends_with("checks); last: IOTPay reports status 0 (pending)"),
        "{reason}"
    );
    let age: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM decided_at - created_at)::float8 FROM payment_events WHERE pay_order_id = 'PGU'",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert!((1.0..3.0).contains(&age), "gave up once the 1 s window passed, not before: {age}");
    assert_eq!(deliveries_of(&h.db.pool, "PGU").await, 0);
}

// ---------------------------------------------------------------- outbox

#[tokio::test]
async fn confirmation_enqueues_deliveries_and_notifies_in_the_same_transaction() {
    let h = Harness::new().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&h.db.pool).await.unwrap();
    listener.listen("payment_events_confirmed").await.unwrap();
    h.fake.script("PD1", [v3_ok("PD1", 4200)]);
    h.worker(&forward_env());
    h.notify(v3_pay("PD1", 4200)).await;
    let e = h.decided("PD1").await;
    assert_eq!(status(&e).0, "confirmed");
    let event_id: String = e.get("event_id");

    let rows =
        sqlx::query("SELECT endpoint, status, xmin::text AS xid FROM deliveries WHERE event_id = $1 ORDER BY endpoint")
            .bind(&event_id)
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    let endpoints: Vec<String> = rows.iter().map(|r| r.get("endpoint")).collect();
    assert_eq!(endpoints, ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]);
    assert!(rows.iter().all(|r| r.get::<String, _>("status") == "pending"));
    let event_xid: String = sqlx::query_scalar("SELECT xmin::text FROM payment_events WHERE event_id = $1")
        .bind(&event_id)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    for r in &rows {
        assert_eq!(r.get::<String, _>("xid"), event_xid, "written by the transaction that confirmed");
    }
    let n = tokio::time::timeout(Duration::from_secs(2), listener.recv()).await.expect("notified").unwrap();
    assert_eq!(n.payload(), event_id);
}

// ---------------------------------------------------------------- replicas and crashes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_query_each_event_once_and_decide_once() {
    let h = Harness::new().await;
    let ids: Vec<String> = (0..12).map(|i| format!("PRACE{i}")).collect();
    for id in &ids {
        // Slow answers keep both workers busy at once.
        h.fake.script(id, [Reply::Delay(Duration::from_millis(150), Box::new(v3_ok(id, 300)))]);
        h.notify(v3_pay(id, 300)).await;
    }
    h.worker(&[("CONFIRM_CONCURRENCY", "4")]);
    h.worker(&[("CONFIRM_CONCURRENCY", "4")]);
    for id in &ids {
        let e = h.decided(id).await;
        assert_eq!(status(&e).0, "confirmed", "{id}");
        assert_eq!(e.get::<i32, _>("confirm_attempts"), 1, "{id} claimed once");
    }
    for id in &ids {
        assert_eq!(h.fake.requests_for(id), 1, "{id} queried once");
    }
}

#[tokio::test]
async fn a_late_decision_from_an_expired_lease_is_discarded() {
    let h = Harness::new().await;
    h.notify(v3_pay("PLL", 100)).await;
    let lease = Duration::from_secs(30);
    let first = queue::claim_due(&h.db.pool, 10, lease, "worker-a").await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(queue::claim_due(&h.db.pool, 10, lease, "worker-b").await.unwrap().is_empty(), "leased: not claimable");
    // Worker A stalls past its lease; B claims the event and rejects it.
    sqlx::query("UPDATE payment_events SET lease_until = now() - interval '1 second'")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let second = queue::claim_due(&h.db.pool, 10, lease, "worker-b").await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].confirm_attempts, 2);
    let give_up = Duration::from_secs(86_400);
    let b =
        queue::apply(&h.db.pool, &second[0].event.event_id, "worker-b", &Verdict::Rejected("B".into()), give_up, &[])
            .await
            .unwrap();
    assert_eq!(b, Applied::Rejected);
    // A wakes up with a (stale) confirmation: it must not overwrite B's decision.
    let a = queue::apply(
        &h.db.pool,
        &first[0].event.event_id,
        "worker-a",
        &Verdict::Confirmed,
        give_up,
        &["http://x/".into()],
    )
    .await
    .unwrap();
    assert_eq!(a, Applied::LeaseLost);
    assert_eq!(status(&event(&h.db.pool, "PLL").await), ("rejected".into(), Some("B".into())));
    assert_eq!(count(&h.db.pool, "deliveries").await, 0);
}

#[tokio::test]
async fn a_worker_killed_mid_check_leaves_the_event_to_another_after_its_lease() {
    let h = Harness::new().await;
    h.fake.script("PKILL", [Reply::Delay(Duration::from_secs(30), Box::new(v3_ok("PKILL", 100))), v3_ok("PKILL", 100)]);
    let doomed = h.worker(&[]);
    h.notify(v3_pay("PKILL", 100)).await;
    let fake = h.fake.clone();
    wait_until("the doomed worker's query", Duration::from_secs(5), || fake.requests_for("PKILL") == 1).await;
    doomed.abort();
    let killed_at = Instant::now();
    let _ = doomed.await;

    h.worker(&[]);
    let e = h.decided("PKILL").await;
    let waited = killed_at.elapsed();
    assert_eq!(status(&e), ("confirmed".into(), None));
    assert_eq!(e.get::<i32, _>("confirm_attempts"), 2);
    assert_eq!(h.fake.requests_for("PKILL"), 2);
    // FAST lease is 2 s; the claim happened just before the kill.
    assert!(waited >= Duration::from_millis(1500), "picked up only after the lease expired ({waited:?})");
}

// ---------------------------------------------------------------- promptness

#[tokio::test]
async fn a_notified_event_is_confirmed_within_two_seconds() {
    let h = Harness::new().await;
    h.fake.script("PFAST", [v3_ok("PFAST", 100)]);
    // A 60 s poll: only LISTEN/NOTIFY can make this prompt.
    h.worker(&[("CONFIRM_POLL_INTERVAL_MS", "60000")]);
    // Wait until the worker is listening (its connection's last statement is the LISTEN).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
        if listening > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "worker never listened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let its start-up sweep finish, so it is asleep on its 60 s poll when the event arrives
    // (without this, the sweep itself could pick the event up and the test would prove nothing).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    h.notify(v3_pay("PFAST", 100)).await;
    let e = wait_decided(&h.db.pool, "PFAST", Duration::from_secs(2)).await;
    let took = started.elapsed();
    assert_eq!(status(&e).0, "confirmed");
    println!("notification → confirmed in {} ms", took.as_millis());
    assert!(took < Duration::from_secs(2));
}

#[tokio::test]
async fn the_worker_stops_on_shutdown_even_with_a_query_hanging() {
    let h = Harness::new().await;
    h.fake.script("PHANG", [Reply::Delay(Duration::from_secs(60), Box::new(v3_ok("PHANG", 100)))]);
    let stop = CancellationToken::new();
    let config = h.config(&[("CONFIRM_LEASE_SECS", "120"), ("IOTPAY_QUERY_TIMEOUT_MS", "90000")]);
    let worker = tokio::spawn(service::confirmer(h.db.pool.clone(), &config).unwrap().run(stop.clone()));
    h.notify(v3_pay("PHANG", 100)).await;
    let fake = h.fake.clone();
    wait_until("the query", Duration::from_secs(5), || fake.requests_for("PHANG") == 1).await;
    let asked = Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(6), worker).await.expect("stopped within the grace").unwrap();
    assert!(asked.elapsed() < Duration::from_secs(6));
    // Nothing was decided: the event waits for the next worker once its lease expires.
    assert_eq!(status(&event(&h.db.pool, "PHANG").await), ("pending".into(), None));
}

#[tokio::test]
async fn the_query_client_classifies_each_failure_and_never_retries() {
    use iotpay_notify::config::Merchants;
    use iotpay_notify::domain::{ApiVersion, MchId, PayOrderId};
    use iotpay_notify::iotpay::query::{QueryClient, QueryError, QueryTimeouts};

    let fake = Fake::start().await;
    let merchants = Arc::new(Merchants::from_pairs([(MCH, KEY)]));
    let timeouts = QueryTimeouts { connect: Duration::from_millis(300), total: Duration::from_millis(400) };
    let base = format!("http://{}", fake.addr);
    let client = QueryClient::new(
        &format!("{base}/v3"),
        &format!("{base}/v2"),
        &format!("{base}/v1"),
        merchants.clone(),
        timeouts,
    )
    .unwrap();
    let mch = MchId::parse(MCH).unwrap();
    let ask = |id: &'static str| {
        let client = client.clone();
        let mch = mch.clone();
        async move { client.query(ApiVersion::V3, &mch, &PayOrderId::parse(id).unwrap()).await }
    };
    type Expect = fn(&QueryError) -> bool;
    let cases: Vec<(&str, Reply, Expect)> = vec![
        ("Q500", Reply::Status(500), |e| *e == QueryError::HttpStatus(500)),
        ("Q404", Reply::Status(404), |e| *e == QueryError::HttpStatus(404)),
        ("Q302", Reply::Redirect, |e| *e == QueryError::HttpStatus(302)),
        ("QSLOW", Reply::Delay(Duration::from_secs(2), Box::new(Reply::Status(200))), |e| *e == QueryError::Timeout),
        ("QHTML", Reply::Raw("<html>busy</html>"), |e| matches!(e, QueryError::Unparseable(_))),
        ("QFAIL", Reply::Raw(r#"{"retCode":"FAIL","retMsg":"system busy"}"#), |e| {
            *e == QueryError::Fail("system busy".into())
        }),
        ("QNF", Reply::NotFound, |e| *e == QueryError::NotFound("order not exist".into())),
        ("QSIGN", Reply::WrongSign(v3_order_of(&v3_pay("QSIGN", 1), 2)), |e| *e == QueryError::BadSign),
    ];
    for (id, reply, expected) in cases {
        fake.script(id, [reply]);
        let err = ask(id).await.expect_err(id);
        assert!(expected(&err), "{id}: {err:?}");
        assert_eq!(fake.requests_for(id), 1, "{id}: one call, no hidden retry");
    }
    fake.script("QOK", [v3_ok("QOK", 1500)]);
    let order = ask("QOK").await.unwrap();
    assert!(order.signed);
    assert_eq!((order.amount, order.status), (Some(1500), 2));

    // Nothing listens on port 9: a connection error, not a timeout or a "not found".
    let closed = QueryClient::new(
        "http://127.0.0.1:9/v3",
        "http://127.0.0.1:9/v2",
        "http://127.0.0.1:9/v1",
        merchants,
        timeouts,
    )
    .unwrap();
    let err = closed.query(ApiVersion::V3, &mch, &PayOrderId::parse("QX").unwrap()).await.unwrap_err();
    assert!(matches!(err, QueryError::Connect(_)), "{err:?}");
    // A merchant without a key cannot be asked about.
    let err = client.query(ApiVersion::V3, &MchId::parse("999").unwrap(), &PayOrderId::parse("QX").unwrap()).await;
    assert_eq!(err, Err(QueryError::NoSigningKey("999".into())));
}

// ---------------------------------------------------------------- throughput

/// A busy worker refills every slot freed since it last looked in one claim. It used to count
/// finished-but-unjoined checks as busy, claim one event per transaction, and so be bound by the
/// claim's round trip whatever `CONFIRM_CONCURRENCY` said (found by tests/faults.rs: about 130
/// checks/s with 4, 32 or 64 slots alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_refills_freed_slots_in_one_claim() {
    let h = Harness::new().await;
    let ids: Vec<String> = (0..200).map(|i| format!("PREFILL{i}")).collect();
    for id in &ids {
        h.fake.script(id, [v3_ok(id, 300)]);
        h.notify(v3_pay(id, 300)).await;
    }
    h.worker(&[("CONFIRM_CONCURRENCY", "16")]);
    for id in &ids {
        let e = h.decided(id).await;
        assert_eq!(status(&e).0, "confirmed", "{id}");
        assert_eq!(e.get::<i32, _>("confirm_attempts"), 1, "{id} checked once");
    }
    // `last_checked_at` is the claiming transaction's now(): one value per claim. Refilled one
    // slot at a time, the 200 events take 1 + 184 claims; refilled with every slot freed during
    // the previous claim's round trip, far fewer.
    let claims: i64 = sqlx::query_scalar("SELECT count(DISTINCT last_checked_at) FROM payment_events")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    eprintln!("{claims} claims for 200 events");
    assert!(claims <= 100, "{claims} claims for 200 events");
}

/// A query slot is given back as soon as IOTPay answers, before the decision commits, yet no
/// more than `CONFIRM_CONCURRENCY` queries are ever in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_in_flight_never_exceed_the_concurrency() {
    let h = Harness::new().await;
    let ids: Vec<String> = (0..24).map(|i| format!("SLOW{i}")).collect();
    for id in &ids {
        h.fake.script(id, [Reply::Delay(Duration::from_millis(60), Box::new(v3_ok(id, 300)))]);
        h.notify(v3_pay(id, 300)).await;
    }
    h.worker(&[("CONFIRM_CONCURRENCY", "3")]);
    for id in &ids {
        assert_eq!(status(&h.decided(id).await).0, "confirmed", "{id}");
    }
    let most = h.fake.state.lock().unwrap().max_in_flight;
    assert_eq!(most, 3, "queries in flight at most: {most}");
}

/// Decisions finishing together are recorded in one statement; each still applies only under its
/// own lease, and only the confirmed ones are enqueued and announced.
#[tokio::test]
async fn a_batch_of_decisions_applies_each_under_its_own_lease() {
    let h = Harness::new().await;
    for id in ["B1", "B2", "B3", "B4", "B5"] {
        h.notify(v3_pay(id, 100)).await;
    }
    let lease = Duration::from_secs(30);
    let claimed = queue::claim_due(&h.db.pool, 10, lease, "tok").await.unwrap();
    assert_eq!(claimed.len(), 5);
    let id_of = |pay_order_id: &str| {
        claimed.iter().find(|c| c.event.pay_order_id.as_str() == pay_order_id).unwrap().event.event_id.clone()
    };
    let mut listener = sqlx::postgres::PgListener::connect_with(&h.db.pool).await.unwrap();
    listener.listen(queue::CONFIRMED_CHANNEL).await.unwrap();

    let decided = |pay_order_id: &str, token: &str, verdict: Verdict| Decided {
        event_id: id_of(pay_order_id),
        token: token.into(),
        verdict,
        answer: OrderAnswer::Unknown,
    };
    let retry = Verdict::Retry {
        // IOTPay's message is quoted; Postgres text cannot hold U+0000, so it is dropped.
        reason: "IOTPay says: busy\u{0}now".into(),
        delay: Duration::from_secs(60),
        give_up_reason: "gave up".into(),
    };
    let batch = vec![
        decided("B1", "tok", Verdict::Confirmed),
        decided("B2", "tok", Verdict::Rejected("amount differs".into())),
        decided("B3", "tok", retry),
        decided("B4", "someone-else", Verdict::Confirmed),
        decided("B5", "tok", Verdict::Confirmed),
    ];
    let urls = vec!["http://a/".to_owned(), "http://b/".to_owned()];
    let applied = queue::apply_batch(&h.db.pool, &batch, Duration::from_secs(86_400), &urls).await.unwrap();
    assert_eq!(
        applied,
        vec![
            Applied::Confirmed { deliveries: 2 },
            Applied::Rejected,
            Applied::Rescheduled,
            Applied::LeaseLost,
            Applied::Confirmed { deliveries: 2 },
        ]
    );
    assert_eq!(status(&event(&h.db.pool, "B1").await), ("confirmed".into(), None));
    assert_eq!(status(&event(&h.db.pool, "B2").await), ("rejected".into(), Some("amount differs".into())));
    let b3 = event(&h.db.pool, "B3").await;
    assert_eq!(status(&b3), ("pending".into(), None));
    assert_eq!(b3.get::<Option<String>, _>("last_check_error").as_deref(), Some("IOTPay says: busynow"));
    assert_eq!(b3.get::<Option<String>, _>("leased_by"), None, "the lease is released for the retry");
    let b4 = event(&h.db.pool, "B4").await;
    assert_eq!(status(&b4), ("pending".into(), None), "a decision without the lease changes nothing");
    assert_eq!(b4.get::<Option<String>, _>("leased_by").as_deref(), Some("tok"));
    assert_eq!(deliveries_of(&h.db.pool, "B1").await, 2);
    assert_eq!(deliveries_of(&h.db.pool, "B5").await, 2);
    assert_eq!(count(&h.db.pool, "deliveries").await, 4, "only confirmed events are enqueued");

    let mut announced = Vec::new();
    for _ in 0..2 {
        let n = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await.unwrap().unwrap();
        announced.push(n.payload().to_owned());
    }
    announced.sort();
    let mut expected = vec![id_of("B1"), id_of("B5")];
    expected.sort();
    assert_eq!(announced, expected, "one announcement per confirmed event");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.recv()).await.is_err(),
        "nothing else is announced"
    );
}
