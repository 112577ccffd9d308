//! The documented way to read confirmed `payment_events` incrementally (README, "Reading
//! payment_events incrementally") never skips a row committed out of order, nor shows one twice.

mod forwarding;

use std::collections::HashMap;
use std::time::Duration;

use forwarding::insert_events;
use iotpay_devtools::testing::TestDatabase;
use rand::Rng;
use sqlx::postgres::PgListener;
use sqlx::PgPool;

/// The consumer's query, exactly as documented in the README.
const PAGE: &str = "
    SELECT confirmed_txid::text AS txid, event_id
      FROM payment_events
     WHERE confirmed_txid IS NOT NULL
       AND (confirmed_txid, event_id) > ($1::xid8, $2)
       AND confirmed_txid < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY confirmed_txid, event_id
     LIMIT $3";

/// A consumer's cursor: the last (confirmed_txid, event_id) it processed.
#[derive(Debug, Clone)]
struct Cursor {
    txid: String,
    event_id: String,
}

impl Cursor {
    fn start() -> Self {
        Cursor { txid: "0".into(), event_id: String::new() }
    }
}

/// Reads every page available now; returns the event ids in order and advances the cursor.
async fn read(pool: &PgPool, cursor: &mut Cursor) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let rows: Vec<(String, String)> =
            sqlx::query_as(PAGE).bind(&cursor.txid).bind(&cursor.event_id).bind(50i64).fetch_all(pool).await.unwrap();
        let Some(last) = rows.last() else { return out };
        *cursor = Cursor { txid: last.0.clone(), event_id: last.1.clone() };
        out.extend(rows.into_iter().map(|r| r.1));
    }
}

