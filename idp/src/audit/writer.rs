//! The audit writer: a task that drains the records [`super::Audit::record`] queued and appends
//! them to the durable log in batches, so that a request never waits for the database.
//!
//! - A batch is what queued during `flush_interval` after its first record, up to `batch_size`
//!   (when a full batch is already queued, at once). The writer sleeps meanwhile, so recording an
//!   event never wakes it; a record waits at most the interval, unless the database falls behind.
//! - A database error is logged and the same batch retried with backoff; records keep queueing
//!   (the queue is unbounded: no event is dropped; its length is [`super::Audit::backlog`]).
//! - Every `checkpoint_interval`, if the head moved, and at shutdown, a signed checkpoint is
//!   written (see [`super::checkpoint`]).
//! - [`Command::Flush`] and [`Command::Shutdown`] travel in the same queue as the records: when
//!   they are acknowledged, every record queued before them is in the database.
//! - Group commit: a record queued by [`super::Audit::record_committed`] carries an
//!   acknowledgement, sent once the transaction holding it has committed. Such a record does not
//!   wait for `flush_interval`: it wakes the writer, which writes at once whatever has queued. While
//!   one batch is being written the next one queues, so under load each transaction carries the
//!   records of every request that arrived meanwhile, and a request waits about one commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::AuditRecord;
use super::checkpoint::Checkpointer;
use crate::store::{NewAuditRecord, SharedStore};

/// How the writer batches (from `[audit]`).
#[derive(Clone, Debug)]
pub struct WriterSettings {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub checkpoint_interval: Duration,
    /// Longest a request waits for its record's commit ([`super::Audit::record_committed`]).
    pub commit_timeout: Duration,
}

impl Default for WriterSettings {
    fn default() -> Self {
        WriterSettings {
            batch_size: 512,
            flush_interval: Duration::from_millis(20),
            checkpoint_interval: Duration::from_secs(60),
            commit_timeout: Duration::from_secs(5),
        }
    }
}

impl WriterSettings {
    pub fn from_config(config: &crate::config::AuditConfig) -> WriterSettings {
        WriterSettings {
            batch_size: config.batch_size,
            flush_interval: config.flush_interval,
            checkpoint_interval: config.checkpoint_interval,
            commit_timeout: config.commit_timeout,
        }
    }
}

pub(super) enum Command {
    /// A record, and for a committed record whom to tell once its transaction has committed.
    Record(Box<AuditRecord>, Option<oneshot::Sender<()>>),
    /// Acknowledged once every record queued before it is stored.
    Flush(oneshot::Sender<()>),
    /// Like `Flush`, then a final checkpoint, then the writer stops.
    Shutdown(oneshot::Sender<()>),
}

/// First retry delay after a database error, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// At shutdown the process is about to exit: retrying for ever would hang it. After this long the
/// records still unwritten are logged at error level (each is already in the `habilis::audit`
/// tracing output) and given up.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(30);

pub(super) struct Writer {
    pub store: SharedStore,
    pub rx: mpsc::UnboundedReceiver<Command>,
    pub backlog: Arc<AtomicUsize>,
    pub settings: WriterSettings,
    pub checkpointer: Option<Checkpointer>,
    /// Rung by committed records: cuts the batching sleep short (see the module comment).
    pub wake: Arc<Notify>,
}

