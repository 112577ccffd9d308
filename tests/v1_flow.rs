//! IOTPay's general API (v1) end to end: a notification from the sandbox IOTPay confirmed through
//! `query_order` and forwarded (without the payer) or rejected, and the query client reading the
//! sandbox's `query_order` answers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use iotpay_devtools::sandbox::{QueryOutcome, Sandbox, SandboxConfig, SendOptions};
use iotpay_devtools::sink::{Sink, SinkConfig};
use iotpay_devtools::testing::TestDatabase;
use iotpay_notify::config::ForwardSecret;
use iotpay_notify::domain::{MchId, MerchantKey};
use serde_json::Value;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

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
