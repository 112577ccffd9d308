//! A forward endpoint that fails on purpose, and checks what it is sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iotpay_notify::config::ForwardSecret;
use iotpay_notify::forward::signature;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::SECRET;

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
