//! Harness for admin tests: the public app and the admin listener over one test database.
#![allow(dead_code)]

use std::net::SocketAddr;

use iotpay_devtools::testing::TestDatabase;
use iotpay_notify::admin::AdminApp;
use iotpay_notify::app::App;
use reqwest::{RequestBuilder, Response};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::common::test_config;

/// Two tokens, as during a rotation.
pub const TOKEN: &str = "adm_0123456789abcdefghijklmnopqrstuvwxyz";
pub const OLD_TOKEN: &str = "adm_old_token_still_valid_during_rotation";

/// Both listeners; stop when dropped.
pub struct Admin {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub pool: PgPool,
    pub client: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Admin {
    pub async fn spawn(db: &TestDatabase, extra: &[(&str, &str)]) -> Admin {
        let tokens = format!("{TOKEN},{OLD_TOKEN}");
        let mut env = vec![("ADMIN_LISTEN_ADDR", "127.0.0.1:0"), ("ADMIN_TOKENS", tokens.as_str())];
        env.extend_from_slice(extra);
        let config = test_config(&db.url(), &env);
        let app = App::bind(&config, db.pool.clone()).await.expect("bind public");
        let settings = iotpay_notify::service::admin_settings(&config).expect("tokens set");
        let admin = AdminApp::bind(config.admin_listen_addr, settings, db.pool.clone(), app.readiness(), app.health())
            .await
            .expect("bind");
        let (public, admin_addr) = (app.local_addr(), admin.local_addr());
        let stop = CancellationToken::new();
        let (a, b) = (stop.clone(), stop.clone());
        tokio::spawn(app.serve(async move { a.cancelled().await }));
        tokio::spawn(admin.serve(async move { b.cancelled().await }));
        Admin { public, admin: admin_addr, pool: db.pool.clone(), client: reqwest::Client::new(), stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn public_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    /// GET with the bearer token.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(TOKEN)
    }

    /// POST of a JSON body with the bearer token.
    pub fn post(&self, path: &str, body: &Value) -> RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(TOKEN).json(body)
    }
}

/// Status and JSON body.
pub async fn json(resp: RequestBuilder) -> (u16, Value) {
    let resp: Response = resp.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body expected, got {status}: {text}")))
}

/// Asserts a JSON error body with this status, code and field.
pub fn assert_error(got: &(u16, Value), status: u16, code: &str, field: Option<&str>) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    assert!(got.1["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", got.1);
    assert_eq!(got.1["error"]["field"].as_str(), field, "{}", got.1);
}

/// Stores `n` v3 payments through the public notify route; returns their event ids, oldest first.
pub async fn notify_payments(admin: &Admin, prefix: &str, n: usize) -> Vec<String> {
    use crate::common::{signed, v3_pay, KEY};
    let mut ids = Vec::new();
    for i in 0..n {
        let pay_order_id = format!("{prefix}{i:04}");
        let resp = admin
            .client
            .post(admin.public_url("/iotpay/notify"))
            .header("content-type", "application/json")
            .body(signed(v3_pay(&pay_order_id, 1000 + i as i64), KEY))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let id: String = sqlx::query_scalar("SELECT event_id FROM payment_events WHERE pay_order_id = $1")
            .bind(&pay_order_id)
            .fetch_one(&admin.pool)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// Decides every due pending event as the confirmation worker does (claim, then the decision
/// statement, which also logs the check): `confirmed`, or an inconclusive check when `retry`.
pub async fn decide_all(pool: &PgPool, endpoints: &[String], retry: Option<&str>) {
    use iotpay_notify::store::confirm::{apply, claim_due, Verdict};
    let claimed = claim_due(pool, 1000, std::time::Duration::from_secs(60), "test-token").await.unwrap();
    for c in claimed {
        let verdict = match retry {
            None => Verdict::Confirmed,
            Some(reason) => Verdict::Retry {
                reason: reason.into(),
                delay: std::time::Duration::ZERO,
                give_up_reason: format!("gave up; last: {reason}"),
            },
        };
        apply(pool, &c.event.event_id, &c.leased_by, &verdict, std::time::Duration::from_secs(86_400), endpoints)
            .await
            .unwrap();
    }
}

/// The served OpenAPI document.
pub fn openapi() -> Value {
    serde_json::from_str(iotpay_notify::admin::api::openapi::DOCUMENT).expect("openapi.json is JSON")
}

/// Validates `value` against `#/components/schemas/<name>` of the served document.
pub fn validate(value: &Value, name: &str) {
    let mut root = openapi();
    root["$ref"] = json!(format!("#/components/schemas/{name}"));
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    let validator = jsonschema::options().should_validate_formats(true).build(&root).expect("schema compiles");
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\n{value}");
}

/// Runs the real binary's `events show --json`.
pub async fn cli_show(db: &TestDatabase, id: &str) -> Value {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_iotpay-notify"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db.url())
        .current_dir(std::env::temp_dir())
        .args(["events", "show", id, "--json"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}
