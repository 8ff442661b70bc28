//! The group-commit thread: batches of writes, one transaction each.
//!
//! Writes from every sender queue up while a commit is in progress; the next
//! batch takes everything queued (up to `group_commit_max`), optionally
//! waiting `group_commit_window_us` for more, and has the [`Sequencer`]
//! apply it in ONE transaction: one fsync for the whole batch. Every
//! caller's outcome comes back only once the batch is durable, so a
//! SendResp always means durable. On a store with a [`Flusher`] (the
//! journal) that wait happens on the flush thread (`flush.rs`), so the
//! fsync of one batch overlaps building the next; otherwise this thread
//! answers (`answers.rs`) itself.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use runtime::clock::unix_ms;

use crate::answers::{Answers, next_job};
use crate::cache::CacheWriter;
use crate::flush::{self, ToFlush};
use crate::sequencer::{Applied, Outcome, Sequencer, WriteOp};
use crate::store::{Flusher, StoreError, WriteStore};

/// One write and whatever the caller needs to answer it.
pub struct WriteJob<T> {
    pub op: WriteOp,
    pub ticket: T,
}

/// A batch's writes, answered: each caller's ticket and its outcome.
pub type Committed<T> = Vec<(T, Result<Outcome, StoreError>)>;

/// How batches are formed.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    /// Most writes in one transaction.
    pub max_batch: usize,
    /// After the first write of a batch, how long to wait for more when the
    /// queue is empty. Zero: take what is queued and go (batches still grow
    /// under load, because writes queue up during each commit).
    pub window: Duration,
}

/// Starts the writer thread. It ends when `jobs` is disconnected and
/// drained. With caches in `answers`, the thread that answers keeps them.
///
/// With a store that has a [`Flusher`] (the journal), answering moves to a
/// second thread, `im-store-flusher`: the writer commits a batch (written,
/// not yet durable) and goes on to the next while the flush thread waits
/// for the disk, then answers, batch after batch in commit order. Up to
/// `flush::QUEUE` batches wait for it; then the writer waits too.
pub fn spawn<T: Send + 'static>(
    mut store: Box<dyn WriteStore>,
    mut sequencer: Sequencer,
    policy: GroupCommit,
    jobs: Receiver<WriteJob<T>>,
    answers: Answers<T>,
) -> std::io::Result<JoinHandle<()>> {
    let mut finish = match store.flusher() {
        None => Finish::Here(Box::new(answers)),
        Some(flusher) => Finish::flush_thread(flusher, answers)?,
    };
    thread::Builder::new()
        .name("im-store-writer".into())
        .spawn(move || {
            let mut batch: Vec<WriteJob<T>> = Vec::with_capacity(policy.max_batch);
            while let Some(first) = next_job(&jobs, finish.cache()) {
                batch.push(first);
                fill_batch(&mut batch, &jobs, policy);
                let ops: Vec<&WriteOp> = batch.iter().map(|job| &job.op).collect();
                let started = Instant::now();
                let result = sequencer.apply(store.as_mut(), &ops, unix_ms());
                if let Err(e) = &result {
                    log::error!("commit of {} writes failed: {e}", batch.len());
                }
                let tickets = batch.drain(..).map(|job| job.ticket).collect();
                if !finish.committed(tickets, result, started) {
                    break;
                }
            }
            // Answer what waits for a flush, then let the store go.
            finish.stop();
            drop(store);
            log::debug!("writer stopped");
        })
}

/// Where a committed batch goes to be answered.
enum Finish<T> {
    /// Commits are durable: the writer answers them itself.
    Here(Box<Answers<T>>),
    /// The flush thread makes them durable and answers them.
    FlushThread {
        flusher: Arc<dyn Flusher>,
        queue: Sender<ToFlush<T>>,
        thread: JoinHandle<()>,
    },
}

impl<T: Send + 'static> Finish<T> {
    fn flush_thread(flusher: Arc<dyn Flusher>, answers: Answers<T>) -> std::io::Result<Self> {
        let (queue, thread) = flush::spawn(flusher.clone(), answers)?;
        Ok(Finish::FlushThread {
            flusher,
            queue,
            thread,
        })
    }

    /// The caches, if this thread keeps them.
    fn cache(&mut self) -> Option<&mut CacheWriter> {
        match self {
            Finish::Here(answers) => answers.cache.as_mut(),
            Finish::FlushThread { .. } => None,
        }
    }

    /// Takes a batch just committed, whose commit began at `started`.
    /// `false`: nobody listens any more.
    fn committed(
        &mut self,
        tickets: Vec<T>,
        result: Result<Applied, StoreError>,
        started: Instant,
    ) -> bool {
        match self {
            Finish::Here(answers) => {
                answers.metrics.commit.observe(started.elapsed());
                answers.answer(tickets, result)
            }
            Finish::FlushThread { flusher, queue, .. } => {
                let mark = flusher.mark();
                queue
                    .send(ToFlush {
                        mark,
                        tickets,
                        result,
                        started,
                    })
                    .is_ok()
            }
        }
    }

    fn stop(self) {
        if let Finish::FlushThread { queue, thread, .. } = self {
            drop(queue);
            if thread.join().is_err() {
                log::error!("the flush thread panicked");
            }
        }
    }
}

/// Adds what is queued to the batch, up to the policy's size and window.
fn fill_batch<T>(batch: &mut Vec<WriteJob<T>>, jobs: &Receiver<WriteJob<T>>, policy: GroupCommit) {
    let deadline = Instant::now() + policy.window;
    while batch.len() < policy.max_batch {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match jobs.recv_timeout(deadline - now) {
                    Ok(job) => batch.push(job),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        }
    }
}
