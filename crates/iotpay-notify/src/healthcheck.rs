//! `iotpay-notify healthcheck`: a container healthcheck without curl. It asks a running
//! service's `/readyz` and turns the answer into an exit code.

use std::time::Duration;

use anyhow::{bail, Context};

/// `Ok` when `url` answers 200 within `timeout`; an error (exit 1) naming what it got otherwise.
pub async fn probe(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(timeout).build().context("building the HTTP client")?;
    let response = client.get(url).send().await.map_err(|e| {
        let why = if e.is_timeout() {
            "no answer in time".to_owned()
        } else if e.is_connect() {
            "connection refused or unreachable".to_owned()
        } else {
            e.to_string()
        };
        anyhow::anyhow!("not ready: {url}: {why}")
    })?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        let body = response.text().await.unwrap_or_default();
        bail!("not ready: {url} answered {status}: {}", body.chars().take(200).collect::<String>().trim());
    }
    println!("ready: {url} answered 200");
    Ok(())
}
