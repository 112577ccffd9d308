//! A simulated IOTPay for local development, tests, the demo and benchmarks.
//!
//! It keeps an order book, sends signed notifications for its orders to a notifyUrl (re-sending
//! on any answer but `SUCCESS`, as IOTPay does), and answers the v3 and v2 `cc_query` calls
//! from that book with signed answers. Fault knobs simulate what production does to a
//! receiver: duplicate and concurrent sends, slow or failing queries, a notification whose
//! amount the query contradicts, a forged sign.
//!
//! Every sign it makes or checks goes through [`crate::iotpay::sign`], the service's own code.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::domain::{ApiVersion, MchId, MerchantKey};
use crate::iotpay::{sign, Params};

/// IOTPay does not publish its re-send schedule; this default follows the pattern common to
/// payment gateways (15 s, 15 s, 30 s, 3 min, 10 min, 20 min, 30 min ×3, 1 h).
pub const DEFAULT_RETRY_SCHEDULE: &[Duration] = &[
    Duration::from_secs(15),
    Duration::from_secs(15),
    Duration::from_secs(30),
    Duration::from_secs(180),
    Duration::from_secs(600),
    Duration::from_secs(1200),
    Duration::from_secs(1800),
    Duration::from_secs(1800),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
];

/// Longest wait for the receiver's answer to one notification.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// The key a forged notification is signed with: anything but the merchant's.
const FORGER_KEY: &str = "not-the-merchant-key";

/// Why the sandbox could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No notifyUrl is configured.
    #[error("no notify URL configured")]
    NoNotifyUrl,
    /// A refund names a payment the sandbox does not have.
    #[error("no v3 payment {0} to refund")]
    UnknownPayment(String),
    /// A refund is larger than what remains refundable.
    #[error("refund of {amount} exceeds the {refundable} still refundable on {pay_order_id}")]
    NotRefundable {
        /// The payment.
        pay_order_id: String,
        /// The refund's amount.
        amount: i64,
        /// What remains refundable.
        refundable: i64,
    },
    /// The HTTP listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// How a sandbox starts.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Address of the query API (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The simulated merchant.
    pub mch_id: MchId,
    /// The merchant's key (signs notifications and answers, verifies queries).
    pub key: MerchantKey,
    /// Where notifications go (the service's `/iotpay/notify`).
    pub notify_url: Option<String>,
    /// Pauses between attempts of one notification; attempts = pauses + 1.
    pub retry_schedule: Vec<Duration>,
    /// Delay before answering each query.
    pub query_delay: Duration,
    /// The first N queries get HTTP 500.
    pub query_fail_first: u32,
}

impl SandboxConfig {
    /// A sandbox for one merchant on a free port of 127.0.0.1, with the default re-send schedule.
    pub fn new(mch_id: MchId, key: MerchantKey) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            mch_id,
            key,
            notify_url: None,
            retry_schedule: DEFAULT_RETRY_SCHEDULE.to_vec(),
            query_delay: Duration::ZERO,
            query_fail_first: 0,
        }
    }
}

/// One order in the sandbox's book, as IOTPay knows it (the truth the query tells).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// API the order belongs to: notifications and queries use that API's format.
    pub api_version: ApiVersion,
    /// Merchant id.
    pub mch_id: String,
    /// IOTPay's id.
    pub pay_order_id: String,
    /// The merchant's id.
    pub mch_order_no: String,
    /// The refunded payment (refunds).
    pub original_order_id: Option<String>,
    /// `pay` or `refund`.
    pub pay_type: String,
    /// Cents.
    pub amount: i64,
    /// Currency.
    pub currency: String,
    /// Cents still refundable (v3).
    pub refundable: i64,
    /// IOTPay status (2 = success).
    pub status: i64,
    /// `YYYY-MM-DD HH:MM:SS`, Toronto time.
    pub pay_succ_time: String,
    /// Masked card number.
    pub card_num: String,
    /// `MMYY`.
    pub expiry_date: String,
    /// v2 card brand letter.
    pub card_type: String,
    /// v3 invoice number.
    pub invoice_num: String,
    /// v3 authorization number.
    pub auth_num: String,
    /// Bank transaction number (v3 `transNum`, v2 `transId`).
    pub trans_num: String,
    /// v3 channel.
    pub channel: String,
}

