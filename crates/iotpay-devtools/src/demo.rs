//! `iotpay-notify demo`: the whole flow on one machine, in one process — a throwaway PostgreSQL
//! (never `DATABASE_URL`: the demo writes fake confirmed payments), the service (receiver,
//! confirmation, reconciliation, forwarding, admin API), the sandbox IOTPay and a sink — playing
//! a scripted story, then a table a person can check against it.
//!
//! The demo checks its own story: it exits non-zero if any event ends differently than told.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ForwardSecret};
use crate::domain::{MchId, MerchantKey};
use crate::pgcluster::{ClusterOptions, PgCluster};
use crate::sandbox::{Delivery, Sandbox, SandboxConfig, SendOptions};
use crate::sink::{Sink, SinkConfig};
use crate::store::{self, EventStatus};

mod report;
use report::{check, print_table};

const MCH_ID: &str = "10000701";
/// Longest wait for the story's events to settle.
const SETTLE: Duration = Duration::from_secs(60);

/// Steps of the story.
const STEPS: usize = 9;

/// What each told event must end as.
struct Expect {
    pay_order_id: String,
    what: &'static str,
    status: &'static str,
    delivered: bool,
    /// The expected order registered for it, which must end `paid` by an event of this source.
    order: Option<(String, &'static str)>,
}

/// The shop's side: the admin API where it registers its orders and asks for their state.
struct Shop {
    client: reqwest::Client,
    base: String,
    token: String,
}

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Play on this database instead of a throwaway cluster; it must hold no data (the demo
    /// leaves fake confirmed payments behind). DATABASE_URL is never used.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// Runs the demo; `Ok` only when every event ended as the story says.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (pool, _cluster) = database(args.database_url.as_deref()).await?;
    store::migrate(&pool).await.context("applying migrations")?;
    say("database migrated");

    let key = MerchantKey::new(hex::encode_upper(rand::random::<[u8; 16]>()));
    let mch_id = MchId::parse(MCH_ID).expect("valid demo merchant id");
    let secret_text = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 24]>()));
    let secret = ForwardSecret::parse(&secret_text).expect("the demo secret is well formed");
    let admin_token = format!("demo_{}", hex::encode(rand::random::<[u8; 24]>()));

    let sink = Sink::start(SinkConfig::new(secret)).await?;
    let mut sandbox_config = SandboxConfig::new(mch_id, key.clone());
    sandbox_config.retry_schedule = vec![Duration::from_millis(300); 5];
    let sandbox = Sandbox::start(sandbox_config).await?;

    let env: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", "postgres://demo@127.0.0.1/demo".to_owned()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("IOTPAY_MERCHANTS", format!("{MCH_ID}:{}", key.expose())),
        ("IOTPAY_V3_API_URL", sandbox.v3_api_url()),
        ("IOTPAY_V2_API_URL", sandbox.v2_api_url()),
        ("IOTPAY_V1_API_URL", sandbox.v1_api_url()),
        ("FORWARD_URLS", format!("{}/webhooks/iotpay", sink.url().trim_end_matches('/'))),
        ("FORWARD_SECRET", secret_text),
        ("FORWARD_RETRY_SCHEDULE", "0,1,1,2,3,5".to_owned()),
        ("CONFIRM_FIRST_RETRY_MS", "300".to_owned()),
        ("ADMIN_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("ADMIN_TOKENS", admin_token.clone()),
        // A registered order is queried at once (in production: minutes after, giving IOTPay's
        // notification time to arrive first), and due orders are looked for every 100 ms.
        ("RECONCILE_AFTER_SECS", "0".to_owned()),
        ("RECONCILE_POLL_INTERVAL_MS", "100".to_owned()),
    ]);
    let config = Config::from_lookup(|k| env.get(k).cloned()).context("demo configuration")?;
    let shutdown = CancellationToken::new();
    let service = crate::service::start(&config, pool.clone(), shutdown.clone()).await?;
    let notify_url = format!("http://{}/iotpay/notify", service.addr());
    sandbox.set_notify_url(&notify_url);
    let admin_addr = service.admin_addr().context("the demo sets ADMIN_TOKENS")?;
    say(&format!(
        "service listening on {}, admin API on {}  (IOTPay sandbox {}, sink {})",
        service.addr(),
        admin_addr,
        sandbox.addr(),
        sink.addr()
    ));
    println!();

    let shop = Shop { client: reqwest::Client::new(), base: format!("http://{admin_addr}/api/v1"), token: admin_token };
    let story = play(&sandbox, &sink, &pool, &shop).await;
    let settled = match &story {
        Ok(expects) => settle(&pool, expects).await,
        Err(_) => Ok(()),
    };
    shutdown.cancel();
    service.wait().await.context("stopping the service")?;
    let expects = story?;
    settled?;

    let ids: Vec<String> = expects.iter().map(|e| e.pay_order_id.clone()).collect();
    let rows = store::ops::event_overview(&pool, &ids).await?;
    let mut orders = Vec::new();
    for (no, _) in expects.iter().filter_map(|e| e.order.as_ref()) {
        orders.extend(store::orders::show(&pool, MCH_ID, no).await?);
    }
    println!();
    print_table(&expects, &rows, &orders);
    let failures = check(&expects, &rows, &orders);
    pool.close().await;
    println!();
    if !failures.is_empty() {
        bail!("the story did not end as told:\n  {}", failures.join("\n  "));
    }
    say(&format!(
        "every event ended as told; sink accepted {} signed deliveries; done in {:.1} s, nothing left running",
        sink.accepted().len(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The database: a throwaway cluster stopped and deleted on drop, or `--database-url` when
/// given and empty. `DATABASE_URL` (often from the `.env` of the local loop) is never used: the
/// demo's fake payments would reach whoever reads that database.
async fn database(url: Option<&str>) -> anyhow::Result<(PgPool, Option<PgCluster>)> {
    if let Some(url) = url {
        let options: sqlx::postgres::PgConnectOptions = url.parse().context("--database-url is not a Postgres URL")?;
        let target = format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or(""));
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .with_context(|| format!("cannot reach the database of --database-url ({target})"))?;
        let occupied = store::occupancy::tables_with_rows(&pool).await.context("inspecting --database-url")?;
        if !occupied.is_empty() {
            pool.close().await;
            bail!(
                "refusing to play the demo on {target}: it already holds data (rows in {}); the demo writes \
                 fake confirmed payments, so it needs an empty database (or none: omit --database-url)",
                occupied.join(", ")
            );
        }
        say(&format!("using the empty database of --database-url ({target})"));
        return Ok((pool, None));
    }
    say("starting a throwaway PostgreSQL cluster (DATABASE_URL is not used)");
    let cluster = PgCluster::start_async(ClusterOptions::default()).await?;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(10).connect_with(cluster.connect_options()).await?;
    say(&format!("throwaway PostgreSQL on 127.0.0.1:{} in {}", cluster.port(), cluster.dir().display()));
    Ok((pool, Some(cluster)))
}

async fn play(sandbox: &Sandbox, sink: &Sink, pool: &PgPool, shop: &Shop) -> anyhow::Result<Vec<Expect>> {
    let plain = SendOptions::default();
    let mut expects = Vec::new();

    step(1, "IOTPay notifies a v3 card payment of CAD 15.00");
    let payment = sandbox.send_v3_payment(1500, &plain).await?;
    report_send(&payment);
    wait_for(pool, payment.pay_order_id(), "confirmed").await?;
    expects.push(expect(&payment, "v3 payment", "confirmed", true));

    step(2, "IOTPay re-sends it: 3 simultaneous copies, then 2 late duplicates");
    let order = payment.order.clone().context("the payment has an order")?;
    let resent =
        sandbox.notify(&order, &SendOptions { concurrent: 3, duplicates: 2, ..SendOptions::default() }).await?;
    report_send(&resent);
    detail("still one event; its notification_count grows, it is confirmed and forwarded once");

    step(3, "IOTPay notifies a refund of CAD 5.00 of that payment");
    let refund = sandbox.send_v3_refund(payment.pay_order_id(), 500, &plain).await?;
    report_send(&refund);
    wait_for(pool, refund.pay_order_id(), "confirmed").await?;
    expects.push(expect(&refund, "v3 refund", "confirmed", true));

    step(4, "A merchant on the deprecated v2 API: a CAD 20.00 payment, form-encoded");
    let v2 = sandbox.send_v2_payment(2000, &SendOptions { form_encoded: true, ..SendOptions::default() }).await?;
    report_send(&v2);
    wait_for(pool, v2.pay_order_id(), "confirmed").await?;
    expects.push(expect(&v2, "v2 payment", "confirmed", true));

    step(5, "A WeChat Pay payment of CAD 8.80 through IOTPay's general API (v1): form body and query string");
    let wechat = sandbox
        .send_v1_payment(880, "WX_JSAPI", &SendOptions { in_query_string: true, ..SendOptions::default() })
        .await?;
    report_send(&wechat);
    wait_for(pool, wechat.pay_order_id(), "confirmed").await?;
    detail("answered `success` (v1's answer), confirmed through query_order; the payer's openid is not forwarded");
    expects.push(expect(&wechat, "wechat v1", "confirmed", true));

    step(6, "Someone forges a CAD 999.00 payment without the merchant key");
    let forged = sandbox
        .send_v3_payment(99_900, &SendOptions { forge_sign: true, max_attempts: Some(1), ..plain.clone() })
        .await?;
    report_send(&forged);
    detail("refused with 401: nothing stored, nothing asked of IOTPay");
    expects.push(Expect {
        pay_order_id: forged.pay_order_id().to_owned(),
        what: "forged",
        status: "absent",
        delivered: false,
        order: None,
    });

    step(7, "A validly signed notification says CAD 1,000.00 for a CAD 10.00 payment (leaked key)");
    let tampered =
        sandbox.send_v3_payment(1000, &SendOptions { tamper_amount: Some(100_000), ..plain.clone() }).await?;
    report_send(&tampered);
    wait_for(pool, tampered.pay_order_id(), "rejected").await?;
    detail("stored as pending, then IOTPay's query says CAD 10.00: rejected, never forwarded");
    expects.push(expect(&tampered, "tampered", "rejected", false));

    step(8, "A CAD 27.50 payment whose notification IOTPay never sends; the shop registered the order");
    let lost = sandbox.create_v3_payment(2750);
    detail(&format!(
        "{}: paid at IOTPay, 0 POSTs; mchOrderNo {} registered as expected",
        lost.pay_order_id, lost.mch_order_no
    ));
    let registered = shop.register(&lost.mch_order_no, lost.amount).await?;
    detail(&format!("POST /api/v1/orders → {registered}"));
    let started = Instant::now();
    let order = shop.wait_for_state(&lost.mch_order_no).await?;
    if order["state"] != "paid" || order["source"] != "reconciliation" {
        bail!("the lost payment's order ended {order}, expected paid by reconciliation");
    }
    detail(&format!(
        "the returnUrl page's GET .../orders/{MCH_ID}/{}?wait=20 → paid after {:.0} ms: found by a query by mchOrderNo,",
        lost.mch_order_no,
        started.elapsed().as_secs_f64() * 1000.0
    ));
    delivered(pool, &lost.pay_order_id).await?;
    detail("stored confirmed with source reconciliation, and forwarded like any payment");
    expects.push(Expect {
        pay_order_id: lost.pay_order_id.clone(),
        what: "lost",
        status: "confirmed",
        delivered: true,
        order: Some((lost.mch_order_no.clone(), "reconciliation")),
    });

    step(9, "The internal endpoint goes down for 2.5 s while a CAD 42.00 payment arrives");
    sink.fail_for(Duration::from_millis(2500));
    let during_outage = sandbox.send_v3_payment(4200, &plain).await?;
    report_send(&during_outage);
    wait_for(pool, during_outage.pay_order_id(), "confirmed").await?;
    detail("confirmed; the sink answers 503, the forwarder retries until it heals");
    expects.push(expect(&during_outage, "outage", "confirmed", true));
    Ok(expects)
}

impl Shop {
    /// Registers a v3 order in CAD; returns the answer's status.
    async fn register(&self, mch_order_no: &str, amount: i64) -> anyhow::Result<u16> {
        let body = serde_json::json!({
            "mch_id": MCH_ID, "mch_order_no": mch_order_no, "api_version": "v3", "amount": amount, "currency": "CAD",
        });
        let resp = self
            .client
            .post(format!("{}/orders", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .context("registering the order")?;
        let status = resp.status().as_u16();
        if status != 201 {
            bail!("registering the order: {status} {}", resp.text().await.unwrap_or_default());
        }
        Ok(status)
    }

    /// The order's state once it leaves `expected` (the returnUrl pattern's long poll).
    async fn wait_for_state(&self, mch_order_no: &str) -> anyhow::Result<serde_json::Value> {
        let resp = self
            .client
            .get(format!("{}/orders/{MCH_ID}/{mch_order_no}?wait=20", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .context("asking for the order's state")?;
        resp.error_for_status()?.json().await.context("reading the order's state")
    }
}

fn expect(d: &Delivery, what: &'static str, status: &'static str, delivered: bool) -> Expect {
    Expect { pay_order_id: d.pay_order_id().to_owned(), what, status, delivered, order: None }
}

/// Waits until every told event is decided and every confirmed one delivered.
async fn settle(pool: &PgPool, expects: &[Expect]) -> anyhow::Result<()> {
    let ids: Vec<String> = expects.iter().map(|e| e.pay_order_id.clone()).collect();
    let deadline = Instant::now() + SETTLE;
    let mut announced = false;
    loop {
        let rows = store::ops::event_overview(pool, &ids).await?;
        let waiting =
            rows.iter().filter(|r| r.event.status == EventStatus::Pending || r.delivered < r.deliveries).count();
        if waiting == 0 {
            return Ok(());
        }
        if !announced {
            say(&format!("waiting for {waiting} event(s) to be confirmed and delivered..."));
            announced = true;
        }
        if Instant::now() > deadline {
            bail!("events still pending or undelivered after {} s", SETTLE.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the event's deliveries are all delivered (before the story breaks the endpoint).
async fn delivered(pool: &PgPool, pay_order_id: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let ids = [pay_order_id.to_owned()];
    while started.elapsed() < SETTLE {
        let rows = store::ops::event_overview(pool, &ids).await?;
        if rows.first().is_some_and(|r| r.deliveries > 0 && r.delivered == r.deliveries) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{pay_order_id} was not delivered within {} s", SETTLE.as_secs())
}

async fn wait_for(pool: &PgPool, pay_order_id: &str, status: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let ids = [pay_order_id.to_owned()];
    while started.elapsed() < SETTLE {
        let rows = store::ops::event_overview(pool, &ids).await?;
        if let Some(row) = rows.first() {
            if row.event.status.as_str() == status {
                detail(&format!("{status} {:.0} ms after the notification", started.elapsed().as_secs_f64() * 1000.0));
                return Ok(());
            }
            if row.event.status != EventStatus::Pending {
                bail!("{pay_order_id} became {} ({:?}), expected {status}", row.event.status, row.event.status_reason);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{pay_order_id} did not become {status} within {} s", SETTLE.as_secs())
}

fn report_send(d: &Delivery) {
    let answers: Vec<String> = d
        .attempts
        .iter()
        .map(|a| format!("{} {}", a.status.map_or("-".to_owned(), |s| s.to_string()), a.answer.trim()))
        .collect();
    detail(&format!("{}: {} POST(s) → {}", d.pay_order_id(), d.attempts.len(), summarize(&answers)));
}

fn summarize(answers: &[String]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for a in answers {
        match counts.iter_mut().find(|(k, _)| k == a) {
            Some((_, n)) => *n += 1,
            None => counts.push((a.clone(), 1)),
        }
    }
    counts.iter().map(|(a, n)| if *n == 1 { a.clone() } else { format!("{n} × {a}") }).collect::<Vec<_>>().join(", ")
}

fn say(line: &str) {
    println!("==> {line}");
}

fn step(n: usize, line: &str) {
    println!("[{n}/{STEPS}] {line}");
}

fn detail(line: &str) {
    println!("      {line}");
}
