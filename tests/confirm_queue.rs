//! Confirmation as a queue: decisions and deliveries in one transaction, workers racing or killed
//! and their leases, LISTEN/NOTIFY promptness, shutdown, refilled query slots, and a batch of
//! decisions applied each under its own lease.

mod common;
mod confirmkit;

use std::time::{Duration, Instant};

use common::*;
use confirmkit::*;
use iotpay_notify::service;
use iotpay_notify::store::confirm::{self as queue, Applied, Decided, OrderAnswer, Verdict};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- outbox

#[tokio::test]
async fn confirmation_enqueues_deliveries_and_notifies_in_the_same_transaction() {
    let h = Harness::new().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&h.db.pool).await.unwrap();
    listener.listen("payment_events_confirmed").await.unwrap();
    h.fake.script("PD1", [v3_ok("PD1", 4200)]);
    h.worker(&forward_env());
    h.notify(v3_pay("PD1", 4200)).await;
    let e = h.decided("PD1").await;
    assert_eq!(status(&e).0, "confirmed");
    let event_id: String = e.get("event_id");

    let rows =
        sqlx::query("SELECT endpoint, status, xmin::text AS xid FROM deliveries WHERE event_id = $1 ORDER BY endpoint")
            .bind(&event_id)
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    let endpoints: Vec<String> = rows.iter().map(|r| r.get("endpoint")).collect();
    assert_eq!(endpoints, ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]);
    assert!(rows.iter().all(|r| r.get::<String, _>("status") == "pending"));
    let event_xid: String = sqlx::query_scalar("SELECT xmin::text FROM payment_events WHERE event_id = $1")
        .bind(&event_id)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    for r in &rows {
        assert_eq!(r.get::<String, _>("xid"), event_xid, "written by the transaction that confirmed");
    }
    let n = tokio::time::timeout(Duration::from_secs(2), listener.recv()).await.expect("notified").unwrap();
    assert_eq!(n.payload(), event_id);
}

// ---------------------------------------------------------------- replicas and crashes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_query_each_event_once_and_decide_once() {
    let h = Harness::new().await;
    let ids: Vec<String> = (0..12).map(|i| format!("PRACE{i}")).collect();
    for id in &ids {
        // Slow answers keep both workers busy at once.
        h.fake.script(id, [Reply::Delay(Duration::from_millis(150), Box::new(v3_ok(id, 300)))]);
        h.notify(v3_pay(id, 300)).await;
    }
    h.worker(&[("CONFIRM_CONCURRENCY", "4")]);
    h.worker(&[("CONFIRM_CONCURRENCY", "4")]);
    for id in &ids {
        let e = h.decided(id).await;
        assert_eq!(status(&e).0, "confirmed", "{id}");
        assert_eq!(e.get::<i32, _>("confirm_attempts"), 1, "{id} claimed once");
    }
    for id in &ids {
        assert_eq!(h.fake.requests_for(id), 1, "{id} queried once");
    }
}

#[tokio::test]
async fn a_late_decision_from_an_expired_lease_is_discarded() {
    let h = Harness::new().await;
    h.notify(v3_pay("PLL", 100)).await;
    let lease = Duration::from_secs(30);
    let first = queue::claim_due(&h.db.pool, 10, lease, "worker-a").await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(queue::claim_due(&h.db.pool, 10, lease, "worker-b").await.unwrap().is_empty(), "leased: not claimable");
    // Worker A stalls past its lease; B claims the event and rejects it.
    sqlx::query("UPDATE payment_events SET lease_until = now() - interval '1 second'")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let second = queue::claim_due(&h.db.pool, 10, lease, "worker-b").await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].confirm_attempts, 2);
    let give_up = Duration::from_secs(86_400);
    let b =
        queue::apply(&h.db.pool, &second[0].event.event_id, "worker-b", &Verdict::Rejected("B".into()), give_up, &[])
            .await
            .unwrap();
    assert_eq!(b, Applied::Rejected);
    // A wakes up with a (stale) confirmation: it must not overwrite B's decision.
    let a = queue::apply(
        &h.db.pool,
        &first[0].event.event_id,
        "worker-a",
        &Verdict::Confirmed,
        give_up,
        &["http://x/".into()],
    )
    .await
    .unwrap();
    assert_eq!(a, Applied::LeaseLost);
    assert_eq!(status(&event(&h.db.pool, "PLL").await), ("rejected".into(), Some("B".into())));
    assert_eq!(count(&h.db.pool, "deliveries").await, 0);
}

