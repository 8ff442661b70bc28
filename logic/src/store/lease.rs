//! The writer's lease on MySQL: which logic process may write, and the
//! fence every write checks.
//!
//! Seqs, msg_ids and sync versions are assigned in one process's memory, so
//! each database has one writer at a time. A second `im-logic serve` on the
//! same databases is a standby: it waits for the lease and takes over when
//! the writer stops renewing it.
//!
//! Each database has one row, `im_writer (holder, epoch, lease_until_ms)`,
//! on the database's clock (so the logic hosts' clocks do not matter):
//! - **Taking** (`try_take`): when the lease has run out, one conditional
//!   UPDATE makes this process the holder with `epoch + 1`. First it kills
//!   the connections the old writer registered (`im_writer_conns`) on this
//!   server: a frozen writer's open transaction holds row locks, and would
//!   hold them until the server's `wait_timeout`.
//! - **Renewing** (`renew`, every third of the lease): an UPDATE that only
//!   matches its own epoch. No match: another process took over, and this
//!   one must stop (`keep` exits the process).
//! - **The fence** (`Fence::check`, in every write transaction): the
//!   transaction's first statement updates the row only under its own
//!   epoch; zero rows and the batch rolls back, storing nothing. This is
//!   what keeps a writer that was frozen past its lease (SIGSTOP, a VM
//!   pause) from writing when it wakes believing it still holds the lease.
//!   Clocks only decide when a standby may try; the epoch, checked inside
//!   each transaction, decides who writes. On Galera the same UPDATE makes
//!   the row part of every batch's write set, so a batch certified after a
//!   takeover on another node conflicts and rolls back (GET_LOCK, local to
//!   one node, could not do this).
//!
//! Several databases (shards): the lease is taken on each, in shard order,
//! and each keeps its own epoch; the fence of a shard's transaction is that
//! shard's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use mysql::{Pool, PooledConn};

use super::{StoreError, StoreResult};

/// The database's clock, in Unix ms.
const NOW_MS: &str = "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS UNSIGNED)";

/// This server, as the killer of a frozen writer's connections must name
/// it (connection ids are per server; on Galera, per node).
const SERVER: &str = "CONCAT(@@hostname, ':', @@port)";

/// The process exits with this when it loses the lease: a supervisor
/// restarts it, and it comes back as a standby.
pub const EXIT_FENCED: i32 = 75;

/// Who holds the lease, as a standby sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// This process: the writer, from this epoch (per database).
    Us,
    /// Another process, whose lease runs `left_ms` more.
    Other { holder: String, left_ms: u64 },
}

/// The epochs this process holds, one per database, shared by the lease
/// and every writer connection.
pub struct Fence {
    /// Names this process run: host, pid and start time.
    holder: String,
    /// 0: not held.
    epochs: Vec<AtomicU64>,
    /// A write or a renewal found a newer epoch.
    lost: AtomicBool,
    /// No renewal succeeded for a whole lease: a standby may be taking
    /// over, so the gateways should look for it (the link server drops
    /// them while this holds).
    lapsed: AtomicBool,
}

impl Fence {
    pub(crate) fn new(databases: usize) -> Arc<Fence> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        Arc::new(Fence {
            holder: format!(
                "{host}:{}:{}",
                std::process::id(),
                runtime::clock::unix_ms()
            ),
            epochs: (0..databases).map(|_| AtomicU64::new(0)).collect(),
            lost: AtomicBool::new(false),
            lapsed: AtomicBool::new(false),
        })
    }

    /// The epoch held on database `shard` (0: none).
    pub fn epoch(&self, shard: usize) -> u64 {
        self.epochs
            .get(shard)
            .map_or(0, |e| e.load(Ordering::Acquire))
    }

    /// Whether a newer writer has been seen.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Whether the lease went a whole lease without a renewal (and has not
    /// been renewed since).
    pub fn lapsed(&self) -> bool {
        self.lapsed.load(Ordering::Acquire)
    }

    /// The first statement of a write transaction on database `shard`:
    /// refused (and marked lost) if another process took the lease.
    pub(crate) fn check(&self, conn: &mut PooledConn, shard: usize) -> StoreResult<()> {
        let epoch = self.epoch(shard);
        conn.exec_drop(
            "UPDATE im_writer SET writes = writes + 1 WHERE id = 0 AND epoch = ?",
            (epoch,),
        )
        .map_err(super::mysql::db)?;
        if conn.affected_rows() == 1 && epoch != 0 {
            return Ok(());
        }
        self.lost.store(true, Ordering::Release);
        Err(StoreError::Fenced(format!(
            "this process's writer epoch {epoch} was superseded: another logic process took the lease"
        )))
    }

    /// Records a writer connection, so that a standby taking over can kill
    /// it should this process freeze inside a transaction.
    pub(crate) fn register(&self, conn: &mut PooledConn, shard: usize) -> StoreResult<()> {
        conn.exec_drop(
            format!(
                "INSERT INTO im_writer_conns (server, conn_id, epoch) VALUES ({SERVER}, CONNECTION_ID(), ?)
                 ON DUPLICATE KEY UPDATE epoch = VALUES(epoch)"
            ),
            (self.epoch(shard),),
        )
        .map_err(super::mysql::db)
    }
}

