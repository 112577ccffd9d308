//! Expected orders (issue 14), black-box: registration over the admin API and the CLI
//! (idempotent, conflicting, every bad input, `expires_at`), and the order's state as payments
//! arrive, with the `wait` long poll. The reconciler itself: tests/reconcile_found.rs and
//! tests/reconcile_answers.rs.

mod adminkit;
mod common;
mod forwarding;
mod reconcilekit;

use std::time::{Duration, Instant};

use adminkit::*;
use common::*;
use iotpay_devtools::testing::TestDatabase;
use reconcilekit::*;
use serde_json::{json, Value};

#[tokio::test]
async fn registration_is_idempotent_and_conflicts_change_nothing() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let (status, body) = json(admin.post("/api/v1/orders", &order("A-1", 1250))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["state"], "expected");
    assert_eq!(body["event_id"], Value::Null);
    assert_eq!(body["amount"], 1250);
    let (status, again) = json(admin.post("/api/v1/orders", &order("A-1", 1250))).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["registered_at"], body["registered_at"]);

    let conflicts = [
        order("A-1", 1251),
        json!({"mch_id": MCH, "mch_order_no": "A-1", "api_version": "v3", "amount": 1250, "currency": "USD"}),
        json!({"mch_id": MCH, "mch_order_no": "A-1", "api_version": "v1", "amount": 1250, "currency": "CAD"}),
    ];
    for c in &conflicts {
        let (status, err) = json(admin.post("/api/v1/orders", c)).await;
        assert_eq!(status, 409, "{c} → {err}");
        assert_eq!(err["error"]["code"], "conflict");
    }
    let (_, shown) = json(admin.get(&format!("/api/v1/orders/{MCH}/A-1"))).await;
    assert_eq!((shown["amount"].as_i64(), shown["currency"].as_str()), (Some(1250), Some("CAD")));
    assert_eq!(shown["api_version"], "v3");
    // The same order number at another merchant is another order.
    let mut other = order("A-1", 99);
    other["mch_id"] = json!(OTHER_MCH);
    assert_eq!(json(admin.post("/api/v1/orders", &other)).await.0, 201);
    assert_eq!(order_count(&admin).await, 2);
}

#[tokio::test]
async fn every_bad_registration_is_refused_naming_the_field_and_stores_nothing() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let good = order("B-1", 100);
    let with = |k: &str, v: Value| {
        let mut o = good.clone();
        o[k] = v;
        o
    };
    let without = |k: &str| {
        let mut o = good.clone();
        o.as_object_mut().unwrap().remove(k);
        o
    };
    let cases: Vec<(Value, &str)> = vec![
        (with("mch_id", json!("99999999")), "mch_id"),
        (with("mch_id", json!(10000701)), "mch_id"),
        (with("mch_id", json!("")), "mch_id"),
        (with("api_version", json!("v4")), "api_version"),
        (with("api_version", json!("V3")), "api_version"),
        (with("amount", json!(0)), "amount"),
        (with("amount", json!(-5)), "amount"),
        (with("amount", json!(12.5)), "amount"),
        (with("amount", json!("100")), "amount"),
        (with("amount", json!(1e20)), "amount"),
        (with("currency", json!("cad")), "currency"),
        (with("currency", json!("CADX")), "currency"),
        (with("mch_order_no", json!("x".repeat(129))), "mch_order_no"),
        (with("mch_order_no", json!("a\u{0}b")), "mch_order_no"),
        (with("expires_at", json!("tomorrow")), "expires_at"),
        (with("expires_at", json!("2001-01-01T00:00:00Z")), "expires_at"),
        (with("expires_at", json!(1234)), "expires_at"),
        (with("notify_url", json!("http://x")), "notify_url"),
        (without("mch_id"), "mch_id"),
        (without("mch_order_no"), "mch_order_no"),
        (without("api_version"), "api_version"),
        (without("amount"), "amount"),
        (without("currency"), "currency"),
        (with("amount", Value::Null), "amount"),
    ];
    for (body, field) in &cases {
        let got = json(admin.post("/api/v1/orders", body)).await;
        assert_error(&got, 400, "bad_request", Some(*field));
    }
    // Not JSON, not an object, duplicate keys, wrong content type.
    let raw = |b: &'static str, ct: &'static str| {
        admin.client.post(admin.url("/api/v1/orders")).bearer_auth(TOKEN).header("content-type", ct).body(b)
    };
    assert_eq!(json(raw("{", "application/json")).await.0, 400);
    assert_eq!(json(raw("[1]", "application/json")).await.0, 400);
    let dup = r#"{"mch_id":"10000701","mch_id":"20000002","mch_order_no":"B","api_version":"v3","amount":1,"currency":"CAD"}"#;
    assert_eq!(json(raw(dup, "application/json")).await.0, 400);
    assert_eq!(json(raw("{}", "text/plain")).await.0, 415);
    assert_eq!(json(admin.post("/api/v1/orders?x=1", &good)).await.0, 400);
    assert_eq!(order_count(&admin).await, 0, "nothing stored by a refused registration");

    // Reading: unknown order, bad wait.
    let (status, _) = json(admin.get(&format!("/api/v1/orders/{MCH}/nope"))).await;
    assert_eq!(status, 404);
    assert_eq!(json(admin.post("/api/v1/orders", &good)).await.0, 201);
    for (q, field) in [("wait=31", "wait"), ("wait=-1", "wait"), ("wait=abc", "wait"), ("other=1", "other")] {
        let got = json(admin.get(&format!("/api/v1/orders/{MCH}/B-1?{q}"))).await;
        assert_error(&got, 400, "bad_request", Some(field));
    }
}

