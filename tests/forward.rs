//! Forwarding confirmed events to their endpoints: a real Postgres, a real delivery worker, and a
//! receiving HTTP server that checks every signature and validates every body against the JSON
//! Schema. Each endpoint on its own (failing, slow, timing out, asking to retry later), and the
//! signature and schema themselves. The delivery queue: tests/forward_queue.rs.

mod common;
mod forwarding;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use forwarding::*;
use futures::FutureExt;
use iotpay_devtools::testing::TestDatabase;
use iotpay_notify::config::ForwardSecret;
use iotpay_notify::forward::signature;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// Stores notifications through the HTTP app and returns their event ids.
async fn notified(db: &TestDatabase, bodies: &[String]) -> Vec<String> {
    let app = TestApp::spawn(db).await;
    let mut ids = Vec::new();
    for body in bodies {
        assert_eq!(app.post_json(body).await, (200, "SUCCESS".into()));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let id: String = sqlx::query_scalar("SELECT event_id FROM payment_events WHERE pay_order_id = $1")
            .bind(v["payOrderId"].as_str().unwrap())
            .fetch_one(&db.pool)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn confirmed_events_reach_two_endpoints_signed_once_each() {
    let metrics = iotpay_notify::telemetry::metrics_handle();
    let db = TestDatabase::create().await;
    let rx = Receiver::start().await;
    let endpoints = vec![rx.url("/ledger"), rx.url("/fulfilment")];
    let ids = notified(
        &db,
        &[
            signed(v3_pay("PF1", 1500), KEY),
            signed(v3_refund("RF1", "PF1", 500), KEY),
            signed(v2_pay("PF2", 2000), KEY),
        ],
    )
    .await;
    let worker = start(&db.pool, &endpoints, fast_settings(&[0, 20, 20]), "w1");
    let before = Instant::now();
    confirm(&db.pool, &ids, &endpoints).await;
    wait_until(WAIT, "6 deliveries delivered", || async { deliveries_with(&db.pool, "delivered").await == 6 }).await;
    let latency = before.elapsed();
    worker.stop().await;

    let received = rx.received();
    assert_well_formed(&received);
    assert_eq!(received.len(), 6, "each event exactly once per endpoint");
    for path in ["/ledger", "/fulfilment"] {
        let mut got: Vec<String> = rx.received_on(path).into_iter().map(|r| r.webhook_id).collect();
        got.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(got, want, "{path}");
    }
    let now = chrono::Utc::now().timestamp();
    assert!(received.iter().all(|r| (now - r.timestamp).abs() < 60), "webhook-timestamp is the attempt's time");

    let by_id: HashMap<String, serde_json::Value> =
        rx.received_on("/ledger").into_iter().map(|r| (r.webhook_id, r.body)).collect();
    let pay = &by_id[&ids[0]];
    assert_eq!(pay["type"], "payment.succeeded");
    assert_eq!(pay["data"]["amount"], 1500);
    assert_eq!(pay["data"]["currency"], "CAD");
    assert_eq!(pay["data"]["mch_id"], MCH);
    assert_eq!(pay["data"]["mch_order_no"], "order-PF1");
    assert_eq!(pay["data"]["pay_order_id"], "PF1");
    assert_eq!(pay["data"]["status"], "confirmed");
    assert_eq!(pay["data"]["card_num"], "432567******2266");
    assert_eq!(pay["data"]["channel"], "PF_CC");
    assert_eq!(pay["data"]["pay_succ_time"], "2021-04-07 19:44:51");
    let refund = &by_id[&ids[1]];
    assert_eq!(refund["type"], "refund.succeeded");
    assert_eq!(refund["data"]["original_order_id"], "PF1");
    assert_eq!(by_id[&ids[2]]["data"]["api_version"], "v2");
    assert_eq!(by_id[&ids[2]]["data"]["card_type"], "V");

    for id in &ids {
        for ep in &endpoints {
            let a = attempts(&db.pool, id, ep).await;
            assert_eq!(a.len(), 1);
            assert_eq!(a[0].0, 1);
            assert_eq!(a[0].1, Some(200));
            assert_eq!(a[0].3.as_deref(), Some("ok"), "the response snippet is kept");
        }
    }
    let rendered = metrics.render();
    assert!(rendered.contains("iotpay_forward_deliveries_total"), "{rendered}");
    assert!(rendered.contains(&format!("endpoint=\"{}\"", rx.url("/ledger"))));
    assert!(rendered.contains("iotpay_forward_attempt_duration_seconds_bucket"));
    eprintln!("6 deliveries delivered {latency:?} after the confirmations");
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_while_the_other_is_unaffected() {
    let db = TestDatabase::create().await;
    let rx = Receiver::start().await;
    rx.script("/flaky", [Reply::Status(500), Reply::Status(500)]);
    let endpoints = vec![rx.url("/flaky"), rx.url("/steady")];
    let ids = insert_events(&db.pool, "FLAKY", 1).await;
    // Retries come 300 ms apart, so the steady endpoint must be done long before the third try.
    let worker = start(&db.pool, &endpoints, fast_settings(&[0, 300, 300, 300]), "w1");
    confirm(&db.pool, &ids, &endpoints).await;
    wait_until(WAIT, "both delivered", || async { deliveries_with(&db.pool, "delivered").await == 2 }).await;
    worker.stop().await;

    assert_well_formed(&rx.received());
    let flaky = rx.received_on("/flaky");
    let steady = rx.received_on("/steady");
    assert_eq!(flaky.len(), 3);
    assert_eq!(steady.len(), 1);
    assert!(steady[0].at < flaky[1].at, "the steady endpoint did not wait for the flaky one's retries");
    assert!(flaky[1].at - flaky[0].at >= Duration::from_millis(250), "backoff between attempts");
    assert!(flaky.iter().all(|r| r.webhook_id == ids[0]), "same webhook-id on every retry");

    assert_eq!(delivery(&db.pool, &ids[0], &endpoints[0]).await, ("delivered".into(), 3));
    let a = attempts(&db.pool, &ids[0], &endpoints[0]).await;
    let summary: Vec<_> = a.iter().map(|a| (a.0, a.1, a.2.clone(), a.3.clone())).collect();
    assert_eq!(
        summary,
        vec![
            (1, Some(500), Some("HTTP 500".into()), Some("boom".into())),
            (2, Some(500), Some("HTTP 500".into()), Some("boom".into())),
            (3, Some(200), None, Some("ok".into())),
        ]
    );
    assert_eq!(delivery(&db.pool, &ids[0], &endpoints[1]).await, ("delivered".into(), 1));
}

#[tokio::test]
async fn a_slow_endpoint_never_delays_the_others() {
    let db = TestDatabase::create().await;
    let rx = Receiver::start().await;
    rx.default_reply("/slow", Reply::Sleep(Duration::from_secs(3)));
    let endpoints = vec![rx.url("/slow"), rx.url("/fast")];
    let ids = insert_events(&db.pool, "HOL", 8).await;
    let mut settings = fast_settings(&[0, 20]);
    settings.concurrency_per_endpoint = 2;
    let worker = start(&db.pool, &endpoints, settings, "w1");
    let t0 = Instant::now();
    confirm(&db.pool, &ids, &endpoints).await;
    let delivered_to = |endpoint: String| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM deliveries WHERE endpoint = $1 AND status = 'delivered'")
                .bind(endpoint)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    wait_until(WAIT, "fast endpoint drained", || delivered_to(endpoints[1].clone()).map(|n| n == 8)).await;
    let fast_done = t0.elapsed();
    // The slow endpoint answers after 3 s, 2 at a time: its first answers have not even arrived.
    assert!(fast_done < Duration::from_millis(2500), "the fast endpoint took {fast_done:?}");
    assert_eq!(delivered_to(endpoints[0].clone()).await, 0);
    // Bounded concurrency: 2 requests in flight on the slow endpoint, never more.
    wait_until(WAIT, "the slow endpoint's 2 slots in use", || async { rx.received_on("/slow").len() >= 2 }).await;
    if t0.elapsed() < Duration::from_millis(2900) {
        assert_eq!(rx.received_on("/slow").len(), 2, "more than 2 requests in flight on the slow endpoint");
    }
    worker.stop().await;
    assert_well_formed(&rx.received());
    assert_eq!(delivered_to(endpoints[0].clone()).await, 2, "stopping waits for the attempts in flight");
    eprintln!("fast endpoint drained in {fast_done:?} while the slow one held its 2 slots");
}

#[tokio::test]
async fn an_attempt_that_exceeds_the_timeout_is_recorded_and_retried() {
    let db = TestDatabase::create().await;
    let rx = Receiver::start().await;
    rx.script("/hangs", [Reply::Sleep(Duration::from_secs(5))]);
    let endpoints = vec![rx.url("/hangs")];
    let ids = insert_events(&db.pool, "TMO", 1).await;
    let mut settings = fast_settings(&[0, 20, 20]);
    settings.timeout = Duration::from_millis(300);
    let worker = start(&db.pool, &endpoints, settings, "w1");
    confirm(&db.pool, &ids, &endpoints).await;
    wait_until(WAIT, "delivered after a timeout", || async { deliveries_with(&db.pool, "delivered").await == 1 }).await;
    worker.stop().await;

    let a = attempts(&db.pool, &ids[0], &endpoints[0]).await;
    assert_eq!(a.len(), 2);
    assert_eq!((a[0].1, a[0].2.as_deref()), (None, Some("timeout")));
    assert!((250..2000).contains(&a[0].4), "the timed-out attempt lasted {} ms", a[0].4);
    assert_eq!(a[1].1, Some(200));
    assert_eq!(rx.received_on("/hangs").len(), 2);
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let db = TestDatabase::create().await;
    let rx = Receiver::start().await;
    rx.script("/busy", [Reply::RetryAfter(429, "1")]);
    rx.script("/unavailable", [Reply::RetryAfter(503, "1")]);
    let endpoints = vec![rx.url("/busy"), rx.url("/unavailable")];
    let ids = insert_events(&db.pool, "RA", 1).await;
    // The schedule alone would retry after 20 ms; Retry-After asks for 1 s.
    let worker = start(&db.pool, &endpoints, fast_settings(&[0, 20, 20]), "w1");
    confirm(&db.pool, &ids, &endpoints).await;
    wait_until(WAIT, "delivered after Retry-After", || async { deliveries_with(&db.pool, "delivered").await == 2 })
        .await;
    worker.stop().await;
    for path in ["/busy", "/unavailable"] {
        let got = rx.received_on(path);
        assert_eq!(got.len(), 2, "{path}");
        let gap = got[1].at - got[0].at;
        assert!(gap >= Duration::from_millis(950), "{path}: retried after {gap:?}, before Retry-After");
        assert!(gap < Duration::from_secs(5), "{path}: retried after {gap:?}");
    }
    let a = attempts(&db.pool, &ids[0], &endpoints[0]).await;
    assert_eq!(a[0].1, Some(429));
    assert_eq!(a[0].3.as_deref(), Some("slow down"));
}

#[test]
fn signature_matches_the_standard_webhooks_reference_vector() {
    let secret = ForwardSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let body = br#"{"test": 2432232314}"#;
    let sig = signature::sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
    assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    assert!(signature::verify(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, &sig, 1614265330).is_ok());
}

#[test]
fn the_schema_rejects_what_the_contract_forbids() {
    let schema = forwarding::schema();
    let good = json!({
        "type": "payment.succeeded", "timestamp": "2026-01-01T00:00:00.000Z",
        "data": { "event_id": "evt_0123456789abcdef0123456789abcdef", "event_type": "payment.succeeded",
                  "api_version": "v3", "mch_id": "1", "mch_order_no": "o", "pay_order_id": "p",
                  "original_order_id": null, "amount": 1, "currency": "CAD", "status": "confirmed",
                  "source": "notification" }
    });
    assert!(schema.is_valid(&good));
    let mut reconciled = good.clone();
    reconciled["data"]["source"] = json!("reconciliation");
    assert!(schema.is_valid(&reconciled));
    for bad in [json!("guess"), json!(null)] {
        let mut odd = good.clone();
        odd["data"]["source"] = bad;
        assert!(!schema.is_valid(&odd), "source is notification or reconciliation");
    }
    let mut pending = good.clone();
    pending["data"]["status"] = json!("pending");
    assert!(!schema.is_valid(&pending), "only confirmed events are forwarded");
    let mut string_amount = good.clone();
    string_amount["data"]["amount"] = json!("1");
    assert!(!schema.is_valid(&string_amount));
    let mut no_id = good;
    no_id["data"].as_object_mut().unwrap().remove("event_id");
    assert!(!schema.is_valid(&no_id));
}
