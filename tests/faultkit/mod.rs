//! Harness of the fault-injection suite: a throwaway cluster the test owns, real `serve`
//! processes, the sandbox IOTPay, a sender that behaves like IOTPay (re-sends until `SUCCESS`),
//! a forward endpoint that can fail on purpose, and the four invariants checked at the end.
#![allow(dead_code)]

mod endpoint;
mod invariants;
mod sender;
mod service;

pub use endpoint::*;
pub use invariants::*;
pub use sender::*;
pub use service::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iotpay_devtools::pgcluster::{ClusterOptions, PgCluster};
use iotpay_devtools::sandbox::{Sandbox, SandboxConfig};
use iotpay_notify::domain::{MchId, MerchantKey};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

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
