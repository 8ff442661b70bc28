//! The writer thread: group commit, and the one place where seqs, msg_ids
//! and change versions are assigned.
//!
//! Writes from every sender queue up while a commit is in progress; the next
//! batch takes everything queued (up to `group_commit_max`), optionally
//! waiting `group_commit_window_us` for more, and applies it in ONE
//! transaction: one fsync for the whole batch. Every caller's outcome comes
//! back only once the batch is durable, so a SendResp always means durable.
//! On a store with a [`Flusher`] (the journal) that wait happens on a
//! second thread, so the fsync of one batch overlaps building the next.
//!
//! Seq assignment lives here, inside the transaction, after the dedup check
//! against storage: a seq is consumed only by a message that is really
//! inserted, so seqs have no gaps, and a failed commit takes its seqs back
//! with it (the cache of conversation rows only learns committed state).
//! This needs one writer per conversation: one writer thread per store (per
//! shard), which a single node has by construction.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use protocol::pb;

use crate::cache::{CacheWriter, RowChange};
use crate::doorbell::Bell;
use crate::ids::MsgIds;
use crate::metrics::{Counter, LogicMetrics};
use crate::store::{ConvRow, Flusher, Recovered, SentKey, StoreError, WriteStore};

/// A write, as the pipeline hands it over (already validated).
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Send {
        from: u64,
        to: u64,
        client_msg_id: String,
        content_type: u32,
        content: Vec<u8>,
    },
    /// Mark `owner`'s side of the conversation with `peer` read up to `seq`.
    Read { owner: u64, peer: u64, seq: u64 },
    /// Read up to the end, then hide the conversation and its history from `owner`.
    Delete { owner: u64, peer: u64 },
    SetProfile {
        uid: u64,
        nickname: String,
        avatar_url: String,
    },
}

/// What a committed write did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `duplicate`: the (from_uid, client_msg_id) was stored before; this is
    /// the original message.
    Sent {
        message: pb::Message,
        duplicate: bool,
    },
    Read(ReadOutcome),
    Deleted(ReadOutcome),
    ProfileSet,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReadOutcome {
    pub owner: u64,
    pub peer: u64,
    /// The read position after the request (the requested seq, clamped).
    pub seq: u64,
    /// Whether the read position moved (only then is anyone notified).
    pub changed: bool,
    pub unread: u64,
    pub total_unread: u64,
}

/// One write and whatever the caller needs to answer it.
pub struct WriteJob<T> {
    pub op: WriteOp,
    pub ticket: T,
}

pub type Committed<T> = Vec<(T, Result<Outcome, StoreError>)>;

/// The state the writer keeps between batches.
pub struct Sequencer {
    /// Committed conversation rows (both sides), so the hot path reads
    /// nothing. Bounded: cleared when it outgrows `row_cache`.
    rows: HashMap<(u64, u64), ConvRow>,
    row_cache: usize,
    /// The node's change counter: every row change takes the next value,
    /// which is the sync cursor.
    version: u64,
    ids: MsgIds,
}

/// What a committed batch did: each write's outcome, in order, and what
/// the caches must learn.
#[derive(Debug, Default)]
pub struct Applied {
    pub outcomes: Vec<Outcome>,
    pub changes: Vec<RowChange>,
    pub profiles: Vec<pb::Profile>,
}

/// A row as the batch sees it, and whether the batch changed it.
struct Staged {
    row: ConvRow,
    /// The row's unread count before the batch.
    unread_before: u64,
    dirty: bool,
    /// Whether the row exists (in storage, or created by this batch).
    exists: bool,
}

impl Sequencer {
    pub fn new(recovered: Recovered, node_id: u64, row_cache: usize) -> Sequencer {
        Sequencer {
            rows: HashMap::new(),
            row_cache,
            version: recovered.max_version,
            ids: MsgIds::new(node_id, recovered.max_msg_id),
        }
    }

