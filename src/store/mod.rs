//! All SQL lives here: connection pool, migrations, and one submodule per table family.

pub mod confirm;
pub mod deliveries;
pub mod events;
pub mod forward;
pub mod group_commit;
pub mod ops;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

pub use events::{record_batch, record_notification, NewNotification, Recorded};

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
