//! What the sink made of each request, as it records and prints it.

use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// What the sink made of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Signed correctly and accepted: 200.
    Accepted,
    /// Signed correctly, refused on purpose (outage simulation): 503.
    Failing,
    /// Signature missing, wrong, or outside the time tolerance: 401.
    BadSignature,
    /// Signed correctly but the body is not a JSON event: 400.
    Malformed,
    /// Signed correctly, answered with a scripted [`Answer`](super::Answer) of this status.
    Scripted(StatusCode),
}

impl Verdict {
    /// The HTTP status answered.
    pub fn status(self) -> StatusCode {
        match self {
            Verdict::Accepted => StatusCode::OK,
            Verdict::Failing => StatusCode::SERVICE_UNAVAILABLE,
            Verdict::BadSignature => StatusCode::UNAUTHORIZED,
            Verdict::Malformed => StatusCode::BAD_REQUEST,
            Verdict::Scripted(status) => status,
        }
    }
}

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request's path (`/webhook`).
    pub path: String,
    /// Every request header.
    pub headers: HeaderMap,
    /// `webhook-id` (empty when absent).
    pub webhook_id: String,
    /// `webhook-timestamp`, when it parsed.
    pub timestamp: Option<i64>,
    /// The JSON body (`Null` when it is not JSON).
    pub body: Value,
    /// What the sink answered.
    pub verdict: Verdict,
    /// True when this `webhook-id` had already been accepted (at-least-once delivery).
    pub repeat: bool,
    /// When the request was received (for end-to-end latency in `bench --pipeline`).
    pub received_at: std::time::SystemTime,
    /// The same on the monotonic clock (for the gaps between requests).
    pub at: Instant,
}

impl Received {
    /// The event's `type`.
    pub fn event_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or("?")
    }

    /// A field of the event's `data`, as text.
    pub fn data(&self, field: &str) -> String {
        match &self.body["data"][field] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    /// One readable line: answer, id, type, version, order, amount.
    pub fn line(&self) -> String {
        let status = self.verdict.status().as_u16();
        match self.verdict {
            Verdict::BadSignature => format!("{status} bad signature, refused (webhook-id {:?})", self.webhook_id),
            Verdict::Malformed => format!("{status} signed but not a JSON event (webhook-id {})", self.webhook_id),
            Verdict::Accepted | Verdict::Failing | Verdict::Scripted(_) => format!(
                "{status} {} {:<18} {} {} {} {} {}{}{}{}",
                self.webhook_id,
                self.event_type(),
                self.data("api_version"),
                self.data("pay_order_id"),
                self.data("amount"),
                self.data("currency"),
                self.data("status"),
                if self.verdict == Verdict::Failing { "  (failing on purpose)" } else { "" },
                if matches!(self.verdict, Verdict::Scripted(_)) { "  (scripted)" } else { "" },
                if self.repeat { "  (repeat)" } else { "" },
            ),
        }
    }
}
