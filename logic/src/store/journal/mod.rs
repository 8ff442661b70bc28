//! The embedded store's journal: a batch is durable when its record is
//! appended and fsynced to `<data_dir>/journal/`, and SQLite catches up
//! behind it.
//!
//! Why: a SQLite commit rewrites every B-tree page the batch touched, in
//! full, into its WAL: about a hundred 4 KiB pages for a batch of sixty
//! messages in fifty conversations, and those page writes were more than
//! half of the writer's time (docs/benchmarks.md). A journal record is the
//! bytes of the batch (about 150 bytes a message) and one `fdatasync`. So:
//!
//! 1. The group-commit thread (`commit.rs`, `sequencer.rs`) runs each batch against a
//!    [`JournalStore`]: lookups read the [`pending::Pending`] overlay, then
//!    SQLite; the batch's writes become one [`file::Record`], appended on
//!    commit. The [`JournalFlusher`], on the writer's flush thread, then
//!    fdatasyncs it (with whatever the writer appended meanwhile, one sync
//!    for them all) while the writer goes on with the next batch. Only
//!    then is anyone answered, and only then does the record go on to the
//!    applier and count as `durable` for readers.
//! 2. The applier thread (`applier.rs`) writes records into SQLite, many per
//!    transaction, and records the last lsn it wrote in the same
//!    transaction (`journal_state`).
//! 3. Readers see only SQLite, so before a read the reader waits until the
//!    applier has reached every record journaled when the read began
//!    ([`WaitingReader`]): a client reads its own writes, and the wait is
//!    one applier commit at most.
//! 4. On start, records past SQLite's `applied_lsn` are replayed into it,
//!    then the journal starts empty. Segments the applier has passed are
//!    deleted as the writer goes.
//!
//! Durability, `synchronous = "full"`: a record is fdatasynced before its
//! batch is answered (and before any later batch is), and SQLite runs
//! with `synchronous = FULL`, so its `applied_lsn` never claims a record
//! that a power loss could take away.
//! `"normal"`: records are written but not fsynced, SQLite `NORMAL`; both
//! survive a crash of the process, not of the machine.

mod applier;
mod file;
mod pending;
mod priority;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use protocol::pb;

use self::file::{JournalFile, LogError, Record, Row, Tail};
use self::pending::Pending;
use self::priority::Priority;
use super::sqlite::{Sqlite, SqliteConn, Synchronous};
use super::{
    Backend, ConvRow, Flusher, Notice, Pair, ReadStore, Recovered, Revocation, SentKey, StoreError,
    StoreResult, WriteStore,
};

/// Records journaled and not yet in SQLite before the writer waits for the
/// applier: bounds the overlay's memory and the readers' wait.
const MAX_PENDING_RECORDS: usize = 2_048;

/// How long a read, or a writer held back by the applier, waits before
/// answering UNAVAILABLE.
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);

impl From<LogError> for StoreError {
    fn from(e: LogError) -> StoreError {
        match e {
            LogError::Io { ref source, .. } if file::is_disk_full(source) => {
                StoreError::DiskFull(e.to_string())
            }
            LogError::Io { .. } => StoreError::Unavailable(e.to_string()),
            LogError::Damaged(_) => StoreError::Corrupt(e.to_string()),
        }
    }
}

/// How far SQLite is, and the applier's scheduling, raised while anyone
/// waits for it to get further.
struct Applied {
    /// The last lsn SQLite holds.
    lsn: u64,
    priority: Priority,
}

/// The state the writer, the applier and the readers share.
pub struct Shared {
    /// The last lsn flushed: durable, and passed on to the applier.
    durable: AtomicU64,
    applied: Mutex<Applied>,
    caught_up: Condvar,
    stopping: AtomicBool,
    /// Tells the applier a reader is waiting: commit what you have.
    nudge: Sender<()>,
    /// Set while the applier's commits fail for a full (or read-only) disk:
    /// SQLite cannot catch up until space is freed.
    disk_full: Mutex<Option<String>>,
    /// Whether `disk_full` is set: what every batch and read checks,
    /// without taking the lock.
    is_disk_full: AtomicBool,
}

