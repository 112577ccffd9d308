//! Logs (tracing) and metrics (Prometheus text), set up once per process.

use std::sync::OnceLock;

use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, EnvFilter};

use crate::env::{invalid, ConfigError};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Reads `LOG_FORMAT` (`text`, the default, or `json`) through `var`.
    pub fn from_vars(var: &impl Fn(&'static str) -> Option<String>) -> Result<Self, ConfigError> {
        match var("LOG_FORMAT").as_deref() {
            None | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(_) => Err(invalid("LOG_FORMAT", "expected text or json")),
        }
    }
}

/// Latency buckets in seconds, from 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Installs the log subscriber: `RUST_LOG` filter (default `info`), text or JSON lines on stderr.
/// A second call in the same process is a no-op.
///
/// A log line that cannot be written (stderr piped to a reader that went away: EPIPE) is
/// dropped and counted in `iotpay_log_write_failures_total`, never reported on stderr again
/// (tracing-subscriber's default `eprintln!` of the error panics on a closed stderr, killing
/// whichever task logged).
pub fn init_logs(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Postgres NOTICEs (`relation "_sqlx_migrations" already exists, skipping` at every start)
    // are not the operator's business, unless RUST_LOG names sqlx.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("sqlx")) {
        filter = filter.add_directive("sqlx::postgres::notice=warn".parse().expect("a valid directive"));
    }
    // Colours only for a person at a terminal: a file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(|| DroppingWriter(std::io::stderr()))
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("buckets are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours still renders what it saw.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// `/metrics` of both listeners.
pub fn metrics_answer(handle: &PrometheusHandle) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
}

/// A writer whose failures are dropped and counted: logging can never stop the service.
pub struct DroppingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for DroppingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.write(buf) {
            Ok(n) => Ok(n),
            Err(_) => {
                metrics::counter!("iotpay_log_write_failures_total").increment(1);
                // Claim the whole buffer: the line is dropped, the caller goes on.
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}
