//! Fault injection for the supervision tests, compiled only with the `fault-injection` feature,
//! which only the root package's dev-dependencies turn on: `cargo test` builds the binary with
//! it, `cargo build --release --bin iotpay-notify` (the Dockerfile, `scripts/bench*.sh`) never
//! does. Even then it acts only when `IOTPAY_NOTIFY_FAULT` names a task.
//!
//! Why a hook at all: nothing outside the process can make these tasks end (they end only on a
//! bug: a panic, an early return), and a bug cannot be made on purpose from outside. Why not
//! `cfg(test)`: that compiles the crate's own unit tests only, never the binary the integration
//! tests start. Why not `cfg(debug_assertions)`: every debug build (`cargo run -- serve`) would
//! carry it.

use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};

/// Names the supervised tasks (comma-separated, e.g. `ingest-writer`) that panic at `SIGUSR1`.
pub const FAULT_VAR: &str = "IOTPAY_NOTIFY_FAULT";

/// `task`, made to panic at the process's next `SIGUSR1` when [`FAULT_VAR`] names `name`. The
/// signal handler is installed now, at spawn time: by the time the service answers, a `SIGUSR1`
/// can no longer hit its default action (ending the process).
pub fn armed<F: Future + Send + 'static>(name: &str, task: F) -> impl Future<Output = F::Output> + Send + 'static
where
    F::Output: Send,
{
    let targeted = std::env::var(FAULT_VAR).is_ok_and(|v| v.split(',').any(|t| t.trim() == name));
    let trigger = targeted.then(|| signal(SignalKind::user_defined1()).expect("SIGUSR1 handler"));
    let name = name.to_owned();
    async move {
        let Some(mut trigger) = trigger else { return task.await };
        tracing::warn!(task = %name, "{FAULT_VAR}: this task panics at SIGUSR1 (a test build)");
        tokio::select! {
            out = task => out,
            _ = trigger.recv() => panic!("fault injected into {name} ({FAULT_VAR}, SIGUSR1)"),
        }
    }
}
