//! Black-box tests of `POST /iotpay/notify` and the health routes, over real HTTP and Postgres.

mod common;

use std::time::{Duration, Instant};

use common::proxy::TcpProxy;
use common::*;
use iotpay_devtools::testing::TestDatabase;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::Row;

async fn event(pool: &sqlx::PgPool, pay_order_id: &str) -> sqlx::postgres::PgRow {
    sqlx::query("SELECT * FROM payment_events WHERE pay_order_id = $1")
        .bind(pay_order_id)
        .fetch_one(pool)
        .await
        .expect("event stored")
}

#[tokio::test]
async fn v3_payment_is_stored_pending_and_acknowledged() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    assert_eq!(app.post_json(&signed(v3_pay("PC1", 1500), KEY)).await, (200, "SUCCESS".into()));

    let e = event(&db.pool, "PC1").await;
    assert_eq!(e.get::<String, _>("event_type"), "payment.succeeded");
    assert_eq!(e.get::<String, _>("api_version"), "v3");
    assert_eq!(e.get::<String, _>("status"), "pending");
    assert_eq!(e.get::<String, _>("mch_id"), MCH);
    assert_eq!(e.get::<String, _>("mch_order_no"), "order-PC1");
    assert_eq!(e.get::<i64, _>("amount"), 1500);
    assert_eq!(e.get::<String, _>("currency"), "CAD");
    assert_eq!(e.get::<i32, _>("notification_count"), 1);
    assert_eq!(e.get::<Option<String>, _>("original_order_id"), None);
    assert_eq!(e.get::<Option<String>, _>("card_num").as_deref(), Some("432567******2266"));
    assert_eq!(e.get::<Option<String>, _>("pay_succ_time_raw").as_deref(), Some("2021-04-07 19:44:51"));
    let event_id: String = e.get("event_id");
    assert!(event_id.starts_with("evt_"));

    let n = sqlx::query("SELECT * FROM notifications WHERE event_id = $1")
        .bind(&event_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n.get::<Option<String>, _>("remote_addr").as_deref(), Some("127.0.0.1"));
    assert_eq!(n.get::<String, _>("api_version"), "v3");
    let fields: Value = n.get("fields");
    assert_eq!(fields["amount"], json!(1500));
    assert_eq!(fields["transNum"], json!("T1"));
    assert!(fields["sign"].is_string(), "the received sign is kept");
}

#[tokio::test]
async fn v2_form_payment_and_v3_refund_normalize() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let form = signed_form(v2_pay("P2", 2000), KEY);
    assert_eq!(app.post(form.into_bytes(), Some("application/x-www-form-urlencoded")).await.0, 200);
    let e = event(&db.pool, "P2").await;
    assert_eq!(e.get::<String, _>("api_version"), "v2");
    assert_eq!(e.get::<String, _>("event_type"), "payment.succeeded");
    assert_eq!(e.get::<i64, _>("amount"), 2000);
    assert_eq!(e.get::<Option<String>, _>("trans_num").as_deref(), Some("660012345678"));

    // The same v2 notification as JSON is the same event.
    assert_eq!(app.post_json(&signed(v2_pay("P2", 2000), KEY)).await.0, 200);
    assert_eq!(event(&db.pool, "P2").await.get::<i32, _>("notification_count"), 2);

    assert_eq!(app.post_json(&signed(v3_refund("RC1", "PC1", 500), KEY)).await.0, 200);
    let r = event(&db.pool, "RC1").await;
    assert_eq!(r.get::<String, _>("event_type"), "refund.succeeded");
    assert_eq!(r.get::<Option<String>, _>("original_order_id").as_deref(), Some("PC1"));
    assert_eq!(r.get::<i64, _>("amount"), 500);
}

