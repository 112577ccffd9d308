//! All SQL lives here: connection pool, migrations, and one submodule per table family, with the
//! one typed event row they read ([`row::StoredEvent`]) and the rows' statuses ([`status`]).

pub mod admin;
pub mod confirm;
pub mod deliveries;
pub mod events;
pub mod forward;
pub mod group_commit;
pub mod listen;
pub mod occupancy;
pub mod ops;
pub mod orders;
pub mod orphans;
pub mod reach;
pub mod reconcile;
pub mod retention;
pub mod row;
pub mod status;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

pub use events::{record_batch, record_notification, NewNotification, Recorded};
pub use row::StoredEvent;
pub use status::{DeliveryStatus, EventStatus};

/// The embedded migrations under `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A database failure; every variant means "not stored, try again".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database did not answer in time.
    #[error("database timed out")]
    Timeout,
    /// The writer is shutting down.
    #[error("store is shutting down")]
    Closed,
    /// The database refused or failed the operation.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Opens the transaction of a queue statement (a claim, a decision, an attempt record). Each
/// touches a few rows reached through an index: a claim walks its due index in order and stops
/// after its LIMIT, the others look rows up by key. With statistics from when a table was small
/// (a burst arrives faster than autovacuum analyzes), the planner expects a handful of rows in
/// the whole table and scans all of them instead: auto_explain during the ingest bench showed a
/// claim sorting 14,000 pending events to take one (13 ms), and a decision hash-joining the
/// whole table for one row (10 ms). These settings, which rule such plans out, last until the
/// transaction ends.
///
/// JIT is off too: a plan that still needs a ruled-out node carries its `disable_cost` (10^10),
/// far above `jit_above_cost`, so PostgreSQL compiled such a statement with LLVM each time: a
/// reconciliation decision that sorted took 0.3-1 s instead of 2 ms.
pub async fn begin_queue_tx(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
                set_config('enable_sort', 'off', true), set_config('enable_hashjoin', 'off', true),
                set_config('enable_mergejoin', 'off', true), set_config('jit', 'off', true)",
    )
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}

/// How long a request waits for a free connection before it is told the database is unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a pool lazily: the process starts (and answers /readyz 503) even while the database is down.
pub fn connect_lazy(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions = url.parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options.application_name("iotpay-notify")))
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// True when the database answers a trivial query within `timeout`.
pub async fn ping(pool: &PgPool, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool)).await, Ok(Ok(_)))
}
