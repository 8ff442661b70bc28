//! Storage: what the logic tier keeps, and the two traits every backend
//! implements.
//!
//! The rows follow the design our users started from:
//!
//! - **messages**: one row per message, keyed by the conversation
//!   `(small_uid, big_uid)` and its `seq`, with `msg_id`, `direction` (which
//!   of the two sent it), `from_uid`, `client_msg_id`, `content_type`,
//!   `content`, `create_time`. A unique key on `(from_uid, client_msg_id)`
//!   makes dedup hold forever.
//! - **conversations** (the design's contacts): two rows per pair, one per
//!   side, owned by `owner_uid`: last seq and msg_id, read seq, the peer's
//!   read seq, deleted-up-to seq, hidden, updated time, and `version`, the
//!   sync cursor. They are written in the same transaction as the messages,
//!   so the list, the unread counts and the history never disagree.
//! - **profiles**.
//!
//! Writes go through one [`WriteStore`] on the writer thread, a batch per
//! transaction (see `commit.rs` and `sequencer.rs`); reads through [`ReadStore`]s on reader
//! threads (see `reader.rs`).

pub mod journal;
pub mod lease;
pub mod mysql;
pub mod sharded;
pub mod sqlite;
#[cfg(test)]
pub mod testing;

use std::sync::Arc;

use protocol::pb;

/// The two users of a conversation, smaller uid first: one key per pair
/// whoever sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pair {
    pub small: u64,
    pub big: u64,
}

impl Pair {
    pub fn of(a: u64, b: u64) -> Pair {
        Pair {
            small: a.min(b),
            big: a.max(b),
        }
    }
}

/// One side's row of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvRow {
    pub owner: u64,
    pub peer: u64,
    /// The conversation's latest seq (the same on both sides).
    pub last_seq: u64,
    pub last_msg_id: u64,
    /// How far the owner has read.
    pub read_seq: u64,
    /// How far the peer has read (the owner's read receipts).
    pub peer_read_seq: u64,
    /// History up to here is hidden from the owner (DeleteConversation).
    pub deleted_up_to: u64,
    /// Hidden from the owner's list until the next message.
    pub hidden: bool,
    pub updated_ms: u64,
    /// When this row last changed, on the node's change counter: the sync cursor.
    pub version: u64,
}

impl ConvRow {
    pub fn new(owner: u64, peer: u64) -> ConvRow {
        ConvRow {
            owner,
            peer,
            last_seq: 0,
            last_msg_id: 0,
            read_seq: 0,
            peer_read_seq: 0,
            deleted_up_to: 0,
            hidden: false,
            updated_ms: 0,
            version: 0,
        }
    }

    pub fn unread(&self) -> u64 {
        self.last_seq.saturating_sub(self.read_seq)
    }

    pub fn key(&self) -> (u64, u64) {
        (self.owner, self.peer)
    }

    /// The wire form, with the last message if the caller found it.
    pub fn to_wire(&self, last_message: Option<pb::Message>) -> pb::Conversation {
        pb::Conversation {
            peer_uid: self.peer,
            last_seq: self.last_seq,
            read_seq: self.read_seq,
            unread: self.unread(),
            peer_read_seq: self.peer_read_seq,
            last_message,
            updated_ms: self.updated_ms,
            deleted: self.hidden,
        }
    }
}

/// A user's tokens issued at or before `before_ms` no longer log in.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Revocation {
    #[prost(uint64, tag = "1")]
    pub uid: u64,
    #[prost(uint64, tag = "2")]
    pub before_ms: u64,
}

/// An offline notification in the outbox (`outbox/`): message `msg_id`,
/// seq `seq` of its pair, reached `to_uid` while none of their devices was
/// online. Recorded in the same transaction as the message; removed once a
/// receiver took it (or it expired).
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Notice {
    #[prost(uint64, tag = "1")]
    pub msg_id: u64,
    #[prost(uint64, tag = "2")]
    pub to_uid: u64,
    #[prost(uint64, tag = "3")]
    pub from_uid: u64,
    #[prost(uint64, tag = "4")]
    pub seq: u64,
    #[prost(uint64, tag = "5")]
    pub created_ms: u64,
}

