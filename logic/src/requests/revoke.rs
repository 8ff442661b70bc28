//! RevokeTokensReq: the caller's tokens issued at or before a moment stop
//! logging in (a stolen phone, a password change; the business API asks it
//! as the user). The revocation is a write (`WriteOp::Revoke`), durable
//! before the answer and kept across restarts; once durable, logins check
//! it (`login.rs`) and the caller's other sessions that logged in by then
//! are closed with a Kick.

use protocol::body::kick_frame;
use protocol::link::Downcall;
use protocol::token;
use protocol::{ErrorCode, pb};
use runtime::clock::unix_ms;

use crate::pipeline::{Pipeline, Ticket};
use crate::sequencer::WriteOp;
use crate::store::Revocation;

impl Pipeline {
    pub(crate) fn revoke(&mut self, ticket: Ticket, req: pb::RevokeTokensReq) {
        let now = unix_ms();
        let before_ms = match req.before_ms {
            0 => now,
            at if at > now => {
                return self.fail(
                    &ticket,
                    ErrorCode::InvalidArgument,
                    "before_ms is in the future",
                );
            }
            at => at,
        };
        let op = WriteOp::Revoke {
            uid: ticket.uid,
            before_ms,
        };
        self.write(ticket, op)
    }

    /// The revocation is durable: logins check it from now on, and the
    /// user's sessions that logged in by then (but the caller's) close.
    pub(crate) fn tokens_revoked(&mut self, ticket: Ticket, revocation: Revocation) {
        self.note_revocation(revocation);
        let last = self.encode(&kick_frame("signed out: this device's token was revoked"));
        let mut kicked = 0;
        for device in self.presence.devices(revocation.uid) {
            if device.session != ticket.session && device.login_ms <= revocation.before_ms {
                self.downlink.send(Downcall::Close {
                    session: device.session,
                    last: last.clone(),
                });
                kicked += 1;
            }
        }
        let resp = pb::RevokeTokensResp {
            before_ms: revocation.before_ms,
            kicked,
        };
        self.reply(&ticket, resp.into());
    }

    /// Remembers a revocation (a later one of a uid replaces an earlier).
    pub fn note_revocation(&mut self, revocation: Revocation) {
        let before = self.revoked.entry(revocation.uid).or_default();
        *before = (*before).max(revocation.before_ms);
    }

    /// Whether a token that verified was revoked.
    pub(crate) fn is_revoked(&self, uid: u64, token: &str) -> bool {
        self.is_revoked_at(uid, token::issued_ms(token))
    }

    /// Whether a token of `uid` issued at `issued_ms` is revoked.
    pub(crate) fn is_revoked_at(&self, uid: u64, issued_ms: u64) -> bool {
        self.revoked
            .get(&uid)
            .is_some_and(|before| issued_ms <= *before)
    }
}
