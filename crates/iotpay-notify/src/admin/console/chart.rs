//! Inline SVG charts of the last hour (no script, no external library): one line per series,
//! with a text summary for screen readers.

use std::fmt::Write as _;

use crate::store::admin::Minute;

const W: f64 = 560.0;
const H: f64 = 190.0;
const PAD_L: f64 = 44.0;
const PAD_B: f64 = 22.0;

/// A line of a chart: its name, CSS class and value per minute.
type Series<'a> = (&'a str, &'a str, fn(&Minute) -> i64);

/// `sums`: the legend shows each series' total over the hour (flows); otherwise its latest value
/// (levels such as a backlog, whose sum means nothing).
fn chart(title: &str, minutes: &[Minute], series: &[Series], sums: bool) -> String {
    let max = minutes.iter().flat_map(|m| series.iter().map(move |(_, _, f)| f(m))).max().unwrap_or(0).max(1) as f64;
    let n = minutes.len().max(2) as f64;
    let x = |i: usize| PAD_L + (W - PAD_L - 8.0) * i as f64 / (n - 1.0);
    let y = |v: i64| 8.0 + (H - PAD_B - 8.0) * (1.0 - v as f64 / max);
    let totals: Vec<String> = series
        .iter()
        .map(|(name, _, f)| match (sums, minutes.last()) {
            (true, _) => format!("{name}: {}", minutes.iter().map(f).sum::<i64>()),
            (false, Some(last)) => format!("{name}: now {}", f(last)),
            (false, None) => format!("{name}: now 0"),
        })
        .collect();
    let mut svg = format!(
        "<figure class=\"chart\"><figcaption>{title}</figcaption><svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{title}, last hour: {}\">",
        totals.join(", ")
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = (max * frac).round() as i64;
        let _ = write!(
            svg,
            "<line x1=\"{PAD_L}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/><text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{v}</text>",
            W - 8.0,
            PAD_L - 6.0,
            y(v) + 4.0,
            y = y(v)
        );
    }
    let last = minutes.len().saturating_sub(1);
    for (i, label, anchor) in [(0, "−60 min", "start"), (30, "−30 min", "middle"), (last, "now", "end")] {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" class=\"axis\" text-anchor=\"{anchor}\">{label}</text>",
            x(i),
            H - 4.0
        );
    }
    for (_, class, f) in series {
        let points: Vec<String> =
            minutes.iter().enumerate().map(|(i, m)| format!("{:.1},{:.1}", x(i), y(f(m)))).collect();
        let _ = write!(svg, "<polyline class=\"{class}\" points=\"{}\"/>", points.join(" "));
    }
    svg.push_str("</svg><ul class=\"legend\">");
    for ((name, class, _), total) in series.iter().zip(&totals) {
        let _ = write!(
            svg,
            "<li><span class=\"swatch {class}\"></span>{name} <span class=\"hint\">({})</span></li>",
            &total[name.len() + 2..]
        );
    }
    svg.push_str("</ul></figure>");
    svg
}

/// Events received and confirmed, deliveries delivered, per minute.
pub fn throughput(minutes: &[Minute]) -> String {
    chart(
        "Throughput per minute",
        minutes,
        &[
            ("received", "s1", |m| m.received),
            ("confirmed", "s2", |m| m.confirmed),
            ("delivered", "s3", |m| m.delivered),
        ],
        true,
    )
}

/// Confirmation and forwarding backlog at the end of each minute.
pub fn backlog(minutes: &[Minute]) -> String {
    chart(
        "Backlog at the end of each minute",
        minutes,
        &[
            ("events pending confirmation", "s4", |m| m.pending_events),
            ("deliveries pending", "s5", |m| m.pending_deliveries),
        ],
        false,
    )
}
