//! Expected orders and reconciliation (issue 14), black-box: registration over the admin API
//! (idempotent, conflicting, every bad input), the order's state as payments arrive, the
//! `wait` long poll, and the reconciler finding payments whose notification never arrived.

mod adminkit;
mod common;
mod forwarding;

use std::time::{Duration, Instant};

use adminkit::*;
use common::*;
use iotpay_devtools::testing::TestDatabase;
use serde_json::{json, Value};

fn order(no: &str, amount: i64) -> Value {
    json!({"mch_id": MCH, "mch_order_no": no, "api_version": "v3", "amount": amount, "currency": "CAD"})
}

async fn order_count(admin: &Admin) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM expected_orders").fetch_one(&admin.pool).await.unwrap()
}

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

/// Inserts a confirmed payment.succeeded for `(MCH, mch_order_no)` as the notification path would.
async fn confirmed_payment(admin: &Admin, mch_order_no: &str, amount: i64) -> String {
    let id: String = sqlx::query_scalar(
        "INSERT INTO payment_events (event_id, event_type, api_version, mch_id, mch_order_no, pay_order_id,
                                     amount, currency, iotpay_status, status, confirmed_at)
         VALUES ('evt_' || md5($2), 'payment.succeeded', 'v3', $1, $2, 'P' || $2, $3, 'CAD', 2, 'pending', NULL)
         RETURNING event_id",
    )
    .bind(MCH)
    .bind(mch_order_no)
    .bind(amount)
    .fetch_one(&admin.pool)
    .await
    .unwrap();
    forwarding::confirm(&admin.pool, std::slice::from_ref(&id), &[]).await;
    id
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

mod reconciling {
    use std::sync::Arc;

    use iotpay_devtools::sandbox::{Sandbox, SandboxConfig};
    use iotpay_notify::domain::{MchId, MerchantKey};
    use iotpay_notify::iotpay::merchants::Merchants;
    use iotpay_notify::iotpay::query::{QueryClient, QueryTimeouts};
    use iotpay_notify::iotpay::TimeZone;
    use iotpay_notify::reconcile::{Parts, ReconcileSettings, Reconciler};
    use sqlx::PgPool;

    use super::*;

    const ENDPOINT: &str = "http://127.0.0.1:9/hook";

    pub async fn sandbox() -> Sandbox {
        Sandbox::start(SandboxConfig::new(MchId::parse(MCH).unwrap(), MerchantKey::new(KEY))).await.unwrap()
    }

    pub fn reconciler(pool: &PgPool, sandbox: &Sandbox, name: &str) -> Reconciler {
        reconciler_to(pool, sandbox, name, ENDPOINT)
    }

    pub fn reconciler_to(pool: &PgPool, sandbox: &Sandbox, name: &str, endpoint: &str) -> Reconciler {
        let settings = ReconcileSettings {
            after: Duration::ZERO,
            max_backoff: Duration::from_secs(1),
            first_retry: Duration::from_secs(1),
            poll_interval: Duration::from_millis(50),
            gauge_interval: Duration::from_secs(1),
        };
        with_settings(pool, sandbox, name, endpoint, settings)
    }

    pub fn with_settings(
        pool: &PgPool,
        sandbox: &Sandbox,
        name: &str,
        endpoint: &str,
        settings: ReconcileSettings,
    ) -> Reconciler {
        let timeouts = QueryTimeouts { connect: Duration::from_secs(2), total: Duration::from_secs(5) };
        let merchants = Arc::new(Merchants::from_pairs([(MCH, KEY)]));
        let client =
            QueryClient::new(&sandbox.v3_api_url(), &sandbox.v2_api_url(), &sandbox.v1_api_url(), merchants, timeouts)
                .unwrap();
        let parts = Parts {
            client,
            settings,
            lease: Duration::from_secs(30),
            forward_urls: vec![endpoint.into()],
            zone: TimeZone::get("America/Toronto").unwrap(),
        };
        Reconciler::new(pool.clone(), parts, name)
    }

    /// The admin listener with orders due at once.
    pub async fn admin(db: &TestDatabase) -> Admin {
        Admin::spawn(db, &[("RECONCILE_AFTER_SECS", "1")]).await
    }

    pub async fn register(admin: &Admin, no: &str, amount: i64) {
        register_on(admin, "v3", no, amount).await
    }

