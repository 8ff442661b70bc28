//! Login (the gateway's `Upcall::Login`): verify the token, take the
//! device's place in presence (kicking the session it replaces), tell the
//! presence directory, and let the gateway answer LoginResp.

use protocol::body::{error_frame, kick_frame};
use protocol::link::{Downcall, SessionId};
use protocol::{ErrorCode, pb};
use runtime::clock::unix_secs;

use crate::cache::keeper::PresenceEvent;
use crate::metrics::Counter;
use crate::pipeline::Pipeline;
use crate::presence::Device;

impl Pipeline {
    pub(crate) fn login(&mut self, session: SessionId, req_id: u64, login: pb::LoginReq) {
        let now = unix_secs();
        if let Err(e) = self.auth.verify(&login.token, login.uid, now) {
            log::info!("login refused for uid {}: {e}", login.uid);
            self.metrics.add(Counter::LoginsRefused, 1);
            let last = self.encode(&error_frame(
                req_id,
                ErrorCode::AuthFailed,
                "authentication failed",
            ));
            self.downlink.send(Downcall::Close { session, last });
            return;
        }
        let device = Device {
            device_id: login.device_id,
            platform: login.platform,
            session,
            login_ms: now * 1000,
        };
        self.tell_directory(|| PresenceEvent::Online {
            uid: login.uid,
            device: device.clone(),
        });
        if let Some(replaced) = self.presence.login(login.uid, device) {
            let last = self.encode(&kick_frame("logged in on the same device elsewhere"));
            self.downlink.send(Downcall::Close {
                session: replaced,
                last,
            });
        }
        self.metrics.add(Counter::Logins, 1);
        self.downlink.send(Downcall::LoginAccepted {
            session,
            uid: login.uid,
            req_id,
        });
    }
}
