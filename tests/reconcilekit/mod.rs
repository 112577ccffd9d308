//! Harness of the expected-orders and reconciliation tests: order bodies, a confirmed payment
//! inserted as the notification path would, the real binary's CLI, and (`reconciling`) a
//! reconciler over the sandbox IOTPay with helpers to register orders and read their state.
#![allow(dead_code)]

use std::time::Duration;

use iotpay_devtools::testing::TestDatabase;
use serde_json::{json, Value};

use crate::adminkit::*;
use crate::common::*;
use crate::forwarding;

pub fn order(no: &str, amount: i64) -> Value {
    json!({"mch_id": MCH, "mch_order_no": no, "api_version": "v3", "amount": amount, "currency": "CAD"})
}

pub async fn order_count(admin: &Admin) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM expected_orders").fetch_one(&admin.pool).await.unwrap()
}

/// Inserts a confirmed payment.succeeded for `(MCH, mch_order_no)` as the notification path would.
pub async fn confirmed_payment(admin: &Admin, mch_order_no: &str, amount: i64) -> String {
    let id: String = sqlx::query_scalar(
        "INSERT INTO payment_events (event_id, event_type, api_version, mch_id, mch_order_no, pay_order_id,
                                     amount, currency, iotpay_status, status, confirmed_at)
         VALUES ('evt_' || md5($2), 'payment.succeeded', 'v3', $1, $2, 'P' || $2, $3, 'CAD', 2, 'pending', NULL)
         RETURNING event_id",
    )
    .bind(MCH)
    .bind(mch_order_no)
    .bind(amount)
    .fetch_one(&admin.pool)
    .await
    .unwrap();
    forwarding::confirm(&admin.pool, std::slice::from_ref(&id), &[]).await;
    id
}

/// Runs the real binary with DATABASE_URL and IOTPAY_MERCHANTS only.
pub async fn cli(db: &TestDatabase, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_iotpay-notify"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db.url())
        .env("IOTPAY_MERCHANTS", merchants_env())
        .current_dir(std::env::temp_dir())
        .args(args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

pub mod reconciling {
    use std::sync::Arc;

    use iotpay_devtools::sandbox::{Sandbox, SandboxConfig};
    use iotpay_notify::domain::{MchId, MerchantKey};
    use iotpay_notify::iotpay::merchants::Merchants;
    use iotpay_notify::iotpay::query::{QueryClient, QueryTimeouts};
    use iotpay_notify::iotpay::TimeZone;
    use iotpay_notify::reconcile::{Parts, ReconcileSettings, Reconciler};
    use sqlx::PgPool;

    use super::*;

    const ENDPOINT: &str = "http://127.0.0.1:9/hook";

    pub async fn sandbox() -> Sandbox {
        Sandbox::start(SandboxConfig::new(MchId::parse(MCH).unwrap(), MerchantKey::new(KEY))).await.unwrap()
    }

    pub fn reconciler(pool: &PgPool, sandbox: &Sandbox, name: &str) -> Reconciler {
        reconciler_to(pool, sandbox, name, ENDPOINT)
    }

    pub fn reconciler_to(pool: &PgPool, sandbox: &Sandbox, name: &str, endpoint: &str) -> Reconciler {
        let settings = ReconcileSettings {
            after: Duration::ZERO,
            max_backoff: Duration::from_secs(1),
            first_retry: Duration::from_secs(1),
            poll_interval: Duration::from_millis(50),
            gauge_interval: Duration::from_secs(1),
        };
        with_settings(pool, sandbox, name, endpoint, settings)
    }

    pub fn with_settings(
        pool: &PgPool,
        sandbox: &Sandbox,
        name: &str,
        endpoint: &str,
        settings: ReconcileSettings,
    ) -> Reconciler {
        let timeouts = QueryTimeouts { connect: Duration::from_secs(2), total: Duration::from_secs(5) };
        let merchants = Arc::new(Merchants::from_pairs([(MCH, KEY)]));
        let client =
            QueryClient::new(&sandbox.v3_api_url(), &sandbox.v2_api_url(), &sandbox.v1_api_url(), merchants, timeouts)
                .unwrap();
        let parts = Parts {
            client,
            settings,
            lease: Duration::from_secs(30),
            forward_urls: vec![endpoint.into()],
            zone: TimeZone::get("America/Toronto").unwrap(),
        };
        Reconciler::new(pool.clone(), parts, name)
    }

    /// The admin listener with orders due at once.
    pub async fn admin(db: &TestDatabase) -> Admin {
        Admin::spawn(db, &[("RECONCILE_AFTER_SECS", "1")]).await
    }

    pub async fn register(admin: &Admin, no: &str, amount: i64) {
        register_on(admin, "v3", no, amount).await
    }

    /// Registers an order of API `version` and makes it due now.
    pub async fn register_on(admin: &Admin, version: &str, no: &str, amount: i64) {
        let mut body = order(no, amount);
        body["api_version"] = json!(version);
        let (status, body) = json(admin.post("/api/v1/orders", &body)).await;
        assert_eq!(status, 201, "{body}");
        due_now(admin, no).await;
    }

    /// Makes the order due at once, as if its backoff had passed.
    pub async fn due_now(admin: &Admin, no: &str) {
        sqlx::query("UPDATE expected_orders SET next_check_at = now() WHERE mch_order_no = $1")
            .bind(no)
            .execute(&admin.pool)
            .await
            .unwrap();
    }

    /// Moves the order's `expires_at` into the past (and makes it due), as if that time had come.
    pub async fn expire(admin: &Admin, no: &str) {
        sqlx::query(
            "UPDATE expected_orders SET expires_at = now() - interval '1 second', next_check_at = now()
              WHERE mch_order_no = $1",
        )
        .bind(no)
        .execute(&admin.pool)
        .await
        .unwrap();
    }

    /// The event's status, source and amount.
    pub async fn event(pool: &PgPool, event_id: &str) -> (String, String, i64) {
        sqlx::query_as("SELECT status, source, amount FROM payment_events WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    pub async fn state(admin: &Admin, no: &str) -> Value {
        json(admin.get(&format!("/api/v1/orders/{MCH}/{no}"))).await.1
    }

    pub async fn deliveries(pool: &PgPool, event_id: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(pool)
            .await
            .unwrap()
    }
}
