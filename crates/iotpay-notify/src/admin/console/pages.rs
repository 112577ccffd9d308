//! The console's HTML, rendered on the server from store rows. Every value is escaped; pages
//! work without JavaScript (the script only refreshes the counts).

mod event;

pub use event::event;

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{chart, Session};
use crate::forward::worker::endpoint_label;
use crate::store::admin::{ListedEvent, Stats, StatusCounts};
use crate::store::EventStatus;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true).replace('T', " ")
}

fn layout(title: &str, session: Option<&Session>, current: &str, body: &str) -> String {
    let nav = match session {
        Some(s) => {
            let link = |href: &str, label: &str| {
                let aria = if current == label { " aria-current=\"page\"" } else { "" };
                format!("<a href=\"{href}\"{aria}>{label}</a>")
            };
            format!(
                "<nav aria-label=\"Main\">{}{}<form method=\"post\" action=\"/logout\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" class=\"link\">Sign out</button></form></nav>",
                link("/", "Overview"),
                link("/events", "Events"),
                esc(&s.csrf)
            )
        }
        None => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · iotpay-notify</title><link rel=\"stylesheet\" href=\"/assets/console.css\"><script src=\"/assets/console.js\" defer></script></head>\
         <body><a class=\"skip\" href=\"#main\">Skip to content</a><header><span class=\"brand\">iotpay-notify</span>{nav}</header>\
         <main id=\"main\">{body}</main></body></html>",
        esc(title)
    )
}

/// A page with a heading and one message.
pub fn message(title: &str, text: &str) -> String {
    layout(
        title,
        None,
        "",
        &format!("<h1>{}</h1><p>{}</p><p><a href=\"/events\">Back to events</a></p>", esc(title), esc(text)),
    )
}

/// The sign-in form.
pub fn login(error: Option<&str>) -> String {
    let error = error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e))).unwrap_or_default();
    layout(
        "Sign in",
        None,
        "",
        &format!(
            "<h1>Sign in</h1>{error}<form method=\"post\" action=\"/login\" class=\"card narrow\">\
             <label for=\"token\">Admin token</label>\
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
             <button type=\"submit\">Sign in</button>\
             <p class=\"hint\">One of <code>ADMIN_TOKENS</code>. The session lasts 8 hours.</p></form>"
        ),
    )
}

fn counts_bar(counts: &StatusCounts, status: Option<EventStatus>) -> String {
    let mut out =
        String::from("<ul class=\"counts\" data-live-counts aria-live=\"polite\" aria-label=\"Events by status\">");
    for s in EventStatus::ALL {
        let (name, n) = (s.as_str(), counts.get(s));
        let current = if status == Some(s) { " aria-current=\"true\"" } else { "" };
        let _ = write!(
            out,
            "<li><a href=\"/events?status={name}\"{current}><span class=\"badge {name}\">{name}</span> <strong data-count=\"{name}\">{n}</strong></a></li>"
        );
    }
    out.push_str("</ul>");
    out
}

fn status_badge(status: &str) -> String {
    format!("<span class=\"badge {0}\">{0}</span>", esc(status))
}

fn money(cents: i64, currency: &str) -> String {
    format!("{}.{:02} {}", cents / 100, (cents % 100).abs(), esc(currency))
}

