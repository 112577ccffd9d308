//! What IOTPay's answers to the reconciler make of an order (issue 14): pending, paid, cancelled,
//! mismatch and expired, expiry only when IOTPay says "not paid" and at `expires_at`, and v1/v2
//! orders asked by merchant order number.

mod adminkit;
mod common;
mod forwarding;
mod reconcilekit;

use std::time::{Duration, Instant};

use adminkit::*;
use common::*;
use iotpay_devtools::testing::TestDatabase;
use reconcilekit::reconciling::{self, *};
use reconcilekit::*;
use serde_json::{json, Value};

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
