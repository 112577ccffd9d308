//! The sandbox IOTPay: signed, truthful query answers; IOTPay's re-send behaviour; its fault
//! knobs; and notifications the real service accepts and stores.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::*;
use iotpay_devtools::sandbox::{QueryOutcome, Sandbox, SandboxConfig, SendOptions};
use iotpay_devtools::testing::TestDatabase;
use iotpay_notify::domain::{MchId, MerchantKey};
use iotpay_notify::iotpay::{sign, Params};
use serde_json::{json, Value};

async fn sandbox() -> Sandbox {
    let mut config = SandboxConfig::new(MchId::parse(MCH).unwrap(), MerchantKey::new(KEY));
    config.retry_schedule = vec![Duration::from_millis(20); 3];
    Sandbox::start(config).await.unwrap()
}

/// POSTs a `cc_query` signed with `key`; returns (HTTP status, JSON answer).
async fn query(url: &str, pay_order_id: &str, key: &str) -> (u16, Value) {
    let body = signed(json!({"mchId": MCH, "payOrderId": pay_order_id}), key);
    let resp = reqwest::Client::new()
        .post(format!("{url}/cc_query"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null))
}

/// True when the object's `sign` verifies with the service's sign code under `key`.
fn verifies(object: &Value, key: &str) -> bool {
    let params = Params::from_json(object.to_string().as_bytes()).unwrap();
    let received = params.text("sign").unwrap_or_default().to_owned();
    sign::verify(&params, &received, &[MerchantKey::new(key)])
}

#[tokio::test]
async fn query_answers_are_signed_and_tell_the_books_truth() {
    let sandbox = sandbox().await;
    let payment = sandbox.create_v3_payment(2500);
    let refund = sandbox.create_v3_refund(&payment.pay_order_id, 1000).unwrap();
    let v2 = sandbox.create_v2_payment(700);

    let (status, answer) = query(&sandbox.v3_api_url(), &payment.pay_order_id, KEY).await;
    assert_eq!((status, answer["retCode"].as_str()), (200, Some("SUCCESS")));
    let data = &answer["retData"];
    assert!(verifies(data, KEY), "retData.sign verifies: {data}");
    assert!(!verifies(data, OTHER_KEY));
    assert_eq!(data["payOrderId"], payment.pay_order_id.as_str());
    assert_eq!((data["amount"].as_i64(), data["status"].as_i64()), (Some(2500), Some(2)));
    assert_eq!((data["payType"].as_str(), data["currency"].as_str()), (Some("pay"), Some("CAD")));
    assert_eq!(data["refundable"].as_i64(), Some(1500), "the refund reduced what remains refundable");
    for field in ["mchId", "mchOrderNo", "paySuccTime", "cardNum", "expiryDate", "authNum", "transNum", "channel"] {
        assert!(data[field].as_str().is_some_and(|s| !s.is_empty()), "retData.{field}: {data}");
    }

    let (_, answer) = query(&sandbox.v3_api_url(), &refund.pay_order_id, KEY).await;
    let data = &answer["retData"];
    assert!(verifies(data, KEY));
    assert_eq!((data["payType"].as_str(), data["amount"].as_i64()), (Some("refund"), Some(1000)));
    assert_eq!(data["originalOrderId"], payment.pay_order_id.as_str());

    let (_, answer) = query(&sandbox.v2_api_url(), &v2.pay_order_id, KEY).await;
    assert_eq!(answer["retCode"], "SUCCESS");
    let order = &answer["order"];
    assert!(verifies(order, KEY), "order.sign verifies: {order}");
    assert_eq!((order["amount"].as_i64(), order["status"].as_i64()), (Some(700), Some(2)));
    assert_eq!(order["transid"], v2.trans_num.as_str());
    assert_eq!(order["mchId"], MCH);

    // What the book says is what later queries tell.
    assert!(sandbox.update_order(&v2.pay_order_id, |o| o.status = 9));
    let (_, answer) = query(&sandbox.v2_api_url(), &v2.pay_order_id, KEY).await;
    assert_eq!(answer["order"]["status"], 9);
    assert!(verifies(&answer["order"], KEY));
    assert!(!sandbox.update_order("PC-NO-SUCH-ORDER", |o| o.status = 9));

    // A refund larger than what remains is refused.
    assert!(sandbox.create_v3_refund(&payment.pay_order_id, 1501).is_err());
}