/// The lease on every database of one MySQL backend.
pub struct WriterLease {
    pools: Vec<Pool>,
    fence: Arc<Fence>,
    lease_ms: u64,
}

impl WriterLease {
    pub(crate) fn new(pools: Vec<Pool>, fence: Arc<Fence>, lease_ms: u64) -> WriterLease {
        WriterLease {
            pools,
            fence,
            lease_ms,
        }
    }

    /// The name this process holds the lease under.
    pub fn holder(&self) -> &str {
        &self.fence.holder
    }

    /// The epochs and the lease's state, for whoever must act on a lapse.
    pub fn fence(&self) -> Arc<Fence> {
        self.fence.clone()
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// Takes the lease on every database where it has run out (or is
    /// already ours). `Holder::Us` once all are held.
    pub fn try_take(&self) -> StoreResult<Holder> {
        for (shard, pool) in self.pools.iter().enumerate() {
            if let Holder::Other { holder, left_ms } = self.take_one(pool, shard)? {
                return Ok(Holder::Other { holder, left_ms });
            }
        }
        Ok(Holder::Us)
    }

    fn take_one(&self, pool: &Pool, shard: usize) -> StoreResult<Holder> {
        let mut conn = pool.get_conn().map_err(super::mysql::db)?;
        // Never wait long behind a lock: a frozen holder's is killed below.
        let _ = conn.query_drop("SET SESSION innodb_lock_wait_timeout = 2");
        // On Galera: read what the other nodes committed first.
        let _ = conn.query_drop("SET SESSION wsrep_sync_wait = 1");
        let row: Option<(String, u64, u64, u64)> = conn
            .query_first(format!(
                "SELECT holder, epoch, lease_until_ms, {NOW_MS} FROM im_writer WHERE id = 0"
            ))
            .map_err(super::mysql::db)?;
        let Some((holder, epoch, until_ms, now_ms)) = row else {
            return Err(StoreError::Corrupt("im_writer has no row".into()));
        };
        let ours = holder == self.fence.holder && epoch == self.fence.epoch(shard);
        if !ours && !holder.is_empty() && until_ms >= now_ms {
            return Ok(Holder::Other {
                holder,
                left_ms: until_ms - now_ms,
            });
        }
        if !ours && !holder.is_empty() {
            self.kill_writers_before(&mut conn, epoch + 1);
        }
        conn.exec_drop(
            format!(
                "UPDATE im_writer SET holder = ?, epoch = epoch + 1, lease_until_ms = {NOW_MS} + ?
                 WHERE id = 0 AND epoch = ?"
            ),
            (&self.fence.holder, self.lease_ms, epoch),
        )
        .map_err(super::mysql::db)?;
        if conn.affected_rows() != 1 {
            // Another standby was quicker.
            return Ok(Holder::Other {
                holder: "another standby".into(),
                left_ms: self.lease_ms,
            });
        }
        self.fence.epochs[shard].store(epoch + 1, Ordering::Release);
        let _ = conn.exec_drop("DELETE FROM im_writer_conns WHERE epoch <= ?", (epoch,));
        Ok(Holder::Us)
    }

    /// Kills the connections writers before `epoch` registered on this
    /// server: a transaction they left open (the process frozen inside it)
    /// rolls back and frees its locks.
    fn kill_writers_before(&self, conn: &mut PooledConn, epoch: u64) {
        let ids: Vec<u64> = conn
            .exec(
                format!(
                    "SELECT conn_id FROM im_writer_conns WHERE server = {SERVER} AND epoch < ?"
                ),
                (epoch,),
            )
            .unwrap_or_default();
        for id in ids {
            // Gone already is the usual answer.
            if conn.query_drop(format!("KILL {id}")).is_ok() {
                log::warn!(
                    "killed connection {id} of the previous writer (its transaction rolls back)"
                );
            }
        }
    }

    /// Extends the lease on every database; `Err(Fenced)` if another
    /// process took it.
    pub fn renew(&self) -> StoreResult<()> {
        for (shard, pool) in self.pools.iter().enumerate() {
            let mut conn = pool.get_conn().map_err(super::mysql::db)?;
            conn.exec_drop(
                format!(
                    "UPDATE im_writer SET lease_until_ms = {NOW_MS} + ?, renewals = renewals + 1
                     WHERE id = 0 AND epoch = ? AND holder = ?"
                ),
                (self.lease_ms, self.fence.epoch(shard), &self.fence.holder),
            )
            .map_err(super::mysql::db)?;
            if conn.affected_rows() != 1 {
                self.fence.lost.store(true, Ordering::Release);
                return Err(StoreError::Fenced(format!(
                    "renewal refused: epoch {} on shard {shard} was superseded",
                    self.fence.epoch(shard)
                )));
            }
        }
        Ok(())
    }

    /// Gives the lease up at a clean stop, so that a standby takes over at
    /// its next try instead of after the lease.
    pub fn release(&self) {
        for (shard, pool) in self.pools.iter().enumerate() {
            let released = pool.get_conn().and_then(|mut conn| {
                conn.exec_drop(
                    "UPDATE im_writer SET lease_until_ms = 0 WHERE id = 0 AND epoch = ? AND holder = ?",
                    (self.fence.epoch(shard), &self.fence.holder),
                )
            });
            if let Err(e) = released {
                log::warn!("could not release the writer lease on shard {shard}: {e}");
            }
        }
    }

    /// Waits until this process holds the lease: the standby's loop, a try
    /// every third of the lease. `None` if `stopping` is set first.
    pub fn wait_for(&self, stopping: &AtomicBool) -> Option<()> {
        let mut said = String::new();
        while !stopping.load(Ordering::Acquire) {
            match self.try_take() {
                Ok(Holder::Us) => return Some(()),
                Ok(Holder::Other { holder, left_ms }) => {
                    if said != holder {
                        log::info!(
                            "standby: the writer lease is held by {holder} ({left_ms} ms left); taking over when it runs out"
                        );
                        said = holder;
                    }
                }
                Err(e) => log::warn!("standby: cannot read the writer lease: {e}"),
            }
            let until = Instant::now() + self.lease() / 3;
            while Instant::now() < until && !stopping.load(Ordering::Acquire) {
                thread::sleep(Duration::from_millis(50));
            }
        }
        None
    }

    /// Renews the lease until `stop`, on a thread of its own, then gives it
    /// up. If another process took it (a renewal or a write found a newer
    /// epoch), the process exits with [`EXIT_FENCED`] at once: it must not
    /// write, and its gateways must move to the new writer. Acked messages
    /// are durable; what was in flight is answered UNAVAILABLE by the
    /// gateways. A renewal that merely fails (the database unreachable) is
    /// retried: writes fail meanwhile anyway, and once the database answers
    /// either the renewal succeeds (nobody took over) or it is fenced. After
    /// a whole lease without one the fence says `lapsed`, and the link
    /// server lets its gateways go (to a standby that can reach the
    /// database) until a renewal succeeds.
    pub fn keep(self, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name("im-lease".into())
            .spawn(move || {
                let every = self.lease() / 3;
                let mut renewed = Instant::now();
                let mut lapsed = false;
                let mut next = renewed + every;
                while !stop.load(Ordering::Acquire) {
                    if self.fence.lost() {
                        self.exit("a write was fenced");
                    }
                    if Instant::now() >= next {
                        let tried = Instant::now();
                        match self.renew() {
                            Ok(()) => {
                                if lapsed {
                                    log::info!(
                                        "writer lease renewed again: nobody took over; taking gateways again"
                                    );
                                    self.fence.lapsed.store(false, Ordering::Release);
                                }
                                (renewed, lapsed) = (tried, false);
                            }
                            Err(e @ StoreError::Fenced(_)) => self.exit(&e.to_string()),
                            Err(e) => log::warn!("writer lease renewal failed: {e}"),
                        }
                        // Measured from the start of the last renewal that
                        // succeeded, and never right after one: a renewal
                        // slower than a lease still holds the lease it won.
                        if !lapsed && renewed != tried && renewed.elapsed() >= self.lease() {
                            lapsed = true;
                            self.fence.lapsed.store(true, Ordering::Release);
                            log::error!(
                                "writer lease not renewed for a whole lease: letting the gateways go, a standby may take over (this process's writes are then fenced)"
                            );
                        }
                        next = Instant::now() + every;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                self.release();
            })
    }

    fn exit(&self, why: &str) -> ! {
        log::error!(
            "writer lease lost ({why}): fenced, this process writes nothing more; exiting so that a restart makes it a standby"
        );
        std::process::exit(EXIT_FENCED);
    }
}
