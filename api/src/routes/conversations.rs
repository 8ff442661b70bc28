//! `GET /v1/users/{uid}/conversations`: a user's conversation list, most
//! recent first, paged by a cursor (the last msg_id of the page before);
//! `GET /v1/users/{uid}/conversations/{peer_uid}/messages`: one
//! conversation's history, paged by seq from either end. Both are the
//! client's ConversationsReq and HistoryReq, asked as that user.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use protocol::pb;
use serde::{Deserialize, Serialize};

use super::views::{ConversationView, MessageView};
use crate::Api;
use crate::error::ApiError;
use crate::extract::{PathParams, QueryParams, decimal, uid};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    pub limit: u32,
    /// `next_cursor` of the page before; absent: the first page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ConversationList {
    pub conversations: Vec<ConversationView>,
    pub total_unread: u64,
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

pub async fn list(
    State(api): State<Arc<Api>>,
    PathParams(user): PathParams<u64>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<ConversationList>, ApiError> {
    let user = uid(user, "uid")?;
    // The wire cursor is the last msg_id of the page before, 8 bytes big-endian.
    let cursor = match query.cursor.as_deref() {
        None => Vec::new(),
        Some(c) => decimal(c, "cursor")?.to_be_bytes().to_vec(),
    };
    let req = pb::ConversationsReq {
        limit: query.limit,
        cursor,
    };
    let resp = api.call(user, req).await?;
    Ok(Json(ConversationList {
        conversations: resp.conversations.into_iter().map(Into::into).collect(),
        total_unread: resp.total_unread,
        next_cursor: <[u8; 8]>::try_from(&resp.next_cursor[..])
            .ok()
            .map(|last| u64::from_be_bytes(last).to_string()),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Messages after this seq, oldest first...
    #[serde(default)]
    pub after_seq: u64,
    /// ...or before this one (0: the newest), newest last.
    #[serde(default)]
    pub before_seq: u64,
    #[serde(default)]
    pub limit: u32,
}

#[derive(Debug, Serialize)]
pub struct HistoryPage {
    pub messages: Vec<MessageView>,
    pub more: bool,
}

pub async fn history(
    State(api): State<Arc<Api>>,
    PathParams((user, peer)): PathParams<(u64, u64)>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let user = uid(user, "uid")?;
    let peer_uid = uid(peer, "peer_uid")?;
    let req = pb::HistoryReq {
        peer_uid,
        after_seq: query.after_seq,
        before_seq: query.before_seq,
        limit: query.limit,
    };
    let resp = api.call(user, req).await?;
    Ok(Json(HistoryPage {
        messages: resp.messages.into_iter().map(Into::into).collect(),
        more: resp.more,
    }))
}
