//! Ingest's group-commit tuning (`INGEST_BATCH_*`).

use std::time::Duration;

use crate::env::{number, ConfigError};

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
