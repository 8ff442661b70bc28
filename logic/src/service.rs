//! The logic tier's thread: takes upcalls off the queue in arrival order
//! and answers them.

use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use protocol::body::error_frame;
use protocol::link::{Downcall, Downlink, SessionId, Upcall};
use protocol::{ErrorCode, Frame, FrameCodec, pb};

use crate::auth::{Authenticator, unix_secs};
use crate::presence::{Device, Presence};

pub struct LogicHandle {
    thread: JoinHandle<()>,
}

impl LogicHandle {
    /// Waits for the logic thread; it ends once every gateway is gone (the
    /// upcall queue is disconnected) and it has answered what was queued.
    pub fn join(self) {
        if self.thread.join().is_err() {
            log::error!("logic thread panicked");
        }
    }
}

/// Starts the logic thread on `upcalls`, answering through `downlink`.
pub fn start(
    auth: Authenticator,
    max_frame: usize,
    upcalls: Receiver<Upcall>,
    downlink: Arc<dyn Downlink>,
) -> io::Result<LogicHandle> {
    let mut logic = Logic {
        auth,
        codec: FrameCodec::new(max_frame),
        presence: Presence::default(),
        downlink,
    };
    let thread = thread::Builder::new()
        .name("im-logic".into())
        .spawn(move || {
            while let Ok(call) = upcalls.recv() {
                logic.handle(call);
            }
        })?;
    Ok(LogicHandle { thread })
}

struct Logic {
    auth: Authenticator,
    codec: FrameCodec,
    presence: Presence,
    downlink: Arc<dyn Downlink>,
}

impl Logic {
    fn handle(&mut self, call: Upcall) {
        match call {
            Upcall::Login {
                session,
                req_id,
                login,
            } => self.login(session, req_id, login),
            Upcall::Closed { session, .. } => {
                self.presence.logout(session);
            }
            Upcall::PushAck { .. } => {}
            Upcall::Request { session, frame, .. } => {
                let error = error_frame(frame.req_id, ErrorCode::Unavailable, "not served yet");
                self.send(session, &error);
            }
        }
    }

    fn login(&mut self, session: SessionId, req_id: u64, login: pb::LoginReq) {
        if let Err(e) = self.auth.verify(&login.token, login.uid, unix_secs()) {
            log::info!("login refused for uid {}: {e}", login.uid);
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
            login_ms: unix_secs() * 1000,
        };
        if let Some(replaced) = self.presence.login(login.uid, device) {
            let kick = Frame {
                req_id: 0,
                body: Some(
                    pb::Kick {
                        reason: "logged in on the same device elsewhere".into(),
                    }
                    .into(),
                ),
            };
            let last = self.encode(&kick);
            self.downlink.send(Downcall::Close {
                session: replaced,
                last,
            });
        }
        self.downlink.send(Downcall::LoginAccepted {
            session,
            uid: login.uid,
            req_id,
        });
    }

    fn send(&self, session: SessionId, frame: &Frame) {
        if let Some(frame) = self.encode(frame) {
            self.downlink.send(Downcall::Frame { session, frame });
        }
    }

    fn encode(&self, frame: &Frame) -> Option<Bytes> {
        match self.codec.encode_to_bytes(frame) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                log::error!("cannot encode a frame: {e}");
                None
            }
        }
    }
}
