//! Forwarding knobs (`FORWARD_*` variables) and the retry policy they define.

use std::time::Duration;

use rand::Rng;

use crate::env::{number, ConfigError};

/// The default retry schedule, in seconds: the delay before attempt 1, 2, ... (8 attempts over
/// about 28 hours, as common webhook providers do).
pub const DEFAULT_SCHEDULE_SECS: &[u64] = &[0, 5, 300, 1800, 7200, 18000, 36000, 36000];

/// How a delivery is retried, timed out and spread.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardSettings {
    /// Delay before each attempt; its length is the number of attempts before `dead`.
    pub schedule: Vec<Duration>,
    /// Longest wait for one attempt (connect, send, answer, 1 KiB of body).
    pub timeout: Duration,
    /// Most attempts in flight to one endpoint from one process.
    pub concurrency_per_endpoint: usize,
    /// Fallback poll when no wake-up arrives (due retries, missed NOTIFYs).
    pub poll_interval: Duration,
    /// Largest `Retry-After` honoured; a longer one is cut to this.
    pub retry_after_max: Duration,
    /// Jitter applied to each scheduled delay, as a fraction (0.1 = ±10 %).
    pub jitter: f64,
}

impl Default for ForwardSettings {
    fn default() -> Self {
        Self {
            schedule: DEFAULT_SCHEDULE_SECS.iter().map(|s| Duration::from_secs(*s)).collect(),
            timeout: Duration::from_secs(15),
            concurrency_per_endpoint: 16,
            poll_interval: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(3600),
            jitter: 0.1,
        }
    }
}

impl ForwardSettings {
    /// Reads `FORWARD_RETRY_SCHEDULE` (seconds, comma-separated; `ms` suffix allowed),
    /// `FORWARD_TIMEOUT_MS`, `FORWARD_CONCURRENCY_PER_ENDPOINT`, `FORWARD_POLL_MS`,
    /// `FORWARD_RETRY_AFTER_MAX_SECS`.
    pub fn from_lookup(var: &impl Fn(&'static str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let schedule = match var("FORWARD_RETRY_SCHEDULE") {
            None => d.schedule,
            Some(s) => {
                parse_schedule(&s).map_err(|reason| ConfigError::Invalid { var: "FORWARD_RETRY_SCHEDULE", reason })?
            }
        };
        Ok(Self {
            schedule,
            timeout: Duration::from_millis(number(var, "FORWARD_TIMEOUT_MS", 15_000u64)?),
            concurrency_per_endpoint: number(var, "FORWARD_CONCURRENCY_PER_ENDPOINT", d.concurrency_per_endpoint)?,
            poll_interval: Duration::from_millis(number(var, "FORWARD_POLL_MS", 1000u64)?),
            retry_after_max: Duration::from_secs(number(var, "FORWARD_RETRY_AFTER_MAX_SECS", 3600u64)?),
            jitter: d.jitter,
        })
    }

    /// How long a claim lasts: longer than any attempt, so a live worker never loses its lease.
    pub fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(30)
    }

    /// The delay after failed attempt number `attempts` (1-based), or `None` when the schedule is
    /// exhausted (the delivery is dead). A `Retry-After` (429/503) replaces the scheduled delay,
    /// cut to `retry_after_max`.
    pub fn next_delay(&self, attempts: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let scheduled = *self.schedule.get(attempts as usize)?;
        if let Some(ra) = retry_after {
            return Some(ra.min(self.retry_after_max));
        }
        Some(jittered(scheduled, self.jitter))
    }
}

/// Spreads `d` by ±`fraction` so retries of a burst do not all land at once.
fn jittered(d: Duration, fraction: f64) -> Duration {
    if d.is_zero() || fraction <= 0.0 {
        return d;
    }
    let factor = rand::rng().random_range((1.0 - fraction)..=(1.0 + fraction));
    d.mul_f64(factor)
}

/// Parses `0,5,300` (seconds) or `0,20ms,50ms`.
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    use crate::duration::{self, Syntax, Unit};
    const SCHEDULE: Syntax = Syntax { units: &[Unit::Millis, Unit::Secs], bare: Some(Unit::Secs) };
    let schedule = duration::parse_list(s, SCHEDULE).map_err(|e| e.to_string())?;
    if schedule.is_empty() {
        return Err("the schedule needs at least one delay".into());
    }
    Ok(schedule)
}

/// Reads a `Retry-After` header: delay-seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_eight_attempts_then_dead() {
        let s = ForwardSettings { jitter: 0.0, ..Default::default() };
        assert_eq!(s.schedule.len(), 8);
        assert_eq!(s.next_delay(1, None), Some(Duration::from_secs(5)));
        assert_eq!(s.next_delay(2, None), Some(Duration::from_secs(300)));
        assert_eq!(s.next_delay(7, None), Some(Duration::from_secs(36000)));
        assert_eq!(s.next_delay(8, None), None);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let s = ForwardSettings::default();
        for _ in 0..1000 {
            let d = s.next_delay(2, None).unwrap();
            assert!(d >= Duration::from_secs(270) && d <= Duration::from_secs(330), "{d:?}");
        }
    }

    #[test]
    fn retry_after_replaces_the_delay_within_bounds_but_not_the_attempt_count() {
        let s = ForwardSettings { retry_after_max: Duration::from_secs(60), ..Default::default() };
        assert_eq!(s.next_delay(1, Some(Duration::from_secs(2))), Some(Duration::from_secs(2)));
        assert_eq!(s.next_delay(1, Some(Duration::from_secs(86400))), Some(Duration::from_secs(60)));
        assert_eq!(s.next_delay(8, Some(Duration::from_secs(2))), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").unwrap().to_utc();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn schedule_parses_seconds_and_milliseconds() {
        assert_eq!(
            parse_schedule("0, 5,300s").unwrap(),
            vec![Duration::ZERO, Duration::from_secs(5), Duration::from_secs(300)]
        );
        assert_eq!(parse_schedule("0,20ms").unwrap(), vec![Duration::ZERO, Duration::from_millis(20)]);
        assert!(parse_schedule("").is_err());
        assert!(parse_schedule("1,x").is_err());
    }

    #[test]
    fn knobs_are_read_from_the_environment() {
        let get = |k: &'static str| match k {
            "FORWARD_RETRY_SCHEDULE" => Some("0,1,2".to_owned()),
            "FORWARD_TIMEOUT_MS" => Some("250".to_owned()),
            "FORWARD_CONCURRENCY_PER_ENDPOINT" => Some("2".to_owned()),
            _ => None,
        };
        let s = ForwardSettings::from_lookup(&get).unwrap();
        assert_eq!(s.schedule.len(), 3);
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert_eq!(s.concurrency_per_endpoint, 2);
        let bad = |k: &'static str| (k == "FORWARD_RETRY_SCHEDULE").then(|| "soon".to_owned());
        assert!(matches!(
            ForwardSettings::from_lookup(&bad),
            Err(ConfigError::Invalid { var: "FORWARD_RETRY_SCHEDULE", .. })
        ));
    }
}
