//! SendReq: validate, content filter, per-user rate limit, recent-id
//! dedup, then the group commit (`WriteOp::Send`: the sequencer gives it its
//! seq and msg_id). Once durable: SendResp to the sender (and to any retry
//! that waited on the same client_msg_id), a push to every other device of
//! both users, each tracked until its ack. A message to a recipient with no
//! device online carries an offline notice into the same durable write,
//! which the outbox (`outbox/`) delivers to the webhook.

use protocol::body::event_frame;
use protocol::link::{Downcall, SessionId};
use protocol::{ErrorCode, pb};
use runtime::rate::{Admit, TokenBucket};

use crate::dedup::Recent;
use crate::metrics::Counter;
use crate::pipeline::{Pipeline, Ticket};
use crate::sequencer::WriteOp;

/// Longest client_msg_id: the contract's limit.
const MAX_CLIENT_MSG_ID: usize = crate::dedup::MAX_ID;

/// Most per-user rate limits kept; past it they are all forgotten, which
/// only grants each user a fresh burst.
const MAX_LIMITS: usize = 1_000_000;

impl Pipeline {
    pub(crate) fn send(&mut self, mut ticket: Ticket, send: pb::SendReq) {
        let uid = ticket.uid;
        if send.to_uid == 0 || send.to_uid == uid {
            return self.fail(
                &ticket,
                ErrorCode::InvalidArgument,
                "to_uid must be another user",
            );
        }
        if send.client_msg_id.is_empty() || send.client_msg_id.len() > MAX_CLIENT_MSG_ID {
            return self.fail(
                &ticket,
                ErrorCode::InvalidArgument,
                "client_msg_id must be 1 to 64 bytes",
            );
        }
        if send.content.len() > self.config.max_content_bytes {
            return self.fail(
                &ticket,
                ErrorCode::InvalidArgument,
                "content is over the size limit",
            );
        }
        if self.filter.rejects(&send.content) {
            return self.fail(
                &ticket,
                ErrorCode::ContentRejected,
                "refused by the content filter",
            );
        }
        // A direct send (the HTTP API) is limited per API key instead.
        if !ticket.is_direct() && !self.admit(uid) {
            return self.fail(
                &ticket,
                ErrorCode::RateLimited,
                "too many messages, retry later",
            );
        }
        match self.recent.get_mut(uid, &send.client_msg_id) {
            Some(Recent::Done {
                msg_id,
                seq,
                server_time_ms,
            }) => {
                self.metrics.add(Counter::Duplicates, 1);
                let resp = pb::SendResp {
                    msg_id: *msg_id,
                    seq: *seq,
                    server_time_ms: *server_time_ms,
                    duplicate: true,
                };
                return self.answer_send(&ticket, resp);
            }
            Some(Recent::Pending(waiters)) => {
                waiters.push(ticket);
                return;
            }
            None => {}
        }
        self.recent.insert_pending(uid, &send.client_msg_id);
        ticket.client_msg_id = Some(send.client_msg_id.clone());
        let notify = self.notify_offline(send.to_uid);
        let op = WriteOp::Send {
            from: uid,
            to: send.to_uid,
            client_msg_id: send.client_msg_id,
            content_type: send.content_type,
            content: send.content,
            notify,
        };
        self.write(ticket, op);
    }

    /// Whether a message to `to` records an offline notice: the recipient
    /// has no device online, a webhook is configured, and the outbox has
    /// room (else the notice is counted as dropped).
    fn notify_offline(&self, to: u64) -> bool {
        if !self.presence.devices(to).is_empty() {
            return false;
        }
        self.metrics.add(Counter::OfflineNotifications, 1);
        let Some(backlog) = &self.outbox else {
            return false;
        };
        let admitted = backlog.admit();
        if !admitted {
            self.metrics.add(Counter::WebhookDropped, 1);
        }
        admitted
    }

    /// Takes a token from the user's send rate limit.
    fn admit(&mut self, uid: u64) -> bool {
        if self.limits.len() > MAX_LIMITS {
            self.limits.clear();
        }
        let (rate, burst) = (self.config.messages_per_sec, self.config.message_burst);
        let now = self.now_ms();
        let bucket = self
            .limits
            .entry(uid)
            .or_insert_with(|| TokenBucket::full(burst, now));
        bucket.take(now, rate, burst) == Admit::Yes
    }

    /// The send is durable: answer it and its waiting retries, then push.
    pub(crate) fn sent(&mut self, ticket: Ticket, message: pb::Message, duplicate: bool) {
        let resp = pb::SendResp {
            msg_id: message.msg_id,
            seq: message.seq,
            server_time_ms: message.server_time_ms,
            duplicate,
        };
        let waiters = self.recent.complete(
            message.from_uid,
            &message.client_msg_id,
            message.msg_id,
            message.seq,
            message.server_time_ms,
        );
        self.answer_send(&ticket, resp);
        for waiter in waiters {
            self.answer_send(
                &waiter,
                pb::SendResp {
                    duplicate: true,
                    ..resp
                },
            );
        }
        if !duplicate {
            self.fan_out(ticket.session, message);
        }
    }

    fn answer_send(&self, ticket: &Ticket, resp: pb::SendResp) {
        self.reply(ticket, resp.into());
        self.metrics.send_to_ack.observe(ticket.received.elapsed());
    }

    /// A send that will not be stored: retries waiting on it fail too.
    pub(crate) fn settle_failed(&mut self, ticket: &Ticket) {
        let Some(client_msg_id) = &ticket.client_msg_id else {
            return;
        };
        if let Some(Recent::Pending(waiters)) = self.recent.remove(ticket.uid, client_msg_id) {
            for waiter in waiters {
                self.fail(
                    &waiter,
                    ErrorCode::Unavailable,
                    "storage unavailable, retry later",
                );
            }
        }
    }

    /// Pushes a stored message to every online device of the recipient and
    /// to the sender's other devices, and tracks each push until its ack.
    fn fan_out(&mut self, origin: SessionId, message: pb::Message) {
        let msg_id = message.msg_id;
        let targets = self.devices_of([message.to_uid, message.from_uid], origin);
        let Some(frame) = self.encode(&event_frame(pb::Push {
            message: Some(message),
        })) else {
            return;
        };
        let now = self.now_us();
        self.metrics.add(Counter::Pushes, targets.len() as u64);
        for (uid, session) in targets {
            self.downlink.send(Downcall::Frame {
                session,
                frame: frame.clone(),
            });
            self.acks.pushed(session, uid, msg_id, frame.clone(), now);
        }
    }
}
