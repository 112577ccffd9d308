//! The pure rules of confirmation: what one answer from IOTPay means for a stored event, and
//! when to ask again. No I/O here, so every rule is a table test.

use std::time::Duration;

use crate::domain::{ApiVersion, EventType, IotpayStatus, PayOrderId};
use crate::iotpay::query::{QueriedOrder, QueryError};
use crate::store::confirm::{ClaimedEvent, OrderAnswer};
use crate::store::StoredEvent;

/// What one check concludes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// IOTPay's answer agrees with the event.
    Confirmed,
    /// IOTPay's answer contradicts the event (the reason says how).
    Rejected(String),
    /// Nothing conclusive yet (the reason says why); ask again later.
    Retry(String),
    /// The event can never be confirmed (the reason says why).
    Unconfirmed(String),
    /// IOTPay answered that it does not know the order: a rejection only once
    /// [`settle_not_found`] says the answer has held long enough.
    NotFound(String),
}

/// Decides one check: the stored `event` against IOTPay's `answer`.
///
/// Safe side everywhere: only an answer that agrees on every identity and money field IOTPay
/// sent, with a final status that matches the event's type, confirms.
/// - `*.succeeded` events: status 2 or 3 confirms, 9 rejects.
/// - `*.failed` events: status 9 confirms the failure (the row stays `payment.failed` /
///   `refund.failed`: never a success); 2 or 3 rejects it (IOTPay says it succeeded).
/// - v1 (general API) only: status 4 (cancelled by the system) counts as 9 (cancelled by the payer).
/// - status 0, 1 or any other value: retry.
/// - `transaction.unrecognized`: never confirmed.
pub fn decide(event: &StoredEvent, answer: &Result<QueriedOrder, QueryError>) -> Decision {
    if let Some(decision) = never_confirmable(event) {
        return decision;
    }
    let order = match answer {
        Err(QueryError::NotFound(msg)) => return Decision::NotFound(format!("order unknown to IOTPay: {msg}")),
        Err(e) => return Decision::Retry(e.to_string()),
        Ok(order) => order,
    };
    if let Some(reason) = contradiction(event, order) {
        return Decision::Rejected(reason);
    }
    let status = IotpayStatus::new(order.status);
    // Status 4 means something only in the general API; the card APIs do not document it.
    let v1_cancelled = order.api_version == ApiVersion::V1 && status == IotpayStatus::CANCELLED_BY_SYSTEM;
    match (event.event_type.is_success(), status) {
        (_, IotpayStatus::PENDING) => Decision::Retry("IOTPay reports status 0 (pending)".into()),
        (_, IotpayStatus::UNKNOWN) => Decision::Retry("IOTPay reports status 1 (unknown)".into()),
        (true, s) if s.is_success() => Decision::Confirmed,
        (false, IotpayStatus::FAILED) => Decision::Confirmed,
        (false, IotpayStatus::CANCELLED_BY_SYSTEM) if v1_cancelled => Decision::Confirmed,
        (true, IotpayStatus::CANCELLED_BY_SYSTEM) if v1_cancelled => {
            Decision::Rejected("IOTPay reports status 4 (cancelled by the system)".into())
        }
        (true, IotpayStatus::FAILED) => Decision::Rejected("IOTPay reports status 9 (failed)".into()),
        (false, s) if s.is_success() => {
            Decision::Rejected(format!("IOTPay reports status {s} (succeeded) but the notification reported a failure"))
        }
        (_, s) => Decision::Retry(format!("IOTPay reports unknown status {s}")),
    }
}

/// The decision for an event no answer could ever confirm (`transaction.unrecognized`: this
/// service does not know what its `payType` means), so it is decided without asking IOTPay.
pub fn never_confirmable(event: &StoredEvent) -> Option<Decision> {
    (event.event_type == EventType::Unrecognized).then(|| {
        Decision::Unconfirmed(format!(
            "{} events are never confirmed (payType {})",
            event.event_type,
            event.pay_type.as_deref().unwrap_or("none")
        ))
    })
}

