//! The reconciler finding payments whose notification never arrived (issue 14): found once by
//! racing replicas, forwarded once and saying so, and how it meets the notifications that did
//! arrive (pending, confirmed, rejected, unconfirmed, a failed payment).

mod adminkit;
mod common;
mod forwarding;
mod reconcilekit;

use std::time::Duration;

use adminkit::*;
use common::*;
use iotpay_devtools::testing::TestDatabase;
use reconcilekit::reconciling::{self, *};
use reconcilekit::*;
use serde_json::Value;

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
