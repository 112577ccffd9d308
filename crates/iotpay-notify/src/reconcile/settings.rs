//! The reconciler's knobs, read from the environment.

use std::time::Duration;

use crate::config::{number, ConfigError};

/// Knobs of reconciliation (environment variables named on each field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileSettings {
    /// `RECONCILE_AFTER_SECS`: how long after registration an order with no notification is
    /// first queried (IOTPay's own notification usually arrives within seconds).
    pub after: Duration,
    /// `RECONCILE_MAX_BACKOFF_SECS`: longest delay between two queries of one order.
    pub max_backoff: Duration,
    /// `RECONCILE_FIRST_RETRY_SECS`: delay after the first inconclusive query (then doubling).
    pub first_retry: Duration,
    /// `RECONCILE_POLL_INTERVAL_MS`: how often a reconciler looks for due orders.
    pub poll_interval: Duration,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            after: Duration::from_secs(300),
            max_backoff: Duration::from_secs(1800),
            first_retry: Duration::from_secs(60),
            poll_interval: Duration::from_millis(2000),
        }
    }
}

impl ReconcileSettings {
    /// Reads the knobs through `var`; unset means default.
    pub fn from_vars(var: &impl Fn(&'static str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            after: Duration::from_secs(number(var, "RECONCILE_AFTER_SECS", d.after.as_secs())?),
            max_backoff: Duration::from_secs(number(var, "RECONCILE_MAX_BACKOFF_SECS", d.max_backoff.as_secs())?),
            first_retry: Duration::from_secs(number(var, "RECONCILE_FIRST_RETRY_SECS", d.first_retry.as_secs())?),
            poll_interval: Duration::from_millis(number(
                var,
                "RECONCILE_POLL_INTERVAL_MS",
                d.poll_interval.as_millis() as u64,
            )?),
        })
    }
}
