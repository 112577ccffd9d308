//! The event page: a summary, the timeline of notifications, checks and attempts, the
//! deliveries with their buttons, and every column.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{esc, layout, money, status_badge, time};
use crate::admin::console::Session;
use crate::forward::worker::endpoint_label;
use crate::store::ops::EventDetail;
use crate::store::{DeliveryStatus, EventStatus};

fn field<'a>(d: &'a EventDetail, name: &str) -> Option<&'a serde_json::Value> {
    d.event.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn field_text(d: &EventDetail, name: &str) -> String {
    match field(d, name) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.to_utc())
}

/// The event page: summary, timeline, deliveries with their buttons, every column.
pub fn event(session: &Session, d: &EventDetail, done: &str) -> String {
    let id = field_text(d, "event_id");
    let status = field_text(d, "status");
    let mut body = String::new();
    match done {
        "redriven" => body.push_str("<p class=\"notice\" role=\"status\">Delivery put back in the queue, due now.</p>"),
        "rechecked" => {
            body.push_str("<p class=\"notice\" role=\"status\">Event queued for one more check with IOTPay.</p>")
        }
        _ => {}
    }
    let amount = field(d, "amount").and_then(|v| v.as_i64()).unwrap_or(0);
    let _ = write!(
        body,
        "<h1>{} {}</h1><p class=\"sub\"><code>{}</code> · {} · merchant {} · order {} · IOTPay {}</p>",
        esc(&field_text(d, "event_type")),
        status_badge(&status),
        esc(&id),
        money(amount, &field_text(d, "currency")),
        esc(&field_text(d, "mch_id")),
        esc(&field_text(d, "mch_order_no")),
        esc(&field_text(d, "pay_order_id")),
    );
    let reason = field_text(d, "status_reason");
    if !reason.is_empty() {
        let _ = write!(body, "<p class=\"reason\"><strong>Reason:</strong> {}</p>", esc(&reason));
    }
    if EventStatus::parse(&status) == Some(EventStatus::Unconfirmed) {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/events/{}/recheck\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Re-check with IOTPay</button></form>",
            esc(&id),
            esc(&session.csrf)
        );
    }

    body.push_str("<h2>Deliveries</h2>");
    if d.deliveries.is_empty() {
        body.push_str("<p class=\"empty\">None (only confirmed events are forwarded).</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th scope=\"col\">Endpoint</th><th scope=\"col\">Status</th><th scope=\"col\">Attempts</th>\
             <th scope=\"col\">Last error</th><th scope=\"col\">Action</th></tr></thead><tbody>",
        );
        for dl in &d.deliveries {
            let action = match dl.status {
                DeliveryStatus::Dead => button(&id, dl.id, &session.csrf, "Redrive", false),
                DeliveryStatus::Pending => button(&id, dl.id, &session.csrf, "Retry now", true),
                DeliveryStatus::Delivered | DeliveryStatus::Dropped => String::new(),
            };
            let _ = write!(
                body,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
                esc(&endpoint_label(&dl.endpoint)),
                status_badge(dl.status.as_str()),
                dl.attempts,
                esc(dl.last_error.as_deref().unwrap_or("–")),
            );
        }
        body.push_str("</tbody></table>");
    }

    body.push_str("<h2>Timeline</h2><ol class=\"timeline\">");
    for (_, html) in timeline(d) {
        let _ = write!(body, "<li>{html}</li>");
    }
    body.push_str("</ol>");

    body.push_str("<details><summary>Every column of the event</summary><table class=\"kv\"><tbody>");
    for (k, v) in &d.event {
        let v = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "–".into(),
            other => other.to_string(),
        };
        let _ = write!(body, "<tr><th scope=\"row\">{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    body.push_str("</tbody></table></details>");
    layout(&format!("Event {id}"), Some(session), "Events", &body)
}

/// A button acting on one delivery, named by its id (its URL may carry a password).
fn button(event_id: &str, delivery: i64, csrf: &str, label: &str, pending: bool) -> String {
    format!(
        "<form method=\"post\" action=\"/events/{}/redrive\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"delivery\" value=\"{delivery}\">{}<button type=\"submit\">{label}</button></form>",
        esc(event_id),
        esc(csrf),
        if pending { "<input type=\"hidden\" name=\"pending\" value=\"1\">" } else { "" }
    )
}

/// Timeline entries (time, HTML), oldest first.
fn timeline(d: &EventDetail) -> Vec<(DateTime<Utc>, String)> {
    let mut items: Vec<(DateTime<Utc>, String)> = Vec::new();
    for n in &d.notifications {
        items.push((
            n.received_at,
            format!(
                "<time>{}</time> <span class=\"kind\">notification</span> received from {} ({})\
                 <details><summary>fields</summary><pre>{}</pre></details>",
                time(n.received_at),
                esc(n.remote_addr.as_deref().unwrap_or("unknown")),
                esc(&n.api_version),
                esc(&serde_json::to_string_pretty(&n.fields).unwrap_or_default())
            ),
        ));
    }
    for c in &d.checks {
        items.push((
            c.started_at,
            format!(
                "<time>{}</time> <span class=\"kind\">check {}</span> with IOTPay: {} {}",
                time(c.started_at),
                c.attempt,
                status_badge(&c.result),
                esc(c.reason.as_deref().unwrap_or("IOTPay's answer agrees with the notification"))
            ),
        ));
    }
    if let Some(at) = parse_time(&field_text(d, "decided_at")) {
        items.push((
            at,
            format!(
                "<time>{}</time> <span class=\"kind\">decision</span> {}",
                time(at),
                status_badge(&field_text(d, "status"))
            ),
        ));
    }
    for dl in &d.deliveries {
        for a in &dl.attempts_log {
            let result = match (a.http_status, &a.error) {
                (Some(s), _) => format!("HTTP {s}"),
                (None, Some(e)) => e.clone(),
                (None, None) => "–".into(),
            };
            let snippet: String = a.response_snippet.as_deref().unwrap_or("").chars().take(200).collect();
            items.push((
                a.started_at,
                format!(
                    "<time>{}</time> <span class=\"kind\">delivery attempt {}</span> to <code>{}</code>: <strong>{}</strong> in {} ms{}",
                    time(a.started_at),
                    esc(&a.label()),
                    esc(&endpoint_label(&dl.endpoint)),
                    esc(&result),
                    a.duration_ms,
                    if snippet.is_empty() { String::new() } else { format!(" <q>{}</q>", esc(&snippet)) }
                ),
            ));
        }
        if let Some(at) = dl.delivered_at {
            items.push((
                at,
                format!(
                    "<time>{}</time> <span class=\"kind\">delivered</span> to <code>{}</code>",
                    time(at),
                    esc(&endpoint_label(&dl.endpoint))
                ),
            ));
        }
        if let Some(at) = dl.dead_at {
            items.push((
                at,
                format!(
                    "<time>{}</time> <span class=\"kind\">dead</span> at <code>{}</code> {}",
                    time(at),
                    esc(&endpoint_label(&dl.endpoint)),
                    status_badge(DeliveryStatus::Dead.as_str())
                ),
            ));
        }
    }
    items.sort_by_key(|(t, _)| *t);
    items
}
