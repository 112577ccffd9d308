//! The sandbox's query API: `cc_query` (v3, v2) and `query_order` (v1) answered from the order book.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{lock, Shared};
use crate::domain::ApiVersion;
use crate::iotpay::{sign, Params};

/// What a query asked and what it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRecord {
    /// Which endpoint.
    pub api_version: ApiVersion,
    /// The `payOrderId` asked for, if any.
    pub pay_order_id: Option<String>,
    /// The `mchOrderNo` asked for, if any (reconciliation asks by it).
    pub mch_order_no: Option<String>,
    /// The answer.
    pub outcome: QueryOutcome,
}

/// How a query was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryOutcome {
    /// `SUCCESS` with the order.
    Found,
    /// `FAIL`, `order not exist`.
    NotFound,
    /// `FAIL`: the request's sign is wrong or missing.
    BadSign,
    /// `FAIL`: unparseable request or another merchant.
    Invalid,
    /// HTTP 500 (the `query_fail_first` knob).
    ServerError,
}

impl Shared {
    fn record(&self, api_version: ApiVersion, asked: &Asked, outcome: QueryOutcome) {
        tracing::info!(
            api = api_version.as_str(),
            pay_order_id = asked.pay_order_id.as_deref(),
            mch_order_no = asked.mch_order_no.as_deref(),
            ?outcome,
            "sandbox cc_query"
        );
        lock(&self.queries).push(QueryRecord {
            api_version,
            pay_order_id: asked.pay_order_id.clone(),
            mch_order_no: asked.mch_order_no.clone(),
            outcome,
        });
    }
}

/// Which order a query names.
struct Asked {
    pay_order_id: Option<String>,
    mch_order_no: Option<String>,
}

pub(super) async fn query_v3(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    query(&shared, ApiVersion::V3, &body).await
}

pub(super) async fn query_v2(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    query(&shared, ApiVersion::V2, &body).await
}

pub(super) async fn query_v1(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    query(&shared, ApiVersion::V1, &body).await
}

/// The request's signed parameters: a JSON body (`cc_query`), or the JSON in the form field
/// `params` (`query_order`).
fn request_params(api_version: ApiVersion, body: &[u8]) -> Option<Params> {
    match api_version {
        ApiVersion::V3 | ApiVersion::V2 => Params::from_json(body).ok(),
        ApiVersion::V1 => {
            let form = Params::from_form(body).ok()?;
            Params::from_json(form.text("params")?.as_bytes()).ok()
        }
    }
}

fn fail(msg: &str) -> Response {
    Json(json!({"retCode": "FAIL", "retMsg": msg})).into_response()
}

/// `cc_query` / `query_order`: verifies the request's sign, then answers from the order book.
async fn query(shared: &Shared, api_version: ApiVersion, body: &[u8]) -> Response {
    let delay = *lock(&shared.query_delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let params = request_params(api_version, body);
    let text = |field: &str| params.as_ref().and_then(|p| p.text(field)).map(str::to_owned);
    let asked = Asked { pay_order_id: text("payOrderId"), mch_order_no: text("mchOrderNo") };
    let pay_order_id = asked.pay_order_id.clone();
    let failing = shared.query_fail_remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if failing.is_ok() {
        shared.record(api_version, &asked, QueryOutcome::ServerError);
        return (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response();
    }
    let Some(params) = params else {
        shared.record(api_version, &asked, QueryOutcome::Invalid);
        return fail("invalid request");
    };
    // Never "not exist" here: that wording means a definite "no such order" to the client.
    if params.text("mchId") != Some(shared.mch_id.as_str()) {
        shared.record(api_version, &asked, QueryOutcome::Invalid);
        return fail("invalid mchId");
    }
    let signed =
        params.text(sign::SIGN_FIELD).is_some_and(|s| sign::verify(&params, s, std::slice::from_ref(&shared.key)));
    if !signed {
        shared.record(api_version, &asked, QueryOutcome::BadSign);
        return fail("sign error");
    }
    let mch_order_no = asked.mch_order_no.as_deref();
    let found = lock(&shared.orders)
        .iter()
        .find(|o| {
            o.api_version == api_version
                && (pay_order_id.as_deref() == Some(o.pay_order_id.as_str())
                    || (pay_order_id.is_none() && mch_order_no == Some(o.mch_order_no.as_str())))
        })
        .cloned();
    let Some(order) = found else {
        shared.record(api_version, &asked, QueryOutcome::NotFound);
        if api_version == ApiVersion::V1 {
            // The call worked (retCode); the business request did not (resCode).
            return Json(json!({"retCode": "SUCCESS", "retMsg": "", "resCode": "FAIL", "errCode": "0118",
                               "errCodeDes": "order not exist"}))
            .into_response();
        }
        return fail("order not exist");
    };
    shared.record(api_version, &asked, QueryOutcome::Found);
    let mut fields = order.query_fields();
    let member = match api_version {
        ApiVersion::V3 => "retData",
        ApiVersion::V2 => "order",
        ApiVersion::V1 => {
            // Flat: the order's fields sit beside the codes, and the sign covers them all.
            for (k, v) in
                [("retCode", "SUCCESS"), ("retMsg", ""), ("resCode", "SUCCESS"), ("errCode", ""), ("errCodeDes", "")]
            {
                fields.insert(k.into(), json!(v));
            }
            sign::sign_object(&mut fields, &shared.key);
            return Json(fields).into_response();
        }
    };
    sign::sign_object(&mut fields, &shared.key);
    Json(json!({"retCode": "SUCCESS", "retMsg": "", member: fields})).into_response()
}