    /// Applies `ops` in one transaction. All or nothing: on error nothing
    /// was stored and the cache is as before.
    pub fn apply(
        &mut self,
        store: &mut dyn WriteStore,
        ops: &[&WriteOp],
        now_ms: u64,
    ) -> Result<Applied, StoreError> {
        store.begin()?;
        let t0 = Instant::now();
        let result = self.apply_in_transaction(store, ops, now_ms);
        let t1 = Instant::now();
        let result = result.and_then(|done| store.commit().map(|()| done));
        log::debug!(
            "batch of {}: applied in {:?}, committed in {:?}",
            ops.len(),
            t1 - t0,
            t1.elapsed()
        );
        let ((outcomes, profiles), staged) = match result {
            Ok(done) => done,
            Err(e) => {
                store.rollback();
                // A sharded store may have committed part of the batch:
                // forget the cached rows, so they are loaded (and repaired)
                // from storage.
                self.rows.clear();
                return Err(e);
            }
        };
        if self.rows.len() + staged.len() > self.row_cache {
            self.rows.clear();
        }
        let mut changes = Vec::new();
        for (key, staged) in staged {
            if staged.dirty {
                changes.push(RowChange {
                    owner: staged.row.owner,
                    peer: staged.row.peer,
                    unread_before: staged.unread_before,
                    unread: staged.row.unread(),
                    hidden: staged.row.hidden,
                    last_msg_id: staged.row.last_msg_id,
                });
            }
            if staged.exists {
                self.rows.insert(key, staged.row);
            }
        }
        Ok(Applied {
            outcomes,
            changes,
            profiles,
        })
    }

    #[allow(clippy::type_complexity)]
    fn apply_in_transaction(
        &mut self,
        store: &mut dyn WriteStore,
        ops: &[&WriteOp],
        now_ms: u64,
    ) -> Result<
        (
            (Vec<Outcome>, Vec<pb::Profile>),
            HashMap<(u64, u64), Staged>,
        ),
        StoreError,
    > {
        // Dedup against storage, for the whole batch at once.
        let mut send_keys: Vec<SentKey<'_>> = Vec::new();
        let mut row_keys: HashSet<(u64, u64)> = HashSet::new();
        for op in ops {
            match op {
                WriteOp::Send {
                    from,
                    to,
                    client_msg_id,
                    ..
                } => {
                    send_keys.push(SentKey {
                        from: *from,
                        to: *to,
                        client_msg_id,
                    });
                    row_keys.insert((*from, *to));
                    row_keys.insert((*to, *from));
                }
                WriteOp::Read { owner, peer, .. } | WriteOp::Delete { owner, peer } => {
                    row_keys.insert((*owner, *peer));
                    row_keys.insert((*peer, *owner));
                }
                WriteOp::SetProfile { .. } => {}
            }
        }
        let mut sent: HashMap<(u64, String), pb::Message> = store
            .find_sent(&send_keys)?
            .into_iter()
            .map(|m| ((m.from_uid, m.client_msg_id.clone()), m))
            .collect();

        // Stage every row the batch touches: from the cache, else storage.
        let missing: Vec<(u64, u64)> = row_keys
            .iter()
            .filter(|k| !self.rows.contains_key(k))
            .copied()
            .collect();
        let mut staged: HashMap<(u64, u64), Staged> = HashMap::with_capacity(row_keys.len());
        for row in store.load_conversations(&missing)? {
            staged.insert(
                row.key(),
                Staged {
                    unread_before: row.unread(),
                    row,
                    dirty: false,
                    exists: true,
                },
            );
        }
        for key in row_keys {
            staged
                .entry(key)
                .or_insert_with(|| match self.rows.get(&key) {
                    Some(row) => Staged {
                        unread_before: row.unread(),
                        row: row.clone(),
                        dirty: false,
                        exists: true,
                    },
                    None => Staged {
                        unread_before: 0,
                        row: ConvRow::new(key.0, key.1),
                        dirty: false,
                        exists: false,
                    },
                });
        }

        let mut outcomes = Vec::with_capacity(ops.len());
        let mut inserts = Vec::new();
        let mut profiles = Vec::new();
        for op in ops {
            let outcome = match op {
                WriteOp::Send {
                    from,
                    to,
                    client_msg_id,
                    content_type,
                    content,
                } => {
                    let key = (*from, client_msg_id.clone());
                    if let Some(original) = sent.get(&key) {
                        Outcome::Sent {
                            message: original.clone(),
                            duplicate: true,
                        }
                    } else {
                        let seq = staged[&(*from, *to)]
                            .row
                            .last_seq
                            .max(staged[&(*to, *from)].row.last_seq)
                            + 1;
                        let message = pb::Message {
                            msg_id: self.ids.next(now_ms),
                            from_uid: *from,
                            to_uid: *to,
                            seq,
                            client_msg_id: client_msg_id.clone(),
                            content_type: *content_type,
                            content: content.clone(),
                            server_time_ms: now_ms,
                        };
                        let sender = self.stage(&mut staged, (*from, *to));
                        sender.last_seq = seq;
                        sender.last_msg_id = message.msg_id;
                        // Sending marks the sender's side read, with no notice.
                        sender.read_seq = seq;
                        sender.hidden = false;
                        sender.updated_ms = now_ms;
                        let recipient = self.stage(&mut staged, (*to, *from));
                        recipient.last_seq = seq;
                        recipient.last_msg_id = message.msg_id;
                        recipient.peer_read_seq = recipient.peer_read_seq.max(seq);
                        recipient.hidden = false;
                        recipient.updated_ms = now_ms;
                        inserts.push(message.clone());
                        sent.insert(key, message.clone());
                        Outcome::Sent {
                            message,
                            duplicate: false,
                        }
                    }
                }
                WriteOp::Read { owner, peer, seq } => {
                    Outcome::Read(self.mark_read(&mut staged, *owner, *peer, *seq, now_ms))
                }
                WriteOp::Delete { owner, peer } => {
                    let read = self.mark_read(&mut staged, *owner, *peer, u64::MAX, now_ms);
                    let current = &staged[&(*owner, *peer)];
                    if current.exists
                        && !(current.row.hidden
                            && current.row.deleted_up_to == current.row.last_seq)
                    {
                        let row = self.stage(&mut staged, (*owner, *peer));
                        row.deleted_up_to = row.last_seq;
                        row.hidden = true;
                        row.updated_ms = now_ms;
                    }
                    Outcome::Deleted(read)
                }
                WriteOp::SetProfile {
                    uid,
                    nickname,
                    avatar_url,
                } => {
                    profiles.push(pb::Profile {
                        uid: *uid,
                        nickname: nickname.clone(),
                        avatar_url: avatar_url.clone(),
                    });
                    Outcome::ProfileSet
                }
            };
            outcomes.push(outcome);
        }

        store.insert_messages(&inserts)?;
        let dirty: Vec<&ConvRow> = staged
            .values()
            .filter(|s| s.dirty)
            .map(|s| &s.row)
            .collect();
        store.put_conversations(&dirty)?;
        if !profiles.is_empty() {
            store.put_profiles(&profiles, now_ms)?;
        }
        for outcome in &mut outcomes {
            if let Outcome::Read(read) | Outcome::Deleted(read) = outcome {
                read.total_unread = store.total_unread(read.owner)?;
            }
        }
        Ok(((outcomes, profiles), staged))
    }

