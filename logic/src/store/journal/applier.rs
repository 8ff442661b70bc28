//! The applier thread: copies journaled batches into SQLite, many per
//! transaction, off the path of any answer.
//!
//! This is where the journal pays off. A SQLite commit rewrites every
//! B-tree page it touched (a leaf per conversation, per sender, per index),
//! whatever the number of rows on it; the applier takes everything journaled
//! since its last commit, keeps only the newest value of each conversation
//! row, and commits once, so under load each page is written once per many
//! batches instead of once per batch.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::Shared;
use super::file::{self, Record};
use crate::store::sqlite::SqliteConn;
use crate::store::{ConvRow, StoreError, StoreResult, WriteStore};

/// Most records in one SQLite transaction.
const MAX_RECORDS: usize = 512;

/// How long the applier gathers records before a commit, unless a reader
/// is waiting for them. Longer: fewer page rewrites per message, more
/// pending records in memory.
const GATHER: Duration = Duration::from_millis(100);

/// Writes `records` (consecutive, in lsn order) into SQLite in one
/// transaction, with the lsn of the last: all or nothing.
pub fn apply(conn: &mut SqliteConn, records: &[Arc<Record>]) -> StoreResult<()> {
    let Some(last) = records.last() else {
        return Ok(());
    };
    conn.begin()?;
    let result = (|| {
        let mut rows: HashMap<(u64, u64), ConvRow> = HashMap::new();
        for record in records {
            conn.insert_messages(&record.messages)?;
            for row in &record.rows {
                rows.insert((row.owner, row.peer), ConvRow::from(row));
            }
            if !record.revocations.is_empty() {
                conn.put_revocations(&record.revocations)?;
            }
            if !record.profiles.is_empty() {
                conn.put_profiles(&record.profiles, record.time_ms)?;
            }
            // In record order: a notice delivered in a later record was
            // added by an earlier one.
            conn.put_notices(&record.notices)?;
            conn.remove_notices(&record.notices_done)?;
        }
        conn.put_conversations(&rows.values().collect::<Vec<_>>())?;
        conn.set_journal_lsn(last.lsn)?;
        conn.commit()
    })();
    if result.is_err() {
        conn.rollback();
    }
    result
}

/// Starts the applier. It ends when `records` is disconnected and drained,
/// or, while SQLite is failing, when the store is stopping (the journal
/// keeps what was not applied; the next start replays it).
pub fn spawn(
    mut conn: SqliteConn,
    records: Receiver<Arc<Record>>,
    nudges: Receiver<()>,
    shared: Arc<Shared>,
    dir: PathBuf,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("im-store-applier".into())
        .spawn(move || {
            shared.applier_started();
            let mut batch = Vec::with_capacity(MAX_RECORDS);
            // Whether the last try to prepare a spare segment failed: said
            // once, not after every batch while the disk stays full.
            let mut spare_failing = false;
            while let Ok(first) = records.recv() {
                batch.push(first);
                gather(&mut batch, &records, &nudges);
                let mut delay = Duration::from_millis(10);
                while let Err(e) = apply(&mut conn, &batch) {
                    if shared.is_stopping() {
                        log::error!("journal applier stopping with SQLite failing: {e}");
                        return;
                    }
                    if let StoreError::DiskFull(why) = &e {
                        shared.set_disk_full(Some(why.clone()));
                    } else {
                        log::error!("journal applier: SQLite refused a commit ({e}); retrying");
                    }
                    thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                shared.set_disk_full(None);
                shared.mark_applied(&batch);
                batch.clear();
                match file::prepare_spare(&dir) {
                    Err(e) if !spare_failing => {
                        spare_failing = true;
                        log::warn!("cannot prepare the next journal segment: {e}; retrying after each batch");
                    }
                    Err(_) => {}
                    Ok(_) if spare_failing => {
                        spare_failing = false;
                        log::info!("the next journal segment is prepared again");
                    }
                    Ok(_) => {}
                }
            }
        })
}

/// Adds records to the batch until it is full, `GATHER` has passed, or a
/// reader nudges (it waits for what is journaled).
fn gather(batch: &mut Vec<Arc<Record>>, records: &Receiver<Arc<Record>>, nudges: &Receiver<()>) {
    let deadline = Instant::now() + GATHER;
    while batch.len() < MAX_RECORDS {
        while let Ok(record) = records.try_recv() {
            batch.push(record);
            if batch.len() == MAX_RECORDS {
                return;
            }
        }
        if nudges.try_recv().is_ok() {
            return;
        }
        crossbeam_channel::select! {
            recv(records) -> record => match record {
                Ok(record) => batch.push(record),
                Err(_) => return,
            },
            recv(nudges) -> _ => return,
            default(deadline.saturating_duration_since(Instant::now())) => return,
        }
    }
}
