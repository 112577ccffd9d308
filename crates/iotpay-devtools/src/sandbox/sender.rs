//! The sandbox's sender: signed notifications POSTed to the notifyUrl, re-sent until `SUCCESS`,
//! with the fault knobs of [`SendOptions`].

use std::time::Duration;

use serde_json::Value;

use super::{lock, Order, Sandbox, SandboxError, Shared};
use crate::domain::{ApiVersion, MerchantKey};
use crate::iotpay::sign;

/// The key a forged notification is signed with: anything but the merchant's.
const FORGER_KEY: &str = "not-the-merchant-key";

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
    /// state the encoding). v1 notifications are always form-encoded, as IOTPay sends them.
    pub form_encoded: bool,
    /// Put the form pairs in the URL's query string too, as IOTPay's v1 platform does.
    pub in_query_string: bool,
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
    /// True when the receiver acknowledged: HTTP 200 and body `SUCCESS` (any case: the card
    /// APIs ask for `SUCCESS`, the general API for `success`).
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

impl Sandbox {
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

    /// Books a v1 (general API) payment through `channel` (e.g. `WX_JSAPI`: WeChat Pay) and
    /// notifies it as IOTPay does: form-encoded. With `forge_sign` nothing is booked.
    pub async fn send_v1_payment(
        &self,
        amount: i64,
        channel: &str,
        options: &SendOptions,
    ) -> Result<Delivery, SandboxError> {
        let order = self.create_v1_payment(amount, channel);
        if options.forge_sign {
            self.remove_order(&order.pay_order_id);
        }
        let mut delivery = self.notify(&order, options).await?;
        if options.forge_sign {
            delivery.order = None;
        }
        Ok(delivery)
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
        sign::sign_object(&mut fields, if options.forge_sign { &forged } else { &self.shared.key });
        Value::Object(fields)
    }

    /// Sends `order`'s notification to the notify URL until `SUCCESS` or the schedule runs out.
    pub async fn notify(&self, order: &Order, options: &SendOptions) -> Result<Delivery, SandboxError> {
        let url = lock(&self.shared.notify_url).clone().ok_or(SandboxError::NoNotifyUrl)?;
        let body = self.notification(order, options);
        let (text, content_type) = if options.form_encoded || order.api_version == ApiVersion::V1 {
            (form_encode(&body), "application/x-www-form-urlencoded")
        } else {
            (body.to_string(), "application/json")
        };
        let url = if options.in_query_string {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}{}", form_encode(&body))
        } else {
            url
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
}

/// `name=value&…` of a flat JSON object, values as the text they sign as.
pub fn form_encode(body: &Value) -> String {
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
