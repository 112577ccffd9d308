//! The statuses of stored rows, as the `status` columns hold them (their CHECK constraints list
//! the same values). SQL text may name them; Rust code uses these types.

use std::fmt;

use serde::Serialize;

/// Where an event is in confirmation (`payment_events.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type, Serialize)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// Stored, not yet decided.
    Pending,
    /// IOTPay's query agrees: forwarded.
    Confirmed,
    /// IOTPay's query contradicts the notification.
    Rejected,
    /// No conclusive answer in time, or never confirmable.
    Unconfirmed,
}

impl EventStatus {
    /// Every status, in the order commands, the API and the console list them.
    pub const ALL: [EventStatus; 4] =
        [EventStatus::Pending, EventStatus::Confirmed, EventStatus::Rejected, EventStatus::Unconfirmed];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Pending => "pending",
            EventStatus::Confirmed => "confirmed",
            EventStatus::Rejected => "rejected",
            EventStatus::Unconfirmed => "unconfirmed",
        }
    }

    /// Reads a stored or typed name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// `pending, confirmed, rejected, unconfirmed`, for messages that list the choices.
    pub fn choices() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl fmt::Display for EventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a delivery to one endpoint is (`deliveries.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type, Serialize)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// An endpoint answered 2xx.
    Delivered,
    /// The retry schedule is exhausted: waiting for an operator's redrive.
    Dead,
    /// Dropped by an operator (its endpoint left `FORWARD_URLS`).
    Dropped,
}

impl DeliveryStatus {
    /// Every status.
    pub const ALL: [DeliveryStatus; 4] =
        [DeliveryStatus::Pending, DeliveryStatus::Delivered, DeliveryStatus::Dead, DeliveryStatus::Dropped];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Dropped => "dropped",
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_stored_ones_and_serialize_alike() {
        for s in EventStatus::ALL {
            assert_eq!(EventStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in DeliveryStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(EventStatus::choices(), "pending, confirmed, rejected, unconfirmed");
        assert_eq!(EventStatus::parse("paid"), None);
        assert_eq!(EventStatus::parse("Pending"), None, "stored names are lower case");
    }
}
