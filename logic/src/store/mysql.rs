//! The production store: MySQL, MariaDB or TiDB, through the `mysql` crate.
//!
//! Rows as the design has them: `messages` keyed by `(small_uid, big_uid,
//! seq)` with a unique key on `(from_uid, client_msg_id)` for dedup forever;
//! `conversations` (the design's contacts) with two rows per pair, owned by
//! `uid_a`, indexed so that one user's list, latest first, and one user's
//! changes in version order are each one index range; `profiles`.
//!
//! A batch is one transaction of multi-row statements: one SELECT for the
//! batch's dedup keys, one for the conversation rows it lacks, one INSERT
//! for its messages, one INSERT .. ON DUPLICATE KEY UPDATE for its rows,
//! then COMMIT. With `innodb_flush_log_at_trx_commit = 1` (the default) the
//! COMMIT returns after the redo log is on disk, so a SendResp means durable.
//!
//! Only portable SQL is used (no stored procedures, foreign keys, triggers
//! or JSON columns; row constructors in `IN`, `VALUES()` in upserts), which
//! MariaDB 10.11, MySQL 8 and TiDB all accept.
//!
//! Several URLs in `mysql_urls` are shards, one database each, in shard
//! order; `sharded.rs` routes rows to them. Each database records, the first
//! time it is used, which shard of how many it is (`im_shard`), and a node
//! whose `mysql_urls` disagree refuses to start: changing the shard list
//! moves rows, and that is never done silently.

use mysql::prelude::Queryable;
use std::sync::Arc;
use std::time::Duration;

use mysql::{
    Conn, Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, PooledConn, Row, Value,
};
use protocol::pb;

use super::lease::{Fence, WriterLease};
use super::sharded::{ShardedReader, ShardedWriter};
use super::{
    Backend, ConvRow, Notice, Pair, ReadStore, Recovered, Revocation, SentKey, StoreError,
    StoreResult, WriteStore, direction, message_from_row,
};

/// The writer lease's length when the configuration gives none.
pub const DEFAULT_LEASE_MS: u64 = 3_000;

