//! Support for tests and benchmarks: an isolated, migrated database per test on a real server.
//!
//! The server is `DATABASE_URL` when set. Otherwise the test process starts one throwaway
//! cluster ([`crate::pgcluster`]) the first time a test needs it, shared by every test of the
//! process and gone when the process ends: `cargo test` needs PostgreSQL installed, not running.

use std::sync::OnceLock;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection, PgConnection, PgPool};

use crate::pgcluster::{ClusterOptions, PgCluster};

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

/// Connection options of the server that hosts test databases: `DATABASE_URL`, or this
/// process's throwaway cluster (started on first use).
pub fn server_options() -> PgConnectOptions {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url.parse().expect("DATABASE_URL is a valid Postgres URL"),
        _ => shared_cluster().connect_options(),
    }
}

static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();

/// The test process's throwaway cluster. A static is never dropped: an `atexit` hook stops it
/// when the process exits normally, and its supervisor does on any other end.
pub fn shared_cluster() -> &'static PgCluster {
    let started = CLUSTER.get_or_init(|| {
        let cluster =
            PgCluster::start(&test_cluster_options()).map_err(|e| format!("DATABASE_URL is unset and {e}"))?;
        // SAFETY: registers a plain `extern "C"` function without arguments; it cannot unwind.
        unsafe { libc::atexit(stop_shared_cluster) };
        Ok(cluster)
    });
    match started {
        Ok(cluster) => cluster,
        Err(message) => panic!("{message}"),
    }
}

/// Waits for the shared cluster to be gone, so nothing is left the moment the process has exited.
extern "C" fn stop_shared_cluster() {
    if let Some(Ok(cluster)) = CLUSTER.get() {
        // A panic must not cross the FFI boundary.
        let _ = std::panic::catch_unwind(|| cluster.stop());
    }
}

/// Settings of the test cluster: small, many connections (tests run in parallel, each with a
/// pool of up to 20). Durability settings (fsync,
/// synchronous_commit) stay at their defaults, so timings measured on it stay honest.
pub fn test_cluster_options() -> ClusterOptions {
    ClusterOptions::default().setting("max_connections", "300").setting("shared_buffers", "32MB")
}

impl TestDatabase {
    /// Creates and migrates a fresh database with a unique name.
    pub async fn create() -> Self {
        let admin = server_options().database("postgres");
        let name = format!("iotpay_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&admin).await.expect("the test Postgres server answers");
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
