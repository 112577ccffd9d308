//! `iotpay-notify bench --pipeline` against a real `serve` process: every event it sends goes
//! through confirmation (the bench's sandbox) and forwarding (the bench's sink), and the report
//! counts each one once.

mod common;

use std::process::{Child, Stdio};
use std::time::Instant;

use common::*;
use iotpay_devtools::testing::TestDatabase;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn pipeline_bench_drives_every_event_to_confirmed_and_delivered() {
    let db = TestDatabase::create().await;
    let (port, sandbox, sink) = (free_port(), free_port(), free_port());
    let _serve = Killed(
        binary()
            .arg("serve")
            .env("DATABASE_URL", db.url())
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("IOTPAY_MERCHANTS", merchants_env())
            .env("IOTPAY_V3_API_URL", format!("http://127.0.0.1:{sandbox}/v3"))
            .env("IOTPAY_V2_API_URL", format!("http://127.0.0.1:{sandbox}/v2"))
            .env("FORWARD_URLS", format!("http://127.0.0.1:{sink}/webhook"))
            .env("FORWARD_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        binary()
            .args(["bench", "--pipeline", "--json", "-c", "4", "-n", "40", "--repeat-share", "0.2"])
            .args(["--url", &format!("http://127.0.0.1:{port}"), "--merchant", &format!("{MCH}:{KEY}")])
            .args(["--sandbox-listen", &format!("127.0.0.1:{sandbox}"), "--sink-listen", &format!("127.0.0.1:{sink}")])
            .args(["--settle-timeout", "60"])
            .env("FORWARD_SECRET", SECRET)
            .env("DATABASE_URL", db.url())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("FORWARD_URLS=http://127.0.0.1:{sink}/webhook")), "{stderr}");
    assert!(!stderr.contains(SECRET), "the secret is printed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // Repeats are extra requests, not extra events: 40 events, each confirmed and delivered once.
    let requests = report["ingest"]["requests"].as_u64().unwrap();
    assert!(requests >= 40, "{report}");
    assert_eq!(report["ingest"]["statuses"], serde_json::json!({ "200": requests }), "{report}");
    assert_eq!(report["events"], 40, "{report}");
    assert_eq!(report["delivered"], 40, "{report}");
    assert_eq!(report["statuses"], serde_json::json!({ "confirmed": 40 }), "{report}");
    assert_eq!(report["repeat_deliveries"], 0, "{report}");
    assert!(report["events_per_sec"].as_f64().unwrap() > 0.0, "{report}");

    // Latencies are real spans of this run: ordered, positive, within the run's wall time.
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    for key in ["sent_to_delivered_ms", "sent_to_confirmed_ms", "confirmed_to_delivered_ms"] {
        let p = &report[key];
        let (p50, p99, max) = (p["p50"].as_f64().unwrap(), p["p99"].as_f64().unwrap(), p["max"].as_f64().unwrap());
        assert!(p50 <= p99 && p99 <= max && max <= wall_ms, "{key}: {p}");
    }
    assert!(report["sent_to_delivered_ms"]["p50"].as_f64().unwrap() > 0.0, "{report}");
    let confirmed_max = report["sent_to_confirmed_ms"]["max"].as_f64().unwrap();
    assert!(confirmed_max <= report["sent_to_delivered_ms"]["max"].as_f64().unwrap() + 1.0, "{report}");
}
