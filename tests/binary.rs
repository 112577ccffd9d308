//! Tests of the `iotpay-notify` binary itself: configuration errors, logs, graceful shutdown.

mod common;
mod forwarding;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use iotpay_devtools::testing::TestDatabase;

#[test]
fn missing_variable_is_named_in_one_line() {
    let out = binary().arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");

    let out = binary()
        .arg("serve")
        .env("DATABASE_URL", "postgres://u@127.0.0.1/db")
        .env("IOTPAY_MERCHANTS", "100:SECRETKEY123,broken")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("IOTPAY_MERCHANTS") && !err.contains("SECRETKEY123"), "{err}");
}

#[test]
fn misconfigurations_exit_2_naming_the_variable() {
    let cases = [
        // A swapped pair, and the placeholder of .env.example / docker-compose.yml.
        ("postgres://u@127.0.0.1/db", "supersecretkey123:10000701", "IOTPAY_MERCHANTS", "supersecretkey123"),
        ("postgres://u@127.0.0.1/db", "10000701:replace-with-your-merchant-key", "IOTPAY_MERCHANTS", "\n\n"),
        // libpq would fall back to the Unix socket and a database named after the OS user.
        ("postgres://", "10000701:7C1B0D3E5F8A2C4E6B9D0F1A3C5E7B9D", "DATABASE_URL", "7C1B0D3E"),
        ("postgres://u:hunter2@127.0.0.1", "10000701:7C1B0D3E5F8A2C4E6B9D0F1A3C5E7B9D", "DATABASE_URL", "hunter2"),
    ];
    for (url, merchants, var, secret) in cases {
        let out = binary().arg("serve").env("DATABASE_URL", url).env("IOTPAY_MERCHANTS", merchants).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{url} {merchants}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(var) && !err.contains(secret), "{err}");
    }
}

#[test]
fn serve_says_what_failed_once() {
    let merchants = "10000701:7C1B0D3E5F8A2C4E6B9D0F1A3C5E7B9D";
    // The port is taken: refused before the database is touched (it is unreachable here).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = free_port();
    let started = Instant::now();
    let out = binary()
        .arg("serve")
        .env("DATABASE_URL", format!("postgres://u@127.0.0.1:{closed}/db"))
        .env("IOTPAY_MERCHANTS", merchants)
        .env("LISTEN_ADDR", taken.local_addr().unwrap().to_string())
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("LISTEN_ADDR") && err.matches("in use").count() == 1, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "failed fast, before any database wait");

    // The database refuses connections: said so, not "pool timed out".
    let out = binary()
        .arg("serve")
        .env("DATABASE_URL", format!("postgres://u@127.0.0.1:{closed}/db"))
        .env("IOTPAY_MERCHANTS", merchants)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.to_lowercase().contains("connection refused") && !err.contains("timed out"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test]