/// Each entry moves the schema one version up; `im_schema_version` records
/// what a database has applied. Never edit an entry once released: add one.
const MIGRATIONS: &[&[&str]] = &[
    &[
        "CREATE TABLE IF NOT EXISTS messages (
        small_uid     BIGINT UNSIGNED NOT NULL,
        big_uid       BIGINT UNSIGNED NOT NULL,
        seq           BIGINT UNSIGNED NOT NULL,
        msg_id        BIGINT UNSIGNED NOT NULL,
        direction     TINYINT UNSIGNED NOT NULL,
        from_uid      BIGINT UNSIGNED NOT NULL,
        client_msg_id VARBINARY(64) NOT NULL,
        content_type  INT UNSIGNED NOT NULL,
        content       BLOB NOT NULL,
        create_time   BIGINT UNSIGNED NOT NULL,
        PRIMARY KEY (small_uid, big_uid, seq),
        UNIQUE KEY messages_dedup (from_uid, client_msg_id)
     ) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS conversations (
        uid_a         BIGINT UNSIGNED NOT NULL,
        uid_b         BIGINT UNSIGNED NOT NULL,
        last_seq      BIGINT UNSIGNED NOT NULL,
        last_msg_id   BIGINT UNSIGNED NOT NULL,
        read_seq      BIGINT UNSIGNED NOT NULL,
        peer_read_seq BIGINT UNSIGNED NOT NULL,
        deleted_up_to BIGINT UNSIGNED NOT NULL,
        is_del        TINYINT UNSIGNED NOT NULL,
        updated_ms    BIGINT UNSIGNED NOT NULL,
        version       BIGINT UNSIGNED NOT NULL,
        PRIMARY KEY (uid_a, uid_b),
        KEY conversations_sync (uid_a, version),
        KEY conversations_list (uid_a, is_del, last_msg_id)
     ) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS profiles (
        uid        BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        nickname   VARCHAR(64) CHARACTER SET utf8mb4 NOT NULL,
        avatar_url VARCHAR(512) CHARACTER SET utf8mb4 NOT NULL,
        updated_ms BIGINT UNSIGNED NOT NULL
     ) ENGINE=InnoDB",
    ],
    &["CREATE TABLE IF NOT EXISTS im_shard (
        id          TINYINT UNSIGNED NOT NULL PRIMARY KEY,
        shard_index INT UNSIGNED NOT NULL,
        shard_count INT UNSIGNED NOT NULL,
        claimed_ms  BIGINT UNSIGNED NOT NULL
     ) ENGINE=InnoDB"],
    &["CREATE TABLE IF NOT EXISTS revocations (
        uid       BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        before_ms BIGINT UNSIGNED NOT NULL
     ) ENGINE=InnoDB"],
    &["CREATE TABLE IF NOT EXISTS outbox (
        msg_id     BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        to_uid     BIGINT UNSIGNED NOT NULL,
        from_uid   BIGINT UNSIGNED NOT NULL,
        seq        BIGINT UNSIGNED NOT NULL,
        created_ms BIGINT UNSIGNED NOT NULL
     ) ENGINE=InnoDB"],
    // The writer's lease and the connections its holder writes on (lease.rs).
    &[
        "CREATE TABLE IF NOT EXISTS im_writer (
        id             TINYINT UNSIGNED NOT NULL PRIMARY KEY,
        holder         VARCHAR(255) NOT NULL,
        epoch          BIGINT UNSIGNED NOT NULL,
        lease_until_ms BIGINT UNSIGNED NOT NULL,
        renewals       BIGINT UNSIGNED NOT NULL,
        writes         BIGINT UNSIGNED NOT NULL
     ) ENGINE=InnoDB",
        "INSERT IGNORE INTO im_writer (id, holder, epoch, lease_until_ms, renewals, writes) VALUES (0, '', 0, 0, 0, 0)",
        "CREATE TABLE IF NOT EXISTS im_writer_conns (
        server  VARCHAR(255) NOT NULL,
        conn_id BIGINT UNSIGNED NOT NULL,
        epoch   BIGINT UNSIGNED NOT NULL,
        PRIMARY KEY (server, conn_id)
     ) ENGINE=InnoDB",
    ],
];