/// Reads until `n` ids arrived (other transactions on the server may hold xmin back a moment).
async fn read_n(pool: &PgPool, cursor: &mut Cursor, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n && std::time::Instant::now() < deadline {
        out.extend(read(pool, cursor).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out
}

async fn confirm_in(tx: &mut sqlx::PgConnection, event_id: &str) {
    let n = sqlx::query("UPDATE payment_events SET status = 'confirmed', confirmed_at = now() WHERE event_id = $1")
        .bind(event_id)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_transaction_that_commits_late_is_not_skipped() {
    let db = TestDatabase::create().await;
    let ids = insert_events(&db.pool, "LATE", 2).await;
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen("payment_events_confirmed").await.unwrap();
    let mut cursor = Cursor::start();

    // A confirms first (smaller txid, earlier confirmed_at) but commits after B.
    let mut a = db.pool.begin().await.unwrap();
    confirm_in(&mut a, &ids[0]).await;
    let mut b = db.pool.begin().await.unwrap();
    confirm_in(&mut b, &ids[1]).await;
    sqlx::query("SELECT pg_notify('payment_events_confirmed', $1)").bind(&ids[1]).execute(&mut *b).await.unwrap();
    b.commit().await.unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await.unwrap().unwrap();
    assert_eq!(woke.payload(), ids[1], "consumers are woken on payment_events_confirmed");

    // A naive reader that orders by confirmation time now moves its cursor past A's row.
    let naive: Vec<(chrono::DateTime<chrono::Utc>, String)> = sqlx::query_as(
        "SELECT confirmed_at, event_id FROM payment_events WHERE status = 'confirmed' ORDER BY confirmed_at, event_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(naive.len(), 1);
    let naive_cursor = naive[0].0;

    // The documented reader waits: B's row is held back while A, older, is still open.
    assert!(read(&db.pool, &mut cursor).await.is_empty(), "nothing is final while an older writer is open");
    a.commit().await.unwrap();
    assert_eq!(read_n(&db.pool, &mut cursor, 2).await, vec![ids[0].clone(), ids[1].clone()]);
    assert!(read(&db.pool, &mut cursor).await.is_empty(), "nothing is read twice");

    let after_naive: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payment_events WHERE status = 'confirmed' AND confirmed_at > $1")
            .bind(naive_cursor)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(after_naive, 0, "the naive reader would never see A's row: this is what the pattern prevents");
}

#[tokio::test]
async fn concurrent_writers_committing_out_of_order_are_each_read_exactly_once() {
    const WRITERS: usize = 6;
    const PER_WRITER: usize = 40;
    let db = TestDatabase::create().await;
    let ids = insert_events(&db.pool, "CONC", (WRITERS * PER_WRITER) as i64).await;
    let writers_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(WRITERS as u32 + 2)
        .connect_with(db.options.clone())
        .await
        .unwrap();

    let mut writers = tokio::task::JoinSet::new();
    let mut rolled_back_ids = Vec::new();
    for (w, chunk) in ids.chunks(PER_WRITER).enumerate() {
        let chunk = chunk.to_vec();
        // Every fifth confirmation of a writer is rolled back: a reader must never see it.
        rolled_back_ids.extend(chunk.iter().skip(4).step_by(5).cloned());
        let pool = writers_pool.clone();
        writers.spawn(async move {
            for (i, id) in chunk.iter().enumerate() {
                let hold = Duration::from_millis(rand::rng().random_range(0..25));
                let mut tx = pool.begin().await.unwrap();
                // Take a txid, then hold the transaction open a random while, so commits
                // interleave out of txid order across writers.
                confirm_in(&mut tx, id).await;
                tokio::time::sleep(hold).await;
                if i % 5 == 4 {
                    tx.rollback().await.unwrap();
                } else {
                    sqlx::query("SELECT pg_notify('payment_events_confirmed', $1)")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            }
            w
        });
    }

    let mut cursor = Cursor::start();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut polls = 0;
    let expected_count = WRITERS * PER_WRITER * 4 / 5;
    // xmin is server-wide: a transaction of another database on the same server can delay (never
    // skip) rows, so after the writers finish the reader polls until it has caught up.
    let mut deadline = None;
    loop {
        for id in read(&db.pool, &mut cursor).await {
            *seen.entry(id).or_default() += 1;
        }
        polls += 1;
        if writers.is_empty() {
            let until = *deadline.get_or_insert_with(|| std::time::Instant::now() + Duration::from_secs(30));
            if seen.len() >= expected_count || std::time::Instant::now() > until {
                // One more read: nothing further may appear.
                for id in read(&db.pool, &mut cursor).await {
                    *seen.entry(id).or_default() += 1;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        tokio::select! {
            done = writers.join_next() => { done.unwrap().unwrap(); }
            _ = tokio::time::sleep(Duration::from_millis(3)) => {}
        }
    }

    let expected: Vec<&String> = ids.iter().filter(|id| !rolled_back_ids.contains(id)).collect();
    assert_eq!(expected.len(), expected_count);
    for id in &expected {
        assert_eq!(seen.get(*id).copied(), Some(1), "{id} must be read exactly once");
    }
    for id in &rolled_back_ids {
        assert!(!seen.contains_key(id), "rolled-back confirmation {id} was read");
    }
    assert_eq!(seen.len(), expected.len());
    eprintln!("{} confirmations by {WRITERS} writers read exactly once over {polls} polls", expected.len());
}

#[tokio::test]
async fn confirmed_txid_is_set_by_any_writer_and_kept_on_later_updates() {
    let db = TestDatabase::create().await;
    let ids = insert_events(&db.pool, "TRIG", 1).await;
    let txid = |pool: PgPool, id: String| async move {
        sqlx::query_scalar::<_, Option<String>>("SELECT confirmed_txid::text FROM payment_events WHERE event_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(txid(db.pool.clone(), ids[0].clone()).await, None, "pending rows have none");
    sqlx::query("UPDATE payment_events SET status = 'confirmed' WHERE event_id = $1")
        .bind(&ids[0])
        .execute(&db.pool)
        .await
        .unwrap();
    let first = txid(db.pool.clone(), ids[0].clone()).await.expect("set on confirmation");
    // A repeat notification touches the row again: the cursor position must not move.
    sqlx::query("UPDATE payment_events SET notification_count = notification_count + 1 WHERE event_id = $1")
        .bind(&ids[0])
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(txid(db.pool.clone(), ids[0].clone()).await, Some(first));
}
