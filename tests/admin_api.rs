//! The admin listener and its JSON API, black-box: authentication, the public listener's
//! limits and readiness, and the HTTP layer's refusals and error answers. The events API has a
//! file of its own (admin_events.rs), as do deliveries, stats and the OpenAPI document
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
    let upstream = common::proxy::server_of(&db).await;
    let meter = ByteMeter::start(upstream).await;
    let proxied = common::proxy::through(&db, meter.addr);
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