/// What the writer needs to resume after a restart.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recovered {
    pub max_msg_id: u64,
    pub max_version: u64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the operation: the write
    /// did not happen. Clients get UNAVAILABLE and may retry.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The disk (or file system) is full or read-only: writes are refused
    /// until space is freed; reads go on. Clients get UNAVAILABLE.
    #[error("storage unavailable, disk full: {0}")]
    DiskFull(String),
    /// The data is not what the schema promises.
    #[error("storage corrupt: {0}")]
    Corrupt(String),
    /// The configuration names storage this store cannot use (found at
    /// open; `--check-config` finds what it can without the database).
    #[error("storage misconfigured: {0}")]
    Config(String),
    /// Another logic process took the writer's lease: this one's write was
    /// refused inside its transaction, and nothing of it is stored.
    #[error("fenced: {0}")]
    Fenced(String),
}

impl StoreError {
    /// What a client whose request failed on this is told: the one place
    /// a storage error becomes a wire code. Whatever the cause, the request
    /// did not happen and may be retried (with the same client_msg_id, a
    /// send is stored at most once).
    pub fn wire_error(&self) -> (protocol::ErrorCode, &'static str) {
        (
            protocol::ErrorCode::Unavailable,
            "storage unavailable, retry later",
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The writer thread's connection. Between `begin` and `commit` every call
/// is one transaction; an error anywhere means the caller rolls back and
/// the whole batch is refused.
pub trait WriteStore: Send {
    /// State to resume from: the highest msg_id and change version stored.
    fn recover(&mut self) -> StoreResult<Recovered>;
    fn begin(&mut self) -> StoreResult<()>;
    /// Ends the batch. On return it is durable, unless the store has a
    /// [`Flusher`]: then it is written, in order, and the next batch sees
    /// it, but it is durable only once flushed.
    fn commit(&mut self) -> StoreResult<()>;
    fn rollback(&mut self);
    /// The half of a store that makes commits durable on another thread,
    /// so the writer builds the next batch while the last one reaches the
    /// disk. `None`: `commit` is durable by itself.
    fn flusher(&self) -> Option<Arc<dyn Flusher>> {
        None
    }
    /// Messages already stored under these (from_uid, client_msg_id) keys.
    fn find_sent(&mut self, keys: &[SentKey<'_>]) -> StoreResult<Vec<pb::Message>>;
    /// The conversation rows that exist among these (owner, peer) keys.
    fn load_conversations(&mut self, keys: &[(u64, u64)]) -> StoreResult<Vec<ConvRow>>;
    fn insert_messages(&mut self, messages: &[pb::Message]) -> StoreResult<()>;
    /// Inserts or replaces these rows.
    fn put_conversations(&mut self, rows: &[&ConvRow]) -> StoreResult<()>;
    fn put_profiles(&mut self, profiles: &[pb::Profile], updated_ms: u64) -> StoreResult<()>;
    /// Records that each uid's tokens issued at or before its time (Unix
    /// ms) are revoked; a later time replaces an earlier one, never the
    /// reverse.
    fn put_revocations(&mut self, revocations: &[Revocation]) -> StoreResult<()>;
    /// Every revocation stored (read once, at start).
    fn revocations(&mut self) -> StoreResult<Vec<Revocation>>;
    /// Adds these notices to the outbox.
    fn put_notices(&mut self, notices: &[Notice]) -> StoreResult<()>;
    /// Takes these notices out of the outbox (absent ones are no error).
    fn remove_notices(&mut self, notices: &[Notice]) -> StoreResult<()>;
    /// Unread messages over the owner's visible conversations, as stored
    /// in the open transaction.
    fn total_unread(&mut self, owner: u64) -> StoreResult<u64>;
    /// The highest stored seq of each of these pairs that has messages.
    fn last_seqs(&mut self, pairs: &[Pair]) -> StoreResult<Vec<(Pair, u64)>>;
}

/// Makes a [`WriteStore`]'s commits durable, behind the writer (the
/// embedded journal's fdatasync).
pub trait Flusher: Send + Sync {
    /// Where the store's last commit ends; taken on the writer's thread
    /// right after `commit`.
    fn mark(&self) -> u64;
    /// Returns once everything up to `mark` is durable; one flush covers
    /// every commit written before it started. An error means those
    /// commits may be lost: nobody may be told they were stored.
    fn flush(&self, mark: u64) -> StoreResult<()>;
}

/// The dedup key of a send, with its recipient (which says where a sharded
/// store keeps the message).
#[derive(Debug, Clone, Copy)]
pub struct SentKey<'a> {
    pub from: u64,
    pub to: u64,
    pub client_msg_id: &'a str,
}

/// A reader thread's connection: committed data only.
pub trait ReadStore: Send {
    /// The reads until `end_snapshot` see one consistent state.
    fn begin_snapshot(&mut self) -> StoreResult<()>;
    fn end_snapshot(&mut self);
    fn conversation(&mut self, owner: u64, peer: u64) -> StoreResult<Option<ConvRow>>;
    /// Messages with `seq > after`, ascending, at most `limit`.
    fn messages_after(
        &mut self,
        pair: Pair,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<pb::Message>>;
    /// Messages with `above < seq < below`, descending, at most `limit`.
    fn messages_before(
        &mut self,
        pair: Pair,
        below: u64,
        above: u64,
        limit: usize,
    ) -> StoreResult<Vec<pb::Message>>;
    fn message(&mut self, pair: Pair, seq: u64) -> StoreResult<Option<pb::Message>>;
    /// The owner's rows with `version > after`, by version, at most `limit`.
    fn changed_since(&mut self, owner: u64, after: u64, limit: usize) -> StoreResult<Vec<ConvRow>>;
    /// The owner's visible rows with `last_msg_id < below`, newest first, at most `limit`.
    fn visible_by_recency(
        &mut self,
        owner: u64,
        below: u64,
        limit: usize,
    ) -> StoreResult<Vec<ConvRow>>;
    fn total_unread(&mut self, owner: u64) -> StoreResult<u64>;
    /// (peer, unread) of the owner's visible conversations with unread messages.
    fn unread_by_peer(&mut self, owner: u64) -> StoreResult<Vec<(u64, u64)>>;
    /// The owner's rows with these peers (rows that do not exist are absent).
    fn conversations_with(&mut self, owner: u64, peers: &[u64]) -> StoreResult<Vec<ConvRow>> {
        let mut rows = Vec::with_capacity(peers.len());
        for peer in peers {
            rows.extend(self.conversation(owner, *peer)?);
        }
        Ok(rows)
    }
    /// Stored profiles among `uids` (unknown uids are simply absent).
    fn profiles(&mut self, uids: &[u64]) -> StoreResult<Vec<pb::Profile>>;
    /// The outbox's notices with `msg_id > after`, by msg_id, at most `limit`.
    fn notices(&mut self, after: u64, limit: usize) -> StoreResult<Vec<Notice>>;
    /// How many notices the outbox holds.
    fn notice_count(&mut self) -> StoreResult<u64>;
}

/// Opens connections of one backend: one writer, any number of readers.
pub trait Backend: Send + Sync {
    fn writer(&self) -> StoreResult<Box<dyn WriteStore>>;
    fn reader(&self) -> StoreResult<Box<dyn ReadStore>>;
}

/// Rebuilds a message from its row: the sender and recipient follow from
/// the pair and the direction (0: small to big, 1: big to small).
#[allow(clippy::too_many_arguments)]
pub fn message_from_row(
    pair: Pair,
    seq: u64,
    msg_id: u64,
    direction: u8,
    client_msg_id: String,
    content_type: u32,
    content: Vec<u8>,
    create_time_ms: u64,
) -> pb::Message {
    let (from_uid, to_uid) = if direction == 0 {
        (pair.small, pair.big)
    } else {
        (pair.big, pair.small)
    };
    pb::Message {
        msg_id,
        from_uid,
        to_uid,
        seq,
        client_msg_id,
        content_type,
        content,
        server_time_ms: create_time_ms,
    }
}

/// The direction column for a message from `from_uid`.
pub fn direction(from_uid: u64, to_uid: u64) -> u8 {
    u8::from(from_uid > to_uid)
}
