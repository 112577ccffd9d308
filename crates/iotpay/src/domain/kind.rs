//! What a message is: which IOTPay API it belongs to and which kind of event it reports.

use std::fmt;

use serde::Serialize;

use super::{truncate, InvalidValue};

/// Which IOTPay API a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiVersion {
    /// Current credit-card API.
    V3,
    /// Deprecated credit-card API, still live.
    V2,
    /// General API (WeChat Pay, Alipay, UnionPay), `https://api.iotpaycloud.com/v1`.
    V1,
}

impl ApiVersion {
    /// `v3`, `v2` or `v1`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V3 => "v3",
            ApiVersion::V2 => "v2",
            ApiVersion::V1 => "v1",
        }
    }

    /// Reads the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "v3" => Some(ApiVersion::V3),
            "v2" => Some(ApiVersion::V2),
            "v1" => Some(ApiVersion::V1),
            _ => None,
        }
    }
}

impl TryFrom<String> for ApiVersion {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, InvalidValue> {
        Self::parse(&s).ok_or_else(|| InvalidValue(format!("api_version `{}` is not v3, v2 or v1", truncate(&s))))
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The normalized kind of event; only IOTPay status 2 or 3 yields a `*.succeeded` type.
/// Serializes as its stored and forwarded name (`payment.succeeded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A payment IOTPay reports as successful.
    PaymentSucceeded,
    /// A payment with any non-success status.
    PaymentFailed,
    /// A refund IOTPay reports as successful.
    RefundSucceeded,
    /// A refund with any non-success status.
    RefundFailed,
    /// A v3 `payType` this service does not know; never treated as money moved.
    Unrecognized,
}

impl EventType {
    /// The stored and forwarded name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PaymentSucceeded => "payment.succeeded",
            EventType::PaymentFailed => "payment.failed",
            EventType::RefundSucceeded => "refund.succeeded",
            EventType::RefundFailed => "refund.failed",
            EventType::Unrecognized => "transaction.unrecognized",
        }
    }

    /// Reads the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            EventType::PaymentSucceeded,
            EventType::PaymentFailed,
            EventType::RefundSucceeded,
            EventType::RefundFailed,
            EventType::Unrecognized,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }

    /// True for the types that report money moved.
    pub fn is_success(self) -> bool {
        matches!(self, EventType::PaymentSucceeded | EventType::RefundSucceeded)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl TryFrom<String> for EventType {
    type Error = InvalidValue;

    fn try_from(s: String) -> Result<Self, InvalidValue> {
        Self::parse(&s).ok_or_else(|| InvalidValue(format!("event_type `{}` is not a known event type", truncate(&s))))
    }
}

/// True when IOTPay's numeric status means success (2 or 3).
pub fn is_success_status(status: i64) -> bool {
    status == 2 || status == 3
}

/// IOTPay's numeric order status, as notified and as its query APIs answer (docs/iotpay/API.md,
/// V1.md). Any number is kept: one IOTPay has not documented is a status like the others, which
/// the rules treat as inconclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct IotpayStatus(i64);

impl IotpayStatus {
    /// 0: pending (v1: created, not paid).
    pub const PENDING: Self = Self(0);
    /// 1: unknown (v1: the payer is paying).
    pub const UNKNOWN: Self = Self(1);
    /// 2: succeeded.
    pub const SUCCEEDED: Self = Self(2);
    /// 3: succeeded too (v1: paid and the merchant notified).
    pub const SUCCEEDED_NOTIFIED: Self = Self(3);
    /// 4, v1 only: cancelled by the system.
    pub const CANCELLED_BY_SYSTEM: Self = Self(4);
    /// 9: failed (v1: cancelled by the payer).
    pub const FAILED: Self = Self(9);

    /// Wraps a status as sent.
    pub fn new(code: i64) -> Self {
        Self(code)
    }

    /// The number as sent.
    pub fn code(self) -> i64 {
        self.0
    }

    /// True for 2 or 3 ([`is_success_status`]).
    pub fn is_success(self) -> bool {
        is_success_status(self.0)
    }
}

impl From<i64> for IotpayStatus {
    fn from(code: i64) -> Self {
        Self(code)
    }
}

impl From<i32> for IotpayStatus {
    /// A stored status (an `integer` column).
    fn from(code: i32) -> Self {
        Self(i64::from(code))
    }
}

impl fmt::Display for IotpayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_text_reads_back_as_the_value_that_wrote_it() {
        for t in [EventType::PaymentSucceeded, EventType::RefundFailed, EventType::Unrecognized] {
            assert_eq!(EventType::try_from(t.as_str().to_owned()), Ok(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        for v in [ApiVersion::V3, ApiVersion::V2, ApiVersion::V1] {
            assert_eq!(ApiVersion::try_from(v.as_str().to_owned()), Ok(v));
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
        assert!(EventType::try_from("payment.maybe".to_owned()).is_err());
        assert!(ApiVersion::try_from("V3".to_owned()).is_err());
    }

    #[test]
    fn iotpay_status_success_is_2_or_3() {
        let success: Vec<i64> = (-1..=10).filter(|&c| IotpayStatus::new(c).is_success()).collect();
        assert_eq!(success, [2, 3]);
        assert_eq!(IotpayStatus::from(9_i32), IotpayStatus::FAILED);
        assert_eq!(serde_json::to_string(&IotpayStatus::SUCCEEDED).unwrap(), "2");
    }
}
