//! IOTPay's query API: the outbound call that confirms a notification, `cc_query` for v3 and v2
//! ([`card`]) and `query_order` for v1 ([`v1`]). This module holds what both answer: the order
//! ([`QueriedOrder`], [`FoundOrder`]), why there is none ([`QueryError`]), and how a `FAIL`
//! message is read ([`is_order_not_found`]); the client ([`QueryClient`]) sends the call.
//!
//! One call, one answer: no retries here. The caller (the confirmation worker) owns the schedule,
//! so that every attempt is visible, counted and bounded by its own lease.

use std::time::Duration;

use crate::domain::ApiVersion;

pub mod card;
mod client;
pub mod v1;

pub use client::{parse_found, parse_response, QueryClient};

/// Longest text kept from IOTPay's `retMsg` (it ends up in `status_reason`).
const MAX_MESSAGE_LEN: usize = 200;

/// Why a query produced no usable order. Only [`QueryError::NotFound`] is a definite answer;
/// every other variant says nothing about the payment and is worth asking again.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    /// IOTPay answered, definitely, that it does not know the order.
    #[error("order unknown to IOTPay: {0}")]
    NotFound(String),
    /// No complete answer within the timeout (connect or total).
    #[error("query timed out")]
    Timeout,
    /// The connection could not be made (DNS, refused, TLS).
    #[error("connection failed: {0}")]
    Connect(String),
    /// Another transport failure (reset mid-answer, ...).
    #[error("transport error: {0}")]
    Transport(String),
    /// An HTTP status other than 2xx (redirects are not followed).
    #[error("HTTP {0}")]
    HttpStatus(u16),
    /// The body is not a query answer this client understands.
    #[error("unparseable response: {0}")]
    Unparseable(String),
    /// The order carries a `sign` that none of the merchant's keys produces.
    #[error("response sign invalid")]
    BadSign,
    /// `retCode` FAIL that is not a definite "not found".
    #[error("IOTPay answered FAIL: {0}")]
    Fail(String),
    /// The merchant has no key configured, so the request cannot be signed.
    #[error("merchant {0} not configured: cannot sign the query")]
    NoSigningKey(String),
}

impl QueryError {
    /// A short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            QueryError::NotFound(_) => "not_found",
            QueryError::Timeout => "timeout",
            QueryError::Connect(_) => "connect",
            QueryError::Transport(_) => "transport",
            QueryError::HttpStatus(_) => "http_status",
            QueryError::Unparseable(_) => "unparseable",
            QueryError::BadSign => "bad_sign",
            QueryError::Fail(_) => "fail",
            QueryError::NoSigningKey(_) => "no_signing_key",
        }
    }
}

/// The order as IOTPay's query reports it, one shape for v3 and v2.
///
/// For v3 every identity field is required (a v3 answer without one is unparseable); v2's
/// `order` documents only `payOrderId`, `mchOrderNo`, `transid`, `status`, `paySuccTime`,
/// `originalOrderId` and `payType`, so the others are `None` when IOTPay leaves them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueriedOrder {
    /// Which API answered.
    pub api_version: ApiVersion,
    /// IOTPay's id of the transaction.
    pub pay_order_id: String,
    /// IOTPay status: 0 pending, 1 unknown (v1: paying), 2 or 3 success, 4 (v1: cancelled by the system), 9 failed / cancelled.
    pub status: i64,
    /// The merchant (always for v3).
    pub mch_id: Option<String>,
    /// The merchant's order id (always for v3).
    pub mch_order_no: Option<String>,
    /// Amount in cents (always for v3).
    pub amount: Option<i64>,
    /// Currency code, upper case (always for v3).
    pub currency: Option<String>,
    /// `pay` / `refund` (always for v3).
    pub pay_type: Option<String>,
    /// The refunded payment, for refunds.
    pub original_order_id: Option<String>,
    /// `paySuccTime` as sent.
    pub pay_succ_time: Option<String>,
    /// True when the order carried a `sign` and it verified.
    pub signed: bool,
}

/// What a query by `mchOrderNo` found (reconciliation): the order, plus the fields that a payment
/// event stored from the answer, rather than from a notification, carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundOrder {
    /// The order. Its `pay_order_id` is empty when a v1 answer does not name it: IOTPay's guide
    /// does not list `payOrderId` among `query_order`'s fields, and by `mchOrderNo` there is no
    /// asked-for id to fall back on. Its `pay_succ_time` is `None` unless it is short plain text.
    pub order: QueriedOrder,
    /// v3/v2 `channel` (`PF_CC`), v1 `channelId` (`WX_JSAPI`), when sent as short plain text.
    pub channel: Option<String>,
    /// v1 `channelOrderNo` (WeChat Pay's / Alipay's own number), when sent as short plain text.
    pub channel_order_no: Option<String>,
}

