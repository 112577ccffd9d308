//! What the reconciliation queue hands out and takes back: a claimed order with what its events
//! say, the decision about it, and what recording that decision did.

use std::time::Duration;

/// An expected order claimed for one look, with what the payment events already say about it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedOrder {
    /// The merchant.
    pub mch_id: String,
    /// The merchant's order number.
    pub mch_order_no: String,
    /// `v3`, `v2` or `v1`.
    pub api_version: String,
    /// Amount in cents.
    pub amount: i64,
    /// Currency code.
    pub currency: String,
    /// Reconciliation queries made before this claim.
    pub checks: i32,
    /// `expires_at` has passed (database clock).
    pub expired: bool,
    /// The claim's token.
    pub leased_by: String,
    /// A confirmed `payment.succeeded` for the order with its amount and currency.
    pub paid_event: Option<String>,
    /// A confirmed `payment.succeeded` for the order with another amount or currency.
    pub contradicting_event: Option<String>,
    /// A confirmed `payment.failed` for the order (IOTPay notified a failure and confirmed it).
    pub failed_event: Option<String>,
    /// A notification for the order is stored and still being confirmed.
    pub notification_pending: bool,
}

/// A payment the reconciler found and verified against the order, to store as confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPayment {
    /// Derived exactly as for a notification of the same payment.
    pub event_id: String,
    /// IOTPay's id of the transaction.
    pub pay_order_id: String,
    /// IOTPay's status code.
    pub iotpay_status: i64,
    /// `payType` as reported.
    pub pay_type: Option<String>,
    /// `paySuccTime` as reported.
    pub pay_succ_time: Option<String>,
    /// `paySuccTime` as an RFC 3339 instant, resolved as for a notification.
    pub pay_succ_at: Option<String>,
    /// v3/v2 `channel`, v1 `channelId`.
    pub channel: Option<String>,
    /// v1 `channelOrderNo`.
    pub channel_order_no: Option<String>,
}

/// What one look at an order decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Paid and every field agrees: store the event as confirmed and forward it.
    Paid(FoundPayment),
    /// A final state (`paid` by a confirmed payment already stored, `cancelled`, `expired` or
    /// `mismatch`), the event that settles it if any, and why.
    Settled {
        /// The state.
        state: &'static str,
        /// The payment event behind it.
        event_id: Option<String>,
        /// Why, for `last_error`.
        reason: String,
    },
    /// Not settled: look again after `delay` (never later than `expires_at` while it is ahead).
    Retry {
        /// Why, for `last_error`.
        reason: String,
        /// When to look again.
        delay: Duration,
    },
}

/// The decision of one claim, to be recorded under its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDecision {
    /// The merchant.
    pub mch_id: String,
    /// The merchant's order number.
    pub mch_order_no: String,
    /// The claim's token ([`ClaimedOrder::leased_by`]).
    pub token: String,
    /// What to record.
    pub outcome: Outcome,
    /// IOTPay was queried for this decision (counted in `checks`).
    pub queried: bool,
    /// When to look again if a [`Outcome::Paid`] cannot settle the order yet: a notification
    /// of the same payment is stored and still being confirmed, and its confirmation decides.
    pub retry: Duration,
}

/// What recording a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The order is now `paid`. `stored`: this decision stored the event (a payment IOTPay's
    /// notification never delivered), with this many deliveries.
    Paid {
        /// The event was written by this decision.
        stored: bool,
        /// Deliveries created.
        deliveries: u64,
    },
    /// The order is now in a final state other than `paid`.
    Settled,
    /// Still `expected`, looked at again later.
    Rescheduled,
    /// The lease was lost (expired and re-claimed, or already decided): nothing written.
    LeaseLost,
}