#[tokio::test]
async fn a_wrong_sign_or_an_unknown_order_fails() {
    let sandbox = sandbox().await;
    let payment = sandbox.create_v3_payment(100);
    let v2 = sandbox.create_v2_payment(100);

    let (status, answer) = query(&sandbox.v3_api_url(), &payment.pay_order_id, OTHER_KEY).await;
    assert_eq!((status, answer["retCode"].as_str()), (200, Some("FAIL")));
    assert!(!answer["retMsg"].as_str().unwrap().contains("not exist"), "a bad sign is not a definite not-found");
    assert!(answer.get("retData").is_none());

    let (_, answer) = query(&sandbox.v3_api_url(), "PC-NO-SUCH-ORDER", KEY).await;
    assert_eq!((answer["retCode"].as_str(), answer["retMsg"].as_str()), (Some("FAIL"), Some("order not exist")));
    // Each API has its own orders.
    let (_, answer) = query(&sandbox.v3_api_url(), &v2.pay_order_id, KEY).await;
    assert_eq!(answer["retMsg"], "order not exist");

    let outcomes: Vec<QueryOutcome> = sandbox.queries().iter().map(|q| q.outcome).collect();
    assert_eq!(outcomes, [QueryOutcome::BadSign, QueryOutcome::NotFound, QueryOutcome::NotFound]);
}

#[tokio::test]
async fn failing_then_slow_queries() {
    let sandbox = sandbox().await;
    let payment = sandbox.create_v3_payment(100);
    sandbox.fail_next_queries(2);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(query(&sandbox.v3_api_url(), &payment.pay_order_id, KEY).await.0);
    }
    assert_eq!(statuses, [500, 500, 200]);

    sandbox.set_query_delay(Duration::from_millis(300));
    let started = Instant::now();
    let (_, answer) = query(&sandbox.v3_api_url(), &payment.pay_order_id, KEY).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(answer["retCode"], "SUCCESS");
}

/// A notifyUrl that answers 503 to its first `fail_first` requests, then `SUCCESS`; keeps bodies.
#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<String>>>,
    fail_first: usize,
}

impl Receiver {
    async fn start(fail_first: usize) -> (Receiver, String) {
        let receiver = Receiver { fail_first, ..Receiver::default() };
        let app = Router::new().route("/notify", post(receive)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

async fn receive(State(r): State<Receiver>, body: String) -> (StatusCode, &'static str) {
    let mut bodies = r.bodies.lock().unwrap();
    bodies.push(body);
    if bodies.len() <= r.fail_first {
        (StatusCode::SERVICE_UNAVAILABLE, "FAIL")
    } else {
        (StatusCode::OK, "SUCCESS")
    }
}

#[tokio::test]
async fn resends_until_success_with_the_same_signed_notification() {
    let (receiver, url) = Receiver::start(2).await;
    let sandbox = sandbox().await;
    sandbox.set_notify_url(&url);
    let delivery = sandbox.send_v3_payment(1500, &SendOptions::default()).await.unwrap();
    assert!(delivery.acknowledged);
    let statuses: Vec<Option<u16>> = delivery.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(503), Some(503), Some(200)]);
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 3);
    assert!(bodies.iter().all(|b| b == &bodies[0]), "every re-send is the same notification");
    let sent: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(sent, delivery.body);
    assert!(verifies(&sent, KEY));
    assert_eq!(sent["amount"], 1500);
}

