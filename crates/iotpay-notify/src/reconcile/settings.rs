//! The reconciler's knobs, read from the environment.

use std::time::Duration;

use crate::env::{number, ConfigError};

/// Knobs of reconciliation (environment variables named on each field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileSettings {
    /// `RECONCILE_AFTER_SECS`: how long after registration an order with no notification is
    /// first queried (IOTPay's own notification usually arrives within seconds). Zero is allowed
    /// (the demo uses it); the first query never comes later than `expires_at`.
    pub after: Duration,
    /// `RECONCILE_MAX_BACKOFF_SECS`: longest delay between two queries of one order.
    pub max_backoff: Duration,
    /// `RECONCILE_FIRST_RETRY_SECS`: delay after the first inconclusive query (then doubling).
    pub first_retry: Duration,
    /// `RECONCILE_POLL_INTERVAL_MS`: how often a reconciler looks for due orders.
    pub poll_interval: Duration,
    /// `RECONCILE_GAUGE_INTERVAL_SECS`: how often the `iotpay_expected_orders{state}` gauge is
    /// recounted (the count reads every order, too costly for every poll).
    pub gauge_interval: Duration,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            after: Duration::from_secs(300),
            max_backoff: Duration::from_secs(1800),
            first_retry: Duration::from_secs(60),
            poll_interval: Duration::from_millis(2000),
            gauge_interval: Duration::from_secs(60),
        }
    }
}

impl ReconcileSettings {
    /// Reads the knobs through `var`; unset means default.
    pub fn from_vars(var: &impl Fn(&'static str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let after = match var("RECONCILE_AFTER_SECS") {
            None => d.after,
            Some(s) => Duration::from_secs(s.parse().map_err(|_| ConfigError::Invalid {
                var: "RECONCILE_AFTER_SECS",
                reason: "expected a whole number of seconds (0 or more)".into(),
            })?),
        };
        Ok(Self {
            after,
            max_backoff: Duration::from_secs(number(var, "RECONCILE_MAX_BACKOFF_SECS", d.max_backoff.as_secs())?),
            first_retry: Duration::from_secs(number(var, "RECONCILE_FIRST_RETRY_SECS", d.first_retry.as_secs())?),
            poll_interval: Duration::from_millis(number(
                var,
                "RECONCILE_POLL_INTERVAL_MS",
                d.poll_interval.as_millis() as u64,
            )?),
            gauge_interval: Duration::from_secs(number(
                var,
                "RECONCILE_GAUGE_INTERVAL_SECS",
                d.gauge_interval.as_secs(),
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&'static str, &str)]) -> Result<ReconcileSettings, ConfigError> {
        ReconcileSettings::from_vars(&|k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn the_first_query_may_come_at_once_but_no_interval_may_be_zero() {
        assert_eq!(read(&[]).unwrap(), ReconcileSettings::default());
        assert_eq!(read(&[("RECONCILE_AFTER_SECS", "0")]).unwrap().after, Duration::ZERO);
        for (var, bad) in [
            ("RECONCILE_AFTER_SECS", "-1"),
            ("RECONCILE_AFTER_SECS", "soon"),
            ("RECONCILE_POLL_INTERVAL_MS", "0"),
            ("RECONCILE_FIRST_RETRY_SECS", "0"),
            ("RECONCILE_GAUGE_INTERVAL_SECS", "0"),
        ] {
            let err = read(&[(var, bad)]).unwrap_err().to_string();
            assert!(err.contains(var), "{var}={bad}: {err}");
        }
    }
}
