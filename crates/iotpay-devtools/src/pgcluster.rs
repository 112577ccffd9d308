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

use std::io::Write as _;
use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

/// Where PostgreSQL's binaries are looked for after `PATH`, in order.
const INSTALL_DIRS: &[&str] = &[
    "/usr/lib/postgresql/*/bin",
    "/usr/local/pgsql/bin",
    "/opt/homebrew/opt/postgresql*/bin",
    "/usr/local/opt/postgresql*/bin",
    "/Applications/Postgres.app/Contents/Versions/latest/bin",
];

/// The unprivileged account the cluster runs as when this process is root.
pub const UNPRIVILEGED_USER: &str = "nobody";

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

/// The installed PostgreSQL binaries used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// Directory holding `initdb` and `postgres`.
    pub bin_dir: PathBuf,
}

impl Binaries {
    /// Finds `initdb` and `postgres`: `PATH` first, then the usual install directories
    /// (the highest version first where a directory pattern matches several).
    pub fn find() -> Result<Self, ClusterError> {
        let from_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .find(|dir| has_server_binaries(dir));
        if let Some(dir) = from_path {
            // Resolve symlinks (e.g. /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb) so
            // both binaries come from the same installation.
            let bin_dir = std::fs::canonicalize(dir.join("initdb"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .filter(|d| has_server_binaries(d))
                .unwrap_or(dir);
            return Ok(Self { bin_dir });
        }
        INSTALL_DIRS
            .iter()
            .flat_map(|pattern| expand(pattern))
            .find(|dir| has_server_binaries(dir))
            .map(|bin_dir| Self { bin_dir })
            .ok_or(ClusterError::NoBinaries)
    }

    fn initdb(&self) -> PathBuf {
        self.bin_dir.join("initdb")
    }

    fn postgres(&self) -> PathBuf {
        self.bin_dir.join("postgres")
    }
}

fn has_server_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

/// Expands one `*` in a path pattern; matches sorted by version, highest first.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let Some(star) = pattern.find('*') else {
        return vec![PathBuf::from(pattern)];
    };
    let (head, tail) = (&pattern[..star], &pattern[star + 1..]);
    let (parent, prefix) = match head.rfind('/') {
        Some(i) => (&head[..=i], &head[i + 1..]),
        None => ("./", head),
    };
    let (segment_rest, after) = match tail.find('/') {
        Some(i) => (&tail[..i], &tail[i..]),
        None => (tail, ""),
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix) && n.ends_with(segment_rest) && n.len() >= prefix.len() + segment_rest.len())
        .collect();
    names.sort_by_key(|n| std::cmp::Reverse(version_key(n)));
    names.into_iter().map(|n| PathBuf::from(format!("{parent}{n}{after}"))).collect()
}

/// Numeric parts of a name (`postgresql@15` → [15], `9.6` → [9, 6]) so 15 sorts above 9.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect()
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

    /// Sends a command to the supervisor and waits for it to report `stopped`.
    fn supervise(&self, command: &str) -> Result<(), ClusterError> {
        let answer = self.supervise_answer(command)?;
        if answer.trim() != "stopped" {
            return Err(ClusterError::Io {
                what: format!("asking the supervisor to {command}"),
                source: std::io::Error::other(format!("unexpected answer {answer:?}")),
            });
        }
        Ok(())
    }

    /// Sends a command line to the supervisor and reads its one-line answer.
    fn supervise_answer(&self, command: &str) -> Result<String, ClusterError> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let Running { keepalive: Some(stdin), answers: Some(answers), .. } = &mut *running else {
            return Err(ClusterError::Io {
                what: format!("asking the supervisor to {command}"),
                source: std::io::Error::other("the cluster was stopped"),
            });
        };
        let what = || format!("asking the supervisor to {command}");
        writeln!(stdin, "{command}").and_then(|()| stdin.flush()).map_err(io(what()))?;
        let mut answer = String::new();
        match answers.read_line(&mut answer) {
            Ok(0) => Err(ClusterError::Io { what: what(), source: std::io::ErrorKind::UnexpectedEof.into() }),
            Ok(_) => Ok(answer),
            Err(e) => Err(io(what())(e)),
        }
    }

    /// Stops the server; the supervisor removes the directory as it exits.
    fn stop_server(&self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        // Closing the pipe is the stop signal.
        drop(running.keepalive.take());
        drop(running.answers.take());
        if let Some(mut child) = running.supervisor.take() {
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // The supervisor is stuck: end the server ourselves, then the supervisor.
            if let Some(pid) = running.server_pid.filter(|p| *p > 0) {
                // SAFETY: kill has no memory-safety preconditions; the pid is the server's.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
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

/// The supervisor: starts the server, reports its pid, then reads commands on its stdin
/// (`stop`: fast shutdown, `kill`: SIGKILL, each answered `stopped` once the server is gone;
/// `start`: start again on the same directory and port, answered with the new pid) until its
/// stdin closes (this process stopped or exited, whichever way); then it stops the server and
/// removes the directory. Signals from the terminal are ignored so that only the pipe decides.
const SUPERVISOR: &str = r#"
trap '' INT TERM HUP QUIT
bin=$1; dir=$2; port=$3; shift 3
start() {
    "$bin" -D "$dir/data" -p "$port" -c listen_addresses=127.0.0.1 -c unix_socket_directories= \
        -c logging_collector=off "$@" </dev/null >>"$dir/log" 2>&1 &
    pg=$!
    echo "$pg"
}
start "$@"
while read -r cmd; do
    case "$cmd" in
        stop) kill -INT "$pg" 2>/dev/null; wait "$pg" 2>/dev/null; echo stopped ;;
        kill) kill -KILL "$pg" 2>/dev/null; wait "$pg" 2>/dev/null; echo stopped ;;
        start) start "$@" ;;
    esac
