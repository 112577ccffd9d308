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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

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
