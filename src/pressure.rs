//! Ingest first: how busy the notify path is, so the background workers of the same process
//! (confirmation, forwarding) can step back while a burst is being received.
//!
//! Answering IOTPay quickly is what prevents re-sends and timeouts; confirming and forwarding a
//! few seconds later costs nothing. On a small machine all three compete for the same cores and
//! the same database, so while many notifications are in progress each worker keeps one slot (it
//! never stops), and takes the others back as soon as the burst has been absorbed. Measured with
//! `scripts/bench.sh` (confirmation failing, so re-checks churn): one slot while busy kept the
//! ingest p99 near 26 ms where a quarter of 16 gave 31 ms; the pipeline rate did not change.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Notifications in progress at once from which the notify path counts as busy.
pub const BUSY_FROM: usize = 8;

/// A shared count of notifications being received right now.
#[derive(Debug, Clone, Default)]
pub struct IngestPressure {
    in_progress: Arc<AtomicUsize>,
}

/// Counts one notification in progress until dropped.
#[derive(Debug)]
pub struct InProgress {
    in_progress: Arc<AtomicUsize>,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

impl IngestPressure {
    /// Counts a notification from now until the returned guard is dropped.
    pub fn enter(&self) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        InProgress { in_progress: self.in_progress.clone() }
    }

    /// Notifications in progress now.
    pub fn in_progress(&self) -> usize {
        self.in_progress.load(Ordering::Relaxed)
    }

    /// How many of a worker's `slots` it may use now: all of them, or one while the notify path
    /// is busy.
    pub fn allowed(&self, slots: usize) -> usize {
        if self.in_progress() >= BUSY_FROM {
            1
        } else {
            slots
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_step_back_while_busy_and_never_stop() {
        let p = IngestPressure::default();
        assert_eq!(p.allowed(16), 16);
        let guards: Vec<_> = (0..BUSY_FROM).map(|_| p.enter()).collect();
        assert_eq!(p.in_progress(), BUSY_FROM);
        assert_eq!(p.allowed(16), 1, "a worker always keeps one slot");
        drop(guards);
        assert_eq!(p.in_progress(), 0);
        assert_eq!(p.allowed(16), 16);
    }
}