/// The records of the batch being built, and the acknowledgements owed once it has committed.
struct Batch {
    records: Vec<NewAuditRecord>,
    committed: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn with_capacity(n: usize) -> Batch {
        Batch { records: Vec::with_capacity(n), committed: Vec::new() }
    }
    fn push(&mut self, record: Box<AuditRecord>, ack: Option<oneshot::Sender<()>>) {
        self.records.push(record.into_new());
        self.committed.extend(ack);
    }
    fn len(&self) -> usize {
        self.records.len()
    }
    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl Writer {
    pub async fn run(mut self) {
        let batch_size = self.settings.batch_size.max(1);
        let mut batch = Batch::with_capacity(batch_size);
        let period = self.settings.checkpoint_interval.max(Duration::from_secs(1));
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                biased;
                command = self.rx.recv() => command,
                _ = ticker.tick() => {
                    self.checkpoint().await;
                    continue;
                }
            };
            let Some(first) = first else {
                // Every `Audit` is gone: nothing more can arrive.
                self.finish(batch).await;
                return;
            };
            let mut waiter = None;
            match first {
                Command::Record(record, ack) => batch.push(record, ack),
                Command::Flush(ack) => waiter = Some((ack, false)),
                Command::Shutdown(ack) => waiter = Some((ack, true)),
            }
            if waiter.is_none() {
                waiter = self.gather(&mut batch, batch_size).await;
            }
            self.write(&mut batch, false).await;
            match waiter {
                Some((ack, false)) => {
                    let _ = ack.send(());
                }
                Some((ack, true)) => {
                    self.finish(batch).await;
                    let _ = ack.send(());
                    return;
                }
                None => {}
            }
        }
    }

    /// Completes the batch begun by a first record: sleeps until `flush_interval` after it, then
    /// takes what queued meanwhile, up to `batch_size`. While it sleeps, requests that record
    /// events only queue them: they never wake the writer (a wake-up per record, on the cores the
    /// requests need, was most of the durable log's cost). A flush or shutdown request queued
    /// meanwhile ends the batch and is returned (`true` for shutdown).
    async fn gather(&mut self, batch: &mut Batch, batch_size: usize) -> Option<(oneshot::Sender<()>, bool)> {
        // A full batch is already queued (a burst, or the database was slow), or a request waits
        // for this batch to commit: no need to wait. A committed record queued during the sleep
        // rings `wake` and ends it.
        if self.backlog.load(Ordering::Relaxed) < batch_size && batch.committed.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.flush_interval) => {}
                _ = self.wake.notified() => {}
            }
        }
        // Let the requests that are ready to run (on a busy core, the others of this burst) queue
        // their records first, so that one commit answers them all: without this, the writer woken
        // by the first committed record took it nearly alone, one transaction per request.
        tokio::task::yield_now().await;
        while batch.len() < batch_size {
            match self.rx.try_recv() {
                Ok(Command::Record(record, ack)) => batch.push(record, ack),
                Ok(Command::Flush(ack)) => return Some((ack, false)),
                Ok(Command::Shutdown(ack)) => return Some((ack, true)),
                // Empty: the rest waits for the next batch; disconnected: the next receive says so.
                Err(_) => break,
            }
        }
        None
    }

    /// Writes whatever is still queued, then a last checkpoint.
    async fn finish(&mut self, mut batch: Batch) {
        let batch_size = self.settings.batch_size.max(1);
        loop {
            while batch.len() < batch_size {
                match self.rx.try_recv() {
                    Ok(Command::Record(record, ack)) => batch.push(record, ack),
                    // Whoever waits on these is served: everything before them is being written.
                    Ok(Command::Flush(ack)) | Ok(Command::Shutdown(ack)) => {
                        self.write(&mut batch, true).await;
                        let _ = ack.send(());
                    }
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            self.write(&mut batch, true).await;
        }
        self.checkpoint().await;
    }

    /// Appends `batch` (emptying it), retrying on error; see [`SHUTDOWN_PATIENCE`]. The requests
    /// waiting for it are answered once it has committed; when it is given up at shutdown, their
    /// acknowledgements are dropped, so they learn that their record is not durable.
    async fn write(&mut self, batch: &mut Batch, shutting_down: bool) {
        if batch.is_empty() {
            return;
        }
        let mut committed = false;
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1u32;
        loop {
            match self.store.audit().append(&batch.records).await {
                Ok(stored) => {
                    if attempt > 1 {
                        tracing::info!(records = stored.len(), attempt, "audit records written after a retry");
                    }
                    committed = true;
                    break;
                }
                Err(e) if shutting_down && started.elapsed() >= SHUTDOWN_PATIENCE => {
                    tracing::error!(
                        error = %e,
                        records = batch.len(),
                        "giving up writing audit records at shutdown: they are only in the habilis::audit log output"
                    );
                    for record in batch.records.iter() {
                        tracing::error!(target: "habilis::audit", event = %record.event, time = record.time,
                            details = %record.details, "audit record not written to the durable log");
                    }
                    break;
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        records = batch.len(),
                        queued = self.backlog.load(Ordering::Relaxed),
                        attempt,
                        retry_in_ms = backoff.as_millis() as u64,
                        "writing audit records failed; they stay queued and are retried"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
            }
        }
        self.backlog.fetch_sub(batch.len(), Ordering::Relaxed);
        batch.records.clear();
        for ack in batch.committed.drain(..) {
            if committed {
                let _ = ack.send(());
            }
        }
    }

    async fn checkpoint(&mut self) {
        if let Some(checkpointer) = self.checkpointer.as_mut()
            && let Err(e) = checkpointer.checkpoint(crate::unix_now()).await
        {
            tracing::error!(error = %e, "writing an audit checkpoint failed; the next interval tries again");
        }
    }
}
