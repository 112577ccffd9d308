//! The admin listener and its JSON API, black-box: authentication, the public listener's
//! limits, the event list and its pagination under concurrent inserts, event detail, re-check,
//! and error answers. Deliveries, stats and the OpenAPI document have files of their own
//! (admin_deliveries.rs, admin_stats.rs, admin_openapi.rs).

mod adminkit;
mod common;
mod forwarding;

use adminkit::*;
use common::*;
use iotpay_devtools::testing::TestDatabase;
use serde_json::{json, Value};

#[tokio::test]
async fn every_api_route_refuses_missing_wrong_and_short_tokens() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let id = format!("evt_{}", "0".repeat(32));
    let routes: Vec<(&str, String)> = vec![
        ("GET", "/api/v1/openapi.json".into()),
        ("GET", "/api/v1/events".into()),
        ("GET", format!("/api/v1/events/{id}")),
        ("POST", format!("/api/v1/events/{id}/recheck")),
        ("POST", "/api/v1/deliveries/redrive".into()),
        ("GET", "/api/v1/stats".into()),
        ("POST", "/api/v1/orders".into()),
        ("GET", "/api/v1/orders/10000701/A-1?wait=5".into()),
        ("GET", "/api/v1/no-such-route".into()),
    ];
    let wrong = TOKEN.replace('0', "1");
    let short = &TOKEN[..20];
    for (method, path) in &routes {
        let attempts: Vec<(&str, Option<String>)> = vec![
            ("missing", None),
            ("wrong", Some(format!("Bearer {wrong}"))),
            ("short", Some(format!("Bearer {short}"))),
            ("prefix of a token", Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]))),
            ("token plus a character", Some(format!("Bearer {TOKEN}x"))),
            ("not bearer", Some(format!("Basic {TOKEN}"))),
            ("empty bearer", Some("Bearer ".into())),
        ];
        for (what, header) in attempts {
            let mut req = admin.client.request(method.parse().unwrap(), admin.url(path));
            if let Some(h) = header {
                req = req.header("authorization", h);
            }
            let resp = req.json(&json!({"all": true})).send().await.unwrap();
            assert_eq!(resp.headers()["www-authenticate"], "Bearer", "{method} {path} {what}");
            let got = (resp.status().as_u16(), resp.json::<Value>().await.unwrap());
            assert_error(&got, 401, "unauthorized", None);
        }
    }
    // Both rotation tokens are accepted.
    for token in [TOKEN, OLD_TOKEN] {
        let resp = admin.client.get(admin.url("/api/v1/stats")).bearer_auth(token).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
}

#[tokio::test]
async fn the_public_listener_serves_no_api_and_readiness_from_memory() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    for path in ["/api/v1/events", "/api/v1/openapi.json", "/api/v1/stats"] {
        let resp = admin.client.get(admin.public_url(path)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path} on the public port");
    }
    let console = admin.client.get(admin.public_url("/")).send().await.unwrap();
    assert_eq!(console.status(), 404, "no console on the public port");
    for base in [admin.public, admin.admin] {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let resp = admin.client.get(format!("http://{base}{path}")).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{base}{path}");
        }
    }
}

#[tokio::test]
async fn a_flood_of_public_readyz_sends_nothing_to_the_database() {
    let db = TestDatabase::create().await;
    let upstream = tokio::net::lookup_host(format!("{}:{}", db.options.get_host(), db.options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap();
    let meter = ByteMeter::start(upstream).await;
    let proxied = db.options.clone().host("127.0.0.1").port(meter.addr.port());
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect_lazy_with(proxied);
    let app = TestApp::spawn_on(pool, &db.url()).await;
    assert_eq!(app.client.get(app.url("/readyz")).send().await.unwrap().status(), 200);
    let before = meter.sent();
    let flood = (0..500).map(|_| app.client.get(app.url("/readyz")).send());
    for r in futures::future::join_all(flood).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    let sent = meter.sent() - before;
    // A `SELECT 1` is 14 bytes on the wire: 500 of them would be 7,000. The probe sends one a second.
    assert!(sent < 14 * 20, "500 /readyz sent {sent} bytes to the database");
    eprintln!("500 /readyz: {sent} bytes sent to the database");
}

/// A TCP forwarder that counts the bytes clients send to the database.
struct ByteMeter {
    addr: std::net::SocketAddr,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl ByteMeter {
    async fn start(upstream: std::net::SocketAddr) -> ByteMeter {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            counter.fetch_add(n as u64, Ordering::SeqCst);
                        }
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        ByteMeter { addr, sent }
    }

    fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::SeqCst)
    }
}

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
async fn refusals_of_the_http_layer_are_json_and_the_bearer_scheme_is_case_insensitive() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    // RFC 7235: the auth scheme is case-insensitive.
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let resp = admin
            .client
            .get(admin.url("/api/v1/stats"))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{scheme}");
    }
    // A method the route does not serve: 405, its Allow header kept.
    let resp = admin.client.delete(admin.url("/api/v1/events")).bearer_auth(TOKEN).send().await.unwrap();
    let allow = resp.headers().get("allow").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert!(allow.contains("GET"), "Allow: {allow}");
    let got = (resp.status().as_u16(), resp.json::<Value>().await.expect("a JSON body"));
    assert_error(&got, 405, "method_not_allowed", None);
    validate(&got.1, "Error");
    // A body past the 64 KiB limit.
    let big = json!({"event_id": "x".repeat(70 * 1024)});
    let got = json(admin.post("/api/v1/deliveries/redrive", &big)).await;
    assert_error(&got, 413, "payload_too_large", None);
    validate(&got.1, "Error");
    // A path segment that is not UTF-8 once percent-decoded: refused by axum's Path extractor.
    let got = json(admin.get("/api/v1/events/%FF%FE")).await;
    assert_error(&got, 400, "bad_request", None);
    validate(&got.1, "Error");
    // Outside /api/ the console keeps its HTML.
    let resp = admin.client.delete(admin.url("/events")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert!(!resp.headers().get("content-type").is_some_and(|v| v.to_str().unwrap().contains("json")));
}

#[tokio::test]
async fn a_statement_the_database_refuses_is_500_internal_not_503_unavailable() {
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    assert_eq!(json(admin.get("/api/v1/stats")).await.0, 200);
    // The database answers but refuses the statement (here a missing table, standing for any bug).
    sqlx::query("ALTER TABLE deliveries RENAME TO deliveries_elsewhere").execute(&db.pool).await.unwrap();
    let got = json(admin.get("/api/v1/stats")).await;
    assert_error(&got, 500, "internal", None);
    assert!(!got.1.to_string().contains("deliveries"), "no database text in the answer: {}", got.1);
    validate(&got.1, "Error");
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
