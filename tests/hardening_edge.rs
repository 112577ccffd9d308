//! Issue 11, the edge: what a stranger can do with connections and slow bodies. The invariant
//! under test: a notification whose sign verifies under a configured key is never refused by
//! the failure budget or by a stranger's connections. Every test runs the real accept loop on
//! port 0 and attacks it over real sockets.

mod adminkit;
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use iotpay_devtools::testing::TestDatabase;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PROXY: (&str, &str) = ("NOTIFY_TRUSTED_PROXIES", "127.0.0.1/32");

/// A connection to `to` from the local address `from` (any of 127.0.0.0/8 is ours).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// True when the server has closed `s` (EOF or reset); false while it is open and silent.
fn is_closed(s: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match s.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Lets the accept loop take (or close) every connection just opened.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// True when the server closes `s` (EOF or reset) within `within`, without answering.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(tokio::time::timeout(within, s.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

/// POSTs `body` directly (no proxy) on a new connection.
async fn post_notification(app: &TestApp, body: &str) -> Result<u16, String> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    client
        .post(app.url("/iotpay/notify"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// Item 2: peers outside `NOTIFY_ALLOWED_CIDRS` fill at most their own share of the connections:
/// 16 addresses × 4 connections held open cannot close IOTPay's connections unread, and a health
/// check from outside the allowlist is still answered.
#[tokio::test]
async fn strangers_cannot_take_the_connections_of_allowlisted_senders() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(
        db.pool.clone(),
        &db.url(),
        &[
            ("NOTIFY_ALLOWED_CIDRS", "127.0.0.1/32"),
            ("HTTP_MAX_CONNECTIONS", "40"),
            ("HTTP_MAX_CONNECTIONS_PER_ADDRESS", "4"),
            ("HTTP_MAX_UNLISTED_CONNECTIONS", "20"),
            ("HTTP_HEADER_READ_TIMEOUT_MS", "30000"),
        ],
    )
    .await;
    let health = connect_from("127.0.0.99", app.addr).await;
    let (mut health_r, mut health_w) = health.into_split();
    health_w.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    health_r.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "a health check from outside the allowlist: {answer}");
    settle().await;

    let mut flood = Vec::new();
    for a in 2..18 {
        for _ in 0..4 {
            flood.push(connect_from(&format!("127.0.0.{a}"), app.addr).await);
        }
    }
    settle().await;
    for i in 0..5 {
        let status = post_notification(&app, &signed(v3_pay(&format!("S{i}"), 100), KEY)).await;
        assert_eq!(status, Ok(200), "IOTPay's notification {i} while the strangers hold their share");
    }
    let open = flood.iter().filter(|s| !is_closed(s)).count();
    assert_eq!(open, 20, "strangers hold exactly their share, the rest is closed unread");
    assert_eq!(count(&db.pool, "payment_events").await, 5);
    drop(flood);
}

/// Item 2: `HTTP_MAX_CONNECTIONS_PER_ADDRESS=0` turns the per-address cap off, as documented:
/// more connections than the default cap (256) from one address are all served.
#[tokio::test]
async fn zero_turns_the_per_address_connection_cap_off() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(
        db.pool.clone(),
        &db.url(),
        &[("HTTP_MAX_CONNECTIONS_PER_ADDRESS", "0"), ("HTTP_HEADER_READ_TIMEOUT_MS", "30000")],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..300 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    settle().await;
    assert_eq!(held.iter().filter(|s| is_closed(s)).count(), 0, "none closed");
    assert_eq!(post_notification(&app, &signed(v3_pay("Z1", 100), KEY)).await, Ok(200));
}

/// Item 2: a connection that never finishes its headers is closed after the header-read timeout.
#[tokio::test]
async fn unfinished_headers_are_cut_off() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.pool.clone(), &db.url(), &[("HTTP_HEADER_READ_TIMEOUT_MS", "500")]).await;
    let mut partial = TcpStream::connect(app.addr).await.unwrap();
    partial.write_all(b"POST /iotpay/notify HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let partial_end = tokio::time::timeout(Duration::from_secs(5), partial.read(&mut buf)).await;
    assert!(matches!(partial_end, Ok(Ok(_)) | Ok(Err(_))), "still open after 5 s");
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await, "a silent connection is closed too");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(app.post_json(&signed(v3_pay("H1", 100), KEY)).await.0, 200, "normal requests are unaffected");
}

