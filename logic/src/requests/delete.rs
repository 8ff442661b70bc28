//! DeleteConversationReq: read the conversation to its end, then hide it and
//! its history from the caller (`WriteOp::Delete`) until the next message.
//! Once durable: the response, and the ReadNotice a read would send.

use protocol::pb;

use crate::pipeline::{Pipeline, Ticket};
use crate::sequencer::{ReadOutcome, WriteOp};

impl Pipeline {
    pub(crate) fn delete_conversation(&mut self, ticket: Ticket, req: pb::DeleteConversationReq) {
        let (owner, peer) = (ticket.uid, req.peer_uid);
        self.write_with_peer(ticket, peer, WriteOp::Delete { owner, peer })
    }

    pub(crate) fn deleted_conversation(&mut self, ticket: Ticket, read: ReadOutcome) {
        self.reply(&ticket, pb::DeleteConversationResp {}.into());
        self.notify_read(&ticket, &read);
    }
}
