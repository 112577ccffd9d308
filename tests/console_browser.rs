//! The operator console in a real browser: Debian's Chromium, headless, driven through
//! chromedriver with fantoccini, signs in, finds a payment, sees its dead delivery, presses
//! Redrive and sees it delivered, taking README's screenshots on the way.

mod adminkit;
mod common;
mod forwarding;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use adminkit::*;
use forwarding::{Receiver, Reply};
use iotpay_devtools::testing::TestDatabase;

/// chromedriver on a free port; killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Set (as `.ci/run` does) to make a browser test that cannot run fail instead of skipping.
const REQUIRE_BROWSER: &str = "IOTPAY_REQUIRE_BROWSER";

/// Says loudly that the browser test did not run, or fails it when `IOTPAY_REQUIRE_BROWSER=1`.
fn browser_unavailable(why: &str) {
    let banner = format!(
        "\n################################################################\n\
         ##  BROWSER TEST DID NOT RUN: {why}\n\
         ##  Install Debian's chromium and chromium-driver (.ci/run does)\n\
         ##  to run console_in_chromium_fixes_a_dead_delivery.\n\
         ################################################################\n"
    );
    // Straight to the process's stderr: libtest captures eprintln! of a passing test, and a
    // skip nobody sees is worse than none.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), banner.as_bytes());
    if std::env::var(REQUIRE_BROWSER).is_ok_and(|v| v == "1") {
        panic!("{REQUIRE_BROWSER}=1 and the browser test cannot run: {why}");
    }
}

async fn start_driver() -> Option<Driver> {
    if !std::path::Path::new(CHROMIUM).exists() || !std::path::Path::new(CHROMEDRIVER).exists() {
        browser_unavailable(&format!("{CHROMIUM} or {CHROMEDRIVER} is missing"));
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = match Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            browser_unavailable(&format!("{CHROMEDRIVER} did not start: {e}"));
            return None;
        }
    };
    let driver = Driver { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(driver)
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                     "--window-size=1360,1000", format!("--user-data-dir={}", profile.display())]
        }),
    );
    // fantoccini's connector needs a process-wide rustls provider; ring is the tree's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    fantoccini::ClientBuilder::rustls()
        .expect("TLS roots")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// Where screenshots go: README's `docs/` only with `UPDATE_SCREENSHOTS=1` (so an ordinary run
/// leaves the tracked PNGs alone), else `target/<profile>/console-screenshots/`, overwritten by
/// each run.
fn screenshot_dir() -> std::path::PathBuf {
    if std::env::var("UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        // Cargo runs a test with the package root as its working directory and says so in
        // CARGO_MANIFEST_DIR at run time (never env!: a shared target/ may have built another
        // checkout).
        let root = std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from).unwrap_or_default();
        return root.join("docs");
    }
    // The test binary is target/<profile>/deps/console-<hash>.
    let exe = std::env::current_exe().expect("the test binary's path");
    match exe.parent().and_then(std::path::Path::parent) {
        Some(profile_dir) => profile_dir.join("console-screenshots"),
        None => std::env::temp_dir().join("iotpay-console-screenshots"),
    }
}

async fn screenshot(
    c: &fantoccini::Client,
    dir: &std::path::Path,
    name: &str,
) -> Result<(), fantoccini::error::CmdError> {
    let png = c.screenshot().await?;
    let path = dir.join(name);
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, png))
        .unwrap_or_else(|e| panic!("writing the screenshot {}: {e}", path.display()));
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("screenshot: {}\n", path.display()).as_bytes());
    Ok(())
}