pub(crate) fn db(e: mysql::Error) -> StoreError {
    match e {
        mysql::Error::FromRowError(_) | mysql::Error::FromValueError(_) => {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// The configured databases, in shard order.
pub struct MySql {
    databases: Vec<Database>,
    /// The writer lease's epochs, which every write checks.
    fence: Arc<Fence>,
}

struct Database {
    pool: Pool,
    name: String,
}

impl MySql {
    /// Connects to every URL (one per shard), creates each database if it
    /// does not exist, applies the migrations it lacks, and checks that it
    /// is the shard the configuration says.
    pub fn open(urls: &[String]) -> StoreResult<MySql> {
        if urls.is_empty() {
            return Err(StoreError::Config(
                "storage.mysql_urls is empty: give one URL per shard".into(),
            ));
        }
        let mut databases: Vec<Database> = Vec::with_capacity(urls.len());
        for (index, url) in urls.iter().enumerate() {
            let database = Database::open(url)?;
            if let Some(same) = databases.iter().position(|d| d.name == database.name) {
                return Err(StoreError::Config(format!(
                    "storage.mysql_urls: shards {same} and {index} are both database `{}`",
                    database.name
                )));
            }
            database.claim_shard(index, urls.len())?;
            databases.push(database);
        }
        let fence = Fence::new(databases.len());
        Ok(MySql { databases, fence })
    }

    /// The writer's lease on these databases, `lease_ms` long.
    pub fn lease(&self, lease_ms: u64) -> WriterLease {
        WriterLease::new(
            self.databases.iter().map(|d| d.pool.clone()).collect(),
            self.fence.clone(),
            lease_ms,
        )
    }

    /// A writer connection on database `shard`. The lease must be held;
    /// a process that never took it (a tool, a test) takes it once here
    /// and is refused if another process holds it.
    fn writer_on(&self, shard: usize) -> StoreResult<MySqlConn> {
        if self.fence.epoch(shard) == 0 {
            match self.lease(DEFAULT_LEASE_MS).try_take()? {
                super::lease::Holder::Us => {}
                super::lease::Holder::Other { holder, left_ms } => {
                    return Err(StoreError::Unavailable(format!(
                        "another logic process is the writer for these databases ({holder}, lease {left_ms} ms more)"
                    )));
                }
            }
        }
        MySqlConn::new(
            self.databases[shard].pool.clone(),
            Some((self.fence.clone(), shard)),
        )
    }

    /// Applies the migrations each database lacks (also `im-logic migrate`).
    pub fn migrate(&self) -> StoreResult<usize> {
        let mut version = 0;
        for database in &self.databases {
            version = migrate(&mut database.pool.get_conn().map_err(db)?)?;
        }
        Ok(version)
    }
}

/// The database a shard's URL names, if the URL is one the store can use
/// (checked by `--check-config` and again at start, by this one function).
pub fn database_name(url: &str) -> Result<String, String> {
    let opts = Opts::from_url(url).map_err(|e| format!("bad mysql url {url:?}: {e}"))?;
    let name = opts
        .get_db_name()
        .ok_or_else(|| format!("the mysql url {url:?} names no database"))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("database name {name:?}: use letters, digits and _"));
    }
    Ok(name.to_owned())
}

impl Database {
    fn open(url: &str) -> StoreResult<Database> {
        let name = database_name(url).map_err(StoreError::Config)?;
        let opts = Opts::from_url(url).map_err(|e| StoreError::Config(e.to_string()))?;
        // Bounded waits: a database that hangs fails the batch (UNAVAILABLE)
        // instead of stalling the writer forever.
        let timeout = Some(Duration::from_secs(5));
        // The pool opens its minimum at once: keep it to what a node uses
        // (a writer, the readers), not the crate's default of ten.
        let constraints = PoolConstraints::new(1, 64).expect("1 <= 64");
        let opts = OptsBuilder::from_opts(opts)
            .tcp_connect_timeout(timeout)
            .read_timeout(timeout)
            .write_timeout(timeout)
            .pool_opts(PoolOpts::default().with_constraints(constraints));
        // A fresh server needs no manual SQL: create the database first, on
        // one connection that names no database.
        Conn::new(opts.clone().db_name(None::<String>))
            .and_then(|mut c| {
                c.query_drop(format!(
                    "CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4"
                ))
            })
            .map_err(db)?;
        let pool = Pool::new(opts).map_err(db)?;
        migrate(&mut pool.get_conn().map_err(db)?)?;
        Ok(Database { pool, name })
    }

    /// Records this database as shard `index` of `count` the first time,
    /// and refuses any other place after that.
    fn claim_shard(&self, index: usize, count: usize) -> StoreResult<()> {
        let mut conn = self.pool.get_conn().map_err(db)?;
        conn.exec_drop(
            "INSERT IGNORE INTO im_shard (id, shard_index, shard_count, claimed_ms) VALUES (1, ?, ?, ?)",
            (index, count, runtime::clock::unix_ms()),
        )
        .map_err(db)?;
        let recorded: Option<(u64, u64)> = conn
            .query_first("SELECT shard_index, shard_count FROM im_shard WHERE id = 1")
            .map_err(db)?;
        match recorded {
            Some((i, n)) if (i, n) == (index as u64, count as u64) => Ok(()),
            Some((i, n)) => Err(StoreError::Unavailable(format!(
                "database `{}` is shard {i} of {n}, but storage.mysql_urls makes it shard {index} of {count}; \
                 changing the shard list moves rows between shards (see \"Adding shards\" in docs/operations.md)",
                self.name
            ))),
            None => Err(StoreError::Corrupt(format!(
                "database `{}`: im_shard has no row after claiming it",
                self.name
            ))),
        }
    }

    fn reader(&self) -> StoreResult<MySqlConn> {
        MySqlConn::new(self.pool.clone(), None)
    }
}

/// Applies missing migrations under a named lock, so that several logic
/// processes starting together apply each step once. Returns the version.
fn migrate(conn: &mut PooledConn) -> StoreResult<usize> {
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS im_schema_version (version INT NOT NULL PRIMARY KEY, applied_ms BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
    )
    .map_err(db)?;
    let locked = scalar(
        conn,
        "SELECT GET_LOCK('im_schema_migration', 60)",
        Params::Empty,
    )?;
    if locked != 1 {
        return Err(StoreError::Unavailable(
            "could not take the schema migration lock".into(),
        ));
    }
    let result = (|| {
        let current = scalar(
            conn,
            "SELECT MAX(version) FROM im_schema_version",
            Params::Empty,
        )? as usize;
        for (index, statements) in MIGRATIONS.iter().enumerate().skip(current) {
            // DDL commits implicitly in MySQL: each statement is idempotent
            // (IF NOT EXISTS), and the version row is written last.
            for sql in *statements {
                conn.query_drop(*sql).map_err(db)?;
            }
            conn.exec_drop(
                "INSERT INTO im_schema_version (version, applied_ms) VALUES (?, ?)",
                (index + 1, runtime::clock::unix_ms()),
            )
            .map_err(db)?;
            log::info!("mysql schema migrated to version {}", index + 1);
        }
        Ok(MIGRATIONS.len())
    })();
    let _ = conn.query_drop("DO RELEASE_LOCK('im_schema_migration')");
    result
}

impl Backend for MySql {
    fn writer(&self) -> StoreResult<Box<dyn WriteStore>> {
        if self.databases.len() == 1 {
            return Ok(Box::new(self.writer_on(0)?));
        }
        let shards = (0..self.databases.len())
            .map(|shard| Ok(Box::new(self.writer_on(shard)?) as Box<dyn WriteStore>))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Box::new(ShardedWriter::new(shards)))
    }

    fn reader(&self) -> StoreResult<Box<dyn ReadStore>> {
        if let [database] = self.databases.as_slice() {
            return Ok(Box::new(database.reader()?));
        }
        let shards = self
            .databases
            .iter()
            .map(|d| Ok(Box::new(d.reader()?) as Box<dyn ReadStore>))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Box::new(ShardedReader::new(shards)))
    }
}

