//! Expected orders (issue 14): orders a merchant registered so that their payment is found even
//! when IOTPay's notification never arrives. Registration is idempotent; an order's state is read
//! together with the confirmed payment that settles it, whichever way that payment arrived.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// An order to register, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// The merchant (one of `IOTPAY_MERCHANTS`).
    pub mch_id: String,
    /// The merchant's order number, as sent to IOTPay as `mchOrderNo`.
    pub mch_order_no: String,
    /// `v3`, `v2` or `v1`: which query API knows the order.
    pub api_version: String,
    /// Amount in cents, positive.
    pub amount: i64,
    /// Currency code.
    pub currency: String,
    /// When an unpaid order stops being expected (whole microseconds, as stored); `None`: 24 h
    /// after registration, or, for an order already registered, whatever it was registered with.
    pub expires_at: Option<DateTime<Utc>>,
}

/// An order and its state as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct OrderView {
    /// The merchant.
    pub mch_id: String,
    /// The merchant's order number.
    pub mch_order_no: String,
    /// `v3`, `v2` or `v1`.
    pub api_version: String,
    /// Amount in cents.
    pub amount: i64,
    /// Currency code.
    pub currency: String,
    /// `expected`, `paid`, `cancelled`, `expired` or `mismatch`.
    pub state: String,
    /// The payment event that settles the order (`paid`; `mismatch` and `cancelled` when a
    /// stored event is behind them).
    pub event_id: Option<String>,
    /// Where that event came from: `notification` or `reconciliation` (a payment whose
    /// notification IOTPay never delivered).
    pub source: Option<String>,
    /// When an unpaid order stops being expected.
    pub expires_at: DateTime<Utc>,
    /// When the merchant registered it.
    pub registered_at: DateTime<Utc>,
    /// Reconciliation queries made so far.
    pub checks: i32,
    /// Why the order is not settled yet (the last look's reason), or why it settled as it did.
    pub last_error: Option<String>,
}

/// What a registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new order.
    Created(OrderView),
    /// The same order was already registered with the same amount, currency, API version and
    /// (when given) `expires_at`.
    Same(OrderView),
    /// The order exists with another value of these fields: nothing changed.
    Conflict {
        /// The order as registered.
        existing: OrderView,
        /// The fields that differ, e.g. `["amount"]`.
        fields: Vec<&'static str>,
    },
    /// A new order whose `expires_at` is not in the future (database clock): nothing stored.
    ExpiresInPast,
}

/// How long an order stays expected when the merchant gives no `expires_at`.
pub const DEFAULT_EXPIRY_SECS: i64 = 24 * 3600;

/// The order with its effective state: a confirmed `payment.succeeded` for the order makes it
/// `paid` when amount and currency agree and `mismatch` when they do not, whatever the reconciler
/// stored; otherwise the stored state. `expired` is never read off the clock: the reconciler
/// decides it at `expires_at`, from an answer of IOTPay's that says "not paid".
const VIEW: &str = "
    SELECT o.mch_id, o.mch_order_no, o.api_version, o.amount, o.currency, o.expires_at,
           o.registered_at, o.checks, o.last_error,
           CASE WHEN p.event_id IS NULL THEN o.state
                WHEN p.amount = o.amount AND p.currency = o.currency THEN 'paid'
                ELSE 'mismatch' END AS state,
           COALESCE(p.event_id, o.event_id) AS event_id,
           s.source
    FROM expected_orders o
    LEFT JOIN LATERAL (
        SELECT e.event_id, e.amount, e.currency FROM payment_events e
        WHERE e.mch_id = o.mch_id AND e.mch_order_no = o.mch_order_no
          AND e.event_type = 'payment.succeeded' AND e.status = 'confirmed'
        ORDER BY (e.amount = o.amount AND e.currency = o.currency) DESC, e.created_at
        LIMIT 1
    ) p ON true
    LEFT JOIN payment_events s ON s.event_id = COALESCE(p.event_id, o.event_id)
    WHERE o.mch_id = $1 AND o.mch_order_no = $2";

/// Registers an order; the first reconciliation query is due `reconcile_after_secs` later, or
/// at `expires_at` if that comes first. Idempotent: the same order again changes nothing.
pub async fn register(pool: &PgPool, order: &NewOrder, reconcile_after_secs: i64) -> Result<Registered, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO expected_orders
             (mch_id, mch_order_no, api_version, amount, currency, expires_at, next_check_at)
         SELECT $1, $2, $3, $4, $5, x.expires_at, LEAST(now() + make_interval(secs => $8), x.expires_at)
           FROM (SELECT COALESCE($6, now() + make_interval(secs => $7)) AS expires_at) x
          WHERE x.expires_at > now()
         ON CONFLICT (mch_id, mch_order_no) DO NOTHING",
    )
    .bind(&order.mch_id)
    .bind(&order.mch_order_no)
    .bind(&order.api_version)
    .bind(order.amount)
    .bind(&order.currency)
    .bind(order.expires_at)
    .bind(DEFAULT_EXPIRY_SECS as f64)
    .bind(reconcile_after_secs as f64)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    // Not inserted and not there: the WHERE refused it, as already expired. The check is for a
    // new order only, so the same body re-sent after its expires_at is still the same order.
    let Some(view) = show(pool, &order.mch_id, &order.mch_order_no).await? else {
        return Ok(Registered::ExpiresInPast);
    };
    if inserted {
        return Ok(Registered::Created(view));
    }
    let fields: Vec<&'static str> = [
        ("api_version", view.api_version != order.api_version),
        ("amount", view.amount != order.amount),
        ("currency", view.currency != order.currency),
        ("expires_at", order.expires_at.is_some_and(|t| t != view.expires_at)),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect();
    Ok(if fields.is_empty() { Registered::Same(view) } else { Registered::Conflict { existing: view, fields } })
}

/// The order and its effective state; `None` when it was never registered.
pub async fn show(pool: &PgPool, mch_id: &str, mch_order_no: &str) -> Result<Option<OrderView>, sqlx::Error> {
    sqlx::query_as::<_, OrderView>(VIEW).bind(mch_id).bind(mch_order_no).fetch_optional(pool).await
}
