//! Harness of the fault-injection suite: a throwaway cluster the test owns, real `serve`
//! processes, the sandbox IOTPay, a sender that behaves like IOTPay (re-sends until `SUCCESS`),
//! a forward endpoint that can fail on purpose, and the four invariants checked at the end.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use iotpay_devtools::pgcluster::{ClusterOptions, PgCluster};
use iotpay_devtools::sandbox::{Order, QueryOutcome, Sandbox, SandboxConfig, SendOptions};
use iotpay_notify::config::ForwardSecret;
use iotpay_notify::domain::{MchId, MerchantKey};
use iotpay_notify::forward::signature;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{merchants_env, KEY, MCH, OTHER_KEY, ROTATED_KEY};

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Notifications per scenario ("a few thousand").
pub const NOTIFICATIONS: usize = 2000;
/// Of which validly signed but with a tampered amount: they must end `rejected`, never forwarded.
pub const TAMPERED: usize = 10;
/// Notifications in flight at once from the sender.
pub const SENDER_CONCURRENCY: usize = 24;
/// Longest wait for everything to drain once the fault is over.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(150);

/// Knobs that make the service retry and recover fast enough for a test.
pub fn fast_knobs() -> Vec<(&'static str, String)> {
    let mut schedule = ["0", "50ms", "100ms", "200ms", "400ms"].join(",");
    for _ in 0..60 {
        schedule.push_str(",500ms");
    }
    vec![
        ("RUST_LOG", "info".into()),
        ("DATABASE_MAX_CONNECTIONS", "40".into()),
        ("STORE_TIMEOUT_MS", "2000".into()),
        ("CONFIRM_FIRST_RETRY_MS", "100".into()),
        ("CONFIRM_MAX_BACKOFF_MS", "1000".into()),
        ("CONFIRM_CONCURRENCY", "32".into()),
        ("IOTPAY_QUERY_TIMEOUT_MS", "1000".into()),
        ("IOTPAY_CONNECT_TIMEOUT_MS", "500".into()),
        ("CONFIRM_LEASE_SECS", "2".into()),
        ("CONFIRM_POLL_INTERVAL_MS", "200".into()),
        ("FORWARD_RETRY_SCHEDULE", schedule),
        ("FORWARD_TIMEOUT_MS", "1000".into()),
        ("FORWARD_POLL_MS", "100".into()),
        ("FORWARD_CONCURRENCY_PER_ENDPOINT", "16".into()),
    ]
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// The service as a child process.

/// One `serve` process; its stdout and stderr go to a log file.
pub struct Service {
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Service {
    /// Starts `serve` with `env` on `port`; returns once `/healthz` answers.
    pub async fn spawn(env: &[(String, String)], port: u16) -> Service {
        let log =
            std::env::temp_dir().join(format!("iotpay-faults-{}-{}.log", std::process::id(), rand::random::<u64>()));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iotpay-notify"));
        // No inherited configuration, and no .env file in the working directory.
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(std::env::temp_dir())
            .arg("serve")
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let service = Service { port, log, child: Some(child) };
        service.wait_healthy().await;
        service
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.get(format!("http://127.0.0.1:{}/healthz", self.port)).send().await.is_err() {
            assert!(Instant::now() < deadline, "serve did not start; log:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn notify_url(&self) -> String {
        format!("http://127.0.0.1:{}/iotpay/notify", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a node failure or the OOM killer would.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM; returns the exit status (graceful shutdown).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        iotpay_devtools::os::terminate(child.id()).expect("SIGTERM to our own child");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("serve did not stop on SIGTERM; log:\n{}", tail(&self.log_text(), 30));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// A forward endpoint that fails on purpose.

/// What the receiver did with requests it was asked to fail.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub status_500: AtomicUsize,
    pub timeouts: AtomicUsize,
    pub resets: AtomicUsize,
}

#[derive(Default)]
struct ReceiverState {
    /// Per mille of requests that get a fault.
    fault_rate: AtomicU32,
    /// How long a "timeout" fault holds the request before closing without an answer.
    hold: Mutex<Duration>,
    /// 2xx answers given, per (path, webhook-id).
    accepted: Mutex<HashMap<(String, String), u32>>,
    /// Requests that were wrong: bad signature, id mismatch, an event not `confirmed`.
    wrong: Mutex<Vec<String>>,
    faults: FaultCounts,
}

/// A raw-TCP HTTP/1.1 endpoint: answers 200 and records the `webhook-id`, or, at a set rate,
/// answers 500, holds the request past the forwarder's timeout, or resets the connection.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
    secret: Arc<ForwardSecret>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ReceiverState::default());
        *state.hold.lock().unwrap() = Duration::from_millis(1500);
        let rx = Receiver { addr, state, secret: Arc::new(ForwardSecret::parse(SECRET).unwrap()) };
        let server = rx.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let rx = server.clone();
                tokio::spawn(async move { rx.serve(stream).await });
            }
        });
        rx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Fails this fraction of requests from now on (0.0 heals).
    pub fn set_fault_rate(&self, rate: f64) {
        self.state.fault_rate.store((rate * 1000.0) as u32, Ordering::SeqCst);
    }

    pub fn faults(&self) -> &FaultCounts {
        &self.state.faults
    }

    pub fn accepted(&self) -> HashMap<(String, String), u32> {
        self.state.accepted.lock().unwrap().clone()
    }

    pub fn wrong(&self) -> Vec<String> {
        self.state.wrong.lock().unwrap().clone()
    }

    async fn serve(&self, mut stream: TcpStream) {
        let mut buf = Vec::new();
        loop {
            // Read one request: head up to the blank line, then content-length bytes of body.
            let head_end = loop {
                if let Some(i) = find(&buf, b"\r\n\r\n") {
                    break i + 4;
                }
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let mut lines = head.lines();
            let path = lines.next().unwrap_or_default().split_whitespace().nth(1).unwrap_or_default().to_owned();
            let headers: HashMap<String, String> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            while buf.len() < head_end + length {
                let mut chunk = [0u8; 8192];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body: Vec<u8> = buf[head_end..head_end + length].to_vec();
            buf.drain(..head_end + length);

            let rate = self.state.fault_rate.load(Ordering::SeqCst);
            if rate > 0 && rand::random_range(0..1000) < rate {
                match rand::random_range(0..3) {
                    0 => {
                        self.state.faults.status_500.fetch_add(1, Ordering::SeqCst);
                        let answer = "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nboom";
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    1 => {
                        self.state.faults.timeouts.fetch_add(1, Ordering::SeqCst);
                        let hold = *self.state.hold.lock().unwrap();
                        tokio::time::sleep(hold).await;
                        return; // closed without an answer, after the forwarder gave up
                    }
                    _ => {
                        self.state.faults.resets.fetch_add(1, Ordering::SeqCst);
                        iotpay_devtools::os::reset(stream);
                        return;
                    }
                }
            }
            self.check(&path, &headers, &body);
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    /// Records a 2xx for (path, webhook-id), and anything wrong about the request.
    fn check(&self, path: &str, headers: &HashMap<String, String>, body: &[u8]) {
        let id = headers.get("webhook-id").cloned().unwrap_or_default();
        let timestamp: i64 = headers.get("webhook-timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
        let sig = headers.get("webhook-signature").cloned().unwrap_or_default();
        let now = chrono::Utc::now().timestamp();
        let mut wrong = Vec::new();
        if signature::verify(&self.secret, &id, timestamp, body, &sig, now).is_err() {
            wrong.push(format!("{id}: signature does not verify"));
        }
        let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if parsed["data"]["event_id"].as_str() != Some(id.as_str()) {
            wrong.push(format!("{id}: webhook-id is not data.event_id"));
        }
        if parsed["data"]["status"] != "confirmed" {
            wrong.push(format!("{id}: forwarded with status {}", parsed["data"]["status"]));
        }
        self.state.wrong.lock().unwrap().extend(wrong);
        *self.state.accepted.lock().unwrap().entry((path.to_owned(), id)).or_default() += 1;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// The load: genuine notifications of sandbox orders, plus a few tampered ones.

/// One notification to send.
#[derive(Clone)]
pub struct Planned {
    pub order: Order,
    pub body: String,
    pub event_type: &'static str,
    /// False for a tampered notification (validly signed, wrong amount).
    pub genuine: bool,
}

/// Books `n` orders in the sandbox and builds their notifications: v3 payments, 5 % v3 refunds
/// (of other payments), 5 % v2 payments, and [`TAMPERED`] tampered v3 payments.
pub fn plan(sandbox: &Sandbox, n: usize) -> Vec<Planned> {
    let genuine = SendOptions::default();
    let mut planned = Vec::with_capacity(n);
    let (refunds, v2) = (n / 20, n / 20);
    let payments = n - refunds - v2 - TAMPERED;
    for i in 0..payments {
        let order = sandbox.create_v3_payment(1000 + i as i64);
        let body = sandbox.notification(&order, &genuine).to_string();
        planned.push(Planned { order, body, event_type: "payment.succeeded", genuine: true });
    }
    for i in 0..refunds {
        let original = planned[i].order.pay_order_id.clone();
        let order = sandbox.create_v3_refund(&original, 500).unwrap();
        let body = sandbox.notification(&order, &genuine).to_string();
        planned.push(Planned { order, body, event_type: "refund.succeeded", genuine: true });
    }
    for i in 0..v2 {
        let order = sandbox.create_v2_payment(700 + i as i64);
        let body = sandbox.notification(&order, &genuine).to_string();
        planned.push(Planned { order, body, event_type: "payment.succeeded", genuine: true });
    }
    for _ in 0..TAMPERED {
        let order = sandbox.create_v3_payment(1500);
        let body = sandbox.notification(&order, &SendOptions { tamper_amount: Some(15000), ..Default::default() });
        planned.push(Planned { order, body: body.to_string(), event_type: "payment.succeeded", genuine: false });
    }
    // Interleave kinds, as real traffic would.
    use rand::seq::SliceRandom as _;
    planned.shuffle(&mut rand::rng());
    planned
}

/// What the sender saw.
#[derive(Debug, Default, Clone)]
pub struct SendReport {
    /// Distinct notifications, each acknowledged with `SUCCESS`.
    pub sent: usize,
    /// POSTs in all (sent + re-sends).
    pub attempts: usize,
    /// Answers other than `200 SUCCESS`: HTTP status or `transport`, with counts.
    pub failures: BTreeMap<String, usize>,
    /// When the last `SUCCESS` arrived.
    pub finished: Option<Instant>,
}

impl SendReport {
    pub fn resends(&self) -> usize {
        self.attempts - self.sent
    }
}

/// Sends every notification like IOTPay: attempt `k` of notification `i` goes to
/// `targets[(i + k) % len]`; re-sent after 20 ms doubling to 500 ms until `200 SUCCESS`.
/// `acked` counts acknowledged notifications as they come.
pub async fn send_all(planned: Vec<Planned>, targets: Vec<String>, acked: Arc<AtomicUsize>) -> SendReport {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let report = Arc::new(Mutex::new(SendReport::default()));
    futures::stream::iter(planned.into_iter().enumerate())
        .for_each_concurrent(SENDER_CONCURRENCY, |(i, p)| {
            let (client, targets, report, acked) = (client.clone(), targets.clone(), report.clone(), acked.clone());
            async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut pause = Duration::from_millis(20);
                for k in 0.. {
                    let url = &targets[(i + k) % targets.len()];
                    let sent =
                        client.post(url).header("content-type", "application/json").body(p.body.clone()).send().await;
                    let outcome = match sent {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let text = resp.text().await.unwrap_or_default();
                            if status == 200 && text == "SUCCESS" {
                                Ok(())
                            } else {
                                Err(status.to_string())
                            }
                        }
                        Err(_) => Err("transport".to_owned()),
                    };
                    let done = {
                        let mut r = report.lock().unwrap();
                        r.attempts += 1;
                        match outcome {
                            Ok(()) => {
                                r.sent += 1;
                                r.finished = Some(Instant::now());
                                true
                            }
                            Err(what) => {
                                *r.failures.entry(what).or_default() += 1;
                                false
                            }
                        }
                    };
                    if done {
                        acked.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    assert!(Instant::now() < deadline, "{} never acknowledged", p.order.pay_order_id);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        })
        .await;
    let report = report.lock().unwrap().clone();
    report
}

/// Waits until `acked` reaches `n`.
pub async fn wait_acked(acked: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "the load stalled at {}", acked.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A scenario's world.

/// A throwaway cluster, the sandbox IOTPay, a receiver with two endpoints, and the service's env.
pub struct Rig {
    pub name: &'static str,
    pub cluster: Arc<PgCluster>,
    pub sandbox: Sandbox,
    pub receiver: Receiver,
    pub endpoints: Vec<String>,
    pub env: Vec<(String, String)>,
    pub started: Instant,
}

impl Rig {
    pub async fn new(name: &'static str) -> Rig {
        let started = Instant::now();
        let options = ClusterOptions::default().setting("max_connections", "200").setting("shared_buffers", "32MB");
        let cluster = Arc::new(PgCluster::start_async(options).await.expect("a throwaway cluster"));
        let config = SandboxConfig::new(MchId::parse(MCH).unwrap(), MerchantKey::new(KEY));
        let sandbox = Sandbox::start(config).await.unwrap();
        let receiver = Receiver::start().await;
        let endpoints = vec![receiver.url("/ledger"), receiver.url("/erp")];
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), cluster.url()),
            ("IOTPAY_MERCHANTS".into(), merchants_env()),
            ("IOTPAY_V3_API_URL".into(), sandbox.v3_api_url()),
            ("IOTPAY_V2_API_URL".into(), sandbox.v2_api_url()),
            ("FORWARD_URLS".into(), endpoints.join(",")),
            ("FORWARD_SECRET".into(), SECRET.into()),
        ];
        env.extend(fast_knobs().into_iter().map(|(k, v)| (k.to_owned(), v)));
        Rig { name, cluster, sandbox, receiver, endpoints, env, started }
    }

    pub async fn serve(&self) -> Service {
        Service::spawn(&self.env, free_port()).await
    }

    /// A fresh pool (the cluster may have restarted since the last one).
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new().max_connections(4).connect(&self.cluster.url()).await.expect("connect to the cluster")
    }

    /// Runs a blocking cluster operation (restart, kill) off the async threads.
    pub async fn cluster_op(
        &self,
        op: impl FnOnce(&PgCluster) -> Result<(), iotpay_devtools::pgcluster::ClusterError> + Send + 'static,
    ) {
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || op(&cluster)).await.unwrap().expect("cluster operation");
    }
}

/// event_id, mch_id, pay_order_id, event_type, notification_count, amount, status, status_reason.
type EventRow = (String, String, String, String, i32, i64, String, Option<String>);

/// Counts of the end state, as printed and put in docs/RELIABILITY.md.
#[derive(Debug)]
pub struct Figures {
    pub sent: usize,
    pub resends: usize,
    pub failures: BTreeMap<String, usize>,
    pub stored: i64,
    pub confirmed: i64,
    pub rejected: i64,
    pub delivered: i64,
    pub duplicates: u32,
    /// Events pending and deliveries not yet delivered when the fault ended.
    pub backlog: (i64, i64),
    /// From the end of the fault until every event was decided (none `pending`).
    pub decided: Duration,
    pub drain: Duration,
    pub total: Duration,
}

/// Waits until nothing is pending (events and deliveries) and every endpoint has accepted every
/// confirmed event, then checks the four invariants. `duplicates_allowed`: a crash happened.
pub async fn drain_and_check(
    rig: &Rig,
    planned: &[Planned],
    report: &SendReport,
    fault_ended: Instant,
    duplicates_allowed: bool,
    services: &[&Service],
) -> Figures {
    let pool = rig.pool().await;
    let deadline = fault_ended + DRAIN_DEADLINE;
    let expected_accepts = (planned.iter().filter(|p| p.genuine).count() * rig.endpoints.len()) as i64;
    let mut decided_at = None;
    let mut backlog = None;
    let drained_at = loop {
        let (events, deliveries): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM payment_events WHERE status = 'pending'),
                    (SELECT count(*) FROM deliveries WHERE status <> 'delivered')",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or((i64::MAX, i64::MAX));
        backlog.get_or_insert((events, deliveries));
        if events == 0 && decided_at.is_none() {
            decided_at = Some(Instant::now());
        }
        let accepted = rig.receiver.accepted().len() as i64;
        if events == 0 && deliveries == 0 && accepted >= expected_accepts {
            break Instant::now();
        }
        if Instant::now() > deadline {
            let states: Vec<(String, i64)> = sqlx::query_as(
                "SELECT 'event ' || status, count(*) FROM payment_events GROUP BY status
                 UNION ALL SELECT 'delivery ' || status, count(*) FROM deliveries GROUP BY status",
            )
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
            panic!(
                "[{}] not drained within {DRAIN_DEADLINE:?}: {states:?}, receiver accepted {accepted} of {expected_accepts}",
                rig.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Invariant 1: every acknowledged notification is stored exactly once.
    assert_eq!(report.sent, planned.len(), "every notification was acknowledged");
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT event_id, mch_id, pay_order_id, event_type, notification_count, amount, status, status_reason
         FROM payment_events",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), planned.len(), "one row per distinct notification, no more");
    let by_order: HashMap<&str, &EventRow> = rows.iter().map(|r| (r.2.as_str(), r)).collect();
    assert_eq!(by_order.len(), rows.len(), "no pay_order_id stored twice");
    let queried: HashSet<String> = rig
        .sandbox
        .queries()
        .into_iter()
        .filter(|q| q.outcome == QueryOutcome::Found)
        .filter_map(|q| q.pay_order_id)
        .collect();
    let mut confirmed_ids = HashSet::new();
    let mut rejected_ids = HashSet::new();
    for p in planned {
        let row = by_order.get(p.order.pay_order_id.as_str()).unwrap_or_else(|| {
            panic!("[{}] acknowledged notification {} is not stored", rig.name, p.order.pay_order_id)
        });
        let (event_id, mch_id, _, event_type, count, amount, status, reason) = row;
        assert_eq!((mch_id.as_str(), event_type.as_str()), (MCH, p.event_type));
        assert!(*count >= 1);
        // Invariant 2: confirmed only with an agreeing query; tampered ones rejected.
        if p.genuine {
            assert_eq!(status, "confirmed", "[{}] {} ended {status} ({reason:?})", rig.name, p.order.pay_order_id);
            assert!(queried.contains(&p.order.pay_order_id), "confirmed without a query that found the order");
            assert_eq!(*amount, p.order.amount, "confirmed with the amount IOTPay tells");
            confirmed_ids.insert(event_id.clone());
        } else {
            assert_eq!(status, "rejected", "[{}] a tampered notification ended {status}", rig.name);
            assert!(reason.as_deref().unwrap_or_default().starts_with("amount differs"), "{reason:?}");
            rejected_ids.insert(event_id.clone());
        }
    }

    // Invariant 3: every confirmed event delivered to every endpoint; nothing else forwarded;
    // duplicates carry the same webhook-id (they are counted per id) and only after a crash.
    let undelivered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payment_events e CROSS JOIN unnest($1::text[]) AS ep(endpoint)
         WHERE e.status = 'confirmed' AND NOT EXISTS (
             SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id AND d.endpoint = ep.endpoint
                                          AND d.status = 'delivered')",
    )
    .bind(&rig.endpoints)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(undelivered, 0, "every confirmed event has a delivered row per endpoint");
    let forwarded_rejected: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE event_id = ANY($1)")
        .bind(rejected_ids.iter().cloned().collect::<Vec<_>>())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(forwarded_rejected, 0, "no delivery for a rejected event");
    let accepted = rig.receiver.accepted();
    assert!(rig.receiver.wrong().is_empty(), "wrong requests reached the endpoint: {:?}", rig.receiver.wrong());
    for endpoint in ["/ledger", "/erp"] {
        for id in &confirmed_ids {
            assert!(accepted.contains_key(&(endpoint.to_owned(), id.clone())), "{id} never reached {endpoint}");
        }
    }
    for (_, id) in accepted.keys() {
        assert!(confirmed_ids.contains(id), "{id} was forwarded but is not confirmed");
    }
    let duplicates: u32 = accepted.values().map(|n| n - 1).sum();
    if !duplicates_allowed {
        assert_eq!(duplicates, 0, "[{}] duplicates without a crash", rig.name);
    }

    // Invariant 4: never a 500 (nor any 4xx: every notification is valid); no panic.
    for what in report.failures.keys() {
        assert!(what == "503" || what == "transport", "[{}] the service answered {what}", rig.name);
    }
    for service in services {
        let log = service.log_text();
        assert!(!log.contains("panicked"), "[{}] the service panicked:\n{}", rig.name, tail(&log, 40));
    }

    let (stored, confirmed, rejected, delivered): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM payment_events),
                (SELECT count(*) FROM payment_events WHERE status = 'confirmed'),
                (SELECT count(*) FROM payment_events WHERE status = 'rejected'),
                (SELECT count(*) FROM deliveries WHERE status = 'delivered')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    Figures {
        backlog: backlog.unwrap_or_default(),
        decided: decided_at.unwrap_or(drained_at).saturating_duration_since(fault_ended),
        sent: report.sent,
        resends: report.resends(),
        failures: report.failures.clone(),
        stored,
        confirmed,
        rejected,
        delivered,
        duplicates,
        drain: drained_at.saturating_duration_since(fault_ended),
        total: rig.started.elapsed(),
    }
}

/// Prints a scenario's figures on one line (run with `--nocapture` to see it).
pub fn print_figures(name: &str, f: &Figures, extra: &str) {
    println!(
        "FIGURES [{name}] notifications sent {} | re-sends {} {:?} | events stored {} | confirmed {} | rejected {} | \
         deliveries delivered {} | duplicates delivered {} | \
         backlog at the end of the fault: {} events pending, {} deliveries undelivered | after the fault: all decided {:.2}s, all delivered {:.2}s | scenario {:.1}s{extra}",
        f.sent,
        f.resends,
        f.failures,
        f.stored,
        f.confirmed,
        f.rejected,
        f.delivered,
        f.duplicates,
        f.backlog.0,
        f.backlog.1,
        f.decided.as_secs_f64(),
        f.drain.as_secs_f64(),
        f.total.as_secs_f64(),
    );
}

/// Secrets that must never reach a log line.
pub fn secrets() -> Vec<&'static str> {
    vec![KEY, ROTATED_KEY, OTHER_KEY, SECRET, SECRET.trim_start_matches("whsec_")]
}

/// Sets a flag when dropped (stops a chaos task).
pub struct StopOnDrop(pub Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
