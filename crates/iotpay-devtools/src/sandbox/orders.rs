//! The sandbox's order book: what IOTPay knows about each order (the truth its query tells).

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::{lock, Sandbox, SandboxError};
use crate::domain::ApiVersion;
use crate::iotpay::TimeZone;

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
    /// v3/v2: `YYYY-MM-DD HH:MM:SS`, Toronto time; v1: milliseconds since the epoch.
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
    /// v3 channel (`PF_CC`), v1 wallet channel (`WX_JSAPI`).
    pub channel: String,
    /// v1: the wallet's own transaction number (`channelOrderNo`).
    pub channel_order_no: String,
    /// v1: the payer's WeChat id (personal data the receiver must not spread).
    pub openid: String,
    /// v1: what was bought (UTF-8, percent-encoded on the wire).
    pub subject: String,
    /// Fields the query answer leaves out (before it is signed), to play IOTPay's documented
    /// answers rather than the sandbox's generous ones: e.g. `amount`, `currency` and `mchId`
    /// for v2's documented `order`, or `payOrderId` for a v1 answer that does not name it.
    pub query_omits: Vec<String>,
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
            // As IOTPay's general API sends it: `channeId` (sic), an empty `device`, the payer's `openid`.
            ApiVersion::V1 => json!({
                "payOrderId": self.pay_order_id, "mchId": self.mch_id, "mchOrderNo": self.mch_order_no,
                "channeId": self.channel, "currency": self.currency, "amount": self.amount,
                "status": self.status, "clientIp": "", "device": "", "subject": self.subject, "body": "",
                "channelOrderNo": self.channel_order_no, "param1": "", "param2": "",
                "paySuccTime": self.pay_succ_time, "backType": 2, "openid": self.openid,
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
            // `query_order` answers flat: the caller adds retCode/resCode around these.
            ApiVersion::V1 => json!({
                "payOrderId": self.pay_order_id, "mchId": self.mch_id, "mchOrderNo": self.mch_order_no,
                "channelId": self.channel, "currency": self.currency, "amount": self.amount,
                "clientIp": "", "device": "", "subject": self.subject, "body": "", "param1": "", "param2": "",
                "extra": "", "paySuccTime": self.pay_succ_time, "channelOrderNo": self.channel_order_no,
                "status": self.status,
            }),
        };
        let mut fields = into_map(fields);
        fields.retain(|k, _| !self.query_omits.contains(k));
        fields
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

impl Sandbox {
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

    /// Books a successful v1 (general API) payment through `channel`, e.g. `WX_JSAPI` (WeChat Pay).
    pub fn create_v1_payment(&self, amount: i64, channel: &str) -> Order {
        let mut order = self.new_order(ApiVersion::V1, if channel.starts_with("ALIPAY") { "AL" } else { "WJ" }, amount);
        order.channel = channel.to_owned();
        order.card_num = String::new();
        order.expiry_date = String::new();
        order.card_type = String::new();
        order.invoice_num = String::new();
        order.auth_num = String::new();
        order.trans_num = String::new();
        order.refundable = 0;
        self.book(order)
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

    pub(super) fn new_order(&self, api_version: ApiVersion, prefix: &str, amount: i64) -> Order {
        let seq = self.shared.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let now = SystemTime::now();
        // v3/v2 send a zone-less local time: the sandbox uses the service's default IOTPAY_TIME_ZONE.
        let zone = TimeZone::get("America/Toronto").unwrap_or(TimeZone::UTC);
        let local = zone.to_datetime(now.try_into().expect("the clock is within 9999 CE"));
        let run = &self.shared.run;
        let mut order = Order {
            api_version,
            mch_id: self.shared.mch_id.to_string(),
            pay_order_id: format!("{prefix}{}{run}{seq:04}", local.strftime("%Y%m%d%H%M%S")),
            mch_order_no: format!("sbx-{run}-{seq:04}"),
            original_order_id: None,
            pay_type: "pay".into(),
            amount,
            currency: "CAD".into(),
            refundable: amount,
            status: 2,
            pay_succ_time: local.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            card_num: "432567******2266".into(),
            expiry_date: "0730".into(),
            card_type: "V".into(),
            invoice_num: format!("INV{seq:06}"),
            auth_num: format!("A{seq:05}"),
            trans_num: format!("66{seq:010}"),
            channel: "PF_CC".into(),
            channel_order_no: String::new(),
            openid: String::new(),
            subject: String::new(),
            query_omits: Vec::new(),
        };
        if api_version == ApiVersion::V1 {
            order.pay_succ_time = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis().to_string();
            order.channel_order_no = format!("42000{seq:023}");
            order.openid = format!("oSbx{run}{seq:06}payerOpenId");
            order.subject = "Café crème 咖啡".into();
        }
        order
    }

    /// Takes an order out of the book (a forger's payment that never happened).
    pub(super) fn remove_order(&self, pay_order_id: &str) {
        lock(&self.shared.orders).retain(|o| o.pay_order_id != pay_order_id);
    }

    fn book(&self, order: Order) -> Order {
        lock(&self.shared.orders).push(order.clone());
        order
    }
}
