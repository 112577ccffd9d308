//! GET /api/v1/stats, black-box: counts, per-endpoint backlog, and the per-minute history.

mod adminkit;
mod common;
mod forwarding;

use adminkit::*;
use iotpay_devtools::testing::TestDatabase;
use serde_json::{json, Value};

#[tokio::test]
async fn stats_count_statuses_endpoints_and_the_last_hour() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let ids = forwarding::insert_events(&db.pool, "PS", 4).await;
    let endpoints = vec!["http://127.0.0.1:9/a".to_owned()];
    forwarding::confirm(&db.pool, &ids[..3], &endpoints).await;
    sqlx::query("UPDATE deliveries SET status = 'dead', dead_at = now() WHERE event_id = $1")
        .bind(&ids[0])
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE deliveries SET status = 'delivered', delivered_at = now() WHERE event_id = $1")
        .bind(&ids[1])
        .execute(&db.pool)
        .await
        .unwrap();
    let (status, s) = json(admin.get("/api/v1/stats")).await;
    assert_eq!(status, 200, "{s}");
    validate(&s, "Stats");
    assert_eq!(s["events"], json!({"pending": 1, "confirmed": 3, "rejected": 0, "unconfirmed": 0}));
    assert_eq!(s["endpoints"][0]["endpoint"], endpoints[0].as_str());
    assert_eq!((s["endpoints"][0]["pending"].as_i64(), s["endpoints"][0]["dead"].as_i64()), (Some(1), Some(1)));
    let minutes = s["per_minute"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    let now = &minutes[59];
    assert_eq!(
        (now["received"].as_i64(), now["confirmed"].as_i64(), now["delivered"].as_i64()),
        (Some(4), Some(3), Some(1))
    );
    assert_eq!((now["pending_events"].as_i64(), now["pending_deliveries"].as_i64()), (Some(1), Some(1)));
    assert_eq!(minutes[0]["received"], 0);
    assert_error(&json(admin.get("/api/v1/stats?window=2h")).await, 400, "bad_request", Some("window"));
}

#[tokio::test]
async fn the_backlog_history_leaves_out_time_spent_dead_unconfirmed_or_dropped() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let ids = forwarding::insert_events(&db.pool, "PH", 3).await;
    let endpoints = vec!["http://127.0.0.1:9/a".to_owned()];
    forwarding::confirm(&db.pool, &[ids[0].clone(), ids[2].clone()], &endpoints).await;
    // 40 minutes ago: all three stored, two confirmed with a delivery each. 30 minutes ago: one
    // delivery died, the other was dropped, the third event became unconfirmed.
    sqlx::query(
        "UPDATE payment_events SET created_at = now() - interval '40 minutes',
                confirmed_at = CASE WHEN status = 'confirmed' THEN now() - interval '40 minutes' END,
                decided_at = now() - interval '40 minutes'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE payment_events SET status = 'unconfirmed', decided_at = now() - interval '30 minutes' WHERE event_id = $1",
    )
    .bind(&ids[1])
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE deliveries SET created_at = now() - interval '40 minutes',
                status = CASE WHEN event_id = $1 THEN 'dead' ELSE 'dropped' END,
                dead_at = CASE WHEN event_id = $1 THEN now() - interval '30 minutes' END,
                updated_at = now() - interval '30 minutes'",
    )
    .bind(&ids[0])
    .execute(&db.pool)
    .await
    .unwrap();
    let backlog = |s: &Value, minutes_ago: usize| {
        let m = &s["per_minute"][59 - minutes_ago];
        (m["pending_events"].as_i64().unwrap(), m["pending_deliveries"].as_i64().unwrap())
    };
    let (_, s) = json(admin.get("/api/v1/stats")).await;
    assert_eq!(backlog(&s, 20), (0, 0), "20 minutes ago nothing was pending");
    assert_eq!(backlog(&s, 0), (0, 0));

    // An operator redrives the dead delivery and re-checks the unconfirmed event: both are
    // pending from now on, and still were not 20 minutes ago.
    let (status, out) = json(admin.post("/api/v1/deliveries/redrive", &json!({"all": true}))).await;
    assert_eq!((status, out["redriven"].as_array().unwrap().len()), (200, 1), "{out}");
    let (status, _) = json(admin.post(&format!("/api/v1/events/{}/recheck", ids[1]), &json!({}))).await;
    assert_eq!(status, 200);
    let (_, s) = json(admin.get("/api/v1/stats")).await;
    assert_eq!(backlog(&s, 20), (0, 0), "the dead and unconfirmed time is not drawn as backlog");
    assert_eq!(backlog(&s, 0), (1, 1), "pending again now");
}
