//! Group commit: concurrent callers hand their writes to a shared queue, writer tasks take
//! whatever has gathered and write it in ONE transaction, and each caller is answered only after
//! the transaction holding its write has committed.
//!
//! Postgres's durable commit (a WAL flush) is the ceiling when every write commits on its own.
//! Several writer tasks share one queue: while one batch commits, the next gathers, so N
//! concurrent writes cost a few flushes instead of N. Ingest, confirmation decisions and
//! delivery records all go through this.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::StoreError;

/// Writes a batch of items in one transaction.
pub trait BatchWrite: Send + Sync + 'static {
    /// One write.
    type Item: Send + Sync + 'static;
    /// What one write resulted in.
    type Output: Send + 'static;
    /// Names the queue in metrics and logs.
    const NAME: &'static str;

    /// Writes every item in one transaction; one output per item, in input order.
    fn write(
        &self,
        pool: &PgPool,
        items: &[Self::Item],
    ) -> impl Future<Output = Result<Vec<Self::Output>, StoreError>> + Send;
}

/// Group-commit tuning; the default suits request-driven writes (ingest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSettings {
    /// Most items in one transaction.
    pub max_batch: usize,
    /// Longest a gathered batch waits for more items before it is written (zero: write what
    /// is queued at once; batches still form while the previous one commits).
    pub max_wait: Duration,
    /// Writer tasks (batches in flight at once).
    pub writers: usize,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self { max_batch: 64, max_wait: Duration::from_micros(200), writers: 4 }
    }
}

struct Job<W: BatchWrite> {
    item: W::Item,
    reply: oneshot::Sender<Result<W::Output, StoreError>>,
}

/// The queue in front of the writers.
pub struct GroupCommit<W: BatchWrite> {
    queue: mpsc::Sender<Job<W>>,
}

impl<W: BatchWrite> Clone for GroupCommit<W> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone() }
    }
}

impl<W: BatchWrite> GroupCommit<W> {
    /// Starts the writer tasks; they stop when every clone of the returned queue is dropped.
    ///
    /// Under [`crate::health::Health::scope`] (the service) they are supervised: a writer that
    /// panics fails the service's health, since with its writers gone the queue would answer
    /// every submit with [`StoreError::Closed`] for good (ingest `503` forever) while nothing
    /// else noticed.
    pub fn start(pool: PgPool, writer: W, settings: GroupSettings) -> Self {
        let settings =
            GroupSettings { max_batch: settings.max_batch.max(1), writers: settings.writers.max(1), ..settings };
        let (queue, receiver) = mpsc::channel::<Job<W>>(settings.max_batch * settings.writers * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        let writer = Arc::new(writer);
        for _ in 0..settings.writers {
            let task = write_loop(pool.clone(), writer.clone(), receiver.clone(), settings);
            crate::health::spawn_supervised(format!("{}-writer", W::NAME), task);
        }
        Self { queue }
    }

    /// Writes one item; resolves after the transaction that holds it has committed.
    pub async fn submit(&self, item: W::Item) -> Result<W::Output, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Job { item, reply }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

async fn write_loop<W: BatchWrite>(
    pool: PgPool,
    writer: Arc<W>,
    receiver: Arc<Mutex<mpsc::Receiver<Job<W>>>>,
    settings: GroupSettings,
) {
    let mut jobs: Vec<Job<W>> = Vec::with_capacity(settings.max_batch);
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
                    Err(mpsc::error::TryRecvError::Empty) if settings.max_wait.is_zero() => break,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        match tokio::time::timeout_at(deadline, queue.recv()).await {
                            Ok(Some(job)) => jobs.push(job),
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
            }
        }
        write(&pool, &*writer, &mut jobs).await;
    }
}

async fn write<W: BatchWrite>(pool: &PgPool, writer: &W, jobs: &mut Vec<Job<W>>) {
    metrics::histogram!("iotpay_group_commit_batch_size", "queue" => W::NAME).record(jobs.len() as f64);
    let (items, replies): (Vec<W::Item>, Vec<_>) = jobs.drain(..).map(|j| (j.item, j.reply)).unzip();
    match writer.write(pool, &items).await {
        Ok(results) => {
            debug_assert_eq!(results.len(), items.len(), "one output per item");
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(e) if items.len() == 1 => {
            let _ = replies.into_iter().next().expect("one job").send(Err(e));
        }
        Err(e) => {
            // One bad row must not fail its neighbours: write each on its own, so only the
            // offending item gets an error.
            tracing::warn!(queue = W::NAME, error = %e, size = items.len(), "batch failed; writing its items one by one");
            for (item, reply) in items.iter().zip(replies) {
                let result = writer.write(pool, std::slice::from_ref(item)).await;
                let _ = reply.send(result.map(|mut out| out.pop().expect("one output per item")));
            }
        }
    }
}
