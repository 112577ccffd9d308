//! IOTPay's query API (`cc_query` for v3 and v2, `query_order` for v1: see [`super::query_v1`]):
//! the outbound call that confirms a notification.
//!
//! One call, one answer: no retries here. The caller (the confirmation worker) owns the schedule,
//! so that every attempt is visible, counted and bounded by its own lease.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::params::Params;
use super::query_v1;
use super::sign::{self, SIGN_FIELD};
use crate::domain::{ApiVersion, Cents, MchId, MerchantKey, PayOrderId};
use crate::merchants::Merchants;

/// Largest response body read from IOTPay; anything bigger is not a query answer.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
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
            ApiVersion::V1 => super::v1::millis_to_rfc3339(raw),
            ApiVersion::V3 | ApiVersion::V2 => super::notification::resolve_time(raw, zone),
        }
    }
}

/// Longest descriptive text (channel, channel order number, `paySuccTime`) kept from a query
/// answer found by `mchOrderNo`, as for a notification's free-text fields.
const MAX_FOUND_TEXT_LEN: usize = 128;

/// `text` when it is short plain text; such fields describe a payment and are forwarded, so
/// anything else is left out rather than stored.
pub(super) fn kept_text(text: Option<&str>) -> Option<String> {
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

/// A client of IOTPay's query API for the configured merchants.
#[derive(Clone)]
pub struct QueryClient {
    http: reqwest::Client,
    v3_url: String,
    v2_url: String,
    v1_url: String,
    merchants: Arc<Merchants>,
}

impl std::fmt::Debug for QueryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryClient")
            .field("v3_url", &self.v3_url)
            .field("v2_url", &self.v2_url)
            .field("v1_url", &self.v1_url)
            .finish()
    }
}

impl QueryClient {
    /// Builds a client for the API bases (`<v3/v2 base>/cc_query`, `<v1 base>/query_order`),
    /// signing with each merchant's first key.
    pub fn new(
        v3_base: &str,
        v2_base: &str,
        v1_base: &str,
        merchants: Arc<Merchants>,
        timeouts: QueryTimeouts,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.total)
            // A redirected POST becomes a GET elsewhere: never what a query means.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("iotpay-notify/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            v3_url: format!("{}/cc_query", v3_base.trim_end_matches('/')),
            v2_url: format!("{}/cc_query", v2_base.trim_end_matches('/')),
            v1_url: format!("{}/{}", v1_base.trim_end_matches('/'), query_v1::PATH),
            merchants,
        })
    }

    /// Asks IOTPay for one order by its `payOrderId`, once.
    pub async fn query(
        &self,
        version: ApiVersion,
        mch_id: &MchId,
        pay_order_id: &PayOrderId,
    ) -> Result<QueriedOrder, QueryError> {
        let (body, keys) = self.fetch(version, mch_id, "payOrderId", pay_order_id.as_str()).await?;
        match version {
            ApiVersion::V1 => query_v1::parse_response(&body, keys, Some(pay_order_id.as_str())),
            ApiVersion::V3 | ApiVersion::V2 => parse_response(version, &body, keys),
        }
    }

    /// Asks IOTPay for one order by the merchant's `mchOrderNo`, once: how an order whose
    /// notification never arrived (so whose `payOrderId` is unknown here) is found. The answer's
    /// `mchOrderNo` must be the one asked for, or the answer is unparseable.
    pub async fn query_by_mch_order_no(
        &self,
        version: ApiVersion,
        mch_id: &MchId,
        mch_order_no: &str,
    ) -> Result<FoundOrder, QueryError> {
        let (body, keys) = self.fetch(version, mch_id, "mchOrderNo", mch_order_no).await?;
        let found = parse_found(version, &body, keys)?;
        if found.order.mch_order_no.as_deref().is_some_and(|m| m != mch_order_no) {
            return Err(QueryError::Unparseable("the answer is about another mchOrderNo".into()));
        }
        Ok(found)
    }

    /// Sends one signed query naming the order by `field`; the answer's body and the keys its
    /// `sign` may verify under.
    async fn fetch(
        &self,
        version: ApiVersion,
        mch_id: &MchId,
        field: &str,
        value: &str,
    ) -> Result<(Vec<u8>, &[MerchantKey]), QueryError> {
        let key =
            self.merchants.signing_key(mch_id).ok_or_else(|| QueryError::NoSigningKey(mch_id.as_str().to_owned()))?;
        let (url, content_type, body) = match version {
            ApiVersion::V3 => (&self.v3_url, JSON_CONTENT_TYPE, json_body(mch_id, field, value, key)),
            ApiVersion::V2 => (&self.v2_url, JSON_CONTENT_TYPE, json_body(mch_id, field, value, key)),
            ApiVersion::V1 => (
                &self.v1_url,
                "application/x-www-form-urlencoded",
                query_v1::request_body_by(mch_id, field, value, key),
            ),
        };
        let mut resp = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(QueryError::HttpStatus(resp.status().as_u16()));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(QueryError::Unparseable(format!("body larger than {MAX_RESPONSE_BYTES} bytes")));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((bytes, self.merchants.keys(mch_id.as_str()).unwrap_or_default()))
    }
}

