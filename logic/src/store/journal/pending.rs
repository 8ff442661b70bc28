//! What the journal holds that SQLite may not have yet: the newest
//! journaled value of every message and conversation row of the records
//! the applier had not written when the current batch began.
//!
//! The writer owns it. At the start of each batch it drops the records the
//! applier has committed, then reads through it and, for what it does not
//! hold, through a SQLite snapshot taken after that: every record is then
//! either here or in the snapshot (or both, and the two agree).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use protocol::pb;

use super::file::Record;
use crate::store::ConvRow;

/// Where a value sits: the record that wrote it, and its index there.
/// Entries point into the records the overlay keeps anyway, so adding a
/// batch copies no message content.
type At = (Arc<Record>, usize);

#[derive(Default)]
pub struct Pending {
    /// By from_uid, then client_msg_id (the dedup key).
    messages: HashMap<u64, HashMap<String, At>>,
    /// By (owner, peer), ordered so one owner's rows are a range.
    rows: BTreeMap<(u64, u64), At>,
    /// Records journaled and not known to be applied, oldest first.
    records: VecDeque<Arc<Record>>,
}

impl Pending {
    pub fn add(&mut self, record: Arc<Record>) {
        for (n, m) in record.messages.iter().enumerate() {
            self.messages
                .entry(m.from_uid)
                .or_default()
                .insert(m.client_msg_id.clone(), (record.clone(), n));
        }
        for (n, r) in record.rows.iter().enumerate() {
            self.rows.insert((r.owner, r.peer), (record.clone(), n));
        }
        self.records.push_back(record);
    }

    /// SQLite holds every record up to `applied`: drop their entries,
    /// unless a later record replaced them (those stay until it is applied).
    pub fn forget_applied(&mut self, applied: u64) {
        while let Some(record) = self.records.front() {
            if record.lsn > applied {
                break;
            }
            let lsn = record.lsn;
            for m in &record.messages {
                if let Some(by_id) = self.messages.get_mut(&m.from_uid) {
                    if by_id
                        .get(&m.client_msg_id)
                        .is_some_and(|(r, _)| r.lsn <= lsn)
                    {
                        by_id.remove(&m.client_msg_id);
                    }
                    if by_id.is_empty() {
                        self.messages.remove(&m.from_uid);
                    }
                }
            }
            for r in &record.rows {
                let key = (r.owner, r.peer);
                if self.rows.get(&key).is_some_and(|(rec, _)| rec.lsn <= lsn) {
                    self.rows.remove(&key);
                }
            }
            self.records.pop_front();
        }
    }

    /// Records journaled and not known to be applied.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn sent(&self, from: u64, client_msg_id: &str) -> Option<&pb::Message> {
        let (record, n) = self.messages.get(&from)?.get(client_msg_id)?;
        record.messages.get(*n)
    }

    pub fn row(&self, owner: u64, peer: u64) -> Option<ConvRow> {
        self.rows.get(&(owner, peer)).map(row_at)
    }

    pub fn rows_of(&self, owner: u64) -> impl Iterator<Item = ConvRow> + '_ {
        self.rows
            .range((owner, 0)..=(owner, u64::MAX))
            .map(|(_, at)| row_at(at))
    }

    /// The highest journaled seq of the pair, if it has pending messages.
    pub fn last_seq(&self, small: u64, big: u64) -> Option<u64> {
        [(small, big), (big, small)]
            .iter()
            .filter_map(|(from, to)| {
                let by_id = self.messages.get(from)?;
                by_id
                    .values()
                    .filter_map(|(r, n)| r.messages.get(*n))
                    .filter(|m| m.to_uid == *to)
                    .map(|m| m.seq)
                    .max()
            })
            .max()
    }
}

fn row_at((record, n): &At) -> ConvRow {
    ConvRow::from(&record.rows[*n])
}

#[cfg(test)]
mod tests {
    use super::super::file::Row;
    use super::*;

    fn record(lsn: u64, read_seq: u64) -> Record {
        let mut row = ConvRow::new(1, 2);
        row.read_seq = read_seq;
        Record {
            lsn,
            time_ms: 0,
            messages: vec![pb::Message {
                msg_id: lsn,
                from_uid: 1,
                to_uid: 2,
                seq: lsn,
                client_msg_id: format!("c{lsn}"),
                ..Default::default()
            }],
            rows: vec![Row::from(&row)],
            profiles: Vec::new(),
            ..Default::default()
        }
    }

    #[test]
    fn an_entry_replaced_by_a_later_record_outlives_the_earlier_ones_apply() {
        let mut pending = Pending::default();
        pending.add(Arc::new(record(1, 10)));
        pending.add(Arc::new(record(2, 20)));
        assert_eq!(pending.row(1, 2).map(|r| r.read_seq), Some(20));
        assert_eq!(pending.last_seq(1, 2), Some(2));
        pending.forget_applied(1);
        assert_eq!(pending.row(1, 2).map(|r| r.read_seq), Some(20));
        assert!(pending.sent(1, "c1").is_none());
        assert!(pending.sent(1, "c2").is_some());
        assert_eq!(pending.len(), 1);
        pending.forget_applied(2);
        assert!(pending.row(1, 2).is_none());
        assert_eq!(pending.rows_of(1).count(), 0);
        assert_eq!(pending.len(), 0);
    }
}