#[tokio::test]
async fn gives_up_when_the_schedule_runs_out() {
    let (receiver, url) = Receiver::start(usize::MAX).await;
    let sandbox = sandbox().await;
    sandbox.set_notify_url(&url);
    let delivery = sandbox.send_v2_payment(100, &SendOptions::default()).await.unwrap();
    assert!(!delivery.acknowledged);
    assert_eq!(delivery.attempts.len(), 4, "3 pauses in the schedule: 4 attempts");
    assert_eq!(receiver.bodies().len(), 4);

    let capped = SendOptions { max_attempts: Some(2), ..SendOptions::default() };
    let delivery = sandbox.send_v2_payment(100, &capped).await.unwrap();
    assert_eq!(delivery.attempts.len(), 2);
}

#[tokio::test]
async fn concurrent_copies_and_duplicates_are_identical() {
    let (receiver, url) = Receiver::start(0).await;
    let sandbox = sandbox().await;
    sandbox.set_notify_url(&url);
    let options = SendOptions { concurrent: 5, duplicates: 2, ..SendOptions::default() };
    let delivery = sandbox.send_v3_payment(100, &options).await.unwrap();
    assert!(delivery.acknowledged);
    assert_eq!(delivery.attempts.len(), 7);
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 7);
    assert!(bodies.iter().all(|b| b == &bodies[0]));
}

#[tokio::test]
async fn the_service_stores_what_the_sandbox_sends() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let sandbox = sandbox().await;
    sandbox.set_notify_url(app.url("/iotpay/notify"));
    let once = SendOptions::default();

    let payment = sandbox.send_v3_payment(2500, &once).await.unwrap();
    assert!(payment.acknowledged && payment.attempts.len() == 1, "{:?}", payment.attempts);
    let refund = sandbox.send_v3_refund(payment.pay_order_id(), 2500, &once).await.unwrap();
    assert!(refund.acknowledged);
    let as_form = SendOptions { form_encoded: true, ..SendOptions::default() };
    let v2 = sandbox.send_v2_payment(900, &as_form).await.unwrap();
    assert!(v2.acknowledged, "a form-encoded v2 notification is accepted: {:?}", v2.attempts);

    let storm = SendOptions { concurrent: 4, duplicates: 2, ..SendOptions::default() };
    let repeated = sandbox.send_v3_payment(300, &storm).await.unwrap();
    assert!(repeated.acknowledged && repeated.attempts.iter().all(|a| a.acknowledged()));

    let forged_options = SendOptions { forge_sign: true, max_attempts: Some(2), ..SendOptions::default() };
    let forged = sandbox.send_v3_payment(999_999, &forged_options).await.unwrap();
    assert!(!forged.acknowledged);
    assert!(forged.attempts.iter().all(|a| a.status == Some(401)), "{:?}", forged.attempts);
    assert!(forged.order.is_none() && sandbox.order(forged.pay_order_id()).is_none());

    let tampered_options = SendOptions { tamper_amount: Some(100_000), ..SendOptions::default() };
    let tampered = sandbox.send_v3_payment(1000, &tampered_options).await.unwrap();
    assert!(tampered.acknowledged, "a validly signed notification is stored, to be judged by the query");

    let rows: Vec<(String, String, String, i64, i32, Option<String>)> = sqlx::query_as(
        "SELECT pay_order_id, event_type, api_version, amount, notification_count, original_order_id
         FROM payment_events ORDER BY created_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let row = |id: &str| rows.iter().find(|r| r.0 == id).unwrap_or_else(|| panic!("{id} stored: {rows:?}"));
    assert_eq!(rows.len(), 5, "forged not stored: {rows:?}");
    assert_eq!(row(payment.pay_order_id()).1, "payment.succeeded");
    assert_eq!(row(payment.pay_order_id()).3, 2500);
    let r = row(refund.pay_order_id());
    assert_eq!((r.1.as_str(), r.5.as_deref()), ("refund.succeeded", Some(payment.pay_order_id())));
    assert_eq!((row(v2.pay_order_id()).2.as_str(), row(v2.pay_order_id()).3), ("v2", 900));
    assert_eq!(row(repeated.pay_order_id()).4, 6, "4 concurrent copies + 2 duplicates, one event");
    assert_eq!(row(tampered.pay_order_id()).3, 100_000);

    // The query tells the truth the service must hold the tampered notification against.
    let (_, answer) = query(&sandbox.v3_api_url(), tampered.pay_order_id(), KEY).await;
    assert_eq!(answer["retData"]["amount"], 1000);
    let (_, answer) = query(&sandbox.v3_api_url(), forged.pay_order_id(), KEY).await;
    assert_eq!(answer["retMsg"], "order not exist");
}

