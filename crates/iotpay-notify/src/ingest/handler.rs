//! `POST /iotpay/notify`: reads the request, hands it to [`Ingest::accept`], and answers with a
//! [`NotifyOutcome`], the one place that charges the failure budget, records metrics and logs.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::gate::Admitted;
use super::guard::Guard;
use super::{Accepted, BodyKind, Ingest, IngestError};
use crate::domain::ApiVersion;
use crate::iotpay;

/// The route: answers `SUCCESS` (v1: `success`) only once the notification is committed. The
/// source was admitted by [`super::gate::gate`] before the body was read.
pub async fn notify(
    State(ingest): State<Ingest>,
    Extension(Admitted { ip: client }): Extension<Admitted>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> NotifyOutcome {
    let started = Instant::now();
    let result = match body.map_err(body_error).and_then(|body| Ok((BodyKind::from_headers(&headers, &body)?, body))) {
        Ok((kind, body)) => ingest.accept(kind, &body, query.as_deref(), Some(client)).await,
        Err(e) => Err(e),
    };
    NotifyOutcome { result, client, latency: started.elapsed(), guard: Arc::clone(&ingest.guard) }
}

/// What became of one notification, and whom to charge for a failure.
pub struct NotifyOutcome {
    /// Accepted (stored or a repeat), or why not.
    pub result: Result<Accepted, IngestError>,
    /// The admitted client.
    pub client: IpAddr,
    /// Time from the body's arrival to the outcome.
    pub latency: Duration,
    guard: Arc<Guard>,
}

impl NotifyOutcome {
    /// The label of `iotpay_notifications_total` and of the log line.
    fn label(&self) -> &'static str {
        match &self.result {
            Ok(a) if a.recorded.inserted => "stored",
            Ok(_) => "duplicate",
            Err(e) => e.outcome(),
        }
    }

    fn record_metrics(&self, outcome: &'static str) {
        metrics::counter!("iotpay_notifications_total", "outcome" => outcome).increment(1);
        metrics::histogram!("iotpay_notify_duration_seconds", "outcome" => outcome).record(self.latency.as_secs_f64());
        if self.result.as_ref().is_ok_and(|a| a.recorded.differs_from_stored) {
            metrics::counter!("iotpay_notification_mismatches_total").increment(1);
        }
    }

    fn log(&self, outcome: &'static str) {
        let client = self.client;
        // Microseconds are enough; more digits are float noise (0.10029700000000001).
        let latency_ms = (self.latency.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        match &self.result {
            Ok(a) => {
                if a.recorded.differs_from_stored {
                    tracing::warn!(event_id = %a.recorded.event_id, "repeat notification differs from the stored event; the stored event is kept and the confirmation query decides");
                }
                tracing::info!(
                    mch_id = %a.notification.mch_id,
                    pay_order_id = %a.notification.pay_order_id,
                    event_id = %a.recorded.event_id,
                    event_type = %a.notification.event_type,
                    notification_count = a.recorded.notification_count,
                    remote = %client,
                    outcome,
                    latency_ms,
                    "notification accepted"
                );
            }
            Err(e) if e.status() == StatusCode::SERVICE_UNAVAILABLE => {
                tracing::error!(remote = %client, outcome, latency_ms, error = %e, "notification not stored");
            }
            Err(e) => {
                // The error may quote what the sender wrote: escaped and cut, never raw.
                let error = loggable(&e.to_string());
                let mch_id = match e {
                    IngestError::BadSign { mch_id } => Some(mch_id.as_str()),
                    _ => None,
                };
                tracing::warn!(remote = %client, mch_id, outcome, latency_ms, error = ?error, "notification refused");
            }
        }
    }
}

impl IntoResponse for NotifyOutcome {
    fn into_response(self) -> Response {
        if let Err(e) = &self.result {
            if e.spends_budget() {
                self.guard.record_failure(self.client);
            }
        }
        let outcome = self.label();
        self.record_metrics(outcome);
        self.log(outcome);
        match self.result {
            Ok(a) => (StatusCode::OK, acknowledgement(a.notification.api_version)).into_response(),
            Err(e) => (e.status(), "FAIL").into_response(),
        }
    }
}

/// Longest untrusted text put in one log field.
const MAX_LOGGED_CHARS: usize = 200;

/// Untrusted text for a log field: cut to [`MAX_LOGGED_CHARS`] characters (log it with `?`, which
/// escapes newlines and quotes, so it can never forge a line or a field).
pub fn loggable(text: &str) -> String {
    match text.char_indices().nth(MAX_LOGGED_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The body IOTPay's platform waits for before it stops re-sending: the card APIs want
/// `SUCCESS`, the general API (v1) `success`.
pub fn acknowledgement(version: ApiVersion) -> &'static str {
    match version {
        ApiVersion::V3 | ApiVersion::V2 => "SUCCESS",
        ApiVersion::V1 => iotpay::v1::ACK,
    }
}

fn body_error(rejection: BytesRejection) -> IngestError {
    match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => IngestError::TooLarge,
        _ => IngestError::BodyRead,
    }
}
