//! The service as a child process: one `serve` with its log.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// One `serve` process; its stdout and stderr go to a log file.
pub struct Service {
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Service {
    /// Starts `serve` with `env` on `port`; returns once `/healthz` answers.
    pub async fn spawn(env: &[(String, String)], port: u16) -> Service {
        let log =
            std::env::temp_dir().join(format!("iotpay-faults-{}-{}.log", std::process::id(), rand::random::<u64>()));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iotpay-notify"));
        // No inherited configuration, and no .env file in the working directory.
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(std::env::temp_dir())
            .arg("serve")
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let service = Service { port, log, child: Some(child) };
        service.wait_healthy().await;
        service
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.get(format!("http://127.0.0.1:{}/healthz", self.port)).send().await.is_err() {
            assert!(Instant::now() < deadline, "serve did not start; log:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn notify_url(&self) -> String {
        format!("http://127.0.0.1:{}/iotpay/notify", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a node failure or the OOM killer would.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM; returns the exit status (graceful shutdown).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        iotpay_devtools::os::terminate(child.id()).expect("SIGTERM to our own child");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("serve did not stop on SIGTERM; log:\n{}", tail(&self.log_text(), 30));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
