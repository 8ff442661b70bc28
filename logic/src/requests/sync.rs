//! SyncReq: the caller's conversations changed since its cursor (a change
//! version), oldest change first: how a device catches up after being away.

use protocol::{Body, pb};

use crate::reader::{MAX_STORED, ReadError, conversation_page, page_limit};
use crate::store::ReadStore;

/// On a reader thread.
pub fn answer(
    store: &mut dyn ReadStore,
    uid: u64,
    req: pb::SyncReq,
    max_frame: usize,
) -> Result<Body, ReadError> {
    let limit = page_limit(req.limit, 100, 500);
    let rows = store.changed_since(uid, req.cursor.min(MAX_STORED), limit + 1)?;
    let (conversations, rows, more) = conversation_page(store, rows, limit, max_frame)?;
    let cursor = rows.last().map_or(req.cursor, |row| row.version);
    Ok(pb::SyncResp {
        conversations,
        cursor,
        more,
    }
    .into())
}
