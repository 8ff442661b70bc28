//! The fast path of dedup: recent `(from_uid, client_msg_id)`s in memory.
//!
//! Storage enforces dedup forever (a unique key, checked in the writer's
//! transaction); this cache answers the common case, a client retrying a
//! send it just made, without a round trip to the writer, and lets a retry
//! that arrives while the original is still being committed wait for it
//! instead of racing it.
//!
//! Bounded by two generations: when the young one fills up it becomes the
//! old one and the previous old one is emptied. No per-entry bookkeeping,
//! and anything evicted is still caught by storage.
//!
//! Every message passes through here three times (looked up, marked
//! pending, completed), so the table allocates nothing per entry: a key
//! holds its client_msg_id inline (the contract caps it at 64 bytes), and
//! both generations are allocated full-size once, so a rotation is a
//! clear, never a wave of frees or a table growing by rehashes while
//! messages wait.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Longest client_msg_id the table holds (the contract's limit); a longer
/// one is never cached and always goes to storage.
pub const MAX_ID: usize = 64;

/// Where a recent send stands.
pub enum Recent<T> {
    /// Being committed; these retries wait for its outcome.
    Pending(Vec<T>),
    /// Committed as (msg_id, seq, server_time_ms).
    Done {
        msg_id: u64,
        seq: u64,
        server_time_ms: u64,
    },
}

/// `(from_uid, client_msg_id)` with the id inline.
#[derive(Clone, Copy)]
struct Key {
    uid: u64,
    len: u8,
    id: [u8; MAX_ID],
}

impl Key {
    fn new(uid: u64, client_msg_id: &str) -> Option<Key> {
        let bytes = client_msg_id.as_bytes();
        let mut id = [0; MAX_ID];
        id.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Key {
            uid,
            len: bytes.len() as u8,
            id,
        })
    }

    fn id(&self) -> &[u8] {
        &self.id[..self.len as usize]
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.uid == other.uid && self.id() == other.id()
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.uid.hash(state);
        self.id().hash(state);
    }
}

pub struct RecentIds<T> {
    young: HashMap<Key, Recent<T>>,
    old: HashMap<Key, Recent<T>>,
    /// Entries per generation.
    generation: usize,
}

impl<T> RecentIds<T> {
    pub fn new(capacity: usize) -> Self {
        let generation = (capacity / 2).max(1);
        RecentIds {
            young: HashMap::with_capacity(generation),
            old: HashMap::with_capacity(generation),
            generation,
        }
    }

    pub fn get_mut(&mut self, uid: u64, client_msg_id: &str) -> Option<&mut Recent<T>> {
        let key = Key::new(uid, client_msg_id)?;
        if self.young.contains_key(&key) {
            return self.young.get_mut(&key);
        }
        self.old.get_mut(&key)
    }

    /// Starts tracking a send on its way to the writer.
    pub fn insert_pending(&mut self, uid: u64, client_msg_id: &str) {
        self.insert(uid, client_msg_id, Recent::Pending(Vec::new()));
    }

    /// Takes the entry out (to fail it).
    pub fn remove(&mut self, uid: u64, client_msg_id: &str) -> Option<Recent<T>> {
        let key = Key::new(uid, client_msg_id)?;
        self.young.remove(&key).or_else(|| self.old.remove(&key))
    }

    /// Records a committed send where its pending entry was (or anew, if
    /// it was evicted meanwhile); returns the retries that waited for it.
    pub fn complete(
        &mut self,
        uid: u64,
        client_msg_id: &str,
        msg_id: u64,
        seq: u64,
        server_time_ms: u64,
    ) -> Vec<T> {
        let done = Recent::Done {
            msg_id,
            seq,
            server_time_ms,
        };
        match self.get_mut(uid, client_msg_id) {
            Some(entry) => match std::mem::replace(entry, done) {
                Recent::Pending(waiters) => waiters,
                Recent::Done { .. } => Vec::new(),
            },
            None => {
                self.insert(uid, client_msg_id, done);
                Vec::new()
            }
        }
    }

    fn insert(&mut self, uid: u64, client_msg_id: &str, recent: Recent<T>) {
        let Some(key) = Key::new(uid, client_msg_id) else {
            return;
        };
        if self.young.len() >= self.generation {
            // The old generation goes; its table, emptied, becomes the
            // young one (same capacity: no allocation, no rehash).
            std::mem::swap(&mut self.young, &mut self.old);
            self.young.clear();
        }
        self.young.insert(key, recent);
    }

    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_then_done_then_evicted_after_two_generations() {
        let mut recent: RecentIds<u32> = RecentIds::new(4);
        recent.insert_pending(1, "a");
        match recent.get_mut(1, "a") {
            Some(Recent::Pending(waiters)) => waiters.push(7),
            _ => panic!("pending"),
        }
        assert_eq!(recent.complete(1, "a", 10, 1, 99), vec![7]);
        assert!(matches!(
            recent.get_mut(1, "a"),
            Some(Recent::Done { msg_id: 10, .. })
        ));
        assert!(recent.get_mut(2, "a").is_none(), "keyed by sender too");
        for i in 0..4 {
            recent.insert_pending(2, &format!("x{i}"));
        }
        assert!(
            recent.get_mut(1, "a").is_none(),
            "bounded: the oldest generation is gone"
        );
        assert!(recent.len() <= 4);
        // Completing an entry evicted while it was pending records it anew.
        assert!(recent.complete(1, "a", 10, 1, 99).is_empty());
        assert!(recent.get_mut(1, "a").is_some());
    }

    #[test]
    fn ids_differing_in_length_or_beyond_the_limit() {
        let mut recent: RecentIds<u32> = RecentIds::new(8);
        recent.insert_pending(1, "ab");
        assert!(recent.get_mut(1, "a").is_none());
        assert!(recent.get_mut(1, "ab\0").is_none());
        let long = "x".repeat(MAX_ID + 1);
        recent.insert_pending(1, &long);
        assert!(recent.get_mut(1, &long).is_none(), "never cached");
        let max = "y".repeat(MAX_ID);
        recent.insert_pending(1, &max);
        assert!(recent.get_mut(1, &max).is_some());
    }

    #[test]
    fn a_failed_send_leaves_nothing_behind() {
        let mut recent: RecentIds<u32> = RecentIds::new(8);
        recent.insert_pending(1, "a");
        assert!(matches!(recent.remove(1, "a"), Some(Recent::Pending(_))));
        assert!(recent.get_mut(1, "a").is_none());
    }
}
