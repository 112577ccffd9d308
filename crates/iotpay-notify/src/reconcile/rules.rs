//! What one reconciliation query means for an expected order: pure, no I/O.

use std::time::Duration;

use crate::domain::{EventId, EventType, MchId, PayOrderId};
use crate::iotpay::query::{QueriedOrder, QueryError};
use crate::store::reconcile::{ClaimedOrder, FoundPayment, Outcome};

/// IOTPay statuses of a successful payment.
const PAID: [i64; 2] = [2, 3];
/// IOTPay statuses of a cancelled or failed order (v1 4: cancelled by the system; 9: failed).
const CANCELLED: [i64; 2] = [4, 9];

/// Delay before the next query: doubles from `first` with each check, capped at `max`.
pub fn backoff(checks: i32, first: Duration, max: Duration) -> Duration {
    let factor = 1u32 << checks.clamp(0, 16) as u32;
    first.saturating_mul(factor).min(max)
}

/// Decides what a query answer means for `order`. A payment is `Paid` only when IOTPay reports
/// it successful and its merchant, order number, amount and currency all equal the order's; a
/// successful payment that contradicts the order is a `mismatch`, never paid.
pub fn decide(order: &ClaimedOrder, answer: Result<QueriedOrder, QueryError>, retry: Duration) -> Outcome {
    if order.notified {
        return Outcome::Notified;
    }
    let not_yet = |reason: String| {
        if order.expired {
            Outcome::Final("expired", format!("unpaid at expires_at ({reason})"))
        } else {
            Outcome::Retry(reason, retry)
        }
    };
    let q = match answer {
        Ok(q) => q,
        Err(QueryError::NotFound(m)) => return not_yet(format!("IOTPay does not know the order yet: {m}")),
        Err(e) => return not_yet(format!("query failed: {e}")),
    };
    if CANCELLED.contains(&q.status) {
        return Outcome::Final("cancelled", format!("IOTPay reports status {}", q.status));
    }
    if !PAID.contains(&q.status) {
        return not_yet(format!("IOTPay reports status {}", q.status));
    }
    if q.pay_type.as_deref().is_some_and(|t| t != "pay") {
        return Outcome::Final("mismatch", format!("IOTPay reports a {:?} for this order", q.pay_type));
    }
    let contradictions: Vec<String> = [
        ("mchId", q.mch_id.as_deref(), Some(order.mch_id.as_str())),
        ("mchOrderNo", q.mch_order_no.as_deref(), Some(order.mch_order_no.as_str())),
        ("currency", q.currency.as_deref(), Some(order.currency.as_str())),
    ]
    .into_iter()
    .filter(|(_, got, want)| got.is_some() && got != want)
    .map(|(f, got, want)| format!("{f} {} instead of {}", got.unwrap_or(""), want.unwrap_or("")))
    .chain(q.amount.filter(|a| *a != order.amount).map(|a| format!("amount {a} instead of {}", order.amount)))
    .collect();
    if !contradictions.is_empty() {
        return Outcome::Final("mismatch", format!("IOTPay reports a payment with {}", contradictions.join(", ")));
    }
    // v2 answers may omit amount and currency: a payment not shown to agree is not paid yet.
    if q.amount.is_none() || q.currency.is_none() {
        return not_yet("IOTPay's answer does not state amount and currency".into());
    }
    let (Ok(mch), Ok(pay_order_id)) = (MchId::parse(&order.mch_id), PayOrderId::parse(&q.pay_order_id)) else {
        return not_yet("IOTPay's payOrderId is not usable".into());
    };
    Outcome::Paid(FoundPayment {
        event_id: EventId::derive(&mch, &pay_order_id, EventType::PaymentSucceeded).as_str().to_owned(),
        pay_order_id: q.pay_order_id,
        iotpay_status: q.status,
        pay_type: q.pay_type,
        pay_succ_time: q.pay_succ_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ApiVersion;

    fn order() -> ClaimedOrder {
        ClaimedOrder {
            mch_id: "100".into(),
            mch_order_no: "o1".into(),
            api_version: "v3".into(),
            amount: 1500,
            currency: "CAD".into(),
            checks: 1,
            notified: false,
            expired: false,
            leased_by: "w".into(),
        }
    }

    fn answer(status: i64, amount: i64) -> QueriedOrder {
        QueriedOrder {
            api_version: ApiVersion::V3,
            pay_order_id: "PC1".into(),
            status,
            mch_id: Some("100".into()),
            mch_order_no: Some("o1".into()),
            amount: Some(amount),
            currency: Some("CAD".into()),
            pay_type: Some("pay".into()),
            original_order_id: None,
            pay_succ_time: None,
            signed: true,
        }
    }

    const R: Duration = Duration::from_secs(5);

    #[test]
    fn only_an_agreeing_successful_payment_is_paid_with_the_notification_event_id() {
        let Outcome::Paid(p) = decide(&order(), Ok(answer(2, 1500)), R) else { panic!() };
        let id = EventId::derive(
            &MchId::parse("100").unwrap(),
            &PayOrderId::parse("PC1").unwrap(),
            EventType::PaymentSucceeded,
        );
        assert_eq!(p.event_id, id.as_str());
        assert!(matches!(decide(&order(), Ok(answer(2, 15)), R), Outcome::Final("mismatch", _)));
        let mut other = answer(2, 1500);
        other.currency = Some("USD".into());
        assert!(matches!(decide(&order(), Ok(other), R), Outcome::Final("mismatch", _)));
        let mut v2 = answer(2, 1500);
        v2.amount = None;
        assert!(matches!(decide(&order(), Ok(v2), R), Outcome::Retry(..)));
    }

    #[test]
    fn pending_retries_until_expiry_cancelled_is_final_and_notified_is_never_queried() {
        assert!(matches!(decide(&order(), Ok(answer(0, 1500)), R), Outcome::Retry(_, d) if d == R));
        assert!(matches!(decide(&order(), Err(QueryError::Timeout), R), Outcome::Retry(..)));
        assert!(matches!(decide(&order(), Ok(answer(9, 1500)), R), Outcome::Final("cancelled", _)));
        let expired = ClaimedOrder { expired: true, ..order() };
        assert!(matches!(decide(&expired, Ok(answer(0, 1500)), R), Outcome::Final("expired", _)));
        assert!(matches!(decide(&expired, Ok(answer(2, 1500)), R), Outcome::Paid(_)), "paid wins over expiry");
        let notified = ClaimedOrder { notified: true, ..order() };
        assert_eq!(decide(&notified, Ok(answer(2, 1500)), R), Outcome::Notified);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let (f, m) = (Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(backoff(0, f, m), f);
        assert_eq!(backoff(2, f, m), Duration::from_secs(4));
        assert_eq!(backoff(60, f, m), m);
    }
}
