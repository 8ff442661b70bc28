//! Several databases as one store: the shard map, and the writer and
//! reader that route each row to its shard.
//!
//! Where rows live (`storage.mysql_urls` lists the shards in shard order):
//!
//! - a conversation's **messages** on the shard of its pair,
//!   `pair_shard(small_uid, big_uid)`: both sides' history is one query on
//!   one shard, and the message's dedup key lives with it;
//! - a user's **conversation rows** on the shard of the owner,
//!   `user_shard(uid)`: one user's list, unread total and sync changes are
//!   one index range on one shard;
//! - a user's **profile** on `user_shard(uid)`.
//!
//! One batch may touch several shards: the writer opens a transaction on
//! each shard it touches and commits them in shard order. If a commit fails
//! after an earlier shard committed, the batch is answered UNAVAILABLE (a
//! retry finds the stored message by its dedup key and answers it as a
//! duplicate, with its original ids) and the conversation rows on the later
//! shard may be behind their messages. Rows are therefore repaired as they
//! are loaded: a row's `last_seq` is never taken lower than the highest seq
//! stored for its pair, so seqs stay gapless and unique. (The row's list
//! position and unread count catch up with the pair's next message.)
//!
//! Dedup across shards: a retry goes to the same recipient, so it finds
//! the original on the pair's shard. A client that reuses a client_msg_id
//! for a *different* recipient is caught by the recent-id cache, but after
//! that only if both recipients' pairs share a shard.

use super::{
    ConvRow, Notice, Pair, ReadStore, Recovered, Revocation, SentKey, StoreError, StoreResult,
    WriteStore,
};
use protocol::pb;
use std::collections::HashMap;

/// Which shard a row belongs to. The functions are part of the storage
/// format: changing them, or the shard count, moves rows, which a running
/// deployment must never do silently (each database records its place;
/// see `mysql.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMap {
    pub shards: usize,
}

/// SplitMix64's finalizer: every input bit moves every output bit, so
/// consecutive uids spread evenly.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl ShardMap {
    pub fn user_shard(&self, uid: u64) -> usize {
        (mix(uid) % self.shards as u64) as usize
    }

    pub fn pair_shard(&self, pair: Pair) -> usize {
        (mix(mix(pair.small) ^ pair.big) % self.shards as u64) as usize
    }

    /// `items` split by shard, keeping their order within each shard.
    fn split<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        shard: impl Fn(&T) -> usize,
    ) -> Vec<Vec<T>> {
        let mut split: Vec<Vec<T>> = (0..self.shards).map(|_| Vec::new()).collect();
        for item in items {
            split[shard(&item)].push(item);
        }
        split
    }
}

/// Every shard's store, and which of them are inside the current
/// transaction (writer) or snapshot (reader): one is begun on a shard
/// only when the shard is first used, so a request pays only for the
/// shards it touches.
struct Shards<S: ?Sized> {
    map: ShardMap,
    stores: Vec<Box<S>>,
    /// How a shard enters the transaction or snapshot.
    begin: fn(&mut S) -> StoreResult<()>,
    open: bool,
    begun: Vec<bool>,
}

impl<S: ?Sized> Shards<S> {
    fn new(stores: Vec<Box<S>>, begin: fn(&mut S) -> StoreResult<()>) -> Shards<S> {
        Shards {
            map: ShardMap {
                shards: stores.len(),
            },
            begun: vec![false; stores.len()],
            stores,
            begin,
            open: false,
        }
    }

    /// From now on, a shard's first use begins it.
    fn open(&mut self) {
        self.open = true;
        self.begun.fill(false);
    }

    /// Calls `end` on every begun shard, in shard order, and closes.
    fn close(&mut self, mut end: impl FnMut(&mut S)) {
        for (store, begun) in self.stores.iter_mut().zip(&mut self.begun) {
            if std::mem::take(begun) {
                end(store);
            }
        }
        self.open = false;
    }

    fn get(&mut self, index: usize) -> StoreResult<&mut S> {
        if self.open && !self.begun[index] {
            (self.begin)(&mut self.stores[index])?;
            self.begun[index] = true;
        }
        Ok(&mut self.stores[index])
    }

    fn of_user(&mut self, uid: u64) -> StoreResult<&mut S> {
        self.get(self.map.user_shard(uid))
    }

    fn of_pair(&mut self, pair: Pair) -> StoreResult<&mut S> {
        self.get(self.map.pair_shard(pair))
    }

    /// Runs `f` on every shard, in shard order.
    fn every<R>(&mut self, mut f: impl FnMut(&mut S) -> StoreResult<R>) -> StoreResult<Vec<R>> {
        (0..self.stores.len())
            .map(|index| f(self.get(index)?))
            .collect()
    }

