//! The sink: accepts only correctly signed Standard Webhooks, records and describes them, and
//! fails on purpose when told to.

use std::time::Duration;

use axum::http::StatusCode;
use iotpay_devtools::sink::{Answer, Sink, SinkConfig, Verdict};
use iotpay_notify::config::ForwardSecret;
use iotpay_notify::forward::signature;
use serde_json::json;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==";

fn event(id: &str) -> String {
    json!({
        "type": "payment.succeeded", "timestamp": "2026-11-22T05:00:00Z",
        "data": {"event_id": id, "event_type": "payment.succeeded", "api_version": "v3", "mch_id": "10000701",
                 "pay_order_id": "PC1", "amount": 2500, "currency": "CAD", "status": "confirmed"}
    })
    .to_string()
}

async fn sink() -> Sink {
    Sink::start(SinkConfig::new(ForwardSecret::parse(SECRET).unwrap())).await.unwrap()
}

/// POSTs `body` signed with `secret` at `timestamp`; returns the HTTP status.
async fn post(sink: &Sink, id: &str, body: &str, secret: &str, timestamp: i64) -> u16 {
    let secret = ForwardSecret::parse(secret).unwrap();
    reqwest::Client::new()
        .post(sink.url())
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature::sign(&secret, id, timestamp, body.as_bytes()))
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn accepts_and_records_correctly_signed_events() {
    let sink = sink().await;
    assert_eq!(post(&sink, "evt_1", &event("evt_1"), SECRET, now()).await, 200);
    assert_eq!(post(&sink, "evt_1", &event("evt_1"), SECRET, now()).await, 200);
    let accepted = sink.accepted();
    assert_eq!(accepted.len(), 2);
    assert_eq!(accepted[0].webhook_id, "evt_1");
    assert_eq!(accepted[0].event_type(), "payment.succeeded");
    assert_eq!(accepted[0].data("amount"), "2500");
    assert!(!accepted[0].repeat && accepted[1].repeat, "a second delivery of one id is marked as a repeat");
    let line = accepted[0].line();
    for part in ["200", "evt_1", "payment.succeeded", "v3", "PC1", "2500", "CAD", "confirmed"] {
        assert!(line.contains(part), "{part} in {line}");
    }
}

#[tokio::test]
async fn refuses_bad_signatures_with_401() {
    let sink = sink().await;
    let body = event("evt_2");
    assert_eq!(post(&sink, "evt_2", &body, OTHER_SECRET, now()).await, 401, "wrong secret");
    assert_eq!(post(&sink, "evt_2", &body, SECRET, now() - 3600).await, 401, "stale timestamp");
    let unsigned = reqwest::Client::new().post(sink.url()).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 401, "no signature headers");
    // Signed for one body, sent with another.
    let secret = ForwardSecret::parse(SECRET).unwrap();
    let ts = now();
    let swapped = reqwest::Client::new()
        .post(sink.url())
        .header("webhook-id", "evt_2")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature::sign(&secret, "evt_2", ts, body.as_bytes()))
        .body(event("evt_other"))
        .send()
        .await
        .unwrap();
    assert_eq!(swapped.status().as_u16(), 401, "tampered body");
    assert!(sink.accepted().is_empty());
    assert!(sink.received().iter().all(|r| r.verdict == Verdict::BadSignature));
    assert!(sink.received()[0].line().starts_with("401 bad signature"));
}

