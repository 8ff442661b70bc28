//! SyncReq: the caller's conversations changed since its cursor (a change
//! version), oldest change first: how a device catches up after being away.

use protocol::{Body, pb};

use crate::reader::{MAX_STORED, ReadError, conversation_page, page_limit};
use crate::requests::Reading;

/// On a reader thread.
pub fn answer(reading: Reading<'_>, req: pb::SyncReq) -> Result<Body, ReadError> {
    let limit = page_limit(req.limit, 100, 500);
    let after = req.cursor.min(MAX_STORED);
    let rows = reading.store.changed_since(reading.uid, after, limit + 1)?;
    let (conversations, rows, more) =
        conversation_page(reading.store, rows, limit, reading.max_frame)?;
    let cursor = rows.last().map_or(req.cursor, |row| row.version);
    Ok(pb::SyncResp {
        conversations,
        cursor,
        more,
    }
    .into())
}
