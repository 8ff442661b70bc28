//! SQLite in the data dir (`<data_dir>/im.sqlite3`): the embedded store's
//! tables, so a node needs no database server.
//!
//! It is not written on a message's path: the journal (`journal/`) is. The
//! journal's applier copies journal records into SQLite, many batches per
//! transaction, and every reader thread reads SQLite on its own connection
//! (WAL mode: readers see committed data without waiting for the applier).
//! The `WriteStore` here is the applier's connection, and the plain store
//! the journal's tests and recovery compare against.
//!
//! `storage.sqlite_synchronous` sets how both reach the disk: "full"
//! fdatasyncs each journal record before its batch is answered and fsyncs
//! SQLite's WAL on every commit; "normal" does neither (a process crash
//! loses nothing acknowledged, a power loss may). docs/operations.md says
//! exactly what each setting gives.

use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::pb;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use super::{
    Backend, ConvRow, Notice, Pair, ReadStore, Recovered, Revocation, SentKey, StoreError,
    StoreResult, WriteStore, direction, message_from_row,
};

/// Each entry moves the schema one version up; `PRAGMA user_version` records
/// how far a database has come. Never edit an entry once released: add one.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE messages (
        small_uid      INTEGER NOT NULL,
        big_uid        INTEGER NOT NULL,
        seq            INTEGER NOT NULL,
        msg_id         INTEGER NOT NULL,
        direction      INTEGER NOT NULL,
        from_uid       INTEGER NOT NULL,
        client_msg_id  TEXT    NOT NULL,
        content_type   INTEGER NOT NULL,
        content        BLOB    NOT NULL,
        create_time_ms INTEGER NOT NULL,
        PRIMARY KEY (small_uid, big_uid, seq)
     ) WITHOUT ROWID;
     CREATE UNIQUE INDEX messages_dedup ON messages (from_uid, client_msg_id);
     CREATE TABLE conversations (
        owner_uid     INTEGER NOT NULL,
        peer_uid      INTEGER NOT NULL,
        last_seq      INTEGER NOT NULL,
        last_msg_id   INTEGER NOT NULL,
        read_seq      INTEGER NOT NULL,
        peer_read_seq INTEGER NOT NULL,
        deleted_up_to INTEGER NOT NULL,
        hidden        INTEGER NOT NULL,
        updated_ms    INTEGER NOT NULL,
        version       INTEGER NOT NULL,
        PRIMARY KEY (owner_uid, peer_uid)
     ) WITHOUT ROWID;
     CREATE INDEX conversations_sync ON conversations (owner_uid, version);
     CREATE INDEX conversations_list ON conversations (owner_uid, hidden, last_msg_id);
     CREATE TABLE profiles (
        uid        INTEGER PRIMARY KEY,
        nickname   TEXT    NOT NULL,
        avatar_url TEXT    NOT NULL,
        updated_ms INTEGER NOT NULL
     );",
    // 2: how far the journal (store/journal) has been applied.
    "CREATE TABLE journal_state (
        id          INTEGER PRIMARY KEY CHECK (id = 0),
        applied_lsn INTEGER NOT NULL
     );
     INSERT INTO journal_state (id, applied_lsn) VALUES (0, 0);",
    // 3: revoked tokens, per user.
    "CREATE TABLE revocations (
        uid       INTEGER PRIMARY KEY,
        before_ms INTEGER NOT NULL
     );",
    // 4: the offline-notification outbox.
    "CREATE TABLE outbox (
        msg_id     INTEGER PRIMARY KEY,
        to_uid     INTEGER NOT NULL,
        from_uid   INTEGER NOT NULL,
        seq        INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
     );",
];

/// SQLite stores signed 64-bit integers; uids, seqs and ids are stored as
/// their bit pattern (ids and seqs stay below 2^63, so their order holds).
fn i(v: u64) -> i64 {
    v as i64
}

fn u(v: i64) -> u64 {
    v as u64
}

fn db(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(ref failure, _)
            if matches!(
                failure.code,
                rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::ReadOnly
            ) =>
        {
            StoreError::DiskFull(e.to_string())
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// How hard each commit pushes to disk (`storage.sqlite_synchronous`).
pub use crate::config::Synchronous;

fn pragma(synchronous: Synchronous) -> &'static str {
    match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    }
}

