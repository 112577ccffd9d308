//! `store::listen::Wakeups`, the one LISTEN-with-reconnect both workers wait on: a NOTIFY wakes
//! it, and so does getting its connection back after the database dropped it (announcements made
//! meanwhile are lost, so the worker must sweep).

use std::time::{Duration, Instant};

use iotpay_devtools::testing::TestDatabase;
use iotpay_notify::store::listen::Wakeups;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const CHANNEL: &str = "iotpay_test_wakeups";
const PROMPT: Duration = Duration::from_secs(5);

/// The backend pid of the connection listening on [`CHANNEL`], once there is one other than `not`.
async fn listener_pid(pool: &PgPool, not: Option<i32>) -> i32 {
    let deadline = Instant::now() + PROMPT;
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid IS DISTINCT FROM $1",
        )
        .bind(not)
        .fetch_optional(pool)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(Instant::now() < deadline, "nobody listens on {CHANNEL}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn notify(pool: &PgPool) {
    sqlx::query(&format!("NOTIFY {CHANNEL}")).execute(pool).await.unwrap();
}

/// True when `wakeups` wakes within `within`.
async fn wakes(wakeups: &mut Wakeups, within: Duration) -> bool {
    tokio::time::timeout(within, wakeups.next()).await.is_ok()
}

#[tokio::test]
async fn a_notify_wakes_and_so_does_a_connection_won_back() {
    let db = TestDatabase::create().await;
    let shutdown = CancellationToken::new();
    let mut wakeups = Wakeups::listen(db.pool.clone(), CHANNEL, Duration::from_millis(100), shutdown.clone());

    assert!(wakes(&mut wakeups, PROMPT).await, "connecting wakes (a sweep for what came before)");
    let first = listener_pid(&db.pool, None).await;
    assert!(!wakes(&mut wakeups, Duration::from_millis(200)).await, "nothing announced, no wake-up");
    notify(&db.pool).await;
    assert!(wakes(&mut wakeups, PROMPT).await, "a NOTIFY wakes");

    // Three announcements before the worker looks again are one sweep, not three.
    for _ in 0..3 {
        notify(&db.pool).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(wakes(&mut wakeups, PROMPT).await);
    assert!(!wakes(&mut wakeups, Duration::from_millis(200)).await, "a burst is one wake-up");

    // The database drops the listening connection (a restart, a failover, an operator).
    let killed: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(first).fetch_one(&db.pool).await.unwrap();
    assert!(killed);
    assert!(wakes(&mut wakeups, PROMPT).await, "getting the connection back wakes: announcements may be lost");
    let second = listener_pid(&db.pool, Some(first)).await;
    assert_ne!(first, second);
    // Drain a wake-up the reconnection may have made after the one above.
    wakes(&mut wakeups, Duration::from_millis(200)).await;
    notify(&db.pool).await;
    assert!(wakes(&mut wakeups, PROMPT).await, "the new connection listens on the same channel");

    shutdown.cancel();
    assert!(!wakes(&mut wakeups, Duration::from_millis(300)).await, "after shutdown, never");
}
