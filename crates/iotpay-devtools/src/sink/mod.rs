//! A receiver of forwarded events for development, tests and the demo: verifies each Standard
//! Webhooks signature with [`crate::forward::signature::verify`], records and prints the event,
//! and can be told to fail for a while to simulate an endpoint outage, or to give scripted
//! [`Answer`]s per path (errors, slow answers, `Retry-After`) to test a sender's retries.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::config::ForwardSecret;
use crate::forward::signature;

mod answer;
pub mod command;
mod record;

pub use answer::Answer;
use answer::Answers;
pub use record::{Received, Verdict};

/// How a sink starts.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The `FORWARD_SECRET` the service signs with.
    pub secret: ForwardSecret,
    /// Answer 503 to the first N correctly signed requests.
    pub fail_first: u32,
    /// Answer 503 to correctly signed requests for this long after start.
    pub fail_for: Option<Duration>,
    /// Print one line per request on stdout.
    pub print: bool,
}

impl SinkConfig {
    /// A quiet sink on a free port of 127.0.0.1 that accepts everything correctly signed.
    pub fn new(secret: ForwardSecret) -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 0)), secret, fail_first: 0, fail_for: None, print: false }
    }
}

/// Why the sink could not start.
#[derive(Debug, thiserror::Error)]
#[error("binding {addr}: {source}")]
pub struct SinkError {
    /// The address.
    pub addr: SocketAddr,
    /// The cause.
    pub source: std::io::Error,
}

struct Shared {
    secret: ForwardSecret,
    fail_remaining: AtomicU32,
    fail_until: Mutex<Option<Instant>>,
    received: Mutex<Vec<Received>>,
    /// Ids accepted so far, so spotting a repeat does not scan every request received.
    accepted_ids: Mutex<std::collections::HashSet<String>>,
    print: bool,
    events: broadcast::Sender<Received>,
    answers: Mutex<Answers>,
}

/// A running sink; stops serving when dropped.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Sink {
    /// Binds and starts serving.
    pub async fn start(config: SinkConfig) -> Result<Sink, SinkError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| SinkError { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| SinkError { addr: config.listen, source })?;
        let shared = Arc::new(Shared {
            secret: config.secret,
            fail_remaining: AtomicU32::new(config.fail_first),
            fail_until: Mutex::new(config.fail_for.map(|d| Instant::now() + d)),
            received: Mutex::default(),
            accepted_ids: Mutex::default(),
            print: config.print,
            events: broadcast::channel(1024).0,
            answers: Mutex::default(),
        });
        // Any path: FORWARD_URLS may name whatever path the operator likes.
        let router = Router::new().fallback(receive).with_state(shared.clone());
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(token.cancelled_owned()).await;
        });
        Ok(Sink { addr, shared, stop })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A URL for `FORWARD_URLS`.
    pub fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    /// Every request received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received_since(0)
    }

    /// The requests received after the first `n` (for pollers that keep what they saw).
    pub fn received_since(&self, n: usize) -> Vec<Received> {
        lock(&self.shared.received).get(n..).unwrap_or_default().to_vec()
    }

    /// The requests accepted with 200.
    pub fn accepted(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.verdict == Verdict::Accepted).collect()
    }

    /// How many distinct `webhook-id`s were accepted so far (cheap: nothing is copied).
    pub fn accepted_count(&self) -> usize {
        lock(&self.shared.accepted_ids).len()
    }

    /// Each request as it arrives (for progress display).
    pub fn subscribe(&self) -> broadcast::Receiver<Received> {
        self.shared.events.subscribe()
    }

    /// Answers 503 to the next `n` correctly signed requests.
    pub fn fail_next(&self, n: u32) {
        self.shared.fail_remaining.store(n, Ordering::SeqCst);
    }

    /// Answers 503 to correctly signed requests for `duration` from now.
    pub fn fail_for(&self, duration: Duration) {
        *lock(&self.shared.fail_until) = Some(Instant::now() + duration);
    }

    /// Answers the next correctly signed events on `path` with `answers`, in order (after any
    /// already scripted there).
    pub fn script(&self, path: &str, answers: impl IntoIterator<Item = Answer>) {
        lock(&self.shared.answers).scripts.entry(path.to_owned()).or_default().extend(answers);
    }

    /// Answers correctly signed events on `path` past its script with `answer` (`None`: as
    /// without one).
    pub fn set_default(&self, path: &str, answer: Option<Answer>) {
        let mut answers = lock(&self.shared.answers);
        match answer {
            Some(a) => answers.defaults.insert(path.to_owned(), a),
            None => answers.defaults.remove(path),
        };
    }

    /// Answers correctly signed events on paths with neither script nor default with `answer`
    /// (`None`: the sink's own 200).
    pub fn set_fallback(&self, answer: Option<Answer>) {
        lock(&self.shared.answers).fallback = answer;
    }

    /// Delays every answer by `delay` (the request is recorded on arrival).
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.shared.answers).delay = delay;
    }

    /// Ends any simulated outage now.
    pub fn heal(&self) {
        self.shared.fail_remaining.store(0, Ordering::SeqCst);
        *lock(&self.shared.fail_until) = None;
    }

    /// Waits until at least `n` requests were accepted, or `timeout`; returns whether they were.
    pub async fn wait_for_accepted(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.accepted().len() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let (verdict, answer) = judge(&shared, uri.path().to_owned(), headers, &body);
    let delay = lock(&shared.answers).delay + answer.as_ref().map_or(Duration::ZERO, |a| a.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match answer {
        Some(answer) => answer.into_response(),
        None => verdict.status().into_response(),
    }
}

/// Verifies, records and prints one request; returns the verdict and any scripted answer.
fn judge(shared: &Shared, path: String, headers: HeaderMap, body: &[u8]) -> (Verdict, Option<Answer>) {
    let webhook_id = header(&headers, "webhook-id").unwrap_or_default().to_owned();
    let timestamp = header(&headers, "webhook-timestamp").and_then(|t| t.trim().parse::<i64>().ok());
    let signature_header = header(&headers, "webhook-signature").unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    let verified = match timestamp {
        Some(ts) if !webhook_id.is_empty() => {
            signature::verify(&shared.secret, &webhook_id, ts, body, signature_header, now).is_ok()
        }
        _ => false,
    };
    let parsed: Option<Value> = serde_json::from_slice(body).ok().filter(Value::is_object);
    let mut answer = None;
    let verdict = if !verified {
        Verdict::BadSignature
    } else if parsed.is_none() {
        Verdict::Malformed
    } else if failing(shared) {
        Verdict::Failing
    } else if let Some(a) = lock(&shared.answers).next(&path) {
        let status = a.status;
        answer = Some(a);
        Verdict::Scripted(status)
    } else {
        Verdict::Accepted
    };
    let (received_at, at) = (std::time::SystemTime::now(), Instant::now());
    let mut received = lock(&shared.received);
    let repeat = verdict == Verdict::Accepted && !lock(&shared.accepted_ids).insert(webhook_id.clone());
    let record = Received {
        path,
        headers,
        webhook_id,
        timestamp,
        body: parsed.unwrap_or(Value::Null),
        verdict,
        repeat,
        received_at,
        at,
    };
    received.push(record.clone());
    drop(received);
    if shared.print {
        println!("{}", record.line());
    }
    let _ = shared.events.send(record);
    (verdict, answer)
}

fn failing(shared: &Shared) -> bool {
    if shared.fail_remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return true;
    }
    lock(&shared.fail_until).is_some_and(|until| Instant::now() < until)
}