    /// Runs `f` on each shard with that shard's part of `items` (shards
    /// with no part are not touched) and gathers the results.
    fn each<T, R>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        shard: impl Fn(&ShardMap, &T) -> usize,
        mut f: impl FnMut(&mut S, Vec<T>) -> StoreResult<Vec<R>>,
    ) -> StoreResult<Vec<R>> {
        let map = self.map;
        let parts = map.split(items, |item| shard(&map, item));
        let mut results = Vec::new();
        for (index, part) in parts.into_iter().enumerate() {
            if !part.is_empty() {
                results.extend(f(self.get(index)?, part)?);
            }
        }
        Ok(results)
    }
}

/// The writer over every shard.
pub struct ShardedWriter {
    shards: Shards<dyn WriteStore>,
}

impl ShardedWriter {
    pub fn new(shards: Vec<Box<dyn WriteStore>>) -> ShardedWriter {
        ShardedWriter {
            shards: Shards::new(shards, |store| store.begin()),
        }
    }
}

impl WriteStore for ShardedWriter {
    fn recover(&mut self) -> StoreResult<Recovered> {
        let mut recovered = Recovered::default();
        for shard in &mut self.shards.stores {
            let one = shard.recover()?;
            recovered.max_msg_id = recovered.max_msg_id.max(one.max_msg_id);
            recovered.max_version = recovered.max_version.max(one.max_version);
        }
        Ok(recovered)
    }

    fn begin(&mut self) -> StoreResult<()> {
        self.shards.open();
        Ok(())
    }

    fn commit(&mut self) -> StoreResult<()> {
        let mut committed = Vec::new();
        for index in 0..self.shards.stores.len() {
            if !self.shards.begun[index] {
                continue;
            }
            if let Err(e) = self.shards.stores[index].commit() {
                // This shard and the ones after it roll back.
                self.rollback();
                return Err(match committed.is_empty() {
                    true => e,
                    false => StoreError::Unavailable(format!(
                        "shard {index} failed to commit after shards {committed:?} did: {e}"
                    )),
                });
            }
            self.shards.begun[index] = false;
            committed.push(index);
        }
        self.shards.close(|_| {});
        Ok(())
    }

    fn rollback(&mut self) {
        self.shards.close(|store| store.rollback());
    }

