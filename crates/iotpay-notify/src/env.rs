//! Reading environment variables: the error every settings reader returns and the number parsers
//! they share. A leaf module: each settings type is read next to what it configures, `config`
//! assembles them, and all of them import this, which imports none of them.

/// A missing or malformed variable; the message names the variable and never its value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{0} is required but not set")]
    Missing(&'static str),
    /// A variable is set but cannot be used.
    #[error("{var} is malformed: {reason}")]
    Invalid {
        /// The variable's name.
        var: &'static str,
        /// What is wrong, without the secret value.
        reason: String,
    },
}

/// [`ConfigError::Invalid`] for `var`.
pub fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { var, reason: reason.into() }
}

/// Reads a positive whole number, or `default` when unset. `var` reads one variable, trimmed,
/// `None` when unset or empty (as [`crate::config::Config::from_lookup`] passes it).
pub fn number<T: std::str::FromStr + PartialOrd + Default>(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(s) => match s.parse::<T>() {
            Ok(v) if v > T::default() => Ok(v),
            _ => Err(invalid(name, "expected a positive whole number")),
        },
    }
}

/// Reads a whole number where 0 means "off", or `default` when unset.
pub fn whole_number(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: usize,
) -> Result<usize, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| invalid(name, "expected a whole number (0 = off)")),
    }
}