done
kill -QUIT "$pg" 2>/dev/null
wait "$pg" 2>/dev/null
rm -rf "$dir"
"#;

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

/// Who runs the cluster: this process's user, or `nobody` when this process is root.
struct Owner {
    ids: Option<(u32, u32)>,
}

impl Owner {
    fn current() -> Result<Self, ClusterError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(Owner { ids: None });
        }
        let name = std::ffi::CString::new(UNPRIVILEGED_USER).expect("no NUL in a constant");
        // SAFETY: getpwnam takes a NUL-terminated name and returns null or a pointer to a static
        // record, read at once before any other passwd call.
        let record = unsafe { libc::getpwnam(name.as_ptr()) };
        if record.is_null() {
            return Err(ClusterError::NoUnprivilegedUser(UNPRIVILEGED_USER.to_owned()));
        }
        // SAFETY: non-null, as checked.
        let (uid, gid) = unsafe { ((*record).pw_uid, (*record).pw_gid) };
        Ok(Owner { ids: Some((uid, gid)) })
    }

    /// Runs `cmd` as this owner, in a neutral environment.
    fn apply(&self, cmd: &mut Command) {
        // A locale the machine lacks (a laptop's LANG) must not stop initdb or the server.
        cmd.env("LC_ALL", "C").env_remove("PGDATA").env_remove("PGPORT");
        if let Some((uid, gid)) = self.ids {
            // std drops supplementary groups when root changes uid.
            std::os::unix::process::CommandExt::uid(cmd, uid);
            std::os::unix::process::CommandExt::gid(cmd, gid);
        }
    }
}

/// Creates the cluster's private directory (owned by the account that runs the cluster).
fn make_dir(owner: &Owner) -> Result<PathBuf, ClusterError> {
    use std::os::unix::fs::PermissionsExt as _;
    // As root, the directory goes under /tmp: world-writable with the sticky bit, so the
    // unprivileged supervisor may remove the directory it owns.
    let base = match owner.ids {
        Some(_) if Path::new("/tmp").is_dir() => PathBuf::from("/tmp"),
        _ => std::env::temp_dir(),
    };
    let mut random = [0u8; 6];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random)).ok();
    let name = format!("iotpay-pgcluster-{}-{}", std::process::id(), hex::encode(random));
    let dir = base.join(name);
    std::fs::create_dir(&dir).map_err(io(format!("creating {}", dir.display())))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(format!("setting permissions of {}", dir.display())))?;
    if let Some((uid, gid)) = owner.ids {
        if let Err(e) = std::os::unix::fs::chown(&dir, Some(uid), Some(gid)) {
            let _ = std::fs::remove_dir(&dir);
            return Err(ClusterError::Io {
                what: format!("giving {} to {UNPRIVILEGED_USER}", dir.display()),
                source: e,
            });
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let mut names = vec!["9.6", "15", "10", "postgresql@14", "postgresql@9"];
        names.sort_by_key(|n| std::cmp::Reverse(version_key(n)));
        assert_eq!(names, ["15", "postgresql@14", "10", "9.6", "postgresql@9"]);
    }

    #[test]
    fn pattern_expansion_finds_highest_version_first() {
        let root = std::env::temp_dir().join(format!("pgcluster-expand-{}", std::process::id()));
        for v in ["9.6", "15", "13"] {
            std::fs::create_dir_all(root.join(v).join("bin")).unwrap();
        }
        let found = expand(&format!("{}/*/bin", root.display()));
        let _ = std::fs::remove_dir_all(&root);
        let found: Vec<String> = found.iter().map(|p| p.strip_prefix(&root).unwrap().display().to_string()).collect();
        assert_eq!(found, ["15/bin", "13/bin", "9.6/bin"]);
    }

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
