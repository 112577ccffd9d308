//! What a message is: which IOTPay API it belongs to and which kind of event it reports.

use std::fmt;

use serde::Serialize;

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

/// The normalized kind of event; only IOTPay status 2 or 3 yields a `*.succeeded` type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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

/// True when IOTPay's numeric status means success (2 or 3).
pub fn is_success_status(status: i64) -> bool {
    status == 2 || status == 3
}
