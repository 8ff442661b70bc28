//! For the logic crate's tests: a store whose commits fail on demand, a
//! fresh embedded store, and shorthands for writes and their outcomes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use protocol::pb;

use super::sqlite::{Sqlite, Synchronous};
use super::{Backend, ConvRow, Pair, Recovered, SentKey, StoreError, StoreResult, WriteStore};
use super::{Notice, Revocation};
use crate::sequencer::{Outcome, WriteOp};

/// A shard whose commits fail while `fail` is set.
pub struct FailingCommit {
    pub inner: Box<dyn WriteStore>,
    pub fail: Arc<AtomicBool>,
}

impl WriteStore for FailingCommit {
    fn recover(&mut self) -> StoreResult<Recovered> {
        self.inner.recover()
    }
    fn begin(&mut self) -> StoreResult<()> {
        self.inner.begin()
    }
    fn commit(&mut self) -> StoreResult<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected commit failure".into()));
        }
        self.inner.commit()
    }
    fn rollback(&mut self) {
        self.inner.rollback()
    }
    fn find_sent(&mut self, keys: &[SentKey<'_>]) -> StoreResult<Vec<pb::Message>> {
        self.inner.find_sent(keys)
    }
    fn load_conversations(&mut self, keys: &[(u64, u64)]) -> StoreResult<Vec<ConvRow>> {
        self.inner.load_conversations(keys)
    }
    fn insert_messages(&mut self, messages: &[pb::Message]) -> StoreResult<()> {
        self.inner.insert_messages(messages)
    }
    fn put_conversations(&mut self, rows: &[&ConvRow]) -> StoreResult<()> {
        self.inner.put_conversations(rows)
    }
    fn put_profiles(&mut self, profiles: &[pb::Profile], updated_ms: u64) -> StoreResult<()> {
        self.inner.put_profiles(profiles, updated_ms)
    }
    fn put_revocations(&mut self, revocations: &[Revocation]) -> StoreResult<()> {
        self.inner.put_revocations(revocations)
    }
    fn revocations(&mut self) -> StoreResult<Vec<Revocation>> {
        self.inner.revocations()
    }
    fn put_notices(&mut self, notices: &[Notice]) -> StoreResult<()> {
        self.inner.put_notices(notices)
    }
    fn remove_notices(&mut self, notices: &[Notice]) -> StoreResult<()> {
        self.inner.remove_notices(notices)
    }
    fn total_unread(&mut self, owner: u64) -> StoreResult<u64> {
        self.inner.total_unread(owner)
    }
    fn last_seqs(&mut self, pairs: &[Pair]) -> StoreResult<Vec<(Pair, u64)>> {
        self.inner.last_seqs(pairs)
    }
}

pub fn send(from: u64, to: u64, id: &str) -> WriteOp {
    send_notifying(from, to, id, false)
}

/// A send that records an offline notice when `notify`.
pub fn send_notifying(from: u64, to: u64, id: &str, notify: bool) -> WriteOp {
    WriteOp::Send {
        from,
        to,
        client_msg_id: id.into(),
        content_type: 1,
        content: id.as_bytes().to_vec(),
        notify,
    }
}

pub fn sent(outcome: &Outcome) -> (u64, bool) {
    match outcome {
        Outcome::Sent { message, duplicate } => (message.seq, *duplicate),
        other => panic!("not a send: {other:?}"),
    }
}

/// A fresh SQLite store in a directory of its own (removed first), and the
/// directory, for the caller to remove.
pub fn temp_sqlite(name: &str) -> (PathBuf, Box<dyn WriteStore>) {
    let dir = std::env::temp_dir().join(format!("im-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Sqlite::open(&dir, Synchronous::Normal)
        .and_then(|s| s.writer())
        .expect("sqlite store");
    (dir, store)
}
