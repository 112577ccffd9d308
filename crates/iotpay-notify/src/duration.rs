//! Durations as people type them in variables and flags: a whole number and a unit (`500ms`,
//! `15s`, `30m`, `24h`, `7d`), one at a time or as a comma-separated list.
//!
//! A leaf: it imports nothing from this crate, so the settings, the operator commands and the
//! development tools (which depend on this crate) all read durations with this one parser, and
//! none of them imports another to do it. Each caller names the units it takes and what a bare
//! number means, because those differ by setting and are part of each one's documented syntax.

use std::fmt;
use std::time::Duration;

/// A unit a duration may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `ms`
    Millis,
    /// `s`
    Secs,
    /// `m`
    Mins,
    /// `h`
    Hours,
    /// `d`
    Days,
}

impl Unit {
    /// The suffix that writes this unit.
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::Millis => "ms",
            Unit::Secs => "s",
            Unit::Mins => "m",
            Unit::Hours => "h",
            Unit::Days => "d",
        }
    }

    /// `n` of this unit; `None` when that does not fit a [`Duration`] of whole seconds.
    fn times(self, n: u64) -> Option<Duration> {
        let secs_per = match self {
            Unit::Millis => return Some(Duration::from_millis(n)),
            Unit::Secs => 1,
            Unit::Mins => 60,
            Unit::Hours => 3600,
            Unit::Days => 86_400,
        };
        n.checked_mul(secs_per).map(Duration::from_secs)
    }
}

/// What one setting accepts: its units, and the unit of a number written without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syntax {
    /// The units accepted.
    pub units: &'static [Unit],
    /// The unit of a bare number (`5`); `None` refuses a bare number.
    pub bare: Option<Unit>,
}

/// Why a duration did not parse. Each names the text and, where it helps, the units accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No whole number where the duration starts (`x`, `-1s`, `h`, ``).
    #[error("`{text}` is not a whole number and a unit ({})", Units(.units))]
    NotANumber {
        /// The text read.
        text: String,
        /// The units accepted.
        units: &'static [Unit],
    },
    /// A number without a unit where the setting needs one.
    #[error("`{text}` has no unit ({})", Units(.units))]
    NoUnit {
        /// The text read.
        text: String,
        /// The units accepted.
        units: &'static [Unit],
    },
    /// A unit this setting does not take.
    #[error("`{text}`: the unit must be {}", Units(.units))]
    UnknownUnit {
        /// The text read.
        text: String,
        /// The units accepted.
        units: &'static [Unit],
    },
    /// Longer than a [`Duration`] holds: an error, never a wrapped, silently wrong value.
    #[error("`{text}` is longer than this program can represent")]
    TooLong {
        /// The text read.
        text: String,
    },
}

/// Lists units for error texts: `ms, s, m or h`.
struct Units<'a>(&'a [Unit]);

impl fmt::Display for Units<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, unit) in self.0.iter().enumerate() {
            let sep = match i {
                0 => "",
                i if i + 1 == self.0.len() => " or ",
                _ => ", ",
            };
            write!(f, "{sep}{}", unit.suffix())?;
        }
        Ok(())
    }
}

/// Parses one duration: surrounding blanks ignored, a whole number, optional blanks, a unit.
pub fn parse(text: &str, syntax: Syntax) -> Result<Duration, DurationError> {
    let text = text.trim();
    let units = syntax.units;
    // A leading `+` is accepted because FORWARD_RETRY_SCHEDULE, read with `u64::from_str`,
    // always took one; a `-` never was.
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    let digits_end = unsigned.find(|c: char| !c.is_ascii_digit()).unwrap_or(unsigned.len());
    let (digits, unit) = unsigned.split_at(digits_end);
    let n: u64 = match digits.parse() {
        Ok(n) => n,
        // Only digits, yet no u64: too many of them.
        Err(_) if !digits.is_empty() => return Err(DurationError::TooLong { text: text.to_owned() }),
        Err(_) => return Err(DurationError::NotANumber { text: text.to_owned(), units }),
    };
    let unit = match unit.trim_start() {
        "" => syntax.bare.ok_or_else(|| DurationError::NoUnit { text: text.to_owned(), units })?,
        suffix => *units
            .iter()
            .find(|u| u.suffix() == suffix)
            .ok_or_else(|| DurationError::UnknownUnit { text: text.to_owned(), units })?,
    };
    unit.times(n).ok_or_else(|| DurationError::TooLong { text: text.to_owned() })
}

/// Parses a comma-separated list (`0,5s,500ms`); empty entries are skipped, so an empty text
/// is an empty list (the caller says whether that is allowed).
pub fn parse_list(text: &str, syntax: Syntax) -> Result<Vec<Duration>, DurationError> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| parse(s, syntax)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Syntax = Syntax { units: &[Unit::Millis, Unit::Secs, Unit::Mins, Unit::Hours, Unit::Days], bare: None };

    #[test]
    fn every_unit_reads() {
        let read = |s| parse(s, ALL).unwrap();
        assert_eq!(read("250ms"), Duration::from_millis(250));
        assert_eq!(read("90s"), Duration::from_secs(90));
        assert_eq!(read("30m"), Duration::from_secs(1800));
        assert_eq!(read("24h"), Duration::from_secs(86_400));
        assert_eq!(read("7d"), Duration::from_secs(604_800));
        assert_eq!(read(" 5 ms "), Duration::from_millis(5), "blanks around and before the unit");
        assert_eq!(read("+3h"), Duration::from_secs(10_800));
    }

    #[test]
    fn a_bare_number_is_what_the_setting_says() {
        let secs = Syntax { units: &[Unit::Millis, Unit::Secs], bare: Some(Unit::Secs) };
        assert_eq!(parse("5", secs), Ok(Duration::from_secs(5)));
        assert!(matches!(parse("5", ALL), Err(DurationError::NoUnit { .. })));
    }

    #[test]
    fn bad_text_is_an_error_that_names_it() {
        let sandbox = Syntax { units: &[Unit::Millis, Unit::Secs, Unit::Mins, Unit::Hours], bare: None };
        assert_eq!(parse("1d", sandbox).unwrap_err().to_string(), "`1d`: the unit must be ms, s, m or h");
        assert_eq!(parse("15", sandbox).unwrap_err().to_string(), "`15` has no unit (ms, s, m or h)");
        for bad in ["", "h", "x", "-1s", "1.5s", "5y", "yesterday", "5 s s"] {
            let e = parse(bad, ALL).unwrap_err();
            assert!(!matches!(e, DurationError::TooLong { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_wrapped_duration() {
        // u64::MAX minutes overflowed (a panic in debug builds) in the sandbox's own parser.
        let max = u64::MAX.to_string();
        assert!(matches!(parse(&format!("{max}m"), ALL), Err(DurationError::TooLong { .. })));
        assert!(matches!(parse("213503982334602d", ALL), Err(DurationError::TooLong { .. })));
        assert!(matches!(parse(&format!("{max}0s"), ALL), Err(DurationError::TooLong { .. })));
        assert_eq!(parse(&format!("{max}s"), ALL), Ok(Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn lists_skip_empty_entries() {
        let secs = Syntax { units: &[Unit::Millis, Unit::Secs], bare: Some(Unit::Secs) };
        assert_eq!(
            parse_list("0, 5,,20ms,", secs).unwrap(),
            [Duration::ZERO, Duration::from_secs(5), Duration::from_millis(20)]
        );
        assert_eq!(parse_list(" ", secs).unwrap(), []);
        assert!(parse_list("1,x", secs).is_err());
    }
}