/// The first field on which IOTPay's answer contradicts the event, as a reason text.
/// A field IOTPay did not send (v2) cannot contradict; see README for which ones v2 checks.
fn contradiction(event: &StoredEvent, order: &QueriedOrder) -> Option<String> {
    let differs = |field: &str, ours: Option<&str>, theirs: Option<&str>| {
        Some(format!("{field} differs: notification {}, IOTPay {}", ours.unwrap_or("none"), theirs.unwrap_or("none")))
    };
    if order.pay_order_id != event.pay_order_id.as_str() {
        return differs("pay_order_id", Some(event.pay_order_id.as_str()), Some(&order.pay_order_id));
    }
    if let Some(m) = order.mch_id.as_deref().filter(|m| *m != event.mch_id.as_str()) {
        return differs("mch_id", Some(event.mch_id.as_str()), Some(m));
    }
    if let Some(m) = order.mch_order_no.as_deref().filter(|m| *m != event.mch_order_no) {
        return differs("mch_order_no", Some(&event.mch_order_no), Some(m));
    }
    if let Some(a) = order.amount.filter(|a| *a != event.amount) {
        return differs("amount", Some(&event.amount.to_string()), Some(&a.to_string()));
    }
    if let Some(c) = order.currency.as_deref().filter(|c| !c.eq_ignore_ascii_case(event.currency.as_str())) {
        return differs("currency", Some(event.currency.as_str()), Some(c));
    }
    let is_refund = matches!(event.event_type, EventType::RefundSucceeded | EventType::RefundFailed);
    let original_order_id = event.original_order_id.as_ref().map(PayOrderId::as_str);
    match order.api_version {
        ApiVersion::V3 => {
            if order.pay_type.as_deref() != event.pay_type.as_deref() {
                return differs("pay_type", event.pay_type.as_deref(), order.pay_type.as_deref());
            }
            if is_refund && order.original_order_id.as_deref() != original_order_id {
                return differs("original_order_id", original_order_id, order.original_order_id.as_deref());
            }
        }
        // v1 has no payType and no refunds; its mchId, mchOrderNo, amount and currency, required
        // in every v1 answer, were compared above.
        ApiVersion::V1 => {}
        ApiVersion::V2 => {
            // A v2 notification is always a payment: an order that IOTPay calls a refund, or
            // that refunds another order, contradicts it. Other v2 payType values are undocumented.
            if order.pay_type.as_deref().is_some_and(|p| p.eq_ignore_ascii_case("refund")) {
                return differs("pay_type", Some("pay (v2 payment)"), order.pay_type.as_deref());
            }
            if order.original_order_id.is_some() {
                return differs("original_order_id", None, order.original_order_id.as_deref());
            }
        }
    }
    None
}

/// What IOTPay's `answer` says about whether it knows the order, for the not-found count.
pub fn order_answer(answer: &Result<QueriedOrder, QueryError>) -> OrderAnswer {
    match answer {
        Ok(_) => OrderAnswer::Found,
        Err(QueryError::NotFound(_)) => OrderAnswer::NotFound,
        Err(_) => OrderAnswer::Unknown,
    }
}

/// What a "not found" answer means for `event` (whose earlier not-found answers in a row, and
/// when the first came, are on it): rejected once IOTPay said so on at least `checks` checks,
/// this one included, spanning at least `min_age` since the first; until then, ask again. One
/// answer is never enough (IOTPay may not know an order yet right after notifying it), and the
/// span is IOTPay's, not the event's: an old event (a backlog, a worker outage, a recheck) gets
/// the same `min_age` of answers as a new one.
pub fn settle_not_found(event: &ClaimedEvent, reason: &str, checks: u32, min_age: Duration) -> Decision {
    let seen = u32::try_from(event.not_found_checks).unwrap_or(0).saturating_add(1);
    let span = event.not_found_secs.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
    if seen >= checks && span >= min_age.as_secs() {
        Decision::Rejected(format!("{reason} (on {seen} checks over {span}s)"))
    } else {
        Decision::Retry(format!("{reason} (check {seen} of at least {checks}, over at least {}s)", min_age.as_secs()))
    }
}

/// Delay before check number `checks_done + 1`: `first * 2^(checks_done - 1)`, capped at `max`,
/// with "equal jitter" (a uniform point in the upper half, from `jitter` in `[0, 1)`), so the
/// first retry comes within `first` and replicas do not retry in lockstep.
pub fn backoff(checks_done: u32, first: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = checks_done.saturating_sub(1).min(32);
    let base = first.saturating_mul(1u32 << exp.min(31)).min(max);
    let half = base / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests;
