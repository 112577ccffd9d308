//! The client of IOTPay's query API: one signed call per question, its answer read by the
//! version's reader ([`super::card`], [`super::v1`]).

use std::sync::Arc;

use super::{card, truncate, v1, FoundOrder, QueriedOrder, QueryError, QueryTimeouts};
use crate::domain::{ApiVersion, MchId, MerchantKey, PayOrderId};
use crate::merchants::Merchants;

/// Largest response body read from IOTPay; anything bigger is not a query answer.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

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
            v1_url: format!("{}/{}", v1_base.trim_end_matches('/'), v1::PATH),
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
            ApiVersion::V1 => v1::parse_response(&body, keys, Some(pay_order_id.as_str())),
            ApiVersion::V3 | ApiVersion::V2 => card::parse_response(version, &body, keys),
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
            ApiVersion::V3 => (&self.v3_url, card::JSON_CONTENT_TYPE, card::json_body(mch_id, field, value, key)),
            ApiVersion::V2 => (&self.v2_url, card::JSON_CONTENT_TYPE, card::json_body(mch_id, field, value, key)),
            ApiVersion::V1 => {
                (&self.v1_url, "application/x-www-form-urlencoded", v1::request_body_by(mch_id, field, value, key))
            }
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
/// Reads a query answer: for v3/v2 see [`card::parse_response`], for v1
/// [`v1::parse_response`].
pub fn parse_response(version: ApiVersion, body: &[u8], keys: &[MerchantKey]) -> Result<QueriedOrder, QueryError> {
    match version {
        ApiVersion::V1 => v1::parse_response(body, keys, None),
        ApiVersion::V3 | ApiVersion::V2 => card::parse_response(version, body, keys),
    }
}

/// Reads the answer to a query by `mchOrderNo` ([`FoundOrder`]): as [`parse_response`], except
/// that a v1 answer need not name its `payOrderId`.
pub fn parse_found(version: ApiVersion, body: &[u8], keys: &[MerchantKey]) -> Result<FoundOrder, QueryError> {
    match version {
        ApiVersion::V1 => v1::parse_found(body, keys),
        ApiVersion::V3 | ApiVersion::V2 => card::parse_found(version, body, keys),
    }
}
