//! The admin API's events, black-box: the event list, its filters and its pagination under
//! concurrent inserts, event detail, and re-check over the API and the CLI.

mod adminkit;
mod common;
mod forwarding;

use adminkit::*;
use common::*;
use iotpay_devtools::testing::TestDatabase;
use serde_json::{json, Value};

#[tokio::test]
async fn events_list_filters_and_refuses_bad_input_naming_the_field() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let ids = notify_payments(&admin, "PL", 3).await;
    sqlx::query("UPDATE payment_events SET status = 'rejected', status_reason = 'test' WHERE event_id = $1")
        .bind(&ids[1])
        .execute(&db.pool)
        .await
        .unwrap();

    let (status, page) = json(admin.get("/api/v1/events")).await;
    assert_eq!(status, 200, "{page}");
    let got: Vec<&str> = page["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(got, ids.iter().rev().map(String::as_str).collect::<Vec<_>>(), "newest first");
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(page["events"][0]["pay_order_id"], "PL0002");
    assert_eq!(page["events"][0]["amount"], 1002);

    let one = |q: String| {
        let admin = &admin;
        async move {
            let (s, p) = json(admin.get(&format!("/api/v1/events?{q}"))).await;
            assert_eq!(s, 200, "{q}: {p}");
            p["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["event_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(one("status=rejected".into()).await, vec![ids[1].clone()]);
    assert_eq!(one("status=pending&pay_order_id=PL0000".into()).await, vec![ids[0].clone()]);
    assert_eq!(one("mch_order_no=order-PL0002".into()).await, vec![ids[2].clone()]);
    assert_eq!(one(format!("id={}", ids[0])).await, vec![ids[0].clone()]);
    assert_eq!(one("id=order-PL0001".into()).await, vec![ids[1].clone()]);
    assert_eq!(one("id=PL0002".into()).await, vec![ids[2].clone()]);
    assert_eq!(one(format!("mch_id={MCH}&api_version=v3&event_type=payment.succeeded")).await.len(), 3);
    assert_eq!(one("mch_id=99999".into()).await.len(), 0);
    assert_eq!(one("created_since=2999-01-01T00:00:00Z".into()).await.len(), 0);
    assert_eq!(one("created_until=2000-01-01T00:00:00Z".into()).await.len(), 0);
    assert_eq!(one("created_since=2000-01-01T00:00:00%2B02:00&limit=500".into()).await.len(), 3);

    for (query, field) in [
        ("status=paid", "status"),
        ("api_version=v9", "api_version"),
        ("created_since=yesterday", "created_since"),
        ("created_until=2026-13-01T00:00:00Z", "created_until"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=bm90LWEtY3Vyc29y", "cursor"),
        ("statuz=pending", "statuz"),
        ("status=pending&status=confirmed", "status"),
        ("mch_id=", "mch_id"),
        ("pay_order_id=a%00b", "pay_order_id"),
        ("created_since=2026-02-01T00:00:00Z&created_until=2026-01-01T00:00:00Z", "created_until"),
    ] {
        let got = json(admin.get(&format!("/api/v1/events?{query}"))).await;
        assert_error(&got, 400, "bad_request", Some(field));
    }
    let long = "x".repeat(200);
    let got = json(admin.get(&format!("/api/v1/events?id={long}"))).await;
    assert_error(&got, 400, "bad_request", Some("id"));
}

#[tokio::test]
async fn pagination_under_concurrent_inserts_skips_and_repeats_nothing() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let before = forwarding::insert_events(&db.pool, "PG", 300).await;
    // Many rows share created_at (one INSERT statement): the id breaks the ties.
    let writer = {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            let mut added = Vec::new();
            for i in 0..40 {
                added.extend(forwarding::insert_events(&pool, &format!("NEW{i}-"), 5).await);
                tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            }
            added
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/events?limit=7&cursor={c}"),
            None => "/api/v1/events?limit=7".into(),
        };
        let (status, page) = json(admin.get(&path)).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 7);
        seen.extend(events.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let added = writer.await.unwrap();
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a row was returned twice");
    for id in &before {
        assert!(unique.contains(id), "{id} existed before the walk and was skipped");
    }
    for id in &seen {
        assert!(before.contains(id) || added.contains(id), "{id} is neither an old nor a new row");
    }
    eprintln!("{pages} pages, {} rows ({} inserted during the walk)", seen.len(), added.len());
}

#[tokio::test]
async fn event_detail_is_the_cli_document_with_checks_deliveries_and_attempts() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let rx = forwarding::Receiver::start().await;
    rx.default_reply("/erp", forwarding::Reply::Status(500));
    let endpoints = vec![rx.url("/ledger"), rx.url("/erp")];
    let ids = notify_payments(&admin, "PD", 1).await;
    decide_all(&db.pool, &endpoints, Some("query timed out")).await;
    decide_all(&db.pool, &endpoints, None).await;
    let worker = forwarding::start(&db.pool, &endpoints, forwarding::fast_settings(&[0, 5]), "host-a:1");
    forwarding::wait_until(std::time::Duration::from_secs(20), "1 delivered, 1 dead", || async {
        forwarding::deliveries_with(&db.pool, "dead").await == 1
            && forwarding::deliveries_with(&db.pool, "delivered").await == 1
    })
    .await;
    worker.stop().await;

    let (status, doc) = json(admin.get(&format!("/api/v1/events/{}", ids[0]))).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc, cli_show(&db, &ids[0]).await, "the API answers the document of events show --json");
    assert_eq!(doc["event"]["status"], "confirmed");
    assert_eq!(doc["notifications"].as_array().unwrap().len(), 1);
    let checks = doc["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{doc}");
    assert_eq!((checks[0]["attempt"].as_i64(), checks[0]["result"].as_str()), (Some(1), Some("retry")));
    assert_eq!(checks[0]["reason"], "query timed out");
    assert_eq!((checks[1]["attempt"].as_i64(), checks[1]["result"].as_str()), (Some(2), Some("confirmed")));
    let dead = doc["deliveries"].as_array().unwrap().iter().find(|d| d["status"] == "dead").unwrap();
    assert_eq!(dead["attempts_log"].as_array().unwrap().len(), 2);
    assert_eq!(dead["attempts_log"][0]["http_status"], 500);
    validate(&doc, "EventDetail");

    let unknown = format!("evt_{}", "0".repeat(32));
    assert_error(&json(admin.get(&format!("/api/v1/events/{unknown}"))).await, 404, "not_found", None);
    for bad in ["nope", "evt_ABC", "evt_%27%3B%20DROP%20TABLE"] {
        assert_error(&json(admin.get(&format!("/api/v1/events/{bad}"))).await, 400, "bad_request", Some("event_id"));
    }
    let got = json(admin.get(&format!("/api/v1/events/{}?verbose=1", ids[0]))).await;
    assert_error(&got, 400, "bad_request", Some("verbose"));
}

#[tokio::test]
async fn recheck_requeues_only_unconfirmed_events() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let ids = forwarding::insert_events(&db.pool, "PC", 2).await;
    sqlx::query(
        "UPDATE payment_events SET status = 'unconfirmed', status_reason = 'no conclusive answer', decided_at = now(),
                next_check_at = now() + interval '1 day' WHERE event_id = $1",
    )
    .bind(&ids[0])
    .execute(&db.pool)
    .await
    .unwrap();
    let path = format!("/api/v1/events/{}/recheck", ids[0]);
    let got = json(admin.post(&path, &json!({"now": true}))).await;
    assert_error(&got, 400, "bad_request", Some("now"));
    let got =
        json(admin.client.post(admin.url(&path)).bearer_auth(TOKEN).header("content-type", "text/plain").body("x"))
            .await;
    assert_error(&got, 415, "unsupported_media_type", None);
    let status: String = sqlx::query_scalar("SELECT status FROM payment_events WHERE event_id = $1")
        .bind(&ids[0])
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "unconfirmed", "nothing changed on bad input");

    let (code, out) = json(admin.client.post(admin.url(&path)).bearer_auth(TOKEN)).await;
    assert_eq!(code, 200, "{out}");
    validate(&out, "RecheckResult");
    let (status, reason, due): (String, Option<String>, bool) =
        sqlx::query_as("SELECT status, status_reason, next_check_at <= now() FROM payment_events WHERE event_id = $1")
            .bind(&ids[0])
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), reason, due), ("pending", None, true));

    let pending = json(admin.post(&format!("/api/v1/events/{}/recheck", ids[1]), &json!({}))).await;
    assert_error(&pending, 409, "conflict", None);
    let unknown = format!("/api/v1/events/evt_{}/recheck", "1".repeat(32));
    assert_error(&json(admin.post(&unknown, &json!({}))).await, 404, "not_found", None);
    assert_error(&json(admin.post("/api/v1/events/x/recheck", &json!({}))).await, 400, "bad_request", Some("event_id"));
}

