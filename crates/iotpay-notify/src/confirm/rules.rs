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
mod tests {
    use super::*;

    use crate::domain::MchId;

    fn id(s: &str) -> PayOrderId {
        PayOrderId::parse(s).unwrap()
    }

    fn event(event_type: &str) -> StoredEvent {
        let refund = event_type.starts_with("refund");
        StoredEvent {
            event_type: EventType::parse(event_type).unwrap(),
            api_version: ApiVersion::V3,
            mch_id: MchId::parse("100").unwrap(),
            mch_order_no: "o1".into(),
            pay_order_id: id("PC1"),
            original_order_id: refund.then(|| id("PC0")),
            amount: 1500,
            pay_type: Some(if refund { "refund" } else { "pay" }.into()),
            ..StoredEvent::example()
        }
    }

    fn order_for(e: &StoredEvent, status: i64) -> QueriedOrder {
        QueriedOrder {
            api_version: e.api_version,
            pay_order_id: e.pay_order_id.to_string(),
            status,
            mch_id: Some(e.mch_id.to_string()),
            mch_order_no: Some(e.mch_order_no.clone()),
            amount: Some(e.amount),
            currency: Some(e.currency.as_str().to_owned()),
            pay_type: e.pay_type.clone(),
            original_order_id: e.original_order_id.as_ref().map(PayOrderId::to_string),
            pay_succ_time: None,
            signed: true,
        }
    }

    fn rejected(d: Decision, needle: &str) {
        match d {
            Decision::Rejected(r) => assert!(r.contains(needle), "{r} should mention {needle}"),
            other => panic!("expected rejection mentioning {needle}, got {other:?}"),
        }
    }

    #[test]
    fn agreeing_success_confirms() {
        for t in ["payment.succeeded", "refund.succeeded"] {
            let e = event(t);
            assert_eq!(decide(&e, &Ok(order_for(&e, 2))), Decision::Confirmed, "{t}");
            assert_eq!(decide(&e, &Ok(order_for(&e, 3))), Decision::Confirmed, "{t}");
        }
    }

    #[test]
    fn each_differing_field_rejects() {
        let e = event("refund.succeeded");
        type Change = fn(&mut QueriedOrder);
        let cases: [(&str, Change); 7] = [
            ("pay_order_id", |o| o.pay_order_id = "PC9".into()),
            ("mch_id", |o| o.mch_id = Some("999".into())),
            ("mch_order_no", |o| o.mch_order_no = Some("other".into())),
            ("amount", |o| o.amount = Some(1501)),
            ("currency", |o| o.currency = Some("USD".into())),
            ("pay_type", |o| o.pay_type = Some("pay".into())),
            ("original_order_id", |o| o.original_order_id = Some("PC7".into())),
        ];
        for (field, change) in cases {
            let mut o = order_for(&e, 2);
            change(&mut o);
            rejected(decide(&e, &Ok(o)), field);
        }
        let mut o = order_for(&e, 2);
        o.original_order_id = None;
        rejected(decide(&e, &Ok(o)), "original_order_id differs: notification PC0, IOTPay none");
    }

    #[test]
    fn a_contradiction_rejects_even_while_pending() {
        let e = event("payment.succeeded");
        let mut o = order_for(&e, 0);
        o.amount = Some(1);
        rejected(decide(&e, &Ok(o)), "amount differs: notification 1500, IOTPay 1");
    }

    #[test]
    fn status_rules() {
        let e = event("payment.succeeded");
        rejected(decide(&e, &Ok(order_for(&e, 9))), "status 9");
        assert!(matches!(decide(&e, &Ok(order_for(&e, 0))), Decision::Retry(r) if r.contains("status 0")));
        assert!(matches!(decide(&e, &Ok(order_for(&e, 1))), Decision::Retry(r) if r.contains("status 1")));
        assert!(matches!(decide(&e, &Ok(order_for(&e, 4))), Decision::Retry(r) if r.contains("unknown status 4")));
    }

    #[test]
    fn failures_confirm_only_as_failures() {
        for t in ["payment.failed", "refund.failed"] {
            let e = event(t);
            assert_eq!(decide(&e, &Ok(order_for(&e, 9))), Decision::Confirmed, "{t}: IOTPay agrees it failed");
            rejected(decide(&e, &Ok(order_for(&e, 2))), "succeeded");
            assert!(matches!(decide(&e, &Ok(order_for(&e, 0))), Decision::Retry(_)));
        }
    }

    #[test]
    fn unrecognized_is_never_confirmed() {
        let mut e = event("transaction.unrecognized");
        e.pay_type = Some("preauth".into());
        let o = order_for(&e, 2);
        assert!(matches!(decide(&e, &Ok(o)), Decision::Unconfirmed(r) if r.contains("preauth")));
    }

    #[test]
    fn query_errors_retry_except_definite_not_found() {
        let e = event("payment.succeeded");
        assert!(matches!(
            decide(&e, &Err(QueryError::NotFound("order not exist".into()))),
            Decision::NotFound(r) if r == "order unknown to IOTPay: order not exist"
        ));
        for err in [
            QueryError::Timeout,
            QueryError::Connect("refused".into()),
            QueryError::Transport("reset".into()),
            QueryError::HttpStatus(500),
            QueryError::HttpStatus(404),
            QueryError::Unparseable("x".into()),
            QueryError::BadSign,
            QueryError::Fail("busy".into()),
            QueryError::NoSigningKey("100".into()),
        ] {
            assert!(matches!(decide(&e, &Err(err.clone())), Decision::Retry(_)), "{err:?}");
        }
    }

