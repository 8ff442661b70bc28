//! What each frame body is: who may send it, its name for logs and metrics,
//! and which response answers which request.
//!
//! The contract lets a client send only some bodies; the rest are the
//! server's. Keeping that table here, next to the schema, means the gateway,
//! the client and the SDK docs cannot disagree about it.

use crate::pb::{self, frame::Body};

/// A frame answering `req_id` with an error.
pub fn error_frame(req_id: u64, code: pb::ErrorCode, message: impl Into<String>) -> pb::Frame {
    pb::Frame {
        req_id,
        body: Some(Body::Error(pb::Error {
            code: code as i32,
            message: message.into(),
        })),
    }
}

/// A frame nobody asked for (req_id 0): a push, a read notice, a kick, or a
/// client's PushAck.
pub fn event_frame(body: impl Into<Body>) -> pb::Frame {
    pb::Frame {
        req_id: 0,
        body: Some(body.into()),
    }
}

/// The Kick a session receives as its last frame.
pub fn kick_frame(reason: impl Into<String>) -> pb::Frame {
    event_frame(pb::Kick {
        reason: reason.into(),
    })
}

/// Which side of a connection may send a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Client,
    Server,
}

/// Generates, for every body variant: its sender, its name, and
/// `From<Message> for Body` so a message converts into a frame body.
macro_rules! bodies {
    ($($variant:ident => $sender:ident, $name:literal;)*) => {
        impl Body {
            /// The side of the connection that may send this body.
            pub fn sender(&self) -> Sender {
                match self {
                    $(Body::$variant(_) => Sender::$sender,)*
                }
            }

            /// The proto field name of this body, e.g. `"send_req"`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Body::$variant(_) => $name,)*
                }
            }
        }

        $(impl From<pb::$variant> for Body {
            fn from(message: pb::$variant) -> Body {
                Body::$variant(message)
            }
        })*
    };
}

bodies! {
    Error => Server, "error";
    LoginReq => Client, "login_req";
    LoginResp => Server, "login_resp";
    Ping => Client, "ping";
    Pong => Server, "pong";
    Kick => Server, "kick";
    SendReq => Client, "send_req";
    SendResp => Server, "send_resp";
    Push => Server, "push";
    PushAck => Client, "push_ack";
    SyncHint => Server, "sync_hint";
    SyncReq => Client, "sync_req";
    SyncResp => Server, "sync_resp";
    HistoryReq => Client, "history_req";
    HistoryResp => Server, "history_resp";
    ReadReq => Client, "read_req";
    ReadResp => Server, "read_resp";
    ReadNotice => Server, "read_notice";
    ConversationsReq => Client, "conversations_req";
    ConversationsResp => Server, "conversations_resp";
    DeleteConversationReq => Client, "delete_conversation_req";
    DeleteConversationResp => Server, "delete_conversation_resp";
    ProfileReq => Client, "profile_req";
    ProfileResp => Server, "profile_resp";
    SetProfileReq => Client, "set_profile_req";
    SetProfileResp => Server, "set_profile_resp";
    RevokeTokensReq => Client, "revoke_tokens_req";
    RevokeTokensResp => Server, "revoke_tokens_resp";
}

/// A client request and the response body that answers it, so a caller can
/// write `client.call(SendReq { .. })?` and get a `SendResp` back.
pub trait Request: Into<Body> {
    type Response;
    /// Picks the expected response out of a body; `None` for any other body.
    fn response(body: Body) -> Option<Self::Response>;
}

macro_rules! requests {
    ($($req:ident => $resp:ident;)*) => {
        $(impl Request for pb::$req {
            type Response = pb::$resp;
            fn response(body: Body) -> Option<pb::$resp> {
                match body {
                    Body::$resp(resp) => Some(resp),
                    _ => None,
                }
            }
        })*
    };
}

requests! {
    LoginReq => LoginResp;
    Ping => Pong;
    SendReq => SendResp;
    SyncReq => SyncResp;
    HistoryReq => HistoryResp;
    ReadReq => ReadResp;
    ConversationsReq => ConversationsResp;
    DeleteConversationReq => DeleteConversationResp;
    ProfileReq => ProfileResp;
    SetProfileReq => SetProfileResp;
    RevokeTokensReq => RevokeTokensResp;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_only_bodies_are_marked_server() {
        let pushed: Body = pb::Push::default().into();
        assert_eq!(pushed.sender(), Sender::Server);
        assert_eq!(pushed.name(), "push");
        let ack: Body = pb::PushAck { msg_id: 7 }.into();
        assert_eq!(ack.sender(), Sender::Client);
        assert_eq!(Body::Error(pb::Error::default()).sender(), Sender::Server);
    }

    #[test]
    fn request_picks_only_its_own_response() {
        let resp = Body::SendResp(pb::SendResp {
            msg_id: 1,
            seq: 2,
            server_time_ms: 3,
            duplicate: false,
        });
        assert_eq!(pb::SendReq::response(resp.clone()).map(|r| r.seq), Some(2));
        assert!(pb::ReadReq::response(resp).is_none());
    }
}
