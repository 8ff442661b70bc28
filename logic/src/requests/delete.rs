//! DeleteConversationReq: read the conversation to its end, then hide it and
//! its history from the caller (`WriteOp::Delete`) until the next message.
//! Once durable: the response, and the ReadNotice a read would send.

use protocol::{ErrorCode, pb};

use crate::pipeline::{Pipeline, Ticket};
use crate::sequencer::{ReadOutcome, WriteOp};

impl Pipeline {
    pub(crate) fn delete_conversation(&mut self, ticket: Ticket, req: pb::DeleteConversationReq) {
        if req.peer_uid == 0 || req.peer_uid == ticket.uid {
            return self.fail(
                &ticket,
                ErrorCode::InvalidArgument,
                "peer_uid must be another user",
            );
        }
        let op = WriteOp::Delete {
            owner: ticket.uid,
            peer: req.peer_uid,
        };
        self.write(ticket, op)
    }

    pub(crate) fn deleted_conversation(&mut self, ticket: Ticket, read: ReadOutcome) {
        self.reply(&ticket, pb::DeleteConversationResp {}.into());
        self.notify_read(&ticket, &read);
    }
}
