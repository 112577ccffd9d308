//! Shared harness for black-box tests: a spawned app on a random port over an isolated database.
#![allow(dead_code)]

pub mod proxy;

use std::collections::HashMap;
use std::net::SocketAddr;

use iotpay_devtools::testing::TestDatabase;
use iotpay_notify::app::App;
use iotpay_notify::config::Config;
use iotpay_notify::domain::MerchantKey;
use iotpay_notify::iotpay::sign;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Merchant 10000701 has two keys (rotation); 20000002 has one.
pub const MCH: &str = "10000701";
pub const KEY: &str = "7C1B0D3E5F8A2C4E6B9D0F1A3C5E7B9D";
pub const ROTATED_KEY: &str = "NEWKEY00000000000000000000000001";
pub const OTHER_MCH: &str = "20000002";
pub const OTHER_KEY: &str = "OTHERKEY0000000000000000000000FF";

pub fn merchants_env() -> String {
    format!("{MCH}:{KEY},{MCH}:{ROTATED_KEY},{OTHER_MCH}:{OTHER_KEY}")
}

pub fn test_config(database_url: &str, extra: &[(&str, &str)]) -> Config {
    let mut env: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), database_url.to_owned()),
        ("LISTEN_ADDR".into(), "127.0.0.1:0".into()),
        ("IOTPAY_MERCHANTS".into(), merchants_env()),
    ]);
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|k| env.get(k).cloned()).expect("test config is valid")
}

/// A running app; stops when dropped.
pub struct TestApp {
    pub addr: SocketAddr,
    pub pool: PgPool,
    pub client: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestApp {
    /// Spawns the app over `pool` (which may go through a proxy).
    pub async fn spawn_on(pool: PgPool, database_url: &str) -> TestApp {
        Self::spawn_with(pool, database_url, &[]).await
    }

    /// Spawns the app with extra configuration variables.
    pub async fn spawn_with(pool: PgPool, database_url: &str, extra: &[(&str, &str)]) -> TestApp {
        if std::env::var_os("TEST_LOG").is_some() {
            iotpay_notify::telemetry::init_logs(Default::default());
        }
        let config = test_config(database_url, extra);
        let app = App::bind(&config, pool.clone()).await.expect("bind");
        let addr = app.local_addr();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(app.serve(async move { token.cancelled().await }));
        TestApp { addr, pool, client: reqwest::Client::new(), stop }
    }

    /// Spawns the app over a test database.
    pub async fn spawn(db: &TestDatabase) -> TestApp {
        Self::spawn_on(db.pool.clone(), &db.url()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a JSON body; returns (status, body text).
    pub async fn post_json(&self, body: &str) -> (u16, String) {
        self.post(body.as_bytes().to_vec(), Some("application/json")).await
    }

    /// POSTs a JSON body as a trusted proxy would, naming the client in `X-Forwarded-For`;
    /// returns the status.
    pub async fn post_forwarded(&self, xff: &str, body: String) -> u16 {
        let req = self.client.post(self.url("/iotpay/notify")).header("content-type", "application/json");
        req.header("x-forwarded-for", xff).body(body).send().await.expect("request sent").status().as_u16()
    }

    pub async fn post(&self, body: Vec<u8>, content_type: Option<&str>) -> (u16, String) {
        let mut req = self.client.post(self.url("/iotpay/notify")).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}

/// A v3 payment notification's fields (unsigned).
pub fn v3_pay(pay_order_id: &str, amount: i64) -> Value {
    json!({
        "payOrderId": pay_order_id, "mchId": MCH, "mchOrderNo": format!("order-{pay_order_id}"),
        "originalOrderId": "", "amount": amount, "currency": "CAD", "payType": "pay",
        "refundable": amount, "status": 2, "paySuccTime": "2021-04-07 19:44:51",
        "cardNum": "432567******2266", "expiryDate": "0725", "invoiceNum": "INV1",
        "authNum": "A1", "transNum": "T1", "channel": "PF_CC"
    })
}

/// A v3 refund notification's fields (unsigned).
pub fn v3_refund(pay_order_id: &str, original: &str, amount: i64) -> Value {
    json!({
        "payOrderId": pay_order_id, "mchId": MCH, "mchOrderNo": format!("refund-{pay_order_id}"),
        "originalOrderId": original, "amount": amount, "currency": "CAD", "payType": "refund",
        "refundable": 0, "status": 2, "paySuccTime": "2021-04-08 10:02:11",
        "cardNum": "432567******2266", "expiryDate": "0725", "transNum": "T2", "channel": "PF_CC"
    })
}

/// A v2 payment notification's fields (unsigned).
pub fn v2_pay(pay_order_id: &str, amount: i64) -> Value {
    json!({
        "payOrderId": pay_order_id, "mchId": MCH, "mchOrderNo": format!("m-{pay_order_id}"),
        "transId": "660012345678", "currency": "CAD", "amount": amount, "status": 3,
        "paySuccTime": "2021-04-07 19:44:51", "cardType": "V", "cardNum": "450116XXXXXX7214",
        "expirationDate": "0725"
    })
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Adds `sign` computed with `key`, returns the JSON body.
pub fn signed(fields: Value, key: &str) -> String {
    let Value::Object(mut fields) = fields else { panic!("notification fields are an object") };
    sign::sign_object(&mut fields, &MerchantKey::new(key));
    Value::Object(fields).to_string()
}

/// The same, form-encoded.
pub fn signed_form(fields: Value, key: &str) -> String {
    let body: Value = serde_json::from_str(&signed(fields, key)).unwrap();
    body.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(&text_of(v))))
        .collect::<Vec<_>>()
        .join("&")
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Counts rows of a table.
pub async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(pool).await.unwrap()
}

/// Sends SIGTERM to a `serve` child and asserts it exits 0 within `within`.
pub fn terminate(child: &mut std::process::Child, within: std::time::Duration) {
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let deadline = std::time::Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

/// The `iotpay-notify` binary this test run built, with no inherited configuration and no `.env`
/// file in its working directory.
pub fn binary() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_iotpay-notify"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).current_dir(std::env::temp_dir());
    cmd
}

/// A port free a moment ago, for a child process to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `serve` on `127.0.0.1:port` over `database_url` with the test merchants, its IOTPay query URLs
/// at a closed local port (a test never reaches the real IOTPay: each check fails at once and is
/// inconclusive). Later `.env` calls override any of these.
pub fn serve_command(database_url: &str, port: u16) -> std::process::Command {
    let mut cmd = binary();
    cmd.arg("serve")
        .env("DATABASE_URL", database_url)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("IOTPAY_MERCHANTS", merchants_env())
        .env("IOTPAY_V3_API_URL", "http://127.0.0.1:9/v3")
        .env("IOTPAY_V2_API_URL", "http://127.0.0.1:9/v2")
        .env("IOTPAY_V1_API_URL", "http://127.0.0.1:9/v1");
    cmd
}
