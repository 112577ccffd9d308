//! The operator commands (`events list|show`, `deliveries redrive`) and forwarding inside `serve`,
//! run as the real binary against a test database.

mod common;
mod forwarding;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use forwarding::*;
use iotpay_devtools::testing::TestDatabase;
use serde_json::Value;

/// Runs a command with only DATABASE_URL set (no merchants, no forwarding secret).
async fn ops(db: &TestDatabase, args: &[&str]) -> Output {
    let mut cmd = binary();
    cmd.args(args).env("DATABASE_URL", db.url());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    eprintln!(
        "$ iotpay-notify {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_str(&stdout(out)).expect("--json prints JSON")
}

#[tokio::test]
async fn operator_commands_list_show_and_redrive() {
    let db = TestDatabase::create().await;
    let rx = Receiver::start().await;
    rx.default_reply("/erp", Reply::Status(500));
    let endpoints = vec![rx.url("/ledger"), rx.url("/erp")];
    let app = TestApp::spawn(&db).await;
    for body in [signed(v3_pay("P1001", 1500), KEY), signed(v3_refund("R1001", "P1001", 500), KEY)] {
        assert_eq!(app.post_json(&body).await.0, 200);
    }
    assert_eq!(app.post_json(&signed(v3_pay("P1002", 990), KEY)).await.0, 200);
    let id_of = |pay_order_id: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT event_id FROM payment_events WHERE pay_order_id = $1")
                .bind(pay_order_id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let (pay, refund, pending) = (id_of("P1001").await, id_of("R1001").await, id_of("P1002").await);
    let worker = start(&db.pool, &endpoints, fast_settings(&[0, 10]), "host-a:4242");
    confirm(&db.pool, &[pay.clone(), refund.clone()], &endpoints).await;
    wait_until(Duration::from_secs(20), "2 delivered, 2 dead", || async {
        deliveries_with(&db.pool, "delivered").await == 2 && deliveries_with(&db.pool, "dead").await == 2
    })
    .await;
    worker.stop().await;

    // events list: a table for people.
    let out = stdout(&ops(&db, &["events", "list"]).await);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("EVENT_ID") && lines[0].contains("DELIVERIES"), "{out}");
    assert_eq!(lines.len(), 4, "header + 3 events: {out}");
    let line_of = |id: &str| lines.iter().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{id} listed"));
    assert!(line_of(&pay).contains("confirmed") && line_of(&pay).contains("1/2 delivered, 1 dead"));
    assert!(line_of(&pending).contains("pending") && line_of(&pending).trim_end().ends_with('-'));

    // events list --status/--since/--limit --json: for scripts.
    let confirmed = json_of(&ops(&db, &["events", "list", "--status", "confirmed", "--json"]).await);
    let mut got: Vec<&str> = confirmed.as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    got.sort();
    let mut want = vec![pay.as_str(), refund.as_str()];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        json_of(&ops(&db, &["events", "list", "--since", "1h", "--limit", "1", "--json"]).await)
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(stdout(&ops(&db, &["events", "list", "--since", "2999-01-01T00:00:00Z"]).await), "no events\n");
    let bad = ops(&db, &["events", "list", "--status", "paid"]).await;
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--status"));

    // events show: the event, its notifications, confirmation, deliveries and attempts.
    let out = stdout(&ops(&db, &["events", "show", &pay]).await);
    for needle in [
        "event\n",
        "event_id ",
        "confirmed_at",
        "confirmed_txid",
        "notifications (1)",
        "\"payOrderId\":\"P1001\"",
        "deliveries (2)",
        "status=delivered attempts=1",
        "status=dead attempts=2",
        "last_error: HTTP 500",
        "boom",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let shown = json_of(&ops(&db, &["events", "show", &pay, "--json"]).await);
    assert_eq!(shown["event"]["status"], "confirmed");
    assert_eq!(shown["event"]["amount"], 1500);
    assert_eq!(shown["notifications"].as_array().unwrap().len(), 1);
    let deliveries = shown["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    let dead = deliveries.iter().find(|d| d["status"] == "dead").unwrap();
    assert_eq!(dead["endpoint"], endpoints[1]);
    let log = dead["attempts_log"].as_array().unwrap();
    assert_eq!(log.iter().map(|a| a["http_status"].as_i64().unwrap()).collect::<Vec<_>>(), vec![500, 500]);
    assert_eq!(log[0]["worker"], "host-a:4242");
    let missing = ops(&db, &["events", "show", "evt_missing"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no event evt_missing"));

    // deliveries redrive: a filter (or --all) is required.
    let unfiltered = ops(&db, &["deliveries", "redrive"]).await;
    assert_eq!(unfiltered.status.code(), Some(2), "clap refuses a redrive without a filter");
    assert_eq!(deliveries_with(&db.pool, "dead").await, 2);
    let out = stdout(&ops(&db, &["deliveries", "redrive", "--event", &refund]).await);
    assert!(out.starts_with("redriven: 1 dead deliveries back to pending\n"), "{out}");
    assert!(out.contains(&refund) && out.contains(&endpoints[1]), "{out}");
    let redriven = json_of(&ops(&db, &["deliveries", "redrive", "--endpoint", &endpoints[1], "--json"]).await);
    let redriven = redriven["redriven"].as_array().unwrap();
    assert_eq!(redriven.len(), 1);
    assert_eq!(redriven[0]["event_id"], pay.as_str());
    assert_eq!(deliveries_with(&db.pool, "dead").await, 0);
    let (status, attempts) = delivery(&db.pool, &pay, &endpoints[1]).await;
    assert_eq!((status.as_str(), attempts), ("pending", 0), "a fresh schedule");
    let none = json_of(&ops(&db, &["deliveries", "redrive", "--all", "--json"]).await);
    assert_eq!(none["redriven"].as_array().unwrap().len(), 0);

    // The commands read DATABASE_URL only, and name it when it is missing.
    let mut cmd = binary();
    let out = cmd.args(["events", "list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL"));
}

#[tokio::test]
async fn serve_forwards_confirmed_events_and_stops_cleanly() {
    let db = TestDatabase::create().await;
    let rx = Receiver::start().await;
    let endpoint = rx.url("/hook");
    let (mut child, port) =
        spawn_serve(&db, std::slice::from_ref(&endpoint), &[("FORWARD_RETRY_SCHEDULE", "0,10ms")]).await;
    let app = TestApp::spawn(&db).await;
    assert_eq!(app.post_json(&signed(v3_pay("PSERVE", 700), KEY)).await.0, 200);
    let id: String = sqlx::query_scalar("SELECT event_id FROM payment_events WHERE pay_order_id = 'PSERVE'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(rx.received().is_empty(), "nothing is forwarded before confirmation");
    confirm(&db.pool, std::slice::from_ref(&id), std::slice::from_ref(&endpoint)).await;
    wait_until(Duration::from_secs(20), "forwarded by serve", || async { !rx.received().is_empty() }).await;
    let got = rx.received();
    assert_eq!(got[0].webhook_id, id);
    assert!(got[0].signature_ok && got[0].schema_errors.is_empty());
    wait_until(Duration::from_secs(10), "recorded delivered", || async {
        deliveries_with(&db.pool, "delivered").await == 1
    })
    .await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("iotpay_forward_deliveries_total"), "{metrics}");
    tokio::task::spawn_blocking(move || terminate(&mut child, Duration::from_secs(20))).await.unwrap();
}

/// Starts `serve` forwarding to `endpoints`; returns the child once /healthz answers.
async fn spawn_serve(db: &TestDatabase, endpoints: &[String], extra: &[(&str, &str)]) -> (std::process::Child, u16) {
    let port = free_port();
    let mut cmd = serve_command(&db.url(), port);
    cmd.env("FORWARD_URLS", endpoints.join(","))
        .env("FORWARD_SECRET", SECRET)
        .env("FORWARD_POLL_MS", "50")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, port)
}

#[tokio::test]
async fn two_serve_processes_drain_one_backlog_without_duplicates() {
    const EVENTS: i64 = 150;
    let db = TestDatabase::create().await;
    let rx = Receiver::start().await;
    rx.set_delay(Duration::from_millis(5));
    let endpoints = vec![rx.url("/a"), rx.url("/b")];
    let ids = insert_events(&db.pool, "TWO", EVENTS).await;
    let knobs = [("FORWARD_CONCURRENCY_PER_ENDPOINT", "8"), ("FORWARD_RETRY_SCHEDULE", "0,20ms,20ms")];
    let (mut first, _) = spawn_serve(&db, &endpoints, &knobs).await;
    let (mut second, _) = spawn_serve(&db, &endpoints, &knobs).await;

    let t0 = Instant::now();
    confirm_at_once(&db.pool, &ids, &endpoints).await;
    let total = EVENTS * 2;
    wait_until(Duration::from_secs(90), "backlog drained", || async {
        deliveries_with(&db.pool, "delivered").await == total
    })
    .await;
    let elapsed = t0.elapsed();
    tokio::task::spawn_blocking(move || {
        terminate(&mut first, Duration::from_secs(20));
        terminate(&mut second, Duration::from_secs(20));
    })
    .await
    .unwrap();

    let received = rx.received();
    let mut seen = std::collections::HashSet::new();
    for r in &received {
        assert!(seen.insert((r.path.clone(), r.webhook_id.clone())), "{} sent twice to {}", r.webhook_id, r.path);
        assert!(r.signature_ok && r.schema_errors.is_empty());
    }
    assert_eq!(received.len() as i64, total, "every delivery exactly once");
    let per_worker: Vec<(String, i64)> =
        sqlx::query_as("SELECT worker, count(*) FROM delivery_attempts GROUP BY worker ORDER BY worker")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(per_worker.len(), 2, "both processes took part: {per_worker:?}");
    eprintln!(
        "{total} deliveries drained by two serve processes in {elapsed:?} ({:.0}/s); split {per_worker:?}",
        total as f64 / elapsed.as_secs_f64()
    );
}

/// Runs a command with DATABASE_URL and `env` set.
async fn ops_with(db: &TestDatabase, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = binary();
    cmd.args(args).env("DATABASE_URL", db.url());
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

#[tokio::test]
async fn orphan_commands_accept_the_masked_urls_they_print_unless_ambiguous() {
    let db = TestDatabase::create().await;
    let current = "https://cur-user:cur-pw@new.example/hook";
    let old = "https://old-user:0ld-pw@old.example/hook?token=0ld-token";
    let (twin_a, twin_b) = ("https://a-user:tw1n-a@twin.example/hook", "https://b-user:tw1n-b@twin.example/hook");
    let secrets = ["cur-pw", "0ld-pw", "0ld-token", "tw1n-a", "tw1n-b", "old-user"];
    let ids = insert_events(&db.pool, "PO", 3).await;
    confirm(&db.pool, &ids[..1], &[old.to_owned()]).await;
    confirm(&db.pool, &ids[1..2], &[twin_a.to_owned()]).await;
    confirm(&db.pool, &ids[2..], &[twin_b.to_owned()]).await;
    let env = [("FORWARD_URLS", current)];
    let run = |args: &'static [&'static str]| {
        let db = &db;
        async move {
            let out = ops_with(db, &env, args).await;
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            for secret in secrets {
                assert!(!text.contains(secret), "{args:?} printed {secret}: {text}");
            }
            (out.status.code(), text)
        }
    };
    let endpoint_of = |id: String| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, String)>("SELECT endpoint, status FROM deliveries WHERE event_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };

    // What `orphans` prints is what the operator can pass back.
    let (code, listed) = run(&["deliveries", "orphans", "--json"]).await;
    assert_eq!(code, Some(0), "{listed}");
    assert!(listed.contains("https://***@old.example/hook?token=***"), "{listed}");
    let (code, out) = run(&[
        "deliveries",
        "move",
        "--from",
        "https://***@old.example/hook?token=***",
        "--to",
        "https://***@new.example/hook",
        "--json",
    ])
    .await;
    assert_eq!(code, Some(0), "{out}");
    let moved: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(moved["moved"], 1, "{out}");
    assert_eq!(endpoint_of(ids[0].clone()).await, (current.to_owned(), "pending".to_owned()), "the real URL is stored");

    // Two stored endpoints share a label: refused, nothing dropped.
    let (code, out) = run(&["deliveries", "drop", "--endpoint", "https://twin.example/hook"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("matches 2 stored endpoints"), "{out}");
    assert_eq!(endpoint_of(ids[1].clone()).await.1, "pending");
    assert_eq!(endpoint_of(ids[2].clone()).await.1, "pending");
    // The configured endpoint, named by its masked form, is still refused.
    let (code, out) = run(&["deliveries", "drop", "--endpoint", "https://***@new.example/hook"]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("is in FORWARD_URLS"), "{out}");
    assert_eq!(endpoint_of(ids[0].clone()).await.1, "pending");
    // The exact URL names one.
    let (code, out) = run(&["deliveries", "drop", "--endpoint", "https://a-user:tw1n-a@twin.example/hook"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(endpoint_of(ids[1].clone()).await.1, "dropped");
    assert_eq!(endpoint_of(ids[2].clone()).await.1, "pending");
    // And `redrive --endpoint` takes the masked form too.
    sqlx::query("UPDATE deliveries SET status = 'dead', dead_at = now() WHERE event_id = $1")
        .bind(&ids[2])
        .execute(&db.pool)
        .await
        .unwrap();
    let (code, out) = run(&["deliveries", "redrive", "--endpoint", "https://***@twin.example/hook", "--json"]).await;
    assert_eq!(code, Some(0), "{out}");
    let redriven: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(redriven["redriven"].as_array().unwrap().len(), 1, "{out}");
}

#[test]
fn bad_flag_values_exit_2_like_every_command_line_error() {
    // A database that is never reached: a value that got past the checks would fail with 1.
    let unreachable = format!("postgres://u@127.0.0.1:{}/db", free_port());
    let cases: [&[&str]; 6] = [
        &["events", "list", "--status", "paid"],
        &["events", "list", "--since", "yesterday"],
        &["events", "list", "--since", "99999999999999d"],
        &["events", "list", "--limit", "0"],
        &["events", "list", "--limit", "ten"],
        &["prune", "--older-than", "soon"],
    ];
    for args in cases {
        let out = binary().args(args).env("DATABASE_URL", &unreachable).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error:"), "{args:?}: {err}");
        assert!(!err.to_lowercase().contains("refused"), "{args:?} reached for the database: {err}");
    }
}
