//! ReadReq: mark the caller's side of a conversation read up to a seq
//! (`WriteOp::Read`; the sequencer clamps it to the last seq and never moves
//! it back). Once durable: ReadResp with the unread counts, and a
//! ReadNotice to the peer's devices and the caller's other devices when the
//! position moved.

use protocol::body::event_frame;
use protocol::link::Downcall;
use protocol::pb;

use crate::metrics::Counter;
use crate::pipeline::{Pipeline, Ticket};
use crate::sequencer::{ReadOutcome, WriteOp};

impl Pipeline {
    pub(crate) fn mark_read(&mut self, ticket: Ticket, req: pb::ReadReq) {
        let (owner, peer, seq) = (ticket.uid, req.peer_uid, req.seq);
        self.write_with_peer(ticket, peer, WriteOp::Read { owner, peer, seq })
    }

    pub(crate) fn marked_read(&mut self, ticket: Ticket, read: ReadOutcome) {
        let resp = pb::ReadResp {
            unread: read.unread,
            total_unread: read.total_unread,
        };
        self.reply(&ticket, resp.into());
        self.notify_read(&ticket, &read);
    }

    /// A read position moved: the peer's devices get a read receipt, the
    /// reader's other devices learn it too.
    pub(crate) fn notify_read(&mut self, ticket: &Ticket, read: &ReadOutcome) {
        if !read.changed {
            return;
        }
        let notice = pb::ReadNotice {
            reader_uid: read.owner,
            peer_uid: read.peer,
            seq: read.seq,
        };
        let Some(frame) = self.encode(&event_frame(notice)) else {
            return;
        };
        let targets = self.devices_of([read.peer, read.owner], ticket.session);
        self.metrics.add(Counter::ReadNotices, targets.len() as u64);
        for (_, session) in targets {
            self.downlink.send(Downcall::Frame {
                session,
                frame: frame.clone(),
            });
        }
    }
}
