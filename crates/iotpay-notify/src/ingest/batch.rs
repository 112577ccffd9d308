//! Group commit of notifications: concurrent requests are stored together, one transaction per
//! batch, and each request is answered only after its own batch commits (see
//! [`crate::store::group_commit`]).

use sqlx::PgPool;

use crate::store::group_commit::{BatchWrite, GroupCommit};
use crate::store::{self, NewNotification, Recorded, StoreError};

/// Group-commit tuning of ingest (`INGEST_BATCH_*`).
pub use crate::store::group_commit::GroupSettings as BatchSettings;

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
    pub fn start(pool: PgPool, settings: BatchSettings) -> Self {
        Self { queue: GroupCommit::start(pool, Notifications, settings) }
    }

    /// Stores one notification; resolves after the transaction that holds it has committed.
    pub async fn record(&self, new: NewNotification) -> Result<Recorded, StoreError> {
        self.queue.submit(new).await
    }
}
