//! Issue 11, the process and operator side: logging can never stop the service, a dead task
//! (a worker, a group-commit writer, the readiness probe, a listener) fails the process, untrusted text cannot forge log lines, secrets in URLs are masked in every
//! output, `--since` cannot wrap, deliveries to removed endpoints can be listed, dropped, moved.

mod common;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use iotpay_devtools::testing::TestDatabase;
use serde_json::{json, Value};

fn serve(db: &TestDatabase, port: u16) -> Command {
    // IOTPay at a closed local port: every check is inconclusive and logs a warning, so the
    // confirmation worker keeps writing log lines.
    let mut cmd = serve_command(&db.url(), port);
    cmd.env("CONFIRM_FIRST_RETRY_MS", "100").env("CONFIRM_MAX_BACKOFF_MS", "200").env("RUST_LOG", "info");
    cmd
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Item 6: `serve 2>&1 | head`: once the reader of the log pipe goes away, the service keeps
/// answering, keeps confirming, and still stops on SIGTERM with exit 0.
#[tokio::test]
async fn a_closed_log_pipe_never_stops_the_service() {
    let db = TestDatabase::create().await;
    let port = free_port();
    let mut child = serve(&db, port).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    // Read the first log line (the pipe works), then close both read ends.
    let mut stderr = child.stderr.take().unwrap();
    let mut first = [0u8; 16];
    stderr.read_exact(&mut first).unwrap();
    drop(stderr);
    drop(child.stdout.take());
    wait_ready(&client, &base).await;

    for i in 0..5 {
        let resp = client
            .post(format!("{base}/iotpay/notify"))
            .header("content-type", "application/json")
            .body(signed(v3_pay(&format!("PIPE{i}"), 100), KEY))
            .send()
            .await
            .expect("answered although its log line could not be written");
        assert_eq!(resp.text().await.unwrap(), "SUCCESS");
    }
    // The confirmation worker, whose every check logs, is still checking.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let checked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM payment_events WHERE pay_order_id LIKE 'PIPE%' AND confirm_attempts >= 2",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if checked == 5 {
            break;
        }
        assert!(Instant::now() < deadline, "the confirmation worker stopped checking ({checked}/5)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(client.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("iotpay_log_write_failures_total"), "dropped lines are counted");
    terminate(&mut child, Duration::from_secs(10));
}

/// Item 6: a background worker that stops (here: panics) while the service should run makes
/// `/readyz` fail and the service end with an error, rather than limp on.
#[tokio::test]
async fn a_worker_that_stops_fails_readiness_and_the_service() {
    let db = TestDatabase::create().await;
    let config = test_config(&db.url(), &[("IOTPAY_V3_API_URL", "http://127.0.0.1:9/v3")]);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut running = iotpay_notify::service::start(&config, db.pool.clone(), shutdown.clone()).await.unwrap();
    let base = format!("http://{}", running.addr());
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    let (crash, crashed) = tokio::sync::oneshot::channel::<()>();
    running.supervise(async move {
        let _ = crashed.await;
        panic!("worker bug");
    });
    let ready_seen = tokio::spawn({
        let client = client.clone();
        let base = base.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match client.get(format!("{base}/readyz")).send().await {
                    Ok(r) if r.status() == 503 => return true,
                    Err(_) => return true,
                    _ if Instant::now() > deadline => return false,
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }
    });
    crash.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), running.wait()).await.expect("the service stops");
    assert!(ended.is_err(), "the service reports the dead worker");
    assert!(shutdown.is_cancelled());
    assert!(ready_seen.await.unwrap(), "readiness failed once the worker was gone");
}

/// A fake IOTPay that accepts connections and never answers: a check sent to it stays in flight
/// (until the query timeout), so a stopping confirmation worker spends its shutdown grace on it.
async fn silent_iotpay() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v3", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    (url, accepted)
}

