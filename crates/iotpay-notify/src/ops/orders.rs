//! `orders register|show`: the CLI face of `POST /api/v1/orders` and
//! `GET /api/v1/orders/{mch_id}/{mch_order_no}`, with the same validation and the same JSON.

use anyhow::Context;
use clap::Subcommand;
use serde_json::{json, Map, Value};

use crate::admin::api::orders::{conflict_message, parse_order};
use crate::store::orders::{self, Registered};

/// `orders ...`.
#[derive(Debug, Subcommand)]
pub enum OrdersCommand {
    /// Register an expected order (needs DATABASE_URL and IOTPAY_MERCHANTS).
    Register {
        /// Merchant id (one of IOTPAY_MERCHANTS).
        #[arg(long)]
        mch_id: String,
        /// The order number sent to IOTPay as mchOrderNo.
        #[arg(long)]
        mch_order_no: String,
        /// v3, v2 or v1.
        #[arg(long)]
        api_version: String,
        /// Amount in cents.
        #[arg(long, allow_hyphen_values = true)]
        amount: i64,
        /// Currency code, e.g. CAD.
        #[arg(long)]
        currency: String,
        /// RFC 3339 time after which an unpaid order is expired (default: 24 h after registration).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Show an order's state as JSON.
    Show {
        /// Merchant id.
        mch_id: String,
        /// The merchant's order number.
        mch_order_no: String,
    },
}

/// Runs an `orders` subcommand, printing the order as JSON.
pub async fn orders(cmd: OrdersCommand) -> anyhow::Result<()> {
    match cmd {
        OrdersCommand::Register { mch_id, mch_order_no, api_version, amount, currency, expires_at } => {
            let config = crate::config::Config::from_env()?;
            let mut map = Map::new();
            map.insert("mch_id".into(), json!(mch_id));
            map.insert("mch_order_no".into(), json!(mch_order_no));
            map.insert("api_version".into(), json!(api_version));
            map.insert("amount".into(), json!(amount));
            map.insert("currency".into(), json!(currency));
            if let Some(t) = expires_at {
                map.insert("expires_at".into(), Value::String(t));
            }
            let order = parse_order(&map, &config.merchants).map_err(|e| match e {
                crate::admin::error::ApiError::BadRequest { field: Some(f), message } => {
                    anyhow::anyhow!("--{}: {message}", f.replace('_', "-"))
                }
                other => anyhow::anyhow!("{other}"),
            })?;
            let pool = super::input::pool().await?;
            match orders::register(&pool, &order, config.reconcile.after.as_secs() as i64)
                .await
                .context("registering the order")?
            {
                Registered::Created(v) | Registered::Same(v) => println!("{}", serde_json::to_string_pretty(&v)?),
                Registered::Conflict { existing, fields } => anyhow::bail!("{}", conflict_message(&existing, &fields)),
                Registered::ExpiresInPast => anyhow::bail!("--expires-at: must be in the future"),
            }
        }
        OrdersCommand::Show { mch_id, mch_order_no } => {
            let pool = super::input::pool().await?;
            let view = orders::show(&pool, &mch_id, &mch_order_no).await.context("reading the order")?;
            let view = view.with_context(|| format!("no order {mch_id}/{mch_order_no}"))?;
            println!("{}", serde_json::to_string_pretty(&view)?);
        }
    }
    Ok(())
}