const JSON_CONTENT_TYPE: &str = "application/json;charset=UTF-8";

/// The signed JSON body of a v3/v2 `cc_query` naming the order by `field`.
pub fn json_body(mch_id: &MchId, field: &str, value: &str, key: &MerchantKey) -> String {
    let pairs = [("mchId", mch_id.as_str()), (field, value)];
    serde_json::json!({
        "mchId": mch_id.as_str(),
        field: value,
        "sign": sign::sign_pairs(pairs, key),
    })
    .to_string()
}

fn transport(e: reqwest::Error) -> QueryError {
    if e.is_timeout() {
        QueryError::Timeout
    } else if e.is_connect() {
        QueryError::Connect(error_chain(&e))
    } else {
        QueryError::Transport(error_chain(&e))
    }
}

/// The error and its sources on one line (reqwest's top-level message alone is vague).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    truncate(&text)
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "retCode")]
    ret_code: Option<String>,
    #[serde(rename = "retMsg")]
    ret_msg: Option<String>,
    #[serde(rename = "retData")]
    ret_data: Option<Box<RawValue>>,
    order: Option<Box<RawValue>>,
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

/// Reads a query answer: for v3/v2 the `cc_query` envelope, then the order object (`retData`
/// for v3, `order` for v2), whose `sign`, when present, must verify under one of `keys`; for v1
/// see [`query_v1::parse_response`].
pub fn parse_response(
    version: ApiVersion,
    body: &[u8],
    keys: &[crate::domain::MerchantKey],
) -> Result<QueriedOrder, QueryError> {
    if version == ApiVersion::V1 {
        return query_v1::parse_response(body, keys, None);
    }
    parse_card(version, body, keys).map(|(order, _)| order)
}

/// Reads the answer to a query by `mchOrderNo` ([`FoundOrder`]): as [`parse_response`], except
/// that a v1 answer need not name its `payOrderId`.
pub fn parse_found(
    version: ApiVersion,
    body: &[u8],
    keys: &[crate::domain::MerchantKey],
) -> Result<FoundOrder, QueryError> {
    if version == ApiVersion::V1 {
        return query_v1::parse_found(body, keys);
    }
    let (mut order, fields) = parse_card(version, body, keys)?;
    order.pay_succ_time = kept_text(order.pay_succ_time.as_deref());
    Ok(FoundOrder { order, channel: kept_text(fields.text("channel")), channel_order_no: None })
}

