//! Group commit of notifications: concurrent requests are stored together, one transaction per
//! batch, and each request is answered only after its own batch commits (see
//! [`crate::store::group_commit`]).

use std::time::Duration;

use sqlx::PgPool;

use crate::store::group_commit::{BatchWrite, GroupCommit, GroupSettings};
use crate::store::{self, NewNotification, Recorded, StoreError};

/// Group-commit tuning.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most notifications in one transaction.
    pub max_batch: usize,
    /// Longest a gathered batch waits for more notifications before it is written.
    pub max_wait: Duration,
    /// Writer tasks (batches in flight at once).
    pub writers: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self { max_batch: 64, max_wait: Duration::from_micros(200), writers: 4 }
    }
}

struct Notifications;

impl BatchWrite for Notifications {
    type Item = NewNotification;
    type Output = Recorded;
    const NAME: &'static str = "ingest";

    async fn write(&self, pool: &PgPool, items: &[NewNotification]) -> Result<Vec<Recorded>, StoreError> {
        store::record_batch(pool, items).await
    }
}

/// The queue in front of the notification writers.
#[derive(Clone)]
pub struct Batcher {
    queue: GroupCommit<Notifications>,
}

impl Batcher {
    /// Starts the writer tasks; they stop when every `Batcher` clone is dropped.
    pub fn start(pool: PgPool, s: BatchSettings) -> Self {
        let settings = GroupSettings { max_batch: s.max_batch, max_wait: s.max_wait, writers: s.writers };
        Self { queue: GroupCommit::start(pool, Notifications, settings) }
    }

    /// Stores one notification; resolves after the transaction that holds it has committed.
    pub async fn record(&self, new: NewNotification) -> Result<Recorded, StoreError> {
        self.queue.submit(new).await
    }
}
