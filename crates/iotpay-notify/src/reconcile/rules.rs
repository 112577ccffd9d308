//! What one look at an expected order means: pure, no I/O.
//!
//! Two steps. [`without_query`] settles the order from the payment events already stored (a
//! notification arrived): IOTPay is not asked. Otherwise [`decide`] reads IOTPay's answer to a
//! query by `mchOrderNo`. Safe side everywhere: `paid` only for a payment IOTPay reports
//! successful whose every field agrees with the order; `expired` only when IOTPay's answer says
//! "not paid" at `expires_at`; anything inconclusive keeps the order `expected` and asks again.

use std::time::Duration;

use crate::domain::{ApiVersion, EventId, EventType, MchId, PayOrderId};
use crate::iotpay::query::{FoundOrder, QueryError};
use crate::iotpay::TimeZone;
use crate::store::reconcile::{ClaimedOrder, FoundPayment, Outcome};

/// IOTPay statuses of a successful payment.
const PAID: [i64; 2] = [2, 3];

/// How IOTPay answered one query: the `result` label of `iotpay_reconciliation_queries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Status 2 or 3 (whether or not the payment could be checked against the order).
    Paid,
    /// Status 0 or 1, or one this service does not know: not (yet) paid.
    Pending,
    /// Cancelled or failed (9; v1 also 4).
    Cancelled,
    /// A successful payment that contradicts the order.
    Mismatch,
    /// IOTPay does not know the order.
    NotFound,
    /// No usable answer (timeout, HTTP error, bad sign, unparseable, FAIL).
    Error,
}

impl Answer {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Paid => "paid",
            Answer::Pending => "pending",
            Answer::Cancelled => "cancelled",
            Answer::Mismatch => "mismatch",
            Answer::NotFound => "not_found",
            Answer::Error => "error",
        }
    }
}

/// Delay before the next look: doubles from `first` with each query made, capped at `max`.
pub fn backoff(checks: i32, first: Duration, max: Duration) -> Duration {
    let factor = 1u32 << checks.clamp(0, 16) as u32;
    first.saturating_mul(factor).min(max)
}

/// Settles the order from its stored payment events, without asking IOTPay; `None` when no
/// usable notification exists (none arrived, or only ones IOTPay contradicted or never
/// confirmed), so IOTPay must be queried.
pub fn without_query(order: &ClaimedOrder, retry: Duration) -> Option<Outcome> {
    let settled = |state, event_id: &Option<String>, reason: &str| Outcome::Settled {
        state,
        event_id: event_id.clone(),
        reason: reason.to_owned(),
    };
    if order.paid_event.is_some() {
        return Some(settled("paid", &order.paid_event, ""));
    }
    if order.contradicting_event.is_some() {
        return Some(settled(
            "mismatch",
            &order.contradicting_event,
            "a confirmed payment for this order has another amount or currency",
        ));
    }
    if order.notification_pending {
        // Its confirmation is querying IOTPay already; it decides, so look again later.
        return Some(Outcome::Retry { reason: "a notification for the order is being confirmed".into(), delay: retry });
    }
    if order.failed_event.is_some() {
        return Some(settled("cancelled", &order.failed_event, "IOTPay notified a failed payment, and confirmed it"));
    }
    None
}