#[tokio::test]
async fn simultaneous_first_notifications_are_all_acknowledged_at_once() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let sandbox = sandbox().await;
    sandbox.set_notify_url(app.url("/iotpay/notify"));
    // No re-send to hide behind: every copy must get SUCCESS on its only attempt.
    let burst = SendOptions { concurrent: 8, max_attempts: Some(1), ..SendOptions::default() };
    for _ in 0..10 {
        let d = sandbox.send_v3_payment(100, &burst).await.unwrap();
        let refused: Vec<_> = d.attempts.iter().filter(|a| !a.acknowledged()).collect();
        assert!(refused.is_empty(), "copies of one new event refused: {refused:?}");
    }
    let counts: Vec<i32> =
        sqlx::query_scalar("SELECT notification_count FROM payment_events").fetch_all(&db.pool).await.unwrap();
    assert_eq!(counts, vec![8; 10]);
}

#[tokio::test]
async fn the_sandbox_command_sends_to_the_service_and_reports() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_iotpay-notify"))
        .args(["sandbox", "--listen", &format!("127.0.0.1:{port}"), "--notify-url", &app.url("/iotpay/notify")])
        .args(["--v3-payments", "2", "--v3-refunds", "1", "--v2-payments", "1", "--forged", "1", "--amount", "4200"])
        .args(["--retry-schedule", "50ms", "--exit-when-sent"])
        .env_clear()
        .env("IOTPAY_MERCHANTS", merchants_env())
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("IOTPAY_V3_API_URL=http://127.0.0.1:{port}/v3")), "{stdout}");
    assert_eq!(stdout.matches("acknowledged after 1 attempt(s), last answer 200 SUCCESS").count(), 4, "{stdout}");
    assert!(stdout
        .lines()
        .any(|l| l.starts_with("sent forged") && l.contains("NOT acknowledged") && l.contains("401")));
    for secret in [KEY, ROTATED_KEY, OTHER_KEY] {
        assert!(!stdout.contains(secret) && !String::from_utf8_lossy(&out.stderr).contains(secret));
    }
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT event_type, amount FROM payment_events ORDER BY created_at")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let types: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(types, ["payment.succeeded", "payment.succeeded", "refund.succeeded", "payment.succeeded"]);
    assert!(rows.iter().all(|r| r.1 == 4200));
}

/// Runs `sandbox --exit-when-sent` (nothing to send) with this IOTPAY_MERCHANTS.
async fn sandbox_command_with(merchants: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_iotpay-notify"))
        .args(["sandbox", "--listen", "127.0.0.1:0", "--exit-when-sent"])
        .env_clear()
        .env("IOTPAY_MERCHANTS", merchants)
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_sandbox_command_reads_iotpay_merchants_as_the_service_does() {
    // The first merchant listed, whatever the others.
    let out = sandbox_command_with(&format!("{OTHER_MCH}:{OTHER_KEY},{}", merchants_env())).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("sandbox for merchant {OTHER_MCH};")), "{stdout}");

    // A value the service refuses is refused here too, never echoing the key, instead of the
    // sandbox acting as a merchant named after the key.
    for (merchants, says) in [(format!("{KEY}:{MCH}"), "swapped"), (format!("{MCH}:short"), "32 letters and digits")] {
        let out = sandbox_command_with(&merchants).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{merchants}: {}", String::from_utf8_lossy(&out.stdout));
        assert!(stderr.contains("IOTPAY_MERCHANTS") && stderr.contains(says), "{merchants}: {stderr}");
        assert!(!stderr.contains(KEY) && !stderr.contains("short"), "{stderr}");
    }
}
