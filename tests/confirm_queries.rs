//! Confirmation of the other kinds of event (v2, refunds, failures), giving up as `unconfirmed`,
//! and the query client on its own: each failure classified (a wrong sign included), never retried.

mod common;
mod confirmkit;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use confirmkit::*;
use serde_json::json;
use sqlx::Row;

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