    #[test]
    fn v2_checks_what_the_order_carries() {
        let mut e = event("payment.succeeded");
        e.api_version = ApiVersion::V2;
        e.pay_type = None;
        let mut o = order_for(&e, 3);
        (o.mch_id, o.amount, o.currency, o.pay_type) = (None, None, None, None);
        assert_eq!(decide(&e, &Ok(o.clone())), Decision::Confirmed, "absent fields cannot contradict");
        let mut sandbox = o.clone();
        sandbox.amount = Some(1);
        rejected(decide(&e, &Ok(sandbox)), "amount");
        let mut refund = o.clone();
        refund.pay_type = Some("refund".into());
        rejected(decide(&e, &Ok(refund)), "pay_type");
        let mut refund = o;
        refund.original_order_id = Some("P0".into());
        rejected(decide(&e, &Ok(refund)), "original_order_id");
    }

    #[test]
    fn not_found_rejects_only_after_enough_checks_over_enough_time() {
        let min_age = Duration::from_secs(600);
        let mut e = ClaimedEvent {
            event: event("payment.succeeded"),
            confirm_attempts: 1,
            not_found_checks: 0,
            not_found_secs: None,
            leased_by: "t".into(),
        };
        let at = |e: &ClaimedEvent| settle_not_found(e, "order unknown to IOTPay: x", 3, min_age);
        assert!(matches!(at(&e), Decision::Retry(r) if r.contains("check 1 of at least 3")));
        e.not_found_secs = Some(10_000);
        assert!(matches!(at(&e), Decision::Retry(_)), "a long span, but only one check");
        e.not_found_checks = 2;
        e.not_found_secs = Some(599);
        assert!(matches!(at(&e), Decision::Retry(_)), "three checks, but too short a span");
        e.not_found_checks = 20;
        e.not_found_secs = None;
        assert!(matches!(at(&e), Decision::Retry(_)), "no first answer recorded: the span starts now");
        e.not_found_checks = 2;
        e.not_found_secs = Some(600);
        rejected(at(&e), "order unknown to IOTPay: x (on 3 checks over 600s)");
    }

    #[test]
    fn only_an_answer_about_the_order_moves_the_not_found_count() {
        let e = event("payment.succeeded");
        assert_eq!(order_answer(&Ok(order_for(&e, 0))), OrderAnswer::Found, "pending: IOTPay knows the order");
        assert_eq!(order_answer(&Ok(order_for(&e, 9))), OrderAnswer::Found);
        assert_eq!(order_answer(&Err(QueryError::NotFound("order not exist".into()))), OrderAnswer::NotFound);
        for err in [QueryError::Timeout, QueryError::Fail("mchId not exist".into()), QueryError::HttpStatus(502)] {
            assert_eq!(order_answer(&Err(err.clone())), OrderAnswer::Unknown, "{err:?}");
        }
    }

    #[test]
    fn v1_rules() {
        let mut e = event("payment.succeeded");
        (e.api_version, e.pay_type, e.pay_order_id) = (ApiVersion::V1, None, id("WJ1"));
        assert_eq!(decide(&e, &Ok(order_for(&e, 2))), Decision::Confirmed);
        assert_eq!(decide(&e, &Ok(order_for(&e, 3))), Decision::Confirmed);
        rejected(decide(&e, &Ok(order_for(&e, 4))), "status 4 (cancelled by the system)");
        rejected(decide(&e, &Ok(order_for(&e, 9))), "status 9");
        for pending in [0, 1] {
            assert!(matches!(decide(&e, &Ok(order_for(&e, pending))), Decision::Retry(_)), "status {pending}");
        }
        assert!(matches!(decide(&e, &Ok(order_for(&e, 7))), Decision::Retry(_)), "unknown status");
        for (field, change) in [
            ("amount", (|o: &mut QueriedOrder| o.amount = Some(15000)) as fn(&mut QueriedOrder)),
            ("currency", |o| o.currency = Some("CNY".into())),
            ("mch_order_no", |o| o.mch_order_no = Some("other".into())),
            ("mch_id", |o| o.mch_id = Some("999".into())),
            ("pay_order_id", |o| o.pay_order_id = "WJ2".into()),
        ] {
            let mut o = order_for(&e, 2);
            change(&mut o);
            rejected(decide(&e, &Ok(o)), field);
        }
        // A v1 payment IOTPay calls failed is confirmed only as that failure.
        let mut failed = e.clone();
        failed.event_type = EventType::PaymentFailed;
        assert_eq!(decide(&failed, &Ok(order_for(&failed, 4))), Decision::Confirmed);
        assert_eq!(decide(&failed, &Ok(order_for(&failed, 9))), Decision::Confirmed);
        rejected(decide(&failed, &Ok(order_for(&failed, 2))), "succeeded");
        // Status 4 keeps its old meaning (unknown: retry) for the card APIs.
        let v3 = event("payment.succeeded");
        assert!(matches!(decide(&v3, &Ok(order_for(&v3, 4))), Decision::Retry(_)));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let first = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, first, max, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(1, first, max, 1.0), Duration::from_secs(2));
        assert!(backoff(1, first, max, 0.999) <= Duration::from_secs(5), "first retry within 5 s");
        assert_eq!(backoff(2, first, max, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(3, first, max, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(20, first, max, 1.0), max);
        assert_eq!(backoff(u32::MAX, first, max, 0.0), max / 2);
        assert_eq!(backoff(0, first, max, 1.0), first);
    }
}