    /// Registers an order of API `version` and makes it due now.
    pub async fn register_on(admin: &Admin, version: &str, no: &str, amount: i64) {
        let mut body = order(no, amount);
        body["api_version"] = json!(version);
        let (status, body) = json(admin.post("/api/v1/orders", &body)).await;
        assert_eq!(status, 201, "{body}");
        due_now(admin, no).await;
    }

    /// Makes the order due at once, as if its backoff had passed.
    pub async fn due_now(admin: &Admin, no: &str) {
        sqlx::query("UPDATE expected_orders SET next_check_at = now() WHERE mch_order_no = $1")
            .bind(no)
            .execute(&admin.pool)
            .await
            .unwrap();
    }

    /// Moves the order's `expires_at` into the past (and makes it due), as if that time had come.
    pub async fn expire(admin: &Admin, no: &str) {
        sqlx::query(
            "UPDATE expected_orders SET expires_at = now() - interval '1 second', next_check_at = now()
              WHERE mch_order_no = $1",
        )
        .bind(no)
        .execute(&admin.pool)
        .await
        .unwrap();
    }

    /// The event's status, source and amount.
    pub async fn event(pool: &PgPool, event_id: &str) -> (String, String, i64) {
        sqlx::query_as("SELECT status, source, amount FROM payment_events WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    pub async fn state(admin: &Admin, no: &str) -> Value {
        json(admin.get(&format!("/api/v1/orders/{MCH}/{no}"))).await.1
    }

    pub async fn deliveries(pool: &PgPool, event_id: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(pool)
            .await
            .unwrap()
    }
}

use reconciling::*;

#[tokio::test]
async fn a_paid_order_never_notified_is_found_once_by_two_reconcilers_and_forwarded_once() {
    let db = TestDatabase::create().await;
    let admin = reconciling::admin(&db).await;
    let sandbox = sandbox().await;
    // Paid at IOTPay, notification lost: the sandbox books it and sends nothing.
    let paid: Vec<_> = (0..6).map(|i| sandbox.create_v3_payment(1000 + i)).collect();
    for o in &paid {
        register(&admin, &o.mch_order_no, o.amount).await;
    }
    let (a, b) = (reconciler(&admin.pool, &sandbox, "a"), reconciler(&admin.pool, &sandbox, "b"));
    let (ra, rb) = tokio::join!(a.run_once(), b.run_once());
    assert_eq!(ra.unwrap() + rb.unwrap(), 6, "every order claimed by exactly one replica");
    for o in &paid {
        let body = state(&admin, &o.mch_order_no).await;
        assert_eq!(body["state"], "paid", "{body}");
        let id = body["event_id"].as_str().unwrap().to_owned();
        let (status, source): (String, String) =
            sqlx::query_as("SELECT status, source FROM payment_events WHERE event_id = $1")
                .bind(&id)
                .fetch_one(&admin.pool)
                .await
                .unwrap();
        assert_eq!((status.as_str(), source.as_str()), ("confirmed", "reconciliation"));
        assert_eq!(deliveries(&admin.pool, &id).await, 1, "forwarded once");
    }
    // Nothing is due any more: a further pass queries nothing.
    let before = sandbox.queries().len();
    assert_eq!(a.run_once().await.unwrap(), 0);
    assert_eq!(sandbox.queries().len(), before);
    assert_eq!(before, 6, "one query per order");

    // IOTPay's notification arrives late: a repeat of the reconciled event, nothing forwarded twice.
    sandbox.set_notify_url(admin.public_url("/iotpay/notify"));
    let late = &paid[0];
    let delivery = sandbox.notify(late, &Default::default()).await.unwrap();
    assert!(delivery.acknowledged, "{delivery:?}");
    let id = state(&admin, &late.mch_order_no).await["event_id"].as_str().unwrap().to_owned();
    let (count, source): (i32, String) =
        sqlx::query_as("SELECT notification_count, source FROM payment_events WHERE event_id = $1")
            .bind(&id)
            .fetch_one(&admin.pool)
            .await
            .unwrap();
    assert_eq!((count, source.as_str()), (1, "reconciliation"), "the late notification joined the event");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_events WHERE mch_order_no = $1")
        .bind(&late.mch_order_no)
        .fetch_one(&admin.pool)
        .await
        .unwrap();
    assert_eq!(events, 1);
    assert_eq!(deliveries(&admin.pool, &id).await, 1);
}

#[tokio::test]
async fn pending_then_paid_cancelled_mismatch_and_expired() {
    let db = TestDatabase::create().await;
    let admin = reconciling::admin(&db).await;
    let sandbox = sandbox().await;
    let r = reconciler(&admin.pool, &sandbox, "r");

    let pending = sandbox.create_v3_payment(500);
    sandbox.update_order(&pending.pay_order_id, |o| o.status = 0);
    register(&admin, &pending.mch_order_no, 500).await;
    let cancelled = sandbox.create_v3_payment(600);
    sandbox.update_order(&cancelled.pay_order_id, |o| o.status = 9);
    register(&admin, &cancelled.mch_order_no, 600).await;
    let other_amount = sandbox.create_v3_payment(1);
    register(&admin, &other_amount.mch_order_no, 7000).await;
    register(&admin, "never-created", 800).await;

    assert_eq!(r.run_once().await.unwrap(), 4);
    assert_eq!(state(&admin, &pending.mch_order_no).await["state"], "expected");
    assert_eq!(state(&admin, &cancelled.mch_order_no).await["state"], "cancelled");
    let mismatch = state(&admin, &other_amount.mch_order_no).await;
    assert_eq!((mismatch["state"].as_str(), &mismatch["event_id"]), (Some("mismatch"), &Value::Null));
    let unknown = state(&admin, "never-created").await;
    assert_eq!(unknown["state"], "expected");
    assert!(unknown["last_error"].as_str().unwrap().contains("does not know"), "{unknown}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_events").fetch_one(&admin.pool).await.unwrap();
    assert_eq!(stored, 0, "nothing paid: no event");

    // The customer pays; the next query (after the backoff) finds it.
    sandbox.update_order(&pending.pay_order_id, |o| o.status = 2);
    let waiting = admin.get(&format!("/api/v1/orders/{MCH}/{}?wait=10", pending.mch_order_no));
    let poll = tokio::spawn(json(waiting));
    // Expire the unknown order now.
    sqlx::query("UPDATE expected_orders SET expires_at = now() WHERE mch_order_no = 'never-created'")
        .execute(&admin.pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(r.run_once().await.unwrap(), 2, "the pending and the unknown order are due again");
    let (_, body) = poll.await.unwrap();
    assert_eq!(body["state"], "paid", "{body}");
    assert_eq!(state(&admin, "never-created").await["state"], "expired");
    assert_eq!(state(&admin, &other_amount.mch_order_no).await["state"], "mismatch", "never paid");
}

#[tokio::test]
async fn a_notified_order_is_never_queried_and_settles_when_its_notification_is_confirmed() {
    let db = TestDatabase::create().await;
    let admin = reconciling::admin(&db).await;
    let sandbox = sandbox().await;
    sandbox.set_notify_url(admin.public_url("/iotpay/notify"));
    let o = sandbox.create_v3_payment(900);
    register(&admin, &o.mch_order_no, 900).await;
    assert!(sandbox.notify(&o, &Default::default()).await.unwrap().acknowledged);
    let r = reconciler(&admin.pool, &sandbox, "r");
    // Still being confirmed: not queried, but looked at again later (not "never again").
    assert_eq!(r.run_once().await.unwrap(), 1);
    let stored: (String, bool) =
        sqlx::query_as("SELECT state, next_check_at < 'infinity' FROM expected_orders WHERE mch_order_no = $1")
            .bind(&o.mch_order_no)
            .fetch_one(&admin.pool)
            .await
            .unwrap();
    assert_eq!(stored, ("expected".to_owned(), true));
    decide_all(&admin.pool, &[], None).await;
    due_now(&admin, &o.mch_order_no).await;
    assert_eq!(r.run_once().await.unwrap(), 1);
    let stored: String = sqlx::query_scalar("SELECT state FROM expected_orders WHERE mch_order_no = $1")
        .bind(&o.mch_order_no)
        .fetch_one(&admin.pool)
        .await
        .unwrap();
    assert_eq!(stored, "paid", "settled by the confirmed notification");
    assert!(sandbox.queries().is_empty(), "{:?}", sandbox.queries());
    let body = state(&admin, &o.mch_order_no).await;
    assert_eq!((body["state"].as_str(), body["source"].as_str()), (Some("paid"), Some("notification")), "{body}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(r.run_once().await.unwrap(), 0, "never due again");
}

/// Bug: a notification that was pending when the order was first looked at stopped its
/// reconciliation for good, so when IOTPay's query then contradicted that notification (or never
/// answered it), a payment IOTPay reports paid was never found.
#[tokio::test]
async fn an_order_whose_notification_is_rejected_or_unconfirmed_goes_on_being_reconciled_and_ends_paid() {
    use iotpay_devtools::sandbox::SendOptions;
    use iotpay_notify::store::confirm::{apply, claim_due, Verdict};

    let db = TestDatabase::create().await;
    let admin = reconciling::admin(&db).await;
    let sandbox = sandbox().await;
    sandbox.set_notify_url(admin.public_url("/iotpay/notify"));
    let r = reconciler(&admin.pool, &sandbox, "r");
    let endings = [
        Verdict::Rejected("amount differs: notification 30000, IOTPay 3000".into()),
        Verdict::Unconfirmed("no conclusive answer from IOTPay".into()),
    ];
    for (i, ending) in endings.into_iter().enumerate() {
        let o = sandbox.create_v3_payment(3000);
        register(&admin, &o.mch_order_no, 3000).await;
        // A validly signed notification of the same payment (same event id) with a wrong amount.
        let tampered = SendOptions { tamper_amount: Some(30_000), ..SendOptions::default() };
        assert!(sandbox.notify(&o, &tampered).await.unwrap().acknowledged);
        let notified: String = sqlx::query_scalar("SELECT event_id FROM payment_events WHERE pay_order_id = $1")
            .bind(&o.pay_order_id)
            .fetch_one(&admin.pool)
            .await
            .unwrap();
        assert_eq!(r.run_once().await.unwrap(), 1, "looked at while the notification is pending");
        assert_eq!(sandbox.queries().len(), i, "not queried while the notification is being confirmed");
        let claimed = claim_due(&admin.pool, 10, Duration::from_secs(60), "confirmer").await.unwrap();
        assert_eq!(claimed.len(), 1);
        apply(&admin.pool, &notified, "confirmer", &ending, Duration::from_secs(3600), &[]).await.unwrap();

        // Due again after its retry delay (1 s here), not "never again".
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(r.run_once().await.unwrap(), 1, "{ending:?}: still reconciled");
        assert_eq!(sandbox.queries().len(), i + 1, "queried by mchOrderNo");
        let body = state(&admin, &o.mch_order_no).await;
        assert_eq!(body["state"], "paid", "{ending:?}: {body}");
        assert_eq!(body["event_id"], notified.as_str(), "the same event: a later notification is its repeat");
        assert_eq!(
            event(&admin.pool, &notified).await,
            ("confirmed".to_owned(), "reconciliation".to_owned(), 3000),
            "{ending:?}: the verified amount replaces the notification's"
        );
        assert_eq!(deliveries(&admin.pool, &notified).await, 1);
        let last: String =
            sqlx::query_scalar("SELECT result FROM confirmation_checks WHERE event_id = $1 ORDER BY id DESC LIMIT 1")
                .bind(&notified)
                .fetch_one(&admin.pool)
                .await
                .unwrap();
        assert_eq!(last, "confirmed", "the timeline shows the confirmation after the first decision");
    }
}

/// Bug: a confirmed notification of a failed payment left the order `expected` forever.
#[tokio::test]
async fn a_confirmed_failed_payment_cancels_the_order_without_a_query() {
    let db = TestDatabase::create().await;
    let admin = reconciling::admin(&db).await;
    let sandbox = sandbox().await;
    sandbox.set_notify_url(admin.public_url("/iotpay/notify"));
    let o = sandbox.create_v3_payment(1200);
    sandbox.update_order(&o.pay_order_id, |o| o.status = 9);
    let o = sandbox.order(&o.pay_order_id).unwrap();
    register(&admin, &o.mch_order_no, 1200).await;
    assert!(sandbox.notify(&o, &Default::default()).await.unwrap().acknowledged);
    decide_all(&admin.pool, &[], None).await;
    let failed: String = sqlx::query_scalar("SELECT event_id FROM payment_events WHERE event_type = 'payment.failed'")
        .fetch_one(&admin.pool)
        .await
        .unwrap();
    assert_eq!(reconciler(&admin.pool, &sandbox, "r").run_once().await.unwrap(), 1);
    let (status, body) = json(admin.get(&format!("/api/v1/orders/{MCH}/{}?wait=5", o.mch_order_no))).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("cancelled")), "{body}");
    assert_eq!(body["event_id"], failed.as_str());
    assert!(sandbox.queries().is_empty());
}

/// Runs the real binary with DATABASE_URL and IOTPAY_MERCHANTS only.
async fn cli(db: &TestDatabase, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_iotpay-notify"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db.url())
        .env("IOTPAY_MERCHANTS", merchants_env())
        .current_dir(std::env::temp_dir())
        .args(args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
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

#[tokio::test]
async fn the_found_payment_is_forwarded_once_saying_it_came_from_reconciliation() {
    let db = TestDatabase::create().await;
    let admin = reconciling::admin(&db).await;
    let sandbox = sandbox().await;
    let rx = forwarding::Receiver::start().await;
    let hook = rx.url("/hook");
    let lost = sandbox.create_v3_payment(4200);
    register(&admin, &lost.mch_order_no, 4200).await;
    assert_eq!(reconciler_to(&admin.pool, &sandbox, "r", &hook).run_once().await.unwrap(), 1);
    let forwarder =
        forwarding::start(&admin.pool, std::slice::from_ref(&hook), forwarding::fast_settings(&[0, 100]), "f");
    forwarding::wait_until(Duration::from_secs(10), "the event is forwarded", || async {
        !rx.received_on("/hook").is_empty()
    })
    .await;
    // The late notification joins the event: nothing more is sent.
    sandbox.set_notify_url(admin.public_url("/iotpay/notify"));
    assert!(sandbox.notify(&lost, &Default::default()).await.unwrap().acknowledged);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    forwarder.stop().await;
    let got = rx.received_on("/hook");
    assert_eq!(got.len(), 1, "forwarded once");
    let r = &got[0];
    assert!(r.signature_ok && r.schema_errors.is_empty(), "{:?}", r.schema_errors);
    assert_eq!(r.body["data"]["source"], "reconciliation");
    assert_eq!(r.body["data"]["mch_order_no"], lost.mch_order_no.as_str());
    assert_eq!(r.body["data"]["amount"], 4200);
    assert_eq!(state(&admin, &lost.mch_order_no).await["event_id"], r.body["data"]["event_id"]);
}

#[tokio::test]
async fn a_rejected_notification_does_not_stop_reconciliation() {
    let db = TestDatabase::create().await;
    let admin = reconciling::admin(&db).await;
    let sandbox = sandbox().await;
    let o = sandbox.create_v3_payment(3000);
    register(&admin, &o.mch_order_no, 3000).await;
    // A notification for the order that IOTPay's query contradicted (rejected) says nothing
    // about whether the order was paid.
    sqlx::query(
        "INSERT INTO payment_events (event_id, event_type, api_version, mch_id, mch_order_no, pay_order_id,
                                     amount, currency, iotpay_status, status)
         VALUES ('evt_' || md5('tampered'), 'payment.succeeded', 'v3', $1, $2, 'PFAKE', 30000, 'CAD', 2, 'rejected')",
    )
    .bind(MCH)
    .bind(&o.mch_order_no)
    .execute(&admin.pool)
    .await
    .unwrap();
    assert_eq!(reconciler(&admin.pool, &sandbox, "r").run_once().await.unwrap(), 1);
    assert_eq!(sandbox.queries().len(), 1, "queried despite the rejected notification");
    let body = state(&admin, &o.mch_order_no).await;
    assert_eq!(body["state"], "paid", "{body}");
    let rejected: String = sqlx::query_scalar("SELECT event_id FROM payment_events WHERE pay_order_id = 'PFAKE'")
        .fetch_one(&admin.pool)
        .await
        .unwrap();
    assert_ne!(body["event_id"], rejected.as_str());
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

/// Bug: every failed or inconclusive query after `expires_at` made the order `expired` ("not
/// paid") although IOTPay had not said so, including payments IOTPay reports paid whose answer
/// this service cannot check (v2's documented answer, a v1 answer without payOrderId).
#[tokio::test]
async fn an_order_expires_only_when_iotpay_says_it_is_not_paid() {
    let db = TestDatabase::create().await;
    let admin = reconciling::admin(&db).await;
    let sandbox = sandbox().await;
    let r = reconciler(&admin.pool, &sandbox, "r");

    // IOTPay answers HTTP 500 at expiry.
    let failing = sandbox.create_v3_payment(100);
    register(&admin, &failing.mch_order_no, 100).await;
    expire(&admin, &failing.mch_order_no).await;
    sandbox.fail_next_queries(1);
    assert_eq!(r.run_once().await.unwrap(), 1);

    let unpaid = sandbox.create_v3_payment(200);
    sandbox.update_order(&unpaid.pay_order_id, |o| o.status = 0);
    let unknown_status = sandbox.create_v3_payment(300);
    sandbox.update_order(&unknown_status.pay_order_id, |o| o.status = 1);
    // v2 as documented: the order carries no amount, currency or mchId.
    let v2 = sandbox.create_v2_payment(400);
    sandbox
        .update_order(&v2.pay_order_id, |o| o.query_omits = vec!["amount".into(), "currency".into(), "mchId".into()]);
    // v1 without payOrderId: the event id cannot be derived as the notification's would be.
    let v1 = sandbox.create_v1_payment(500, "WX_JSAPI");
    sandbox.update_order(&v1.pay_order_id, |o| o.query_omits = vec!["payOrderId".into()]);
    for (version, o) in [("v3", &unpaid), ("v3", &unknown_status), ("v2", &v2), ("v1", &v1)] {
        register_on(&admin, version, &o.mch_order_no, o.amount).await;
        expire(&admin, &o.mch_order_no).await;
    }
    register(&admin, "never-created", 600).await;
    expire(&admin, "never-created").await;
    assert_eq!(r.run_once().await.unwrap(), 5);

    assert_eq!(state(&admin, &unpaid.mch_order_no).await["state"], "expired", "status 0: not paid");
    assert_eq!(state(&admin, "never-created").await["state"], "expired", "IOTPay does not know it");
    for (o, says) in
        [(&failing, "HTTP 500"), (&unknown_status, "status 1"), (&v2, "amount and currency"), (&v1, "payOrderId")]
    {
        let body = state(&admin, &o.mch_order_no).await;
        assert_eq!(body["state"], "expected", "{says}: {body}");
        assert!(body["last_error"].as_str().unwrap_or("").contains(says), "{says}: {body}");
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_events").fetch_one(&admin.pool).await.unwrap();
    assert_eq!(stored, 0, "nothing that could not be checked is paid");
    // Still asked again: the truth is still unknown.
    for o in [&failing, &unknown_status, &v2, &v1] {
        due_now(&admin, &o.mch_order_no).await;
    }
    assert_eq!(r.run_once().await.unwrap(), 4);
    assert_eq!(state(&admin, &failing.mch_order_no).await["state"], "paid", "IOTPay answers now: paid");
}

/// Bug: the backoff was not capped at `expires_at`, so an order was decided up to a whole
/// backoff after it expired, and a `wait` at expiry ran its full time.
#[tokio::test]
async fn an_unpaid_order_is_decided_at_its_expires_at_not_a_backoff_later() {
    let db = TestDatabase::create().await;
    let admin = reconciling::admin(&db).await;
    let sandbox = sandbox().await;
    let unpaid = sandbox.create_v3_payment(700);
    sandbox.update_order(&unpaid.pay_order_id, |o| o.status = 0);
    let settings = iotpay_notify::reconcile::ReconcileSettings {
        after: Duration::from_secs(1),
        max_backoff: Duration::from_secs(600),
        first_retry: Duration::from_secs(600),
        poll_interval: Duration::from_millis(50),
        gauge_interval: Duration::from_secs(60),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let running =
        tokio::spawn(with_settings(&admin.pool, &sandbox, "r", "http://127.0.0.1:9/hook", settings).run(stop.clone()));
    let mut body = order(&unpaid.mch_order_no, 700);
    body["expires_at"] = json!((chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339());
    assert_eq!(json(admin.post("/api/v1/orders", &body)).await.0, 201);
    let started = Instant::now();
    let (_, shown) = json(admin.get(&format!("/api/v1/orders/{MCH}/{}?wait=15", unpaid.mch_order_no))).await;
    stop.cancel();
    running.await.unwrap();
    assert_eq!(shown["state"], "expired", "{shown}");
    assert!(started.elapsed() < Duration::from_secs(8), "decided at expires_at: {:?}", started.elapsed());
    assert_eq!(shown["checks"], 2, "once after RECONCILE_AFTER_SECS, once at expires_at");
}

#[tokio::test]
async fn v1_and_v2_orders_are_reconciled_by_merchant_order_number_with_their_channel_and_time() {
    use iotpay_notify::domain::ApiVersion;

    let db = TestDatabase::create().await;
    let admin = reconciling::admin(&db).await;
    let sandbox = sandbox().await;
    let wechat = sandbox.create_v1_payment(880, "WX_JSAPI");
    let card = sandbox.create_v2_payment(2000);
    let v1_cancelled = sandbox.create_v1_payment(300, "ALIPAY_WAP");
    sandbox.update_order(&v1_cancelled.pay_order_id, |o| o.status = 4);
    let v3_status_4 = sandbox.create_v3_payment(400);
    sandbox.update_order(&v3_status_4.pay_order_id, |o| o.status = 4);
    for (version, o) in [("v1", &wechat), ("v2", &card), ("v1", &v1_cancelled), ("v3", &v3_status_4)] {
        register_on(&admin, version, &o.mch_order_no, o.amount).await;
    }
    assert_eq!(reconciler(&admin.pool, &sandbox, "r").run_once().await.unwrap(), 4);

    for (o, api) in [(&wechat, ApiVersion::V1), (&card, ApiVersion::V2)] {
        let body = state(&admin, &o.mch_order_no).await;
        assert_eq!((body["state"].as_str(), body["source"].as_str()), (Some("paid"), Some("reconciliation")), "{body}");
        let asked: Vec<_> =
            sandbox.queries().into_iter().filter(|q| q.mch_order_no == Some(o.mch_order_no.clone())).collect();
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert_eq!((asked[0].api_version, asked[0].pay_order_id.as_deref()), (api, None), "by mchOrderNo on its API");
        let (api_version, channel, channel_order_no, age): (String, Option<String>, Option<String>, f64) =
            sqlx::query_as(
                "SELECT api_version, channel, channel_order_no, abs(EXTRACT(EPOCH FROM now() - pay_succ_at))::float8
                   FROM payment_events WHERE event_id = $1",
            )
            .bind(body["event_id"].as_str().unwrap())
            .fetch_one(&admin.pool)
            .await
            .unwrap();
        assert_eq!(api_version, api.as_str());
        // Paid moments ago: v1 from its milliseconds, v2 from Toronto time in the configured zone.
        assert!(age < 120.0, "{api_version}: pay_succ_at {age}s from now");
        if api == ApiVersion::V1 {
            assert_eq!(channel.as_deref(), Some("WX_JSAPI"));
            assert_eq!(channel_order_no.as_deref(), Some(o.channel_order_no.as_str()));
        }
    }
    assert_eq!(state(&admin, &v1_cancelled.mch_order_no).await["state"], "cancelled", "v1 status 4");
    let card_4 = state(&admin, &v3_status_4.mch_order_no).await;
    assert_eq!(card_4["state"], "expected", "card status 4 is not documented: unknown, asked again: {card_4}");
}

#[tokio::test]
async fn the_reconciled_event_says_its_source_in_events_show_and_the_api() {
    let db = TestDatabase::create().await;
    let admin = reconciling::admin(&db).await;
    let sandbox = sandbox().await;
    let lost = sandbox.create_v3_payment(1999);
    register(&admin, &lost.mch_order_no, 1999).await;
    assert_eq!(reconciler(&admin.pool, &sandbox, "r").run_once().await.unwrap(), 1);
    let id = state(&admin, &lost.mch_order_no).await["event_id"].as_str().unwrap().to_owned();

    let (status, api) = json(admin.get(&format!("/api/v1/events/{id}"))).await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(api["event"]["source"], "reconciliation");
    let out = cli(&db, &["events", "show", &id, "--json"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["event"]["source"], "reconciliation");
    let text = String::from_utf8_lossy(&cli(&db, &["events", "show", &id]).await.stdout).into_owned();
    assert!(text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["source", "reconciliation"]), "{text}");
}
