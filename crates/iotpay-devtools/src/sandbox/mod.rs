//! A simulated IOTPay for local development, tests, the demo and benchmarks.
//!
//! It keeps an order book ([`orders`]), sends signed notifications for its orders to a notifyUrl
//! ([`sender`]; re-sending on any answer but `SUCCESS`/`success`, as IOTPay does), and answers
//! the v3 and v2 `cc_query` and the v1 `query_order` calls from that book with signed answers
//! ([`query_api`]). Fault knobs simulate
//! what production does to a receiver: duplicate and concurrent sends, slow or failing queries,
//! a notification whose amount the query contradicts, a forged sign.
//!
//! Every sign it makes or checks goes through [`crate::iotpay::sign`], the service's own code.

pub mod command;
pub mod orders;
pub mod query_api;
pub mod sender;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::domain::{MchId, MerchantKey};
use crate::duration::{self, Syntax, Unit};

pub use orders::Order;
pub use query_api::{QueryOutcome, QueryRecord};
pub use sender::{Attempt, Delivery, SendOptions};

/// IOTPay does not publish its re-send schedule; this default follows the pattern common to
/// payment gateways (15 s, 15 s, 30 s, 3 min, 10 min, 20 min, 30 min ×3, 1 h).
pub const DEFAULT_RETRY_SCHEDULE: &[Duration] = &[
    Duration::from_secs(15),
    Duration::from_secs(15),
    Duration::from_secs(30),
    Duration::from_secs(180),
    Duration::from_secs(600),
    Duration::from_secs(1200),
    Duration::from_secs(1800),
    Duration::from_secs(1800),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
];

/// Longest wait for the receiver's answer to one notification.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the sandbox could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No notifyUrl is configured.
    #[error("no notify URL configured")]
    NoNotifyUrl,
    /// A refund names a payment the sandbox does not have.
    #[error("no v3 payment {0} to refund")]
    UnknownPayment(String),
    /// A refund is larger than what remains refundable.
    #[error("refund of {amount} exceeds the {refundable} still refundable on {pay_order_id}")]
    NotRefundable {
        /// The payment.
        pay_order_id: String,
        /// The refund's amount.
        amount: i64,
        /// What remains refundable.
        refundable: i64,
    },
    /// The HTTP listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// How a sandbox starts.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Address of the query API (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The simulated merchant.
    pub mch_id: MchId,
    /// The merchant's key (signs notifications and answers, verifies queries).
    pub key: MerchantKey,
    /// Where notifications go (the service's `/iotpay/notify`).
    pub notify_url: Option<String>,
    /// Pauses between attempts of one notification; attempts = pauses + 1.
    pub retry_schedule: Vec<Duration>,
    /// Delay before answering each query.
    pub query_delay: Duration,
    /// The first N queries get HTTP 500.
    pub query_fail_first: u32,
}

impl SandboxConfig {
    /// A sandbox for one merchant on a free port of 127.0.0.1, with the default re-send schedule.
    pub fn new(mch_id: MchId, key: MerchantKey) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            mch_id,
            key,
            notify_url: None,
            retry_schedule: DEFAULT_RETRY_SCHEDULE.to_vec(),
            query_delay: Duration::ZERO,
            query_fail_first: 0,
        }
    }
}

struct Shared {
    mch_id: MchId,
    key: MerchantKey,
    notify_url: Mutex<Option<String>>,
    retry_schedule: Mutex<Vec<Duration>>,
    query_delay: Mutex<Duration>,
    query_fail_remaining: AtomicU32,
    orders: Mutex<Vec<Order>>,
    queries: Mutex<Vec<QueryRecord>>,
    seq: AtomicU64,
    run: String,
    client: reqwest::Client,
}

