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
mod send;
mod sync;

use protocol::{Body, ErrorCode, pb};

use crate::cache::Cache;
use crate::pipeline::{Pipeline, Ticket};
use crate::reader::ReadError;
use crate::sequencer::Outcome;
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
            other => {
                // The gateway answers Login, Ping and PushAck itself.
                let message = format!("{} is not a request the logic tier serves", other.name());
                self.fail(&ticket, ErrorCode::BadFrame, &message)
            }
        }
    }

    /// Answers a write whose commit is durable.
    pub(crate) fn committed(&mut self, ticket: Ticket, outcome: Outcome) {
        match outcome {
            Outcome::Sent { message, duplicate } => self.sent(ticket, message, duplicate),
            Outcome::Read(read) => self.marked_read(ticket, read),
            Outcome::Deleted(read) => self.deleted_conversation(ticket, read),
            Outcome::ProfileSet => self.profile_set(ticket),
        }
    }
}

/// Runs a read on a reader thread, inside one snapshot.
pub fn answer(
    store: &mut dyn ReadStore,
    cache: &mut Cache,
    uid: u64,
    query: &ReadQuery,
    max_frame: usize,
) -> Result<Body, ReadError> {
    match query {
        ReadQuery::History(req) => history::answer(store, uid, *req, max_frame),
        ReadQuery::Sync(req) => sync::answer(store, uid, *req, max_frame),
        ReadQuery::Conversations(req) => {
            conversations::answer(store, cache, uid, req.clone(), max_frame)
        }
        ReadQuery::Profiles(req) => profile::answer(store, cache, req.clone(), max_frame),
    }
}
