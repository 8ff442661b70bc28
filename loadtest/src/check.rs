//! The delivery checker: every acknowledged message must reach every device
//! it is meant for, exactly once, in seq order.
//!
//! Pushes may arrive before the sender's SendResp (they travel on other
//! connections), so losses are counted at the end; duplicates and
//! reordering are counted as they happen.

use std::collections::{HashMap, HashSet};

/// A receiving device, numbered by the caller.
pub type DeviceId = usize;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Deliveries of acknowledged messages (one per device reached).
    pub delivered: u64,
    /// Acknowledged messages missing on a device they were meant for.
    pub lost: u64,
    /// Pushes of a msg_id the device already had.
    pub duplicated: u64,
    /// Pushes with a seq below one the device already saw in that conversation.
    pub reordered: u64,
}

impl Verdict {
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.reordered == 0
    }
}

#[derive(Default)]
pub struct Checker {
    /// Acknowledged msg_ids and the devices each must reach.
    acked: HashMap<u64, Vec<DeviceId>>,
    /// What each device received: msg_ids, and the last seq per conversation.
    received: HashMap<DeviceId, (HashSet<u64>, HashMap<u64, u64>)>,
    duplicated: u64,
    reordered: u64,
}

impl Checker {
    /// A checker with room for `messages` acknowledged messages, so a run
    /// at a fixed rate never stops to grow its tables (a rehash of a few
    /// hundred thousand entries is milliseconds the run would charge to
    /// the server).
    pub fn with_capacity(messages: usize) -> Checker {
        Checker {
            acked: HashMap::with_capacity(messages),
            ..Checker::default()
        }
    }

    /// The sender got SendResp for `msg_id`, which `targets` must receive.
    pub fn acked(&mut self, msg_id: u64, targets: Vec<DeviceId>) {
        self.acked.insert(msg_id, targets);
    }

    /// `device` received a push of `msg_id` with `seq` in `conversation`.
    pub fn pushed(&mut self, device: DeviceId, conversation: u64, msg_id: u64, seq: u64) {
        let (ids, last) = self.received.entry(device).or_default();
        if !ids.insert(msg_id) {
            self.duplicated += 1;
            return;
        }
        let last_seq = last.entry(conversation).or_insert(0);
        if seq <= *last_seq {
            self.reordered += 1;
        } else {
            *last_seq = seq;
        }
    }

    /// Acknowledged deliveries still missing (to decide when draining is done).
    pub fn missing(&self) -> u64 {
        self.verdict().lost
    }

    pub fn verdict(&self) -> Verdict {
        let mut verdict = Verdict {
            duplicated: self.duplicated,
            reordered: self.reordered,
            ..Verdict::default()
        };
        for (msg_id, targets) in &self.acked {
            for device in targets {
                if self
                    .received
                    .get(device)
                    .is_some_and(|(ids, _)| ids.contains(msg_id))
                {
                    verdict.delivered += 1;
                } else {
                    verdict.lost += 1;
                }
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_run_is_clean() {
        let mut c = Checker::default();
        c.pushed(0, 1, 100, 1); // a push may come before its ack
        c.acked(100, vec![0, 1]);
        c.pushed(1, 1, 100, 1);
        c.acked(101, vec![0, 1]);
        c.pushed(0, 1, 101, 2);
        c.pushed(1, 1, 101, 2);
        assert_eq!(
            c.verdict(),
            Verdict {
                delivered: 4,
                lost: 0,
                duplicated: 0,
                reordered: 0
            }
        );
    }

    #[test]
    fn injected_loss_duplicate_and_reorder_are_caught() {
        let mut c = Checker::default();
        c.acked(1, vec![0]);
        c.acked(2, vec![0]);
        c.acked(3, vec![0]);
        c.pushed(0, 9, 2, 2);
        c.pushed(0, 9, 1, 1); // older seq after a newer one
        c.pushed(0, 9, 2, 2); // again
        // msg 3 never arrives
        let v = c.verdict();
        assert_eq!(
            (v.lost, v.duplicated, v.reordered, v.delivered),
            (1, 1, 1, 2)
        );
        assert!(!v.clean());
    }
}