    fn find_sent(&mut self, keys: &[SentKey<'_>]) -> StoreResult<Vec<pb::Message>> {
        self.shards.each(
            keys.iter().copied(),
            |map, k| map.pair_shard(Pair::of(k.from, k.to)),
            |store, keys| store.find_sent(&keys),
        )
    }

    /// The rows, each repaired against its pair's stored messages (see the
    /// module doc); a row that is missing although its pair has messages
    /// comes back created.
    fn load_conversations(&mut self, keys: &[(u64, u64)]) -> StoreResult<Vec<ConvRow>> {
        let mut rows: HashMap<(u64, u64), ConvRow> = self
            .shards
            .each(
                keys.iter().copied(),
                |map, k| map.user_shard(k.0),
                |store, keys| store.load_conversations(&keys),
            )?
            .into_iter()
            .map(|row| (row.key(), row))
            .collect();
        let mut pairs: Vec<Pair> = keys.iter().map(|(a, b)| Pair::of(*a, *b)).collect();
        pairs.sort_unstable_by_key(|p| (p.small, p.big));
        pairs.dedup();
        let last_seqs: HashMap<Pair, u64> = self.last_seqs(&pairs)?.into_iter().collect();
        for key in keys {
            let Some(stored) = last_seqs.get(&Pair::of(key.0, key.1)) else {
                continue;
            };
            let row = rows
                .entry(*key)
                .or_insert_with(|| ConvRow::new(key.0, key.1));
            if row.last_seq < *stored {
                log::warn!(
                    "conversation row {key:?} was behind its messages (seq {} < {stored}): repaired",
                    row.last_seq
                );
                row.last_seq = *stored;
            }
        }
        Ok(rows.into_values().collect())
    }

    fn insert_messages(&mut self, messages: &[pb::Message]) -> StoreResult<()> {
        self.shards.each(
            messages.iter().cloned(),
            |map, m| map.pair_shard(Pair::of(m.from_uid, m.to_uid)),
            |store, messages| store.insert_messages(&messages).map(|()| Vec::<()>::new()),
        )?;
        Ok(())
    }

    fn put_conversations(&mut self, rows: &[&ConvRow]) -> StoreResult<()> {
        self.shards.each(
            rows.iter().copied(),
            |map, r| map.user_shard(r.owner),
            |store, rows| store.put_conversations(&rows).map(|()| Vec::<()>::new()),
        )?;
        Ok(())
    }

    fn put_profiles(&mut self, profiles: &[pb::Profile], updated_ms: u64) -> StoreResult<()> {
        self.shards.each(
            profiles.iter().cloned(),
            |map, p| map.user_shard(p.uid),
            |store, profiles| {
                store
                    .put_profiles(&profiles, updated_ms)
                    .map(|()| Vec::<()>::new())
            },
        )?;
        Ok(())
    }

    fn put_revocations(&mut self, revocations: &[Revocation]) -> StoreResult<()> {
        self.shards.each(
            revocations.iter().copied(),
            |map, r| map.user_shard(r.uid),
            |store, revocations| {
                store
                    .put_revocations(&revocations)
                    .map(|()| Vec::<()>::new())
            },
        )?;
        Ok(())
    }

    fn revocations(&mut self) -> StoreResult<Vec<Revocation>> {
        let mut all = Vec::new();
        for shard in &mut self.shards.stores {
            all.extend(shard.revocations()?);
        }
        Ok(all)
    }

    fn put_notices(&mut self, notices: &[Notice]) -> StoreResult<()> {
        self.shards.each(
            notices.iter().copied(),
            |map, n| map.user_shard(n.to_uid),
            |store, notices| store.put_notices(&notices).map(|()| Vec::<()>::new()),
        )?;
        Ok(())
    }

    fn remove_notices(&mut self, notices: &[Notice]) -> StoreResult<()> {
        self.shards.each(
            notices.iter().copied(),
            |map, n| map.user_shard(n.to_uid),
            |store, notices| store.remove_notices(&notices).map(|()| Vec::<()>::new()),
        )?;
        Ok(())
    }

    fn total_unread(&mut self, owner: u64) -> StoreResult<u64> {
        self.shards.of_user(owner)?.total_unread(owner)
    }

    fn last_seqs(&mut self, pairs: &[Pair]) -> StoreResult<Vec<(Pair, u64)>> {
        self.shards.each(
            pairs.iter().copied(),
            |map, p| map.pair_shard(*p),
            |store, pairs| store.last_seqs(&pairs),
        )
    }
}

/// A reader over every shard: a history request reads one shard, a
/// conversation list one shard plus the shards of its last messages.
pub struct ShardedReader {
    shards: Shards<dyn ReadStore>,
}

impl ShardedReader {
    pub fn new(shards: Vec<Box<dyn ReadStore>>) -> ShardedReader {
        ShardedReader {
            shards: Shards::new(shards, |store| store.begin_snapshot()),
        }
    }
}

impl ReadStore for ShardedReader {
    fn begin_snapshot(&mut self) -> StoreResult<()> {
        self.end_snapshot();
        self.shards.open();
        Ok(())
    }

    fn end_snapshot(&mut self) {
        self.shards.close(|store| store.end_snapshot());
    }

    fn conversation(&mut self, owner: u64, peer: u64) -> StoreResult<Option<ConvRow>> {
        self.shards.of_user(owner)?.conversation(owner, peer)
    }