#[tokio::test]
async fn a_notified_payment_makes_the_order_paid_and_wait_returns_as_soon_as_it_is() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    assert_eq!(json(admin.post("/api/v1/orders", &order("C-1", 700))).await.0, 201);
    // Still expected: a wait of 1 s answers expected after about 1 s.
    let t = Instant::now();
    let (status, body) = json(admin.get(&format!("/api/v1/orders/{MCH}/C-1?wait=1"))).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("expected")));
    assert!(t.elapsed() >= Duration::from_millis(900), "{:?}", t.elapsed());

    // A long poll started before the payment is confirmed answers soon after it is.
    let waiting = admin.get(&format!("/api/v1/orders/{MCH}/C-1?wait=20"));
    let poll = tokio::spawn(async move { (Instant::now(), json(waiting).await) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = confirmed_payment(&admin, "C-1", 700).await;
    let confirmed_at = Instant::now();
    let (started, (status, body)) = poll.await.unwrap();
    assert_eq!((status, body["state"].as_str()), (200, Some("paid")), "{body}");
    assert_eq!(body["event_id"], id.as_str());
    assert!(started.elapsed() < Duration::from_secs(5), "answered when paid, not at the end of wait");
    assert!(confirmed_at.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_payment_of_another_amount_is_a_mismatch_never_paid() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    assert_eq!(json(admin.post("/api/v1/orders", &order("D-1", 5000))).await.0, 201);
    let id = confirmed_payment(&admin, "D-1", 50).await;
    let (status, body) = json(admin.get(&format!("/api/v1/orders/{MCH}/D-1?wait=5"))).await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "mismatch", "{body}");
    assert_eq!(body["event_id"], id.as_str());
}

#[tokio::test]
async fn cli_registers_and_shows_orders_like_the_api() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let register = |no: &'static str, amount: &'static str, mch: &'static str| {
        let args = vec![
            "orders",
            "register",
            "--mch-id",
            mch,
            "--mch-order-no",
            no,
            "--api-version",
            "v1",
            "--amount",
            amount,
            "--currency",
            "CAD",
        ];
        let db = &db;
        async move { cli(db, &args).await }
    };
    let out = register("E-1", "250", MCH).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["state"], "expected");
    assert!(register("E-1", "250", MCH).await.status.success(), "same order again: fine");
    for (no, amount, mch, says) in
        [("E-1", "251", MCH, "already registered"), ("E-2", "0", MCH, "--amount"), ("E-3", "5", "99", "--mch-id")]
    {
        let out = register(no, amount, mch).await;
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
    let out = cli(&db, &["orders", "show", MCH, "E-1"]).await;
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (_, api) = json(admin.get(&format!("/api/v1/orders/{MCH}/E-1"))).await;
    assert_eq!(shown, api);
    assert!(!cli(&db, &["orders", "show", MCH, "nope"]).await.status.success());
}

/// Bugs: the same body re-sent after its `expires_at` was refused (400), and one with another
/// `expires_at` was taken for the same order (200) although it changes when the order expires.
#[tokio::test]
async fn re_registration_compares_expires_at_and_still_works_after_it() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let mut body = order("X-1", 990);
    // Nanoseconds: stored as microseconds, and the same text still compares equal.
    body["expires_at"] = json!("2099-01-02T03:04:05.123456789Z");
    let (status, created) = json(admin.post("/api/v1/orders", &body)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(json(admin.post("/api/v1/orders", &body)).await.0, 200, "the same body again");
    assert_eq!(json(admin.post("/api/v1/orders", &order("X-1", 990))).await.0, 200, "expires_at omitted: as stored");
    let mut later = body.clone();
    later["expires_at"] = json!("2099-01-03T03:04:05Z");
    let (status, err) = json(admin.post("/api/v1/orders", &later)).await;
    assert_eq!(status, 409, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("expires_at"), "{err}");
    let (_, shown) = json(admin.get(&format!("/api/v1/orders/{MCH}/X-1"))).await;
    assert_eq!(shown["expires_at"], created["expires_at"], "nothing changed");

    // The order's expires_at passes; the shop retries its registration: still the same order.
    let mut soon = order("X-2", 500);
    soon["expires_at"] = json!((chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339());
    assert_eq!(json(admin.post("/api/v1/orders", &soon)).await.0, 201);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, again) = json(admin.post("/api/v1/orders", &soon)).await;
    assert_eq!(status, 200, "{again}");
    // A new order that is already expired is refused, naming the field, and not stored.
    let mut past = order("X-3", 500);
    past["expires_at"] = soon["expires_at"].clone();
    assert_error(&json(admin.post("/api/v1/orders", &past)).await, 400, "bad_request", Some("expires_at"));
    assert_eq!(order_count(&admin).await, 2);
}