#[tokio::test]
async fn a_worker_killed_mid_check_leaves_the_event_to_another_after_its_lease() {
    let h = Harness::new().await;
    h.fake.script("PKILL", [Reply::Delay(Duration::from_secs(30), Box::new(v3_ok("PKILL", 100))), v3_ok("PKILL", 100)]);
    let doomed = h.worker(&[]);
    h.notify(v3_pay("PKILL", 100)).await;
    let fake = h.fake.clone();
    wait_until("the doomed worker's query", Duration::from_secs(5), || fake.requests_for("PKILL") == 1).await;
    doomed.abort();
    let killed_at = Instant::now();
    let _ = doomed.await;

    h.worker(&[]);
    let e = h.decided("PKILL").await;
    let waited = killed_at.elapsed();
    assert_eq!(status(&e), ("confirmed".into(), None));
    assert_eq!(e.get::<i32, _>("confirm_attempts"), 2);
    assert_eq!(h.fake.requests_for("PKILL"), 2);
    // FAST lease is 2 s; the claim happened just before the kill.
    assert!(waited >= Duration::from_millis(1500), "picked up only after the lease expired ({waited:?})");
}

// ---------------------------------------------------------------- promptness

#[tokio::test]
async fn a_notified_event_is_confirmed_within_two_seconds() {
    let h = Harness::new().await;
    h.fake.script("PFAST", [v3_ok("PFAST", 100)]);
    // A 60 s poll: only LISTEN/NOTIFY can make this prompt.
    h.worker(&[("CONFIRM_POLL_INTERVAL_MS", "60000")]);
    // Wait until the worker is listening (its connection's last statement is the LISTEN).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
        if listening > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "worker never listened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let its start-up sweep finish, so it is asleep on its 60 s poll when the event arrives
    // (without this, the sweep itself could pick the event up and the test would prove nothing).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    h.notify(v3_pay("PFAST", 100)).await;
    let e = wait_decided(&h.db.pool, "PFAST", Duration::from_secs(2)).await;
    let took = started.elapsed();
    assert_eq!(status(&e).0, "confirmed");
    println!("notification → confirmed in {} ms", took.as_millis());
    assert!(took < Duration::from_secs(2));
}

#[tokio::test]
async fn the_worker_stops_on_shutdown_even_with_a_query_hanging() {
    let h = Harness::new().await;
    h.fake.script("PHANG", [Reply::Delay(Duration::from_secs(60), Box::new(v3_ok("PHANG", 100)))]);
    let stop = CancellationToken::new();
    let config = h.config(&[("CONFIRM_LEASE_SECS", "120"), ("IOTPAY_QUERY_TIMEOUT_MS", "90000")]);
    let worker = tokio::spawn(service::confirmer(h.db.pool.clone(), &config).unwrap().run(stop.clone()));
    h.notify(v3_pay("PHANG", 100)).await;
    let fake = h.fake.clone();
    wait_until("the query", Duration::from_secs(5), || fake.requests_for("PHANG") == 1).await;
    let asked = Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(6), worker).await.expect("stopped within the grace").unwrap();
    assert!(asked.elapsed() < Duration::from_secs(6));
    // Nothing was decided: the event waits for the next worker once its lease expires.
    assert_eq!(status(&event(&h.db.pool, "PHANG").await), ("pending".into(), None));
}

// ---------------------------------------------------------------- throughput

/// A busy worker refills every slot freed since it last looked in one claim. It used to count
/// finished-but-unjoined checks as busy, claim one event per transaction, and so be bound by the
/// claim's round trip whatever `CONFIRM_CONCURRENCY` said (found by tests/faults.rs: about 130
/// checks/s with 4, 32 or 64 slots alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_refills_freed_slots_in_one_claim() {
    let h = Harness::new().await;
    let ids: Vec<String> = (0..200).map(|i| format!("PREFILL{i}")).collect();
    for id in &ids {
        h.fake.script(id, [v3_ok(id, 300)]);
        h.notify(v3_pay(id, 300)).await;
    }
    h.worker(&[("CONFIRM_CONCURRENCY", "16")]);
    for id in &ids {
        let e = h.decided(id).await;
        assert_eq!(status(&e).0, "confirmed", "{id}");
        assert_eq!(e.get::<i32, _>("confirm_attempts"), 1, "{id} checked once");
    }
    // `last_checked_at` is the claiming transaction's now(): one value per claim. Refilled one
    // slot at a time, the 200 events take 1 + 184 claims; refilled with every slot freed during
    // the previous claim's round trip, far fewer.
    let claims: i64 = sqlx::query_scalar("SELECT count(DISTINCT last_checked_at) FROM payment_events")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    eprintln!("{claims} claims for 200 events");
    assert!(claims <= 100, "{claims} claims for 200 events");
}