    /// Marks a staged row changed: it takes the next version and will be written.
    fn stage<'a>(
        &mut self,
        staged: &'a mut HashMap<(u64, u64), Staged>,
        key: (u64, u64),
    ) -> &'a mut ConvRow {
        self.version += 1;
        let entry = staged
            .get_mut(&key)
            .expect("every key the batch touches is staged");
        entry.dirty = true;
        entry.exists = true;
        entry.row.version = self.version;
        &mut entry.row
    }

    fn mark_read(
        &mut self,
        staged: &mut HashMap<(u64, u64), Staged>,
        owner: u64,
        peer: u64,
        seq: u64,
        now_ms: u64,
    ) -> ReadOutcome {
        let current = &staged[&(owner, peer)];
        let clamped = seq.min(current.row.last_seq);
        let changed = current.exists && clamped > current.row.read_seq;
        if changed {
            let row = self.stage(staged, (owner, peer));
            row.read_seq = clamped;
            row.updated_ms = now_ms;
            // The peer's conversation changed too: its read receipt.
            let peer_row = self.stage(staged, (peer, owner));
            peer_row.peer_read_seq = peer_row.peer_read_seq.max(clamped);
            peer_row.updated_ms = now_ms;
        }
        let row = &staged[&(owner, peer)].row;
        ReadOutcome {
            owner,
            peer,
            seq: row.read_seq,
            changed,
            unread: row.unread(),
            total_unread: 0,
        }
    }
}

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
/// drained. With `cache`, it also keeps the Redis caches (see `cache/mod.rs`).
///
/// With a store that has a [`Flusher`] (the journal), answering moves to a
/// second thread, `im-store-flusher`: the writer commits a batch (written,
/// not yet durable) and goes on to the next while the flush thread waits
/// for the disk, then answers, batch after batch in commit order. Up to
/// `FLUSH_QUEUE` batches wait for it; then the writer waits too.
pub fn spawn<T: Send + 'static>(
    metrics: Arc<LogicMetrics>,
    mut store: Box<dyn WriteStore>,
    mut sequencer: Sequencer,
    policy: GroupCommit,
    jobs: Receiver<WriteJob<T>>,
    done: Done<T>,
    cache: Option<CacheWriter>,
) -> std::io::Result<JoinHandle<()>> {
    let answers = Answers {
        metrics: metrics.clone(),
        done,
        cache,
    };
    let mut finish = match store.flusher() {
        None => Finish::Here(Box::new(answers)),
        Some(flusher) => Finish::flush_thread(flusher, answers)?,
    };
    thread::Builder::new()
        .name("im-store-writer".into())
        .spawn(move || {
            let mut batch: Vec<WriteJob<T>> = Vec::with_capacity(policy.max_batch);
            while let Some(first) = next(&jobs, finish.cache()) {
                batch.push(first);
                fill_batch(&mut batch, &jobs, policy);
                let ops: Vec<&WriteOp> = batch.iter().map(|job| &job.op).collect();
                let started = Instant::now();
                let result = sequencer.apply(store.as_mut(), &ops, unix_ms());
                metrics.add(Counter::CommitMicros, started.elapsed().as_micros() as u64);
                if let Err(e) = &result {
                    log::error!("commit of {} writes failed: {e}", batch.len());
                }
                let tickets = batch.drain(..).map(|job| job.ticket).collect();
                if !finish.committed(tickets, result) {
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
    fn flush_thread(flusher: Arc<dyn Flusher>, mut answers: Answers<T>) -> std::io::Result<Self> {
        let (queue, batches) = crossbeam_channel::bounded(FLUSH_QUEUE);
        let thread = {
            let flusher = flusher.clone();
            thread::Builder::new()
                .name("im-store-flusher".into())
                .spawn(move || answers.flush_and_answer(flusher.as_ref(), &batches))?
        };
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

    /// Takes a batch just committed. `false`: nobody listens any more.
    fn committed(&mut self, tickets: Vec<T>, result: Result<Applied, StoreError>) -> bool {
        match self {
            Finish::Here(answers) => answers.answer(tickets, result),
            Finish::FlushThread { flusher, queue, .. } => {
                let mark = flusher.mark();
                queue
                    .send(ToFlush {
                        mark,
                        tickets,
                        result,
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

/// Where answered batches go: the pipeline's queue, and its doorbell, rung
/// after each batch.
pub struct Done<T> {
    pub queue: Sender<Committed<T>>,
    pub bell: Bell,
}

/// Most committed batches waiting for the flush thread.
const FLUSH_QUEUE: usize = 16;

/// A committed batch on its way to the flush thread.
struct ToFlush<T> {
    /// Where the store's commit of it ended (`Flusher::mark`).
    mark: u64,
    tickets: Vec<T>,
    result: Result<Applied, StoreError>,
}

/// Answers committed batches: counts them, lets the caches learn them,
/// hands the outcomes back to the pipeline.
struct Answers<T> {
    metrics: Arc<LogicMetrics>,
    done: Done<T>,
    cache: Option<CacheWriter>,
}

impl<T> Answers<T> {
    /// The flush thread: each batch is answered once the store has flushed
    /// it; a failed flush refuses it (and the store refuses what follows).
    fn flush_and_answer(&mut self, flusher: &dyn Flusher, batches: &Receiver<ToFlush<T>>) {
        while let Some(batch) = next(batches, self.cache.as_mut()) {
            let started = Instant::now();
            let result = batch.result.and_then(|applied| {
                flusher
                    .flush(batch.mark)
                    .map(|()| applied)
                    .inspect_err(|e| {
                        log::error!("flush of {} writes failed: {e}", batch.tickets.len());
                    })
            });
            self.metrics
                .add(Counter::CommitMicros, started.elapsed().as_micros() as u64);
            if !self.answer(batch.tickets, result) {
                break;
            }
        }
        log::debug!("flush thread stopped");
    }

    /// Answers one durable batch (or its failure). `false`: nobody listens
    /// any more.
    fn answer(&mut self, tickets: Vec<T>, result: Result<Applied, StoreError>) -> bool {
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
fn next<J>(jobs: &Receiver<J>, mut cache: Option<&mut CacheWriter>) -> Option<J> {
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

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