impl FoundOrder {
    /// `paySuccTime` as RFC 3339 UTC, as for a notification: v1 milliseconds since the epoch,
    /// v3/v2 a zone-less local time read in `zone`. `None` when absent or not in that form.
    pub fn pay_succ_at(&self, zone: &jiff::tz::TimeZone) -> Option<String> {
        let raw = self.order.pay_succ_time.as_deref()?;
        match self.order.api_version {
            ApiVersion::V1 => crate::v1::millis_to_rfc3339(raw),
            ApiVersion::V3 | ApiVersion::V2 => crate::notification::resolve_time(raw, zone),
        }
    }
}

/// Longest descriptive text (channel, channel order number, `paySuccTime`) kept from a query
/// answer found by `mchOrderNo`, as for a notification's free-text fields.
const MAX_FOUND_TEXT_LEN: usize = 128;

/// `text` when it is short plain text; such fields describe a payment and are forwarded, so
/// anything else is left out rather than stored.
fn kept_text(text: Option<&str>) -> Option<String> {
    text.filter(|t| t.len() <= MAX_FOUND_TEXT_LEN && !t.chars().any(char::is_control)).map(str::to_owned)
}

/// Connect and total timeouts of one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryTimeouts {
    /// Longest wait for the TCP/TLS connection.
    pub connect: Duration,
    /// Longest wait for the whole call, body included.
    pub total: Duration,
}
/// Words that name the order queried: a "not found" whose subject is one of these (or its `no`,
/// `id`, `number`) is about the order. Compared lower case, so `mchOrderNo` is `mchorderno`.
const ORDER_SUBJECTS: &[&str] = &["order", "orders", "orderid", "orderno", "payorderid", "mchorderno", "transaction"];
/// Words of a merchant setup problem (a wrong mchId, key, sign or channel): a message holding one
/// of them says nothing definite about the payment, whatever else it says.
const SETUP_WORDS: &[&str] =
    &["mch", "mchid", "merchant", "key", "sign", "signature", "channel", "account", "appid", "secret", "permission"];
/// Auxiliaries skipped between a subject and its "not" ("order does not exist").
const AUXILIARIES: &[&str] = &["is", "was", "are", "were", "does", "do", "did", "has", "have", "been"];

/// True when a FAIL message says the **order** is unknown: it holds at least one absence phrase
/// (`<subject> [is|does|...] not exist|exists|existed|found`, `no such <subject>`), the subject of
/// every one is the order (`order`, `payOrderId`, `mchOrderNo`, ...: [`ORDER_SUBJECTS`]), and no
/// word names a merchant setup problem ([`SETUP_WORDS`], except `merchant`/`mch` qualifying the
/// order: "merchant order not exist"). Anything else, in any language this does not read, is
/// inconclusive and retried: only a definite answer about the order may ever reject a payment.
pub fn is_order_not_found(message: &str) -> bool {
    let words = words(message);
    let about_order = |i: usize| {
        let w = words[i].as_str();
        // "order no not exist", "order id not found": the order's number is the order.
        ORDER_SUBJECTS.contains(&w)
            || (["no", "id", "number"].contains(&w) && i > 0 && ORDER_SUBJECTS.contains(&words[i - 1].as_str()))
    };
    let mut absences = 0;
    for (i, word) in words.iter().enumerate() {
        let subject = match word.as_str() {
            "not" if words.get(i + 1).is_some_and(|w| w.starts_with("exist") || w == "found") => {
                (0..i).rev().find(|&j| !AUXILIARIES.contains(&words[j].as_str()) && !is_id(&words[j]))
            }
            "no" if words.get(i + 1).is_some_and(|w| w == "such") => (i + 2 < words.len()).then_some(i + 2),
            _ => continue,
        };
        if !subject.is_some_and(about_order) {
            return false;
        }
        absences += 1;
    }
    // A setup word anywhere ("order not exist, check mchId") makes the message ambiguous, except
    // as the order's own qualifier ("merchant order not exist": the merchant's order number).
    let setup = words.iter().enumerate().any(|(i, w)| {
        SETUP_WORDS.contains(&w.as_str())
            && !(["merchant", "mch"].contains(&w.as_str())
                && words.get(i + 1).is_some_and(|n| ORDER_SUBJECTS.contains(&n.as_str())))
    });
    absences > 0 && !setup
}

/// The message's words, lower case, `n't` read as ` not`, split at anything not a letter or digit:
/// `ORDER_NOT_EXIST` reads as three words, `mch_order_no` as `mch order no` (whose subject is
/// the order's number), `mchOrderNo` as one word.
fn words(message: &str) -> Vec<String> {
    let text = message.to_lowercase().replace("n't", " not");
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

/// An id quoted in the message ("order PC123 not exist"): skipped when looking for the subject.
fn is_id(word: &str) -> bool {
    word.chars().any(|c| c.is_ascii_digit())
}

/// A `FAIL` answer's error: "not found" only when its message is about the order
/// ([`is_order_not_found`]), else inconclusive.
fn classify_fail(message: String) -> QueryError {
    if is_order_not_found(&message) {
        QueryError::NotFound(message)
    } else {
        QueryError::Fail(message)
    }
}

/// At most [`MAX_MESSAGE_LEN`] characters of IOTPay's text.
fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE_LEN) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
