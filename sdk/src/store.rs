//! The device's own copy of its chats, in SQLite at a path the app gives.
//!
//! Four things live here, each surviving an app restart:
//! - the **outbox**: a send is a row (with its `client_msg_id`) before it
//!   is ever on the wire, and stays pending until a `send_resp` or a
//!   permanent error, so a resend after any failure carries the same id
//!   and the server's dedup makes it exactly once;
//! - **messages** by conversation, keyed by `(peer, seq)`: whatever mix of
//!   pushes, syncs and history pages brings a message, it is stored once;
//! - **conversations**: positions (`last_seq`, `read_seq`, the peer's read
//!   position) and `complete_seq`, up to which every message is stored, so
//!   that a gap is a number, not a scan; and reads/deletes made offline,
//!   still to be told to the server;
//! - the **sync cursor**.
//!
//! Every write is one transaction in WAL mode with `synchronous=FULL`: a
//! row the app was told about is on disk.

use std::path::Path;

use protocol::pb;
use rusqlite::{Connection, OptionalExtension, params};

use crate::{Conversation, Message, Outgoing, SendState};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    local_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    client_msg_id TEXT    NOT NULL UNIQUE,
    to_uid        INTEGER NOT NULL,
    content_type  INTEGER NOT NULL,
    content       BLOB    NOT NULL,
    created_ms    INTEGER NOT NULL,
    state         INTEGER NOT NULL,   -- 0 pending, 1 sent, 2 failed
    error_code    INTEGER NOT NULL DEFAULT 0,
    msg_id        INTEGER NOT NULL DEFAULT 0,
    seq           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, local_id);
