//! The JSON shapes of the protocol's messages and conversations.
//!
//! A msg_id is a decimal string: ids are above 2^53, past what a JSON
//! number keeps in JavaScript. Content is bytes on the wire: `content_base64`
//! always, and `text` too when it is UTF-8.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use protocol::pb;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct MessageView {
    pub msg_id: String,
    pub from_uid: u64,
    pub to_uid: u64,
    pub seq: u64,
    pub client_msg_id: String,
    pub content_type: u32,
    pub content_base64: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub server_time_ms: u64,
}

impl From<pb::Message> for MessageView {
    fn from(m: pb::Message) -> MessageView {
        MessageView {
            msg_id: m.msg_id.to_string(),
            from_uid: m.from_uid,
            to_uid: m.to_uid,
            seq: m.seq,
            content_base64: STANDARD.encode(&m.content),
            text: String::from_utf8(m.content.to_vec()).ok(),
            client_msg_id: m.client_msg_id,
            content_type: m.content_type,
            server_time_ms: m.server_time_ms,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ConversationView {
    pub peer_uid: u64,
    pub last_seq: u64,
    pub read_seq: u64,
    pub unread: u64,
    pub peer_read_seq: u64,
    pub last_message: Option<MessageView>,
    pub updated_ms: u64,
}

impl From<pb::Conversation> for ConversationView {
    fn from(c: pb::Conversation) -> ConversationView {
        ConversationView {
            peer_uid: c.peer_uid,
            last_seq: c.last_seq,
            read_seq: c.read_seq,
            unread: c.unread,
            peer_read_seq: c.peer_read_seq,
            last_message: c.last_message.map(MessageView::from),
            updated_ms: c.updated_ms,
        }
    }
}
