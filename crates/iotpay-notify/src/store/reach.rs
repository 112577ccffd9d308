//! One direct connection, to report why the database cannot be reached ("connection refused",
//! "database \"x\" does not exist") instead of the pool's "pool timed out".

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Connects once and closes; the error is the server's or the network's own.
pub async fn probe(url: &str) -> Result<(), sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let conn = options.connect().await?;
    conn.close().await
}