impl Order {
    /// The notification's fields, unsigned.
    pub fn notification_fields(&self) -> Map<String, Value> {
        let fields = match self.api_version {
            ApiVersion::V3 => self.v3_fields(),
            ApiVersion::V2 => json!({
                "payOrderId": self.pay_order_id, "mchId": self.mch_id, "mchOrderNo": self.mch_order_no,
                "transId": self.trans_num, "currency": self.currency, "amount": self.amount,
                "status": self.status, "paySuccTime": self.pay_succ_time, "cardType": self.card_type,
                "cardNum": self.card_num, "expirationDate": self.expiry_date,
            }),
        };
        into_map(fields)
    }

    /// The order object of a query answer (`retData` / `order`), unsigned.
    pub fn query_fields(&self) -> Map<String, Value> {
        let fields = match self.api_version {
            ApiVersion::V3 => self.v3_fields(),
            ApiVersion::V2 => json!({
                "payOrderId": self.pay_order_id, "mchOrderNo": self.mch_order_no, "transid": self.trans_num,
                "status": self.status, "paySuccTime": self.pay_succ_time,
                "originalOrderId": self.original_order_id.clone().unwrap_or_default(),
                "payType": self.pay_type, "mchId": self.mch_id, "amount": self.amount, "currency": self.currency,
            }),
        };
        into_map(fields)
    }

    fn v3_fields(&self) -> Value {
        json!({
            "payOrderId": self.pay_order_id, "mchId": self.mch_id, "mchOrderNo": self.mch_order_no,
            "originalOrderId": self.original_order_id.clone().unwrap_or_default(), "amount": self.amount,
            "currency": self.currency, "payType": self.pay_type, "refundable": self.refundable,
            "status": self.status, "paySuccTime": self.pay_succ_time, "cardNum": self.card_num,
            "expiryDate": self.expiry_date, "invoiceNum": self.invoice_num, "authNum": self.auth_num,
            "transNum": self.trans_num, "channel": self.channel,
        })
    }
}

fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("built from an object literal"),
    }
}

/// Adds `sign` to a flat JSON object, computed by the service's own sign code over exactly the
/// text the receiver will parse.
pub fn sign_object(fields: &mut Map<String, Value>, key: &MerchantKey) {
    fields.remove(sign::SIGN_FIELD);
    let text = serde_json::to_vec(&*fields).expect("a JSON map serializes");
    let params = Params::from_json(&text).expect("the sandbox builds flat objects");
    fields.insert(sign::SIGN_FIELD.into(), Value::String(sign::sign_params(&params, key)));
}

/// Fault knobs of one notification.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// After `SUCCESS`, send the same notification this many more times.
    pub duplicates: u32,
    /// Send this many identical copies at once, each re-sent until `SUCCESS` (0 or 1: one).
    pub concurrent: u32,
    /// Put this amount in the notification, validly signed, while the order book (and so the
    /// query) keeps the true amount: the receiver must reject the event.
    pub tamper_amount: Option<i64>,
    /// Sign with a key that is not the merchant's.
    pub forge_sign: bool,
    /// At most this many attempts per copy (default: the retry schedule's).
    pub max_attempts: Option<usize>,
    /// Send as `application/x-www-form-urlencoded` instead of JSON (the v2 document does not
    /// state the encoding).
    pub form_encoded: bool,
}

/// One POST of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Which concurrent copy (0-based); duplicates after success count as further copies.
    pub copy: u32,
    /// Attempt number within the copy, from 1.
    pub number: u32,
    /// HTTP status, or `None` when no answer came.
    pub status: Option<u16>,
    /// The answer's body, or the transport error.
    pub answer: String,
}

impl Attempt {
    /// True when the receiver acknowledged: HTTP 200 and body `SUCCESS` (any case).
    pub fn acknowledged(&self) -> bool {
        self.status == Some(200) && self.answer.trim().eq_ignore_ascii_case("SUCCESS")
    }
}

