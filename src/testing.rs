//! Support for tests and benchmarks: an isolated, migrated database per test on a real server.
//!
//! The server is `DATABASE_URL` when set, else the local default `postgres://postgres@127.0.0.1:5432/postgres`.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection, PgConnection, PgPool};

/// The server used when `DATABASE_URL` is not set.
pub const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test, migrated, and dropped when this value is dropped.
pub struct TestDatabase {
    /// Connection options of the test database.
    pub options: PgConnectOptions,
    /// A pool on it.
    pub pool: PgPool,
    /// Its name.
    pub name: String,
    admin: PgConnectOptions,
}

/// Connection options of the server that hosts test databases.
pub fn server_options() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER_URL.to_owned());
    url.parse().expect("DATABASE_URL is a valid Postgres URL")
}

impl TestDatabase {
    /// Creates and migrates a fresh database with a unique name.
    pub async fn create() -> Self {
        let admin = server_options().database("postgres");
        let name = format!("iotpay_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn =
            PgConnection::connect_with(&admin).await.expect("the test Postgres server answers (set DATABASE_URL)");
        sqlx::query(&format!(r#"CREATE DATABASE "{name}""#)).execute(&mut conn).await.expect("CREATE DATABASE");
        let _ = conn.close().await;
        let options = admin.clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .connect_with(options.clone())
            .await
            .expect("connect to the test database");
        crate::store::migrate(&pool).await.expect("migrations apply");
        Self { options, pool, name, admin }
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = std::mem::take(&mut self.name);
        // Drop runs inside or outside a runtime; a thread with its own runtime works in both.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async move {
                let mut conn = PgConnection::connect_with(&admin).await.ok()?;
                sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#)).execute(&mut conn).await.ok()
            })
        })
        .join();
    }
}
