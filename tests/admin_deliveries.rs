//! The admin API's redrive, black-box: selectors and bad input, endpoint URLs that carry
//! passwords (never shown, accepted back masked), and the redrive round of attempts.

mod adminkit;
mod common;
mod forwarding;

use adminkit::*;
use iotpay_devtools::testing::TestDatabase;
use serde_json::{json, Value};

async fn delivery_states(pool: &sqlx::PgPool) -> Vec<(i64, String, i32, i32)> {
    sqlx::query_as("SELECT id, status, attempts, redrive_count FROM deliveries ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn redrive_takes_exactly_one_selector_and_changes_nothing_on_bad_input() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let ids = forwarding::insert_events(&db.pool, "PR", 3).await;
    let endpoints = vec!["http://127.0.0.1:9/a".to_owned(), "http://127.0.0.1:9/b".to_owned()];
    forwarding::confirm(&db.pool, &ids, &endpoints).await;
    // Two dead, the rest pending and due in an hour.
    sqlx::query("UPDATE deliveries SET next_attempt_at = now() + interval '1 hour', attempts = 3")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE deliveries SET status = 'dead', dead_at = now() WHERE endpoint = $1 AND event_id <> $2")
        .bind(&endpoints[1])
        .bind(&ids[2])
        .execute(&db.pool)
        .await
        .unwrap();
    let untouched = delivery_states(&db.pool).await;

    let id = ids[0].clone();
    for (body, field) in [
        (json!({}), None),
        (json!({"event_id": id, "endpoint": endpoints[1]}), None),
        (json!({"event_id": id, "all": true}), None),
        (json!({"all": false}), Some("all")),
        (json!({"all": "yes"}), Some("all")),
        (json!({"event_id": 7}), Some("event_id")),
        (json!({"event_id": "evt_nope"}), Some("event_id")),
        (json!({"endpoint": ""}), Some("endpoint")),
        // A NUL would reach Postgres and fail there (a 503 "unavailable" before): refused first.
        (json!({"endpoint": "http://127.0.0.1:9/b\u{0}"}), Some("endpoint")),
        (json!({"all": true, "force": true}), Some("force")),
        (json!({"all": true, "include_pending": "yes"}), Some("include_pending")),
        (json!([{"all": true}]), None),
    ] {
        let got = json(admin.post("/api/v1/deliveries/redrive", &body)).await;
        assert_error(&got, 400, "bad_request", field);
    }
    let raw = |ct: &'static str, body: &'static str| {
        admin
            .client
            .post(admin.url("/api/v1/deliveries/redrive"))
            .bearer_auth(TOKEN)
            .header("content-type", ct)
            .body(body)
    };
    assert_error(&json(raw("application/json", "{\"all\": tru")).await, 400, "bad_request", None);
    assert_error(&json(raw("application/json", "{\"all\":true,\"all\":true}")).await, 400, "bad_request", None);
    assert_error(&json(raw("text/plain", "{\"all\": true}")).await, 415, "unsupported_media_type", None);
    assert_error(
        &json(raw("application/x-www-form-urlencoded", "all=true")).await,
        415,
        "unsupported_media_type",
        None,
    );
    let got = json(admin.post("/api/v1/deliveries/redrive?all=true", &json!({"all": true}))).await;
    assert_error(&got, 400, "bad_request", Some("all"));
    assert_eq!(delivery_states(&db.pool).await, untouched, "nothing changed on bad input");

    // By event: only its dead delivery; a fresh schedule.
    let (status, out) = json(admin.post("/api/v1/deliveries/redrive", &json!({"event_id": id}))).await;
    assert_eq!(status, 200, "{out}");
    validate(&out, "RedriveResult");
    let redriven = out["redriven"].as_array().unwrap();
    assert_eq!(redriven.len(), 1);
    assert_eq!(
        (redriven[0]["endpoint"].as_str(), redriven[0]["previous_status"].as_str()),
        (Some(endpoints[1].as_str()), Some("dead"))
    );
    let (status, attempts): (String, i32) = sqlx::query_as("SELECT status, attempts FROM deliveries WHERE id = $1")
        .bind(redriven[0]["id"].as_i64().unwrap())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((status.as_str(), attempts), ("pending", 0));
    // By endpoint: the other dead one.
    let (_, out) = json(admin.post("/api/v1/deliveries/redrive", &json!({"endpoint": endpoints[1]}))).await;
    assert_eq!(out["redriven"].as_array().unwrap().len(), 1);
    assert_eq!(out["redriven"][0]["event_id"], ids[1].as_str());
    // Nothing dead is left; pending ones move only with include_pending, keeping their attempts.
    let (_, out) = json(admin.post("/api/v1/deliveries/redrive", &json!({"all": true}))).await;
    assert_eq!(out["redriven"], json!([]));
    let leased = sqlx::query_scalar::<_, i64>(
        "UPDATE deliveries SET lease_until = now() + interval '1 minute', lease_token = gen_random_uuid()
          WHERE event_id = $1 AND endpoint = $2 RETURNING id",
    )
    .bind(&ids[2])
    .bind(&endpoints[0])
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let (_, out) = json(admin.post("/api/v1/deliveries/redrive", &json!({"all": true, "include_pending": true}))).await;
    let moved: Vec<i64> = out["redriven"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(moved.len(), 5, "six pending minus the one in flight: {out}");
    assert!(!moved.contains(&leased), "a delivery being attempted is left alone");
    assert!(out["redriven"].as_array().unwrap().iter().all(|r| r["previous_status"] == "pending"));
    let due_later: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE next_attempt_at > now()")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(due_later, 1, "only the leased one is still due later");
    let kept: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM deliveries WHERE id <> ALL($1) AND id <> $2")
        .bind(&moved)
        .bind(leased)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(kept.is_empty());
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM deliveries WHERE id = ANY($1)")
        .bind(&moved)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(
        attempts.iter().filter(|a| **a == 3).count() >= 3,
        "pending ones keep their schedule position: {attempts:?}"
    );
}

/// A dead delivery to `endpoint` for each event (confirmed here).
async fn dead_deliveries(pool: &sqlx::PgPool, ids: &[String], endpoints: &[String]) {
    forwarding::confirm(pool, ids, endpoints).await;
    sqlx::query("UPDATE deliveries SET status = 'dead', dead_at = now(), attempts = 2 WHERE event_id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn endpoint_passwords_never_leave_the_api_and_its_masked_form_is_accepted_back() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let secret_url = "http://erp-user:s3cret-pw@127.0.0.1:9/hook?token=t0ken-value".to_owned();
    let twin = "http://other-user:an0ther-pw@127.0.0.1:9/hook?token=an0ther-token".to_owned();
    let ids = forwarding::insert_events(&db.pool, "PZ", 3).await;
    dead_deliveries(&db.pool, &ids[..2], std::slice::from_ref(&secret_url)).await;
    let secrets = ["erp-user", "s3cret-pw", "t0ken-value", "an0ther-pw", "an0ther-token"];
    let assert_masked = |what: &str, doc: &Value| {
        for secret in secrets {
            assert!(!doc.to_string().contains(secret), "{what} shows {secret}: {doc}");
        }
    };

    let (_, stats) = json(admin.get("/api/v1/stats")).await;
    assert_masked("stats", &stats);
    validate(&stats, "Stats");
    let shown = stats["endpoints"][0]["endpoint"].as_str().unwrap().to_owned();
    assert_eq!(shown, "http://***@127.0.0.1:9/hook?token=***");
    let (_, detail) = json(admin.get(&format!("/api/v1/events/{}", ids[0]))).await;
    assert_masked("event detail", &detail);
    assert_eq!(detail["deliveries"][0]["endpoint"], shown.as_str());

    // What the API shows is accepted back: it names exactly one stored endpoint.
    let (status, out) = json(admin.post("/api/v1/deliveries/redrive", &json!({"endpoint": shown}))).await;
    assert_eq!(status, 200, "{out}");
    assert_masked("redrive", &out);
    assert_eq!(out["redriven"].as_array().unwrap().len(), 2, "{out}");

    // Two endpoints that differ only in masked parts: the masked form is ambiguous, refused.
    dead_deliveries(&db.pool, &ids[2..], std::slice::from_ref(&twin)).await;
    sqlx::query("UPDATE deliveries SET status = 'dead', dead_at = now()").execute(&db.pool).await.unwrap();
    let before = delivery_states(&db.pool).await;
    let got = json(admin.post("/api/v1/deliveries/redrive", &json!({"endpoint": shown}))).await;
    assert_error(&got, 400, "bad_request", Some("endpoint"));
    assert_masked("the ambiguity error", &got.1);
    assert_eq!(delivery_states(&db.pool).await, before, "nothing changed");
    // The exact URL still names one.
    let (_, out) = json(admin.post("/api/v1/deliveries/redrive", &json!({"endpoint": twin}))).await;
    assert_eq!(out["redriven"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["redriven"][0]["event_id"], ids[2].as_str());
}

#[tokio::test]
async fn attempts_after_a_redrive_carry_their_round_and_dropped_deliveries_fit_the_schema() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let rx = forwarding::Receiver::start().await;
    rx.default_reply("/erp", forwarding::Reply::Status(500));
    let endpoints = vec![rx.url("/erp"), rx.url("/gone")];
    let ids = forwarding::insert_events(&db.pool, "PA", 1).await;
    forwarding::confirm(&db.pool, &ids, &endpoints).await;
    sqlx::query("UPDATE deliveries SET status = 'dropped' WHERE endpoint = $1")
        .bind(&endpoints[1])
        .execute(&db.pool)
        .await
        .unwrap();
    let erp = std::slice::from_ref(&endpoints[0]);
    for round in 0..2 {
        let worker = forwarding::start(&db.pool, erp, forwarding::fast_settings(&[0, 5]), "host-r:1");
        forwarding::wait_until(std::time::Duration::from_secs(20), "dead", || async {
            forwarding::deliveries_with(&db.pool, "dead").await == 1
        })
        .await;
        worker.stop().await;
        if round == 0 {
            let (status, _) = json(admin.post("/api/v1/deliveries/redrive", &json!({"all": true}))).await;
            assert_eq!(status, 200);
        }
    }
    let (_, doc) = json(admin.get(&format!("/api/v1/events/{}", ids[0]))).await;
    validate(&doc, "EventDetail");
    let erp = doc["deliveries"].as_array().unwrap().iter().find(|d| d["status"] == "dead").unwrap();
    let rounds: Vec<(i64, i64)> = erp["attempts_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["attempt"].as_i64().unwrap(), a["redrive_round"].as_i64().unwrap()))
        .collect();
    assert_eq!(rounds, [(1, 0), (2, 0), (1, 1), (2, 1)]);
    assert!(doc["deliveries"].as_array().unwrap().iter().any(|d| d["status"] == "dropped"));
    assert_eq!(doc, cli_show(&db, &ids[0]).await, "the CLI prints the same document");
}