/// What one notification took.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The order as IOTPay knows it (`None` for a forged notification of an order that does not exist).
    pub order: Option<Order>,
    /// The signed notification, as sent.
    pub body: Value,
    /// Every POST, in the order they completed.
    pub attempts: Vec<Attempt>,
    /// True when every copy got `SUCCESS`.
    pub acknowledged: bool,
}

impl Delivery {
    /// The notification's `payOrderId`.
    pub fn pay_order_id(&self) -> &str {
        self.body["payOrderId"].as_str().unwrap_or_default()
    }
}

/// What a query asked and what it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRecord {
    /// Which endpoint.
    pub api_version: ApiVersion,
    /// The `payOrderId` asked for, if any.
    pub pay_order_id: Option<String>,
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

struct Shared {
    mch_id: MchId,
    key: MerchantKey,
    notify_url: Mutex<Option<String>>,
    retry_schedule: Mutex<Vec<Duration>>,
    query_delay: Mutex<Duration>,
    query_fail_remaining: AtomicU32,
    orders: Mutex<Vec<Order>>,
    queries: Mutex<Vec<QueryRecord>>,
    seq: AtomicU64,
    run: String,
    client: reqwest::Client,
}

/// A running sandbox; its HTTP server stops when this is dropped.
pub struct Sandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Sandbox {
    /// Binds the query API and starts serving it.
    pub async fn start(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| SandboxError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| SandboxError::Bind { addr: config.listen, source })?;
        let shared = Arc::new(Shared {
            mch_id: config.mch_id,
            key: config.key,
            notify_url: Mutex::new(config.notify_url),
            retry_schedule: Mutex::new(config.retry_schedule),
            query_delay: Mutex::new(config.query_delay),
            query_fail_remaining: AtomicU32::new(config.query_fail_first),
            orders: Mutex::default(),
            queries: Mutex::default(),
            seq: AtomicU64::new(0),
            run: format!("{:04X}", rand::random::<u16>()),
            client: reqwest::Client::builder().timeout(NOTIFY_TIMEOUT).build().expect("an HTTP client"),
        });
        let router = Router::new()
            .route("/v3/cc_query", post(query_v3))
            .route("/v2/cc_query", post(query_v2))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(token.cancelled_owned()).await;
        });
        Ok(Sandbox { addr, shared, stop })
    }

    /// The query API's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value for `IOTPAY_V3_API_URL`.
    pub fn v3_api_url(&self) -> String {
        format!("http://{}/v3", self.addr)
    }

    /// The value for `IOTPAY_V2_API_URL`.
    pub fn v2_api_url(&self) -> String {
        format!("http://{}/v2", self.addr)
    }

    /// The simulated merchant.
    pub fn mch_id(&self) -> &MchId {
        &self.shared.mch_id
    }

    /// Sets where notifications go.
    pub fn set_notify_url(&self, url: impl Into<String>) {
        *lock(&self.shared.notify_url) = Some(url.into());
    }

    /// Sets the pauses between attempts of a notification.
    pub fn set_retry_schedule(&self, schedule: Vec<Duration>) {
        *lock(&self.shared.retry_schedule) = schedule;
    }

    /// Delays every following query answer.
    pub fn set_query_delay(&self, delay: Duration) {
        *lock(&self.shared.query_delay) = delay;
    }

    /// Answers the next `n` queries with HTTP 500.
    pub fn fail_next_queries(&self, n: u32) {
        self.shared.query_fail_remaining.store(n, Ordering::SeqCst);
    }

    /// The order book, in creation order.
    pub fn orders(&self) -> Vec<Order> {
        lock(&self.shared.orders).clone()
    }

    /// One order of the book.
    pub fn order(&self, pay_order_id: &str) -> Option<Order> {
        lock(&self.shared.orders).iter().find(|o| o.pay_order_id == pay_order_id).cloned()
    }

    /// Changes an order in the book, and so what later queries tell (e.g. `status = 9`, failed).
    /// Returns false when there is no such order.
    pub fn update_order(&self, pay_order_id: &str, change: impl FnOnce(&mut Order)) -> bool {
        lock(&self.shared.orders).iter_mut().find(|o| o.pay_order_id == pay_order_id).map(change).is_some()
    }

    /// Every query received so far.
    pub fn queries(&self) -> Vec<QueryRecord> {
        lock(&self.shared.queries).clone()
    }

    /// Books a successful v3 card payment.
    pub fn create_v3_payment(&self, amount: i64) -> Order {
        let order = self.new_order(ApiVersion::V3, "PC", amount);
        self.book(order)
    }

    /// Books a successful v3 refund of `original` (a v3 payment with enough left to refund).
    pub fn create_v3_refund(&self, original: &str, amount: i64) -> Result<Order, SandboxError> {
        let mut orders = lock(&self.shared.orders);
        let payment = orders
            .iter_mut()
            .find(|o| o.pay_order_id == original && o.api_version == ApiVersion::V3 && o.pay_type == "pay")
            .ok_or_else(|| SandboxError::UnknownPayment(original.to_owned()))?;
        if amount > payment.refundable {
            return Err(SandboxError::NotRefundable {
                pay_order_id: original.to_owned(),
                amount,
                refundable: payment.refundable,
            });
        }
        payment.refundable -= amount;
        let mut refund = self.new_order(ApiVersion::V3, "RF", amount);
        refund.pay_type = "refund".into();
        refund.original_order_id = Some(original.to_owned());
        refund.refundable = 0;
        refund.card_num = payment.card_num.clone();
        refund.expiry_date = payment.expiry_date.clone();
        orders.push(refund.clone());
        Ok(refund)
    }

    /// Books a successful v2 card payment.
    pub fn create_v2_payment(&self, amount: i64) -> Order {
        let mut order = self.new_order(ApiVersion::V2, "P2", amount);
        order.card_num = "450116XXXXXX7214".into();
        order.channel = String::new();
        order.invoice_num = String::new();
        order.auth_num = String::new();
        self.book(order)
    }

    /// Books a v3 payment and notifies it. With `forge_sign` nothing is booked: a forger's
    /// payment never happened, so a query for it finds nothing.
    pub async fn send_v3_payment(&self, amount: i64, options: &SendOptions) -> Result<Delivery, SandboxError> {
        let order = if options.forge_sign {
            self.new_order(ApiVersion::V3, "PC", amount)
        } else {
            self.create_v3_payment(amount)
        };
        let mut delivery = self.notify(&order, options).await?;
        if options.forge_sign {
            delivery.order = None;
        }
        Ok(delivery)
    }

    /// Books a v3 refund of `original` and notifies it.
    pub async fn send_v3_refund(
        &self,
        original: &str,
        amount: i64,
        options: &SendOptions,
    ) -> Result<Delivery, SandboxError> {
        let order = self.create_v3_refund(original, amount)?;
        self.notify(&order, options).await
    }

    /// Books a v2 payment and notifies it.
    pub async fn send_v2_payment(&self, amount: i64, options: &SendOptions) -> Result<Delivery, SandboxError> {
        let order = self.create_v2_payment(amount);
        self.notify(&order, options).await
    }

    /// The signed notification of `order`, with the fault knobs of `options` applied.
    pub fn notification(&self, order: &Order, options: &SendOptions) -> Value {
        let mut fields = order.notification_fields();
        if let Some(amount) = options.tamper_amount {
            fields.insert("amount".into(), Value::from(amount));
        }
        let forged = MerchantKey::new(FORGER_KEY);
        sign_object(&mut fields, if options.forge_sign { &forged } else { &self.shared.key });
        Value::Object(fields)
    }

    /// Sends `order`'s notification to the notify URL until `SUCCESS` or the schedule runs out.
    pub async fn notify(&self, order: &Order, options: &SendOptions) -> Result<Delivery, SandboxError> {
        let url = lock(&self.shared.notify_url).clone().ok_or(SandboxError::NoNotifyUrl)?;
        let body = self.notification(order, options);
        let (text, content_type) = if options.form_encoded {
            (form_encode(&body), "application/x-www-form-urlencoded")
        } else {
            (body.to_string(), "application/json")
        };
        let schedule = lock(&self.shared.retry_schedule).clone();
        let max_attempts = options.max_attempts.unwrap_or(schedule.len() + 1).max(1);
        let copies = options.concurrent.max(1);
        let mut tasks = tokio::task::JoinSet::new();
        for copy in 0..copies {
            let (shared, url, text, schedule) = (self.shared.clone(), url.clone(), text.clone(), schedule.clone());
            tasks.spawn(async move {
                shared.send_until_acknowledged(&url, &text, content_type, copy, max_attempts, &schedule).await
            });
        }
        let mut attempts = Vec::new();
        let mut acknowledged = true;
        while let Some(result) = tasks.join_next().await {
            let copy_attempts = result.expect("a send task does not panic");
            acknowledged &= copy_attempts.last().is_some_and(Attempt::acknowledged);
            attempts.extend(copy_attempts);
        }
        for i in 0..options.duplicates {
            attempts.push(self.shared.post(&url, &text, content_type, copies + i, 1).await);
        }
        Ok(Delivery { order: Some(order.clone()), body, attempts, acknowledged })
    }

    fn new_order(&self, api_version: ApiVersion, prefix: &str, amount: i64) -> Order {
        let seq = self.shared.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let now = jiff::Zoned::now()
            .with_time_zone(jiff::tz::TimeZone::get("America/Toronto").unwrap_or(jiff::tz::TimeZone::UTC));
        let run = &self.shared.run;
        Order {
            api_version,
            mch_id: self.shared.mch_id.to_string(),
            pay_order_id: format!("{prefix}{}{run}{seq:04}", now.strftime("%Y%m%d%H%M%S")),
            mch_order_no: format!("sbx-{run}-{seq:04}"),
            original_order_id: None,
            pay_type: "pay".into(),
            amount,
            currency: "CAD".into(),
            refundable: amount,
            status: 2,
            pay_succ_time: now.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            card_num: "432567******2266".into(),
            expiry_date: "0730".into(),
            card_type: "V".into(),
            invoice_num: format!("INV{seq:06}"),
            auth_num: format!("A{seq:05}"),
            trans_num: format!("66{seq:010}"),
            channel: "PF_CC".into(),
        }
    }

    fn book(&self, order: Order) -> Order {
        lock(&self.shared.orders).push(order.clone());
        order
    }
}

