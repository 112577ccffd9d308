//! Validated domain types shared by every stage of the flow.

use std::fmt;

use serde::Serialize;

mod card;
mod kind;

pub use card::{is_card_number_field, mask_pan};
pub use kind::{is_success_status, ApiVersion, EventType, IotpayStatus};

/// A merchant's signing key. Never printed: `Debug` and `Display` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct MerchantKey(String);

impl MerchantKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key's text, for signing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MerchantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MerchantKey(<redacted>)")
    }
}

/// Why an identifier or amount was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// Longest identifier accepted from IOTPay (its documented ids are at most 30 characters).
pub const MAX_ID_LEN: usize = 64;

fn check_id(what: &str, s: &str) -> Result<(), InvalidValue> {
    if s.is_empty() {
        return Err(InvalidValue(format!("{what} is empty")));
    }
    if s.len() > MAX_ID_LEN {
        return Err(InvalidValue(format!("{what} is longer than {MAX_ID_LEN} bytes")));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(InvalidValue(format!("{what} contains whitespace or control characters")));
    }
    // `&` and `=` are the sign string's separators: an id holding them could be a re-cut of
    // other signed fields (`paySuccTime=…&payType=refund`).
    if s.contains(['&', '=']) {
        return Err(InvalidValue(format!("{what} contains `&` or `=`")));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an identifier.
            pub fn parse(s: &str) -> Result<Self, InvalidValue> {
                check_id($what, s)?;
                Ok(Self(s.to_owned()))
            }

            /// The identifier's text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;

            /// Validates an owned identifier (a stored one) without copying it.
            fn try_from(s: String) -> Result<Self, InvalidValue> {
                check_id($what, &s)?;
                Ok(Self(s))
            }
        }
    };
}

id_type!(
    /// IOTPay merchant id (`mchId`).
    MchId,
    "mchId"
);
id_type!(
    /// IOTPay's transaction id (`payOrderId`, `originalOrderId`).
    PayOrderId,
    "payOrderId"
);
id_type!(
    /// The merchant's own order id (`mchOrderNo`).
    MchOrderNo,
    "mchOrderNo"
);

/// Largest amount accepted, in cents (CAD 10 billion): anything above is corrupt input.
pub const MAX_CENTS: i64 = 1_000_000_000_000;

/// An amount in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Cents(i64);

impl Cents {
    /// Parses plain decimal digits (no sign, fraction or exponent) within `0..=MAX_CENTS`.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if s.is_empty() || s.len() > 13 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidValue(format!("amount `{}` is not a whole number of cents", truncate(s))));
        }
        let v: i64 = s.parse().map_err(|_| InvalidValue("amount out of range".into()))?;
        if v > MAX_CENTS {
            return Err(InvalidValue("amount out of range".into()));
        }
        Ok(Self(v))
    }

    /// Wraps a value already known to be valid (e.g. read back from the database).
    pub fn from_i64(v: i64) -> Self {
        Self(v)
    }

    /// The amount in cents.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// ISO 4217 currency code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    /// Accepts three ASCII letters, stored upper case.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Self(s.to_ascii_uppercase()))
        } else {
            Err(InvalidValue(format!("currency `{}` is not a 3-letter code", truncate(s))))
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, InvalidValue> {
        Self::parse(&s)
    }
}

/// Stable id of an event, derived from its identity (mch_id, pay_order_id, event_type).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EventId(String);

/// Fixed namespace so every replica derives the same id for the same identity.
const EVENT_ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6c1f_4e2a_9b7d_4f0e_8a3c_2d5b_7e91_0a44);

impl EventId {
    /// Derives the id: `evt_` + UUIDv5 of the identity.
    pub fn derive(mch_id: &MchId, pay_order_id: &PayOrderId, event_type: EventType) -> Self {
        // Length-prefixed parts, so no two identities can produce the same name.
        let name = format!(
            "{}:{}|{}:{}|{}",
            mch_id.as_str().len(),
            mch_id,
            pay_order_id.as_str().len(),
            pay_order_id,
            event_type
        );
        let id = uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes());
        Self(format!("evt_{}", id.simple()))
    }

    /// Wraps a stored id.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(24) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_accepts_plain_digits_only() {
        assert_eq!(Cents::parse("1500").unwrap().get(), 1500);
        assert_eq!(Cents::parse("0").unwrap().get(), 0);
        for bad in ["", "-1", "1.5", "1e3", "+1", " 1", "abc", "99999999999999999999", "1000000000001"] {
            assert!(Cents::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_id_is_stable_and_distinct() {
        let m = MchId::parse("10000701").unwrap();
        let p = PayOrderId::parse("PC1").unwrap();
        let a = EventId::derive(&m, &p, EventType::PaymentSucceeded);
        assert_eq!(a, EventId::derive(&m, &p, EventType::PaymentSucceeded));
        // Pinned: a change here would give every stored event a new id after an upgrade.
        assert_eq!(a.as_str(), "evt_43a10e3cc44d5eeba8b400c1d4aef46b");
        assert_ne!(a, EventId::derive(&m, &p, EventType::RefundSucceeded));
        assert_ne!(a, EventId::derive(&m, &PayOrderId::parse("PC2").unwrap(), EventType::PaymentSucceeded));
        assert!(a.as_str().starts_with("evt_") && a.as_str().len() == 36);
    }

    #[test]
    fn ids_are_validated() {
        assert!(MchId::parse("10000701").is_ok());
        assert!(MchId::parse("").is_err());
        assert!(MchId::parse("a b").is_err());
        assert!(PayOrderId::parse(&"x".repeat(65)).is_err());
        assert!(Currency::parse("cad").is_ok_and(|c| c.as_str() == "CAD"));
        assert!(Currency::parse("CA").is_err());
    }

    #[test]
    fn stored_ids_are_checked_as_parsed_ones() {
        assert_eq!(MchId::try_from("10000701".to_owned()).unwrap().as_str(), "10000701");
        assert!(PayOrderId::try_from("a&b=c".to_owned()).is_err());
        assert!(MchOrderNo::try_from(String::new()).is_err());
        assert_eq!(Currency::try_from("CAD".to_owned()).unwrap().as_str(), "CAD");
    }

    #[test]
    fn key_is_redacted_in_debug() {
        let k = MerchantKey::new("SECRETKEY");
        assert!(!format!("{k:?}").contains("SECRETKEY"));
    }
}
