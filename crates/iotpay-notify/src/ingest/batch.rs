//! Group commit of notifications: concurrent requests are stored together, one transaction per
//! batch, and each request is answered only after its own batch commits (see
//! [`crate::store::group_commit`]).

use std::time::Duration;

use sqlx::PgPool;

use crate::env::{number, ConfigError};
use crate::store::group_commit::{BatchWrite, GroupCommit};
use crate::store::{self, NewNotification, Recorded, StoreError};

/// Group-commit tuning of ingest (`INGEST_BATCH_*`).
pub use crate::store::group_commit::GroupSettings as BatchSettings;

/// Reads `INGEST_BATCH_MAX` (default 64), `INGEST_BATCH_WAIT_US` (200) and `INGEST_BATCH_WRITERS`
/// (4) through `var`.
pub fn settings_from_vars(var: &impl Fn(&'static str) -> Option<String>) -> Result<BatchSettings, ConfigError> {
    Ok(BatchSettings {
        max_batch: number(var, "INGEST_BATCH_MAX", 64)?,
        max_wait: Duration::from_micros(number(var, "INGEST_BATCH_WAIT_US", 200)?),
        writers: number(var, "INGEST_BATCH_WRITERS", 4)?,
    })
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
    pub fn start(pool: PgPool, settings: BatchSettings) -> Self {
        Self { queue: GroupCommit::start(pool, Notifications, settings) }
    }

    /// Stores one notification; resolves after the transaction that holds it has committed.
    pub async fn record(&self, new: NewNotification) -> Result<Recorded, StoreError> {
        self.queue.submit(new).await
    }
}