/// Issue 11 audit, item 6: every long-lived task is supervised, not only the workers. Through
/// the real binary: when a group-commit writer (ingest's, or the confirmation decisions'), the
/// readiness probe, the admin server or a worker (the reconciler; the confirmation worker stays
/// alive with a check in flight, so the listeners answer during its shutdown grace) dies,
/// `/readyz` turns `503` and the process exits 1 naming the task. The task is made to panic by the test build's fault hook
/// (`IOTPAY_NOTIFY_FAULT`, SIGUSR1: src/fault.rs, compiled into test builds only), since nothing
/// from outside can make a correct task end.
#[tokio::test]
async fn a_dead_supervised_task_fails_readiness_and_the_process() {
    let db = TestDatabase::create().await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    for (i, task) in ["ingest-writer", "confirm-writer", "readiness-probe", "admin-server", "reconcile-worker"]
        .into_iter()
        .enumerate()
    {
        let (iotpay, queried) = silent_iotpay().await;
        let (port, admin_port) = (free_port(), free_port());
        let mut child = serve(&db, port)
            .env("IOTPAY_V3_API_URL", &iotpay)
            .env("ADMIN_TOKENS", "t".repeat(40))
            .env("ADMIN_LISTEN_ADDR", format!("127.0.0.1:{admin_port}"))
            .env("IOTPAY_NOTIFY_FAULT", task)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let logs = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&client, &base).await;
        let resp = client
            .post(format!("{base}/iotpay/notify"))
            .header("content-type", "application/json")
            .body(signed(v3_pay(&format!("SUP{i}"), 100), KEY))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.text().await.unwrap(), "SUCCESS", "{task}: stored while every task runs");
        // A check in flight: the stopping service keeps its listeners up during the worker's grace.
        let deadline = Instant::now() + Duration::from_secs(10);
        while queried.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "{task}: the confirmation worker never queried");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(client.get(format!("{base}/readyz")).send().await.unwrap().status(), 200, "{task}");

        let sent = Command::new("kill").args(["-USR1", &child.id().to_string()]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(5);
        let answer = loop {
            match client.get(format!("{base}/readyz")).send().await {
                Ok(r) if r.status() != 200 => break (r.status().as_u16(), r.text().await.unwrap_or_default()),
                _ => {}
            }
            assert!(Instant::now() < deadline, "{task}: /readyz never turned 503");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(answer, (503, "a background task stopped".to_owned()), "{task}");

        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{task}: the process did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let logs = logs.join().unwrap();
        assert_eq!(status.code(), Some(1), "{task}: {logs}");
        let last = logs.lines().last().unwrap_or_default();
        assert!(
            last.contains("a background task stopped unexpectedly")
                && last.contains(&format!("{task} panicked: fault injected into {task}")),
            "{task}: the exit names the task: {last}"
        );
    }
}

