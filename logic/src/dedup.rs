//! The fast path of dedup: recent `(from_uid, client_msg_id)`s in memory.
//!
//! Storage enforces dedup forever (a unique key, checked in the writer's
//! transaction); this cache answers the common case, a client retrying a
//! send it just made, without a round trip to the writer, and lets a retry
//! that arrives while the original is still being committed wait for it
//! instead of racing it.
//!
//! Bounded by two generations: when the young one fills up it becomes the
//! old one and the previous old one is dropped. No per-entry bookkeeping,
//! and anything evicted is still caught by storage.

use std::collections::HashMap;

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

pub struct RecentIds<T> {
    young: HashMap<(u64, String), Recent<T>>,
    old: HashMap<(u64, String), Recent<T>>,
    /// Entries per generation.
    generation: usize,
}

impl<T> RecentIds<T> {
    pub fn new(capacity: usize) -> Self {
        RecentIds {
            young: HashMap::new(),
            old: HashMap::new(),
            generation: (capacity / 2).max(1),
        }
    }

    pub fn get_mut(&mut self, uid: u64, client_msg_id: &str) -> Option<&mut Recent<T>> {
        let key = (uid, client_msg_id.to_owned());
        if self.young.contains_key(&key) {
            return self.young.get_mut(&key);
        }
        self.old.get_mut(&key)
    }

    /// Starts tracking a send on its way to the writer.
    pub fn insert_pending(&mut self, uid: u64, client_msg_id: String) {
        if self.young.len() >= self.generation {
            self.old = std::mem::take(&mut self.young);
        }
        self.young
            .insert((uid, client_msg_id), Recent::Pending(Vec::new()));
    }

    /// Takes the entry out (to complete or fail it).
    pub fn remove(&mut self, uid: u64, client_msg_id: &str) -> Option<Recent<T>> {
        let key = (uid, client_msg_id.to_owned());
        self.young.remove(&key).or_else(|| self.old.remove(&key))
    }

    /// Records a committed send.
    pub fn complete(
        &mut self,
        uid: u64,
        client_msg_id: String,
        msg_id: u64,
        seq: u64,
        server_time_ms: u64,
    ) {
        if self.young.len() >= self.generation {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(
            (uid, client_msg_id),
            Recent::Done {
                msg_id,
                seq,
                server_time_ms,
            },
        );
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
        recent.insert_pending(1, "a".into());
        match recent.get_mut(1, "a") {
            Some(Recent::Pending(waiters)) => waiters.push(7),
            _ => panic!("pending"),
        }
        let Some(Recent::Pending(waiters)) = recent.remove(1, "a") else {
            panic!()
        };
        assert_eq!(waiters, vec![7]);
        recent.complete(1, "a".into(), 10, 1, 99);
        assert!(matches!(
            recent.get_mut(1, "a"),
            Some(Recent::Done { msg_id: 10, .. })
        ));
        for i in 0..4 {
            recent.complete(2, format!("x{i}"), i, i, 0);
        }
        assert!(
            recent.get_mut(1, "a").is_none(),
            "bounded: the oldest generation is gone"
        );
        assert!(recent.len() <= 4);
    }
}
