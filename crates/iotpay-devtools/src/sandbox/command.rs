//! The `iotpay-notify sandbox` subcommand: a thin command line over [`Sandbox`].

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};

use super::{parse_schedule, Delivery, Sandbox, SandboxConfig, SendOptions};
use crate::domain::{MchId, MerchantKey};

/// Flags of `iotpay-notify sandbox`.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Address of the simulated query API (v3 and v2 cc_query at /v3, /v2; v1 query_order at /v1).
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
    /// v1 (general API) WeChat Pay payments to notify, form-encoded as IOTPay sends them.
    #[arg(long, default_value_t = 0)]
    pub v1_payments: u32,
    /// Channel of the v1 payments (WX_JSAPI, WX_NATIVE, ALIPAY_WAP, ...).
    #[arg(long, default_value = "WX_JSAPI")]
    pub v1_channel: String,
    /// Put form-encoded notifications' pairs in the URL's query string too, as IOTPay's v1 platform does.
    #[arg(long)]
    pub query_string: bool,
    /// v3 payments whose notification carries ten times the amount the query tells (validly signed).
    #[arg(long, default_value_t = 0)]
    pub tampered: u32,
    /// v3 payments that never happened, signed with a wrong key: one POST per --concurrent copy,
    /// never re-sent after the 401, plus --duplicates more (e.g. --concurrent 3 --duplicates 2
    /// sends 5 POSTs for each).
    #[arg(long, default_value_t = 0)]
    pub forged: u32,
    /// v3 payments booked as paid whose notification is "lost": nothing is sent; only the query
    /// tells (register their mchOrderNo as expected orders and the reconciler finds them).
    #[arg(long, default_value_t = 0)]
    pub lost: u32,
    /// Amount of each payment, in cents.
    #[arg(long, default_value_t = 1500)]
    pub amount: i64,
    /// Send each notification this many more times, one POST each, once its copies are done
    /// (acknowledged or not: also for forged and unacknowledged ones).
    #[arg(long, default_value_t = 0)]
    pub duplicates: u32,
    /// Send notifications form-encoded instead of JSON.
    #[arg(long)]
    pub form: bool,
    /// Send each notification as this many simultaneous copies, each retried on its own until
    /// SUCCESS (forged: one attempt each).
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

/// The merchant from the flags, else from `IOTPAY_MERCHANTS` (the first listed, its first key).
fn merchant(args: &SandboxArgs) -> anyhow::Result<(MchId, MerchantKey)> {
    if let (Some(id), Some(key)) = (&args.mch_id, &args.key) {
        // Both given: IOTPAY_MERCHANTS is not needed, so it is not read (nor can it be wrong).
        return Ok((MchId::parse(id).context("--mch-id")?, MerchantKey::new(key.clone())));
    }
    let listed = crate::env::merchants()?;
    let mch_id = match &args.mch_id {
        Some(id) => MchId::parse(id).context("--mch-id")?,
        None => listed
            .as_ref()
            .and_then(|m| m.first())
            .map(|(id, _)| id.clone())
            .context("--mch-id is required (or set IOTPAY_MERCHANTS)")?,
    };
    let key = match &args.key {
        Some(key) => MerchantKey::new(key.clone()),
        None => listed
            .as_ref()
            .and_then(|m| m.signing_key(&mch_id))
            .cloned()
            .with_context(|| format!("no key for merchant {mch_id}: pass --key or list it in IOTPAY_MERCHANTS"))?,
    };
    Ok((mch_id, key))
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
    println!("  IOTPAY_V1_API_URL={}", sandbox.v1_api_url());

    let sends = args.v3_payments + args.v2_payments + args.v1_payments + args.tampered + args.forged;
    if sends > 0 && args.notify_url.is_none() {
        bail!("--notify-url is required to send notifications");
    }
    let knobs = SendOptions {
        duplicates: args.duplicates,
        concurrent: args.concurrent,
        form_encoded: args.form,
        in_query_string: args.query_string,
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
    for _ in 0..args.v1_payments {
        let d = sandbox.send_v1_payment(args.amount, &args.v1_channel, &knobs).await?;
        describe("v1 payment", &d);
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
    for _ in 0..args.lost {
        let o = sandbox.create_v3_payment(args.amount);
        println!(
            "lost       {} amount {}: paid, notification NOT sent; mchOrderNo {} (register it as an expected order)",
            o.pay_order_id, o.amount, o.mch_order_no
        );
    }
    if args.exit_when_sent {
        if unacknowledged > 0 {
            bail!("{unacknowledged} genuine notification(s) were never acknowledged");
        }
        return Ok(());
    }
    println!("serving cc_query and query_order until Ctrl-C");
    crate::service::wait_for_signal().await;
    Ok(())
}
