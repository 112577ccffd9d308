//! Forwarding as a queue: an exhausted schedule and its redrive, two workers sharing a backlog,
//! nothing unconfirmed ever sent, a crashed worker's claim, an answer Postgres cannot store as
//! it is, and a batch of attempt records applied each under its own lease.

mod common;
mod forwarding;

use std::time::{Duration, Instant};

use forwarding::*;
use iotpay_devtools::testing::TestDatabase;
use iotpay_notify::store;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn exhausted_schedule_is_dead_until_redriven_then_delivered() {
    let db = TestDatabase::create().await;
    let rx = Receiver::start().await;
    rx.default_reply("/down", Reply::Status(502));
    let endpoints = vec![rx.url("/down"), rx.url("/up")];
    let ids = insert_events(&db.pool, "DEAD", 2).await;
    let worker = start(&db.pool, &endpoints, fast_settings(&[0, 10, 10]), "w1");
    confirm(&db.pool, &ids, &endpoints).await;
    wait_until(WAIT, "two dead, two delivered", || async {
        deliveries_with(&db.pool, "dead").await == 2 && deliveries_with(&db.pool, "delivered").await == 2
    })
    .await;
    for id in &ids {
        assert_eq!(delivery(&db.pool, id, &endpoints[0]).await, ("dead".into(), 3));
        let a = attempts(&db.pool, id, &endpoints[0]).await;
        assert_eq!(
            a.iter().map(|a| (a.0, a.1)).collect::<Vec<_>>(),
            vec![(1, Some(502)), (2, Some(502)), (3, Some(502))]
        );
    }
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM deliveries WHERE status = 'dead' LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(last_error.as_deref(), Some("HTTP 502"));
    assert_eq!(rx.received_on("/down").len(), 6);

    // The endpoint recovers; an operator redrives one event, then the rest of the endpoint.
    rx.default_reply("/down", Reply::Ok);
    let redriven = store::ops::redrive(&db.pool, None, Some(&ids[0])).await.unwrap();
    assert_eq!(redriven.len(), 1);
    assert_eq!(
        (redriven[0].event_id.as_str(), redriven[0].endpoint.as_str()),
        (ids[0].as_str(), endpoints[0].as_str())
    );
    wait_until(WAIT, "redriven delivery delivered", || async {
        delivery(&db.pool, &ids[0], &endpoints[0]).await.0 == "delivered"
    })
    .await;
    assert_eq!(delivery(&db.pool, &ids[1], &endpoints[0]).await.0, "dead", "only the chosen event was redriven");
    let redriven = store::ops::redrive(&db.pool, Some(&endpoints[0]), None).await.unwrap();
    assert_eq!(redriven.len(), 1);
    wait_until(WAIT, "all delivered", || async { deliveries_with(&db.pool, "delivered").await == 4 }).await;
    worker.stop().await;

    let a = attempts(&db.pool, &ids[0], &endpoints[0]).await;
    assert_eq!(a.len(), 4, "history survives the redrive");
    assert_eq!((a[3].0, a[3].1), (1, Some(200)), "the schedule restarted");
    assert!(store::ops::redrive(&db.pool, None, None).await.unwrap().is_empty(), "delivered is never redriven");
    assert_eq!(rx.received_on("/up").len(), 2, "the healthy endpoint got each event once");
    assert_well_formed(&rx.received());
}

