//! The confirmation worker's knobs, read from the environment.

use std::time::Duration;

use crate::env::{number, ConfigError};
use crate::iotpay::query::QueryTimeouts;

/// Knobs of the confirmation worker (environment variables named on each field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmSettings {
    /// `CONFIRM_FIRST_RETRY_MS`: base delay of the first retry (jittered down to half of it).
    pub first_retry: Duration,
    /// `CONFIRM_MAX_BACKOFF_MS`: longest delay between two checks.
    pub max_backoff: Duration,
    /// `CONFIRM_GIVE_UP_AFTER_SECS`: after this long since the event was stored, an
    /// inconclusive check makes it `unconfirmed`.
    pub give_up_after: Duration,
    /// `CONFIRM_CONCURRENCY`: most checks in flight per process.
    pub concurrency: usize,
    /// `IOTPAY_QUERY_TIMEOUT_MS`: longest wait for one query, body included.
    pub query_timeout: Duration,
    /// `IOTPAY_CONNECT_TIMEOUT_MS`: longest wait for the connection (capped by the query timeout).
    pub connect_timeout: Duration,
    /// `CONFIRM_LEASE_SECS`: how long a claim keeps other workers off an event; must exceed the
    /// query timeout so that a live worker never loses its event mid-query.
    pub lease: Duration,
    /// `CONFIRM_POLL_INTERVAL_MS`: longest sleep between two looks at the queue (fallback for
    /// a lost notification).
    pub poll_interval: Duration,
    /// `CONFIRM_NOT_FOUND_CHECKS`: checks on which IOTPay must say it does not know the order
    /// before the event is rejected.
    pub not_found_checks: u32,
    /// `CONFIRM_NOT_FOUND_MIN_AGE_SECS`: and the event must be at least this old (IOTPay may
    /// lag behind its own notification).
    pub not_found_min_age: Duration,
}

impl Default for ConfirmSettings {
    fn default() -> Self {
        Self {
            first_retry: Duration::from_millis(2_000),
            max_backoff: Duration::from_millis(300_000),
            give_up_after: Duration::from_secs(86_400),
            concurrency: 16,
            query_timeout: Duration::from_millis(10_000),
            connect_timeout: Duration::from_millis(3_000),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(5_000),
            not_found_checks: 3,
            not_found_min_age: Duration::from_secs(600),
        }
    }
}

impl ConfirmSettings {
    /// Reads the knobs through `var` (as [`crate::config::Config::from_lookup`] does); unset means default.
    pub fn from_vars(var: &impl Fn(&'static str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let ms = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            Ok(Duration::from_millis(number(var, name, default.as_millis() as u64)?))
        };
        let settings = Self {
            first_retry: ms("CONFIRM_FIRST_RETRY_MS", d.first_retry)?,
            max_backoff: ms("CONFIRM_MAX_BACKOFF_MS", d.max_backoff)?,
            give_up_after: Duration::from_secs(number(var, "CONFIRM_GIVE_UP_AFTER_SECS", d.give_up_after.as_secs())?),
            concurrency: number(var, "CONFIRM_CONCURRENCY", d.concurrency)?,
            query_timeout: ms("IOTPAY_QUERY_TIMEOUT_MS", d.query_timeout)?,
            connect_timeout: ms("IOTPAY_CONNECT_TIMEOUT_MS", d.connect_timeout)?,
            lease: Duration::from_secs(number(var, "CONFIRM_LEASE_SECS", d.lease.as_secs())?),
            poll_interval: ms("CONFIRM_POLL_INTERVAL_MS", d.poll_interval)?,
            not_found_checks: number(var, "CONFIRM_NOT_FOUND_CHECKS", d.not_found_checks)?,
            not_found_min_age: Duration::from_secs(number(
                var,
                "CONFIRM_NOT_FOUND_MIN_AGE_SECS",
                d.not_found_min_age.as_secs(),
            )?),
        };
        if settings.lease <= settings.query_timeout {
            return Err(ConfigError::Invalid {
                var: "CONFIRM_LEASE_SECS",
                reason: "must be longer than IOTPAY_QUERY_TIMEOUT_MS".into(),
            });
        }
        Ok(settings)
    }

    /// The query client's timeouts.
    pub fn timeouts(&self) -> QueryTimeouts {
        QueryTimeouts { connect: self.connect_timeout.min(self.query_timeout), total: self.query_timeout }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_defaults_and_validation() {
        let none = |_: &'static str| None;
        let d = ConfirmSettings::from_vars(&none).unwrap();
        assert_eq!(d, ConfirmSettings::default());
        assert!(d.first_retry <= Duration::from_secs(5));
        assert_eq!(d.give_up_after, Duration::from_secs(86_400));
        let short_lease = |k: &'static str| match k {
            "CONFIRM_LEASE_SECS" => Some("5".to_owned()),
            "IOTPAY_QUERY_TIMEOUT_MS" => Some("5000".to_owned()),
            _ => None,
        };
        assert!(matches!(
            ConfirmSettings::from_vars(&short_lease),
            Err(ConfigError::Invalid { var: "CONFIRM_LEASE_SECS", .. })
        ));
        let bad = |k: &'static str| (k == "CONFIRM_CONCURRENCY").then(|| "0".to_owned());
        assert!(matches!(
            ConfirmSettings::from_vars(&bad),
            Err(ConfigError::Invalid { var: "CONFIRM_CONCURRENCY", .. })
        ));
    }
}
