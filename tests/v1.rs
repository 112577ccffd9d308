//! IOTPay's general API (v1: WeChat Pay, Alipay, UnionPay), black-box: notifications as IOTPay
//! sends them (form body, query string, `channeId`, milliseconds, `openid`), the `success`
//! answer, storage, confirmation through `query_order`, forwarding, and hostile variants.

mod common;

use std::time::{Duration, Instant};

use common::*;
use iotpay_devtools::sandbox::{QueryOutcome, Sandbox, SandboxConfig, SendOptions};
use iotpay_devtools::sink::{Sink, SinkConfig};
use iotpay_devtools::testing::TestDatabase;
use iotpay_notify::config::ForwardSecret;
use iotpay_notify::domain::{MchId, MerchantKey};
use iotpay_notify::iotpay::sign;
use serde_json::Value;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

const FORM: &str = "application/x-www-form-urlencoded";
const V1_MCH: &str = "10000702";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A vector of tests/data/sign-vectors.json by name.
fn vector(name: &str) -> Value {
    let text = include_str!("../crates/iotpay/tests/data/sign-vectors.json");
    let doc: Value = serde_json::from_str(text).unwrap();
    doc["vectors"].as_array().unwrap().iter().find(|v| v["name"] == name).cloned().expect("vector exists")
}

/// The vector's form body with its sign appended, as IOTPay posts it.
fn vector_body(v: &Value) -> String {
    format!("{}&sign={}", v["form"].as_str().unwrap(), v["sign"].as_str().unwrap())
}

/// An app whose merchants include the v1 vectors' merchant with both vector keys.
async fn app(db: &TestDatabase) -> TestApp {
    let merchants = format!(
        "{},{V1_MCH}:{},{V1_MCH}:{}",
        merchants_env(),
        vector("v1-wechat-notify-form")["key"].as_str().unwrap(),
        vector("v1-natural-order")["key"].as_str().unwrap()
    );
    TestApp::spawn_with(db.pool.clone(), &db.url(), &[("IOTPAY_MERCHANTS", &merchants)]).await
}