    fn messages_after(
        &mut self,
        pair: Pair,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<pb::Message>> {
        self.shards
            .of_pair(pair)?
            .messages_after(pair, after, limit)
    }

    fn messages_before(
        &mut self,
        pair: Pair,
        below: u64,
        above: u64,
        limit: usize,
    ) -> StoreResult<Vec<pb::Message>> {
        self.shards
            .of_pair(pair)?
            .messages_before(pair, below, above, limit)
    }

    fn message(&mut self, pair: Pair, seq: u64) -> StoreResult<Option<pb::Message>> {
        self.shards.of_pair(pair)?.message(pair, seq)
    }

    fn changed_since(&mut self, owner: u64, after: u64, limit: usize) -> StoreResult<Vec<ConvRow>> {
        self.shards
            .of_user(owner)?
            .changed_since(owner, after, limit)
    }

    fn visible_by_recency(
        &mut self,
        owner: u64,
        below: u64,
        limit: usize,
    ) -> StoreResult<Vec<ConvRow>> {
        self.shards
            .of_user(owner)?
            .visible_by_recency(owner, below, limit)
    }

    fn total_unread(&mut self, owner: u64) -> StoreResult<u64> {
        self.shards.of_user(owner)?.total_unread(owner)
    }

    fn unread_by_peer(&mut self, owner: u64) -> StoreResult<Vec<(u64, u64)>> {
        self.shards.of_user(owner)?.unread_by_peer(owner)
    }

    fn conversations_with(&mut self, owner: u64, peers: &[u64]) -> StoreResult<Vec<ConvRow>> {
        self.shards.of_user(owner)?.conversations_with(owner, peers)
    }

    fn profiles(&mut self, uids: &[u64]) -> StoreResult<Vec<pb::Profile>> {
        self.shards.each(
            uids.iter().copied(),
            |map, uid| map.user_shard(*uid),
            |store, uids| store.profiles(&uids),
        )
    }

    /// Each shard's first `limit` after `after`, merged: the first `limit`
    /// of them all.
    fn notices(&mut self, after: u64, limit: usize) -> StoreResult<Vec<Notice>> {
        let mut all: Vec<Notice> = self
            .shards
            .every(|shard| shard.notices(after, limit))?
            .concat();
        all.sort_unstable_by_key(|n| n.msg_id);
        all.truncate(limit);
        Ok(all)
    }

    fn notice_count(&mut self) -> StoreResult<u64> {
        Ok(self
            .shards
            .every(|shard| shard.notice_count())?
            .iter()
            .sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map is part of the storage format: these values must never change.
    #[test]
    fn the_map_is_stable() {
        let two = ShardMap { shards: 2 };
        let users: Vec<usize> = (1..=8).map(|uid| two.user_shard(uid)).collect();
        let pairs: Vec<usize> = (1..=8)
            .map(|uid| two.pair_shard(Pair::of(uid, 1000)))
            .collect();
        // Computed independently (SplitMix64's finalizer in Python).
        assert_eq!(users, vec![1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(pairs, vec![0, 1, 1, 1, 1, 1, 1, 0]);
    }

    #[test]
    fn both_sides_of_a_pair_map_to_one_shard_and_users_spread() {
        let map = ShardMap { shards: 4 };
        let mut per_shard = [0usize; 4];
        for uid in 1..=10_000u64 {
            per_shard[map.user_shard(uid)] += 1;
            assert_eq!(
                map.pair_shard(Pair::of(uid, uid + 7)),
                map.pair_shard(Pair::of(uid + 7, uid))
            );
        }
        for count in per_shard {
            assert!((2_300..2_700).contains(&count), "{per_shard:?}");
        }
    }
}

#[cfg(test)]
mod partial_commit {
    //! A batch whose commit fails on one shard after another shard
    //! committed: the message is stored, the rows on the failing shard are
    //! behind, and the next batches still assign gapless seqs and find the
    //! stored message as the original of a retry.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::sequencer::Sequencer;
    use crate::store::Backend;
    use crate::store::sqlite::{Sqlite, Synchronous};
    use crate::store::testing::{FailingCommit, send, sent};

    #[test]
    fn rows_behind_their_messages_are_repaired_on_load() {
        let map = ShardMap { shards: 2 };
        // Two users on shard 1 whose pair is on shard 0: the message commits
        // first (shard 0), both rows after (shard 1).
        let (a, b) = (1..200u64)
            .flat_map(|a| (a + 1..200).map(move |b| (a, b)))
            .find(|&(a, b)| {
                map.user_shard(a) == 1
                    && map.user_shard(b) == 1
                    && map.pair_shard(Pair::of(a, b)) == 0
            })
            .expect("such users exist");
        let dir = std::env::temp_dir().join(format!("im-sharded-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let fail = Arc::new(AtomicBool::new(false));
        let shards: Vec<Box<dyn WriteStore>> = (0..2)
            .map(|n| {
                let store = Sqlite::open(&dir.join(format!("s{n}")), Synchronous::Normal)
                    .and_then(|s| s.writer())
                    .expect("sqlite shard");
                Box::new(FailingCommit {
                    inner: store,
                    fail: if n == 1 {
                        fail.clone()
                    } else {
                        Arc::new(AtomicBool::new(false))
                    },
                }) as Box<dyn WriteStore>
            })
            .collect();
        let mut store = ShardedWriter::new(shards);
        let mut sequencer = Sequencer::new(Recovered::default(), 0, 1000);

        let first = sequencer
            .apply(&mut store, &[&send(a, b, "m1")], 1)
            .unwrap();
        assert_eq!(sent(&first.outcomes[0]), (1, false));
        fail.store(true, Ordering::SeqCst);
        assert!(
            sequencer
                .apply(&mut store, &[&send(a, b, "m2")], 2)
                .is_err()
        );
        fail.store(false, Ordering::SeqCst);
        // m2 is stored on shard 0, its rows on shard 1 still say seq 1.
        let rows = store.load_conversations(&[(a, b)]).unwrap();
        assert_eq!(rows[0].last_seq, 2, "repaired as it is loaded");

        // The retry is the original; the next message takes the next seq.
        let next = sequencer
            .apply(&mut store, &[&send(a, b, "m2"), &send(b, a, "m3")], 3)
            .unwrap();
        assert_eq!(sent(&next.outcomes[0]), (2, true));
        assert_eq!(sent(&next.outcomes[1]), (3, false));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