#[tokio::test]
async fn non_success_status_never_yields_succeeded() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let mut failed = v3_pay("PF1", 100);
    failed["status"] = json!(9);
    assert_eq!(app.post_json(&signed(failed, KEY)).await.0, 200);
    assert_eq!(event(&db.pool, "PF1").await.get::<String, _>("event_type"), "payment.failed");

    let mut odd = v3_pay("PX1", 100);
    odd["payType"] = json!("void");
    assert_eq!(app.post_json(&signed(odd, KEY)).await.0, 200);
    let e = event(&db.pool, "PX1").await;
    assert_eq!(e.get::<String, _>("event_type"), "transaction.unrecognized");
    assert_eq!(e.get::<Option<String>, _>("pay_type").as_deref(), Some("void"));
}

#[tokio::test]
async fn sequential_repeats_are_one_event() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let body = signed(v3_pay("PC1", 1500), KEY);
    for _ in 0..3 {
        assert_eq!(app.post_json(&body).await, (200, "SUCCESS".into()));
    }
    // A status-3 repeat of a status-2 payment is the same event.
    let mut status3 = v3_pay("PC1", 1500);
    status3["status"] = json!(3);
    assert_eq!(app.post_json(&signed(status3, KEY)).await.0, 200);

    assert_eq!(count(&db.pool, "payment_events").await, 1);
    assert_eq!(count(&db.pool, "notifications").await, 4);
    assert_eq!(event(&db.pool, "PC1").await.get::<i32, _>("notification_count"), 4);
}

#[tokio::test]
async fn twenty_concurrent_identical_notifications_make_one_event() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let body = signed(v3_pay("PCONC", 990), KEY);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let sends = (0..20).map(|_| {
        let (client, url, body, barrier) =
            (app.client.clone(), app.url("/iotpay/notify"), body.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            let r = client.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    });
    for r in futures::future::join_all(sends).await {
        assert_eq!(r.unwrap(), (200, "SUCCESS".into()));
    }
    assert_eq!(count(&db.pool, "payment_events").await, 1);
    assert_eq!(event(&db.pool, "PCONC").await.get::<i32, _>("notification_count"), 20);
    assert_eq!(count(&db.pool, "notifications").await, 20);
}

#[tokio::test]
async fn two_servers_on_one_database_share_the_event() {
    let db = TestDatabase::create().await;
    let a = TestApp::spawn(&db).await;
    let b = TestApp::spawn(&db).await;
    let body = signed(v3_pay("PTWO", 700), KEY);
    let sends = (0..20).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let req =
            app.client.post(app.url("/iotpay/notify")).header("content-type", "application/json").body(body.clone());
        async move { req.send().await.unwrap().status().as_u16() }
    });
    assert!(futures::future::join_all(sends).await.into_iter().all(|s| s == 200));
    assert_eq!(event(&db.pool, "PTWO").await.get::<i32, _>("notification_count"), 20);
}

#[tokio::test]
async fn rotated_key_is_accepted() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    assert_eq!(app.post_json(&signed(v3_pay("PROT", 100), ROTATED_KEY)).await.0, 200);
    assert_eq!(count(&db.pool, "payment_events").await, 1);
}

#[tokio::test]
async fn forged_or_unknown_merchant_is_401_and_stores_nothing() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    // Signed with another merchant's key.
    assert_eq!(app.post_json(&signed(v3_pay("PF", 100), OTHER_KEY)).await, (401, "FAIL".into()));
    // Amount changed after signing.
    let mut tampered: Value = serde_json::from_str(&signed(v3_pay("PT", 100), KEY)).unwrap();
    tampered["amount"] = json!(100000);
    assert_eq!(app.post_json(&tampered.to_string()).await, (401, "FAIL".into()));
    // Unknown merchant, correctly signed with some key.
    let mut unknown = v3_pay("PU", 100);
    unknown["mchId"] = json!("99999999");
    assert_eq!(app.post_json(&signed(unknown, KEY)).await, (401, "FAIL".into()));
    // A field added after signing (IOTPay signs everything it sends).
    let mut added: Value = serde_json::from_str(&signed(v3_pay("PA", 100), KEY)).unwrap();
    added["extra"] = json!("x");
    assert_eq!(app.post_json(&added.to_string()).await, (401, "FAIL".into()));
    assert_eq!(count(&db.pool, "payment_events").await, 0);
    assert_eq!(count(&db.pool, "notifications").await, 0);
}