impl Shared {
    fn new(lsn: u64, nudge: Sender<()>) -> Shared {
        Shared {
            nudge,
            durable: AtomicU64::new(lsn),
            applied: Mutex::new(Applied {
                lsn,
                priority: Priority::default(),
            }),
            caught_up: Condvar::new(),
            stopping: AtomicBool::new(false),
            disk_full: Mutex::new(None),
            is_disk_full: AtomicBool::new(false),
        }
    }

    /// Waits until SQLite holds every record up to `lsn`, with the applier
    /// raised to its normal priority meanwhile (see priority.rs).
    fn wait_applied(&self, lsn: u64) -> StoreResult<()> {
        let deadline = Instant::now() + CATCH_UP_WAIT;
        let mut applied = self.applied.lock();
        if applied.lsn >= lsn {
            return Ok(());
        }
        let _ = self.nudge.try_send(());
        applied.priority.wait_begins();
        while applied.lsn < lsn {
            if self
                .caught_up
                .wait_until(&mut applied, deadline)
                .timed_out()
            {
                break;
            }
        }
        applied.priority.wait_ends();
        if applied.lsn < lsn {
            return Err(StoreError::Unavailable(format!(
                "SQLite is behind the journal (at {}, waiting for {lsn})",
                applied.lsn
            )));
        }
        Ok(())
    }

    fn applied(&self) -> u64 {
        self.applied.lock().lsn
    }

    /// What the applier last failed with, if the disk is full: writes are
    /// refused (they would pile up where nobody can read them) and reads
    /// stop waiting for the applier (they answer from what SQLite holds).
    fn disk_full(&self) -> Option<String> {
        if !self.is_disk_full.load(Ordering::Acquire) {
            return None;
        }
        self.disk_full.lock().clone()
    }

    /// The applier's last commit: failed for a full disk (`Some`), or not.
    fn set_disk_full(&self, why: Option<String>) {
        let mut state = self.disk_full.lock();
        match (&*state, &why) {
            (None, Some(why)) => log::error!(
                "disk full: SQLite cannot take the journal's records ({why}); writes are refused and reads answer from what SQLite holds until space is freed"
            ),
            (Some(_), None) => log::warn!("disk space back: SQLite is catching up, writes resume"),
            _ => {}
        }
        self.is_disk_full.store(why.is_some(), Ordering::Release);
        *state = why;
    }

    fn mark_applied(&self, records: &[Arc<Record>]) {
        let Some(last) = records.last() else {
            return;
        };
        self.applied.lock().lsn = last.lsn;
        self.caught_up.notify_all();
    }

