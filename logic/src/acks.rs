//! Pushes waiting for their PushAck, and what to do when none comes.
//!
//! Every push to a device is tracked until that device acks its msg_id. An
//! unacked push is resent after `resend_after[0]`, again `resend_after[1]`
//! later, and if still unacked `close_after` after the second resend, the
//! session is closed (its client reconnects and syncs). One timer wheel
//! holds every deadline; an entry that fires after its ack (or after its
//! session closed) is simply ignored.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use protocol::link::SessionId;
use runtime::timer::TimerWheel;

/// Deadlines, configurable (the contract's defaults: 2 s, 4 s, 8 s).
#[derive(Debug, Clone, Copy)]
pub struct AckPolicy {
    pub first_resend: Duration,
    pub second_resend: Duration,
    pub close_after: Duration,
}

struct Pending {
    /// The user whose device the session is (to ask presence whether it
    /// is still online).
    uid: u64,
    frame: Bytes,
    /// Resends so far (0, 1 or 2).
    resends: u8,
    /// When it was first sent, in microseconds on the caller's clock.
    pushed_us: u64,
}

/// What the caller must do now.
#[derive(Debug, PartialEq)]
pub enum Due {
    Resend { session: SessionId, frame: Bytes },
    Close { session: SessionId },
}

pub struct AckTracker {
    policy: AckPolicy,
    pending: HashMap<(SessionId, u64), Pending>,
    wheel: TimerWheel<(SessionId, u64)>,
}

impl AckTracker {
    pub fn new(policy: AckPolicy, now_ms: u64) -> AckTracker {
        AckTracker {
            policy,
            pending: HashMap::new(),
            // 10 ms ticks, 4096 slots: a 41 s rotation.
            wheel: TimerWheel::new(10, 4096, now_ms),
        }
    }

    /// A push just went to `session`, at `now_us` (the clock of `now_ms`
    /// elsewhere, in microseconds: the push-ack latency needs them).
    pub fn pushed(&mut self, session: SessionId, uid: u64, msg_id: u64, frame: Bytes, now_us: u64) {
        let now_ms = now_us / 1000;
        self.pending.insert(
            (session, msg_id),
            Pending {
                uid,
                frame,
                resends: 0,
                pushed_us: now_us,
            },
        );
        self.wheel.schedule(
            now_ms + self.policy.first_resend.as_millis() as u64,
            (session, msg_id),
        );
    }

    /// The device acked; returns when the push was first sent, if it was
    /// still waiting.
    pub fn acked(&mut self, session: SessionId, msg_id: u64) -> Option<u64> {
        self.pending
            .remove(&(session, msg_id))
            .map(|pending| pending.pushed_us)
    }

    /// Pushes awaiting an ack.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.wheel.next_deadline()
    }

    /// What is due at `now_ms`. `is_live` says whether a session (of the
    /// uid) is still open; pushes to closed sessions are dropped.
    pub fn expire(
        &mut self,
        now_ms: u64,
        is_live: impl Fn(SessionId, u64) -> bool,
        due: &mut Vec<Due>,
    ) {
        let mut fired = Vec::new();
        self.wheel.expire(now_ms, &mut fired);
        for key in fired {
            let Some(pending) = self.pending.get_mut(&key) else {
                continue;
            };
            let (session, _) = key;
            if !is_live(session, pending.uid) {
                self.pending.remove(&key);
                continue;
            }
            match pending.resends {
                0 | 1 => {
                    let wait = if pending.resends == 0 {
                        self.policy.second_resend
                    } else {
                        self.policy.close_after
                    };
                    pending.resends += 1;
                    due.push(Due::Resend {
                        session,
                        frame: pending.frame.clone(),
                    });
                    self.wheel.schedule(now_ms + wait.as_millis() as u64, key);
                }
                _ => {
                    self.pending.retain(|(s, _), _| *s != session);
                    due.push(Due::Close { session });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: SessionId = SessionId {
        gateway: 1,
        slot: 1,
        serial: 1,
    };

    fn tracker() -> AckTracker {
        let policy = AckPolicy {
            first_resend: Duration::from_millis(2_000),
            second_resend: Duration::from_millis(4_000),
            close_after: Duration::from_millis(8_000),
        };
        AckTracker::new(policy, 0)
    }

    fn due_at(t: &mut AckTracker, now: u64) -> Vec<Due> {
        let mut due = Vec::new();
        t.expire(now, |_, _| true, &mut due);
        due
    }

    #[test]
    fn resend_at_2_then_6_then_close_at_14_seconds() {
        let mut t = tracker();
        let frame = Bytes::from_static(b"push");
        t.pushed(S, 5, 9, frame.clone(), 0);
        assert!(due_at(&mut t, 1_999).is_empty());
        assert_eq!(
            due_at(&mut t, 2_000),
            vec![Due::Resend {
                session: S,
                frame: frame.clone()
            }]
        );
        assert!(due_at(&mut t, 5_999).is_empty());
        assert_eq!(
            due_at(&mut t, 6_000),
            vec![Due::Resend { session: S, frame }]
        );
        assert!(due_at(&mut t, 13_999).is_empty());
        assert_eq!(due_at(&mut t, 14_000), vec![Due::Close { session: S }]);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn ack_or_closed_session_stops_everything() {
        let mut t = tracker();
        t.pushed(S, 5, 1, Bytes::new(), 0);
        t.pushed(S, 5, 2, Bytes::new(), 0);
        assert_eq!(t.acked(S, 1), Some(0));
        assert_eq!(t.acked(S, 1), None);
        let mut due = Vec::new();
        t.expire(2_000, |_, _| false, &mut due);
        assert!(due.is_empty());
        assert_eq!(t.pending(), 0);
    }
}
