//! Whether the process is whole: every background worker still running. `/readyz` reports it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared flag, healthy until a worker stops unexpectedly.
#[derive(Debug, Clone)]
pub struct Health(Arc<AtomicBool>);

impl Default for Health {
    fn default() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl Health {
    /// True while no worker has stopped unexpectedly.
    pub fn is_ok(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Records that a worker stopped unexpectedly (for good: the process is shutting down).
    pub fn fail(&self) {
        self.0.store(false, Ordering::Release);
    }
}