/// A running sandbox; its HTTP server stops when this is dropped.
pub struct Sandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Sandbox {
    /// Binds the query API and starts serving it.
    pub async fn start(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| SandboxError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| SandboxError::Bind { addr: config.listen, source })?;
        let shared = Arc::new(Shared {
            mch_id: config.mch_id,
            key: config.key,
            notify_url: Mutex::new(config.notify_url),
            retry_schedule: Mutex::new(config.retry_schedule),
            query_delay: Mutex::new(config.query_delay),
            query_fail_remaining: AtomicU32::new(config.query_fail_first),
            orders: Mutex::default(),
            queries: Mutex::default(),
            seq: AtomicU64::new(0),
            run: format!("{:04X}", rand::random::<u16>()),
            client: reqwest::Client::builder().timeout(NOTIFY_TIMEOUT).build().expect("an HTTP client"),
        });
        let router = Router::new()
            .route("/v3/cc_query", post(query_api::query_v3))
            .route("/v2/cc_query", post(query_api::query_v2))
            .route("/v1/query_order", post(query_api::query_v1))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(token.cancelled_owned()).await;
        });
        Ok(Sandbox { addr, shared, stop })
    }

    /// The query API's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value for `IOTPAY_V3_API_URL`.
    pub fn v3_api_url(&self) -> String {
        format!("http://{}/v3", self.addr)
    }

    /// The value for `IOTPAY_V2_API_URL`.
    pub fn v2_api_url(&self) -> String {
        format!("http://{}/v2", self.addr)
    }

    /// The value for `IOTPAY_V1_API_URL`.
    pub fn v1_api_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The simulated merchant.
    pub fn mch_id(&self) -> &MchId {
        &self.shared.mch_id
    }

    /// Sets where notifications go.
    pub fn set_notify_url(&self, url: impl Into<String>) {
        *lock(&self.shared.notify_url) = Some(url.into());
    }

    /// Sets the pauses between attempts of a notification.
    pub fn set_retry_schedule(&self, schedule: Vec<Duration>) {
        *lock(&self.shared.retry_schedule) = schedule;
    }

    /// Delays every following query answer.
    pub fn set_query_delay(&self, delay: Duration) {
        *lock(&self.shared.query_delay) = delay;
    }

    /// Answers the next `n` queries with HTTP 500.
    pub fn fail_next_queries(&self, n: u32) {
        self.shared.query_fail_remaining.store(n, Ordering::SeqCst);
    }

    /// The order book, in creation order.
    pub fn orders(&self) -> Vec<Order> {
        lock(&self.shared.orders).clone()
    }

    /// One order of the book.
    pub fn order(&self, pay_order_id: &str) -> Option<Order> {
        lock(&self.shared.orders).iter().find(|o| o.pay_order_id == pay_order_id).cloned()
    }

    /// Changes an order in the book, and so what later queries tell (e.g. `status = 9`, failed).
    /// Returns false when there is no such order.
    pub fn update_order(&self, pay_order_id: &str, change: impl FnOnce(&mut Order)) -> bool {
        lock(&self.shared.orders).iter_mut().find(|o| o.pay_order_id == pay_order_id).map(change).is_some()
    }

    /// Every query received so far.
    pub fn queries(&self) -> Vec<QueryRecord> {
        lock(&self.shared.queries).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Parses a re-send schedule: `15s,15s,30s,3m,1h` (units `ms`, `s`, `m`, `h`; always written).
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    const SCHEDULE: Syntax = Syntax { units: &[Unit::Millis, Unit::Secs, Unit::Mins, Unit::Hours], bare: None };
    duration::parse_list(text, SCHEDULE).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse() {
        let s = parse_schedule("15s, 500ms,3m,1h").unwrap();
        assert_eq!(
            s,
            [Duration::from_secs(15), Duration::from_millis(500), Duration::from_secs(180), Duration::from_secs(3600)]
        );
        assert!(parse_schedule("15").is_err());
        assert!(parse_schedule("1d").is_err());
        assert!(parse_schedule("-1s").is_err());
        assert_eq!(parse_schedule("").unwrap(), []);
    }
}