/// Runs the real binary with only DATABASE_URL set.
async fn cli(db: &TestDatabase, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_iotpay-notify"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db.url())
        .current_dir(std::env::temp_dir())
        .args(args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

#[tokio::test]
async fn cli_recheck_and_redrive_pending_match_the_api() {
    let db = TestDatabase::create().await;
    let ids = forwarding::insert_events(&db.pool, "PK", 2).await;
    sqlx::query("UPDATE payment_events SET status = 'unconfirmed', decided_at = now() WHERE event_id = $1")
        .bind(&ids[0])
        .execute(&db.pool)
        .await
        .unwrap();
    let out = cli(&db, &["events", "recheck", &ids[0]]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unconfirmed -> pending"));
    let again = cli(&db, &["events", "recheck", &ids[0]]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is pending: only unconfirmed events are re-checked"));
    let unknown = cli(&db, &["events", "recheck", "evt_unknown"]).await;
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no event evt_unknown"));

    let endpoint = "http://127.0.0.1:9/x".to_owned();
    sqlx::query("UPDATE payment_events SET status = 'pending' WHERE event_id = $1")
        .bind(&ids[1])
        .execute(&db.pool)
        .await
        .unwrap();
    forwarding::confirm(&db.pool, &ids[1..], std::slice::from_ref(&endpoint)).await;
    sqlx::query("UPDATE deliveries SET attempts = 2, next_attempt_at = now() + interval '1 hour'")
        .execute(&db.pool)
        .await
        .unwrap();
    let dead_only = cli(&db, &["deliveries", "redrive", "--all", "--json"]).await;
    let v: Value = serde_json::from_slice(&dead_only.stdout).unwrap();
    assert_eq!(v["redriven"], json!([]), "without --pending a pending delivery is not touched");
    let out = cli(&db, &["deliveries", "redrive", "--event", &ids[1], "--pending", "--json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["redriven"][0]["previous_status"], "pending");
    let (attempts, due): (i32, bool) =
        sqlx::query_as("SELECT attempts, next_attempt_at <= now() FROM deliveries").fetch_one(&db.pool).await.unwrap();
    assert_eq!((attempts, due), (2, true), "due now, schedule position kept");
}

#[tokio::test]
async fn pagination_with_inserts_tied_on_created_at_skips_and_repeats_nothing() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    // Every row shares one created_at: only the id orders them.
    let before = forwarding::insert_events(&db.pool, "PT", 30).await;
    let tied: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT created_at FROM payment_events LIMIT 1").fetch_one(&db.pool).await.unwrap();
    let distinct: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT created_at) FROM payment_events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(distinct, 1);
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut added = Vec::new();
    for page in 0.. {
        let path = match &cursor {
            Some(c) => format!("/api/v1/events?limit=4&cursor={c}"),
            None => "/api/v1/events?limit=4".into(),
        };
        let (status, body) = json(admin.get(&path)).await;
        assert_eq!(status, 200, "{body}");
        seen.extend(body["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
        if page == 2 {
            // Mid-walk: rows with the very same created_at, ids on both sides of the cursor.
            let ids = forwarding::insert_events(&db.pool, "PTNEW", 12).await;
            sqlx::query("UPDATE payment_events SET created_at = $1 WHERE event_id = ANY($2)")
                .bind(tied)
                .bind(&ids)
                .execute(&db.pool)
                .await
                .unwrap();
            let last = seen.last().unwrap();
            assert!(ids.iter().any(|id| id > last) && ids.iter().any(|id| id < last), "inserts on both sides");
            added = ids;
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a row was returned twice: {seen:?}");
    for id in &before {
        assert!(unique.contains(id), "{id} existed before the walk and was skipped");
    }
    for id in &seen {
        assert!(before.contains(id) || added.contains(id), "{id} is neither an old nor a new row");
    }
    // The new rows sorting after the cursor (smaller ids, newest first) are found; the others
    // were passed already.
    let last_before_insert = &seen[11];
    for id in &added {
        assert_eq!(unique.contains(id), id < last_before_insert, "{id}");
    }
}