pub struct Sqlite {
    path: PathBuf,
    synchronous: Synchronous,
}

impl Sqlite {
    /// Opens (creating and migrating if needed) `<data_dir>/im.sqlite3`.
    pub fn open(data_dir: &Path, synchronous: Synchronous) -> StoreResult<Sqlite> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let sqlite = Sqlite {
            path: data_dir.join("im.sqlite3"),
            synchronous,
        };
        let mut conn = sqlite.connect()?;
        migrate(&mut conn)?;
        Ok(sqlite)
    }

    /// A connection of its own, for the journal's writer, applier and readers.
    pub(crate) fn conn(&self) -> StoreResult<SqliteConn> {
        Ok(SqliteConn(self.connect()?))
    }

    fn connect(&self) -> StoreResult<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", pragma(self.synchronous))
            .map_err(db)?;
        // 64 MiB page cache per connection; the working set of a busy node.
        conn.pragma_update(None, "cache_size", -65_536)
            .map_err(db)?;
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(db)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }
}

/// Applies the migrations a database lacks, one transaction each. The
/// version is read inside an IMMEDIATE (write-locked) transaction, so two
/// processes opening a fresh database cannot both apply the same step.
fn migrate(conn: &mut Connection) -> StoreResult<()> {
    loop {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let version = tx
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .map_err(db)? as usize;
        if version > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "database schema version {version} is newer than this server ({})",
                MIGRATIONS.len()
            )));
        }
        let Some(sql) = MIGRATIONS.get(version) else {
            return Ok(());
        };
        tx.execute_batch(sql).map_err(db)?;
        tx.pragma_update(None, "user_version", (version + 1) as i64)
            .map_err(db)?;
        tx.commit().map_err(db)?;
        log::info!("sqlite schema migrated to version {}", version + 1);
    }
}

impl Backend for Sqlite {
    fn writer(&self) -> StoreResult<Box<dyn WriteStore>> {
        Ok(Box::new(SqliteConn(self.connect()?)))
    }

    fn reader(&self) -> StoreResult<Box<dyn ReadStore>> {
        Ok(Box::new(SqliteConn(self.connect()?)))
    }
}

pub struct SqliteConn(Connection);

const MESSAGE_COLUMNS: &str = "small_uid, big_uid, seq, msg_id, direction, client_msg_id, content_type, content, create_time_ms";

fn message(row: &Row<'_>) -> rusqlite::Result<pb::Message> {
    let pair = Pair {
        small: u(row.get(0)?),
        big: u(row.get(1)?),
    };
    Ok(message_from_row(
        pair,
        u(row.get(2)?),
        u(row.get(3)?),
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        u(row.get(8)?),
    ))
}

const CONVERSATION_COLUMNS: &str = "owner_uid, peer_uid, last_seq, last_msg_id, read_seq, peer_read_seq, deleted_up_to, hidden, updated_ms, version";

fn conversation(row: &Row<'_>) -> rusqlite::Result<ConvRow> {
    Ok(ConvRow {
        owner: u(row.get(0)?),
        peer: u(row.get(1)?),
        last_seq: u(row.get(2)?),
        last_msg_id: u(row.get(3)?),
        read_seq: u(row.get(4)?),
        peer_read_seq: u(row.get(5)?),
        deleted_up_to: u(row.get(6)?),
        hidden: row.get(7)?,
        updated_ms: u(row.get(8)?),
        version: u(row.get(9)?),
    })
}

