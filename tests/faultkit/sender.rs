//! The load, and the sender that delivers it the way IOTPay does: genuine notifications of
//! sandbox orders plus a few tampered ones, each re-sent until `SUCCESS`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use iotpay_devtools::sandbox::{Order, Sandbox, SendOptions};

use super::{SENDER_CONCURRENCY, TAMPERED};

/// One notification to send.
#[derive(Clone)]
pub struct Planned {
    pub order: Order,
    pub body: String,
    pub event_type: &'static str,
    /// False for a tampered notification (validly signed, wrong amount).
    pub genuine: bool,
}

/// Books `n` orders in the sandbox and builds their notifications: v3 payments, 5 % v3 refunds
/// (of other payments), 5 % v2 payments, and [`TAMPERED`] tampered v3 payments.
pub fn plan(sandbox: &Sandbox, n: usize) -> Vec<Planned> {
    let genuine = SendOptions::default();
    let mut planned = Vec::with_capacity(n);
    let (refunds, v2) = (n / 20, n / 20);
    let payments = n - refunds - v2 - TAMPERED;
    for i in 0..payments {
        let order = sandbox.create_v3_payment(1000 + i as i64);
        let body = sandbox.notification(&order, &genuine).to_string();
        planned.push(Planned { order, body, event_type: "payment.succeeded", genuine: true });
    }
    for i in 0..refunds {
        let original = planned[i].order.pay_order_id.clone();
        let order = sandbox.create_v3_refund(&original, 500).unwrap();
        let body = sandbox.notification(&order, &genuine).to_string();
        planned.push(Planned { order, body, event_type: "refund.succeeded", genuine: true });
    }
    for i in 0..v2 {
        let order = sandbox.create_v2_payment(700 + i as i64);
        let body = sandbox.notification(&order, &genuine).to_string();
        planned.push(Planned { order, body, event_type: "payment.succeeded", genuine: true });
    }
    for _ in 0..TAMPERED {
        let order = sandbox.create_v3_payment(1500);
        let body = sandbox.notification(&order, &SendOptions { tamper_amount: Some(15000), ..Default::default() });
        planned.push(Planned { order, body: body.to_string(), event_type: "payment.succeeded", genuine: false });
    }
    // Interleave kinds, as real traffic would.
    use rand::seq::SliceRandom as _;
    planned.shuffle(&mut rand::rng());
    planned
}

/// What the sender saw.
#[derive(Debug, Default, Clone)]
pub struct SendReport {
    /// Distinct notifications, each acknowledged with `SUCCESS`.
    pub sent: usize,
    /// POSTs in all (sent + re-sends).
    pub attempts: usize,
    /// Answers other than `200 SUCCESS`: HTTP status or `transport`, with counts.
    pub failures: BTreeMap<String, usize>,
    /// When the last `SUCCESS` arrived.
    pub finished: Option<Instant>,
}

impl SendReport {
    pub fn resends(&self) -> usize {
        self.attempts - self.sent
    }
}

/// Sends every notification like IOTPay: attempt `k` of notification `i` goes to
/// `targets[(i + k) % len]`; re-sent after 20 ms doubling to 500 ms until `200 SUCCESS`.
/// `acked` counts acknowledged notifications as they come.
pub async fn send_all(planned: Vec<Planned>, targets: Vec<String>, acked: Arc<AtomicUsize>) -> SendReport {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let report = Arc::new(Mutex::new(SendReport::default()));
    futures::stream::iter(planned.into_iter().enumerate())
        .for_each_concurrent(SENDER_CONCURRENCY, |(i, p)| {
            let (client, targets, report, acked) = (client.clone(), targets.clone(), report.clone(), acked.clone());
            async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut pause = Duration::from_millis(20);
                for k in 0.. {
                    let url = &targets[(i + k) % targets.len()];
                    let sent =
                        client.post(url).header("content-type", "application/json").body(p.body.clone()).send().await;
                    let outcome = match sent {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let text = resp.text().await.unwrap_or_default();
                            if status == 200 && text == "SUCCESS" {
                                Ok(())
                            } else {
                                Err(status.to_string())
                            }
                        }
                        Err(_) => Err("transport".to_owned()),
                    };
                    let done = {
                        let mut r = report.lock().unwrap();
                        r.attempts += 1;
                        match outcome {
                            Ok(()) => {
                                r.sent += 1;
                                r.finished = Some(Instant::now());
                                true
                            }
                            Err(what) => {
                                *r.failures.entry(what).or_default() += 1;
                                false
                            }
                        }
                    };
                    if done {
                        acked.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    assert!(Instant::now() < deadline, "{} never acknowledged", p.order.pay_order_id);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        })
        .await;
    let report = report.lock().unwrap().clone();
    report
}

/// Waits until `acked` reaches `n`.
pub async fn wait_acked(acked: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "the load stalled at {}", acked.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