/// The v3/v2 `cc_query` answer: the order, and the order object's fields.
fn parse_card(
    version: ApiVersion,
    body: &[u8],
    keys: &[crate::domain::MerchantKey],
) -> Result<(QueriedOrder, Params), QueryError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| QueryError::Unparseable(truncate(&e.to_string())))?;
    let message = truncate(envelope.ret_msg.as_deref().unwrap_or_default());
    match envelope.ret_code.as_deref() {
        Some("SUCCESS") => {}
        Some("FAIL") => return Err(classify_fail(message)),
        Some(other) => return Err(QueryError::Unparseable(format!("retCode `{}`", truncate(other)))),
        None => return Err(QueryError::Unparseable("no retCode".into())),
    }
    let (raw, member) = match version {
        ApiVersion::V3 => (envelope.ret_data, "retData"),
        ApiVersion::V2 | ApiVersion::V1 => (envelope.order, "order"),
    };
    let raw = raw.ok_or_else(|| QueryError::Unparseable(format!("retCode SUCCESS without {member}")))?;
    // Flat and free of duplicate names, like every IOTPay message: the sign covers each field.
    let order = Params::from_json(raw.get().as_bytes())
        .map_err(|e| QueryError::Unparseable(format!("{member}: {}", truncate(&e.to_string()))))?;
    let signed = match order.get(SIGN_FIELD) {
        None => false,
        Some(v) if v.as_text().is_empty() => false,
        Some(v) => {
            if !sign::verify(&order, v.as_text(), keys) {
                return Err(QueryError::BadSign);
            }
            true
        }
    };
    let text = |name: &str| order.text(name).map(str::to_owned);
    let required = |name: &'static str, value: Option<String>| {
        value.ok_or_else(|| QueryError::Unparseable(format!("{member}.{name} missing")))
    };
    let amount = match order.text("amount") {
        None => None,
        Some(a) => Some(
            Cents::parse(a).map_err(|_| QueryError::Unparseable(format!("{member}.amount is not whole cents")))?.get(),
        ),
    };
    let status = order.text("status").ok_or_else(|| QueryError::Unparseable(format!("{member}.status missing")))?;
    let status = match status.parse::<i64>() {
        Ok(s) if !status.starts_with(['+', '-']) => s,
        _ => return Err(QueryError::Unparseable(format!("{member}.status is not a whole number"))),
    };
    let queried = QueriedOrder {
        api_version: version,
        pay_order_id: required("payOrderId", text("payOrderId"))?,
        status,
        mch_id: text("mchId"),
        mch_order_no: text("mchOrderNo"),
        amount,
        currency: text("currency").map(|c| c.to_ascii_uppercase()),
        pay_type: text("payType"),
        original_order_id: text("originalOrderId"),
        pay_succ_time: text("paySuccTime"),
        signed,
    };
    if version == ApiVersion::V3 {
        // v3 documents all of these; an answer without one cannot confirm anything.
        required("mchId", queried.mch_id.clone())?;
        required("mchOrderNo", queried.mch_order_no.clone())?;
        required("amount", queried.amount.map(|a| a.to_string()))?;
        required("currency", queried.currency.clone())?;
        required("payType", queried.pay_type.clone())?;
    }
    Ok((queried, order))
}

/// A `FAIL` answer's error: "not found" only when its message is about the order
/// ([`is_order_not_found`]), else inconclusive.
pub(super) fn classify_fail(message: String) -> QueryError {
    if is_order_not_found(&message) {
        QueryError::NotFound(message)
    } else {
        QueryError::Fail(message)
    }
}