/// One thread's connection. After any error it is closed (it may be dead,
/// or inside a transaction) and the next call connects afresh: a database
/// restart costs the batches in flight, never the server.
pub struct MySqlConn {
    pool: Pool,
    conn: Option<PooledConn>,
    /// For the writer: the lease's fence and this database's shard index.
    /// Every transaction checks the epoch first (see `lease.rs`); every
    /// connection is registered, for a standby to kill should this process
    /// freeze inside a transaction.
    fence: Option<(Arc<Fence>, usize)>,
}

const MESSAGE_COLUMNS: &str =
    "small_uid, big_uid, seq, msg_id, direction, client_msg_id, content_type, content, create_time";
const CONVERSATION_COLUMNS: &str = "uid_a, uid_b, last_seq, last_msg_id, read_seq, peer_read_seq, deleted_up_to, is_del, updated_ms, version";

fn take<T: mysql::prelude::FromValue>(row: &mut Row, i: usize) -> StoreResult<T> {
    row.take_opt::<T, usize>(i)
        .ok_or_else(|| StoreError::Corrupt(format!("column {i} missing")))?
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// One number from a one-row, one-column query; NULL (an aggregate over no
/// rows) is 0. Typed `query_first` would panic on an unexpected type: this
/// never does.
fn scalar(conn: &mut PooledConn, sql: &str, params: Params) -> StoreResult<u64> {
    let row: Option<Row> = conn.exec_first(sql, params).map_err(db)?;
    let Some(mut row) = row else { return Ok(0) };
    match row.take_opt::<Option<u64>, usize>(0) {
        Some(Ok(value)) => Ok(value.unwrap_or(0)),
        Some(Err(e)) => Err(StoreError::Corrupt(e.to_string())),
        None => Err(StoreError::Corrupt(format!(
            "no column in the answer to {sql}"
        ))),
    }
}

fn message(mut row: Row) -> StoreResult<pb::Message> {
    let pair = Pair {
        small: take(&mut row, 0)?,
        big: take(&mut row, 1)?,
    };
    let client_msg_id: Vec<u8> = take(&mut row, 5)?;
    Ok(message_from_row(
        pair,
        take(&mut row, 2)?,
        take(&mut row, 3)?,
        take(&mut row, 4)?,
        String::from_utf8(client_msg_id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        take(&mut row, 6)?,
        take(&mut row, 7)?,
        take(&mut row, 8)?,
    ))
}

fn conversation(mut row: Row) -> StoreResult<ConvRow> {
    Ok(ConvRow {
        owner: take(&mut row, 0)?,
        peer: take(&mut row, 1)?,
        last_seq: take(&mut row, 2)?,
        last_msg_id: take(&mut row, 3)?,
        read_seq: take(&mut row, 4)?,
        peer_read_seq: take(&mut row, 5)?,
        deleted_up_to: take(&mut row, 6)?,
        hidden: take::<u8>(&mut row, 7)? != 0,
        updated_ms: take(&mut row, 8)?,
        version: take(&mut row, 9)?,
    })
}

/// "(?,?),(?,?),..." for `rows` tuples of `width` placeholders.
fn placeholders(rows: usize, width: usize) -> String {
    let tuple = format!("({})", vec!["?"; width].join(","));
    vec![tuple; rows].join(",")
}

impl MySqlConn {
    fn new(pool: Pool, fence: Option<(Arc<Fence>, usize)>) -> StoreResult<MySqlConn> {
        let mut conn = MySqlConn {
            pool,
            conn: None,
            fence,
        };
        conn.c()?;
        Ok(conn)
    }

    /// The connection, connecting first if the last one was retired. A new
    /// writer connection is registered with the lease, and on Galera reads
    /// what other nodes committed before it (`wsrep_sync_wait`; an unknown
    /// variable elsewhere, and ignored).
    fn c(&mut self) -> StoreResult<&mut PooledConn> {
        if self.conn.is_none() {
            let mut conn = self.pool.get_conn().map_err(db)?;
            if let Some((fence, shard)) = &self.fence {
                let _ = conn.query_drop("SET SESSION wsrep_sync_wait = 1");
                fence.register(&mut conn, *shard)?;
            }
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Closes the connection instead of returning it to the pool (which
    /// also releases the writer lock it held).
    fn retire(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.unwrap());
        }
    }

    /// Maps an error, retiring the connection it came from.
    fn lost(&mut self, e: mysql::Error) -> StoreError {
        self.retire();
        db(e)
    }

    /// A scalar query whose failure retires the connection.
    fn scalar(&mut self, sql: &str, params: Params) -> StoreResult<u64> {
        let result = scalar(self.c()?, sql, params);
        if result.is_err() {
            self.retire();
        }
        result
    }
    fn rows<T>(
        &mut self,
        sql: &str,
        params: Vec<Value>,
        map: fn(Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let rows: Vec<Row> = self
            .c()?
            .exec(sql, Params::Positional(params))
            .map_err(|e| self.lost(e))?;
        rows.into_iter().map(map).collect()
    }

    fn sum_unread(&mut self, owner: u64) -> StoreResult<u64> {
        self.scalar("SELECT CAST(COALESCE(SUM(last_seq - read_seq), 0) AS UNSIGNED) FROM conversations WHERE uid_a = ? AND is_del = 0",
            Params::Positional(vec![owner.into()]),
        )
    }
}

impl WriteStore for MySqlConn {
    fn recover(&mut self) -> StoreResult<Recovered> {
        Ok(Recovered {
            max_msg_id: self.scalar("SELECT MAX(msg_id) FROM messages", Params::Empty)?,
            max_version: self.scalar("SELECT MAX(version) FROM conversations", Params::Empty)?,
        })
    }

    fn begin(&mut self) -> StoreResult<()> {
        self.c()?
            .query_drop("START TRANSACTION")
            .map_err(|e| self.lost(e))?;
        let Some((fence, shard)) = self.fence.clone() else {
            return Ok(());
        };
        let checked = fence.check(self.c()?, shard);
        if checked.is_err() {
            self.rollback();
        }
        checked
    }

    fn commit(&mut self) -> StoreResult<()> {
        self.c()?.query_drop("COMMIT").map_err(|e| self.lost(e))
    }

    fn rollback(&mut self) {
        // A retired connection took its transaction with it.
        if let Some(conn) = self.conn.as_mut() {
            if let Err(e) = conn.query_drop("ROLLBACK") {
                log::warn!("mysql rollback failed: {e}");
                self.retire();
            }
        }
    }

    fn find_sent(&mut self, keys: &[SentKey<'_>]) -> StoreResult<Vec<pb::Message>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE (from_uid, client_msg_id) IN ({})",
            placeholders(keys.len(), 2)
        );
        let params = keys
            .iter()
            .flat_map(|key| {
                [
                    Value::from(key.from),
                    Value::from(key.client_msg_id.as_bytes()),
                ]
            })
            .collect();
        self.rows(&sql, params, message)
    }

    fn load_conversations(&mut self, keys: &[(u64, u64)]) -> StoreResult<Vec<ConvRow>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE (uid_a, uid_b) IN ({})",
            placeholders(keys.len(), 2)
        );
        let params = keys
            .iter()
            .flat_map(|(a, b)| [Value::from(*a), Value::from(*b)])
            .collect();
        self.rows(&sql, params, conversation)
    }

    fn insert_messages(&mut self, messages: &[pb::Message]) -> StoreResult<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO messages (small_uid, big_uid, seq, msg_id, direction, from_uid, client_msg_id, content_type, content, create_time) VALUES {}",
            placeholders(messages.len(), 10)
        );
        let mut params = Vec::with_capacity(messages.len() * 10);
        for m in messages {
            let pair = Pair::of(m.from_uid, m.to_uid);
            params.extend([
                Value::from(pair.small),
                Value::from(pair.big),
                Value::from(m.seq),
                Value::from(m.msg_id),
                Value::from(direction(m.from_uid, m.to_uid)),
                Value::from(m.from_uid),
                Value::from(m.client_msg_id.as_bytes()),
                Value::from(m.content_type),
                Value::from(m.content.as_slice()),
                Value::from(m.server_time_ms),
            ]);
        }
        self.c()?
            .exec_drop(sql, Params::Positional(params))
            .map_err(|e| self.lost(e))
    }

    fn put_conversations(&mut self, rows: &[&ConvRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO conversations ({CONVERSATION_COLUMNS}) VALUES {} ON DUPLICATE KEY UPDATE
               last_seq = VALUES(last_seq), last_msg_id = VALUES(last_msg_id), read_seq = VALUES(read_seq),
               peer_read_seq = VALUES(peer_read_seq), deleted_up_to = VALUES(deleted_up_to),
               is_del = VALUES(is_del), updated_ms = VALUES(updated_ms), version = VALUES(version)",
            placeholders(rows.len(), 10)
        );
        let mut params = Vec::with_capacity(rows.len() * 10);
        for r in rows {
            params.extend([
                Value::from(r.owner),
                Value::from(r.peer),
                Value::from(r.last_seq),
                Value::from(r.last_msg_id),
                Value::from(r.read_seq),
                Value::from(r.peer_read_seq),
                Value::from(r.deleted_up_to),
                Value::from(u8::from(r.hidden)),
                Value::from(r.updated_ms),
                Value::from(r.version),
            ]);
        }
        self.c()?
            .exec_drop(sql, Params::Positional(params))
            .map_err(|e| self.lost(e))
    }

    fn put_profiles(&mut self, profiles: &[pb::Profile], updated_ms: u64) -> StoreResult<()> {
        for p in profiles {
            self.c()?
                .exec_drop(
                    "INSERT INTO profiles (uid, nickname, avatar_url, updated_ms) VALUES (?, ?, ?, ?)
                     ON DUPLICATE KEY UPDATE nickname = VALUES(nickname), avatar_url = VALUES(avatar_url), updated_ms = VALUES(updated_ms)",
                    (p.uid, &p.nickname, &p.avatar_url, updated_ms),
                )
                .map_err(|e| self.lost(e))?;
        }
        Ok(())
    }

    fn put_revocations(&mut self, revocations: &[Revocation]) -> StoreResult<()> {
        for r in revocations {
            self.c()?
                .exec_drop(
                    "INSERT INTO revocations (uid, before_ms) VALUES (?, ?)
                     ON DUPLICATE KEY UPDATE before_ms = GREATEST(before_ms, VALUES(before_ms))",
                    (r.uid, r.before_ms),
                )
                .map_err(|e| self.lost(e))?;
        }
        Ok(())
    }

    fn revocations(&mut self) -> StoreResult<Vec<Revocation>> {
        let rows: Vec<(u64, u64)> = self
            .c()?
            .query("SELECT uid, before_ms FROM revocations")
            .map_err(|e| self.lost(e))?;
        Ok(rows
            .into_iter()
            .map(|(uid, before_ms)| Revocation { uid, before_ms })
            .collect())
    }

    fn put_notices(&mut self, notices: &[Notice]) -> StoreResult<()> {
        if notices.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT IGNORE INTO outbox (msg_id, to_uid, from_uid, seq, created_ms) VALUES {}",
            placeholders(notices.len(), 5)
        );
        let params = notices
            .iter()
            .flat_map(|n| [n.msg_id, n.to_uid, n.from_uid, n.seq, n.created_ms].map(Value::from))
            .collect();
        self.c()?
            .exec_drop(sql, Params::Positional(params))
            .map_err(|e| self.lost(e))
    }

    fn remove_notices(&mut self, notices: &[Notice]) -> StoreResult<()> {
        if notices.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "DELETE FROM outbox WHERE msg_id IN ({})",
            vec!["?"; notices.len()].join(",")
        );
        let params = notices.iter().map(|n| Value::from(n.msg_id)).collect();
        self.c()?
            .exec_drop(sql, Params::Positional(params))
            .map_err(|e| self.lost(e))
    }

    fn total_unread(&mut self, owner: u64) -> StoreResult<u64> {
        self.sum_unread(owner)
    }

    fn last_seqs(&mut self, pairs: &[Pair]) -> StoreResult<Vec<(Pair, u64)>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT small_uid, big_uid, MAX(seq) FROM messages WHERE (small_uid, big_uid) IN ({}) GROUP BY small_uid, big_uid",
            placeholders(pairs.len(), 2)
        );
        let params = pairs
            .iter()
            .flat_map(|p| [Value::from(p.small), Value::from(p.big)])
            .collect();
        self.rows(&sql, params, |mut row| {
            let pair = Pair {
                small: take(&mut row, 0)?,
                big: take(&mut row, 1)?,
            };
            Ok((pair, take(&mut row, 2)?))
        })
    }
}

