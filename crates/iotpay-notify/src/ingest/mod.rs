//! Receive → verify → store: the domain step behind `POST /iotpay/notify` ([`handler`] is the
//! route, [`gate`] its front door).

pub mod gate;
pub mod guard;
pub mod handler;
pub mod limiter;
pub mod settings;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use sqlx::PgPool;

use crate::iotpay::sign::ReceivedSign;
use crate::iotpay::{self, Merchants, Notification, NotificationError, Params, ParamsError};
use crate::pressure::IngestPressure;
use crate::store::events::NotificationWriter;
use crate::store::group_commit::GroupCommit;
use crate::store::{NewNotification, Recorded, StoreError};
use guard::{Guard, GuardError};
pub use handler::notify;
use settings::BatchSettings;

/// Largest notification body accepted (CONTRACT.md).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How a body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json`.
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
}

impl BodyKind {
    /// Reads the content type; a missing one is told by the body's first byte.
    pub fn from_headers(headers: &HeaderMap, body: &[u8]) -> Result<Self, IngestError> {
        let Some(ct) = headers.get(header::CONTENT_TYPE) else {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            return Ok(if first == Some(&b'{') { BodyKind::Json } else { BodyKind::Form });
        };
        let ct = ct.to_str().map_err(|_| IngestError::UnsupportedMediaType)?;
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Ok(BodyKind::Json),
            "application/x-www-form-urlencoded" => Ok(BodyKind::Form),
            _ => Err(IngestError::UnsupportedMediaType),
        }
    }
}

