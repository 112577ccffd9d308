//! The demo writes fake confirmed payments: it must never write them into a database someone
//! uses. It ignores `DATABASE_URL` (the local loop's `.env` sets one), and `--database-url`
//! refuses a database that holds any data.

mod common;

use std::process::{Command, Output};

use common::binary;
use iotpay_devtools::testing::TestDatabase;
use sqlx::PgPool;

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs")).await.unwrap()
}

/// Every table of the database with its row count, to compare before and after.
async fn snapshot(pool: &PgPool) -> Vec<(String, i64)> {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables
          WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut counts = Vec::new();
    for (table,) in tables {
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table}")).fetch_one(pool).await.unwrap();
        counts.push((table, n));
    }
    counts
}

/// A migrated database that someone uses: one row of theirs.
async fn used_database() -> TestDatabase {
    let db = TestDatabase::create().await;
    sqlx::query("CREATE TABLE customer_orders (id int PRIMARY KEY)").execute(&db.pool).await.unwrap();
    sqlx::query("INSERT INTO customer_orders VALUES (1)").execute(&db.pool).await.unwrap();
    db
}

#[tokio::test]
async fn demo_ignores_database_url_and_plays_on_its_own_cluster() {
    let db = used_database().await;
    let before = snapshot(&db.pool).await;
    let mut cmd = binary();
    cmd.arg("demo").env("DATABASE_URL", db.url());
    let out = run(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("throwaway PostgreSQL"), "{stdout}");
    assert_eq!(snapshot(&db.pool).await, before, "the demo wrote into DATABASE_URL's database");
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM payment_events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(events, 0);
}

#[tokio::test]
async fn demo_refuses_a_database_url_that_holds_data() {
    let db = used_database().await;
    let before = snapshot(&db.pool).await;
    let mut cmd = binary();
    cmd.args(["demo", "--database-url", &db.url()]);
    let out = run(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing") && stderr.contains("public.customer_orders"), "{stderr}");
    assert_eq!(snapshot(&db.pool).await, before, "the refused demo still wrote");

    // The service's own tables count too: one stored notification is enough to refuse.
    let db = TestDatabase::create().await;
    sqlx::query("DROP TABLE IF EXISTS customer_orders").execute(&db.pool).await.unwrap();
    let mut cmd = binary();
    cmd.args(["demo", "--database-url", &db.url()]);
    let empty = run(cmd).await;
    assert!(empty.status.success(), "an empty database is accepted: {}", String::from_utf8_lossy(&empty.stderr));
    let before = snapshot(&db.pool).await;
    let mut cmd = binary();
    cmd.args(["demo", "--database-url", &db.url()]);
    let again = run(cmd).await;
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "a second demo on the same database must refuse: {stderr}");
    assert!(stderr.contains("public.payment_events"), "{stderr}");
    assert_eq!(snapshot(&db.pool).await, before);
}
