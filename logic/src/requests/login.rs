//! Login (the gateway's `Upcall::Login`): refuse a uid with too many
//! failed logins this minute, verify the token, take the
//! device's place in presence (kicking the session it replaces), tell the
//! presence directory, and let the gateway answer LoginResp.
//!
//! Resume (`Upcall::Resume`): a session some logic node accepted before,
//! re-registered by its gateway on a new link. Its token was verified then;
//! a revocation since still closes it. It takes its device's place as a
//! login does, and its client is told to sync: pushes sent before the link
//! changed may never have reached it, and the node that sent them (perhaps
//! another process, now dead) took their pending acks with it.

use protocol::body::{error_frame, event_frame, kick_frame};
use protocol::link::{Downcall, Registration, SessionId};
use protocol::{ErrorCode, pb};
use runtime::clock::unix_secs;

use crate::cache::keeper::PresenceEvent;
use crate::metrics::Counter;
use crate::pipeline::Pipeline;
use crate::presence::Device;

/// Failed-login windows are a minute long.
const MINUTE_MS: u64 = 60_000;

/// Uids whose failures are tracked before the table is forgotten (which
/// only grants each a fresh budget).
const MAX_TRACKED: usize = 1_000_000;

impl Pipeline {
    /// Closes the connection after an error answering its LoginReq.
    fn refuse_login(&self, session: SessionId, req_id: u64, code: ErrorCode, why: &str) {
        let last = self.encode(&error_frame(req_id, code, why));
        self.downlink.send(Downcall::Close { session, last });
    }

    pub(crate) fn login(&mut self, session: SessionId, req_id: u64, login: pb::LoginReq) {
        let now = unix_secs();
        let limit = self.config.failed_logins_per_min_per_uid;
        let now_ms = self.now_ms();
        let over = limit > 0
            && self
                .login_failures
                .get(&login.uid)
                .is_some_and(|w| !w.allows(now_ms, MINUTE_MS, limit));
        if over {
            self.metrics.add(Counter::LoginsThrottled, 1);
            return self.refuse_login(
                session,
                req_id,
                ErrorCode::RateLimited,
                "too many failed logins for this uid, retry later",
            );
        }
        if let Err(e) = self.auth.verify(&login.token, login.uid, now) {
            log::info!("login refused for uid {}: {e}", login.uid);
            self.metrics.add(Counter::LoginsRefused, 1);
            if limit > 0 {
                if self.login_failures.len() > MAX_TRACKED {
                    self.login_failures.clear();
                }
                let window = self.login_failures.entry(login.uid).or_default();
                window.count(now_ms, MINUTE_MS);
            }
            return self.refuse_login(
                session,
                req_id,
                ErrorCode::AuthFailed,
                "authentication failed",
            );
        }
        if self.is_revoked(login.uid, &login.token) {
            log::info!("login refused for uid {}: token revoked", login.uid);
            self.metrics.add(Counter::LoginsRefused, 1);
            return self.refuse_login(session, req_id, ErrorCode::AuthFailed, "token revoked");
        }
        self.take_place(
            login.uid,
            Device {
                device_id: login.device_id,
                platform: login.platform,
                session,
                login_ms: now * 1000,
            },
        );
        self.metrics.add(Counter::Logins, 1);
        self.downlink.send(Downcall::LoginAccepted {
            session,
            uid: login.uid,
            req_id,
        });
    }

    pub(crate) fn resume(&mut self, session: SessionId, registration: Registration) {
        let Registration {
            uid,
            device_id,
            platform,
            token_issued_ms,
        } = registration;
        if self.is_revoked_at(uid, token_issued_ms) {
            log::info!("resume refused for uid {uid}: token revoked");
            let last = self.encode(&kick_frame("token revoked"));
            self.downlink.send(Downcall::Close { session, last });
            return;
        }
        self.take_place(
            uid,
            Device {
                device_id,
                platform,
                session,
                login_ms: runtime::clock::unix_ms(),
            },
        );
        self.metrics.add(Counter::Resumed, 1);
        if let Some(frame) = self.encode(&event_frame(pb::SyncHint {})) {
            self.downlink.send(Downcall::Frame { session, frame });
        }
    }

    /// `device` takes its place in presence, closing the session it
    /// replaces (the same device logged in elsewhere), and the directory
    /// is told.
    fn take_place(&mut self, uid: u64, device: Device) {
        self.tell_directory(|| PresenceEvent::Online {
            uid,
            device: device.clone(),
        });
        if let Some(replaced) = self.presence.login(uid, device) {
            let last = self.encode(&kick_frame("logged in on the same device elsewhere"));
            self.downlink.send(Downcall::Close {
                session: replaced,
                last,
            });
        }
    }
}
