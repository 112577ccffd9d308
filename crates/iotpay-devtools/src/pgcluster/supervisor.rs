//! The `sh` supervisor the server runs under, and talking to it over its stdin pipe.

use std::io::{BufRead as _, Write as _};
use std::time::{Duration, Instant};

use super::{io, ClusterError, PgCluster, Running};

/// The supervisor: starts the server, reports its pid, then reads commands on its stdin
/// (`stop`: fast shutdown, `kill`: SIGKILL, each answered `stopped` once the server is gone;
/// `start`: start again on the same directory and port, answered with the new pid) until its
/// stdin closes (this process stopped or exited, whichever way); then it stops the server and
/// removes the directory. Signals from the terminal are ignored so that only the pipe decides.
pub(super) const SUPERVISOR: &str = r#"
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

impl PgCluster {
    /// Sends a command to the supervisor and waits for it to report `stopped`.
    pub(super) fn supervise(&self, command: &str) -> Result<(), ClusterError> {
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
    pub(super) fn supervise_answer(&self, command: &str) -> Result<String, ClusterError> {
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
    pub(super) fn stop_server(&self) {
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
}
