//! ConversationsReq: the caller's visible conversations, most recent
//! first, with unread counts and each one's last message; from the Redis
//! list where it can answer, else from storage.

use protocol::{Body, pb};

use crate::cache::Cache;
use crate::reader::{MAX_STORED, ReadError, conversation_page, page_limit};
use crate::requests::Reading;
use crate::store::{ConvRow, ReadStore, StoreResult};

/// On a reader thread.
pub fn answer(reading: Reading<'_>, req: &pb::ConversationsReq) -> Result<Body, ReadError> {
    let Reading {
        store,
        cache,
        uid,
        max_frame,
    } = reading;
    let limit = page_limit(req.limit, 50, 200);
    let below = match req.cursor.len() {
        0 => MAX_STORED,
        8 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&req.cursor);
            u64::from_be_bytes(bytes).min(MAX_STORED)
        }
        _ => return Err(ReadError::Invalid("cursor is not one this server gave out")),
    };
    let rows = match cached_by_recency(store, cache, uid, below, limit)? {
        Some(rows) => rows,
        None => store.visible_by_recency(uid, below, limit + 1)?,
    };
    let (conversations, rows, more) = conversation_page(store, rows, limit, max_frame)?;
    let next_cursor = match rows.last() {
        Some(row) if more => row.last_msg_id.to_be_bytes().to_vec(),
        _ => Vec::new(),
    };
    let total_unread = match cache.total_unread(uid) {
        Some(total) => total,
        None => store.total_unread(uid)?,
    };
    Ok(pb::ConversationsResp {
        conversations,
        total_unread,
        next_cursor,
    }
    .into())
}

/// The page `visible_by_recency(uid, below, limit + 1)` would give, from
/// the cached list and a primary-key read of its rows; `None` if the cache
/// cannot say.
fn cached_by_recency(
    store: &mut dyn ReadStore,
    cache: &mut Cache,
    uid: u64,
    below: u64,
    limit: usize,
) -> StoreResult<Option<Vec<ConvRow>>> {
    // A few extra peers cover members the coarser scores let through.
    let Some(page) = cache.peers_by_recency(uid, below, limit + 1 + 8) else {
        return Ok(None);
    };
    let mut rows = store.conversations_with(uid, &page.peers)?;
    rows.retain(|row| !row.hidden && row.last_msg_id < below);
    rows.sort_unstable_by_key(|row| std::cmp::Reverse(row.last_msg_id));
    if rows.len() > limit || page.exhaustive {
        rows.truncate(limit + 1);
        Ok(Some(rows))
    } else {
        Ok(None)
    }
}
