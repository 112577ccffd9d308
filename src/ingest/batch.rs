//! Group commit: concurrent notifications are written together, one transaction per batch, and
//! each request is answered only after its own batch commits.
//!
//! Postgres's durable commit (a WAL flush) is the ingest ceiling when every request commits on
//! its own. Several writer tasks share one queue: while one batch commits, the next gathers, so
//! a burst of N concurrent requests costs a few flushes instead of N.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::store::{self, NewNotification, Recorded, StoreError};

/// Group-commit tuning.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Most notifications in one transaction.
    pub max_batch: usize,
    /// Longest a gathered batch waits for more notifications before it is written.
    pub max_wait: Duration,
    /// Writer tasks (batches in flight at once).
    pub writers: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self { max_batch: 64, max_wait: Duration::from_micros(200), writers: 4 }
    }
}

struct Job {
    new: NewNotification,
    reply: oneshot::Sender<Result<Recorded, StoreError>>,
}

/// The queue in front of the writers.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the writer tasks; they stop when every `Batcher` clone is dropped.
    pub fn start(pool: PgPool, settings: BatchSettings) -> Self {
        let (queue, receiver) = mpsc::channel::<Job>(settings.max_batch * settings.writers * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..settings.writers.max(1) {
            tokio::spawn(writer(pool.clone(), receiver.clone(), settings));
        }
        Self { queue }
    }

    /// Stores one notification; resolves after the transaction that holds it has committed.
    pub async fn record(&self, new: NewNotification) -> Result<Recorded, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Job { new, reply }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

async fn writer(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<Job>>>, settings: BatchSettings) {
    let mut jobs: Vec<Job> = Vec::with_capacity(settings.max_batch);
    loop {
        {
            // Only the gathering writer holds the queue; the others are committing meanwhile.
            let mut queue = receiver.lock().await;
            match queue.recv().await {
                Some(job) => jobs.push(job),
                None => return,
            }
            let deadline = tokio::time::Instant::now() + settings.max_wait;
            while jobs.len() < settings.max_batch {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        match tokio::time::timeout_at(deadline, queue.recv()).await {
                            Ok(Some(job)) => jobs.push(job),
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
            }
        }
        write(&pool, &mut jobs).await;
    }
}

async fn write(pool: &PgPool, jobs: &mut Vec<Job>) {
    metrics::histogram!("iotpay_ingest_batch_size").record(jobs.len() as f64);
    let batch: Vec<NewNotification> = jobs.iter().map(|j| j.new.clone()).collect();
    match store::record_batch(pool, &batch).await {
        Ok(results) => {
            for (job, result) in jobs.drain(..).zip(results) {
                let _ = job.reply.send(Ok(result));
            }
        }
        Err(e) if jobs.len() == 1 => {
            let _ = jobs.pop().expect("one job").reply.send(Err(e));
        }
        Err(e) => {
            // One bad row must not fail its neighbours: write each on its own, so only the
            // offending notification gets an error.
            tracing::warn!(error = %e, size = jobs.len(), "batch failed; writing its notifications one by one");
            for job in jobs.drain(..) {
                let result = store::record_notification(pool, &job.new).await;
                let _ = job.reply.send(result);
            }
        }
    }
}
