//! The end of a scenario: drain, check the four invariants of docs/RELIABILITY.md, and the
//! figures they print.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use iotpay_devtools::sandbox::QueryOutcome;

use crate::common::MCH;

use super::sender::{Planned, SendReport};
use super::service::{tail, Service};
use super::{Rig, DRAIN_DEADLINE};

/// event_id, mch_id, pay_order_id, event_type, notification_count, amount, status, status_reason.
type EventRow = (String, String, String, String, i32, i64, String, Option<String>);

/// Counts of the end state, as printed and put in docs/RELIABILITY.md.
#[derive(Debug)]
pub struct Figures {
    pub sent: usize,
    pub resends: usize,
    pub failures: BTreeMap<String, usize>,
    pub stored: i64,
    pub confirmed: i64,
    pub rejected: i64,
    pub delivered: i64,
    pub duplicates: u32,
    /// Events pending and deliveries not yet delivered when the fault ended.
    pub backlog: (i64, i64),
    /// From the end of the fault until every event was decided (none `pending`).
    pub decided: Duration,
    pub drain: Duration,
    pub total: Duration,
}

/// Waits until nothing is pending (events and deliveries) and every endpoint has accepted every
/// confirmed event, then checks the four invariants. `duplicates_allowed`: a crash happened.
pub async fn drain_and_check(
    rig: &Rig,
    planned: &[Planned],
    report: &SendReport,
    fault_ended: Instant,
    duplicates_allowed: bool,
    services: &[&Service],
) -> Figures {
    let pool = rig.pool().await;
    let deadline = fault_ended + DRAIN_DEADLINE;
    let expected_accepts = (planned.iter().filter(|p| p.genuine).count() * rig.endpoints.len()) as i64;
    let mut decided_at = None;
    let mut backlog = None;
    let drained_at = loop {
        let (events, deliveries): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM payment_events WHERE status = 'pending'),
                    (SELECT count(*) FROM deliveries WHERE status <> 'delivered')",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or((i64::MAX, i64::MAX));
        backlog.get_or_insert((events, deliveries));
        if events == 0 && decided_at.is_none() {
            decided_at = Some(Instant::now());
        }
        let accepted = rig.receiver.accepted().len() as i64;
        if events == 0 && deliveries == 0 && accepted >= expected_accepts {
            break Instant::now();
        }
        if Instant::now() > deadline {
            let states: Vec<(String, i64)> = sqlx::query_as(
                "SELECT 'event ' || status, count(*) FROM payment_events GROUP BY status
                 UNION ALL SELECT 'delivery ' || status, count(*) FROM deliveries GROUP BY status",
            )
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
            panic!(
                "[{}] not drained within {DRAIN_DEADLINE:?}: {states:?}, receiver accepted {accepted} of {expected_accepts}",
                rig.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Invariant 1: every acknowledged notification is stored exactly once.
    assert_eq!(report.sent, planned.len(), "every notification was acknowledged");
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT event_id, mch_id, pay_order_id, event_type, notification_count, amount, status, status_reason
         FROM payment_events",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), planned.len(), "one row per distinct notification, no more");
    let by_order: HashMap<&str, &EventRow> = rows.iter().map(|r| (r.2.as_str(), r)).collect();
    assert_eq!(by_order.len(), rows.len(), "no pay_order_id stored twice");
    let queried: HashSet<String> = rig
        .sandbox
        .queries()
        .into_iter()
        .filter(|q| q.outcome == QueryOutcome::Found)
        .filter_map(|q| q.pay_order_id)
        .collect();
    let mut confirmed_ids = HashSet::new();
    let mut rejected_ids = HashSet::new();
    for p in planned {
        let row = by_order.get(p.order.pay_order_id.as_str()).unwrap_or_else(|| {
            panic!("[{}] acknowledged notification {} is not stored", rig.name, p.order.pay_order_id)
        });
        let (event_id, mch_id, _, event_type, count, amount, status, reason) = row;
        assert_eq!((mch_id.as_str(), event_type.as_str()), (MCH, p.event_type));
        assert!(*count >= 1);
        // Invariant 2: confirmed only with an agreeing query; tampered ones rejected.
        if p.genuine {
            assert_eq!(status, "confirmed", "[{}] {} ended {status} ({reason:?})", rig.name, p.order.pay_order_id);
            assert!(queried.contains(&p.order.pay_order_id), "confirmed without a query that found the order");
            assert_eq!(*amount, p.order.amount, "confirmed with the amount IOTPay tells");
            confirmed_ids.insert(event_id.clone());
        } else {
            assert_eq!(status, "rejected", "[{}] a tampered notification ended {status}", rig.name);
            assert!(reason.as_deref().unwrap_or_default().starts_with("amount differs"), "{reason:?}");
            rejected_ids.insert(event_id.clone());
        }
    }

    // Invariant 3: every confirmed event delivered to every endpoint; nothing else forwarded;
    // duplicates carry the same webhook-id (they are counted per id) and only after a crash.
    let undelivered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM payment_events e CROSS JOIN unnest($1::text[]) AS ep(endpoint)
         WHERE e.status = 'confirmed' AND NOT EXISTS (
             SELECT 1 FROM deliveries d WHERE d.event_id = e.event_id AND d.endpoint = ep.endpoint
                                          AND d.status = 'delivered')",
    )
    .bind(&rig.endpoints)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(undelivered, 0, "every confirmed event has a delivered row per endpoint");
    let forwarded_rejected: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE event_id = ANY($1)")
        .bind(rejected_ids.iter().cloned().collect::<Vec<_>>())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(forwarded_rejected, 0, "no delivery for a rejected event");
    let accepted = rig.receiver.accepted();
    assert!(rig.receiver.wrong().is_empty(), "wrong requests reached the endpoint: {:?}", rig.receiver.wrong());
    for endpoint in ["/ledger", "/erp"] {
        for id in &confirmed_ids {
            assert!(accepted.contains_key(&(endpoint.to_owned(), id.clone())), "{id} never reached {endpoint}");
        }
    }
    for (_, id) in accepted.keys() {
        assert!(confirmed_ids.contains(id), "{id} was forwarded but is not confirmed");
    }
    let duplicates: u32 = accepted.values().map(|n| n - 1).sum();
    if !duplicates_allowed {
        assert_eq!(duplicates, 0, "[{}] duplicates without a crash", rig.name);
    }

    // Invariant 4: never a 500 (nor any 4xx: every notification is valid); no panic.
    for what in report.failures.keys() {
        assert!(what == "503" || what == "transport", "[{}] the service answered {what}", rig.name);
    }
    for service in services {
        let log = service.log_text();
        assert!(!log.contains("panicked"), "[{}] the service panicked:\n{}", rig.name, tail(&log, 40));
    }

    let (stored, confirmed, rejected, delivered): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM payment_events),
                (SELECT count(*) FROM payment_events WHERE status = 'confirmed'),
                (SELECT count(*) FROM payment_events WHERE status = 'rejected'),
                (SELECT count(*) FROM deliveries WHERE status = 'delivered')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    Figures {
        backlog: backlog.unwrap_or_default(),
        decided: decided_at.unwrap_or(drained_at).saturating_duration_since(fault_ended),
        sent: report.sent,
        resends: report.resends(),
        failures: report.failures.clone(),
        stored,
        confirmed,
        rejected,
        delivered,
        duplicates,
        drain: drained_at.saturating_duration_since(fault_ended),
        total: rig.started.elapsed(),
    }
}

/// Prints a scenario's figures on one line (run with `--nocapture` to see it).
pub fn print_figures(name: &str, f: &Figures, extra: &str) {
    println!(
        "FIGURES [{name}] notifications sent {} | re-sends {} {:?} | events stored {} | confirmed {} | rejected {} | \
         deliveries delivered {} | duplicates delivered {} | \
         backlog at the end of the fault: {} events pending, {} deliveries undelivered | after the fault: all decided {:.2}s, all delivered {:.2}s | scenario {:.1}s{extra}",
        f.sent,
        f.resends,
        f.failures,
        f.stored,
        f.confirmed,
        f.rejected,
        f.delivered,
        f.duplicates,
        f.backlog.0,
        f.backlog.1,
        f.decided.as_secs_f64(),
        f.drain.as_secs_f64(),
        f.total.as_secs_f64(),
    );
}