#[tokio::test]
async fn console_in_chromium_fixes_a_dead_delivery() {
    let Some(driver) = start_driver().await else { return };
    let db = TestDatabase::create().await;
    let admin = Admin::spawn(&db, &[]).await;
    let rx = Receiver::start().await;
    let (ledger, erp) = (rx.url("/ledger"), rx.url("/erp"));
    let endpoints = vec![ledger.clone(), erp.clone()];
    // Six confirmed payments, and three more events in other states.
    let ids = notify_payments(&admin, "PC2026112", 6).await;
    decide_all(&db.pool, &endpoints, None).await;
    let more = notify_payments(&admin, "PW2026112", 3).await;
    decide_all(&db.pool, &endpoints, Some("query timed out")).await;
    for (id, status, reason) in [
        (&more[0], "rejected", "amount differs: notification 100000, IOTPay 1000"),
        (&more[1], "unconfirmed", "no conclusive answer from IOTPay within 86400s (9 checks); last: query timed out"),
    ] {
        sqlx::query(
            "UPDATE payment_events SET status = $2, status_reason = $3, decided_at = now() WHERE event_id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(reason)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    // The first payment's ERP delivery fails both attempts of its schedule and dies; the ERP
    // then heals and every other delivery goes through.
    sqlx::query(
        "UPDATE deliveries SET next_attempt_at = now() + interval '1 day' WHERE NOT (event_id = $1 AND endpoint = $2)",
    )
    .bind(&ids[0])
    .bind(&erp)
    .execute(&db.pool)
    .await
    .unwrap();
    rx.script("/erp", [Reply::Body(500, "ERP maintenance: try later"), Reply::Body(500, "ERP maintenance: try later")]);
    let worker = forwarding::start(&db.pool, &endpoints, forwarding::fast_settings(&[0, 5]), "console-test:1");
    forwarding::wait_until(Duration::from_secs(20), "the ERP delivery dead", || async {
        forwarding::deliveries_with(&db.pool, "dead").await == 1
    })
    .await;
    sqlx::query("UPDATE deliveries SET next_attempt_at = now() WHERE status = 'pending'")
        .execute(&db.pool)
        .await
        .unwrap();
    forwarding::wait_until(Duration::from_secs(20), "the others delivered", || async {
        forwarding::deliveries_with(&db.pool, "delivered").await == 11
    })
    .await;

    let shots = screenshot_dir();
    let profile = std::env::temp_dir().join(format!("iotpay-console-chromium-{}", std::process::id()));
    let c = browser(&driver, &profile).await;
    let outcome = async {
        use fantoccini::key::Key;
        use fantoccini::Locator;
        // Sign in with the keyboard only.
        c.goto(&admin.url("/events")).await?;
        let token = c.wait().for_element(Locator::Css("input[name=token]")).await?;
        token.send_keys(&format!("{TOKEN}{}", char::from(Key::Enter))).await?;
        c.wait().for_element(Locator::Css("input#q")).await?;
        screenshot(&c, &shots, "console-events.png").await?;

        // The overview shows the dead delivery on its endpoint.
        c.find(Locator::LinkText("Overview")).await?.click().await?;
        c.wait().for_element(Locator::Css("figure.chart svg")).await?;
        let overview = c.find(Locator::Css("main")).await?.text().await?;
        assert!(overview.contains("Redrive 1 dead"), "{overview}");
        screenshot(&c, &shots, "console-overview.png").await?;
        c.find(Locator::LinkText("Events")).await?.click().await?;
        c.wait().for_element(Locator::Css("input#q")).await?;

        // Find the payment by IOTPay's order id and open it.
        let q = c.find(Locator::Css("input#q")).await?;
        q.send_keys(&format!("PC20261120000{}", char::from(Key::Enter))).await?;
        let link = c.wait().for_element(Locator::LinkText(&ids[0])).await?;
        link.click().await?;
        // The events page has an <h1> too: wait for the event page's own, never a stale one.
        c.wait().for_element(Locator::XPath("//h1[contains(., 'payment.succeeded')]")).await?;
        let body = c.find(Locator::Css("main")).await?.text().await?;
        assert!(body.contains("dead"), "the dead delivery is shown: {body}");
        assert!(body.contains("ERP maintenance"), "the response snippet is shown: {body}");
        assert!(body.contains("notification received"), "{body}");
        assert!(body.contains("check 1 with IOTPay"), "{body}");
        screenshot(&c, &shots, "console-event.png").await?;

        // Redrive it and see it delivered.
        let redrive = c.find(Locator::XPath("//button[normalize-space()='Redrive']")).await?;
        redrive.click().await?;
        c.wait().for_element(Locator::Css("p.notice")).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rows = c.find(Locator::Css("main table")).await?.text().await?;
            if !rows.contains("dead") && rows.matches("delivered").count() == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "not delivered after redrive: {rows}");
            tokio::time::sleep(Duration::from_millis(300)).await;
            c.refresh().await?;
        }
        assert!(
            c.find(Locator::XPath("//button[normalize-space()='Redrive']")).await.is_err(),
            "no dead delivery left"
        );
        // The timeline says which attempt came after the redrive (its count restarted at 1).
        let timeline = c.find(Locator::Css("ol.timeline")).await?.text().await?;
        assert!(timeline.contains("delivery attempt 1 (redrive 1)"), "{timeline}");
        assert!(timeline.contains("delivery attempt 2 to"), "{timeline}");

        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    let _ = c.close().await;
    let _ = std::fs::remove_dir_all(&profile);
    worker.stop().await;
    outcome.expect("the browser walk");
    let (status, attempts): (String, i64) = sqlx::query_as(
        "SELECT d.status, (SELECT count(*) FROM delivery_attempts a WHERE a.delivery_id = d.id)
           FROM deliveries d WHERE event_id = $1 AND endpoint = $2",
    )
    .bind(&ids[0])
    .bind(&erp)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), attempts), ("delivered", 3), "two failed attempts, then the redriven one");
}
