//! The throwaway PostgreSQL cluster: it answers, it is what tests use when DATABASE_URL is unset,
//! and it leaves nothing running or on disk however its owner ends.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iotpay_devtools::pgcluster::{ClusterError, ClusterOptions, PgCluster};
use iotpay_devtools::testing::{self, TestDatabase};
use sqlx::{Connection, PgConnection};

const HELPER_ENV: &str = "PGCLUSTER_TEST_HELPER";

fn port_answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Processes whose command line mentions `needle` (Linux; elsewhere, none are seen).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmd| cmd.contains(needle))
        .collect()
}

fn wait_until_gone(dir: &Path, port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let procs = processes_mentioning(&dir.display().to_string());
        if !dir.exists() && !port_answers(port) && procs.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cluster left behind: dir exists={}, port answers={}, processes={procs:?}",
            dir.exists(),
            port_answers(port)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn cluster_answers_runs_unprivileged_and_leaves_nothing_when_dropped() {
    let started = Instant::now();
    let cluster = PgCluster::start_async(ClusterOptions::default()).await.unwrap();
    eprintln!("cluster started in {:?}", started.elapsed());
    let (dir, port) = (cluster.dir().to_path_buf(), cluster.port());
    assert_ne!(port, 5432);

    let mut conn = PgConnection::connect(&cluster.url()).await.expect("connect to the cluster");
    let data_dir: String = sqlx::query_scalar("SHOW data_directory").fetch_one(&mut conn).await.unwrap();
    assert_eq!(PathBuf::from(data_dir), dir.join("data"));
    let listen: String = sqlx::query_scalar("SHOW listen_addresses").fetch_one(&mut conn).await.unwrap();
    assert_eq!(listen, "127.0.0.1");
    conn.close().await.unwrap();

    // PostgreSQL refuses root; when we are root the files belong to an unprivileged account.
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.join("data")).unwrap());
    assert_ne!(owner, 0, "the cluster's files must not belong to root");

    drop(cluster);
    wait_until_gone(&dir, port, Duration::from_secs(1));
}

/// Run in a child process by the next test, so that no other cluster of the same process
/// blurs what is left behind.
#[test]
#[ignore = "helper process for a_server_that_cannot_start_reports_its_log_and_leaves_nothing"]
fn helper_fail_to_start() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let err = PgCluster::start(&ClusterOptions::default().setting("shared_buffers", "not-a-size")).unwrap_err();
    match &err {
        ClusterError::StartFailed { log } => assert!(log.contains("shared_buffers"), "{log}"),
        other => panic!("expected StartFailed, got {other:?}"),
    }
    assert!(err.to_string().contains("did not start"), "{err}");
}

#[test]
fn a_server_that_cannot_start_reports_its_log_and_leaves_nothing() {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["helper_fail_to_start", "--exact", "--ignored", "--test-threads=1"])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("1 passed"), "{stdout}");
    let leaked = cluster_dirs(pid);
    assert!(leaked.is_empty(), "directories left behind: {leaked:?}");
}

/// Cluster directories of process `pid`, under both places a cluster may be created.
fn cluster_dirs(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("iotpay-pgcluster-{pid}-");
    let mut bases = vec![std::env::temp_dir(), PathBuf::from("/tmp")];
    bases.dedup();
    bases
        .iter()
        .filter_map(|base| std::fs::read_dir(base).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

#[test]
fn no_binaries_message_says_how_to_install() {
    let msg = ClusterError::NoBinaries.to_string();
    assert!(msg.contains("apt-get install postgresql"), "{msg}");
    assert!(msg.contains("brew install postgresql@15"), "{msg}");
    assert!(msg.contains("DATABASE_URL"), "{msg}");
}

/// Run in a child process by the next test: starts a cluster, reports it, then waits to be killed.
#[test]
#[ignore = "helper process for a_killed_owner_leaves_nothing_behind"]
fn helper_start_cluster_and_wait() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let cluster = PgCluster::start(&ClusterOptions::default()).unwrap();
    println!("READY {} {}", cluster.port(), cluster.dir().display());
    // The static-like case: the cluster is never dropped.
    std::mem::forget(cluster);
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_killed_owner_leaves_nothing_behind() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["helper_start_cluster_and_wait", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let ready = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("READY ").map(|(_, rest)| rest.to_owned()))
        .expect("the helper reports its cluster");
    let mut parts = ready.split_whitespace();
    let port: u16 = parts.next().unwrap().parse().unwrap();
    let dir = PathBuf::from(parts.next().unwrap());
    assert!(port_answers(port) && dir.exists(), "the helper's cluster runs");

    child.kill().unwrap(); // SIGKILL: no destructor, no handler runs
    child.wait().unwrap();
    wait_until_gone(&dir, port, Duration::from_secs(15));
}

#[tokio::test]
async fn test_databases_live_on_the_throwaway_cluster_when_database_url_is_unset() {
    if std::env::var("DATABASE_URL").is_ok_and(|u| !u.trim().is_empty()) {
        eprintln!("DATABASE_URL is set: the suite runs on that server instead");
        return;
    }
    let db = TestDatabase::create().await;
    let cluster = testing::shared_cluster();
    assert_eq!(db.options.get_port(), cluster.port());
    let data_dir: String = sqlx::query_scalar("SHOW data_directory").fetch_one(&db.pool).await.unwrap();
    assert_eq!(PathBuf::from(data_dir), cluster.dir().join("data"));
}

#[test]
fn restart_and_kill_keep_the_data_and_the_port_and_still_leave_nothing() {
    let cluster = PgCluster::start(&ClusterOptions::default()).unwrap();
    let (dir, port) = (cluster.dir().to_path_buf(), cluster.port());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let url = cluster.url();
    let count = |url: String| {
        rt.block_on(async move {
            let mut conn = PgConnection::connect(&url).await.expect("connect");
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM kept").fetch_one(&mut conn).await.unwrap()
        })
    };
    rt.block_on(async {
        let mut conn = PgConnection::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE kept (n int)").execute(&mut conn).await.unwrap();
        sqlx::query("INSERT INTO kept VALUES (1)").execute(&mut conn).await.unwrap();
    });

    cluster.shutdown_fast().unwrap();
    assert!(!port_answers(port), "stopped");
    cluster.start_again().unwrap();
    assert_eq!(cluster.port(), port);
    assert_eq!(count(url.clone()), 1, "committed rows survive a restart");

    // A connection open across the kill, so the dead postmaster leaves a backend behind.
    let held = rt.block_on(PgConnection::connect(&url)).unwrap();
    cluster.kill().unwrap();
    cluster.start_again().unwrap();
    assert_eq!(count(url.clone()), 1, "committed rows survive a crash");
    drop(held);

    cluster.restart().unwrap();
    assert_eq!(count(url), 1);
    drop(cluster);
    wait_until_gone(&dir, port, Duration::from_secs(5));
}