async fn post_with_query(app: &TestApp, query: &str, body: &str) -> (u16, String) {
    let resp = app
        .client
        .post(format!("{}?{query}", app.url("/iotpay/notify")))
        .header("content-type", FORM)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Re-signs form pairs (values decoded) with `key`, in IOTPay's order; returns the form body.
fn signed_pairs(pairs: &[(&str, &str)], key: &str) -> String {
    let s = sign::sign_pairs(pairs.iter().copied(), &MerchantKey::new(key));
    let enc = |t: &str| percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut body: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
    body.push(format!("sign={s}"));
    body.join("&")
}

fn wechat_pairs() -> Vec<(&'static str, &'static str)> {
    vec![
        ("payOrderId", "WJ20240305000000000000000042"),
        ("mchId", V1_MCH),
        ("mchOrderNo", "wx-42"),
        ("channeId", "WX_NATIVE"),
        ("currency", "CAD"),
        ("amount", "990"),
        ("status", "2"),
        ("device", ""),
        ("channelOrderNo", "4200000000000042"),
        ("paySuccTime", "1709651472000"),
        ("backType", "2"),
        ("openid", "oPayerOpenIdSecret42"),
    ]
}

fn key1() -> String {
    vector("v1-wechat-notify-form")["key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_wechat_notification_as_iotpay_sends_it_is_answered_success_and_stored_once() {
    let db = TestDatabase::create().await;
    let app = app(&db).await;
    let v = vector("v1-wechat-notify-form");
    let body = vector_body(&v);
    assert_eq!(app.post(body.clone().into_bytes(), Some(FORM)).await, (200, "success".into()));
    // IOTPay re-sends until it reads `success`: a repeat is acknowledged the same and counted.
    assert_eq!(app.post(body.into_bytes(), Some(FORM)).await, (200, "success".into()));

    let e = sqlx::query("SELECT *, row_to_json(payment_events)::text AS whole FROM payment_events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(e.get::<String, _>("api_version"), "v1");
    assert_eq!(e.get::<String, _>("event_type"), "payment.succeeded");
    assert_eq!(e.get::<String, _>("status"), "pending");
    assert_eq!(e.get::<String, _>("pay_order_id"), "WJ20240305101112131415161718");
    assert_eq!(e.get::<String, _>("mch_order_no"), "wx-order-0001");
    assert_eq!((e.get::<i64, _>("amount"), e.get::<String, _>("currency")), (2000, "CAD".into()));
    assert_eq!(e.get::<Option<String>, _>("channel").as_deref(), Some("WX_JSAPI"), "from `channeId`");
    assert_eq!(e.get::<Option<String>, _>("channel_order_no").as_deref(), Some("4200002024030512345678901234"));
    assert_eq!(e.get::<Option<String>, _>("pay_succ_time_raw").as_deref(), Some("1709651472000"));
    let at: chrono::DateTime<chrono::Utc> = e.get("pay_succ_at");
    assert_eq!(at.to_rfc3339(), "2024-03-05T15:11:12+00:00", "milliseconds since the epoch, not local time");
    assert_eq!(e.get::<i32, _>("notification_count"), 2);
    assert!(!e.get::<String, _>("whole").contains("oVtest_payer_openid"), "openid never in payment_events");
    assert_eq!(count(&db.pool, "payment_events").await, 1);

    let logged: Vec<Value> =
        sqlx::query_scalar("SELECT fields FROM notifications ORDER BY id").fetch_all(&db.pool).await.unwrap();
    assert_eq!(logged.len(), 2);
    assert_eq!(logged[0]["openid"], "oVtest_payer_openid_not_real", "the raw log keeps what IOTPay signed");
    assert_eq!(logged[0]["subject"], "Café crème 咖啡");
    let api: String =
        sqlx::query_scalar("SELECT api_version FROM notifications LIMIT 1").fetch_one(&db.pool).await.unwrap();
    assert_eq!(api, "v1");

    // The card APIs keep their upper-case answer.
    assert_eq!(app.post_json(&signed(v3_pay("PC1", 1500), KEY)).await, (200, "SUCCESS".into()));
}

#[tokio::test]
async fn query_string_pairs_are_read_alone_or_with_an_identical_body() {
    let db = TestDatabase::create().await;
    let app = app(&db).await;
    let body = vector_body(&vector("v1-wechat-notify-form"));
    assert_eq!(post_with_query(&app, &body, &body).await, (200, "success".into()), "both, identical");

    let other = signed_pairs(&wechat_pairs(), &key1());
    assert_eq!(post_with_query(&app, &other, "").await, (200, "success".into()), "query string only");
    let stored: i32 = sqlx::query_scalar("SELECT notification_count FROM payment_events WHERE pay_order_id = $1")
        .bind("WJ20240305000000000000000042")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);

    // Part in the query string, the rest (with the sign) in the body: one signed set.
    let (head, tail) = other.split_at(other.find("&currency=").unwrap());
    assert_eq!(post_with_query(&app, head, &tail[1..]).await, (200, "success".into()));
    assert_eq!(count(&db.pool, "payment_events").await, 2);
}

#[tokio::test]
async fn a_sign_in_iotpays_natural_order_or_in_byte_order_is_accepted() {
    let db = TestDatabase::create().await;
    let app = app(&db).await;
    let v = vector("v1-natural-order");
    assert_ne!(v["canonical_without_key"], v["natural_canonical_without_key"], "the orders must differ");
    assert_eq!(app.post(vector_body(&v).into_bytes(), Some(FORM)).await, (200, "success".into()));

    // The same fields signed in byte order (what IOTPay's guide describes) verify too.
    let key = MerchantKey::new(v["key"].as_str().unwrap());
    let by_byte = sign::sign_canonical(v["canonical_without_key"].as_str().unwrap(), &key);
    assert_ne!(by_byte, v["sign"].as_str().unwrap());
    let body = format!("{}&sign={by_byte}", v["form"].as_str().unwrap());
    assert_eq!(app.post(body.into_bytes(), Some(FORM)).await, (200, "success".into()));
    let n: i32 = sqlx::query_scalar("SELECT notification_count FROM payment_events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(n, 2);

    // Tampered, in either order: refused, nothing more stored.
    let tampered = vector_body(&v).replace("amount=1234", "amount=1235");
    assert_eq!(app.post(tampered.into_bytes(), Some(FORM)).await.0, 401);
    assert_eq!(count(&db.pool, "notifications").await, 2);
}

#[tokio::test]
async fn bad_v1_input_is_refused_with_400_and_nothing_is_stored() {
    let db = TestDatabase::create().await;
    let app = app(&db).await;
    let key = key1();
    let without = |field: &str| -> String {
        let pairs: Vec<_> = wechat_pairs().into_iter().filter(|(k, _)| *k != field).collect();
        signed_pairs(&pairs, &key)
    };
    let with = |field: &str, value: &'static str| -> String {
        let pairs: Vec<_> =
            wechat_pairs().into_iter().map(|(k, v)| if k == field { (k, value) } else { (k, v) }).collect();
        signed_pairs(&pairs, &key)
    };
    let mut cases: Vec<(String, String, &str)> = Vec::new();
    for field in ["payOrderId", "mchOrderNo", "amount", "status"] {
        cases.push((without(field), String::new(), "missing"));
        cases.push((with(field, ""), String::new(), "empty"));
    }
    for bad in ["2024-03-05 10:11:12", "1709651472000.0", "soon", "-1"] {
        cases.push((with("paySuccTime", bad), String::new(), "paySuccTime"));
    }
    cases.push((with("amount", "9.90"), String::new(), "fractional amount"));
    let mut two_channels = wechat_pairs();
    two_channels.push(("channelId", "ALIPAY_WAP"));
    cases.push((signed_pairs(&two_channels, &key), String::new(), "two different channels"));
    let good = signed_pairs(&wechat_pairs(), &key);
    // The query string gives a signed field another value than the body.
    cases.push((good.clone(), "amount=99000".into(), "query/body conflict"));
    cases.push((good.clone(), "device=x".into(), "an empty body value against a query value"));
    for (body, query, what) in cases {
        let (status, answer) = post_with_query(&app, &query, &body).await;
        assert_eq!((status, answer.as_str()), (400, "FAIL"), "{what}: {body} ? {query}");
    }
    assert_eq!(count(&db.pool, "payment_events").await, 0);
    assert_eq!(count(&db.pool, "notifications").await, 0);
    // The untouched notification is fine, with or without an identical query string.
    assert_eq!(post_with_query(&app, "amount=990", &good).await, (200, "success".into()));
}

/// The whole flow: sandbox IOTPay (v1 notifications and `query_order`), the service with its
/// workers, and a sink that checks the forwarded events' signatures.
struct Flow {
    db: TestDatabase,
    sandbox: Sandbox,
    sink: Sink,
    shutdown: CancellationToken,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Flow {
    async fn start() -> Flow {
        let db = TestDatabase::create().await;
        let mut config = SandboxConfig::new(MchId::parse(MCH).unwrap(), MerchantKey::new(KEY));
        config.retry_schedule = vec![Duration::from_millis(50); 3];
        let sandbox = Sandbox::start(config).await.unwrap();
        let sink = Sink::start(SinkConfig::new(ForwardSecret::parse(SECRET).unwrap())).await.unwrap();
        let (v1, v3, v2, forward) = (
            sandbox.v1_api_url(),
            sandbox.v3_api_url(),
            sandbox.v2_api_url(),
            format!("{}/hook", sink.url().trim_end_matches('/')),
        );
        let extra = [
            ("IOTPAY_V1_API_URL", v1.as_str()),
            ("IOTPAY_V3_API_URL", v3.as_str()),
            ("IOTPAY_V2_API_URL", v2.as_str()),
            ("FORWARD_URLS", forward.as_str()),
            ("FORWARD_SECRET", SECRET),
            ("CONFIRM_FIRST_RETRY_MS", "100"),
            ("CONFIRM_POLL_INTERVAL_MS", "200"),
        ];
        let config = test_config(&db.url(), &extra);
        let shutdown = CancellationToken::new();
        let running = iotpay_notify::service::start(&config, db.pool.clone(), shutdown.clone()).await.unwrap();
        sandbox.set_notify_url(format!("http://{}/iotpay/notify", running.addr()));
        tokio::spawn(running.wait());
        Flow { db, sandbox, sink, shutdown }
    }

    async fn decided(&self, pay_order_id: &str) -> (String, Option<String>) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let row = sqlx::query("SELECT status, status_reason FROM payment_events WHERE pay_order_id = $1")
                .bind(pay_order_id)
                .fetch_optional(&self.db.pool)
                .await
                .unwrap();
            if let Some(row) = row {
                let status: String = row.get("status");
                if status != "pending" {
                    return (status, row.get("status_reason"));
                }
            }
            assert!(Instant::now() < deadline, "{pay_order_id} still undecided");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn a_wechat_payment_is_acknowledged_confirmed_through_query_order_and_forwarded_without_the_payer() {
    let flow = Flow::start().await;
    let options = SendOptions { in_query_string: true, ..SendOptions::default() };
    let sent = flow.sandbox.send_v1_payment(2000, "WX_JSAPI", &options).await.unwrap();
    assert!(sent.acknowledged);
    assert_eq!(
        sent.attempts.iter().map(|a| (a.status, a.answer.as_str())).collect::<Vec<_>>(),
        [(Some(200), "success")],
        "one POST, answered exactly `success`"
    );
    let id = sent.pay_order_id().to_owned();
    assert_eq!(flow.decided(&id).await, ("confirmed".into(), None));
    let asked: Vec<_> = flow.sandbox.queries().into_iter().filter(|q| q.pay_order_id.as_deref() == Some(&id)).collect();
    assert_eq!(asked.len(), 1);
    assert_eq!((asked[0].api_version.as_str(), asked[0].outcome), ("v1", QueryOutcome::Found));

    assert!(flow.sink.wait_for_accepted(1, Duration::from_secs(15)).await, "forwarded");
    let forwarded = &flow.sink.accepted()[0];
    assert_eq!(forwarded.event_type(), "payment.succeeded");
    let order = flow.sandbox.order(&id).unwrap();
    for (field, expected) in [
        ("api_version", "v1"),
        ("pay_order_id", id.as_str()),
        ("amount", "2000"),
        ("channel", "WX_JSAPI"),
        ("channel_order_no", order.channel_order_no.as_str()),
        ("pay_succ_time", order.pay_succ_time.as_str()),
        ("status", "confirmed"),
    ] {
        assert_eq!(forwarded.data(field), expected, "data.{field}");
    }
    let body = forwarded.body.to_string();
    assert!(!body.contains(&order.openid) && !body.contains("openid"), "the payer's openid is never forwarded");
    let schema = forwarding_schema();
    assert!(schema.is_valid(&forwarded.body), "the forwarded v1 event matches docs/forwarded-event.schema.json");
}

#[tokio::test]
async fn cancelled_and_tampered_v1_payments_end_rejected_and_are_never_forwarded() {
    let flow = Flow::start().await;
    let plain = SendOptions::default();
    let mut rejected = Vec::new();
    for (status, reason) in [(4, "status 4 (cancelled by the system)"), (9, "status 9")] {
        // The notification says paid; IOTPay's book says cancelled.
        let order = flow.sandbox.create_v1_payment(1500, "WX_JSAPI");
        flow.sandbox.update_order(&order.pay_order_id, |o| o.status = status);
        let mut as_paid = order.clone();
        as_paid.status = 2;
        assert!(flow.sandbox.notify(&as_paid, &plain).await.unwrap().acknowledged);
        let (decided, why) = flow.decided(&order.pay_order_id).await;
        assert_eq!(decided, "rejected");
        assert!(why.as_deref().unwrap_or_default().contains(reason), "{why:?}");
        rejected.push(order.pay_order_id);
    }
    let tampered = SendOptions { tamper_amount: Some(150_000), ..SendOptions::default() };
    let sent = flow.sandbox.send_v1_payment(1500, "ALIPAY_WAP", &tampered).await.unwrap();
    let (decided, why) = flow.decided(sent.pay_order_id()).await;
    assert_eq!(decided, "rejected");
    assert!(why.unwrap().contains("amount"));
    rejected.push(sent.pay_order_id().to_owned());

    // A forged v1 notification (wrong key) is refused before anything is stored.
    let forged = SendOptions { forge_sign: true, max_attempts: Some(1), ..SendOptions::default() };
    let sent = flow.sandbox.send_v1_payment(1500, "WX_JSAPI", &forged).await.unwrap();
    assert_eq!(sent.attempts[0].status, Some(401));

    // And a good one after them is forwarded: the only delivery.
    let good = flow.sandbox.send_v1_payment(700, "WX_JSAPI", &plain).await.unwrap();
    assert_eq!(flow.decided(good.pay_order_id()).await.0, "confirmed");
    assert!(flow.sink.wait_for_accepted(1, Duration::from_secs(15)).await);
    let deliveries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deliveries d JOIN payment_events e USING (event_id) WHERE e.pay_order_id = ANY($1)",
    )
    .bind(&rejected)
    .fetch_one(&flow.db.pool)
    .await
    .unwrap();
    assert_eq!(deliveries, 0);
    assert_eq!(flow.sink.accepted().len(), 1);
    assert_eq!(count(&flow.db.pool, "payment_events").await, 4);
}

fn forwarding_schema() -> jsonschema::Validator {
    let text = include_str!("../docs/forwarded-event.schema.json");
    let schema: Value = serde_json::from_str(text).unwrap();
    jsonschema::options().should_validate_formats(true).build(&schema).unwrap()
}

#[tokio::test]
async fn the_query_client_reads_the_sandboxs_query_order_answers() {
    use iotpay_notify::config::Merchants;
    use iotpay_notify::domain::{ApiVersion, PayOrderId};
    use iotpay_notify::iotpay::query::{QueryClient, QueryError, QueryTimeouts};

    let config = SandboxConfig::new(MchId::parse(MCH).unwrap(), MerchantKey::new(KEY));
    let sandbox = Sandbox::start(config).await.unwrap();
    let timeouts = QueryTimeouts { connect: Duration::from_secs(2), total: Duration::from_secs(5) };
    let client = |key: &str| {
        let merchants = std::sync::Arc::new(Merchants::from_pairs([(MCH, key)]));
        QueryClient::new(&sandbox.v3_api_url(), &sandbox.v2_api_url(), &sandbox.v1_api_url(), merchants, timeouts)
            .unwrap()
    };
    let mch = MchId::parse(MCH).unwrap();
    let order = sandbox.create_v1_payment(1234, "ALIPAY_WAP");
    let id = PayOrderId::parse(&order.pay_order_id).unwrap();

    let q = client(KEY).query(ApiVersion::V1, &mch, &id).await.unwrap();
    assert!(q.signed, "the flat answer's sign verifies");
    assert_eq!((q.api_version, q.status, q.amount), (ApiVersion::V1, 2, Some(1234)));
    assert_eq!((q.mch_order_no.as_deref(), q.currency.as_deref()), (Some(order.mch_order_no.as_str()), Some("CAD")));
    assert_eq!(q.pay_succ_time.as_deref(), Some(order.pay_succ_time.as_str()));

    sandbox.update_order(&order.pay_order_id, |o| o.status = 4);
    assert_eq!(client(KEY).query(ApiVersion::V1, &mch, &id).await.unwrap().status, 4);

    let unknown = PayOrderId::parse("WJ-NO-SUCH-ORDER").unwrap();
    assert!(matches!(client(KEY).query(ApiVersion::V1, &mch, &unknown).await, Err(QueryError::NotFound(_))));
    // A query signed with another key is refused by IOTPay: inconclusive, never "not found".
    assert!(matches!(client(OTHER_KEY).query(ApiVersion::V1, &mch, &id).await, Err(QueryError::Fail(_))));
    // v1 orders are not in the card APIs' books.
    assert!(matches!(client(KEY).query(ApiVersion::V3, &mch, &id).await, Err(QueryError::NotFound(_))));
    let outcomes: Vec<QueryOutcome> = sandbox.queries().iter().map(|q| q.outcome).collect();
    assert_eq!(
        outcomes,
        [
            QueryOutcome::Found,
            QueryOutcome::Found,
            QueryOutcome::NotFound,
            QueryOutcome::BadSign,
            QueryOutcome::NotFound
        ]
    );
}
