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