async fn a_missing_database_is_named_once() {
    let db = TestDatabase::create().await;
    let missing = db.url().replace("iotpay_test_", "iotpay_missing_");
    let out = tokio::task::spawn_blocking(move || {
        binary()
            .arg("migrate")
            .env("DATABASE_URL", missing)
            .env("IOTPAY_MERCHANTS", "10000701:7C1B0D3E5F8A2C4E6B9D0F1A3C5E7B9D")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("does not exist").count(), 1, "{err}");
}

#[tokio::test]
async fn serve_logs_json_without_secrets_and_stops_on_sigterm() {
    let db = TestDatabase::create().await;
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("iotpay-notify-log-{}", uuid_like()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = serve_command(&db.url(), port)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = client
        .post(format!("{base}/iotpay/notify"))
        .header("content-type", "application/json")
        .body(signed(v3_pay("PBIN", 100), KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "SUCCESS");
    client
        .post(format!("{base}/iotpay/notify"))
        .header("content-type", "application/json")
        .body(signed(v3_pay("PBIN2", 100), "WRONGKEY"))
        .send()
        .await
        .unwrap();

    terminate(&mut child, Duration::from_secs(10));

    let logs = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    for secret in [KEY, ROTATED_KEY, OTHER_KEY] {
        assert!(!logs.contains(secret), "a merchant key appears in the logs");
    }
    let lines: Vec<serde_json::Value> =
        logs.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}"))).collect();
    let serving = lines.iter().find(|l| l["message"] == "serving").expect("a start line");
    assert_eq!(serving["merchants"], format!("{MCH},{OTHER_MCH}"), "each merchant id, never a key");
    let database = serving["database"].as_str().unwrap();
    assert!(database.starts_with("127.0.0.1:5432/iotpay_test_") || database.contains("/iotpay_test_"), "{database}");
    let accepted =
        lines.iter().find(|l| l["message"] == "notification accepted").expect("a log line for the notification");
    assert_eq!(accepted["mch_id"], MCH);
    assert_eq!(accepted["pay_order_id"], "PBIN");
    assert_eq!(accepted["outcome"], "stored");
    assert!(accepted["latency_ms"].is_number());
    let bad = lines.iter().find(|l| l["outcome"] == "bad_sign").expect("a bad_sign line");
    assert_eq!(bad["mch_id"], MCH, "a bad sign names the merchant it claims");
    for l in lines.iter().filter(|l| l["latency_ms"].is_number()) {
        let text = l["latency_ms"].to_string();
        assert!(text.split('.').nth(1).is_none_or(|d| d.len() <= 3), "latency_ms rounded to µs: {text}");
    }
    assert!(!logs.contains("already exists, skipping"), "the migrations NOTICE is not logged");
}

fn uuid_like() -> String {
    format!("{}-{}", std::process::id(), Instant::now().elapsed().as_nanos())
}

/// A `serve` child whose stderr is a pipe, read to the end by a thread.
struct Served {
    child: std::process::Child,
    stderr: Option<std::thread::JoinHandle<String>>,
    base: String,
}

impl Served {
    /// Starts `serve` on a free port with `env`, and waits until it answers `/healthz`.
    async fn start(database_url: &str, env: &[(&str, &str)]) -> Served {
        let port = free_port();
        let mut cmd = serve_command(database_url, port);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut out);
            out
        });
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{base}/healthz")).await.is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("serve exited {status}: {}", stderr.join().unwrap());
            }
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Served { child, stderr: Some(stderr), base }
    }

    /// SIGTERM, exit 0, and everything it wrote on stderr.
    fn stop(mut self) -> String {
        terminate(&mut self.child, Duration::from_secs(10));
        self.stderr.take().unwrap().join().unwrap()
    }
}

#[tokio::test]
async fn serve_without_admin_tokens_says_so_in_one_plain_line_and_leaves_the_admin_port_unbound() {
    let db = TestDatabase::create().await;
    let admin_port = free_port();
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let served = Served::start(&db.url(), &[("ADMIN_LISTEN_ADDR", &admin_addr), ("LOG_FORMAT", "text")]).await;
    let refused = std::net::TcpStream::connect(&admin_addr).map_err(|e| e.kind());
    let logs = served.stop();
    assert_eq!(refused.err(), Some(std::io::ErrorKind::ConnectionRefused), "nothing listens on {admin_addr}");
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains("ADMIN_TOKENS")).collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(lines[0].contains("ADMIN_TOKENS is not set: the admin listener (API and console) is not started"));
    // LOG_FORMAT=text into a pipe: plain text, no terminal colour codes.
    assert!(!logs.contains('\u{1b}'), "ANSI escape codes in piped logs: {logs:?}");
    assert!(logs.contains("serving"), "{logs}");
}

