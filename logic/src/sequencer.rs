//! The sequencer: the one place where seqs, msg_ids and change versions
//! are assigned, and the rules every write follows.
//!
//! A batch of writes is applied inside one transaction (the group-commit
//! thread, `commit.rs`, forms the batches). Seq assignment happens here,
//! after the dedup check against storage: a seq is consumed only by a
//! message that is really inserted, so seqs have no gaps, and a failed
//! commit takes its seqs back with it (the cache of conversation rows only
//! learns committed state). This needs one writer per conversation: one
//! writer thread per store (per shard), which a single node has by
//! construction.
//!
//! A request kind that writes adds its [`WriteOp`], its [`Outcome`] and its
//! rule in [`Sequencer::apply_in_transaction`]; nothing else here changes.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use protocol::pb;

use crate::cache::RowChange;
use crate::ids::MsgIds;
use crate::store::{ConvRow, Notice, Recovered, Revocation, SentKey, StoreError, WriteStore};

/// A write, as the pipeline hands it over (already validated).
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Send {
        from: u64,
        to: u64,
        client_msg_id: String,
        content_type: u32,
        content: Vec<u8>,
        /// Record an offline notification with the message (its recipient
        /// had no device online), unless it is a duplicate.
        notify: bool,
    },
    /// Take notifications the outbox is done with out of it.
    NoticesDone { notices: Vec<Notice> },
    /// Mark `owner`'s side of the conversation with `peer` read up to `seq`.
    Read { owner: u64, peer: u64, seq: u64 },
    /// Read up to the end, then hide the conversation and its history from `owner`.
    Delete { owner: u64, peer: u64 },
    SetProfile {
        uid: u64,
        nickname: String,
        avatar_url: String,
    },
    /// `uid`'s tokens issued at or before `before_ms` stop logging in.
    Revoke { uid: u64, before_ms: u64 },
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
    Revoked(Revocation),
    NoticesDone,
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
                WriteOp::SetProfile { .. }
                | WriteOp::Revoke { .. }
                | WriteOp::NoticesDone { .. } => {}
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
        let mut revocations = Vec::new();
        let mut notices = Vec::new();
        let mut notices_done = Vec::new();
        for op in ops {
            let outcome = match op {
                WriteOp::Send {
                    from,
                    to,
                    client_msg_id,
                    content_type,
                    content,
                    notify,
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
                        if *notify {
                            notices.push(Notice {
                                msg_id: message.msg_id,
                                to_uid: *to,
                                from_uid: *from,
                                seq,
                                created_ms: now_ms,
                            });
                        }
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
                WriteOp::Revoke { uid, before_ms } => {
                    let revocation = Revocation {
                        uid: *uid,
                        before_ms: *before_ms,
                    };
                    revocations.push(revocation);
                    Outcome::Revoked(revocation)
                }
                WriteOp::NoticesDone { notices } => {
                    notices_done.extend_from_slice(notices);
                    Outcome::NoticesDone
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
        if !revocations.is_empty() {
            store.put_revocations(&revocations)?;
        }
        if !notices.is_empty() {
            store.put_notices(&notices)?;
        }
        if !notices_done.is_empty() {
            store.remove_notices(&notices_done)?;
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

#[cfg(test)]
mod tests {
    //! The sequencer's rules on a real (embedded) store: seqs per
    //! conversation without gaps, dedup against what is stored, a failed
    //! commit that takes its seqs back, reads clamped and never moved back,
    //! deletes that hide, and versions that only grow.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::store::testing::{FailingCommit, send, send_notifying, sent, temp_sqlite};

    struct Fixture {
        dir: std::path::PathBuf,
        store: FailingCommit,
        fail: Arc<AtomicBool>,
        sequencer: Sequencer,
    }

    impl Fixture {
        fn new(name: &str) -> Fixture {
            let (dir, inner) = temp_sqlite(name);
            let fail = Arc::new(AtomicBool::new(false));
            Fixture {
                dir,
                store: FailingCommit {
                    inner,
                    fail: fail.clone(),
                },
                fail,
                sequencer: Sequencer::new(Recovered::default(), 3, 1000),
            }
        }

        fn apply(&mut self, ops: &[WriteOp], now_ms: u64) -> Result<Applied, StoreError> {
            let ops: Vec<&WriteOp> = ops.iter().collect();
            self.sequencer.apply(&mut self.store, &ops, now_ms)
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn read_of(outcome: &Outcome) -> &ReadOutcome {
        match outcome {
            Outcome::Read(read) | Outcome::Deleted(read) => read,
            other => panic!("not a read: {other:?}"),
        }
    }

    #[test]
    fn each_conversation_counts_its_own_seqs_whoever_sends() {
        let mut f = Fixture::new("seq-gapless");
        let batch = f
            .apply(
                &[
                    send(1, 2, "a"),
                    send(2, 1, "b"),
                    send(1, 3, "c"),
                    send(1, 2, "d"),
                ],
                10,
            )
            .unwrap();
        let seqs: Vec<u64> = batch.outcomes.iter().map(|o| sent(o).0).collect();
        assert_eq!(seqs, vec![1, 2, 1, 3]);
        let next = f.apply(&[send(2, 1, "e")], 11).unwrap();
        assert_eq!(sent(&next.outcomes[0]), (4, false));
    }

    #[test]
    fn a_stored_client_msg_id_is_the_original_in_this_batch_and_later() {
        let mut f = Fixture::new("seq-dedup");
        let batch = f.apply(&[send(1, 2, "x"), send(1, 2, "x")], 10).unwrap();
        assert_eq!(sent(&batch.outcomes[0]), (1, false));
        assert_eq!(sent(&batch.outcomes[1]), (1, true));
        let later = f.apply(&[send(1, 2, "x"), send(1, 2, "y")], 11).unwrap();
        assert_eq!(sent(&later.outcomes[0]), (1, true));
        assert_eq!(sent(&later.outcomes[1]), (2, false));
    }

    #[test]
    fn a_failed_commit_takes_its_seqs_and_ids_back() {
        let mut f = Fixture::new("seq-failed");
        let first = f.apply(&[send(1, 2, "a")], 10).unwrap();
        let Outcome::Sent { message: a, .. } = &first.outcomes[0] else {
            panic!()
        };
        f.fail.store(true, Ordering::SeqCst);
        assert!(f.apply(&[send(1, 2, "b"), send(2, 1, "c")], 11).is_err());
        f.fail.store(false, Ordering::SeqCst);
        let retry = f.apply(&[send(2, 1, "c")], 12).unwrap();
        let Outcome::Sent {
            message: c,
            duplicate,
        } = &retry.outcomes[0]
        else {
            panic!()
        };
        assert_eq!((c.seq, *duplicate), (2, false), "no gap where b failed");
        assert!(c.msg_id > a.msg_id);
    }

    /// The outbox's notices as stored, by msg_id.
    fn stored_notices(f: &Fixture) -> Vec<Notice> {
        let mut reader =
            crate::store::sqlite::Sqlite::open(&f.dir, crate::config::Synchronous::Normal)
                .and_then(|s| crate::store::Backend::reader(&s))
                .unwrap();
        reader.notices(0, 100).unwrap()
    }

    #[test]
    fn a_notice_is_stored_with_its_message_only() {
        let mut f = Fixture::new("seq-notice");
        let notify = |id: &str| send_notifying(1, 2, id, true);
        let done = f.apply(&[notify("a"), send(1, 2, "b")], 10).unwrap();
        let Outcome::Sent { message: a, .. } = &done.outcomes[0] else {
            panic!()
        };
        let notices = stored_notices(&f);
        assert_eq!(
            notices,
            vec![Notice {
                msg_id: a.msg_id,
                to_uid: 2,
                from_uid: 1,
                seq: 1,
                created_ms: 10,
            }]
        );
        // A duplicate records nothing; a failed commit takes its notice back.
        f.apply(&[notify("a")], 11).unwrap();
        f.fail.store(true, Ordering::SeqCst);
        assert!(f.apply(&[notify("c")], 12).is_err());
        f.fail.store(false, Ordering::SeqCst);
        assert_eq!(stored_notices(&f), notices);
        f.apply(&[WriteOp::NoticesDone { notices }], 13).unwrap();
        assert!(stored_notices(&f).is_empty());
    }

    #[test]
    fn reads_are_clamped_never_move_back_and_tell_the_unread_left() {
        let mut f = Fixture::new("seq-read");
        f.apply(&[send(1, 2, "a"), send(1, 2, "b"), send(1, 2, "c")], 10)
            .unwrap();
        let read = |owner, peer, seq| WriteOp::Read { owner, peer, seq };
        let done = f.apply(&[read(2, 1, 2)], 11).unwrap();
        let outcome = read_of(&done.outcomes[0]);
        assert!(outcome.changed);
        assert_eq!(
            (outcome.seq, outcome.unread, outcome.total_unread),
            (2, 1, 1)
        );
        let back = f.apply(&[read(2, 1, 1)], 12).unwrap();
        let outcome = read_of(&back.outcomes[0]);
        assert!(!outcome.changed, "a read never moves back");
        assert_eq!(outcome.seq, 2);
        let past = f.apply(&[read(2, 1, 99)], 13).unwrap();
        let outcome = read_of(&past.outcomes[0]);
        assert_eq!(
            (outcome.seq, outcome.unread),
            (3, 0),
            "clamped to the last seq"
        );
        // The sender's side of the conversation learned the receipt.
        let rows = f.store.load_conversations(&[(1, 2)]).unwrap();
        assert_eq!(rows[0].peer_read_seq, 3);
        // A conversation that does not exist reads as nothing, and changes nothing.
        let none = f.apply(&[read(5, 6, 1)], 14).unwrap();
        assert!(!read_of(&none.outcomes[0]).changed);
        assert!(none.changes.is_empty());
    }

    #[test]
    fn a_delete_reads_to_the_end_and_hides_until_the_next_message() {
        let mut f = Fixture::new("seq-delete");
        f.apply(&[send(1, 2, "a"), send(1, 2, "b")], 10).unwrap();
        let done = f
            .apply(&[WriteOp::Delete { owner: 2, peer: 1 }], 11)
            .unwrap();
        assert_eq!(read_of(&done.outcomes[0]).unread, 0);
        let row = &f.store.load_conversations(&[(2, 1)]).unwrap()[0];
        assert!(row.hidden);
        assert_eq!(row.deleted_up_to, 2);
        f.apply(&[send(1, 2, "c")], 12).unwrap();
        let row = &f.store.load_conversations(&[(2, 1)]).unwrap()[0];
        assert!(!row.hidden, "the next message shows it again");
        assert_eq!((row.deleted_up_to, row.last_seq), (2, 3));
    }

    #[test]
    fn every_change_takes_a_higher_version_and_is_reported_for_the_caches() {
        let mut f = Fixture::new("seq-version");
        let first = f.apply(&[send(1, 2, "a")], 10).unwrap();
        let mut changed: Vec<(u64, u64, u64)> = first
            .changes
            .iter()
            .map(|c| (c.owner, c.peer, c.unread))
            .collect();
        changed.sort();
        assert_eq!(changed, vec![(1, 2, 0), (2, 1, 1)]);
        let rows = f.store.load_conversations(&[(1, 2), (2, 1)]).unwrap();
        let before = rows.iter().map(|r| r.version).max().unwrap();
        f.apply(
            &[WriteOp::SetProfile {
                uid: 1,
                nickname: "n".into(),
                avatar_url: String::new(),
            }],
            11,
        )
        .unwrap();
        f.apply(&[send(2, 1, "b")], 12).unwrap();
        let rows = f.store.load_conversations(&[(1, 2), (2, 1)]).unwrap();
        assert!(rows.iter().all(|r| r.version > before));
    }
}