impl Shared {
    async fn send_until_acknowledged(
        &self,
        url: &str,
        body: &str,
        content_type: &'static str,
        copy: u32,
        max_attempts: usize,
        schedule: &[Duration],
    ) -> Vec<Attempt> {
        let mut attempts = Vec::new();
        for number in 1..=max_attempts {
            let attempt = self.post(url, body, content_type, copy, number as u32).await;
            let done = attempt.acknowledged();
            attempts.push(attempt);
            if done || number == max_attempts {
                break;
            }
            let pause = schedule.get(number - 1).or(schedule.last()).copied().unwrap_or(Duration::ZERO);
            tokio::time::sleep(pause).await;
        }
        attempts
    }

    async fn post(&self, url: &str, body: &str, content_type: &str, copy: u32, number: u32) -> Attempt {
        let sent = self.client.post(url).header("content-type", content_type).body(body.to_owned()).send().await;
        match sent {
            Ok(resp) => {
                let status = Some(resp.status().as_u16());
                let answer = resp.text().await.unwrap_or_default();
                Attempt { copy, number, status, answer: answer.chars().take(200).collect() }
            }
            Err(e) => Attempt { copy, number, status: None, answer: e.to_string() },
        }
    }

    fn record(&self, api_version: ApiVersion, pay_order_id: Option<String>, outcome: QueryOutcome) {
        tracing::info!(
            api = api_version.as_str(),
            pay_order_id = pay_order_id.as_deref(),
            ?outcome,
            "sandbox cc_query"
        );
        lock(&self.queries).push(QueryRecord { api_version, pay_order_id, outcome });
    }
}

