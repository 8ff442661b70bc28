//! System messages from a message queue: NATS JetStream.
//!
//! Business backends publish send requests (the JSON of `POST
//! /v1/messages`) to `queue.subject`; the broker keeps them through spikes
//! and restarts, and this consumer feeds them to the logic tier at the pace
//! it takes. Why JetStream: a single small broker with durable streams,
//! pull consumers that give back-pressure for free, and an official,
//! well-kept Rust client (`async-nats`) on the tokio runtime the API
//! already runs (RabbitMQ's Rust clients are community-kept).
//!
//! The rules:
//!
//! - **At least once, acked after durable**: a request is acked to the
//!   broker only once its SendResp came back, which means stored. A
//!   request delivered again (a lost ack, a restart) is absorbed by the
//!   `client_msg_id` dedup: the same message, `duplicate: true`.
//! - **Each conversation in queue order**: requests of one (sender,
//!   recipient) pair go one at a time, in the order delivered ([`Lanes`]);
//!   one refused for now (UNAVAILABLE, RATE_LIMITED) is retried in place,
//!   holding the ones behind it, so the seqs follow the queue.
//! - **A poison request never blocks the queue**: one that cannot succeed
//!   (not JSON, an unknown field, a uid of 0, content refused) is published
//!   to the dead-letter subject with `Im-Error-Code` and `Im-Error-Reason`
//!   headers, then terminated; if that publish fails it is not acked, and
//!   comes back.
//! - **Bounded**: at most `queue.max_in_flight` requests taken and not
//!   finished; beyond that the consumer stops pulling.

pub mod config;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures_util::StreamExt;
use protocol::{ErrorCode, pb};
use runtime::metric_table;
use runtime::metrics::{Cells, Kind, write_table};
use tokio::sync::{mpsc, watch};

pub use self::config::QueueConfig;
use crate::Api;
use crate::error::ApiError;
use crate::routes::messages::SendRequest;

metric_table! { pub Counter, COUNTERS,
    Received => "im_queue_received_total", "Send requests taken from the queue (redeliveries included).";
    Stored => "im_queue_stored_total", "Queued sends stored (acked to the broker).";
    Duplicates => "im_queue_duplicates_total", "Queued sends that were already stored (a redelivery, or a republished client_msg_id).";
    Retried => "im_queue_retries_total", "Sends refused for now (UNAVAILABLE, RATE_LIMITED) and tried again.";
    DeadLettered => "im_queue_dead_lettered_total", "Requests published to the dead-letter subject.";
    Errors => "im_queue_errors_total", "Broker errors (connection lost, an ack or publish failed); the consumer carries on.";
}

metric_table! { pub Gauge, GAUGES,
    InFlight => "im_queue_in_flight", "Requests taken from the queue and not yet finished.";
}

#[derive(Debug)]
pub struct QueueMetrics {
    counters: Cells,
    gauges: Cells,
}

impl Default for QueueMetrics {
    fn default() -> Self {
        QueueMetrics {
            counters: Cells::new(COUNTERS.len()),
            gauges: Cells::new(GAUGES.len()),
        }
    }
}

impl QueueMetrics {
    fn add(&self, counter: Counter) {
        self.counters.add(counter as usize, 1);
    }

    pub fn render(&self, out: &mut String) {
        write_table(out, COUNTERS, Kind::Counter, |i| self.counters.get(i));
        write_table(out, GAUGES, Kind::Gauge, |i| self.gauges.get(i));
    }
}

/// What the consumer works with.
pub struct Queue {
    pub config: QueueConfig,
    pub api: Arc<Api>,
    pub metrics: Arc<QueueMetrics>,
}

/// A request's place in line: its conversation, as (sender, recipient).
type Lane = (u64, u64);

/// A request taken from the queue, parsed or not.
struct Taken {
    message: jetstream::Message,
    send: Result<(u64, pb::SendReq), ApiError>,
}

/// The requests waiting behind the one in flight, per conversation.
struct Lanes<T>(HashMap<Lane, VecDeque<T>>);

impl<T> Default for Lanes<T> {
    fn default() -> Self {
        Lanes(HashMap::new())
    }
}

