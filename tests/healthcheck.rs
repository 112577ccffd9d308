//! `iotpay-notify healthcheck`, the docker-compose healthcheck: exit 0 only when /readyz says 200.

mod common;

use std::process::{Command, Output};

use axum::http::StatusCode;
use common::*;
use iotpay_devtools::testing::TestDatabase;

async fn healthcheck(url: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iotpay-notify"));
    cmd.env_clear().current_dir(std::env::temp_dir()).args(["healthcheck", "--url", url, "--timeout", "2"]);
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

#[tokio::test]
async fn exits_0_when_ready() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(&db).await;
    let out = healthcheck(&app.url("/readyz")).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn exits_1_when_not_ready_or_unreachable() {
    // A service that answers 503 (its database is down, say).
    let router = axum::Router::new()
        .route("/readyz", axum::routing::get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "database unreachable") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let out = healthcheck(&format!("http://{addr}/readyz")).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("503"), "{err}");

    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let out = healthcheck(&format!("http://{closed}/readyz")).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refused"), "{err}");
}