impl ReadStore for MySqlConn {
    fn begin_snapshot(&mut self) -> StoreResult<()> {
        self.c()?
            .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .map_err(|e| self.lost(e))
    }

    fn end_snapshot(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            if conn.query_drop("COMMIT").is_err() {
                self.retire();
            }
        }
    }

    fn conversation(&mut self, owner: u64, peer: u64) -> StoreResult<Option<ConvRow>> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE uid_a = ? AND uid_b = ?"
        );
        Ok(self
            .rows(&sql, vec![owner.into(), peer.into()], conversation)?
            .pop())
    }

    fn messages_after(
        &mut self,
        pair: Pair,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<pb::Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE small_uid = ? AND big_uid = ? AND seq > ? ORDER BY seq ASC LIMIT ?"
        );
        self.rows(
            &sql,
            vec![
                pair.small.into(),
                pair.big.into(),
                after.into(),
                (limit as u64).into(),
            ],
            message,
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
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE small_uid = ? AND big_uid = ? AND seq < ? AND seq > ? ORDER BY seq DESC LIMIT ?"
        );
        let params = vec![
            pair.small.into(),
            pair.big.into(),
            below.into(),
            above.into(),
            (limit as u64).into(),
        ];
        self.rows(&sql, params, message)
    }

    fn message(&mut self, pair: Pair, seq: u64) -> StoreResult<Option<pb::Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE small_uid = ? AND big_uid = ? AND seq = ?"
        );
        Ok(self
            .rows(
                &sql,
                vec![pair.small.into(), pair.big.into(), seq.into()],
                message,
            )?
            .pop())
    }

    fn changed_since(&mut self, owner: u64, after: u64, limit: usize) -> StoreResult<Vec<ConvRow>> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE uid_a = ? AND version > ? ORDER BY version ASC LIMIT ?"
        );
        self.rows(
            &sql,
            vec![owner.into(), after.into(), (limit as u64).into()],
            conversation,
        )
    }

    fn visible_by_recency(
        &mut self,
        owner: u64,
        below: u64,
        limit: usize,
    ) -> StoreResult<Vec<ConvRow>> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE uid_a = ? AND is_del = 0 AND last_msg_id < ? ORDER BY last_msg_id DESC LIMIT ?"
        );
        self.rows(
            &sql,
            vec![owner.into(), below.into(), (limit as u64).into()],
            conversation,
        )
    }

    fn total_unread(&mut self, owner: u64) -> StoreResult<u64> {
        self.sum_unread(owner)
    }

    fn unread_by_peer(&mut self, owner: u64) -> StoreResult<Vec<(u64, u64)>> {
        self.rows(
            "SELECT uid_b, CAST(last_seq - read_seq AS UNSIGNED) FROM conversations WHERE uid_a = ? AND is_del = 0 AND last_seq > read_seq",
            vec![owner.into()],
            |mut row| Ok((take(&mut row, 0)?, take(&mut row, 1)?)),
        )
    }

    fn conversations_with(&mut self, owner: u64, peers: &[u64]) -> StoreResult<Vec<ConvRow>> {
        let keys: Vec<(u64, u64)> = peers.iter().map(|peer| (owner, *peer)).collect();
        self.load_conversations(&keys)
    }

    fn profiles(&mut self, uids: &[u64]) -> StoreResult<Vec<pb::Profile>> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT uid, nickname, avatar_url FROM profiles WHERE uid IN ({})",
            vec!["?"; uids.len()].join(",")
        );
        let params = uids.iter().map(|u| Value::from(*u)).collect();
        self.rows(&sql, params, |mut row| {
            Ok(pb::Profile {
                uid: take(&mut row, 0)?,
                nickname: take(&mut row, 1)?,
                avatar_url: take(&mut row, 2)?,
            })
        })
    }

    fn notices(&mut self, after: u64, limit: usize) -> StoreResult<Vec<Notice>> {
        self.rows(
            "SELECT msg_id, to_uid, from_uid, seq, created_ms FROM outbox WHERE msg_id > ? ORDER BY msg_id LIMIT ?",
            vec![after.into(), (limit as u64).into()],
            |mut row| {
                Ok(Notice {
                    msg_id: take(&mut row, 0)?,
                    to_uid: take(&mut row, 1)?,
                    from_uid: take(&mut row, 2)?,
                    seq: take(&mut row, 3)?,
                    created_ms: take(&mut row, 4)?,
                })
            },
        )
    }

    fn notice_count(&mut self) -> StoreResult<u64> {
        self.scalar("SELECT COUNT(*) FROM outbox", Params::Empty)
    }
}