#[tokio::test]
async fn two_workers_drain_a_backlog_without_duplicates() {
    const EVENTS: i64 = 200;
    let db = TestDatabase::create().await;
    let rx = Receiver::start().await;
    // A little latency per answer, as a real endpoint has, so both workers are busy at once.
    rx.set_delay(Duration::from_millis(5));
    let endpoints = vec![rx.url("/a"), rx.url("/b")];
    let ids = insert_events(&db.pool, "BULK", EVENTS).await;
    let mut settings = fast_settings(&[0, 20, 20]);
    settings.concurrency_per_endpoint = 8;
    // Each worker has its own pool, as two `serve` processes would.
    let pool_a =
        sqlx::postgres::PgPoolOptions::new().max_connections(6).connect_with(db.options.clone()).await.unwrap();
    let pool_b =
        sqlx::postgres::PgPoolOptions::new().max_connections(6).connect_with(db.options.clone()).await.unwrap();
    let a = start(&pool_a, &endpoints, settings.clone(), "worker-a");
    let b = start(&pool_b, &endpoints, settings, "worker-b");

    // The whole backlog appears at once (one transaction), as after an outage of the endpoints.
    let t0 = Instant::now();
    confirm_at_once(&db.pool, &ids, &endpoints).await;
    let total = EVENTS * 2;
    wait_until(Duration::from_secs(60), "backlog drained", || async {
        deliveries_with(&db.pool, "delivered").await == total
    })
    .await;
    let elapsed = t0.elapsed();
    a.stop().await;
    b.stop().await;

    let received = rx.received();
    assert_eq!(received.len() as i64, total, "no duplicate delivery");
    let mut seen = std::collections::HashSet::new();
    for r in &received {
        assert!(seen.insert((r.path.clone(), r.webhook_id.clone())), "{} sent twice to {}", r.webhook_id, r.path);
    }
    assert_well_formed(&received);
    let per_worker: Vec<(String, i64)> =
        sqlx::query_as("SELECT worker, count(*) FROM delivery_attempts GROUP BY worker ORDER BY worker")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(per_worker.iter().map(|w| w.1).sum::<i64>(), total, "one attempt per delivery");
    assert_eq!(per_worker.len(), 2, "both workers took part: {per_worker:?}");
    eprintln!(
        "{total} deliveries drained by two workers in {elapsed:?} ({:.0}/s); split {per_worker:?}",
        total as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn nothing_that_is_not_confirmed_is_ever_sent() {
    let db = TestDatabase::create().await;
    let rx = Receiver::start().await;
    let endpoints = vec![rx.url("/hook")];
    let ids = insert_events(&db.pool, "NC", 4).await;
    // Deliveries of events that are not confirmed (as a faulty writer or a later rejection
    // could leave them), created first so that they are the oldest in the queue.
    for (id, status) in ids[..3].iter().zip(["pending", "rejected", "unconfirmed"]) {
        let mut tx = db.pool.begin().await.unwrap();
        sqlx::query("UPDATE payment_events SET status = $2, status_reason = 'test' WHERE event_id = $1")
            .bind(id)
            .bind(status)
            .execute(&mut *tx)
            .await
            .unwrap();
        store::deliveries::enqueue(&mut tx, id, &endpoints).await.unwrap();
        tx.commit().await.unwrap();
    }
    let worker = start(&db.pool, &endpoints, fast_settings(&[0, 10]), "w1");
    confirm(&db.pool, &ids[3..], &endpoints).await;
    wait_until(WAIT, "the confirmed event delivered", || async { deliveries_with(&db.pool, "delivered").await == 1 })
        .await;
    // A few more polls: the others are older and due, so they would have been claimed by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.stop().await;
    let received = rx.received();
    assert_eq!(received.iter().map(|r| r.webhook_id.clone()).collect::<Vec<_>>(), vec![ids[3].clone()]);
    let untouched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deliveries WHERE status = 'pending' AND attempts = 0 AND lease_token IS NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(untouched, 3);
    assert_eq!(common::count(&db.pool, "delivery_attempts").await, 1);
}

#[tokio::test]
async fn a_crashed_workers_claim_expires_and_its_late_result_is_ignored() {
    let db = TestDatabase::create().await;
    let rx = Receiver::start().await;
    let endpoints = vec![rx.url("/hook")];
    let ids = insert_events(&db.pool, "CRASH", 1).await;
    confirm(&db.pool, &ids, &endpoints).await;
    // A worker claims the delivery with a short lease, then "crashes" (never records).
    let lease = Duration::from_millis(300);
    let crashed = store::forward::claim(&db.pool, &endpoints[0], 10, lease, "crashed").await.unwrap();
    assert_eq!(crashed.len(), 1);
    assert!(
        store::forward::claim(&db.pool, &endpoints[0], 10, lease, "other").await.unwrap().is_empty(),
        "a leased delivery is not claimed twice"
    );
    let claimed_at = Instant::now();
    let worker = start(&db.pool, &endpoints, fast_settings(&[0, 10]), "w2");
    wait_until(WAIT, "delivered after the lease expired", || async {
        deliveries_with(&db.pool, "delivered").await == 1
    })
    .await;
    worker.stop().await;
    assert!(rx.received()[0].at - claimed_at >= Duration::from_millis(250), "not before the lease expired");

    // The crashed worker's result arrives late: it is logged, but cannot change the delivery.
    let c = &crashed[0];
    let late = store::forward::Attempt {
        delivery_id: c.delivery_id,
        lease_token: c.lease_token.clone(),
        attempt: 1,
        started_at: chrono::Utc::now(),
        duration: Duration::from_millis(5),
        http_status: Some(500),
        error: Some("HTTP 500".into()),
        response_snippet: None,
        worker: "crashed".into(),
        next: store::forward::Next::Dead,
    };
    assert!(!store::forward::record(&db.pool, &late).await.unwrap(), "the stale lease is refused");
    assert_eq!(delivery(&db.pool, &ids[0], &endpoints[0]).await, ("delivered".into(), 1));
    assert_eq!(attempts(&db.pool, &ids[0], &endpoints[0]).await.len(), 2, "both attempts are in the history");
}

/// An endpoint's answer is stored with the attempt, and Postgres text cannot hold U+0000: an
/// answer carrying one must still be recorded (or the delivery would be retried forever).
#[tokio::test]
async fn an_answer_with_a_nul_byte_is_recorded_and_the_delivery_goes_on() {
    let db = TestDatabase::create().await;
    let rx = Receiver::start().await;
    rx.script("/nul", [Reply::Body(500, "bad\u{0}news")]);
    let endpoints = vec![rx.url("/nul")];
    let ids = insert_events(&db.pool, "NUL", 1).await;
    let worker = start(&db.pool, &endpoints, fast_settings(&[0, 50]), "w1");
    confirm(&db.pool, &ids, &endpoints).await;
    wait_until(WAIT, "delivered on the retry", || async { deliveries_with(&db.pool, "delivered").await == 1 }).await;
    worker.stop().await;
    let a = attempts(&db.pool, &ids[0], &endpoints[0]).await;
    let summary: Vec<_> = a.iter().map(|a| (a.0, a.1, a.3.clone())).collect();
    assert_eq!(summary, vec![(1, Some(500), Some("badnews".into())), (2, Some(200), Some("ok".into()))]);
}

/// Attempts finishing together are recorded in one statement; each outcome still applies only
/// under its own lease, while every attempt is kept in the history.
#[tokio::test]
async fn a_batch_of_attempt_records_applies_each_under_its_own_lease() {
    let db = TestDatabase::create().await;
    let endpoint = "http://127.0.0.1:9/hook".to_owned();
    let ids = insert_events(&db.pool, "BATCH", 3).await;
    confirm(&db.pool, &ids, std::slice::from_ref(&endpoint)).await;
    let claimed = store::forward::claim(&db.pool, &endpoint, 10, Duration::from_secs(30), "w").await.unwrap();
    assert_eq!(claimed.len(), 3);
    let attempt = |c: &store::forward::Claimed, token: &str, next, status| store::forward::Attempt {
        delivery_id: c.delivery_id,
        lease_token: token.to_owned(),
        attempt: 1,
        started_at: chrono::Utc::now(),
        duration: Duration::from_millis(3),
        http_status: Some(status),
        error: (status != 200).then(|| format!("HTTP {status}")),
        response_snippet: None,
        worker: "w".into(),
        next,
    };
    let stale = uuid::Uuid::new_v4().to_string();
    let batch = vec![
        attempt(&claimed[0], &claimed[0].lease_token, store::forward::Next::Delivered, 200),
        attempt(&claimed[1], &stale, store::forward::Next::Delivered, 200),
        attempt(&claimed[2], &claimed[2].lease_token, store::forward::Next::Retry(Duration::from_secs(60)), 503),
    ];
    assert_eq!(store::forward::record_batch(&db.pool, &batch).await.unwrap(), vec![true, false, true]);
    let ev = |i: usize| claimed[i].event.event_id.clone();
    assert_eq!(delivery(&db.pool, &ev(0), &endpoint).await, ("delivered".into(), 1));
    assert_eq!(delivery(&db.pool, &ev(1), &endpoint).await, ("pending".into(), 0), "a stale lease changes nothing");
    assert_eq!(delivery(&db.pool, &ev(2), &endpoint).await, ("pending".into(), 1));
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_attempts").fetch_one(&db.pool).await.unwrap();
    assert_eq!(logged, 3, "every attempt is in the history");
    // The retry waits for its delay; the stale-lease delivery is still leased.
    let again = store::forward::claim(&db.pool, &endpoint, 10, Duration::from_secs(30), "w").await.unwrap();
    assert!(again.is_empty(), "{again:?}");
}