/// Item 2: open connections are capped per client address and in all; over a cap a connection
/// is closed unread, and a slot is free again once a connection closes.
#[tokio::test]
async fn open_connections_are_capped_per_address_and_in_all() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(
        db.pool.clone(),
        &db.url(),
        &[("HTTP_MAX_CONNECTIONS_PER_ADDRESS", "3"), ("HTTP_HEADER_READ_TIMEOUT_MS", "10000")],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    settle().await;
    let mut over = TcpStream::connect(app.addr).await.unwrap();
    assert!(closed_within(&mut over, Duration::from_secs(2)).await, "4th connection from one address");
    let from_elsewhere = connect_from("127.0.0.2", app.addr).await;
    settle().await;
    assert!(!is_closed(&from_elsewhere), "another address has slots of its own");
    held.pop();
    settle().await;
    assert_eq!(app.post_json(&signed(v3_pay("C1", 100), KEY)).await.0, 200, "a freed slot is usable");

    let capped = TestApp::spawn_with(
        db.pool.clone(),
        &db.url(),
        &[("HTTP_MAX_CONNECTIONS", "2"), ("HTTP_HEADER_READ_TIMEOUT_MS", "10000")],
    )
    .await;
    let _a = TcpStream::connect(capped.addr).await.unwrap();
    let _b = connect_from("127.0.0.2", capped.addr).await;
    settle().await;
    let mut third = connect_from("127.0.0.3", capped.addr).await;
    assert!(closed_within(&mut third, Duration::from_secs(2)).await, "over the global cap");
}

/// Item 2: the admin listener has the same limits as the public one: a header-read timeout and
/// a per-address cap.
#[tokio::test]
async fn the_admin_listener_cuts_off_unfinished_headers_and_caps_connections() {
    let db = TestDatabase::create().await;
    let admin = adminkit::Admin::spawn(&db, &[]).await;
    let mut partial = TcpStream::connect(admin.admin).await.unwrap();
    partial.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..255 {
        held.push(TcpStream::connect(admin.admin).await.unwrap());
    }
    settle().await;
    assert_eq!(held.iter().filter(|s| is_closed(s)).count(), 0, "256 connections from one address are served");
    let mut over = TcpStream::connect(admin.admin).await.unwrap();
    assert!(closed_within(&mut over, Duration::from_secs(2)).await, "the 257th is closed unread");
    drop(held);
    // The default header-read timeout is 10 s.
    let left = Duration::from_secs(15).saturating_sub(started.elapsed());
    assert!(closed_within(&mut partial, left).await, "unfinished headers still open after 15 s");
    let status = admin.client.get(admin.url("/healthz")).send().await.unwrap().status().as_u16();
    assert_eq!(status, 200);
}

/// True while `s` is open and the server has sent nothing on it.
fn is_silent(s: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The status line the server answers on `s` within `within`.
async fn status_line(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = vec![0u8; 1024];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_owned()),
        _ => None,
    }
}

/// POSTs `body` as IOTPay's client `xff` behind the trusted proxy (127.0.0.1), on a new
/// connection; the status, or the transport error as text.
async fn post_via_proxy(app: &TestApp, xff: &str, body: String) -> Result<u16, String> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    client
        .post(app.url("/iotpay/notify"))
        .header("content-type", "application/json")
        .header("x-forwarded-for", xff)
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// A request head announcing `length` bytes from `xff`, then `first` of them; the stream is
/// left open with the rest never sent.
async fn slow_body(app: &TestApp, xff: &str, length: usize, first: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /iotpay/notify HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-forwarded-for: {xff}\r\ncontent-length: {length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(first).await.unwrap();
    s
}

/// Sends `body` chunked (no Content-Length), in two chunks, from `xff`; the status line.
async fn post_chunked(app: &TestApp, xff: &str, body: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /iotpay/notify HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-forwarded-for: {xff}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (a, b) = body.split_at(body.len() / 2);
    for chunk in [a, b] {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
        s.write_all(chunk).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    status_line(&mut s, Duration::from_secs(5)).await
}

/// A notification for a merchant not configured here, correctly signed with that merchant's own
/// key: what IOTPay sends when another merchant points its notifyUrl at us.
fn foreign(order: &str) -> String {
    let mut v = v3_pay(order, 100);
    v["mchId"] = json!("99999999");
    signed(v, "THEIRKEY0000000000000000000000AA")
}

/// Item 3: an address on probation — here IOTPay's own, put there by another merchant's
/// notifications (anyone with an IOTPay merchant account can send those through IOTPay) — still
/// gets a correctly signed notification through when its body comes chunked.
#[tokio::test]
async fn a_chunked_signed_notification_passes_probation() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.pool.clone(), &db.url(), &[PROXY, ("NOTIFY_FAILURES_PER_MINUTE", "2")]).await;
    let iotpay = "198.51.100.7";
    let mut answers = Vec::new();
    for i in 0..4 {
        answers.push(post_via_proxy(&app, iotpay, foreign(&format!("X{i}"))).await.unwrap());
    }
    assert_eq!(answers, [401, 401, 429, 429], "IOTPay's address is on probation");
    let genuine = signed(v3_pay("C1", 100), KEY);
    assert_eq!(post_chunked(&app, iotpay, genuine.as_bytes()).await.as_deref(), Some("HTTP/1.1 200 OK"));
    // The cap and the sign still apply to chunked bodies on probation.
    let forged = signed(v3_pay("C2", 100), "FORGEDKEY");
    assert_eq!(post_chunked(&app, iotpay, forged.as_bytes()).await.as_deref(), Some("HTTP/1.1 429 Too Many Requests"));
    let huge = vec![b' '; 20 * 1024];
    assert_eq!(post_chunked(&app, iotpay, &huge).await.as_deref(), Some("HTTP/1.1 429 Too Many Requests"));
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT pay_order_id FROM payment_events").fetch_all(&db.pool).await.unwrap();
    assert_eq!(stored, ["C1"]);
}

