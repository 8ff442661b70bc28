//! HistoryReq: a page of one conversation's messages, by seq, from either
//! end, without what the caller deleted.

use protocol::{Body, ErrorCode, pb};

use crate::pages::{Keep, fit};
use crate::pipeline::{Pipeline, Ticket};
use crate::reader::{MAX_STORED, ReadError, page_limit};
use crate::requests::{ReadQuery, Reading};
use crate::store::Pair;

impl Pipeline {
    pub(crate) fn history(&mut self, ticket: Ticket, req: pb::HistoryReq) {
        if req.peer_uid == 0 {
            return self.fail(&ticket, ErrorCode::InvalidArgument, "peer_uid is 0");
        }
        self.read(ticket, ReadQuery::History(req))
    }
}

/// On a reader thread.
pub fn answer(reading: Reading<'_>, req: pb::HistoryReq) -> Result<Body, ReadError> {
    let Reading {
        store,
        uid,
        max_frame,
        ..
    } = reading;
    let limit = page_limit(req.limit, 50, 200);
    if req.peer_uid == uid {
        return Ok(pb::HistoryResp {
            messages: vec![],
            more: false,
        }
        .into());
    }
    let pair = Pair::of(uid, req.peer_uid);
    // What the caller deleted stays hidden from the caller.
    let hidden_up_to = store
        .conversation(uid, req.peer_uid)?
        .map_or(0, |row| row.deleted_up_to);
    let (mut messages, mut more) = if req.after_seq > 0 {
        let after = req.after_seq.min(MAX_STORED).max(hidden_up_to);
        let mut page = store.messages_after(pair, after, limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    } else {
        let below = if req.before_seq > 0 {
            req.before_seq.min(MAX_STORED)
        } else {
            MAX_STORED
        };
        let mut page = store.messages_before(pair, below, hidden_up_to, limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        page.reverse();
        (page, more)
    };
    let keep = if req.after_seq > 0 {
        Keep::Front
    } else {
        Keep::Back
    };
    more |= fit(&mut messages, max_frame, keep) > 0;
    Ok(pb::HistoryResp { messages, more }.into())
}
