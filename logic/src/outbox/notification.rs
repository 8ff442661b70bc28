//! The JSON a receiver gets for one offline message: what a push bridge
//! needs to wake the recipient's phone (docs/webhook.md).

use protocol::pb;
use serde::Serialize;

use crate::store::{Notice, Pair, ReadStore, StoreResult};

#[derive(Debug, Serialize, PartialEq)]
pub struct Notification {
    pub event: &'static str,
    /// A decimal string, as everywhere in JSON (it exceeds 2^53).
    pub msg_id: String,
    pub to_uid: u64,
    pub from_uid: u64,
    /// The conversation, as the recipient sees it: the peer is `from_uid`.
    pub conversation: String,
    pub seq: u64,
    pub content_type: u32,
    pub server_time_ms: u64,
    /// The start of a text message, when previews are on and the content
    /// is UTF-8; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    /// The recipient's unread messages over all conversations (the badge).
    pub unread_total: u64,
}

impl Notification {
    /// The notification of `notice`, read from storage now (so the badge is
    /// the count at delivery). `preview_chars` 0: no preview.
    pub fn read(
        store: &mut dyn ReadStore,
        notice: &Notice,
        preview_chars: usize,
    ) -> StoreResult<Notification> {
        let pair = Pair::of(notice.from_uid, notice.to_uid);
        let message = store.message(pair, notice.seq)?;
        Ok(Notification {
            event: "message.offline",
            msg_id: notice.msg_id.to_string(),
            to_uid: notice.to_uid,
            from_uid: notice.from_uid,
            conversation: format!("{}:{}", pair.small, pair.big),
            seq: notice.seq,
            content_type: message.as_ref().map_or(0, |m| m.content_type),
            server_time_ms: message
                .as_ref()
                .map_or(notice.created_ms, |m| m.server_time_ms),
            preview: message.as_ref().and_then(|m| preview(m, preview_chars)),
            unread_total: store.total_unread(notice.to_uid)?,
        })
    }
}

/// The first `chars` characters of the content, if it is UTF-8 and
/// `chars` is not 0.
fn preview(message: &pb::Message, chars: usize) -> Option<String> {
    if chars == 0 {
        return None;
    }
    let text = std::str::from_utf8(&message.content).ok()?;
    Some(text.chars().take(chars).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_is_cut_at_characters_and_binary_content_has_none() {
        let mut message = pb::Message {
            content: "héllo wörld".as_bytes().to_vec(),
            ..Default::default()
        };
        assert_eq!(preview(&message, 5).as_deref(), Some("héllo"));
        assert_eq!(preview(&message, 100).as_deref(), Some("héllo wörld"));
        assert_eq!(preview(&message, 0), None, "previews off");
        message.content = vec![0xff, 0xfe];
        assert_eq!(preview(&message, 5), None);
    }
}
