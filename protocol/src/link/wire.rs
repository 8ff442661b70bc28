//! The link's wire form: [`Upcall`] and [`Downcall`] to and from the
//! `im.link.v1` messages of `proto/link.proto`.
//!
//! Encoding cannot fail. Decoding checks what protobuf cannot: every call
//! names its session and says what it is; a message from a peer that lacks
//! either is an error, never a default. Calls travel many to a link frame,
//! in a `pb::Batch`.

use super::{Downcall, Registration, SessionId, Upcall};

/// Types generated from `proto/link.proto` by `build.rs`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/im.link.v1.rs"));
}

/// Why a decoded link message is not a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("link message without {0}")]
    Missing(&'static str),
}

impl From<SessionId> for pb::SessionId {
    fn from(id: SessionId) -> Self {
        pb::SessionId {
            gateway: id.gateway,
            slot: id.slot,
            serial: id.serial,
        }
    }
}

impl From<pb::SessionId> for SessionId {
    fn from(id: pb::SessionId) -> Self {
        SessionId {
            gateway: id.gateway,
            slot: id.slot,
            serial: id.serial,
        }
    }
}

fn session(id: Option<pb::SessionId>) -> Result<SessionId, LinkError> {
    id.map(SessionId::from).ok_or(LinkError::Missing("session"))
}

impl From<Upcall> for pb::Upcall {
    fn from(call: Upcall) -> Self {
        use pb::upcall::Call;
        let session = call.session().map(pb::SessionId::from);
        let call = match call {
            Upcall::Login { req_id, login, .. } => Call::Login(pb::Login {
                req_id,
                login: Some(login),
            }),
            Upcall::Request { uid, frame, .. } => Call::Request(pb::Request {
                uid,
                frame: Some(frame),
            }),
            Upcall::PushAck { uid, msg_id, .. } => Call::PushAck(pb::PushAck { uid, msg_id }),
            Upcall::Closed { uid, .. } => Call::Closed(pb::Closed { uid }),
            Upcall::GatewayGone { gateway } => Call::Gone(pb::GatewayGone { gateway }),
            Upcall::Resume { registration, .. } => Call::Resume(pb::Resume {
                uid: registration.uid,
                device_id: registration.device_id,
                platform: registration.platform,
                token_issued_ms: registration.token_issued_ms,
            }),
        };
        pb::Upcall {
            session,
            call: Some(call),
        }
    }
}

impl TryFrom<pb::Upcall> for Upcall {
    type Error = LinkError;

    fn try_from(call: pb::Upcall) -> Result<Self, LinkError> {
        use pb::upcall::Call;
        let body = call.call.ok_or(LinkError::Missing("call"))?;
        if let Call::Gone(gone) = body {
            return Ok(Upcall::GatewayGone {
                gateway: gone.gateway,
            });
        }
        let session = session(call.session)?;
        Ok(match body {
            Call::Login(login) => Upcall::Login {
                session,
                req_id: login.req_id,
                login: login.login.ok_or(LinkError::Missing("login_req"))?,
            },
            Call::Request(request) => Upcall::Request {
                session,
                uid: request.uid,
                frame: request.frame.ok_or(LinkError::Missing("frame"))?,
            },
            Call::PushAck(ack) => Upcall::PushAck {
                session,
                uid: ack.uid,
                msg_id: ack.msg_id,
            },
            Call::Closed(closed) => Upcall::Closed {
                session,
                uid: closed.uid,
            },
            Call::Gone(gone) => Upcall::GatewayGone {
                gateway: gone.gateway,
            },
            Call::Resume(resume) => Upcall::Resume {
                session,
                registration: Registration {
                    uid: resume.uid,
                    device_id: resume.device_id,
                    platform: resume.platform,
                    token_issued_ms: resume.token_issued_ms,
                },
            },
        })
    }
}

impl From<Downcall> for pb::Downcall {
    fn from(call: Downcall) -> Self {
        use pb::downcall::Call;
        let session = Some(call.session().into());
        let call = match call {
            Downcall::LoginAccepted { uid, req_id, .. } => {
                Call::LoginAccepted(pb::LoginAccepted { uid, req_id })
            }
            Downcall::Frame { frame, .. } => Call::Frame(frame),
            Downcall::Close { last, .. } => Call::Close(last.unwrap_or_default()),
        };
        pb::Downcall {
            session,
            call: Some(call),
        }
    }
}

impl TryFrom<pb::Downcall> for Downcall {
    type Error = LinkError;

    fn try_from(call: pb::Downcall) -> Result<Self, LinkError> {
        use pb::downcall::Call;
        let session = session(call.session)?;
        Ok(match call.call.ok_or(LinkError::Missing("call"))? {
            Call::LoginAccepted(accepted) => Downcall::LoginAccepted {
                session,
                uid: accepted.uid,
                req_id: accepted.req_id,
            },
            Call::Frame(frame) => Downcall::Frame { session, frame },
            Call::Close(last) => Downcall::Close {
                session,
                last: (!last.is_empty()).then_some(last),
            },
        })
    }
}