#[tokio::test]
async fn fails_the_first_n_then_heals() {
    let mut config = SinkConfig::new(ForwardSecret::parse(SECRET).unwrap());
    config.fail_first = 2;
    let sink = Sink::start(config).await.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(post(&sink, "evt_3", &event("evt_3"), SECRET, now()).await);
    }
    assert_eq!(statuses, [503, 503, 200]);
    // A bad signature is refused as such even during an outage.
    sink.fail_next(5);
    assert_eq!(post(&sink, "evt_4", &event("evt_4"), OTHER_SECRET, now()).await, 401);
    sink.heal();
    assert_eq!(post(&sink, "evt_4", &event("evt_4"), SECRET, now()).await, 200);
    assert!(sink.wait_for_accepted(2, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn fails_for_a_while_then_accepts() {
    let sink = sink().await;
    sink.fail_for(Duration::from_millis(400));
    assert_eq!(post(&sink, "evt_5", &event("evt_5"), SECRET, now()).await, 503);
    assert_eq!(sink.received()[0].verdict, Verdict::Failing);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(post(&sink, "evt_5", &event("evt_5"), SECRET, now()).await, 200);
}

#[tokio::test]
async fn signed_garbage_is_a_400() {
    let sink = sink().await;
    assert_eq!(post(&sink, "evt_6", "not json", SECRET, now()).await, 400);
    assert_eq!(sink.received()[0].verdict, Verdict::Malformed);
}

/// POSTs a fresh event to `path`, signed with `secret`; returns status, `Retry-After` and body.
async fn post_to(sink: &Sink, path: &str, id: &str, secret: &str) -> (u16, Option<String>, String) {
    let (secret, ts, body) = (ForwardSecret::parse(secret).unwrap(), now(), event(id));
    let resp = reqwest::Client::new()
        .post(format!("http://{}{path}", sink.addr()))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature::sign(&secret, id, ts, body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), retry_after, resp.text().await.unwrap())
}

#[tokio::test]
async fn answers_as_scripted_per_path_then_by_default_then_by_fallback() {
    let sink = sink().await;
    sink.script(
        "/erp",
        [
            Answer::new(StatusCode::INTERNAL_SERVER_ERROR, "boom"),
            Answer::new(StatusCode::SERVICE_UNAVAILABLE, "slow down").with_header("retry-after", "7"),
        ],
    );
    sink.set_default("/erp", Some(Answer::new(StatusCode::BAD_GATEWAY, "down")));
    let mut got = Vec::new();
    for i in 0..4 {
        got.push(post_to(&sink, "/erp", &format!("evt_e{i}"), SECRET).await);
    }
    let text = |(s, r, b): (u16, Option<&str>, &str)| (s, r.map(str::to_owned), b.to_owned());
    assert_eq!(
        got,
        [(500, None, "boom"), (503, Some("7"), "slow down"), (502, None, "down"), (502, None, "down")].map(text)
    );
    // Another path is unaffected: the sink's own 200 (an empty body), until a fallback is set.
    assert_eq!(post_to(&sink, "/ledger", "evt_l1", SECRET).await, text((200, None, "")));
    sink.set_fallback(Some(Answer::new(StatusCode::OK, "ok")));
    assert_eq!(post_to(&sink, "/ledger", "evt_l2", SECRET).await, text((200, None, "ok")));

    // A bad signature is refused as such and uses up no scripted answer.
    sink.script("/erp", [Answer::new(StatusCode::IM_A_TEAPOT, "teapot")]);
    assert_eq!(post_to(&sink, "/erp", "evt_e4", OTHER_SECRET).await.0, 401);
    assert_eq!(post_to(&sink, "/erp", "evt_e5", SECRET).await, text((418, None, "teapot")));
    sink.set_default("/erp", None);
    assert_eq!(post_to(&sink, "/erp", "evt_e6", SECRET).await, text((200, None, "ok")), "back to the fallback");

    // Every request is recorded with its path, headers and verdict; only the sink's own 200 is
    // an acceptance.
    let received = sink.received();
    let paths: Vec<&str> = received.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/erp", "/erp", "/erp", "/erp", "/ledger", "/ledger", "/erp", "/erp", "/erp"]);
    assert_eq!(received[0].verdict, Verdict::Scripted(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(received[6].verdict, Verdict::BadSignature);
    assert!(received.iter().all(|r| r.headers["content-type"] == "application/json"));
    assert_eq!(sink.accepted().iter().map(|r| r.webhook_id.as_str()).collect::<Vec<_>>(), ["evt_l1"]);
    assert_eq!(sink.received_since(7).len(), 2);
    assert!(sink.received_since(99).is_empty());
}

#[tokio::test]
async fn the_sink_command_prints_one_line_per_event() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_iotpay-notify"))
        .args(["sink", "--listen", &format!("127.0.0.1:{port}"), "--fail-first", "1"])
        .env_clear()
        .env("FORWARD_SECRET", SECRET)
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = lines.next().unwrap().unwrap();
    assert!(banner.contains(&format!("FORWARD_URLS=http://127.0.0.1:{port}/webhook")), "{banner}");

    let client = reqwest::Client::new();
    let secret = ForwardSecret::parse(SECRET).unwrap();
    let mut statuses = Vec::new();
    for (id, secret) in
        [("evt_c1", &secret), ("evt_c1", &secret), ("evt_c2", &ForwardSecret::parse(OTHER_SECRET).unwrap())]
    {
        let ts = now();
        let body = event(id);
        let resp = client
            .post(format!("http://127.0.0.1:{port}/webhook"))
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature::sign(secret, id, ts, body.as_bytes()))
            .body(body)
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [503, 200, 401]);
    let printed: Vec<String> = lines.by_ref().take(3).map(Result::unwrap).collect();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        printed[0].starts_with("503 evt_c1 payment.succeeded") && printed[0].contains("failing on purpose"),
        "{printed:?}"
    );
    assert!(
        printed[1].starts_with("200 evt_c1 payment.succeeded") && printed[1].contains("PC1 2500 CAD"),
        "{printed:?}"
    );
    assert!(printed[2].starts_with("401 bad signature"), "{printed:?}");
}