/// The events page.
pub fn events(
    session: &Session,
    q: &str,
    status: Option<EventStatus>,
    counts: &StatusCounts,
    rows: &[ListedEvent],
    next: Option<&str>,
) -> String {
    let mut body = String::from("<h1>Events</h1>");
    body.push_str(&counts_bar(counts, status));
    let mut options = String::from("<option value=\"\">any</option>");
    for s in EventStatus::ALL {
        let sel = if Some(s) == status { " selected" } else { "" };
        let _ = write!(options, "<option value=\"{s}\"{sel}>{s}</option>");
    }
    let _ = write!(
        body,
        "<form method=\"get\" action=\"/events\" class=\"search\" role=\"search\">\
         <label for=\"q\">Search by any id</label>\
         <input id=\"q\" name=\"q\" value=\"{}\" placeholder=\"evt_…, pay_order_id, mch_order_no\">\
         <label for=\"status\">Status</label><select id=\"status\" name=\"status\">{options}</select>\
         <button type=\"submit\">Search</button></form>",
        esc(q)
    );
    if rows.is_empty() {
        body.push_str("<p class=\"empty\">No events match.</p>");
    } else {
        body.push_str(
            "<table><caption class=\"sr-only\">Events, newest first</caption><thead><tr><th scope=\"col\">Created</th><th scope=\"col\">Event</th>\
             <th scope=\"col\">Type</th><th scope=\"col\">Status</th><th scope=\"col\" class=\"num\">Amount</th><th scope=\"col\">Merchant order</th>\
             <th scope=\"col\">IOTPay order</th><th scope=\"col\">Deliveries</th></tr></thead><tbody>",
        );
        for r in rows {
            let deliveries = match (r.deliveries, r.dead) {
                (0, _) => "–".to_owned(),
                (n, 0) => format!("{}/{n} delivered", r.delivered),
                (n, d) => format!("{}/{n} delivered, <span class=\"badge dead\">{d} dead</span>", r.delivered),
            };
            let _ = write!(
                body,
                "<tr><td>{}</td><td><a href=\"/events/{id}\"><code>{id}</code></a></td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
                 <td>{}</td><td>{}</td><td>{deliveries}</td></tr>",
                time(r.event.created_at),
                esc(r.event.event_type.as_str()),
                status_badge(r.event.status.as_str()),
                money(r.event.amount, r.event.currency.as_str()),
                esc(&r.event.mch_order_no),
                esc(r.event.pay_order_id.as_str()),
                id = esc(&r.event.event_id),
            );
        }
        body.push_str("</tbody></table>");
    }
    if let Some(next) = next {
        let _ = write!(
            body,
            "<p><a class=\"button\" href=\"/events?q={}&amp;status={}&amp;cursor={}\">Older events →</a></p>",
            esc(&urlencode(q)),
            status.map_or("", EventStatus::as_str),
            esc(next)
        );
    }
    layout("Events", Some(session), "Events", &body)
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The overview: counts, the last hour, endpoints.
pub fn overview(session: &Session, s: &Stats) -> String {
    let mut body = String::from("<h1>Overview</h1>");
    body.push_str(&counts_bar(&s.events, None));
    body.push_str("<h2>Last hour</h2>");
    body.push_str("<div class=\"charts\">");
    body.push_str(&chart::throughput(&s.per_minute));
    body.push_str(&chart::backlog(&s.per_minute));
    body.push_str("</div>");
    body.push_str("<h2>Dead and pending deliveries per endpoint</h2>");
    if s.endpoints.is_empty() {
        body.push_str("<p class=\"empty\">No pending or dead deliveries.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th scope=\"col\">Endpoint</th><th scope=\"col\" class=\"num\">Pending</th>\
             <th scope=\"col\" class=\"num\">Oldest pending</th><th scope=\"col\" class=\"num\">Dead</th><th scope=\"col\">Action</th></tr></thead><tbody>",
        );
        for e in &s.endpoints {
            let action = if e.dead > 0 {
                format!(
                    "<form method=\"post\" action=\"/endpoints/redrive\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                     <input type=\"hidden\" name=\"delivery\" value=\"{}\"><button type=\"submit\">Redrive {} dead</button></form>",
                    esc(&session.csrf),
                    e.delivery_id,
                    e.dead
                )
            } else {
                String::new()
            };
            let _ = write!(
                body,
                "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{:.0} s</td><td class=\"num\">{}</td><td>{action}</td></tr>",
                esc(&endpoint_label(&e.endpoint)),
                e.pending,
                e.oldest_pending_age_seconds,
                if e.dead > 0 { format!("<span class=\"badge dead\">{}</span>", e.dead) } else { "0".into() },
            );
        }
        body.push_str("</tbody></table>");
    }
    let _ = write!(body, "<p class=\"hint\">Figures as of {} (database clock).</p>", time(s.generated_at));
    layout("Overview", Some(session), "Overview", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
