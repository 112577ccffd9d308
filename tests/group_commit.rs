//! Group commit: batches fold repeats correctly and isolate a bad row.

mod common;

use std::time::Duration;

use common::*;
use iotpay_devtools::testing::TestDatabase;
use iotpay_notify::iotpay::{Notification, Params};
use iotpay_notify::store::events::NotificationWriter;
use iotpay_notify::store::group_commit::{GroupCommit, GroupSettings};
use iotpay_notify::store::{self, NewNotification};
use serde_json::json;

fn new_notification(pay_order_id: &str, amount: i64) -> NewNotification {
    let body = signed(v3_pay(pay_order_id, amount), KEY);
    let params = Params::from_json(body.as_bytes()).unwrap();
    NewNotification {
        notification: Notification::from_params(&params).unwrap(),
        fields: params.to_json(),
        remote_addr: Some("127.0.0.1".into()),
        pay_succ_at: None,
    }
}

#[tokio::test]
async fn repeats_inside_one_batch_count_like_sequential_arrivals() {
    let db = TestDatabase::create().await;
    let batch = vec![
        new_notification("A", 100),
        new_notification("B", 200),
        new_notification("A", 100),
        new_notification("A", 100),
    ];
    let results = store::record_batch(&db.pool, &batch).await.unwrap();
    let view: Vec<(bool, i32)> = results.iter().map(|r| (r.inserted, r.notification_count)).collect();
    assert_eq!(view, vec![(true, 1), (true, 1), (false, 2), (false, 3)]);
    assert_eq!(results[0].event_id, results[2].event_id);

    // A later batch continues the count.
    let results = store::record_batch(&db.pool, &[new_notification("A", 100)]).await.unwrap();
    assert_eq!((results[0].inserted, results[0].notification_count), (false, 4));
    let counts: Vec<(String, i32)> =
        sqlx::query_as("SELECT pay_order_id, notification_count FROM payment_events ORDER BY pay_order_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(counts, vec![("A".into(), 4), ("B".into(), 1)]);
    assert_eq!(count(&db.pool, "notifications").await, 5);
}

#[tokio::test]
async fn repeat_with_different_amount_is_flagged_and_stored_event_kept() {
    let db = TestDatabase::create().await;
    store::record_batch(&db.pool, &[new_notification("A", 100)]).await.unwrap();
    let r = store::record_batch(&db.pool, &[new_notification("A", 999)]).await.unwrap();
    assert!(r[0].differs_from_stored);
    let amount: i64 = sqlx::query_scalar("SELECT amount FROM payment_events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(amount, 100);
}

#[tokio::test]
async fn one_bad_row_does_not_fail_its_batch_neighbours() {
    let db = TestDatabase::create().await;
    // A long gathering window puts all five in one batch.
    let batcher = GroupCommit::start(
        db.pool.clone(),
        NotificationWriter,
        GroupSettings { max_batch: 64, max_wait: Duration::from_millis(200), writers: 1 },
    );
    let mut bad = new_notification("BAD", 100);
    // jsonb cannot hold U+0000: the database refuses this row (the parser never lets one through).
    bad.fields["evil"] = json!("x\u{0000}y");
    let jobs = vec![
        new_notification("G1", 1),
        new_notification("G2", 2),
        bad,
        new_notification("G3", 3),
        new_notification("G1", 1),
    ];
    let results = futures::future::join_all(jobs.into_iter().map(|n| {
        let b = batcher.clone();
        async move { b.submit(n).await }
    }))
    .await;
    assert!(results[0].is_ok() && results[1].is_ok() && results[3].is_ok() && results[4].is_ok(), "{results:?}");
    assert!(results[2].is_err(), "the bad row reports its own failure");
    let stored: Vec<(String, i32)> =
        sqlx::query_as("SELECT pay_order_id, notification_count FROM payment_events ORDER BY pay_order_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(stored, vec![("G1".into(), 2), ("G2".into(), 1), ("G3".into(), 1)]);
}

#[tokio::test]
async fn concurrent_burst_of_distinct_and_repeated_notifications() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    // 50 distinct events, each sent 4 times, all at once.
    let bodies: Vec<String> =
        (0..200).map(|i| signed(v3_pay(&format!("P{}", i % 50), 100 + (i % 50) as i64), KEY)).collect();
    let statuses = futures::future::join_all(bodies.into_iter().map(|b| {
        let req = app.client.post(app.url("/iotpay/notify")).header("content-type", "application/json").body(b);
        async move { req.send().await.unwrap().status().as_u16() }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(count(&db.pool, "payment_events").await, 50);
    assert_eq!(count(&db.pool, "notifications").await, 200);
    let wrong: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_events WHERE notification_count <> 4")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(wrong, 0);
}

/// The confirmation worker is woken by `NOTIFY iotpay_events_pending`: once per batch that created
/// at least one event (a NOTIFY per row would serialize commits for nothing), never for a batch of
/// repeats only.
#[tokio::test]
async fn one_pending_wake_up_per_batch_with_new_events_none_for_repeats_only() {
    let db = TestDatabase::create().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen("iotpay_events_pending").await.unwrap();

    let batch = [new_notification("A", 100), new_notification("B", 200), new_notification("A", 100)];
    store::record_batch(&db.pool, &batch).await.unwrap();
    store::record_batch(&db.pool, &[new_notification("A", 100), new_notification("B", 200)]).await.unwrap();
    // Notifications arrive in commit order: everything before the marker came from the batches.
    sqlx::query("SELECT pg_notify('iotpay_events_pending', 'marker')").execute(&db.pool).await.unwrap();

    let mut wake_ups = 0;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), listener.recv()).await.unwrap().unwrap();
        if n.payload() == "marker" {
            break;
        }
        wake_ups += 1;
    }
    assert_eq!(wake_ups, 1);
}

/// A writer with a bug: it panics on the item 13.
struct Buggy;

impl iotpay_notify::store::group_commit::BatchWrite for Buggy {
    type Item = u32;
    type Output = u32;
    const NAME: &'static str = "buggy";

    async fn write(&self, _pool: &sqlx::PgPool, items: &[u32]) -> Result<Vec<u32>, store::StoreError> {
        assert!(!items.contains(&13), "bug in the writer");
        Ok(items.to_vec())
    }
}

/// Issue 11 audit: group-commit writers started under the service's health are supervised. A
/// writer that dies fails that health (so `/readyz` answers 503 and the service stops), where
/// before the queue answered `Closed` to every caller for good and nothing else noticed.
#[tokio::test]
async fn a_writer_that_dies_fails_the_health_it_was_started_under() {
    use iotpay_notify::store::group_commit::{GroupCommit, GroupSettings};
    let pool = sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://unused@127.0.0.1:9/unused").unwrap();
    let settings = GroupSettings { max_batch: 1, max_wait: Duration::ZERO, writers: 1 };
    let health = iotpay_notify::health::Health::default();
    let queue = health.scope(|| GroupCommit::start(pool.clone(), Buggy, settings));
    assert_eq!(queue.submit(1).await.unwrap(), 1);
    assert!(health.is_ok());

    assert!(matches!(queue.submit(13).await, Err(store::StoreError::Closed)));
    tokio::time::timeout(Duration::from_secs(5), health.failed()).await.expect("the health fails");
    assert!(!health.is_ok());
    let failure = health.failure().unwrap();
    assert!(failure.starts_with("buggy-writer panicked: bug in the writer"), "{failure}");
    assert!(matches!(queue.submit(2).await, Err(store::StoreError::Closed)), "the queue is gone for good");

    // Outside any scope (a test's or an operator command's own queue) nothing is supervised.
    let unsupervised = GroupCommit::start(pool, Buggy, settings);
    assert!(matches!(unsupervised.submit(13).await, Err(store::StoreError::Closed)));
}

/// A queue statement that still needs a ruled-out plan node (a sort, here) costs more than
/// `jit_above_cost` by `disable_cost` alone; it must run without JIT compilation, which took
/// 0.3-1 s per statement.
#[tokio::test]
async fn queue_statements_are_never_jit_compiled() {
    let db = TestDatabase::create().await;
    let jit: bool = sqlx::query_scalar("SELECT pg_jit_available()").fetch_one(&db.pool).await.unwrap();
    assert!(jit, "this PostgreSQL has no JIT: the test would prove nothing");
    store::record_batch(&db.pool, &[new_notification("J1", 100), new_notification("J2", 200)]).await.unwrap();
    let sorted = "EXPLAIN (ANALYZE, FORMAT JSON) SELECT event_id FROM payment_events ORDER BY amount";

    let mut tx = store::begin_queue_tx(&db.pool).await.unwrap();
    let plan: serde_json::Value = sqlx::query_scalar(sorted).fetch_one(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(plan[0]["Plan"]["Total Cost"].as_f64().unwrap() > 100_000.0, "the sort is ruled out: {plan}");
    assert!(plan[0].get("JIT").is_none(), "queue statement was JIT-compiled: {}", plan[0]["JIT"]);
}