impl<T> Lanes<T> {
    /// Queues `taken` on its lane; returns it back if the lane was free
    /// (the caller starts it).
    fn enter(&mut self, lane: Lane, taken: T) -> Option<T> {
        match self.0.get_mut(&lane) {
            Some(waiting) => {
                waiting.push_back(taken);
                None
            }
            None => {
                self.0.insert(lane, VecDeque::new());
                Some(taken)
            }
        }
    }

    /// The lane's request in flight finished: the next one, if any.
    fn next(&mut self, lane: Lane) -> Option<T> {
        let waiting = self.0.get_mut(&lane)?;
        let next = waiting.pop_front();
        if next.is_none() {
            self.0.remove(&lane);
        }
        next
    }
}

/// What a finished request frees: its lane (none for one that never had
/// a lane: it did not parse).
type Finished = Option<Lane>;

impl Queue {
    /// Consumes until `stopped` turns true; reconnects and re-subscribes
    /// through broker restarts.
    pub async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let client = tokio::select! {
            client = async_nats::ConnectOptions::new()
                .name("im-server")
                .retry_on_initial_connect()
                .connect(self.config.url.as_str()) => client,
            _ = stopped.wait_for(|s| *s) => return,
        };
        let client = match client {
            Ok(client) => client,
            Err(e) => {
                log::error!("queue: cannot connect to {}: {e}", self.config.url);
                return;
            }
        };
        let js = jetstream::new(client);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
        let mut lanes: Lanes<Taken> = Lanes::default();
        let mut held = 0usize;
        loop {
            let messages = tokio::select! {
                messages = self.subscribe(&js) => messages,
                _ = stopped.wait_for(|s| *s) => return,
            };
            let mut messages = match messages {
                Ok(messages) => messages,
                Err(e) => {
                    self.metrics.add(Counter::Errors);
                    log::warn!(
                        "queue: cannot consume {}: {e}; trying again",
                        self.config.stream
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stopped.wait_for(|s| *s) => return,
                    }
                }
            };
            log::info!(
                "queue: consuming {} ({}) as {}",
                self.config.stream,
                self.config.subject,
                self.config.consumer
            );
            loop {
                self.metrics
                    .gauges
                    .set(Gauge::InFlight as usize, held as i64);
                tokio::select! {
                    _ = stopped.wait_for(|s| *s) => return,
                    Some(finished) = done_rx.recv() => {
                        held -= 1;
                        if let Some(next) = finished.and_then(|lane| lanes.next(lane)) {
                            self.start(&js, next, &done_tx);
                        }
                    }
                    next = messages.next(), if held < self.config.max_in_flight => match next {
                        Some(Ok(message)) => {
                            held += 1;
                            self.metrics.add(Counter::Received);
                            let taken = self.parse(message);
                            match &taken.send {
                                Ok((from, send)) => {
                                    if let Some(free) = lanes.enter((*from, send.to_uid), taken) {
                                        self.start(&js, free, &done_tx);
                                    }
                                }
                                Err(_) => self.start(&js, taken, &done_tx),
                            }
                        }
                        Some(Err(e)) => {
                            self.metrics.add(Counter::Errors);
                            log::warn!("queue: {e}; subscribing again");
                            break;
                        }
                        None => break,
                    },
                }
            }
        }
    }

    /// The streams and the consumer, created if absent, and its messages.
    async fn subscribe(&self, js: &jetstream::Context) -> Result<consumer::pull::Stream, String> {
        let c = &self.config;
        let stream = |name: &str, subject: &str| {
            js.get_or_create_stream(stream::Config {
                name: name.to_owned(),
                subjects: vec![subject.to_owned()],
                ..Default::default()
            })
        };
        stream(&c.dead_letter_stream, &c.dead_letter_subject)
            .await
            .map_err(|e| e.to_string())?;
        let source = stream(&c.stream, &c.subject)
            .await
            .map_err(|e| e.to_string())?;
        let consumer = source
            .get_or_create_consumer(
                &c.consumer,
                consumer::pull::Config {
                    durable_name: Some(c.consumer.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(c.ack_wait_secs),
                    max_ack_pending: (2 * c.max_in_flight) as i64,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        consumer
            .stream()
            .max_messages_per_batch(c.max_in_flight.min(256))
            .messages()
            .await
            .map_err(|e| e.to_string())
    }

    fn parse(&self, message: jetstream::Message) -> Taken {
        let send = serde_json::from_slice::<SendRequest>(&message.payload)
            .map_err(|e| ApiError::invalid(format!("not a send request: {e}")))
            .and_then(|req| req.into_send(&self.api));
        Taken { message, send }
    }

    /// Runs one request to its end on a task of its own.
    fn start(
        self: &Arc<Self>,
        js: &jetstream::Context,
        taken: Taken,
        done: &mpsc::UnboundedSender<Finished>,
    ) {
        let (queue, js, done) = (self.clone(), js.clone(), done.clone());
        tokio::spawn(async move {
            let lane = taken.send.as_ref().ok().map(|(from, s)| (*from, s.to_uid));
            queue.finish(&js, taken).await;
            let _ = done.send(lane);
        });
    }

    /// Sends the request until it is stored or refused for good; acks it,
    /// or dead-letters it.
    async fn finish(&self, js: &jetstream::Context, taken: Taken) {
        let Taken { message, send } = taken;
        let (from, send) = match send {
            Ok(send) => send,
            Err(e) => return self.dead_letter(js, &message, &e).await,
        };
        loop {
            match self.api.call(from, send.clone()).await {
                Ok(resp) => {
                    self.metrics.add(if resp.duplicate {
                        Counter::Duplicates
                    } else {
                        Counter::Stored
                    });
                    if let Err(e) = message.ack().await {
                        // Stored: a redelivery is a duplicate, absorbed.
                        self.metrics.add(Counter::Errors);
                        log::warn!("queue: ack failed ({e}); the request will come again");
                    }
                    return;
                }
                Err(e) if matches!(e.code, ErrorCode::Unavailable | ErrorCode::RateLimited) => {
                    self.metrics.add(Counter::Retried);
                    // Keep the broker from delivering it again meanwhile.
                    let _ = message.ack_with(AckKind::Progress).await;
                    tokio::time::sleep(Duration::from_millis(self.config.retry_ms)).await;
                }
                Err(e) => return self.dead_letter(js, &message, &e).await,
            }
        }
    }

    /// Publishes the request to the dead-letter subject with why, then
    /// terminates it; if the publish fails it stays unacked and comes back.
    async fn dead_letter(
        &self,
        js: &jetstream::Context,
        message: &jetstream::Message,
        why: &ApiError,
    ) {
        let mut headers = HeaderMap::new();
        headers.insert("Im-Error-Code", why.code.as_str_name());
        headers.insert("Im-Error-Reason", why.message.as_str());
        if let Ok(info) = message.info() {
            headers.insert(
                "Im-Stream-Sequence",
                info.stream_sequence.to_string().as_str(),
            );
        }
        let published = match js
            .publish_with_headers(
                self.config.dead_letter_subject.clone(),
                headers,
                message.payload.clone(),
            )
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match published {
            Ok(()) => {
                self.metrics.add(Counter::DeadLettered);
                log::warn!(
                    "queue: request dead-lettered to {}: {} {}",
                    self.config.dead_letter_subject,
                    why.code.as_str_name(),
                    why.message
                );
                if let Err(e) = message.ack_with(AckKind::Term).await {
                    self.metrics.add(Counter::Errors);
                    log::warn!("queue: terminating a dead-lettered request failed: {e}");
                }
            }
            Err(e) => {
                self.metrics.add(Counter::Errors);
                log::warn!("queue: cannot dead-letter a request ({e}); it will come again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_hold_a_conversation_in_order_and_free_it_when_empty() {
        let mut lanes: Lanes<u32> = Lanes::default();
        assert_eq!(
            lanes.enter((1, 2), 1),
            Some(1),
            "a free lane starts at once"
        );
        assert_eq!(lanes.enter((1, 2), 2), None, "a busy lane holds the next");
        assert_eq!(lanes.enter((1, 3), 3), Some(3), "another conversation goes");
        assert_eq!(lanes.enter((1, 2), 4), None);
        assert_eq!(lanes.next((1, 2)), Some(2));
        assert_eq!(lanes.next((1, 2)), Some(4));
        assert_eq!(lanes.next((1, 2)), None);
        assert_eq!(lanes.enter((1, 2), 5), Some(5), "an emptied lane is free");
        assert_eq!(lanes.next((1, 3)), None);
        assert_eq!(lanes.0.len(), 1);
    }
}
