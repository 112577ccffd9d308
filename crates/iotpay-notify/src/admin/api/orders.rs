//! `POST /api/v1/orders` (register an expected order) and
//! `GET /api/v1/orders/{mch_id}/{mch_order_no}` (its state, optionally long-polled with `wait`).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::SubsecRound;
use serde_json::{Map, Value};

use super::input;
use crate::admin::error::ApiError;
use crate::admin::AdminState;
use crate::iotpay::merchants::Merchants;
use crate::store::orders::{self, NewOrder, OrderView, Registered};

/// Fields of a registration body.
const FIELDS: &[&str] = &["mch_id", "mch_order_no", "api_version", "amount", "currency", "expires_at"];
/// API versions an order can be queried on.
pub const API_VERSIONS: &[&str] = &["v3", "v2", "v1"];
/// Longest `wait`, in seconds (the admin request timeout is longer).
pub const MAX_WAIT_SECS: i64 = 30;
/// How often a waiting request looks at the order again.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// Reads and validates a registration body against the configured merchants (the API and the
/// CLI's `orders register` share it).
pub fn parse_order(map: &Map<String, Value>, merchants: &Merchants) -> Result<NewOrder, ApiError> {
    let string = |k: &str| -> Result<String, ApiError> {
        match map.get(k) {
            None | Some(Value::Null) => Err(ApiError::field(k, "required")),
            Some(Value::String(s)) if !s.is_empty() => input::text(k, s),
            Some(_) => Err(ApiError::field(k, "expected a non-empty string")),
        }
    };
    let mch_id = string("mch_id")?;
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::field(unknown.chars().take(64).collect::<String>(), "unknown field"));
    }
    if merchants.keys(&mch_id).is_none() {
        return Err(ApiError::field("mch_id", "unknown merchant: not in IOTPAY_MERCHANTS"));
    }
    let mch_order_no = string("mch_order_no")?;
    let api_version = string("api_version")?;
    if !API_VERSIONS.contains(&api_version.as_str()) {
        return Err(ApiError::field("api_version", "expected one of v3, v2, v1"));
    }
    let amount = match map.get("amount") {
        None | Some(Value::Null) => return Err(ApiError::field("amount", "required")),
        Some(v) => match v.as_i64() {
            Some(n) if n > 0 => n,
            _ => return Err(ApiError::field("amount", "expected a positive whole number of cents")),
        },
    };
    let currency = string("currency")?;
    if !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(ApiError::field("currency", "expected a three-letter upper-case code, e.g. CAD"));
    }
    let expires_at = match map.get("expires_at") {
        None | Some(Value::Null) => None,
        // Whole microseconds, as Postgres stores it, so that the same text re-sent compares
        // equal to the stored value. Whether it is in the future is checked for a new order
        // only (see `orders::register`): the same body re-sent later is still the same order.
        Some(Value::String(s)) => Some(input::time("expires_at", s)?.trunc_subsecs(6)),
        Some(_) => return Err(ApiError::field("expires_at", "expected an RFC 3339 time")),
    };
    Ok(NewOrder { mch_id, mch_order_no, api_version, amount, currency, expires_at })
}

/// `POST /api/v1/orders`: `201` new, `200` the same order again, `409` the same order with
/// another amount, currency, API version or `expires_at`; `400` for a new order already expired.
pub async fn register(
    State(state): State<AdminState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    input::query(raw.as_deref(), &[])?;
    let map = input::json_object(&headers, &body, FIELDS, false)?;
    let order = parse_order(&map, &state.merchants)?;
    match orders::register(&state.pool, &order, state.reconcile_after.as_secs() as i64).await? {
        Registered::Created(view) => {
            tracing::info!(mch_id = view.mch_id, mch_order_no = view.mch_order_no, "expected order registered");
            Ok((StatusCode::CREATED, Json(view)))
        }
        Registered::Same(view) => Ok((StatusCode::OK, Json(view))),
        Registered::Conflict { existing, fields } => Err(ApiError::Conflict(conflict_message(&existing, &fields))),
        Registered::ExpiresInPast => Err(ApiError::field("expires_at", "must be in the future")),
    }
}

/// Why a registration conflicts with the order already registered (the API and the CLI say it alike).
pub fn conflict_message(existing: &OrderView, fields: &[&str]) -> String {
    format!(
        "order {}/{} is already registered with another {}: {} {} on {}, expires_at {}",
        existing.mch_id,
        existing.mch_order_no,
        fields.join(", "),
        existing.amount,
        existing.currency,
        existing.api_version,
        existing.expires_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    )
}

/// `GET /api/v1/orders/{mch_id}/{mch_order_no}`: the order's state; with `wait=<seconds>`
/// (at most 30), answers as soon as the state leaves `expected`, or with `expected` at the end.
pub async fn show(
    State(state): State<AdminState>,
    Path((mch_id, mch_order_no)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<OrderView>, ApiError> {
    let q = input::query(raw.as_deref(), &["wait"])?;
    let wait = q.get("wait").map(|v| input::number("wait", v, 0, MAX_WAIT_SECS)).transpose()?.unwrap_or(0);
    let mch_id = input::text("mch_id", &mch_id)?;
    let mch_order_no = input::text("mch_order_no", &mch_order_no)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait as u64);
    loop {
        let view = orders::show(&state.pool, &mch_id, &mch_order_no)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no order {mch_id}/{mch_order_no}")))?;
        if view.state != "expected" || tokio::time::Instant::now() >= deadline {
            return Ok(Json(view));
        }
        tokio::time::sleep(WAIT_POLL.min(deadline - tokio::time::Instant::now())).await;
    }
}
