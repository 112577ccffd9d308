//! The demo's verdict: whether every told event ended as the story says, and the final table.

use super::Expect;
use crate::store::{ops::EventOverview, orders::OrderView};

pub(super) fn check(expects: &[Expect], rows: &[EventOverview], orders: &[OrderView]) -> Vec<String> {
    let mut failures = Vec::new();
    for e in expects {
        let row = rows.iter().find(|r| r.event.pay_order_id.as_str() == e.pay_order_id);
        if let Some((no, source)) = &e.order {
            let order = orders.iter().find(|o| &o.mch_order_no == no);
            let settled_by = row.map(|r| r.event.event_id.as_str());
            match order {
                Some(o)
                    if o.state == "paid"
                        && o.source.as_deref() == Some(*source)
                        && o.event_id.as_deref() == settled_by => {}
                Some(o) => failures.push(format!(
                    "{}: order {} instead of paid by {source} ({:?}, {:?})",
                    e.what, o.state, o.source, o.event_id
                )),
                None => failures.push(format!("{}: order {no} not registered", e.what)),
            }
        }
        match (e.status, row) {
            ("absent", None) => {}
            ("absent", Some(r)) => {
                failures.push(format!("{}: stored as {} but should not exist", e.what, r.event.status))
            }
            (_, None) => failures.push(format!("{}: not stored", e.what)),
            (status, Some(r)) => {
                if r.event.status.as_str() != status {
                    failures.push(format!("{}: {} instead of {status}", e.what, r.event.status));
                }
                if e.delivered && (r.deliveries == 0 || r.delivered < r.deliveries) {
                    failures.push(format!("{}: not delivered", e.what));
                }
                if !e.delivered && r.deliveries > 0 {
                    failures.push(format!("{}: forwarded although {}", e.what, r.event.status));
                }
            }
        }
    }
    if let Some(first) =
        rows.iter().find(|r| Some(r.event.pay_order_id.as_str()) == expects.first().map(|e| e.pay_order_id.as_str()))
    {
        if first.event.notification_count < 2 || first.delivered != 1 {
            failures.push(format!(
                "re-sent payment: {} notifications, {} deliveries (expected several notifications, one delivery)",
                first.event.notification_count, first.delivered
            ));
        }
    }
    failures
}

pub(super) fn print_table(expects: &[Expect], rows: &[EventOverview], orders: &[OrderView]) {
    println!(
        "{}",
        table_row(["story", "event_type", "api", "pay_order_id", "amount", "status", "notif.", "delivery", "reason"])
    );
    println!("{}", "-".repeat(120));
    for e in expects {
        let line = match rows.iter().find(|r| r.event.pay_order_id.as_str() == e.pay_order_id) {
            Some(r) => {
                let delivery = if r.deliveries == 0 {
                    "none".to_owned()
                } else {
                    format!("{}/{} in {}", r.delivered, r.deliveries, plural(r.attempts, "try", "tries"))
                };
                table_row([
                    e.what,
                    r.event.event_type.as_str(),
                    r.event.api_version.as_str(),
                    r.event.pay_order_id.as_str(),
                    &format!("{} {}", money(r.event.amount), r.event.currency.as_str()),
                    r.event.status.as_str(),
                    &r.event.notification_count.to_string(),
                    &delivery,
                    r.event.status_reason.as_deref().unwrap_or_else(|| note(e, orders)),
                ])
            }
            None => table_row([
                e.what,
                "-",
                "-",
                &e.pay_order_id,
                "-",
                "not stored",
                "0",
                "none",
                "refused with 401 (bad sign)",
            ]),
        };
        println!("{}", line.trim_end());
    }
}

/// The reason column of a confirmed event that settled a registered order.
fn note(e: &Expect, orders: &[OrderView]) -> &'static str {
    let source = e.order.as_ref().and_then(|(no, _)| orders.iter().find(|o| &o.mch_order_no == no)?.source.as_deref());
    match source {
        Some("reconciliation") => "never notified; found by reconciliation",
        _ => "",
    }
}

fn table_row(c: [&str; 9]) -> String {
    format!(
        "{:<11} {:<18} {:<3} {:<30} {:>10} {:<11} {:>6} {:<9} {}",
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
    )
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
