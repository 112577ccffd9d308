//! What the operator commands read besides their own flags' syntax: the database they work on
//! (`DATABASE_URL` only, not the merchants' keys), the time flags, and the error for a value that
//! parsed but means nothing.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::env::ConfigError;
use crate::store;

/// A command-line value that parsed but means nothing (`--status paid`, `--older-than soon`):
/// exits 2 like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A small pool on `DATABASE_URL`, the one variable the operator commands need.
pub async fn pool() -> anyhow::Result<PgPool> {
    let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.trim().is_empty());
    let url = url.ok_or(ConfigError::Missing("DATABASE_URL"))?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError::Invalid {
            var: "DATABASE_URL",
            reason: "must start with postgres:// or postgresql://".into(),
        }
        .into());
    }
    let pool = store::connect_lazy(&url, 2)?;
    Ok(pool)
}

/// Reads a time flag (`--since`, `--older-than`): an RFC 3339 time, or a duration before `now`
/// (`90s`, `30m`, `24h`, `7d`). A bad value is a [`UsageError`] (exit 2).
pub fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, UsageError> {
    use crate::duration::{self, Syntax, Unit};
    // Whole seconds to days, always with a unit.
    const SINCE: Syntax = Syntax { units: &[Unit::Secs, Unit::Mins, Unit::Hours, Unit::Days], bare: None };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    let s = s.trim();
    // Checked all the way: a huge duration is an error, never a wrapped, silently wrong time.
    let too_far = || UsageError(format!("`{s}` reaches before the earliest time this program can represent"));
    let ago = duration::parse(s, SINCE).map_err(|e| match e {
        duration::DurationError::TooLong { .. } => too_far(),
        _ => UsageError(format!("`{s}` is neither an RFC 3339 time nor a duration like 30m, 24h, 7d")),
    })?;
    let ago = chrono::Duration::from_std(ago).map_err(|_| too_far())?;
    now.checked_sub_signed(ago).ok_or_else(too_far)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::table::time;

    #[test]
    fn since_reads_times_and_durations() {
        let now = DateTime::parse_from_rfc3339("2026-01-10T00:00:00Z").unwrap().to_utc();
        assert_eq!(time(parse_since("2026-01-01T12:00:00+01:00", now).unwrap()), "2026-01-01T11:00:00Z");
        assert_eq!(time(parse_since("90s", now).unwrap()), "2026-01-09T23:58:30Z");
        assert_eq!(time(parse_since("30m", now).unwrap()), "2026-01-09T23:30:00Z");
        assert_eq!(time(parse_since("24h", now).unwrap()), "2026-01-09T00:00:00Z");
        assert_eq!(time(parse_since("7d", now).unwrap()), "2026-01-03T00:00:00Z");
        for bad in ["", "h", "5y", "yesterday", "-3h"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }
}