/// Item 7: a field name with a newline cannot forge a log line, and a huge one is not logged whole.
#[tokio::test]
async fn untrusted_names_cannot_forge_or_flood_log_lines() {
    let db = TestDatabase::create().await;
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("iotpay-h11-log-{}-{port}", std::process::id()));
    let mut child =
        serve(&db, port).stdout(Stdio::null()).stderr(std::fs::File::create(&log_path).unwrap()).spawn().unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://{}:{port}", "127.0.0.1");
    wait_ready(&client, &base).await;
    let forged = "x\n2030-01-01T00:00:00Z  INFO iotpay_notify::ingest: notification accepted mch_id=1 FORGED";
    let huge = "N".repeat(60_000);
    for name in [forged, huge.as_str()] {
        let body = json!({ name: {"nested": 1}, "mchId": MCH }).to_string();
        let resp = client
            .post(format!("{base}/iotpay/notify"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
    }
    terminate(&mut child, Duration::from_secs(10));
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(!logs.contains("FORGED"), "{logs}");
    assert!(!logs.lines().any(|l| l.contains("notification accepted")), "{logs}");
    assert!(logs.lines().all(|l| l.len() < 2_000), "a log line carries the huge name");
}

/// Item 7: `Config`'s Debug output never shows DATABASE_URL's (or an endpoint's) password.
#[test]
fn config_debug_masks_url_passwords() {
    let config = test_config(
        "postgres://app:DBPASSWORD@127.0.0.1:5432/db",
        &[
            ("FORWARD_URLS", "https://hook:HOOKPASSWORD@erp.example/in"),
            ("FORWARD_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ],
    );
    let shown = format!("{config:?}");
    assert!(!shown.contains("DBPASSWORD") && !shown.contains("HOOKPASSWORD"), "{shown}");
    assert!(!shown.contains(KEY), "merchant keys are not shown");
    assert!(shown.contains("127.0.0.1:5432/db") && shown.contains("erp.example/in"), "{shown}");
}

async fn ops(db: &TestDatabase, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = binary();
    cmd.args(args).env("DATABASE_URL", db.url());
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn ok_json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

async fn delivery_statuses(db: &TestDatabase) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT e.pay_order_id, d.endpoint, d.status FROM deliveries d JOIN payment_events e USING (event_id)
          ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Item 7: deliveries to an endpoint removed from FORWARD_URLS can be listed, moved and dropped;
/// no output shows an endpoint's user-info; `--since` refuses what it cannot represent.
#[tokio::test]
async fn operators_can_list_move_and_drop_orphaned_deliveries_and_see_no_passwords() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    for p in ["O1", "O2", "O3"] {
        assert_eq!(app.post_json(&signed(v3_pay(p, 100), KEY)).await.0, 200);
    }
    let old = "http://olduser:OLDPASSWORD@127.0.0.1:9/old";
    let gone = "http://gone:GONEPASSWORD@127.0.0.1:9/gone";
    let new = "http://127.0.0.1:9/new";
    sqlx::query(
        "INSERT INTO deliveries (event_id, endpoint, status)
         SELECT event_id, $1, CASE pay_order_id WHEN 'O2' THEN 'dead' ELSE 'pending' END FROM payment_events
         UNION ALL SELECT event_id, $2, 'pending' FROM payment_events WHERE pay_order_id = 'O1'
         UNION ALL SELECT event_id, $3, 'delivered' FROM payment_events WHERE pay_order_id = 'O3'",
    )
    .bind(old)
    .bind(gone)
    .bind(new)
    .execute(&db.pool)
    .await
    .unwrap();
    let configured = [("FORWARD_URLS", new)];

    let listed = ops(&db, &configured, &["deliveries", "orphans", "--json"]).await;
    let text = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(!text.contains("PASSWORD"), "{text}");
    let orphans = ok_json(&listed)["orphans"].clone();
    assert_eq!(
        orphans,
        json!([
            {"endpoint": "http://***@127.0.0.1:9/gone", "pending": 1, "dead": 0},
            {"endpoint": "http://***@127.0.0.1:9/old", "pending": 2, "dead": 1},
        ])
    );
    let table = ops(&db, &configured, &["deliveries", "orphans"]).await;
    assert!(!String::from_utf8_lossy(&table.stdout).contains("PASSWORD"));

    // A configured endpoint cannot be dropped, and nothing moves to an unconfigured one.
    assert!(!ops(&db, &configured, &["deliveries", "drop", "--endpoint", new]).await.status.success());
    assert!(!ops(&db, &configured, &["deliveries", "move", "--from", old, "--to", gone]).await.status.success());

    let moved = ok_json(&ops(&db, &configured, &["deliveries", "move", "--from", old, "--to", new, "--json"]).await);
    assert_eq!((moved["moved"].as_u64(), moved["already_there"].as_u64()), (Some(2), Some(1)));
    assert!(!moved.to_string().contains("PASSWORD"));
    let dropped = ok_json(&ops(&db, &configured, &["deliveries", "drop", "--endpoint", gone, "--json"]).await);
    assert_eq!(dropped["dropped"], 1);
    let statuses = delivery_statuses(&db).await;
    let s = |p: &str, e: &str| statuses.iter().find(|(a, b, _)| a == p && b == e).map(|(_, _, s)| s.as_str());
    assert_eq!(s("O1", new), Some("pending"));
    assert_eq!(s("O2", new), Some("pending"), "a dead delivery moved is pending again");
    assert_eq!(s("O3", new), Some("delivered"), "the existing delivery is kept");
    assert_eq!(s("O3", old), Some("dropped"));
    assert_eq!(s("O1", gone), Some("dropped"));
    assert_eq!(ok_json(&ops(&db, &configured, &["deliveries", "orphans", "--json"]).await)["orphans"], json!([]));

    // events show --json and deliveries redrive --json mask user-info.
    sqlx::query("UPDATE deliveries SET endpoint = $1, status = 'dead' WHERE status = 'pending'")
        .bind("http://user:SHOWPASSWORD@127.0.0.1:9/new2")
        .execute(&db.pool)
        .await
        .unwrap();
    let event_id: String = sqlx::query_scalar("SELECT event_id FROM payment_events WHERE pay_order_id = 'O1'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    for args in [
        vec!["events", "show", event_id.as_str(), "--json"],
        vec!["events", "show", event_id.as_str()],
        vec!["deliveries", "redrive", "--all", "--json"],
    ] {
        let out = ops(&db, &[], &args).await;
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("SHOWPASSWORD") && text.contains("127.0.0.1:9/new2"), "{args:?}: {text}");
    }

    // --since with a duration past what a time can hold is a clear error, not a wrapped time
    // (a bad flag value: exit 2, like every command-line error).
    let out = ops(&db, &[], &["events", "list", "--since", "213503982334602d"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--since") && err.contains("213503982334602d"), "{err}");
    let out = ops(&db, &[], &["events", "list", "--since", "106751991167d"]).await;
    assert!(!out.status.success(), "beyond chrono's range: {}", String::from_utf8_lossy(&out.stdout));
}