/// `name=value&…` of a flat JSON object, values as the text they sign as.
fn form_encode(body: &Value) -> String {
    let encode = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    body.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            format!("{}={}", encode(k), encode(&text))
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn query_v3(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    query(&shared, ApiVersion::V3, &body).await
}

async fn query_v2(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    query(&shared, ApiVersion::V2, &body).await
}

fn fail(msg: &str) -> Response {
    Json(json!({"retCode": "FAIL", "retMsg": msg})).into_response()
}

/// `cc_query`: verifies the request's sign, then answers from the order book.
async fn query(shared: &Shared, api_version: ApiVersion, body: &[u8]) -> Response {
    let delay = *lock(&shared.query_delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let params = Params::from_json(body).ok();
    let pay_order_id = params.as_ref().and_then(|p| p.text("payOrderId")).map(str::to_owned);
    let failing = shared.query_fail_remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if failing.is_ok() {
        shared.record(api_version, pay_order_id, QueryOutcome::ServerError);
        return (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response();
    }
    let Some(params) = params else {
        shared.record(api_version, pay_order_id, QueryOutcome::Invalid);
        return fail("invalid request");
    };
    // Never "not exist" here: that wording means a definite "no such order" to the client.
    if params.text("mchId") != Some(shared.mch_id.as_str()) {
        shared.record(api_version, pay_order_id, QueryOutcome::Invalid);
        return fail("invalid mchId");
    }
    let signed =
        params.text(sign::SIGN_FIELD).is_some_and(|s| sign::verify(&params, s, std::slice::from_ref(&shared.key)));
    if !signed {
        shared.record(api_version, pay_order_id, QueryOutcome::BadSign);
        return fail("sign error");
    }
    let mch_order_no = params.text("mchOrderNo");
    let found = lock(&shared.orders)
        .iter()
        .find(|o| {
            o.api_version == api_version
                && (pay_order_id.as_deref() == Some(o.pay_order_id.as_str())
                    || (pay_order_id.is_none() && mch_order_no == Some(o.mch_order_no.as_str())))
        })
        .cloned();
    let Some(order) = found else {
        shared.record(api_version, pay_order_id, QueryOutcome::NotFound);
        return fail("order not exist");
    };
    shared.record(api_version, pay_order_id, QueryOutcome::Found);
    let mut fields = order.query_fields();
    sign_object(&mut fields, &shared.key);
    let member = match api_version {
        ApiVersion::V3 => "retData",
        ApiVersion::V2 => "order",
    };
    Json(json!({"retCode": "SUCCESS", "retMsg": "", member: fields})).into_response()
}

/// Parses a re-send schedule: `15s,15s,30s,3m,1h` (units `ms`, `s`, `m`, `h`).
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(parse_duration).collect()
}

/// Parses one duration: a whole number with unit `ms`, `s`, `m` or `h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| format!("`{s}` has no unit (ms, s, m, h)"))?;
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("`{s}` is not a whole number and a unit"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{s}`: unit must be ms, s, m or h")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse() {
        let s = parse_schedule("15s, 500ms,3m,1h").unwrap();
        assert_eq!(
            s,
            [Duration::from_secs(15), Duration::from_millis(500), Duration::from_secs(180), Duration::from_secs(3600)]
        );
        assert!(parse_schedule("15").is_err());
        assert!(parse_schedule("1d").is_err());
        assert!(parse_schedule("-1s").is_err());
        assert_eq!(parse_schedule("").unwrap(), []);
    }

    #[test]
    fn signed_objects_verify_with_the_service_code() {
        let key = MerchantKey::new("k");
        let mut fields = into_map(json!({"a": 1, "b": "", "c": "x"}));
        sign_object(&mut fields, &key);
        let params = Params::from_json(Value::Object(fields.clone()).to_string().as_bytes()).unwrap();
        assert!(sign::verify(&params, fields["sign"].as_str().unwrap(), &[key]));
        assert!(!sign::verify(&params, fields["sign"].as_str().unwrap(), &[MerchantKey::new("other")]));
    }
}

/// The `iotpay-notify sandbox` subcommand: a thin command line over [`Sandbox`].
pub mod command {
    use std::net::SocketAddr;
    use std::time::Duration;

    use anyhow::{bail, Context};

    use super::{parse_schedule, Delivery, Sandbox, SandboxConfig, SendOptions};
    use crate::domain::{MchId, MerchantKey};

    /// Flags of `iotpay-notify sandbox`.
    #[derive(Debug, clap::Args)]
    pub struct SandboxArgs {
        /// Address of the simulated cc_query API (v3 at /v3, v2 at /v2).
        #[arg(long, default_value = "127.0.0.1:8090")]
        pub listen: SocketAddr,
        /// Merchant id [default: the first of IOTPAY_MERCHANTS].
        #[arg(long)]
        pub mch_id: Option<String>,
        /// Merchant key [default: that merchant's first key in IOTPAY_MERCHANTS].
        #[arg(long, env = "IOTPAY_SANDBOX_KEY", hide_env_values = true)]
        pub key: Option<String>,
        /// Where notifications go, e.g. http://127.0.0.1:8080/iotpay/notify.
        #[arg(long)]
        pub notify_url: Option<String>,
        /// v3 payments to notify.
        #[arg(long, default_value_t = 0)]
        pub v3_payments: u32,
        /// Full refunds of the first N v3 payments to notify.
        #[arg(long, default_value_t = 0)]
        pub v3_refunds: u32,
        /// v2 payments to notify.
        #[arg(long, default_value_t = 0)]
        pub v2_payments: u32,
        /// v3 payments whose notification carries ten times the amount the query tells (validly signed).
        #[arg(long, default_value_t = 0)]
        pub tampered: u32,
        /// v3 payments that never happened, signed with a wrong key (one attempt, never re-sent after the 401; --concurrent and --duplicates still multiply its POSTs).
        #[arg(long, default_value_t = 0)]
        pub forged: u32,
        /// Amount of each payment, in cents.
        #[arg(long, default_value_t = 1500)]
        pub amount: i64,
        /// Send each notification this many more times after SUCCESS.
        #[arg(long, default_value_t = 0)]
        pub duplicates: u32,
        /// Send notifications form-encoded instead of JSON.
        #[arg(long)]
        pub form: bool,
        /// Send each notification as this many simultaneous copies.
        #[arg(long, default_value_t = 1)]
        pub concurrent: u32,
        /// Delay every query answer by this many milliseconds.
        #[arg(long, default_value_t = 0)]
        pub query_delay_ms: u64,
        /// Answer the first N queries with HTTP 500.
        #[arg(long, default_value_t = 0)]
        pub query_fail_first: u32,
        /// Pauses between attempts of a notification not answered SUCCESS, e.g. `1s,5s,30s`
        /// [default: 15s,15s,30s,3m,10m,20m,30m,30m,30m,1h].
        #[arg(long)]
        pub retry_schedule: Option<String>,
        /// Exit once everything is sent (non-zero if a genuine notification was never acknowledged),
        /// instead of serving queries until Ctrl-C.
        #[arg(long)]
        pub exit_when_sent: bool,
    }

    /// The merchant from the flags, else from `IOTPAY_MERCHANTS` (in the order listed).
    fn merchant(args: &SandboxArgs) -> anyhow::Result<(MchId, MerchantKey)> {
        let listed: Vec<(String, String)> = std::env::var("IOTPAY_MERCHANTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| pair.trim().split_once(':'))
            .map(|(id, key)| (id.trim().to_owned(), key.trim().to_owned()))
            .collect();
        let mch_id = match &args.mch_id {
            Some(id) => id.clone(),
            None => {
                listed.first().map(|(id, _)| id.clone()).context("--mch-id is required (or set IOTPAY_MERCHANTS)")?
            }
        };
        let key =
            match &args.key {
                Some(key) => key.clone(),
                None => listed.iter().find(|(id, _)| *id == mch_id).map(|(_, key)| key.clone()).with_context(|| {
                    format!("no key for merchant {mch_id}: pass --key or list it in IOTPAY_MERCHANTS")
                })?,
            };
        Ok((MchId::parse(&mch_id).context("--mch-id")?, MerchantKey::new(key)))
    }

    fn describe(kind: &str, d: &Delivery) {
        let amount = &d.body["amount"];
        let first_copy: Vec<_> = d.attempts.iter().filter(|a| a.copy == 0).collect();
        let last = first_copy.last().map(|a| match a.status {
            Some(s) => format!("{s} {}", a.answer.trim()),
            None => format!("no answer: {}", a.answer),
        });
        let outcome = if d.acknowledged { "acknowledged" } else { "NOT acknowledged" };
        let extra = if d.attempts.len() > first_copy.len() {
            format!("; {} POSTs in all with concurrent copies and duplicates", d.attempts.len())
        } else {
            String::new()
        };
        println!(
            "sent {kind:<10} {} amount {amount}: {outcome} after {} attempt(s), last answer {}{extra}",
            d.pay_order_id(),
            first_copy.len(),
            last.unwrap_or_default()
        );
    }

    /// Runs the sandbox: sends what the flags ask, then serves queries until Ctrl-C.
    pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
        crate::telemetry::init_logs(crate::config::LogFormat::Text);
        let (mch_id, key) = merchant(&args)?;
        let mut config = SandboxConfig::new(mch_id.clone(), key);
        config.listen = args.listen;
        config.notify_url = args.notify_url.clone();
        config.query_delay = Duration::from_millis(args.query_delay_ms);
        config.query_fail_first = args.query_fail_first;
        if let Some(s) = &args.retry_schedule {
            config.retry_schedule = parse_schedule(s).map_err(anyhow::Error::msg).context("--retry-schedule")?;
        }
        let sandbox = Sandbox::start(config).await?;
        println!("IOTPay sandbox for merchant {mch_id}; point the service at it with");
        println!("  IOTPAY_V3_API_URL={}", sandbox.v3_api_url());
        println!("  IOTPAY_V2_API_URL={}", sandbox.v2_api_url());

        let sends = args.v3_payments + args.v2_payments + args.tampered + args.forged;
        if sends > 0 && args.notify_url.is_none() {
            bail!("--notify-url is required to send notifications");
        }
        let knobs = SendOptions {
            duplicates: args.duplicates,
            concurrent: args.concurrent,
            form_encoded: args.form,
            ..SendOptions::default()
        };
        let mut unacknowledged = 0;
        let mut payments = Vec::new();
        for _ in 0..args.v3_payments {
            let d = sandbox.send_v3_payment(args.amount, &knobs).await?;
            describe("v3 payment", &d);
            unacknowledged += usize::from(!d.acknowledged);
            payments.push(d.pay_order_id().to_owned());
        }
        for original in payments.iter().take(args.v3_refunds as usize) {
            let d = sandbox.send_v3_refund(original, args.amount, &knobs).await?;
            describe("v3 refund", &d);
            unacknowledged += usize::from(!d.acknowledged);
        }
        for _ in 0..args.v2_payments {
            let d = sandbox.send_v2_payment(args.amount, &knobs).await?;
            describe("v2 payment", &d);
            unacknowledged += usize::from(!d.acknowledged);
        }
        for _ in 0..args.tampered {
            let tampered = SendOptions { tamper_amount: Some(args.amount * 10), ..knobs.clone() };
            let d = sandbox.send_v3_payment(args.amount, &tampered).await?;
            describe("tampered", &d);
            unacknowledged += usize::from(!d.acknowledged);
        }
        for _ in 0..args.forged {
            let forged = SendOptions { forge_sign: true, max_attempts: Some(1), ..knobs.clone() };
            let d = sandbox.send_v3_payment(args.amount, &forged).await?;
            describe("forged", &d);
        }
        if args.exit_when_sent {
            if unacknowledged > 0 {
                bail!("{unacknowledged} genuine notification(s) were never acknowledged with SUCCESS");
            }
            return Ok(());
        }
        println!("serving cc_query until Ctrl-C");
        crate::cli::wait_for_signal().await;
        Ok(())
    }
}