CREATE TABLE IF NOT EXISTS messages (
    peer_uid       INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    msg_id         INTEGER NOT NULL,
    from_uid       INTEGER NOT NULL,
    to_uid         INTEGER NOT NULL,
    client_msg_id  TEXT    NOT NULL,
    content_type   INTEGER NOT NULL,
    content        BLOB    NOT NULL,
    server_time_ms INTEGER NOT NULL,
    PRIMARY KEY (peer_uid, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conversations (
    peer_uid      INTEGER PRIMARY KEY,
    last_seq      INTEGER NOT NULL DEFAULT 0,
    read_seq      INTEGER NOT NULL DEFAULT 0,
    read_told     INTEGER NOT NULL DEFAULT 0,  -- read_seq the server has confirmed
    peer_read_seq INTEGER NOT NULL DEFAULT 0,
    complete_seq  INTEGER NOT NULL DEFAULT 0,  -- every message up to here is stored
    hidden_seq    INTEGER NOT NULL DEFAULT 0,  -- deleted by the user up to here
    delete_owed   INTEGER NOT NULL DEFAULT 0,  -- a delete the server has not confirmed
    updated_ms    INTEGER NOT NULL DEFAULT 0
);
";

const CURSOR: &str = "sync_cursor";

#[derive(Debug, thiserror::Error)]
#[error("local store: {0}")]
pub struct StoreError(#[from] rusqlite::Error);

pub struct Store {
    db: Connection,
    me: u64,
}

/// A conversation's positions, as the engine needs them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Positions {
    pub last_seq: u64,
    pub complete_seq: u64,
}

impl Store {
    /// Opens (or creates) the store of user `me` at `path`.
    pub fn open(path: &Path, me: u64) -> Result<Store, StoreError> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(SCHEMA)?;
        Ok(Store { db, me })
    }

    pub fn cursor(&self) -> Result<u64, StoreError> {
        let value: Option<i64> = self
            .db
            .query_row("SELECT value FROM meta WHERE key = ?1", [CURSOR], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(value.unwrap_or(0) as u64)
    }

    pub fn set_cursor(&self, cursor: u64) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![CURSOR, cursor as i64],
        )?;
        Ok(())
    }

    // ---- the outbox ----

    /// A new send, pending, durable before this returns.
    pub fn enqueue(
        &self,
        client_msg_id: &str,
        to_uid: u64,
        content_type: u32,
        content: &[u8],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO outbox (client_msg_id, to_uid, content_type, content, created_ms, state)
             VALUES (?1, ?2, ?3, ?4, ?5, 0)",
            params![
                client_msg_id,
                to_uid as i64,
                content_type,
                content,
                now_ms as i64
            ],
        )?;
        Ok(())
    }

    /// The oldest pending send.
    pub fn next_pending(&self) -> Result<Option<Outgoing>, StoreError> {
        Ok(self
            .db
            .query_row(
                &format!("{OUTGOING} WHERE state = 0 ORDER BY local_id LIMIT 1"),
                [],
                outgoing,
            )
            .optional()?)
    }

    /// Sends not yet acknowledged, and those that failed, oldest first.
    pub fn unsent(&self) -> Result<Vec<Outgoing>, StoreError> {
        let mut statement = self
            .db
            .prepare_cached(&format!("{OUTGOING} WHERE state <> 1 ORDER BY local_id"))?;
        let rows = statement.query_map([], outgoing)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The server accepted `client_msg_id` as `message`: the send is done
    /// and the message is stored in its conversation, in one transaction.
    /// Returns whether the message is new to the store.
    pub fn sent(&mut self, message: &pb::Message) -> Result<bool, StoreError> {
        let tx = self.db.transaction()?;
        tx.execute(
            "UPDATE outbox SET state = 1, msg_id = ?2, seq = ?3 WHERE client_msg_id = ?1",
            params![
                message.client_msg_id,
                message.msg_id as i64,
                message.seq as i64
            ],
        )?;
        let new = insert(&tx, self.me, message)?;
        tx.commit()?;
        Ok(new)
    }

    /// A permanent refusal: the send is failed with the wire code.
    pub fn failed(&self, client_msg_id: &str, code: i32) -> Result<(), StoreError> {
        self.db.execute(
            "UPDATE outbox SET state = 2, error_code = ?2 WHERE client_msg_id = ?1",
            params![client_msg_id, code],
        )?;
        Ok(())
    }

    // ---- messages ----

    /// Stores messages of one conversation (any order, any repeats) in
    /// one transaction; returns the new ones in seq order.
    pub fn receive(&mut self, messages: &[pb::Message]) -> Result<Vec<Message>, StoreError> {
        let tx = self.db.transaction()?;
        let mut new = Vec::new();
        for message in messages {
            if insert(&tx, self.me, message)? {
                new.push(Message::from_pb(self.me, message));
            }
        }
        tx.commit()?;
        new.sort_by_key(|m| (m.peer_uid, m.seq));
        Ok(new)
    }

    pub fn positions(&self, peer: u64) -> Result<Positions, StoreError> {
        Ok(self
            .db
            .query_row(
                "SELECT last_seq, complete_seq FROM conversations WHERE peer_uid = ?1",
                [peer as i64],
                |r| {
                    Ok(Positions {
                        last_seq: r.get::<_, i64>(0)? as u64,
                        complete_seq: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    /// Up to `limit` stored messages with `peer` before `before_seq` (0:
    /// the latest), in seq order.
    pub fn history(
        &self,
        peer: u64,
        before_seq: u64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let before = if before_seq == 0 {
            i64::MAX
        } else {
            before_seq as i64
        };
        let mut statement = self.db.prepare_cached(&format!(
            "{MESSAGE} WHERE peer_uid = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
        ))?;
        let rows =
            statement.query_map(params![peer as i64, before, limit], |r| message(r, self.me))?;
        let mut messages: Vec<Message> = rows.collect::<Result<_, _>>()?;
        messages.reverse();
        Ok(messages)
    }

    // ---- conversations ----

    /// What the server says of a conversation (sync): positions only move
    /// forward; a delete hides the stored history up to its `last_seq`.
    pub fn merge(&mut self, conversation: &pb::Conversation) -> Result<(), StoreError> {
        let tx = self.db.transaction()?;
        let peer = conversation.peer_uid as i64;
        ensure(&tx, peer)?;
        tx.execute(
            "UPDATE conversations SET
                 last_seq = MAX(last_seq, ?2),
                 read_seq = MAX(read_seq, ?3),
                 read_told = MAX(read_told, ?3),
                 peer_read_seq = MAX(peer_read_seq, ?4),
                 updated_ms = MAX(updated_ms, ?5)
             WHERE peer_uid = ?1",
            params![
                peer,
                conversation.last_seq as i64,
                conversation.read_seq as i64,
                conversation.peer_read_seq as i64,
                conversation.updated_ms as i64
            ],
        )?;
        if conversation.deleted {
            hide(&tx, peer, conversation.last_seq as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every message up to `seq` of the conversation is stored (a history
    /// pull that came back complete, even if empty: hidden or none).
    pub fn complete_to(&self, peer: u64, seq: u64) -> Result<(), StoreError> {
        ensure(&self.db, peer as i64)?;
        self.db.execute(
            "UPDATE conversations SET complete_seq = MAX(complete_seq, ?2) WHERE peer_uid = ?1",
            params![peer as i64, seq as i64],
        )?;
        Ok(())
    }

    /// A read position: `reader` (me, on any device, or the peer) has read
    /// the conversation with `peer` up to `seq`. `told`: the server already
    /// knows (a notice), else it is owed to the server.
    pub fn read(&self, peer: u64, reader: u64, seq: u64, told: bool) -> Result<(), StoreError> {
        ensure(&self.db, peer as i64)?;
        let sql = if reader != self.me {
            "UPDATE conversations SET peer_read_seq = MAX(peer_read_seq, ?2) WHERE peer_uid = ?1"
        } else if told {
            "UPDATE conversations SET read_seq = MAX(read_seq, MIN(?2, last_seq)),
                 read_told = MAX(read_told, MIN(?2, last_seq)) WHERE peer_uid = ?1"
        } else {
            "UPDATE conversations SET read_seq = MAX(read_seq, MIN(?2, last_seq)) WHERE peer_uid = ?1"
        };
        self.db.execute(sql, params![peer as i64, seq as i64])?;
        Ok(())
    }

    /// Read positions the server has not confirmed: `(peer, seq)`.
    pub fn reads_owed(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut statement = self.db.prepare_cached(
            "SELECT peer_uid, read_seq FROM conversations WHERE read_seq > read_told AND delete_owed = 0",
        )?;
        let rows = statement.query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The user deleted the conversation: hidden here now, owed to the server.
    pub fn delete(&mut self, peer: u64) -> Result<(), StoreError> {
        let tx = self.db.transaction()?;
        ensure(&tx, peer as i64)?;
        tx.execute(
            "UPDATE conversations SET delete_owed = 1, read_seq = last_seq WHERE peer_uid = ?1",
            [peer as i64],
        )?;
        hide(&tx, peer as i64, i64::MAX)?;
        tx.commit()?;
        Ok(())
    }

    pub fn deletes_owed(&self) -> Result<Vec<u64>, StoreError> {
        let mut statement = self
            .db
            .prepare_cached("SELECT peer_uid FROM conversations WHERE delete_owed = 1")?;
        let rows = statement.query_map([], |r| Ok(r.get::<_, i64>(0)? as u64))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delete_told(&self, peer: u64) -> Result<(), StoreError> {
        self.db.execute(
            "UPDATE conversations SET delete_owed = 0, read_told = read_seq WHERE peer_uid = ?1",
            [peer as i64],
        )?;
        Ok(())
    }

    /// Visible conversations (with a message not hidden), latest first.
    pub fn conversations(&self) -> Result<Vec<Conversation>, StoreError> {
        self.visible(None)
    }

    pub fn conversation(&self, peer: u64) -> Result<Option<Conversation>, StoreError> {
        Ok(self.visible(Some(peer))?.pop())
    }

    /// Visible conversations, all or the one with `peer`.
    fn visible(&self, peer: Option<u64>) -> Result<Vec<Conversation>, StoreError> {
        let mut statement = self.db.prepare_cached(
            "SELECT c.peer_uid, c.last_seq, c.read_seq, c.peer_read_seq, c.updated_ms
             FROM conversations c
             WHERE c.last_seq > c.hidden_seq AND (?1 IS NULL OR c.peer_uid = ?1)
             ORDER BY c.updated_ms DESC, c.peer_uid",
        )?;
        let rows = statement.query_map([peer.map(|p| p as i64)], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, i64>(4)? as u64,
            ))
        })?;
        let rows: Vec<_> = rows.collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(
                |(peer_uid, last_seq, read_seq, peer_read_seq, updated_ms)| {
                    Ok(Conversation {
                        peer_uid,
                        last_seq,
                        read_seq,
                        unread: last_seq.saturating_sub(read_seq),
                        peer_read_seq,
                        last_message: self.history(peer_uid, 0, 1)?.pop(),
                        updated_ms,
                    })
                },
            )
            .collect()
    }

    pub fn total_unread(&self) -> Result<u64, StoreError> {
        let total: i64 = self.db.query_row(
            "SELECT COALESCE(SUM(last_seq - read_seq), 0) FROM conversations WHERE last_seq > hidden_seq",
            [],
            |r| r.get(0),
        )?;
        Ok(total.max(0) as u64)
    }
}

/// Stores one message if new, moving its conversation's positions: a
/// message I sent marks my side read up to it (as the server does).
fn insert(db: &Connection, me: u64, message: &pb::Message) -> Result<bool, rusqlite::Error> {
    let peer = Message::peer_of(me, message) as i64;
    ensure(db, peer)?;
    let hidden: i64 = db.query_row(
        "SELECT hidden_seq FROM conversations WHERE peer_uid = ?1",
        [peer],
        |r| r.get(0),
    )?;
    if message.seq as i64 <= hidden {
        return Ok(false);
    }
    let new = db.execute(
        "INSERT OR IGNORE INTO messages (peer_uid, seq, msg_id, from_uid, to_uid, client_msg_id,
             content_type, content, server_time_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            peer,
            message.seq as i64,
            message.msg_id as i64,
            message.from_uid as i64,
            message.to_uid as i64,
            message.client_msg_id,
            message.content_type,
            message.content,
            message.server_time_ms as i64
        ],
    )? == 1;
    let mine = message.from_uid == me;
    db.execute(
        "UPDATE conversations SET
             last_seq = MAX(last_seq, ?2),
             read_seq = CASE WHEN ?3 THEN MAX(read_seq, ?2) ELSE read_seq END,
             read_told = CASE WHEN ?3 THEN MAX(read_told, ?2) ELSE read_told END,
             updated_ms = MAX(updated_ms, ?4)
         WHERE peer_uid = ?1",
        params![
            peer,
            message.seq as i64,
            mine,
            message.server_time_ms as i64
        ],
    )?;
    // Move complete_seq over every stored message that now follows it.
    let mut complete: i64 = db.query_row(
        "SELECT complete_seq FROM conversations WHERE peer_uid = ?1",
        [peer],
        |r| r.get(0),
    )?;
    let mut next = db.prepare_cached("SELECT 1 FROM messages WHERE peer_uid = ?1 AND seq = ?2")?;
    while next.exists(params![peer, complete + 1])? {
        complete += 1;
    }
    db.execute(
        "UPDATE conversations SET complete_seq = ?2 WHERE peer_uid = ?1",
        params![peer, complete],
    )?;
    Ok(new)
}

fn ensure(db: &Connection, peer: i64) -> Result<(), rusqlite::Error> {
    db.execute(
        "INSERT OR IGNORE INTO conversations (peer_uid) VALUES (?1)",
        [peer],
    )?;
    Ok(())
}

/// Hides a conversation's history up to `up_to` (its last_seq at most).
fn hide(db: &Connection, peer: i64, up_to: i64) -> Result<(), rusqlite::Error> {
    db.execute(
        "UPDATE conversations SET hidden_seq = MAX(hidden_seq, MIN(?2, last_seq)),
             complete_seq = MAX(complete_seq, MIN(?2, last_seq)),
             read_seq = MAX(read_seq, MIN(?2, last_seq))
         WHERE peer_uid = ?1",
        params![peer, up_to],
    )?;
    db.execute(
        "DELETE FROM messages WHERE peer_uid = ?1
         AND seq <= (SELECT hidden_seq FROM conversations WHERE peer_uid = ?1)",
        [peer],
    )?;
    Ok(())
}

const OUTGOING: &str = "SELECT client_msg_id, to_uid, content_type, content, state, error_code,
     msg_id, seq, created_ms FROM outbox";

fn outgoing(r: &rusqlite::Row<'_>) -> rusqlite::Result<Outgoing> {
    let state = match r.get::<_, i64>(4)? {
        0 => SendState::Pending,
        1 => SendState::Sent {
            msg_id: r.get::<_, i64>(6)? as u64,
            seq: r.get::<_, i64>(7)? as u64,
        },
        _ => SendState::Failed {
            code: r.get::<_, i32>(5)?,
        },
    };
    Ok(Outgoing {
        client_msg_id: r.get(0)?,
        to_uid: r.get::<_, i64>(1)? as u64,
        content_type: r.get(2)?,
        content: r.get(3)?,
        state,
        created_ms: r.get::<_, i64>(8)? as u64,
    })
}

const MESSAGE: &str = "SELECT msg_id, from_uid, to_uid, seq, client_msg_id, content_type,
     content, server_time_ms FROM messages";

fn message(r: &rusqlite::Row<'_>, me: u64) -> rusqlite::Result<Message> {
    let message = pb::Message {
        msg_id: r.get::<_, i64>(0)? as u64,
        from_uid: r.get::<_, i64>(1)? as u64,
        to_uid: r.get::<_, i64>(2)? as u64,
        seq: r.get::<_, i64>(3)? as u64,
        client_msg_id: r.get(4)?,
        content_type: r.get(5)?,
        content: r.get(6)?,
        server_time_ms: r.get::<_, i64>(7)? as u64,
    };
    Ok(Message::from_pb(me, &message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, from: u64, to: u64) -> pb::Message {
        pb::Message {
            msg_id: 100 + seq,
            from_uid: from,
            to_uid: to,
            seq,
            client_msg_id: format!("c{seq}"),
            content_type: 1,
            content: vec![seq as u8],
            server_time_ms: seq,
        }
    }

    fn store() -> (Store, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "im-sdk-store-{}-{:?}.db",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        (Store::open(&path, 1).unwrap(), path)
    }

    #[test]
    fn a_message_is_stored_once_and_completes_the_conversation_in_order() {
        let (mut store, path) = store();
        assert_eq!(store.receive(&[msg(2, 2, 1)]).unwrap().len(), 1);
        assert_eq!(
            store.positions(2).unwrap().complete_seq,
            0,
            "a gap before 2"
        );
        let new = store
            .receive(&[msg(2, 2, 1), msg(1, 1, 2), msg(3, 2, 1)])
            .unwrap();
        assert_eq!(new.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(
            store.positions(2).unwrap(),
            Positions {
                last_seq: 3,
                complete_seq: 3
            }
        );
        let seqs: Vec<u64> = store
            .history(2, 0, 10)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        // My message at 1 marked me read to 1; 2 and 3 are unread.
        assert_eq!(store.total_unread().unwrap(), 2);
        store.read(2, 1, 3, false).unwrap();
        assert_eq!(store.reads_owed().unwrap(), [(2, 3)]);
        assert_eq!(store.total_unread().unwrap(), 0);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn the_outbox_keeps_order_and_outcomes_across_a_reopen() {
        let (store, path) = store();
        store.enqueue("a", 2, 1, b"x", 1).unwrap();
        store.enqueue("b", 2, 1, b"y", 2).unwrap();
        assert!(store.enqueue("a", 2, 1, b"x", 3).is_err(), "ids are unique");
        drop(store);
        let mut store = Store::open(&path, 1).unwrap();
        assert_eq!(store.next_pending().unwrap().unwrap().client_msg_id, "a");
        let mut m = msg(1, 1, 2);
        m.client_msg_id = "a".into();
        assert!(store.sent(&m).unwrap());
        store.failed("b", 7).unwrap();
        assert!(store.next_pending().unwrap().is_none());
        let unsent = store.unsent().unwrap();
        assert_eq!(unsent.len(), 1);
        assert_eq!(unsent[0].state, SendState::Failed { code: 7 });
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_delete_hides_history_and_a_new_message_brings_the_conversation_back() {
        let (mut store, path) = store();
        store.receive(&[msg(1, 2, 1), msg(2, 2, 1)]).unwrap();
        store.delete(2).unwrap();
        assert!(store.conversations().unwrap().is_empty());
        assert_eq!(store.deletes_owed().unwrap(), [2]);
        assert!(store.receive(&[msg(2, 2, 1)]).unwrap().is_empty(), "hidden");
        store.receive(&[msg(3, 2, 1)]).unwrap();
        let conversations = store.conversations().unwrap();
        assert_eq!(conversations.len(), 1);
        assert_eq!(conversations[0].unread, 1);
        assert_eq!(store.history(2, 0, 10).unwrap().len(), 1);
        let _ = std::fs::remove_file(path);
    }
}
