//! One file per request kind, each with the same three steps: **validate**
//! on the pipeline thread (refuse what the contract refuses, then hand a
//! write to the group commit or a read to the readers), **apply** (a write's
//! rule lives in the sequencer; a read's query is here, run on a reader
//! thread), and **answer** (a write's response and notices once its commit
//! is durable; a read's response from the reader).
//!
//! This file is the table of them: which file serves which frame body,
//! which file answers which committed outcome, and which runs which read.
//! A new request kind is a new file and one arm in each table that applies.

mod conversations;
mod delete;
mod history;
mod login;
mod profile;
mod read;
mod revoke;
mod send;
mod sync;

use protocol::{Body, ErrorCode, pb};

use crate::cache::Cache;
use crate::pipeline::{Pipeline, Ticket};
use crate::reader::ReadError;
use crate::sequencer::{Outcome, WriteOp};
use crate::store::ReadStore;

/// A read, validated, on its way to a reader thread.
pub enum ReadQuery {
    History(pb::HistoryReq),
    Sync(pb::SyncReq),
    Conversations(pb::ConversationsReq),
    Profiles(pb::ProfileReq),
}

impl Pipeline {
    /// Validates a logged-in session's request and sends it on its way.
    pub(crate) fn request(&mut self, ticket: Ticket, body: Body) {
        match body {
            Body::SendReq(req) => self.send(ticket, req),
            Body::ReadReq(req) => self.mark_read(ticket, req),
            Body::DeleteConversationReq(req) => self.delete_conversation(ticket, req),
            Body::SetProfileReq(req) => self.set_profile(ticket, req),
            Body::ProfileReq(req) => self.profiles(ticket, req),
            Body::HistoryReq(req) => self.history(ticket, req),
            Body::SyncReq(req) => self.read(ticket, ReadQuery::Sync(req)),
            Body::ConversationsReq(req) => self.read(ticket, ReadQuery::Conversations(req)),
            Body::RevokeTokensReq(req) => self.revoke(ticket, req),
            other => {
                // The gateway answers Login, Ping and PushAck itself.
                let message = format!("{} is not a request the logic tier serves", other.name());
                self.fail(&ticket, ErrorCode::BadFrame, &message)
            }
        }
    }

    /// Hands a write about a conversation to the group commit, unless its
    /// peer_uid is not another user (INVALID_ARGUMENT).
    fn write_with_peer(&mut self, ticket: Ticket, peer_uid: u64, op: WriteOp) {
        if peer_uid == 0 || peer_uid == ticket.uid {
            return self.fail(
                &ticket,
                ErrorCode::InvalidArgument,
                "peer_uid must be another user",
            );
        }
        self.write(ticket, op)
    }

    /// Answers a write whose commit is durable.
    pub(crate) fn committed(&mut self, ticket: Ticket, outcome: Outcome) {
        match outcome {
            Outcome::Sent { message, duplicate } => self.sent(ticket, message, duplicate),
            Outcome::Read(read) => self.marked_read(ticket, read),
            Outcome::Deleted(read) => self.deleted_conversation(ticket, read),
            Outcome::ProfileSet => self.profile_set(ticket),
            Outcome::Revoked(revocation) => self.tokens_revoked(ticket, revocation),
            // The outbox does not wait for its removals.
            Outcome::NoticesDone => {}
        }
    }
}

/// What a read runs with, on its reader thread inside one snapshot.
pub struct Reading<'a> {
    pub store: &'a mut dyn ReadStore,
    pub cache: &'a mut Cache,
    /// Who asked.
    pub uid: u64,
    /// The answer must fit in one frame of this size.
    pub max_frame: usize,
}

/// Runs a read.
pub fn answer(reading: Reading<'_>, query: &ReadQuery) -> Result<Body, ReadError> {
    match query {
        ReadQuery::History(req) => history::answer(reading, *req),
        ReadQuery::Sync(req) => sync::answer(reading, *req),
        ReadQuery::Conversations(req) => conversations::answer(reading, req),
        ReadQuery::Profiles(req) => profile::answer(reading, req),
    }
}
