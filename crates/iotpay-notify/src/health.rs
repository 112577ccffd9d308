//! Whether the process is whole, and the supervision that keeps that answer true: every
//! long-lived task of the service (the workers, the group-commit writers, the readiness probe,
//! both listeners) runs under one [`Health`], and a task that ends when it should not have fails
//! it for good. `/readyz` then answers `503` and the service stops with an error
//! ([`crate::service::Running::wait`]), so its supervisor restarts it instead of it limping on.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Shared state, healthy until a supervised task ends unexpectedly.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<State>);

#[derive(Debug, Default)]
struct State {
    /// Which task ended and how; set once, by the first failure.
    failure: OnceLock<String>,
    /// Cancelled by the first failure.
    failed: CancellationToken,
}

tokio::task_local! {
    /// The health that [`spawn_supervised`] reports to, set by [`Health::scope`].
    static SUPERVISOR: Health;
}

/// How a supervised task's output says it failed.
pub trait TaskEnd: Send + 'static {
    /// Why the task failed, if its output says so.
    fn failure(self) -> Option<String>;
}

impl TaskEnd for () {
    fn failure(self) -> Option<String> {
        None
    }
}

impl<E: std::fmt::Display + Send + 'static> TaskEnd for Result<(), E> {
    fn failure(self) -> Option<String> {
        self.err().map(|e| format!("failed: {e}"))
    }
}

impl Health {
    /// True while no supervised task has ended unexpectedly.
    pub fn is_ok(&self) -> bool {
        self.0.failure.get().is_none()
    }

    /// Which task ended unexpectedly, and how (`None` while healthy).
    pub fn failure(&self) -> Option<&str> {
        self.0.failure.get().map(String::as_str)
    }

    /// Records that `task` ended unexpectedly (`why`: panicked, returned, failed: ...). For good:
    /// only the first failure is kept, and the service is expected to stop.
    pub fn fail(&self, task: &str, why: &str) {
        if self.0.failure.set(format!("{task} {why}")).is_ok() {
            tracing::error!(task, why, "a supervised task stopped unexpectedly; the service stops");
            self.0.failed.cancel();
        }
    }

    /// Resolves once a supervised task has failed.
    pub async fn failed(&self) {
        self.0.failed.cancelled().await;
    }

    /// Runs `task` for as long as the service runs: it fails this health if it panics, returns an
    /// error, or returns at all before `stop` is cancelled. The handle resolves once it ended and
    /// was accounted for.
    pub fn spawn_until<T: TaskEnd>(
        &self,
        name: impl Into<String>,
        stop: &CancellationToken,
        task: impl Future<Output = T> + Send + 'static,
    ) -> JoinHandle<()> {
        self.spawn_inner(name.into(), Some(stop.clone()), task)
    }

    /// Runs `task`, which may end by itself (a group-commit writer ends when its queue closes):
    /// it fails this health only if it panics or returns an error.
    pub fn spawn<T: TaskEnd>(
        &self,
        name: impl Into<String>,
        task: impl Future<Output = T> + Send + 'static,
    ) -> JoinHandle<()> {
        self.spawn_inner(name.into(), None, task)
    }

    /// Runs `f` so that every task it starts through [`spawn_supervised`] reports to this health.
    ///
    /// Why a scope rather than a parameter: the group-commit queues are started deep inside the
    /// ingest, confirmation and forwarding constructors, which tests and operator commands also
    /// call on their own; the service wraps its construction in one scope, and every writer it
    /// starts is supervised without a handle threaded through each constructor.
    pub fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        SUPERVISOR.sync_scope(self.clone(), f)
    }

    fn spawn_inner<T: TaskEnd>(
        &self,
        name: String,
        stop: Option<CancellationToken>,
        task: impl Future<Output = T> + Send + 'static,
    ) -> JoinHandle<()> {
        #[cfg(all(feature = "fault-injection", unix))]
        let task = crate::fault::armed(&name, task);
        // The task runs on its own so that its panic is caught by the runtime, and is seen here.
        let running = tokio::spawn(task);
        let health = self.clone();
        tokio::spawn(async move {
            let why = match running.await {
                Ok(end) => end.failure().or_else(|| match &stop {
                    Some(stop) if !stop.is_cancelled() => Some("returned".to_owned()),
                    _ => None,
                }),
                Err(e) if e.is_panic() => Some(format!("panicked: {}", panic_message(e.into_panic()))),
                Err(e) => Some(format!("was cancelled: {e}")),
            };
            if let Some(why) = why {
                health.fail(&name, &why);
            }
        })
    }
}

/// Spawns `task` (which may end by itself, as [`Health::spawn`]) under the health of the
/// enclosing [`Health::scope`], or unsupervised outside any scope (a test's or an operator
/// command's own queue).
pub fn spawn_supervised<T: TaskEnd>(name: impl Into<String>, task: impl Future<Output = T> + Send + 'static) {
    match SUPERVISOR.try_with(Health::clone) {
        Ok(health) => drop(health.spawn(name, task)),
        Err(_) => drop(tokio::spawn(task)),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload.downcast_ref::<&str>().map_or_else(|| "(no message)".to_owned(), |s| (*s).to_owned()),
    }
}
