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

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

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

/// Most tasks per slot, counting those whose outcome is still being recorded: bounds what
/// waits on a slow database.
const TASKS_PER_SLOT: usize = 4;

/// A worker's request slots: at most `capacity` requests in flight to the remote (IOTPay, an
/// endpoint), fewer while ingest is busy. A slot is given back when the remote answers, before
/// the outcome commits: the row's lease, not the slot, protects it until then.
#[derive(Debug)]
pub struct Slots {
    capacity: usize,
    permits: Arc<Semaphore>,
    freed: Arc<Notify>,
    pressure: IngestPressure,
}

/// One request in flight; dropping it frees the slot and wakes the worker's claim loop.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The permit goes back before the wake-up, so the woken loop counts it as free.
        drop(self.permit.take());
        self.freed.notify_one();
    }
}

impl Slots {
    /// `capacity` slots, yielding to `pressure`.
    pub fn new(capacity: usize, pressure: IngestPressure) -> Self {
        Self { capacity, permits: Arc::new(Semaphore::new(capacity)), freed: Arc::default(), pressure }
    }

    /// How many new requests may start now, given `tasks` of this worker still running.
    pub fn claimable(&self, tasks: usize) -> usize {
        let room = (self.capacity * TASKS_PER_SLOT).saturating_sub(tasks);
        let in_use = self.capacity - self.permits.available_permits();
        self.pressure.allowed(self.capacity).saturating_sub(in_use).min(room)
    }

    /// Takes a slot; call only for what [`Slots::claimable`] allowed.
    pub fn take(&self) -> Slot {
        let permit = Arc::clone(&self.permits).try_acquire_owned().expect("claimed no more than the free slots");
        Slot { permit: Some(permit), freed: self.freed.clone() }
    }

    /// Resolves when a slot has been freed since the last call.
    pub async fn freed(&self) {
        self.freed.notified().await
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

    #[test]
    fn slots_bound_requests_and_tasks_and_yield_while_busy() {
        let p = IngestPressure::default();
        let slots = Slots::new(4, p.clone());
        assert_eq!(slots.claimable(0), 4);
        let taken: Vec<_> = (0..3).map(|_| slots.take()).collect();
        assert_eq!(slots.claimable(3), 1);
        assert_eq!(slots.claimable(15), 1, "tasks recording their outcome leave room up to 16");
        assert_eq!(slots.claimable(16), 0);
        drop(taken);
        let busy: Vec<_> = (0..BUSY_FROM).map(|_| p.enter()).collect();
        assert_eq!(slots.claimable(0), 1, "one slot while ingest is busy");
        let one = slots.take();
        assert_eq!(slots.claimable(1), 0);
        drop(busy);
        assert_eq!(slots.claimable(1), 3);
        drop(one);
    }
}