#[tokio::test]
async fn unknown_signed_field_is_accepted_and_kept() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let mut with_new = v3_pay("PNEW", 100);
    with_new["newFieldFromIotpay"] = json!("x=1&y=2");
    assert_eq!(app.post_json(&signed(with_new, KEY)).await.0, 200);
    let fields: Value = sqlx::query_scalar("SELECT fields FROM notifications").fetch_one(&db.pool).await.unwrap();
    assert_eq!(fields["newFieldFromIotpay"], json!("x=1&y=2"));
}

#[tokio::test]
async fn full_card_number_is_masked_before_storage() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let mut v = v3_pay("PPAN", 100);
    v["cardNum"] = json!("4111111111111111");
    assert_eq!(app.post_json(&signed(v, KEY)).await.0, 200);
    let e = event(&db.pool, "PPAN").await;
    assert_eq!(e.get::<Option<String>, _>("card_num").as_deref(), Some("411111******1111"));
    let raw: String = sqlx::query_scalar("SELECT fields::text FROM notifications").fetch_one(&db.pool).await.unwrap();
    assert!(!raw.contains("4111111111111111"), "PAN stored in raw fields: {raw}");
    assert!(raw.contains("411111******1111"));
}

#[tokio::test]
async fn database_outage_answers_503_quickly_and_recovers() {
    let db = TestDatabase::create().await;
    let upstream = common::proxy::server_of(&db).await;
    let proxy = TcpProxy::start(upstream).await;
    let proxied = common::proxy::through(&db, proxy.addr);
    let pool =
        PgPoolOptions::new().max_connections(4).acquire_timeout(Duration::from_secs(2)).connect_lazy_with(proxied);
    let app = TestApp::spawn_on(pool, &db.url()).await;

    assert_eq!(app.post_json(&signed(v3_pay("PBEFORE", 100), KEY)).await.0, 200);
    assert_eq!(app.client.get(app.url("/readyz")).send().await.unwrap().status(), 200);

    proxy.cut();
    let body = signed(v3_pay("PDURING", 100), KEY);
    let started = Instant::now();
    assert_eq!(app.post_json(&body).await, (503, "FAIL".into()));
    assert!(started.elapsed() < Duration::from_secs(5), "503 took {:?}", started.elapsed());
    // /readyz answers from a probe refreshed every second (never a query per request).
    let cut_at = Instant::now();
    while app.client.get(app.url("/readyz")).send().await.unwrap().status() != 503 {
        assert!(cut_at.elapsed() < Duration::from_secs(6), "/readyz still 200 after the cut");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);

    proxy.restore();
    assert_eq!(app.post_json(&body).await, (200, "SUCCESS".into()));
    let counts: Vec<(String, i32)> =
        sqlx::query_as("SELECT pay_order_id, notification_count FROM payment_events ORDER BY pay_order_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(counts, vec![("PBEFORE".into(), 1), ("PDURING".into(), 1)]);
}

#[tokio::test]
async fn health_and_metrics_routes() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(app.client.get(app.url("/readyz")).send().await.unwrap().status(), 200);
    app.post_json(&signed(v3_pay("PMET", 100), KEY)).await;
    app.post_json(&signed(v3_pay("PMET", 100), OTHER_KEY)).await;
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"iotpay_notifications_total{outcome="stored"}"#), "{text}");
    assert!(text.contains(r#"iotpay_notifications_total{outcome="bad_sign"}"#), "{text}");
    assert!(text.contains("iotpay_notify_duration_seconds_bucket"), "{text}");
}