impl SqliteConn {
    fn conversation_rows(
        &mut self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> StoreResult<Vec<ConvRow>> {
        let mut stmt = self.0.prepare_cached(sql).map_err(db)?;
        let rows = stmt.query_map(params, conversation).map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn message_rows(
        &mut self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> StoreResult<Vec<pb::Message>> {
        let mut stmt = self.0.prepare_cached(sql).map_err(db)?;
        let rows = stmt.query_map(params, message).map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn sum_unread(&mut self, owner: u64) -> StoreResult<u64> {
        let mut stmt = self
            .0
            .prepare_cached(
                "SELECT COALESCE(SUM(last_seq - read_seq), 0) FROM conversations WHERE owner_uid = ?1 AND hidden = 0",
            )
            .map_err(db)?;
        stmt.query_row([i(owner)], |r| r.get::<_, i64>(0))
            .map(u)
            .map_err(db)
    }
}

impl SqliteConn {
    /// The last journal record this database holds (see `store/journal`).
    pub(crate) fn journal_lsn(&mut self) -> StoreResult<u64> {
        self.0
            .query_row(
                "SELECT applied_lsn FROM journal_state WHERE id = 0",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(u)
            .map_err(db)
    }

    /// Records, inside the open transaction, that it holds the journal up to `lsn`.
    pub(crate) fn set_journal_lsn(&mut self, lsn: u64) -> StoreResult<()> {
        self.0
            .prepare_cached("UPDATE journal_state SET applied_lsn = ?1 WHERE id = 0")
            .and_then(|mut stmt| stmt.execute([i(lsn)]))
            .map(|_| ())
            .map_err(db)
    }
}

impl WriteStore for SqliteConn {
    fn recover(&mut self) -> StoreResult<Recovered> {
        let max = |conn: &Connection, sql: &str| -> StoreResult<u64> {
            conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
                .map(|v| v.map_or(0, u))
                .map_err(db)
        };
        Ok(Recovered {
            max_msg_id: max(&self.0, "SELECT MAX(msg_id) FROM messages")?,
            max_version: max(&self.0, "SELECT MAX(version) FROM conversations")?,
        })
    }

    fn begin(&mut self) -> StoreResult<()> {
        self.0.execute_batch("BEGIN IMMEDIATE").map_err(db)
    }

    fn commit(&mut self) -> StoreResult<()> {
        self.0.execute_batch("COMMIT").map_err(db)
    }

    fn rollback(&mut self) {
        if !self.0.is_autocommit() {
            if let Err(e) = self.0.execute_batch("ROLLBACK") {
                log::error!("sqlite rollback failed: {e}");
            }
        }
    }

    fn find_sent(&mut self, keys: &[SentKey<'_>]) -> StoreResult<Vec<pb::Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE from_uid = ?1 AND client_msg_id = ?2"
        );
        let mut stmt = self.0.prepare_cached(&sql).map_err(db)?;
        let mut found = Vec::new();
        for key in keys {
            if let Some(m) = stmt
                .query_row(params![i(key.from), key.client_msg_id], message)
                .optional()
                .map_err(db)?
            {
                found.push(m);
            }
        }
        Ok(found)
    }

    fn load_conversations(&mut self, keys: &[(u64, u64)]) -> StoreResult<Vec<ConvRow>> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE owner_uid = ?1 AND peer_uid = ?2"
        );
        let mut stmt = self.0.prepare_cached(&sql).map_err(db)?;
        let mut found = Vec::new();
        for (owner, peer) in keys {
            if let Some(row) = stmt
                .query_row([i(*owner), i(*peer)], conversation)
                .optional()
                .map_err(db)?
            {
                found.push(row);
            }
        }
        Ok(found)
    }

    fn insert_messages(&mut self, messages: &[pb::Message]) -> StoreResult<()> {
        let mut stmt = self
            .0
            .prepare_cached(
                "INSERT INTO messages (small_uid, big_uid, seq, msg_id, direction, from_uid, client_msg_id, content_type, content, create_time_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(db)?;
        for m in messages {
            let pair = Pair::of(m.from_uid, m.to_uid);
            stmt.execute(params![
                i(pair.small),
                i(pair.big),
                i(m.seq),
                i(m.msg_id),
                direction(m.from_uid, m.to_uid),
                i(m.from_uid),
                m.client_msg_id,
                m.content_type,
                m.content,
                i(m.server_time_ms),
            ])
            .map_err(db)?;
        }
        Ok(())
    }

    fn put_conversations(&mut self, rows: &[&ConvRow]) -> StoreResult<()> {
        let mut stmt = self
            .0
            .prepare_cached(
                "INSERT INTO conversations (owner_uid, peer_uid, last_seq, last_msg_id, read_seq, peer_read_seq, deleted_up_to, hidden, updated_ms, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (owner_uid, peer_uid) DO UPDATE SET
                   last_seq = excluded.last_seq, last_msg_id = excluded.last_msg_id,
                   read_seq = excluded.read_seq, peer_read_seq = excluded.peer_read_seq,
                   deleted_up_to = excluded.deleted_up_to, hidden = excluded.hidden,
                   updated_ms = excluded.updated_ms, version = excluded.version",
            )
            .map_err(db)?;
        for r in rows {
            stmt.execute(params![
                i(r.owner),
                i(r.peer),
                i(r.last_seq),
                i(r.last_msg_id),
                i(r.read_seq),
                i(r.peer_read_seq),
                i(r.deleted_up_to),
                r.hidden,
                i(r.updated_ms),
                i(r.version),
            ])
            .map_err(db)?;
        }
        Ok(())
    }

    fn put_profiles(&mut self, profiles: &[pb::Profile], updated_ms: u64) -> StoreResult<()> {
        let mut stmt = self
            .0
            .prepare_cached(
                "INSERT INTO profiles (uid, nickname, avatar_url, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (uid) DO UPDATE SET nickname = excluded.nickname,
                   avatar_url = excluded.avatar_url, updated_ms = excluded.updated_ms",
            )
            .map_err(db)?;
        for p in profiles {
            stmt.execute(params![i(p.uid), p.nickname, p.avatar_url, i(updated_ms)])
                .map_err(db)?;
        }
        Ok(())
    }

    fn put_revocations(&mut self, revocations: &[Revocation]) -> StoreResult<()> {
        let mut stmt = self
            .0
            .prepare_cached(
                "INSERT INTO revocations (uid, before_ms) VALUES (?1, ?2)
                 ON CONFLICT (uid) DO UPDATE SET before_ms = MAX(before_ms, excluded.before_ms)",
            )
            .map_err(db)?;
        for r in revocations {
            stmt.execute(params![i(r.uid), i(r.before_ms)])
                .map_err(db)?;
        }
        Ok(())
    }

    fn revocations(&mut self) -> StoreResult<Vec<Revocation>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT uid, before_ms FROM revocations")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Revocation {
                    uid: u(r.get(0)?),
                    before_ms: u(r.get(1)?),
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn put_notices(&mut self, notices: &[Notice]) -> StoreResult<()> {
        let mut stmt = self
            .0
            .prepare_cached(
                "INSERT OR IGNORE INTO outbox (msg_id, to_uid, from_uid, seq, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(db)?;
        for n in notices {
            stmt.execute(params![
                i(n.msg_id),
                i(n.to_uid),
                i(n.from_uid),
                i(n.seq),
                i(n.created_ms)
            ])
            .map_err(db)?;
        }
        Ok(())
    }

    fn remove_notices(&mut self, notices: &[Notice]) -> StoreResult<()> {
        let mut stmt = self
            .0
            .prepare_cached("DELETE FROM outbox WHERE msg_id = ?1")
            .map_err(db)?;
        for n in notices {
            stmt.execute([i(n.msg_id)]).map_err(db)?;
        }
        Ok(())
    }

    fn total_unread(&mut self, owner: u64) -> StoreResult<u64> {
        self.sum_unread(owner)
    }

    fn last_seqs(&mut self, pairs: &[Pair]) -> StoreResult<Vec<(Pair, u64)>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT MAX(seq) FROM messages WHERE small_uid = ?1 AND big_uid = ?2")
            .map_err(db)?;
        let mut found = Vec::new();
        for pair in pairs {
            let last: Option<i64> = stmt
                .query_row([i(pair.small), i(pair.big)], |r| r.get(0))
                .map_err(db)?;
            if let Some(last) = last {
                found.push((*pair, u(last)));
            }
        }
        Ok(found)
    }
}

impl ReadStore for SqliteConn {
    fn begin_snapshot(&mut self) -> StoreResult<()> {
        self.0.execute_batch("BEGIN DEFERRED").map_err(db)
    }

    fn end_snapshot(&mut self) {
        if !self.0.is_autocommit() {
            let _ = self.0.execute_batch("COMMIT");
        }
    }

    fn conversation(&mut self, owner: u64, peer: u64) -> StoreResult<Option<ConvRow>> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE owner_uid = ?1 AND peer_uid = ?2"
        );
        Ok(self.conversation_rows(&sql, [i(owner), i(peer)])?.pop())
    }

    fn messages_after(
        &mut self,
        pair: Pair,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<pb::Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE small_uid = ?1 AND big_uid = ?2 AND seq > ?3 ORDER BY seq ASC LIMIT ?4"
        );
        self.message_rows(
            &sql,
            params![i(pair.small), i(pair.big), i(after), limit as i64],
        )
    }

    fn messages_before(
        &mut self,
        pair: Pair,
        below: u64,
        above: u64,
        limit: usize,
    ) -> StoreResult<Vec<pb::Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE small_uid = ?1 AND big_uid = ?2 AND seq < ?3 AND seq > ?4 ORDER BY seq DESC LIMIT ?5"
        );
        self.message_rows(
            &sql,
            params![i(pair.small), i(pair.big), i(below), i(above), limit as i64],
        )
    }

    fn message(&mut self, pair: Pair, seq: u64) -> StoreResult<Option<pb::Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE small_uid = ?1 AND big_uid = ?2 AND seq = ?3"
        );
        Ok(self
            .message_rows(&sql, params![i(pair.small), i(pair.big), i(seq)])?
            .pop())
    }

    fn changed_since(&mut self, owner: u64, after: u64, limit: usize) -> StoreResult<Vec<ConvRow>> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE owner_uid = ?1 AND version > ?2 ORDER BY version ASC LIMIT ?3"
        );
        self.conversation_rows(&sql, params![i(owner), i(after), limit as i64])
    }

    fn visible_by_recency(
        &mut self,
        owner: u64,
        below: u64,
        limit: usize,
    ) -> StoreResult<Vec<ConvRow>> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE owner_uid = ?1 AND hidden = 0 AND last_msg_id < ?2 ORDER BY last_msg_id DESC LIMIT ?3"
        );
        self.conversation_rows(&sql, params![i(owner), i(below), limit as i64])
    }

    fn total_unread(&mut self, owner: u64) -> StoreResult<u64> {
        self.sum_unread(owner)
    }

    fn unread_by_peer(&mut self, owner: u64) -> StoreResult<Vec<(u64, u64)>> {
        let mut stmt = self
            .0
            .prepare_cached(
                "SELECT peer_uid, last_seq - read_seq FROM conversations WHERE owner_uid = ?1 AND hidden = 0 AND last_seq > read_seq",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([i(owner)], |r| Ok((u(r.get(0)?), u(r.get(1)?))))
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn profiles(&mut self, uids: &[u64]) -> StoreResult<Vec<pb::Profile>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT uid, nickname, avatar_url FROM profiles WHERE uid = ?1")
            .map_err(db)?;
        let mut found = Vec::new();
        for uid in uids {
            if let Some(p) = stmt
                .query_row([i(*uid)], |r| {
                    Ok(pb::Profile {
                        uid: u(r.get(0)?),
                        nickname: r.get(1)?,
                        avatar_url: r.get(2)?,
                    })
                })
                .optional()
                .map_err(db)?
            {
                found.push(p);
            }
        }
        Ok(found)
    }

    fn notices(&mut self, after: u64, limit: usize) -> StoreResult<Vec<Notice>> {
        let mut stmt = self
            .0
            .prepare_cached(
                "SELECT msg_id, to_uid, from_uid, seq, created_ms FROM outbox
                 WHERE msg_id > ?1 ORDER BY msg_id LIMIT ?2",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![i(after), limit as i64], |r| {
                Ok(Notice {
                    msg_id: u(r.get(0)?),
                    to_uid: u(r.get(1)?),
                    from_uid: u(r.get(2)?),
                    seq: u(r.get(3)?),
                    created_ms: u(r.get(4)?),
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn notice_count(&mut self) -> StoreResult<u64> {
        self.0
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get::<_, i64>(0))
            .map(u)
            .map_err(db)
    }
}