/// A query slot is given back as soon as IOTPay answers, before the decision commits, yet no
/// more than `CONFIRM_CONCURRENCY` queries are ever in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_in_flight_never_exceed_the_concurrency() {
    let h = Harness::new().await;
    let ids: Vec<String> = (0..24).map(|i| format!("SLOW{i}")).collect();
    for id in &ids {
        h.fake.script(id, [Reply::Delay(Duration::from_millis(60), Box::new(v3_ok(id, 300)))]);
        h.notify(v3_pay(id, 300)).await;
    }
    h.worker(&[("CONFIRM_CONCURRENCY", "3")]);
    for id in &ids {
        assert_eq!(status(&h.decided(id).await).0, "confirmed", "{id}");
    }
    let most = h.fake.state.lock().unwrap().max_in_flight;
    assert_eq!(most, 3, "queries in flight at most: {most}");
}

/// Decisions finishing together are recorded in one statement; each still applies only under its
/// own lease, and only the confirmed ones are enqueued and announced.
#[tokio::test]
async fn a_batch_of_decisions_applies_each_under_its_own_lease() {
    let h = Harness::new().await;
    for id in ["B1", "B2", "B3", "B4", "B5"] {
        h.notify(v3_pay(id, 100)).await;
    }
    let lease = Duration::from_secs(30);
    let claimed = queue::claim_due(&h.db.pool, 10, lease, "tok").await.unwrap();
    assert_eq!(claimed.len(), 5);
    let id_of = |pay_order_id: &str| {
        claimed.iter().find(|c| c.event.pay_order_id.as_str() == pay_order_id).unwrap().event.event_id.clone()
    };
    let mut listener = sqlx::postgres::PgListener::connect_with(&h.db.pool).await.unwrap();
    listener.listen(queue::CONFIRMED_CHANNEL).await.unwrap();

    let decided = |pay_order_id: &str, token: &str, verdict: Verdict| Decided {
        event_id: id_of(pay_order_id),
        token: token.into(),
        verdict,
        answer: OrderAnswer::Unknown,
    };
    let retry = Verdict::Retry {
        // IOTPay's message is quoted; Postgres text cannot hold U+0000, so it is dropped.
        reason: "IOTPay says: busy\u{0}now".into(),
        delay: Duration::from_secs(60),
        give_up_reason: "gave up".into(),
    };
    let batch = vec![
        decided("B1", "tok", Verdict::Confirmed),
        decided("B2", "tok", Verdict::Rejected("amount differs".into())),
        decided("B3", "tok", retry),
        decided("B4", "someone-else", Verdict::Confirmed),
        decided("B5", "tok", Verdict::Confirmed),
    ];
    let urls = vec!["http://a/".to_owned(), "http://b/".to_owned()];
    let applied = queue::apply_batch(&h.db.pool, &batch, Duration::from_secs(86_400), &urls).await.unwrap();
    assert_eq!(
        applied,
        vec![
            Applied::Confirmed { deliveries: 2 },
            Applied::Rejected,
            Applied::Rescheduled,
            Applied::LeaseLost,
            Applied::Confirmed { deliveries: 2 },
        ]
    );
    assert_eq!(status(&event(&h.db.pool, "B1").await), ("confirmed".into(), None));
    assert_eq!(status(&event(&h.db.pool, "B2").await), ("rejected".into(), Some("amount differs".into())));
    let b3 = event(&h.db.pool, "B3").await;
    assert_eq!(status(&b3), ("pending".into(), None));
    assert_eq!(b3.get::<Option<String>, _>("last_check_error").as_deref(), Some("IOTPay says: busynow"));
    assert_eq!(b3.get::<Option<String>, _>("leased_by"), None, "the lease is released for the retry");
    let b4 = event(&h.db.pool, "B4").await;
    assert_eq!(status(&b4), ("pending".into(), None), "a decision without the lease changes nothing");
    assert_eq!(b4.get::<Option<String>, _>("leased_by").as_deref(), Some("tok"));
    assert_eq!(deliveries_of(&h.db.pool, "B1").await, 2);
    assert_eq!(deliveries_of(&h.db.pool, "B5").await, 2);
    assert_eq!(count(&h.db.pool, "deliveries").await, 4, "only confirmed events are enqueued");

    let mut announced = Vec::new();
    for _ in 0..2 {
        let n = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await.unwrap().unwrap();
        announced.push(n.payload().to_owned());
    }
    announced.sort();
    let mut expected = vec![id_of("B1"), id_of("B5")];
    expected.sort();
    assert_eq!(announced, expected, "one announcement per confirmed event");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.recv()).await.is_err(),
        "nothing else is announced"
    );
}