    /// The applier thread's first call: it takes its place in the CPU queue.
    fn applier_started(&self) {
        self.applied.lock().priority.start();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// The embedded backend: SQLite behind the journal.
pub struct Journaled {
    sqlite: Sqlite,
    shared: Arc<Shared>,
    /// The journal's open end, until the writer takes it (there is one writer).
    log: Mutex<Option<(JournalFile, Receiver<()>)>>,
    dir: PathBuf,
}

impl Journaled {
    /// Opens the SQLite database in `data_dir`, replays what the journal
    /// holds beyond it, and starts an empty journal.
    pub fn open(data_dir: &Path, synchronous: Synchronous) -> StoreResult<Journaled> {
        let sqlite = Sqlite::open(data_dir, synchronous)?;
        let dir: PathBuf = data_dir.join("journal");
        std::fs::create_dir_all(&dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let mut conn = sqlite.conn()?;
        let applied = conn.journal_lsn()?;
        let records = file::read_all(&dir)?;
        let replay: Vec<Arc<Record>> = records
            .into_iter()
            .filter(|r| r.lsn > applied)
            .map(Arc::new)
            .collect();
        if let Some(first) = replay.first() {
            if first.lsn != applied + 1 {
                return Err(StoreError::Corrupt(format!(
                    "the journal starts at record {} but SQLite ends at {applied}: records are missing",
                    first.lsn
                )));
            }
            applier::apply(&mut conn, &replay)?;
            log::info!(
                "journal: replayed records {}..={} ({} messages) into SQLite",
                first.lsn,
                applied + replay.len() as u64,
                replay.iter().map(|r| r.messages.len()).sum::<usize>()
            );
        }
        let last = applied + replay.len() as u64;
        // SQLite holds everything now: the old segments can go.
        file::remove_all(&dir)?;
        let log = JournalFile::create(&dir, last + 1, synchronous == Synchronous::Full)?;
        let (nudge, nudges) = crossbeam_channel::bounded(1);
        Ok(Journaled {
            sqlite,
            shared: Arc::new(Shared::new(last, nudge)),
            log: Mutex::new(Some((log, nudges))),
            dir,
        })
    }
}

impl Journaled {
    /// The one writer (see `Backend::writer`).
    fn journal_store(&self) -> StoreResult<JournalStore> {
        let (log, nudges) = self
            .log
            .lock()
            .take()
            .ok_or_else(|| StoreError::Unavailable("the journal has one writer".into()))?;
        let (records, applier_rx) = crossbeam_channel::unbounded();
        let applier = applier::spawn(
            self.sqlite.conn()?,
            applier_rx,
            nudges,
            self.shared.clone(),
            self.dir.clone(),
        )
        .map_err(|e| StoreError::Unavailable(format!("cannot start the applier: {e}")))?;
        let last = self.shared.durable.load(Ordering::Acquire);
        let flusher = Arc::new(JournalFlusher {
            tail: log.tail(),
            shared: self.shared.clone(),
            unflushed: Mutex::new(VecDeque::new()),
            applier: Mutex::new(Some(records)),
            committed: AtomicU64::new(last),
        });
        Ok(JournalStore {
            log,
            reads: self.sqlite.conn()?,
            shared: self.shared.clone(),
            next_lsn: last + 1,
            pending: Pending::default(),
            record: None,
            flusher,
            applier: Some(applier),
        })
    }
}

impl Backend for Journaled {
    fn writer(&self) -> StoreResult<Box<dyn WriteStore>> {
        Ok(Box::new(self.journal_store()?))
    }

    fn reader(&self) -> StoreResult<Box<dyn ReadStore>> {
        Ok(Box::new(WaitingReader {
            inner: self.sqlite.conn()?,
            shared: self.shared.clone(),
        }))
    }
}

/// The writer's store: reads through the overlay, writes into the journal.
pub struct JournalStore {
    log: JournalFile,
    /// Lookups of what the overlay does not hold, in one read snapshot per
    /// batch, opened after the overlay forgot what the applier committed.
    reads: SqliteConn,
    shared: Arc<Shared>,
    next_lsn: u64,
    pending: Pending,
    /// The batch being built, between `begin` and `commit`.
    record: Option<Record>,
    flusher: Arc<JournalFlusher>,
    applier: Option<JoinHandle<()>>,
}

impl JournalStore {
    fn record(&mut self) -> StoreResult<&mut Record> {
        self.record
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("write outside a transaction".into()))
    }
}

impl WriteStore for JournalStore {
    fn recover(&mut self) -> StoreResult<Recovered> {
        // `open` replayed the journal: SQLite holds everything.
        self.shared.wait_applied(self.next_lsn - 1)?;
        self.reads.recover()
    }

    fn begin(&mut self) -> StoreResult<()> {
        if let Some(why) = self.shared.disk_full() {
            return Err(StoreError::DiskFull(format!(
                "SQLite cannot catch up with the journal: {why}"
            )));
        }
        if self.pending.len() >= MAX_PENDING_RECORDS {
            // Flush here too, so a store nobody else flushes still moves.
            self.flusher.flush(self.flusher.mark())?;
            let behind = (MAX_PENDING_RECORDS / 2) as u64;
            self.shared
                .wait_applied(self.next_lsn.saturating_sub(behind))?;
        }
        // First forget what SQLite holds, then open the snapshot that
        // holds it (see pending.rs for why this order).
        self.pending.forget_applied(self.shared.applied());
        self.reads.begin_snapshot()?;
        self.record = Some(Record {
            lsn: self.next_lsn,
            ..Record::default()
        });
        Ok(())
    }

    fn commit(&mut self) -> StoreResult<()> {
        let record = self
            .record
            .take()
            .ok_or_else(|| StoreError::Unavailable("commit outside a transaction".into()))?;
        self.reads.end_snapshot();
        if record.is_empty() {
            return Ok(());
        }
        let record = Arc::new(record);
        // Queued for the flusher before it is written: a flush that finds
        // it written finds it queued.
        self.flusher.unflushed.lock().push_back(record.clone());
        if let Err(e) = self.log.append(&record) {
            self.flusher.unflushed.lock().pop_back();
            return Err(e.into());
        }
        self.pending.add(record.clone());
        self.flusher.committed.store(record.lsn, Ordering::Release);
        self.next_lsn += 1;
        if let Err(e) = self.log.rotate_if_full(self.next_lsn) {
            log::error!("cannot start a new journal segment: {e}");
        }
        self.log.forget_applied(self.shared.applied());
        Ok(())
    }

    fn rollback(&mut self) {
        self.reads.end_snapshot();
        self.record = None;
    }

    fn flusher(&self) -> Option<Arc<dyn Flusher>> {
        Some(self.flusher.clone())
    }

    fn find_sent(&mut self, keys: &[SentKey<'_>]) -> StoreResult<Vec<pb::Message>> {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for key in keys {
            match self.pending.sent(key.from, key.client_msg_id) {
                Some(m) => found.push(m.clone()),
                None => missing.push(*key),
            }
        }
        if !missing.is_empty() {
            found.extend(self.reads.find_sent(&missing)?);
        }
        Ok(found)
    }

    fn load_conversations(&mut self, keys: &[(u64, u64)]) -> StoreResult<Vec<ConvRow>> {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for &(owner, peer) in keys {
            match self.pending.row(owner, peer) {
                Some(row) => found.push(row),
                None => missing.push((owner, peer)),
            }
        }
        if !missing.is_empty() {
            found.extend(self.reads.load_conversations(&missing)?);
        }
        Ok(found)
    }

    fn insert_messages(&mut self, messages: &[pb::Message]) -> StoreResult<()> {
        self.record()?.messages.extend_from_slice(messages);
        Ok(())
    }

    fn put_conversations(&mut self, rows: &[&ConvRow]) -> StoreResult<()> {
        let record = self.record()?;
        record.rows.extend(rows.iter().map(|r| Row::from(*r)));
        Ok(())
    }

    fn put_profiles(&mut self, profiles: &[pb::Profile], updated_ms: u64) -> StoreResult<()> {
        let record = self.record()?;
        record.profiles.extend_from_slice(profiles);
        record.time_ms = updated_ms;
        Ok(())
    }

    fn put_revocations(&mut self, revocations: &[Revocation]) -> StoreResult<()> {
        self.record()?.revocations.extend_from_slice(revocations);
        Ok(())
    }

    fn revocations(&mut self) -> StoreResult<Vec<Revocation>> {
        // Read at start, after `recover` waited for SQLite to hold the
        // replayed journal.
        self.reads.revocations()
    }

    fn put_notices(&mut self, notices: &[Notice]) -> StoreResult<()> {
        self.record()?.notices.extend_from_slice(notices);
        Ok(())
    }

    fn remove_notices(&mut self, notices: &[Notice]) -> StoreResult<()> {
        self.record()?.notices_done.extend_from_slice(notices);
        Ok(())
    }

    fn total_unread(&mut self, owner: u64) -> StoreResult<u64> {
        // Newest first: the open batch, then the overlay, then SQLite.
        let mut newer: HashMap<u64, ConvRow> =
            self.pending.rows_of(owner).map(|r| (r.peer, r)).collect();
        if let Some(record) = &self.record {
            for row in record.rows.iter().filter(|r| r.owner == owner) {
                newer.insert(row.peer, ConvRow::from(row));
            }
        }
        let mut unread: HashMap<u64, u64> = ReadStore::unread_by_peer(&mut self.reads, owner)?
            .into_iter()
            .collect();
        for (peer, row) in newer {
            if row.hidden {
                unread.remove(&peer);
            } else {
                unread.insert(peer, row.unread());
            }
        }
        Ok(unread.values().sum())
    }

    fn last_seqs(&mut self, pairs: &[Pair]) -> StoreResult<Vec<(Pair, u64)>> {
        let mut last: HashMap<Pair, u64> = self.reads.last_seqs(pairs)?.into_iter().collect();
        for pair in pairs {
            if let Some(seq) = self.pending.last_seq(pair.small, pair.big) {
                let entry = last.entry(*pair).or_insert(0);
                *entry = (*entry).max(seq);
            }
        }
        Ok(last.into_iter().collect())
    }
}

impl Drop for JournalStore {
    /// Flushes what is written and lets the applier finish it, so a clean
    /// stop leaves SQLite complete (a crash leaves it to the next start's
    /// replay).
    fn drop(&mut self) {
        if let Err(e) = self.flusher.flush(self.flusher.mark()) {
            log::error!("journal: last flush failed: {e}");
        }
        if let Some(applier) = self.applier.take() {
            self.shared.stopping.store(true, Ordering::Release);
            drop(self.flusher.applier.lock().take());
            if applier.join().is_err() {
                log::error!("the journal applier panicked");
            }
        }
    }
}

/// Makes journaled records durable and passes them on to the applier.
/// The writer queues each record as it appends it; whoever flushes (the
/// writer's flush thread) syncs everything written so far in one
/// fdatasync.
pub struct JournalFlusher {
    tail: Arc<Tail>,
    shared: Arc<Shared>,
    /// Records appended and not yet flushed, oldest first.
    unflushed: Mutex<VecDeque<Arc<Record>>>,
    /// The applier's queue (`None` once stopped); held while flushing, so
    /// flushes run one at a time and hand records on in order.
    applier: Mutex<Option<Sender<Arc<Record>>>>,
    /// The lsn of the writer's last committed record.
    committed: AtomicU64,
}

impl Flusher for JournalFlusher {
    fn mark(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    fn flush(&self, mark: u64) -> StoreResult<()> {
        if self.shared.durable.load(Ordering::Acquire) >= mark {
            return Ok(());
        }
        let applier = self.applier.lock();
        if self.shared.durable.load(Ordering::Acquire) >= mark {
            // Flushed by someone else while this one waited.
            return Ok(());
        }
        let written = self.tail.sync()?;
        let mut durable = None;
        {
            let mut unflushed = self.unflushed.lock();
            let synced = unflushed.iter().take_while(|r| r.lsn <= written).count();
            for record in unflushed.drain(..synced) {
                durable = Some(record.lsn);
                if let Some(applier) = applier.as_ref() {
                    // Unbounded: the writer's `begin` holds it back instead.
                    let _ = applier.send(record);
                }
            }
        }
        if let Some(lsn) = durable {
            self.shared.durable.store(lsn, Ordering::Release);
        }
        Ok(())
    }
}

/// A reader's connection: before each snapshot, waits until SQLite holds
/// everything journaled so far.
pub struct WaitingReader {
    inner: SqliteConn,
    shared: Arc<Shared>,
}

impl ReadStore for WaitingReader {
    fn begin_snapshot(&mut self) -> StoreResult<()> {
        // With the disk full SQLite cannot catch up: read what it holds
        // rather than wait for nothing (the records it lacks show once
        // space is freed; writes are refused meanwhile).
        if self.shared.disk_full().is_none() {
            self.shared
                .wait_applied(self.shared.durable.load(Ordering::Acquire))?;
        }
        self.inner.begin_snapshot()
    }

    fn end_snapshot(&mut self) {
        self.inner.end_snapshot()
    }

    fn conversation(&mut self, owner: u64, peer: u64) -> StoreResult<Option<ConvRow>> {
        self.inner.conversation(owner, peer)
    }

    fn messages_after(
        &mut self,
        pair: Pair,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<pb::Message>> {
        self.inner.messages_after(pair, after, limit)
    }

    fn messages_before(
        &mut self,
        pair: Pair,
        below: u64,
        above: u64,
        limit: usize,
    ) -> StoreResult<Vec<pb::Message>> {
        self.inner.messages_before(pair, below, above, limit)
    }

    fn message(&mut self, pair: Pair, seq: u64) -> StoreResult<Option<pb::Message>> {
        self.inner.message(pair, seq)
    }

    fn changed_since(&mut self, owner: u64, after: u64, limit: usize) -> StoreResult<Vec<ConvRow>> {
        self.inner.changed_since(owner, after, limit)
    }

    fn visible_by_recency(
        &mut self,
        owner: u64,
        below: u64,
        limit: usize,
    ) -> StoreResult<Vec<ConvRow>> {
        self.inner.visible_by_recency(owner, below, limit)
    }

    fn total_unread(&mut self, owner: u64) -> StoreResult<u64> {
        ReadStore::total_unread(&mut self.inner, owner)
    }

    fn unread_by_peer(&mut self, owner: u64) -> StoreResult<Vec<(u64, u64)>> {
        self.inner.unread_by_peer(owner)
    }

    fn conversations_with(&mut self, owner: u64, peers: &[u64]) -> StoreResult<Vec<ConvRow>> {
        self.inner.conversations_with(owner, peers)
    }

    fn profiles(&mut self, uids: &[u64]) -> StoreResult<Vec<pb::Profile>> {
        self.inner.profiles(uids)
    }

    fn notices(&mut self, after: u64, limit: usize) -> StoreResult<Vec<Notice>> {
        self.inner.notices(after, limit)
    }

    fn notice_count(&mut self) -> StoreResult<u64> {
        self.inner.notice_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("im-journaled-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn message(seq: u64) -> pb::Message {
        pb::Message {
            msg_id: 1000 + seq,
            from_uid: 1,
            to_uid: 2,
            seq,
            client_msg_id: format!("c{seq}"),
            content_type: 1,
            content: b"hi".to_vec(),
            server_time_ms: 5,
        }
    }

    fn row(owner: u64, peer: u64, last_seq: u64, version: u64) -> ConvRow {
        ConvRow {
            last_seq,
            last_msg_id: 1000 + last_seq,
            version,
            ..ConvRow::new(owner, peer)
        }
    }

    /// The seqs of conversation (1, 2) a new reader finds.
    fn seqs_seen_by_readers(store: &Journaled) -> Vec<u64> {
        let mut reader = store.reader().unwrap();
        reader.begin_snapshot().unwrap();
        let seqs = reader
            .messages_after(Pair::of(1, 2), 0, 10)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        reader.end_snapshot();
        seqs
    }

    /// What a crash leaves: records journaled (and answered) that SQLite
    /// never got. The next open must put them in SQLite.
    #[test]
    fn records_sqlite_never_got_are_replayed_on_open() {
        let dir = temp_dir("replay");
        drop(Journaled::open(&dir, Synchronous::Full).unwrap());
        let journal = dir.join("journal");
        file::remove_all(&journal).unwrap();
        let mut log = JournalFile::create(&journal, 1, true).unwrap();
        for lsn in 1..=3u64 {
            log.append(&Record {
                lsn,
                time_ms: 9,
                messages: vec![message(lsn)],
                rows: vec![
                    Row::from(&row(1, 2, lsn, lsn * 2 - 1)),
                    Row::from(&row(2, 1, lsn, lsn * 2)),
                ],
                profiles: Vec::new(),
                ..Default::default()
            })
            .unwrap();
        }
        drop(log);

        let store = Journaled::open(&dir, Synchronous::Full).unwrap();
        assert_eq!(seqs_seen_by_readers(&store), vec![1, 2, 3]);
        let mut reader = store.reader().unwrap();
        assert_eq!(reader.conversation(2, 1).unwrap(), Some(row(2, 1, 3, 6)));
        let mut writer = store.writer().unwrap();
        let recovered = writer.recover().unwrap();
        assert_eq!((recovered.max_msg_id, recovered.max_version), (1003, 6));
        // Replayed once: a second open finds nothing more to do.
        drop(writer);
        drop(store);
        let store = Journaled::open(&dir, Synchronous::Full).unwrap();
        let mut reader = store.reader().unwrap();
        assert_eq!(
            reader.messages_after(Pair::of(1, 2), 0, 10).unwrap().len(),
            3
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The writer sees its own journaled writes before the applier has
    /// stored them, and readers wait for them.
    #[test]
    fn writes_are_visible_to_the_writer_at_once_and_to_readers_after_the_wait() {
        let dir = temp_dir("overlay");
        let store = Journaled::open(&dir, Synchronous::Normal).unwrap();
        let mut writer = store.writer().unwrap();
        let mut hidden = row(1, 3, 7, 3);
        hidden.hidden = true;
        writer.begin().unwrap();
        writer.insert_messages(&[message(1)]).unwrap();
        writer
            .put_conversations(&[&row(1, 2, 1, 1), &row(2, 1, 1, 2), &hidden])
            .unwrap();
        // Inside the batch: its own rows count.
        assert_eq!(writer.total_unread(2).unwrap(), 1);
        writer.commit().unwrap();
        let flusher = writer.flusher().unwrap();
        let mark = flusher.mark();
        assert_eq!(mark, 1);

        writer.begin().unwrap();
        let key = SentKey {
            from: 1,
            to: 2,
            client_msg_id: "c1",
        };
        assert_eq!(writer.find_sent(&[key]).unwrap(), vec![message(1)]);
        assert_eq!(
            writer.load_conversations(&[(2, 1), (9, 9)]).unwrap(),
            vec![row(2, 1, 1, 2)]
        );
        assert_eq!(writer.total_unread(1).unwrap(), 1);
        assert_eq!(writer.total_unread(2).unwrap(), 1);
        writer.rollback();

        // Readers see only what is flushed: before, the batch is not
        // durable and not theirs to see.
        let mut reader = store.reader().unwrap();
        reader.begin_snapshot().unwrap();
        assert_eq!(reader.conversation(2, 1).unwrap(), None);
        reader.end_snapshot();
        flusher.flush(mark).unwrap();
        reader.begin_snapshot().unwrap();
        assert_eq!(reader.conversation(2, 1).unwrap(), Some(row(2, 1, 1, 2)));
        assert_eq!(ReadStore::total_unread(reader.as_mut(), 1).unwrap(), 1);
        reader.end_snapshot();
        drop(writer);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A dying disk: once an fdatasync fails, the batch it was for is
    /// refused, readers never see it, and every later write is refused
    /// until a restart, so nothing unsynced is ever acknowledged.
    #[test]
    fn a_failed_fdatasync_refuses_the_batch_and_every_later_one() {
        let dir = temp_dir("fsync-fails");
        let store = Journaled::open(&dir, Synchronous::Full).unwrap();
        let mut writer = store.journal_store().unwrap();
        let flusher = writer.flusher().unwrap();
        let batch = |writer: &mut JournalStore, seq: u64| -> StoreResult<()> {
            writer.begin()?;
            writer.insert_messages(&[message(seq)])?;
            writer.put_conversations(&[&row(1, 2, seq, seq * 2 - 1), &row(2, 1, seq, seq * 2)])?;
            writer.commit()
        };
        batch(&mut writer, 1).unwrap();
        flusher.flush(flusher.mark()).unwrap();

        writer.log.tail().fail_next_sync();
        batch(&mut writer, 2).unwrap();
        assert!(
            flusher.flush(flusher.mark()).is_err(),
            "batch 2 is not durable"
        );
        assert!(batch(&mut writer, 3).is_err(), "nothing is written after");
        assert!(flusher.flush(2).is_err(), "nor flushed");

        assert_eq!(
            seqs_seen_by_readers(&store),
            vec![1],
            "readers see only what was flushed"
        );
        drop(writer);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