#[test]
fn a_taken_admin_port_fails_before_the_database_is_touched() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = free_port();
    let started = Instant::now();
    let out = binary()
        .arg("serve")
        // Unreachable: were it tried first, the error would be "connection refused".
        .env("DATABASE_URL", format!("postgres://u@127.0.0.1:{closed}/db"))
        .env("IOTPAY_MERCHANTS", "10000701:7C1B0D3E5F8A2C4E6B9D0F1A3C5E7B9D")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("ADMIN_TOKENS", "adm_0123456789abcdefghijklmnopqrstuvwxyz")
        .env("ADMIN_LISTEN_ADDR", taken.local_addr().unwrap().to_string())
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ADMIN_LISTEN_ADDR") && err.matches("in use").count() == 1, "{err}");
    assert!(!err.to_lowercase().contains("refused"), "the database was not tried: {err}");
    assert!(started.elapsed() < Duration::from_secs(2), "failed fast, before any database wait");
}

#[tokio::test]
async fn a_database_outage_is_logged_once_when_it_starts_and_once_when_it_ends() {
    let db = TestDatabase::create().await;
    let upstream = common::proxy::server_of(&db).await;
    let proxy = proxy::TcpProxy::start(upstream).await;
    let through_proxy = sqlx::ConnectOptions::to_url_lossy(&common::proxy::through(&db, proxy.addr)).to_string();
    let served = Served::start(&through_proxy, &[("LOG_FORMAT", "json")]).await;
    let readyz = |base: String| async move { reqwest::get(format!("{base}/readyz")).await.unwrap().status().as_u16() };
    let until = |want: u16| {
        let base = served.base.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while readyz(base.clone()).await != want {
                assert!(Instant::now() < deadline, "/readyz never answered {want}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    until(200).await;
    proxy.cut();
    until(503).await;
    // Load balancers keep probing through the outage; the probe keeps failing every second.
    for _ in 0..15 {
        assert_eq!(readyz(served.base.clone()).await, 503);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.restore();
    until(200).await;
    for _ in 0..5 {
        assert_eq!(readyz(served.base.clone()).await, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logs = served.stop();
    let messages: Vec<String> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|l| l["message"].as_str().map(str::to_owned))
        .collect();
    let count = |m: &str| messages.iter().filter(|x| x.as_str() == m).count();
    assert_eq!(count("not ready: the database does not answer"), 1, "{logs}");
    assert_eq!(count("ready again: the database answers"), 1, "{logs}");
}

#[tokio::test]
async fn an_operator_redrive_logs_the_endpoint_label_never_its_password() {
    let db = TestDatabase::create().await;
    let token = "adm_0123456789abcdefghijklmnopqrstuvwxyz";
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let served = Served::start(
        &db.url(),
        &[("ADMIN_TOKENS", token), ("ADMIN_LISTEN_ADDR", &admin_addr), ("LOG_FORMAT", "json"), ("RUST_LOG", "debug")],
    )
    .await;
    let secret_url = "http://erp-user:s3cret-pw@127.0.0.1:9/hook?token=t0ken-value";
    let ids = forwarding::insert_events(&db.pool, "PLOG", 1).await;
    forwarding::confirm(&db.pool, &ids, &[secret_url.to_owned()]).await;
    sqlx::query("UPDATE deliveries SET status = 'dead', dead_at = now()").execute(&db.pool).await.unwrap();
    let client = reqwest::Client::new();
    let admin = |path: &str| format!("http://{admin_addr}{path}");
    let resp = client
        .post(admin("/api/v1/deliveries/redrive"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "endpoint": secret_url }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer = resp.text().await.unwrap();
    let public = client.get(format!("{}/api/v1/stats", served.base)).bearer_auth(token).send().await.unwrap();
    assert_eq!(public.status(), 404, "the API is on the admin listener only");
    for path in ["/api/v1/stats".to_owned(), format!("/api/v1/events/{}", ids[0])] {
        let resp = client.get(admin(&path)).bearer_auth(token).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let logs = served.stop();
    let redrive = logs.lines().find(|l| l.contains("operator redrive")).unwrap_or_else(|| panic!("{logs}"));
    assert!(redrive.contains("http://127.0.0.1:9/hook"), "the label names the endpoint: {redrive}");
    for secret in ["erp-user", "s3cret-pw", "t0ken-value"] {
        assert!(!logs.contains(secret), "{secret} logged");
        assert!(!answer.contains(secret), "{secret} answered");
    }
}