/// Decides what a query answer means for `order`: how IOTPay answered, and what to record.
/// A payment is `Paid` only when IOTPay reports it successful and its merchant, order number,
/// amount and currency all equal the order's; a successful payment that contradicts the order
/// is a `mismatch`, never paid.
pub fn decide(
    order: &ClaimedOrder,
    answer: Result<FoundOrder, QueryError>,
    retry: Duration,
    zone: &TimeZone,
) -> (Answer, Outcome) {
    // "Not paid" answers: the order expires once expires_at has passed.
    let unpaid = |reason: String| {
        if order.expired {
            Outcome::Settled { state: "expired", event_id: None, reason: format!("unpaid at expires_at: {reason}") }
        } else {
            Outcome::Retry { reason, delay: retry }
        }
    };
    // Inconclusive answers say nothing about the payment: never expired, asked again.
    let inconclusive = |reason: String| Outcome::Retry { reason, delay: retry };
    let found = match answer {
        Ok(found) => found,
        Err(QueryError::NotFound(m)) => {
            return (Answer::NotFound, unpaid(format!("IOTPay does not know the order: {m}")));
        }
        Err(e) => return (Answer::Error, inconclusive(format!("query failed: {e}"))),
    };
    let q = &found.order;
    let v1 = q.api_version == ApiVersion::V1;
    match q.status {
        0 => return (Answer::Pending, unpaid("IOTPay reports status 0 (not paid)".into())),
        // Card APIs: 1 is "unknown"; v1: the payer is paying. Neither says "not paid".
        1 => return (Answer::Pending, inconclusive("IOTPay reports status 1 (in progress or unknown)".into())),
        9 => return (Answer::Cancelled, settled_cancelled(9)),
        4 if v1 => return (Answer::Cancelled, settled_cancelled(4)),
        s if !PAID.contains(&s) => {
            return (
                Answer::Pending,
                inconclusive(format!("IOTPay reports status {s}, which this service does not know")),
            );
        }
        _ => {}
    }
    if let Some(reason) = contradiction(order, &found) {
        let outcome = Outcome::Settled { state: "mismatch", event_id: None, reason };
        return (Answer::Mismatch, outcome);
    }
    if q.amount.is_none() || q.currency.is_none() {
        return (
            Answer::Paid,
            inconclusive(format!(
                "IOTPay reports it paid (payOrderId {}) but its answer does not state amount and currency, so the \
                 payment cannot be checked against the order (IOTPay's v2 answer does not document them)",
                q.pay_order_id
            )),
        );
    }
    let (Ok(mch), Ok(pay_order_id)) = (MchId::parse(&order.mch_id), PayOrderId::parse(&q.pay_order_id)) else {
        return (
            Answer::Paid,
            inconclusive(
                "IOTPay reports it paid but its answer names no usable payOrderId, so the event cannot be \
                 derived as its notification's would be"
                    .into(),
            ),
        );
    };
    let payment = FoundPayment {
        event_id: EventId::derive(&mch, &pay_order_id, EventType::PaymentSucceeded).as_str().to_owned(),
        pay_order_id: q.pay_order_id.clone(),
        iotpay_status: q.status,
        pay_type: q.pay_type.clone(),
        pay_succ_time: q.pay_succ_time.clone(),
        pay_succ_at: found.pay_succ_at(zone),
        channel: found.channel.clone(),
        channel_order_no: found.channel_order_no.clone(),
    };
    (Answer::Paid, Outcome::Paid(payment))
}

fn settled_cancelled(status: i64) -> Outcome {
    let what = if status == 4 { "cancelled by the system" } else { "failed or cancelled" };
    Outcome::Settled { state: "cancelled", event_id: None, reason: format!("IOTPay reports status {status} ({what})") }
}

