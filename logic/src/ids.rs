//! Message ids: unique across the deployment and increasing with time.
//!
//! ```text
//!  63        22 21        10 9       0
//!  [ ms since 2024-01-01 ][ counter ][ node ]
//! ```
//!
//! 41 bits of milliseconds last until 2093. The node id (0..1023, config
//! `logic.node_id`) sits in the low bits, so ids from different logic nodes
//! never collide, and the counter between them gives 4096 ids per
//! millisecond per node. On one node ids strictly increase in the order they
//! are handed out, even across a restart (the generator resumes above the
//! highest stored id) or a clock that steps back: the next id is always at
//! least the previous one plus one counter step.

/// 2024-01-01T00:00:00Z in Unix milliseconds.
const EPOCH_MS: u64 = 1_704_067_200_000;
const NODE_BITS: u32 = 10;
const COUNTER_BITS: u32 = 12;
pub const MAX_NODE_ID: u64 = (1 << NODE_BITS) - 1;

pub struct MsgIds {
    node: u64,
    last: u64,
}

impl MsgIds {
    /// `resume_after`: the highest id already stored (0 for none).
    pub fn new(node: u64, resume_after: u64) -> MsgIds {
        MsgIds {
            node: node & MAX_NODE_ID,
            last: resume_after,
        }
    }

    /// The next id at wall-clock `now_ms`.
    pub fn next(&mut self, now_ms: u64) -> u64 {
        let from_clock =
            (now_ms.saturating_sub(EPOCH_MS) << (COUNTER_BITS + NODE_BITS)) | self.node;
        let after_last = ((self.last >> NODE_BITS) + 1) << NODE_BITS | self.node;
        self.last = from_clock.max(after_last);
        self.last
    }

    /// The wall-clock millisecond an id was made in (at most a little later
    /// than the real acceptance time when the counter overflowed).
    pub fn time_ms(id: u64) -> u64 {
        (id >> (COUNTER_BITS + NODE_BITS)) + EPOCH_MS
    }

    pub fn node_of(id: u64) -> u64 {
        id & MAX_NODE_ID
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn strictly_increasing_within_a_millisecond_and_across_clock_steps_back() {
        let mut ids = MsgIds::new(3, 0);
        let mut last = 0;
        for now in [NOW, NOW, NOW, NOW - 5_000, NOW + 1] {
            for _ in 0..5_000 {
                let id = ids.next(now);
                assert!(id > last);
                assert_eq!(MsgIds::node_of(id), 3);
                last = id;
            }
        }
    }

    #[test]
    fn follows_the_clock_and_resumes_above_stored_ids() {
        let mut ids = MsgIds::new(1, 0);
        let id = ids.next(NOW);
        assert_eq!(MsgIds::time_ms(id), NOW);
        let mut resumed = MsgIds::new(1, id);
        assert!(
            resumed.next(NOW - 60_000) > id,
            "a restart with the clock behind"
        );
    }

    #[test]
    fn nodes_never_collide() {
        let mut a = MsgIds::new(1, 0);
        let mut b = MsgIds::new(2, 0);
        let from_a: std::collections::HashSet<u64> = (0..10_000).map(|_| a.next(NOW)).collect();
        assert!((0..10_000).all(|_| !from_a.contains(&b.next(NOW))));
    }
}