/// At most [`MAX_MESSAGE_LEN`] characters of IOTPay's text.
pub(super) fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE_LEN) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MerchantKey;
    use serde_json::{json, Value};

    fn key() -> MerchantKey {
        MerchantKey::new("K1")
    }

    fn signed(mut order: Value, key: &MerchantKey) -> Value {
        let body = order.to_string();
        let params = Params::from_json(body.as_bytes()).unwrap();
        order["sign"] = json!(sign::sign_params(&params, key));
        order
    }

    fn v3_order() -> Value {
        json!({"payOrderId": "PC1", "mchId": "100", "mchOrderNo": "o1", "originalOrderId": "",
               "currency": "cad", "amount": 1500, "payType": "pay", "refundable": 1500, "status": 2,
               "paySuccTime": "2021-04-07 19:44:51", "cardNum": "432567******2266", "channel": "PF_CC"})
    }

    fn parse(version: ApiVersion, body: Value) -> Result<QueriedOrder, QueryError> {
        parse_response(version, body.to_string().as_bytes(), &[MerchantKey::new("OLD"), key()])
    }

    #[test]
    fn v3_signed_order_parses_and_verifies_with_any_merchant_key() {
        let q =
            parse(ApiVersion::V3, json!({"retCode": "SUCCESS", "retMsg": "", "retData": signed(v3_order(), &key())}))
                .unwrap();
        assert!(q.signed);
        assert_eq!(q.pay_order_id, "PC1");
        assert_eq!(q.mch_id.as_deref(), Some("100"));
        assert_eq!(q.amount, Some(1500));
        assert_eq!(q.currency.as_deref(), Some("CAD"));
        assert_eq!(q.status, 2);
        assert_eq!(q.original_order_id, None, "empty originalOrderId is absent");
    }

    #[test]
    fn unsigned_order_is_accepted_but_marked_unsigned() {
        let q = parse(ApiVersion::V3, json!({"retCode": "SUCCESS", "retData": v3_order()})).unwrap();
        assert!(!q.signed);
    }

    #[test]
    fn wrong_or_tampered_sign_is_refused() {
        let mut order = signed(v3_order(), &MerchantKey::new("someone-else"));
        assert_eq!(
            parse(ApiVersion::V3, json!({"retCode": "SUCCESS", "retData": order.clone()})),
            Err(QueryError::BadSign)
        );
        order = signed(v3_order(), &key());
        order["amount"] = json!(1501);
        assert_eq!(parse(ApiVersion::V3, json!({"retCode": "SUCCESS", "retData": order})), Err(QueryError::BadSign));
    }

    #[test]
    fn not_found_is_definite_other_fail_is_not() {
        for msg in ["order not exist", "Order Not Found", "the ORDER does NOT EXIST"] {
            assert!(matches!(
                parse(ApiVersion::V3, json!({"retCode": "FAIL", "retMsg": msg})),
                Err(QueryError::NotFound(_))
            ));
        }
        assert_eq!(
            parse(ApiVersion::V3, json!({"retCode": "FAIL", "retMsg": "sign error"})),
            Err(QueryError::Fail("sign error".into()))
        );
        assert!(matches!(parse(ApiVersion::V3, json!({"retCode": "FAIL"})), Err(QueryError::Fail(_))));
        for msg in ["mchId not exist", "merchant not found", "Merchant order key not exist", "channel not exist"] {
            assert!(
                matches!(parse(ApiVersion::V3, json!({"retCode": "FAIL", "retMsg": msg})), Err(QueryError::Fail(_))),
                "{msg} is not about the order"
            );
        }
    }

    /// Only an answer about the order is "not found"; a merchant setup error, an ambiguous or an
    /// unreadable message is retried (audit of issue 11: `mchOrderNo not exist` was retried
    /// because it contains "mch").
    #[test]
    fn only_messages_about_the_order_are_not_found() {
        let cases: &[(&str, bool)] = &[
            ("order not exist", true),
            ("Order Not Found", true),
            ("the ORDER does NOT EXIST", true),
            ("order doesn't exist", true),
            ("Order is not found", true),
            ("orders not exists", true),
            ("mchOrderNo not exist", true),
            ("payOrderId not exist", true),
            ("mch_order_no not found", true),
            ("pay_order_id not exist", true),
            ("ORDER_ID_NOT_FOUND", true),
            ("ORDER_NOT_EXIST", true),
            ("merchant order not exist", true),
            ("Merchant order no not exist", true),
            ("order PC20240305 not exist", true),
            ("no such order", true),
            ("transaction not found", true),
            ("refund order not exist", true),
            // Merchant setup problems: never about the payment.
            ("mchId not exist", false),
            ("MCH_NOT_EXIST", false),
            ("mch_id not exist", false),
            ("mch not exist", false),
            ("merchant not found", false),
            ("Merchant order key not exist", false),
            ("channel not exist", false),
            ("channel order not exist", false),
            ("appId not exist", false),
            ("no such merchant", false),
            ("key not found", false),
            // Ambiguous: a setup word beside the order, or two absences of which one is not the order.
            ("order not exist, check your mchId", false),
            ("order not found or sign error", false),
            ("mchId not exist, order not exist", false),
            ("order not exist; merchant not exist", false),
            // No absence phrase, or none with a subject.
            ("not exist", false),
            ("order exists", false),
            ("order not paid", false),
            ("order found", false),
            ("sign error", false),
            ("system busy", false),
            ("", false),
            ("订单不存在", false),
        ];
        for (message, expected) in cases {
            assert_eq!(is_order_not_found(message), *expected, "{message:?}");
            let answer = parse(ApiVersion::V3, json!({"retCode": "FAIL", "retMsg": message}));
            if *expected {
                assert_eq!(answer, Err(QueryError::NotFound((*message).to_owned())), "{message:?}");
            } else {
                assert_eq!(answer, Err(QueryError::Fail((*message).to_owned())), "{message:?}");
            }
        }
    }

    #[test]
    fn malformed_answers_are_unparseable() {
        let cases = [
            json!({"retMsg": "x"}),
            json!({"retCode": "MAYBE"}),
            json!({"retCode": "SUCCESS"}),
            json!({"retCode": "SUCCESS", "order": v3_order()}),
            json!({"retCode": "SUCCESS", "retData": "text"}),
            json!({"retCode": "SUCCESS", "retData": {"payOrderId": "PC1", "status": 2}}),
            json!({"retCode": "SUCCESS", "retData": {"payOrderId": "PC1", "mchId": "100", "mchOrderNo": "o", "currency": "CAD", "amount": 15.5, "payType": "pay", "status": 2}}),
            json!({"retCode": "SUCCESS", "retData": {"payOrderId": "PC1", "mchId": "100", "mchOrderNo": "o", "currency": "CAD", "amount": 1, "payType": "pay", "status": "-2"}}),
            json!({"retCode": "SUCCESS", "retData": {"payOrderId": "PC1", "nested": {"a": 1}}}),
        ];
        for c in cases {
            assert!(matches!(parse(ApiVersion::V3, c.clone()), Err(QueryError::Unparseable(_))), "{c}");
        }
        assert!(matches!(parse_response(ApiVersion::V3, b"<html>", &[]), Err(QueryError::Unparseable(_))));
    }

    #[test]
    fn v2_order_needs_only_its_documented_fields() {
        let q = parse(
            ApiVersion::V2,
            json!({"retCode": "SUCCESS", "retMsg": "", "order": {"payOrderId": "P2", "mchOrderNo": "m", "transid": "66",
                   "status": "3", "paySuccTime": "2021-04-07 19:44:51", "originalOrderId": null, "payType": ""}}),
        )
        .unwrap();
        assert_eq!(q.status, 3, "string digits are accepted for numbers");
        assert_eq!(
            (q.amount, q.mch_id.as_deref(), q.currency.as_deref(), q.pay_type.as_deref()),
            (None, None, None, None)
        );
        assert_eq!(q.mch_order_no.as_deref(), Some("m"));
    }

    #[test]
    fn found_by_merchant_order_number_a_card_order_keeps_its_channel_and_time() {
        let body = json!({"retCode": "SUCCESS", "retData": signed(v3_order(), &key())}).to_string();
        let found = parse_found(ApiVersion::V3, body.as_bytes(), &[key()]).unwrap();
        assert_eq!(found.order, parse(ApiVersion::V3, serde_json::from_str(&body).unwrap()).unwrap());
        assert_eq!((found.channel.as_deref(), found.channel_order_no.as_deref()), (Some("PF_CC"), None));
        let toronto = jiff::tz::TimeZone::get("America/Toronto").unwrap();
        assert_eq!(found.pay_succ_at(&toronto).as_deref(), Some("2021-04-07T23:44:51Z"));
        // v3 still requires every identity field, by number as by id.
        let mut thin = v3_order();
        thin.as_object_mut().unwrap().remove("payOrderId");
        let body = json!({"retCode": "SUCCESS", "retData": thin}).to_string();
        assert!(matches!(parse_found(ApiVersion::V3, body.as_bytes(), &[]), Err(QueryError::Unparseable(_))));
    }

    #[test]
    fn a_query_by_merchant_order_number_names_it_and_signs_it() {
        let mch = MchId::parse("100").unwrap();
        let body = json_body(&mch, "mchOrderNo", "shop-42", &key());
        let params = Params::from_json(body.as_bytes()).unwrap();
        assert_eq!((params.text("mchId"), params.text("mchOrderNo")), (Some("100"), Some("shop-42")));
        assert_eq!(params.text("payOrderId"), None, "only the merchant's number is sent");
        assert_eq!(params.text(SIGN_FIELD).unwrap(), sign::sign_canonical("mchId=100&mchOrderNo=shop-42", &key()));
    }
}
