//! `iotpay-notify prune`: retention of notifications and delivery attempts, never touching the
//! history of an event that is not final.

mod common;

use std::process::{Command, Output};

use common::*;
use iotpay_devtools::testing::TestDatabase;
use serde_json::Value;
use sqlx::PgPool;

async fn prune(db: &TestDatabase, args: &[&str]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iotpay-notify"));
    cmd.env_clear().current_dir(std::env::temp_dir()).env("DATABASE_URL", db.url()).arg("prune").args(args);
    let out: Output = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

async fn event_id(pool: &PgPool, pay_order_id: &str) -> String {
    sqlx::query_scalar("SELECT event_id FROM payment_events WHERE pay_order_id = $1")
        .bind(pay_order_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A delivery of the event with `attempts` attempt rows.
async fn delivery(pool: &PgPool, event_id: &str, status: &str, attempts: i32) {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO deliveries (event_id, endpoint, status, attempts) VALUES ($1, 'http://erp/hook', $2, $3) RETURNING id",
    )
    .bind(event_id)
    .bind(status)
    .bind(attempts)
    .fetch_one(pool)
    .await
    .unwrap();
    for n in 1..=attempts {
        sqlx::query(
            "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, http_status, worker)
             VALUES ($1, $2, now(), 5, 503, 'test')",
        )
        .bind(id)
        .bind(n)
        .execute(pool)
        .await
        .unwrap();
    }
}

async fn counts(pool: &PgPool, pay_order_id: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM notifications n WHERE n.event_id = e.event_id),
                (SELECT count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
                  WHERE d.event_id = e.event_id)
           FROM payment_events e WHERE e.pay_order_id = $1",
    )
    .bind(pay_order_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn prune_deletes_old_history_of_final_events_only() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let pool = &db.pool;
    // Each event notified twice (IOTPay re-sends).
    for id in ["PDONE", "PREJ", "PPEND", "PUNC", "PDEAD", "PWAIT"] {
        for _ in 0..2 {
            assert_eq!(app.post_json(&signed(v3_pay(id, 1500), KEY)).await.0, 200);
        }
    }
    for (id, status) in [
        ("PDONE", "confirmed"),
        ("PREJ", "rejected"),
        ("PUNC", "unconfirmed"),
        ("PDEAD", "confirmed"),
        ("PWAIT", "confirmed"),
    ] {
        sqlx::query("UPDATE payment_events SET status = $2 WHERE pay_order_id = $1")
            .bind(id)
            .bind(status)
            .execute(pool)
            .await
            .unwrap();
    }
    delivery(pool, &event_id(pool, "PDONE").await, "delivered", 3).await;
    delivery(pool, &event_id(pool, "PDEAD").await, "dead", 2).await; // a redrive may still come
    delivery(pool, &event_id(pool, "PWAIT").await, "pending", 1).await; // still being retried
                                                                        // Everything so far is 100 days old; then one fresh repeat of the delivered payment.
    sqlx::query("UPDATE notifications SET received_at = now() - interval '100 days'").execute(pool).await.unwrap();
    sqlx::query("UPDATE delivery_attempts SET started_at = now() - interval '100 days'").execute(pool).await.unwrap();
    assert_eq!(app.post_json(&signed(v3_pay("PDONE", 1500), KEY)).await.0, 200);

    let untouched = [("PPEND", (2, 0)), ("PUNC", (2, 0)), ("PDEAD", (2, 2)), ("PWAIT", (2, 1))];
    let before_events: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_events").fetch_one(pool).await.unwrap();

    let dry = prune(&db, &["--older-than", "90d", "--dry-run", "--json"]).await;
    assert_eq!((dry["notifications"].as_i64(), dry["delivery_attempts"].as_i64()), (Some(4), Some(3)), "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(counts(pool, "PDONE").await, (3, 3), "a dry run deletes nothing");

    // Younger than the age: nothing goes.
    let none = prune(&db, &["--older-than", "101d", "--json"]).await;
    assert_eq!((none["notifications"].as_i64(), none["delivery_attempts"].as_i64()), (Some(0), Some(0)), "{none}");

    let done = prune(&db, &["--older-than", "90d", "--json"]).await;
    assert_eq!((done["notifications"].as_i64(), done["delivery_attempts"].as_i64()), (Some(4), Some(3)), "{done}");
    assert_eq!(counts(pool, "PDONE").await, (1, 0), "the fresh repeat stays");
    assert_eq!(counts(pool, "PREJ").await, (0, 0));
    for (id, expected) in untouched {
        assert_eq!(counts(pool, id).await, expected, "{id} is not final: its history stays");
    }
    let after_events: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_events").fetch_one(pool).await.unwrap();
    assert_eq!(after_events, before_events, "events themselves are never pruned");
    let deliveries: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries").fetch_one(pool).await.unwrap();
    assert_eq!(deliveries, 3);

    let again = prune(&db, &["--older-than", "90d", "--json"]).await;
    assert_eq!((again["notifications"].as_i64(), again["delivery_attempts"].as_i64()), (Some(0), Some(0)));
}

#[tokio::test]
async fn prune_refuses_a_bad_age() {
    let db = TestDatabase::create().await;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iotpay-notify"));
    cmd.env_clear().env("DATABASE_URL", db.url()).args(["prune", "--older-than", "ninety days"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad flag value, like every command-line error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--older-than"));
}
