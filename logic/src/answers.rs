//! Answering a durable batch: count it, let the caches learn it, hand each
//! write's outcome back to the pipeline and ring its doorbell.
//!
//! Whichever thread sees a batch become durable answers it: the
//! group-commit thread when commits are durable by themselves (MySQL), the
//! flush thread behind the journal. The Redis caches move with it, since
//! they must learn a commit before anyone is told of it (a client then
//! reads its own writes from them), and that thread also serves the
//! readers' requests to rebuild a cache while it waits for work.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use runtime::doorbell::Bell;

use crate::cache::CacheWriter;
use crate::commit::Committed;
use crate::metrics::{Counter, LogicMetrics};
use crate::sequencer::{Applied, Outcome};
use crate::store::StoreError;

/// Where answered batches go: the pipeline's queue, and its doorbell, rung
/// after each batch.
pub struct Done<T> {
    pub queue: Sender<Committed<T>>,
    pub bell: Bell,
}

/// Answers committed batches: counts them, lets the caches learn them,
/// hands the outcomes back to the pipeline.
pub struct Answers<T> {
    pub metrics: Arc<LogicMetrics>,
    pub done: Done<T>,
    /// The Redis caches, when this thread keeps them (see `cache/mod.rs`).
    pub cache: Option<CacheWriter>,
}

impl<T> Answers<T> {
    /// Answers one durable batch (or its failure). `false`: nobody listens
    /// any more.
    pub fn answer(&mut self, tickets: Vec<T>, result: Result<Applied, StoreError>) -> bool {
        let committed: Committed<T> = match result {
            Ok(mut applied) => {
                count_committed(&self.metrics, &applied.outcomes);
                // The caches learn the commit before anyone is answered,
                // so a client reads its own writes from them.
                if let Some(cache) = self.cache.as_mut() {
                    cache.apply(&applied.changes, &applied.profiles);
                }
                let outcomes = std::mem::take(&mut applied.outcomes);
                tickets
                    .into_iter()
                    .zip(outcomes.into_iter().map(Ok))
                    .collect()
            }
            Err(e) => {
                self.metrics.add(Counter::StorageErrors, 1);
                if matches!(e, StoreError::DiskFull(_)) {
                    self.metrics.add(Counter::DiskFull, 1);
                }
                tickets.into_iter().map(|t| (t, Err(e.clone()))).collect()
            }
        };
        if self.done.queue.send(committed).is_err() {
            return false;
        }
        self.done.bell.ring();
        if let Some(cache) = self.cache.as_mut() {
            cache.rebuild_requested(None);
        }
        true
    }
}

/// Waits for the next job, serving cache rebuild requests meanwhile.
/// `None`: no more jobs will come.
pub fn next_job<J>(jobs: &Receiver<J>, mut cache: Option<&mut CacheWriter>) -> Option<J> {
    loop {
        let Some(cache) = cache.as_deref_mut() else {
            return jobs.recv().ok();
        };
        crossbeam_channel::select! {
            recv(jobs) -> job => return job.ok(),
            recv(cache.requests) -> owner => match owner {
                Ok(owner) => cache.rebuild_requested(Some(owner)),
                Err(_) => return jobs.recv().ok(),
            },
        }
    }
}

fn count_committed(metrics: &LogicMetrics, outcomes: &[Outcome]) {
    metrics.add(Counter::Batches, 1);
    metrics.add(Counter::CommittedWrites, outcomes.len() as u64);
    for outcome in outcomes {
        if let Outcome::Sent { duplicate, .. } = outcome {
            let counter = if *duplicate {
                Counter::Duplicates
            } else {
                Counter::MessagesStored
            };
            metrics.add(counter, 1);
        }
    }
}
