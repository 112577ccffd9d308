//! Fault injection: a few thousand notifications sent the way IOTPay sends them (re-sent until
//! `SUCCESS`) to real `serve` processes, while the database restarts or crashes, the service is
//! killed, two replicas share the work, or IOTPay's query API and the forward endpoints fail.
//! Each scenario then checks the four invariants of docs/RELIABILITY.md and prints its figures
//! (`cargo test --test faults -- --nocapture`).
//!
//! Every database here is a throwaway cluster owned by the test, never a shared server.

mod common;
mod faultkit;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultkit::*;
use iotpay_devtools::sandbox::{QueryOutcome, SendOptions};

/// How long the database stays down in the database scenarios.
const OUTAGE: Duration = Duration::from_secs(2);
/// How long IOTPay's API and the endpoints keep failing after the last notification was acknowledged.
const FLAPPING: Duration = Duration::from_secs(8);

/// A database fault in the middle of the load: `stop` takes the server down, then it comes back
/// on the same data directory and port after [`OUTAGE`].
async fn database_fault(name: &'static str, kill: bool) {
    let rig = Rig::new(name).await;
    let mut service = rig.serve().await;
    let planned = plan(&rig.sandbox, NOTIFICATIONS);
    let acked = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(send_all(planned.clone(), vec![service.notify_url()], acked.clone()));

    wait_acked(&acked, NOTIFICATIONS / 3).await;
    if kill {
        rig.cluster_op(|c| c.kill()).await;
    } else {
        rig.cluster_op(|c| c.shutdown_fast()).await;
    }
    tokio::time::sleep(OUTAGE).await;
    rig.cluster_op(|c| c.start_again()).await;
    let fault_ended = Instant::now();

    let report = load.await.unwrap();
    let figures = drain_and_check(&rig, &planned, &report, fault_ended, true, &[&service]).await;
    assert!(service.terminate().success(), "serve exits 0 on SIGTERM after the outage");
    print_figures(name, &figures, &format!(" | database down {:.1}s", OUTAGE.as_secs_f64()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_load() {
    database_fault("postgres restart (fast shutdown)", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_mid_load() {
    database_fault("postgres SIGKILL + crash recovery", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_killed_mid_load_and_restarted() {
    let name = "serve SIGKILL + restart";
    let rig = Rig::new(name).await;
    let mut first = rig.serve().await;
    let port = first.port;
    let planned = plan(&rig.sandbox, NOTIFICATIONS);
    let acked = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(send_all(planned.clone(), vec![first.notify_url()], acked.clone()));

    wait_acked(&acked, NOTIFICATIONS / 3).await;
    first.kill();
    let killed_at = Instant::now();
    // What the dead process held: claimed events and deliveries whose leases are still running.
    let pool = rig.pool().await;
    let (events_leased, deliveries_leased): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM payment_events WHERE status = 'pending' AND lease_until > now()),
                (SELECT count(*) FROM deliveries WHERE status = 'pending' AND lease_until > now())",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = Service::spawn(&rig.env, port).await;
    let fault_ended = Instant::now();

    let report = load.await.unwrap();
    // The invariants include the leased rows: every confirmed event delivered, none pending.
    let figures = drain_and_check(&rig, &planned, &report, fault_ended, true, &[&first, &second]).await;
    let mut second = second;
    assert!(second.terminate().success());
    print_figures(
        name,
        &figures,
        &format!(
            " | down {:.2}s | leases held by the killed process: {events_leased} events, {deliveries_leased} deliveries (all recovered)",
            (fault_ended - killed_at).as_secs_f64()
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_share_the_load_and_the_workers() {
    let name = "two serve processes";
    let rig = Rig::new(name).await;
    let a = rig.serve().await;
    let b = rig.serve().await;
    let planned = plan(&rig.sandbox, NOTIFICATIONS);
    let acked = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let report = send_all(planned.clone(), vec![a.notify_url(), b.notify_url()], acked).await;
    // No fault here: "drain" is counted from the last SUCCESS.
    let load_done = report.finished.unwrap_or(started);
    let figures = drain_and_check(&rig, &planned, &report, load_done, false, &[&a, &b]).await;

    let pool = rig.pool().await;
    let split: Vec<(String, i64)> = sqlx::query_as(
        "SELECT a.worker || ' ' || d.endpoint, count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(split.len(), 4, "both processes forwarded to both endpoints: {split:?}");
    for mut service in [a, b] {
        assert!(service.terminate().success());
    }
    let split: Vec<i64> = split.into_iter().map(|(_, n)| n).collect();
    print_figures(name, &figures, &format!(" | forwarding attempts per (process, endpoint) {split:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iotpay_api_and_endpoints_fail_intermittently() {
    let name = "IOTPay API + endpoints flapping";
    let rig = Rig::new(name).await;
    let mut service = rig.serve().await;
    let planned = plan(&rig.sandbox, NOTIFICATIONS);
    let acked = Arc::new(AtomicUsize::new(0));
    rig.receiver.set_fault_rate(0.3);
    let load = tokio::spawn(send_all(planned.clone(), vec![service.notify_url()], acked));

    // While the load runs and for FLAPPING after it: bursts of HTTP 500 from cc_query, and
    // spells of answers slower than IOTPAY_QUERY_TIMEOUT_MS; the endpoints answer 500, time out
    // or reset 30 % of requests.
    let mut slow_spells = 0;
    let mut until = None;
    while until.is_none_or(|t| Instant::now() < t) {
        if until.is_none() && load.is_finished() {
            until = Some(Instant::now() + FLAPPING);
        }
        match rand::random_range(0..3) {
            0 => rig.sandbox.fail_next_queries(15),
            1 => {
                slow_spells += 1;
                rig.sandbox.set_query_delay(Duration::from_millis(1500));
                tokio::time::sleep(Duration::from_millis(250)).await;
                rig.sandbox.set_query_delay(Duration::ZERO);
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    rig.sandbox.fail_next_queries(0);
    rig.sandbox.set_query_delay(Duration::ZERO);
    rig.receiver.set_fault_rate(0.0);
    let fault_ended = Instant::now();

    let report = load.await.unwrap();
    let figures = drain_and_check(&rig, &planned, &report, fault_ended, false, &[&service]).await;
    assert!(service.terminate().success());
    let query_500s = rig.sandbox.queries().iter().filter(|q| q.outcome == QueryOutcome::ServerError).count();
    let faults = rig.receiver.faults();
    use std::sync::atomic::Ordering::SeqCst;
    print_figures(
        name,
        &figures,
        &format!(
            " | cc_query 500s {query_500s}, slow spells {slow_spells} | endpoint 500s {}, timeouts {}, resets {}",
            faults.status_500.load(SeqCst),
            faults.timeouts.load(SeqCst),
            faults.resets.load(SeqCst)
        ),
    );
}

/// Merchant keys, the forward secret and the database password never reach the logs, even at
/// `RUST_LOG=trace`, across ingest (valid, forged), confirmation (a failing query, a rejection)
/// and forwarding (a failing endpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs_even_at_trace_level() {
    const DB_PASSWORD: &str = "dbpw-Q7Zr2vX9kLm4";
    let name = "secrets at trace";
    let mut rig = Rig::new(name).await;
    let url = format!("postgres://postgres:{DB_PASSWORD}@127.0.0.1:{}/postgres", rig.cluster.port());
    for (k, v) in rig.env.iter_mut() {
        match k.as_str() {
            "DATABASE_URL" => *v = url.clone(),
            "RUST_LOG" => *v = "trace".into(),
            _ => {}
        }
    }
    let mut service = rig.serve().await;
    rig.sandbox.fail_next_queries(3);
    rig.receiver.set_fault_rate(0.5);
    let planned = plan(&rig.sandbox, 40);

    // A forged notification (wrong key) and a malformed one: refused, and logged as such.
    let forged = rig.sandbox.create_v3_payment(999);
    let forged = rig.sandbox.notification(&forged, &SendOptions { forge_sign: true, ..Default::default() });
    let client = reqwest::Client::new();
    for (body, status) in [(forged.to_string(), 401), ("{\"mchId\":".to_owned(), 400)] {
        let resp = client
            .post(service.notify_url())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status);
    }

    let report = send_all(planned.clone(), vec![service.notify_url()], Arc::new(AtomicUsize::new(0))).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = |f: &FaultCounts| {
        use std::sync::atomic::Ordering::SeqCst;
        f.status_500.load(SeqCst) + f.timeouts.load(SeqCst) + f.resets.load(SeqCst)
    };
    while failed(rig.receiver.faults()) < 3 {
        assert!(Instant::now() < deadline, "the endpoint never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let healed = Instant::now();
    rig.receiver.set_fault_rate(0.0);
    drain_and_check(&rig, &planned, &report, healed, false, &[&service]).await;
    assert!(service.terminate().success());

    let log = service.log_text();
    assert!(log.contains("TRACE"), "the run logged at trace level");
    let queries_failed = rig.sandbox.queries().iter().filter(|q| q.outcome == QueryOutcome::ServerError).count();
    assert_eq!(queries_failed, 3, "the run included failing queries");
    let mut secrets = secrets();
    secrets.push(DB_PASSWORD);
    for secret in secrets {
        if let Some(at) = log.find(secret) {
            let line = log[..at].rsplit('\n').next().unwrap_or_default();
            panic!("a secret reached the log ({} bytes of log); the line starts: {line:.200}", log.len());
        }
    }
    println!("FIGURES [{name}] {} bytes of trace log, no merchant key, forward secret or database password", log.len());
}
