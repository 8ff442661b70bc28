//! The flush thread: makes committed batches durable, then answers them.
//!
//! On a store with a [`Flusher`] (the journal's fdatasync), the
//! group-commit thread commits a batch (written, not yet durable) and goes
//! on to the next while this thread waits for the disk, then answers the
//! batch, batch after batch in commit order. A failed flush refuses its
//! batch (and the store refuses what follows): nobody is told a write was
//! stored that may be lost.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::answers::{Answers, next_job};
use crate::sequencer::Applied;
use crate::store::{Flusher, StoreError};

/// Most committed batches waiting for the flush thread.
pub const QUEUE: usize = 16;

/// A committed batch on its way to the flush thread.
pub struct ToFlush<T> {
    /// Where the store's commit of it ended (`Flusher::mark`).
    pub mark: u64,
    pub tickets: Vec<T>,
    pub result: Result<Applied, StoreError>,
    /// When the writer began its commit.
    pub started: Instant,
}

/// Starts the flush thread; it ends when the returned queue is dropped and
/// drained, or when nobody listens for answers any more.
pub fn spawn<T: Send + 'static>(
    flusher: Arc<dyn Flusher>,
    mut answers: Answers<T>,
) -> std::io::Result<(Sender<ToFlush<T>>, JoinHandle<()>)> {
    let (queue, batches) = crossbeam_channel::bounded(QUEUE);
    let thread = thread::Builder::new()
        .name("im-store-flusher".into())
        .spawn(move || flush_and_answer(&mut answers, flusher.as_ref(), &batches))?;
    Ok((queue, thread))
}

/// The flush thread: each batch is answered once the store has flushed
/// it; a failed flush refuses it (and the store refuses what follows).
fn flush_and_answer<T>(
    answers: &mut Answers<T>,
    flusher: &dyn Flusher,
    batches: &Receiver<ToFlush<T>>,
) {
    while let Some(batch) = next_job(batches, answers.cache.as_mut()) {
        let result = batch.result.and_then(|applied| {
            flusher
                .flush(batch.mark)
                .map(|()| applied)
                .inspect_err(|e| {
                    log::error!("flush of {} writes failed: {e}", batch.tickets.len());
                })
        });
        answers.metrics.commit.observe(batch.started.elapsed());
        if !answers.answer(batch.tickets, result) {
            break;
        }
    }
    log::debug!("flush thread stopped");
}
