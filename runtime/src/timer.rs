//! A hashed timer wheel: one structure for every deadline of an event loop.
//!
//! A gateway worker keeps one for its sessions' login, heartbeat and linger
//! deadlines; the logic tier keeps one for push retransmits. Scheduling is
//! O(1) and costs one small entry; there is no per-timer thread or
//! allocation. Entries cannot be cancelled: the owner checks, when an entry
//! fires, whether it still matters (a session that closed, a deadline that
//! moved), which is cheaper than finding and removing it.
//!
//! Time is a parameter (milliseconds on the caller's clock), so tests drive
//! the wheel without sleeping. Resolution is one tick: an entry fires at the
//! first `expire` whose `now` is at or past its deadline, and
//! [`TimerWheel::next_deadline`] may report up to one tick late.

pub struct TimerWheel<T> {
    /// Milliseconds per slot.
    tick_ms: u64,
    /// Entries by deadline tick modulo the number of slots; an entry more
    /// than one rotation away waits in its slot for later rounds.
    slots: Vec<Vec<Entry<T>>>,
    /// The next tick to examine; every earlier tick has been expired.
    next_tick: u64,
    /// Entries scheduled and not yet expired.
    len: usize,
}

struct Entry<T> {
    deadline_ms: u64,
    item: T,
}

impl<T> TimerWheel<T> {
    /// A wheel of `slots` slots of `tick_ms` each, starting at `now_ms`.
    pub fn new(tick_ms: u64, slots: usize, now_ms: u64) -> Self {
        let tick_ms = tick_ms.max(1);
        TimerWheel {
            tick_ms,
            slots: (0..slots.max(1)).map(|_| Vec::new()).collect(),
            next_tick: now_ms / tick_ms,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fires `item` at the first `expire` at or after `deadline_ms`. A deadline
    /// already past fires at the next `expire`.
    pub fn schedule(&mut self, deadline_ms: u64, item: T) {
        let tick = deadline_ms.div_ceil(self.tick_ms).max(self.next_tick);
        let slot = self.slot_of(tick);
        self.slots[slot].push(Entry { deadline_ms, item });
        self.len += 1;
    }

    /// Moves every entry due at `now_ms` into `due`, in no particular order.
    pub fn expire(&mut self, now_ms: u64, due: &mut Vec<T>) {
        let now_tick = now_ms / self.tick_ms;
        if now_tick < self.next_tick {
            return;
        }
        if self.len > 0 {
            // After a long pause, one pass over every slot finds everything due.
            let ticks = (now_tick - self.next_tick + 1).min(self.slots.len() as u64);
            for tick in self.next_tick..self.next_tick + ticks {
                let slot = self.slot_of(tick);
                let entries = &mut self.slots[slot];
                let mut i = 0;
                while i < entries.len() {
                    if entries[i].deadline_ms <= now_ms {
                        due.push(entries.swap_remove(i).item);
                        self.len -= 1;
                    } else {
                        i += 1;
                    }
                }
            }
        }
        self.next_tick = now_tick + 1;
    }

    /// The earliest time something may be due (at most one tick late), or
    /// `None` when the wheel is empty: the event loop's poll timeout.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let rotation = self.slots.len() as u64;
        (self.next_tick..self.next_tick + rotation)
            .find(|&tick| !self.slots[self.slot_of(tick)].is_empty())
            .map(|tick| tick * self.tick_ms)
    }

    fn slot_of(&self, tick: u64) -> usize {
        (tick % self.slots.len() as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expired(wheel: &mut TimerWheel<u32>, now: u64) -> Vec<u32> {
        let mut due = Vec::new();
        wheel.expire(now, &mut due);
        due.sort();
        due
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let mut wheel = TimerWheel::new(10, 8, 0);
        wheel.schedule(25, 1);
        wheel.schedule(40, 2);
        assert_eq!(expired(&mut wheel, 24), Vec::<u32>::new());
        assert_eq!(expired(&mut wheel, 30), vec![1]);
        assert_eq!(expired(&mut wheel, 39), Vec::<u32>::new());
        assert_eq!(expired(&mut wheel, 40), vec![2]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn entries_beyond_one_rotation_wait_their_round() {
        // 8 slots of 10 ms: one rotation is 80 ms.
        let mut wheel = TimerWheel::new(10, 8, 0);
        wheel.schedule(15, 1);
        wheel.schedule(95, 2); // same slot as 15, one rotation later
        wheel.schedule(1_000, 3);
        assert_eq!(expired(&mut wheel, 20), vec![1]);
        assert_eq!(expired(&mut wheel, 90), Vec::<u32>::new());
        assert_eq!(expired(&mut wheel, 100), vec![2]);
        assert_eq!(expired(&mut wheel, 999), Vec::<u32>::new());
        assert_eq!(expired(&mut wheel, 1_000), vec![3]);
    }

    #[test]
    fn long_pause_fires_everything_due_once() {
        let mut wheel = TimerWheel::new(10, 8, 0);
        for i in 0..50 {
            wheel.schedule(i * 7, i as u32);
        }
        wheel.schedule(10_000, 99);
        let due = expired(&mut wheel, 5_000);
        assert_eq!(due, (0..50).collect::<Vec<_>>());
        assert_eq!(wheel.len(), 1);
        assert_eq!(expired(&mut wheel, 5_000), Vec::<u32>::new());
    }

    #[test]
    fn past_deadline_fires_on_next_expire() {
        let mut wheel = TimerWheel::new(10, 8, 1_000);
        wheel.schedule(5, 1);
        assert_eq!(expired(&mut wheel, 1_000), vec![1]);
    }

    #[test]
    fn next_deadline_is_the_earliest_slot() {
        let mut wheel = TimerWheel::new(10, 64, 0);
        assert_eq!(wheel.next_deadline(), None);
        wheel.schedule(300, 1);
        wheel.schedule(55, 2);
        assert_eq!(wheel.next_deadline(), Some(60));
        expired(&mut wheel, 60);
        assert_eq!(wheel.next_deadline(), Some(300));
    }
}