/// Why a notification was not accepted; each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Content type other than JSON or form.
    #[error("unsupported content type")]
    UnsupportedMediaType,
    /// Body over [`MAX_BODY_BYTES`].
    #[error("body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The body could not be read from the connection.
    #[error("body could not be read")]
    BodyRead,
    /// The body is not parseable.
    #[error("unparseable body: {0}")]
    Unparseable(#[from] ParamsError),
    /// `sign` absent or not 32 hex characters.
    #[error("sign missing or malformed")]
    SignMalformed,
    /// `mchId` absent.
    #[error("mchId missing")]
    MchIdMissing,
    /// `mchId` not configured here.
    #[error("merchant not configured")]
    UnknownMerchant,
    /// The sign does not match any key of the merchant (a configured one: safe to log).
    #[error("sign does not verify")]
    BadSign {
        /// The configured merchant the notification claims to come from.
        mch_id: String,
    },
    /// Signed, but a required field is missing or malformed.
    #[error("{0}")]
    Invalid(#[from] NotificationError),
    /// Refused before reading: source not allowed, or out of failure budget.
    #[error("{0}")]
    Guarded(#[from] GuardError),
    /// The database could not commit; IOTPay will send again.
    #[error("database unavailable: {0}")]
    Unavailable(#[from] StoreError),
}

impl IngestError {
    /// The HTTP status for this error (CONTRACT.md).
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::BodyRead
            | IngestError::Unparseable(_)
            | IngestError::SignMalformed
            | IngestError::MchIdMissing
            | IngestError::Invalid(_) => StatusCode::BAD_REQUEST,
            IngestError::UnknownMerchant | IngestError::BadSign { .. } => StatusCode::UNAUTHORIZED,
            IngestError::Guarded(GuardError::NotAllowed) => StatusCode::FORBIDDEN,
            IngestError::Guarded(GuardError::RateLimited) => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short label for logs and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            IngestError::UnsupportedMediaType => "unsupported_media_type",
            IngestError::TooLarge => "too_large",
            IngestError::BodyRead => "body_unreadable",
            IngestError::Unparseable(_) => "unparseable",
            IngestError::SignMalformed => "sign_malformed",
            IngestError::MchIdMissing => "mch_id_missing",
            IngestError::UnknownMerchant => "unknown_merchant",
            IngestError::BadSign { .. } => "bad_sign",
            IngestError::Invalid(_) => "invalid",
            IngestError::Guarded(GuardError::NotAllowed) => "source_not_allowed",
            IngestError::Guarded(GuardError::RateLimited) => "rate_limited",
            IngestError::Unavailable(_) => "db_unavailable",
        }
    }

    /// True for the client's own faults that spend its address's failure budget: everything
    /// but a correctly signed notification whose fields fail a check (that is IOTPay's own
    /// traffic, or a leaked key, which the budget cannot help with), a database outage, and
    /// the guard's own refusals.
    pub fn spends_budget(&self) -> bool {
        !matches!(self, IngestError::Unavailable(_) | IngestError::Guarded(_) | IngestError::Invalid(_))
    }
}

/// A notification that is verified and durably committed.
#[derive(Debug)]
pub struct Accepted {
    /// The normalized notification.
    pub notification: Notification,
    /// What the store did.
    pub recorded: Recorded,
}

/// The ingest step's dependencies.
#[derive(Clone)]
pub struct Ingest {
    batcher: GroupCommit<NotificationWriter>,
    merchants: Arc<Merchants>,
    time_zone: crate::iotpay::TimeZone,
    store_timeout: Duration,
    guard: Arc<Guard>,
    pressure: IngestPressure,
}

impl Ingest {
    /// Builds the ingest step and starts its group-commit writers.
    pub fn new(
        pool: PgPool,
        merchants: Arc<Merchants>,
        time_zone: crate::iotpay::TimeZone,
        store_timeout: Duration,
        batch: BatchSettings,
        guard: Guard,
    ) -> Self {
        let batcher = GroupCommit::start(pool, NotificationWriter, batch);
        let pressure = IngestPressure::default();
        Self { batcher, merchants, time_zone, store_timeout, guard: Arc::new(guard), pressure }
    }

    /// The guard in front of the route.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// True when `body` parses and its sign verifies under a key of its merchant: the one test
    /// an address out of failure budget must pass.
    pub fn signed_by_configured_key(&self, headers: &HeaderMap, body: &[u8], query: &[u8]) -> bool {
        BodyKind::from_headers(headers, body).is_ok_and(|kind| self.verified(kind, body, query).is_ok())
    }

    /// Parses `body` and verifies its sign under one of its merchant's keys.
    fn verified(&self, kind: BodyKind, body: &[u8], query: &[u8]) -> Result<Params, IngestError> {
        // IOTPay's v1 platform sends its pairs in the query string as well as (or instead of)
        // the form body; a JSON body (v3) is the whole notification.
        let body_blank = body.iter().all(u8::is_ascii_whitespace);
        let params = match kind {
            BodyKind::Json if !body_blank || query.is_empty() => Params::from_json(body)?,
            BodyKind::Json | BodyKind::Form => Params::from_form_and_query(body, query)?,
        };
        let received_sign = ReceivedSign::from_params(&params).ok_or(IngestError::SignMalformed)?;
        let mch_id = params.text("mchId").ok_or(IngestError::MchIdMissing)?;
        let keys = self.merchants.keys(mch_id).ok_or(IngestError::UnknownMerchant)?;
        if !received_sign.verifies(&params, keys) {
            return Err(IngestError::BadSign { mch_id: mch_id.to_owned() });
        }
        Ok(params)
    }

    /// How busy this ingest step is (shared with the background workers, which yield to it).
    pub fn pressure(&self) -> IngestPressure {
        self.pressure.clone()
    }

    /// Parses, verifies and stores one notification; returns only after the commit.
    ///
    /// `query` is the URL's query string: IOTPay's v1 platform sends its pairs there as well as in
    /// the form body (or only there). It is read with form bodies and empty bodies; a JSON body
    /// (v3) is the whole notification, as before.
    pub async fn accept(
        &self,
        kind: BodyKind,
        body: &[u8],
        query: Option<&str>,
        remote_addr: Option<IpAddr>,
    ) -> Result<Accepted, IngestError> {
        let _in_progress = self.pressure.enter();
        let mut params = self.verified(kind, body, query.unwrap_or_default().as_bytes())?;
        // Masking happens after verification (the sign covers what was sent) and before
        // anything is stored or logged.
        iotpay::mask_card_numbers(&mut params);
        let notification = Notification::from_params(&params)?;
        let pay_succ_at = notification.pay_succ_at(&self.time_zone);
        let new = NewNotification {
            notification: notification.clone(),
            fields: params.to_json(),
            remote_addr: remote_addr.map(|a| a.to_string()),
            pay_succ_at,
        };
        // On timeout the write may still commit later; IOTPay's re-send is then a counted repeat.
        let recorded = tokio::time::timeout(self.store_timeout, self.batcher.submit(new))
            .await
            .map_err(|_| StoreError::Timeout)??;
        Ok(Accepted { notification, recorded })
    }
}