/// Item 3: one address on probation holding 80 slow bodies (more than the 64 probation slots the
/// service used to share among all addresses) refuses no genuine notification: neither from
/// another address on probation nor from its own address.
#[tokio::test]
async fn slow_bodies_on_probation_cannot_refuse_a_genuine_notification() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.pool.clone(), &db.url(), &[PROXY, ("NOTIFY_FAILURES_PER_MINUTE", "1")]).await;
    let (attacker, iotpay) = ("203.0.113.9", "198.51.100.7");
    for from in [attacker, iotpay] {
        assert_eq!(post_via_proxy(&app, from, signed(v3_pay("F", 100), "FORGEDKEY")).await, Ok(401));
        assert_eq!(post_via_proxy(&app, from, signed(v3_pay("F", 100), "FORGEDKEY")).await, Ok(429), "{from}");
    }
    let mut slow = Vec::new();
    for _ in 0..80 {
        slow.push(slow_body(&app, attacker, 10_000, b"{\"mchId\":").await);
    }
    settle().await;
    let other = post_via_proxy(&app, iotpay, signed(v3_pay("G1", 100), KEY)).await;
    let same = post_via_proxy(&app, attacker, signed(v3_pay("G2", 100), KEY)).await;
    assert_eq!(other, Ok(200), "another address on probation");
    assert_eq!(same, Ok(200), "the attacker's own (shared) address");
    assert!(slow.iter().all(is_silent), "asked while every slow body was still being read");
    // Each slow body is given up on after the probation read timeout.
    assert_eq!(
        status_line(&mut slow[0], Duration::from_secs(5)).await.as_deref(),
        Some("HTTP/1.1 429 Too Many Requests")
    );
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT pay_order_id FROM payment_events ORDER BY 1").fetch_all(&db.pool).await.unwrap();
    assert_eq!(stored, ["G1", "G2"]);
}

/// Items 3 and 7, IPv6 /64 churn: an attacker rotating through the addresses of its /64 shares
/// one budget and holds slow bodies from all of them; genuine notifications from another /64 and
/// from its own still pass.
#[tokio::test]
async fn ipv6_churn_within_a_64_refuses_no_genuine_notification() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.pool.clone(), &db.url(), &[PROXY, ("NOTIFY_FAILURES_PER_MINUTE", "3")]).await;
    let mut answers = Vec::new();
    for i in 1..=6 {
        answers
            .push(post_via_proxy(&app, &format!("2001:db8:1:2::{i:x}"), signed(v3_pay("F", 100), "FORGEDKEY")).await);
    }
    assert_eq!(answers, [Ok(401), Ok(401), Ok(401), Ok(429), Ok(429), Ok(429)], "one budget per /64");
    let mut slow = Vec::new();
    for i in 0..40 {
        slow.push(slow_body(&app, &format!("2001:db8:1:2:{i:x}::1"), 10_000, b"{").await);
    }
    settle().await;
    assert_eq!(post_via_proxy(&app, "2001:db8:9::7", signed(v3_pay("G1", 100), KEY)).await, Ok(200));
    assert_eq!(post_via_proxy(&app, "2001:db8:1:2::ffff", signed(v3_pay("G2", 100), KEY)).await, Ok(200));
    let genuine = signed(v3_pay("G3", 100), KEY);
    assert_eq!(post_chunked(&app, "2001:db8:1:2::eeee", genuine.as_bytes()).await.as_deref(), Some("HTTP/1.1 200 OK"));
    assert_eq!(count(&db.pool, "payment_events").await, 3);
}
