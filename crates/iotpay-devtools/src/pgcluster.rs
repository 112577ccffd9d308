//! A throwaway PostgreSQL cluster built from the installed binaries, for the demo and the tests.
//!
//! `initdb` into a fresh temporary directory, then `postgres` on a free port of 127.0.0.1 with
//! trust authentication and no Unix socket. When run as root the cluster runs as `nobody`
//! (PostgreSQL refuses to run as root).
//!
//! Nothing may outlive the owning process, even when it never runs destructors (a `static`)
//! or is killed: the server runs under a small `sh` supervisor whose stdin is a pipe from this
//! process. Whenever this process ends, the kernel closes the pipe; the supervisor then stops
//! the server (immediate shutdown) and removes the directory. [`PgCluster`]'s `Drop` does the
//! same explicitly and waits for it.

mod binaries;
mod owner;
mod supervisor;

pub use binaries::Binaries;
pub use owner::UNPRIVILEGED_USER;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

use owner::{make_dir, Owner};
use supervisor::SUPERVISOR;

/// Longest wait for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a throwaway cluster could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `initdb` and `postgres` were found neither on `PATH` nor in the usual install directories.
    #[error(
        "no PostgreSQL server binaries (initdb, postgres) found on PATH or in /usr/lib/postgresql/*/bin, \
         /usr/local/pgsql/bin, Homebrew or Postgres.app. Install them: Debian/Ubuntu \
         `sudo apt-get install postgresql`, macOS `brew install postgresql@15`; or set DATABASE_URL \
         to use a running server"
    )]
    NoBinaries,
    /// Running as root and the unprivileged account does not exist.
    #[error(
        "running as root, and user `{0}` to run PostgreSQL as does not exist; run as another user or set DATABASE_URL"
    )]
    NoUnprivilegedUser(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// `initdb` failed.
    #[error("initdb failed; its output ends with:\n{log}")]
    InitFailed {
        /// The tail of initdb's output.
        log: String,
    },
    /// The server did not come up.
    #[error("the PostgreSQL server did not start; its log ends with:\n{log}")]
    StartFailed {
        /// The tail of the server's log.
        log: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// How to start a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Extra server settings, passed as `-c name=value` (e.g. `shared_buffers=16MB`).
    pub settings: Vec<(String, String)>,
}

impl ClusterOptions {
    /// Adds a server setting.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A running throwaway cluster; stopped and deleted when dropped or when this process ends.
#[derive(Debug)]
pub struct PgCluster {
    port: u16,
    dir: PathBuf,
    running: Mutex<Running>,
}

/// The supervisor and the write end of its stdin pipe, while the server runs.
#[derive(Debug, Default)]
struct Running {
    supervisor: Option<Child>,
    keepalive: Option<ChildStdin>,
    /// The supervisor's answers (the server's pid after each start, `stopped`).
    answers: Option<BufReader<ChildStdout>>,
    /// The server's pid, as the supervisor reported it.
    server_pid: Option<i32>,
}

impl PgCluster {
    /// Creates and starts a cluster (blocking: about a second; call it from `spawn_blocking` in async code).
    pub fn start(options: &ClusterOptions) -> Result<Self, ClusterError> {
        let binaries = Binaries::find()?;
        let owner = Owner::current()?;
        let mut last = None;
        // A free port is found by binding and releasing it; another process may take it in
        // between, so a bind failure is retried with a new cluster on a new port.
        for _ in 0..3 {
            let dir = make_dir(&owner)?;
            // From here on, dropping `cluster` removes the directory, whatever fails.
            let mut cluster = PgCluster { port: 0, dir, running: Mutex::default() };
            cluster.init(&binaries, &owner)?;
            match cluster.launch(&binaries, &owner, options) {
                Ok(()) => return Ok(cluster),
                Err(ClusterError::StartFailed { log }) if log.contains("could not bind") => {
                    last = Some(ClusterError::StartFailed { log });
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// [`PgCluster::start`] on a blocking thread, for async callers.
    pub async fn start_async(options: ClusterOptions) -> Result<Self, ClusterError> {
        match tokio::task::spawn_blocking(move || PgCluster::start(&options)).await {
            Ok(result) => result,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (data, log), removed when the cluster stops.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// URL of the `postgres` database as superuser `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Connection options of the `postgres` database.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new().host("127.0.0.1").port(self.port).username("postgres").database("postgres")
    }

    fn init(&mut self, binaries: &Binaries, owner: &Owner) -> Result<(), ClusterError> {
        let mut cmd = Command::new(binaries.initdb());
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        owner.apply(&mut cmd);
        let out = cmd.output().map_err(io(format!("running {}", binaries.initdb().display())))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            return Err(ClusterError::InitFailed { log: tail(&text, 20) });
        }
        Ok(())
    }

    fn launch(&mut self, binaries: &Binaries, owner: &Owner, options: &ClusterOptions) -> Result<(), ClusterError> {
        self.port = free_port()?;
        let log = self.dir.join("log");
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SUPERVISOR)
            .arg("pgcluster-supervisor")
            .arg(binaries.postgres())
            .arg(&self.dir)
            .arg(self.port.to_string())
            .args(options.settings.iter().flat_map(|(k, v)| ["-c".to_owned(), format!("{k}={v}")]))
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        owner.apply(&mut cmd);
        // Its own process group: a Ctrl-C in the terminal reaches this process, not the server,
        // which is then stopped by the supervisor like on any other exit.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().map_err(io("starting the PostgreSQL supervisor (/bin/sh)"))?;
        let keepalive = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut first = String::new();
        let _ = stdout.read_line(&mut first);
        let server_pid = first.trim().parse().ok();
        *self.running.get_mut().unwrap_or_else(|p| p.into_inner()) =
            Running { supervisor: Some(child), keepalive, answers: Some(stdout), server_pid };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("database system is ready to accept connections") {
                return Ok(());
            }
            let exited = text.contains("database system is shut down") || text.contains("FATAL:");
            if exited || Instant::now() > deadline {
                self.stop_server();
                let mut text = std::fs::read_to_string(&log).unwrap_or(text);
                if !exited {
                    text.push_str("\n(no \"ready to accept connections\" within 60 s)");
                }
                return Err(ClusterError::StartFailed { log: tail(&text, 20) });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server with a fast shutdown (sessions ended, clean checkpoint), keeping its data
    /// directory and port for [`PgCluster::start_again`]. For fault-injection tests.
    pub fn shutdown_fast(&self) -> Result<(), ClusterError> {
        self.supervise("stop")
    }

    /// Kills the server's postmaster with SIGKILL, as a crash would, keeping its data directory:
    /// its backends notice and exit on their own, and the next start runs crash recovery.
    /// For fault-injection tests.
    pub fn kill(&self) -> Result<(), ClusterError> {
        self.supervise("kill")
    }

    /// [`PgCluster::shutdown_fast`], then [`PgCluster::start_again`].
    pub fn restart(&self) -> Result<(), ClusterError> {
        self.shutdown_fast()?;
        self.start_again()
    }

    /// Starts the server again on the same data directory and port, after
    /// [`PgCluster::shutdown_fast`] or [`PgCluster::kill`] (blocking, until it accepts
    /// connections). After a kill, a start is refused while the dead postmaster's backends still
    /// hold its shared memory; it is tried again until they are gone.
    pub fn start_again(&self) -> Result<(), ClusterError> {
        let log = self.dir.join("log");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let offset = std::fs::metadata(&log).map(|m| m.len() as usize).unwrap_or(0);
            let pid = self.supervise_answer("start")?;
            self.running.lock().unwrap_or_else(|p| p.into_inner()).server_pid = pid.trim().parse().ok();
            loop {
                let text = std::fs::read(&log).unwrap_or_default();
                let new = String::from_utf8_lossy(text.get(offset..).unwrap_or_default()).into_owned();
                if new.contains("database system is ready to accept connections") {
                    return Ok(());
                }
                if start_failed(&new) || Instant::now() > deadline {
                    // Reap whatever is left of this attempt before the next one.
                    self.supervise("kill")?;
                    if Instant::now() > deadline {
                        return Err(ClusterError::StartFailed { log: tail(&new, 20) });
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops the server and deletes the directory, waiting for both (a no-op once stopped).
    pub fn stop(&self) {
        self.stop_server();
        // The supervisor already removed it; this covers a supervisor that could not.
        if self.dir.exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when a (re)start's log says the server will not come up: a postmaster `FATAL` (not one
/// told to a client while starting) or a completed shutdown.
fn start_failed(log: &str) -> bool {
    log.contains("database system is shut down")
        || log.lines().any(|l| l.contains("FATAL:") && !l.contains("the database system is"))
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port on 127.0.0.1"))?;
    Ok(listener.local_addr().map_err(io("finding a free port on 127.0.0.1"))?.port())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failure_is_told_from_clients_turned_away() {
        assert!(!start_failed("FATAL:  the database system is starting up\nLOG:  redo starts"));
        assert!(start_failed("FATAL:  pre-existing shared memory block (key 1, ID 2) is still in use"));
        assert!(start_failed("LOG:  database system is shut down"));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
