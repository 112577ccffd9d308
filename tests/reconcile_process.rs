//! Reconciliation across processes (issue 14): two `serve` replicas on one database query each
//! lost payment once and decide it once, and their metrics count what they did; the sandbox's
//! `--lost` books payments only reconciliation can find.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use iotpay_devtools::sandbox::{Sandbox, SandboxConfig};
use iotpay_devtools::testing::TestDatabase;
use iotpay_notify::domain::{MchId, MerchantKey};
use iotpay_notify::iotpay::merchants::Merchants;
use iotpay_notify::iotpay::query::{QueryClient, QueryTimeouts};
use iotpay_notify::iotpay::TimeZone;
use iotpay_notify::reconcile::{Parts, ReconcileSettings, Reconciler};
use iotpay_notify::store::orders::{self, NewOrder, Registered};
use sqlx::PgPool;

/// A `serve` replica against the sandbox, reconciling at once and often.
fn replica(db: &TestDatabase, sandbox: &Sandbox, port: u16) -> Child {
    serve_command(&db.url(), port)
        .env("IOTPAY_V3_API_URL", sandbox.v3_api_url())
        .env("IOTPAY_V2_API_URL", sandbox.v2_api_url())
        .env("IOTPAY_V1_API_URL", sandbox.v1_api_url())
        .env("FORWARD_URLS", "http://127.0.0.1:9/hook")
        .env("FORWARD_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .env("RECONCILE_AFTER_SECS", "0")
        .env("RECONCILE_POLL_INTERVAL_MS", "50")
        .env("RECONCILE_FIRST_RETRY_SECS", "1")
        .env("RECONCILE_MAX_BACKOFF_SECS", "1")
        .env("RECONCILE_GAUGE_INTERVAL_SECS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(client.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200) {
        assert!(Instant::now() < deadline, "{base} did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one metric line, e.g. `iotpay_reconciliation_queries_total{result="paid"}`
/// (0 when absent: a counter never incremented is not rendered).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn scrape(client: &reqwest::Client, base: &str) -> String {
    client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap()
}

async fn register(pool: &PgPool, mch_order_no: &str, amount: i64) {
    let order = NewOrder {
        mch_id: MCH.into(),
        mch_order_no: mch_order_no.into(),
        api_version: "v3".into(),
        amount,
        currency: "CAD".into(),
        expires_at: None,
    };
    assert!(matches!(orders::register(pool, &order, 0).await.unwrap(), Registered::Created(_)));
}

#[tokio::test]
async fn two_replicas_query_each_lost_payment_once_decide_it_once_and_count_it() {
    const LOST: usize = 40;
    const UNPAID: usize = 3;
    let db = TestDatabase::create().await;
    let sandbox = Sandbox::start(SandboxConfig::new(MchId::parse(MCH).unwrap(), MerchantKey::new(KEY))).await.unwrap();
    // Slow answers: both replicas have queries in flight at once.
    sandbox.set_query_delay(Duration::from_millis(150));
    let ports = [free_port(), free_port()];
    let mut children: Vec<Child> = ports.iter().map(|p| replica(&db, &sandbox, *p)).collect();
    let client = reqwest::Client::new();
    let bases: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    for base in &bases {
        wait_ready(&client, base).await;
    }

    let lost: Vec<_> = (0..LOST).map(|i| sandbox.create_v3_payment(1000 + i as i64)).collect();
    let unpaid: Vec<_> = (0..UNPAID).map(|_| sandbox.create_v3_payment(50)).collect();
    for o in &unpaid {
        sandbox.update_order(&o.pay_order_id, |o| o.status = 0);
    }
    for o in lost.iter().chain(&unpaid) {
        register(&db.pool, &o.mch_order_no, o.amount).await;
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut paid = 0;
        for o in &lost {
            paid += usize::from(orders::show(&db.pool, MCH, &o.mch_order_no).await.unwrap().unwrap().state == "paid");
        }
        if paid == LOST {
            break;
        }
        assert!(Instant::now() < deadline, "{paid}/{LOST} lost payments found");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One query per lost order, whichever replica made it; one event, one delivery each.
    let queries = sandbox.queries();
    for o in &lost {
        let asked = queries.iter().filter(|q| q.mch_order_no.as_deref() == Some(o.mch_order_no.as_str())).count();
        assert_eq!(asked, 1, "{} queried {asked} times", o.mch_order_no);
    }
    let (events, deliveries): (i64, i64) = sqlx::query_as(
        "SELECT count(*), (SELECT count(*) FROM deliveries) FROM payment_events
          WHERE status = 'confirmed' AND source = 'reconciliation'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((events, deliveries), (LOST as i64, LOST as i64));

    // The metrics: payments found and paid answers add up to the lost payments across both
    // replicas, each of which did some; unpaid orders are counted pending; the gauge shows it.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let texts = [scrape(&client, &bases[0]).await, scrape(&client, &bases[1]).await];
        let found: Vec<f64> = texts.iter().map(|t| metric(t, "iotpay_reconciliation_payments_found_total")).collect();
        let paid: f64 = texts.iter().map(|t| metric(t, r#"iotpay_reconciliation_queries_total{result="paid"}"#)).sum();
        let pending: f64 =
            texts.iter().map(|t| metric(t, r#"iotpay_reconciliation_queries_total{result="pending"}"#)).sum();
        let gauges = |state: &str| -> Vec<f64> {
            texts.iter().map(|t| metric(t, &format!(r#"iotpay_expected_orders{{state="{state}"}}"#))).collect()
        };
        let settled = found.iter().sum::<f64>() == LOST as f64
            && paid == LOST as f64
            && pending >= UNPAID as f64
            && gauges("paid") == [LOST as f64; 2]
            && gauges("expected") == [UNPAID as f64; 2];
        if settled {
            assert!(found.iter().all(|n| *n >= 1.0), "both replicas found payments: {found:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics: found {found:?}, paid answers {paid}, pending answers {pending}, paid gauge {:?}, expected gauge {:?}",
            gauges("paid"),
            gauges("expected")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for child in &mut children {
        terminate(child, Duration::from_secs(15));
    }
}

#[tokio::test]
async fn sandbox_lost_books_paid_payments_that_only_reconciliation_finds() {
    let db = TestDatabase::create().await;
    let port = free_port();
    let mut child = binary()
        .args(["sandbox", "--listen", &format!("127.0.0.1:{port}"), "--mch-id", MCH, "--key", KEY])
        .args(["--lost", "2", "--amount", "2500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().map(Result::unwrap).take_while(|l| !l.starts_with("serving")).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let lost: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("lost"))
        .map(|l| l.split("mchOrderNo ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(lost.len(), 2, "{lines:?}");

    let base = format!("http://127.0.0.1:{port}");
    let merchants = Arc::new(Merchants::from_pairs([(MCH, KEY)]));
    let timeouts = QueryTimeouts { connect: Duration::from_secs(2), total: Duration::from_secs(5) };
    let client =
        QueryClient::new(&format!("{base}/v3"), &format!("{base}/v2"), &format!("{base}/v1"), merchants, timeouts)
            .unwrap();
    let parts = Parts {
        client,
        settings: ReconcileSettings { after: Duration::ZERO, ..ReconcileSettings::default() },
        lease: Duration::from_secs(30),
        forward_urls: vec![],
        zone: TimeZone::get("America/Toronto").unwrap(),
    };
    for no in &lost {
        register(&db.pool, no, 2500).await;
    }
    let reconciler = Reconciler::new(db.pool.clone(), parts, "r");
    let claimed = reconciler.run_once().await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(claimed.unwrap(), 2);
    for no in &lost {
        let order = orders::show(&db.pool, MCH, no).await.unwrap().unwrap();
        assert_eq!((order.state.as_str(), order.source.as_deref()), ("paid", Some("reconciliation")), "{order:?}");
    }
}