/// How a successful payment IOTPay reports contradicts the order, if it does. A field IOTPay
/// did not send cannot contradict (but a payment without amount and currency is not paid).
fn contradiction(order: &ClaimedOrder, found: &FoundOrder) -> Option<String> {
    let q = &found.order;
    if q.pay_type.as_deref().is_some_and(|t| t != "pay") {
        return Some(format!("IOTPay reports a {} for this order, not a payment", q.pay_type.as_deref().unwrap_or("")));
    }
    let mut differs: Vec<String> = [
        ("mchId", q.mch_id.as_deref(), order.mch_id.as_str()),
        ("mchOrderNo", q.mch_order_no.as_deref(), order.mch_order_no.as_str()),
        ("currency", q.currency.as_deref(), order.currency.as_str()),
    ]
    .into_iter()
    .filter_map(|(field, got, want)| got.filter(|g| *g != want).map(|g| format!("{field} {g} instead of {want}")))
    .collect();
    if let Some(a) = q.amount.filter(|a| *a != order.amount) {
        differs.push(format!("amount {a} instead of {}", order.amount));
    }
    (!differs.is_empty()).then(|| format!("IOTPay reports a payment with {}", differs.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iotpay::query::QueriedOrder;

    fn order() -> ClaimedOrder {
        ClaimedOrder {
            mch_id: "100".into(),
            mch_order_no: "o1".into(),
            api_version: "v3".into(),
            amount: 1500,
            currency: "CAD".into(),
            checks: 1,
            expired: false,
            leased_by: "w".into(),
            paid_event: None,
            contradicting_event: None,
            failed_event: None,
            notification_pending: false,
        }
    }

    fn answer(version: ApiVersion, status: i64, amount: i64) -> Result<FoundOrder, QueryError> {
        Ok(FoundOrder {
            order: QueriedOrder {
                api_version: version,
                pay_order_id: "PC1".into(),
                status,
                mch_id: Some("100".into()),
                mch_order_no: Some("o1".into()),
                amount: Some(amount),
                currency: Some("CAD".into()),
                pay_type: (version == ApiVersion::V3).then(|| "pay".into()),
                original_order_id: None,
                pay_succ_time: Some("2021-04-07 19:44:51".into()),
                signed: true,
            },
            channel: Some("PF_CC".into()),
            channel_order_no: None,
        })
    }

    fn v3(status: i64, amount: i64) -> Result<FoundOrder, QueryError> {
        answer(ApiVersion::V3, status, amount)
    }

    const R: Duration = Duration::from_secs(5);

    fn run(order: &ClaimedOrder, a: Result<FoundOrder, QueryError>) -> (Answer, Outcome) {
        decide(order, a, R, &TimeZone::get("America/Toronto").unwrap())
    }

    fn state(outcome: &Outcome) -> &str {
        match outcome {
            Outcome::Paid(_) => "paid",
            Outcome::Settled { state, .. } => state,
            Outcome::Retry { .. } => "retry",
        }
    }

    #[test]
    fn only_an_agreeing_successful_payment_is_paid_with_the_notification_event_id() {
        let (answer, Outcome::Paid(p)) = run(&order(), v3(2, 1500)) else { panic!() };
        assert_eq!(answer, Answer::Paid);
        let id = EventId::derive(
            &MchId::parse("100").unwrap(),
            &PayOrderId::parse("PC1").unwrap(),
            EventType::PaymentSucceeded,
        );
        assert_eq!(p.event_id, id.as_str());
        assert_eq!(p.pay_succ_at.as_deref(), Some("2021-04-07T23:44:51Z"), "read in the configured zone");
        assert_eq!(p.channel.as_deref(), Some("PF_CC"));
        assert_eq!(run(&order(), v3(2, 15)).0, Answer::Mismatch);
        assert_eq!(state(&run(&order(), v3(3, 15)).1), "mismatch");
        let mut other = v3(2, 1500).unwrap();
        other.order.currency = Some("USD".into());
        assert_eq!(state(&run(&order(), Ok(other)).1), "mismatch");
        let mut refund = v3(2, 1500).unwrap();
        refund.order.pay_type = Some("refund".into());
        assert_eq!(state(&run(&order(), Ok(refund)).1), "mismatch");
    }

    #[test]
    fn a_payment_that_cannot_be_checked_is_never_paid_nor_expired() {
        let expired = ClaimedOrder { expired: true, ..order() };
        // v2's documented answer: no amount, no currency.
        let mut v2 = answer(ApiVersion::V2, 2, 1500).unwrap();
        (v2.order.amount, v2.order.currency, v2.order.mch_id) = (None, None, None);
        // v1 by mchOrderNo, the answer naming no payOrderId.
        let mut anonymous = answer(ApiVersion::V1, 2, 1500).unwrap();
        anonymous.order.pay_order_id = String::new();
        for (what, a) in [("v2", v2), ("v1", anonymous)] {
            for o in [order(), expired.clone()] {
                let (label, outcome) = run(&o, Ok(a.clone()));
                assert_eq!(label, Answer::Paid, "{what}");
                assert!(matches!(outcome, Outcome::Retry { delay, .. } if delay == R), "{what}: {outcome:?}");
            }
        }
    }

    #[test]
    fn expired_only_when_iotpay_says_not_paid() {
        let expired = ClaimedOrder { expired: true, ..order() };
        let not_found = || Err(QueryError::NotFound("order not exist".into()));
        for (a, label) in [(v3(0, 1500), Answer::Pending), (not_found(), Answer::NotFound)] {
            assert!(matches!(run(&order(), a.clone()), (l, Outcome::Retry { .. }) if l == label));
            assert!(matches!(run(&expired, a), (l, Outcome::Settled { state: "expired", .. }) if l == label));
        }
        let inconclusive = [
            (Err(QueryError::Timeout), Answer::Error),
            (Err(QueryError::HttpStatus(500)), Answer::Error),
            (Err(QueryError::BadSign), Answer::Error),
            (Err(QueryError::Unparseable("x".into())), Answer::Error),
            (v3(1, 1500), Answer::Pending),
            (answer(ApiVersion::V1, 1, 1500), Answer::Pending),
            (v3(7, 1500), Answer::Pending),
        ];
        for (a, label) in inconclusive {
            assert!(matches!(run(&expired, a.clone()), (l, Outcome::Retry { .. }) if l == label), "{a:?}");
        }
        assert!(matches!(run(&expired, v3(2, 1500)), (Answer::Paid, Outcome::Paid(_))), "paid wins over expiry");
    }

    #[test]
    fn status_9_cancels_on_every_api_and_4_only_on_v1() {
        for version in [ApiVersion::V3, ApiVersion::V2, ApiVersion::V1] {
            assert!(matches!(run(&order(), answer(version, 9, 1500)), (Answer::Cancelled, Outcome::Settled { .. })));
        }
        assert!(matches!(run(&order(), answer(ApiVersion::V1, 4, 1500)), (Answer::Cancelled, Outcome::Settled { .. })));
        for version in [ApiVersion::V3, ApiVersion::V2] {
            let expired = ClaimedOrder { expired: true, ..order() };
            assert!(matches!(run(&expired, answer(version, 4, 1500)), (Answer::Pending, Outcome::Retry { .. })));
        }
    }

    #[test]
    fn stored_events_settle_the_order_without_a_query_unless_none_is_usable() {
        assert_eq!(without_query(&order(), R), None, "no notification: query");
        let paid = ClaimedOrder { paid_event: Some("evt_p".into()), notification_pending: true, ..order() };
        assert_eq!(
            without_query(&paid, R),
            Some(Outcome::Settled { state: "paid", event_id: Some("evt_p".into()), reason: String::new() })
        );
        let contradicted = ClaimedOrder { contradicting_event: Some("evt_x".into()), ..order() };
        assert!(matches!(without_query(&contradicted, R), Some(Outcome::Settled { state: "mismatch", .. })));
        let pending = ClaimedOrder { notification_pending: true, failed_event: Some("evt_f".into()), ..order() };
        assert!(matches!(without_query(&pending, R), Some(Outcome::Retry { delay, .. }) if delay == R));
        let failed = ClaimedOrder { failed_event: Some("evt_f".into()), ..order() };
        assert!(matches!(
            without_query(&failed, R),
            Some(Outcome::Settled { state: "cancelled", event_id: Some(ref e), .. }) if e == "evt_f"
        ));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let (f, m) = (Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(backoff(0, f, m), f);
        assert_eq!(backoff(2, f, m), Duration::from_secs(4));
        assert_eq!(backoff(60, f, m), m);
    }
}
