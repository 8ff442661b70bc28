//! `[queue]`: system messages from NATS JetStream.

use runtime::config::{Invalid, positive};
use serde::{Deserialize, Serialize};

/// The environment variable that overrides `queue.url`.
pub const URL_ENV: &str = "IM_QUEUE_URL";

/// `[queue]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// `nats://[user:password@]host:port`. Empty (the default): no queue.
    pub url: String,
    /// The JetStream stream the send requests are published to (created,
    /// file-backed, if it does not exist), and its subject.
    pub stream: String,
    pub subject: String,
    /// The durable pull consumer this node reads with (nodes that share
    /// it share the work).
    pub consumer: String,
    /// Where a request that can never succeed goes, with the reason in its
    /// headers; kept in a stream of its own (created if absent).
    pub dead_letter_stream: String,
    pub dead_letter_subject: String,
    /// Most requests taken from the queue and not yet finished: beyond it
    /// the consumer stops pulling, so a spike waits in the broker, not in
    /// the logic tier.
    pub max_in_flight: usize,
    /// A request not acknowledged this long after its delivery is
    /// delivered again (seconds).
    pub ack_wait_secs: u64,
    /// How long a send refused for now (UNAVAILABLE, RATE_LIMITED) waits
    /// before it is tried again, in milliseconds.
    pub retry_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            url: String::new(),
            stream: "IM_SYSTEM".into(),
            subject: "im.system.send".into(),
            consumer: "im".into(),
            dead_letter_stream: "IM_SYSTEM_DEAD".into(),
            dead_letter_subject: "im.system.dead".into(),
            max_in_flight: 256,
            ack_wait_secs: 30,
            retry_ms: 500,
        }
    }
}

impl QueueConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// `IM_QUEUE_URL`, when set, wins over the file (set it empty to turn
    /// the queue off).
    pub fn apply_env(&mut self) {
        if let Ok(url) = std::env::var(URL_ENV) {
            self.url = url;
        }
    }

    /// Checks the section; the error names the field.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !self.enabled() {
            return Ok(());
        }
        if !(self.url.starts_with("nats://") || self.url.starts_with("tls://")) {
            return Err(Invalid::new(
                "queue.url",
                "must be nats://host:port (or tls://host:port)",
            ));
        }
        for (field, value) in [
            ("queue.stream", &self.stream),
            ("queue.consumer", &self.consumer),
            ("queue.dead_letter_stream", &self.dead_letter_stream),
        ] {
            if value.is_empty() || value.contains(['.', '*', '>', ' ']) {
                return Err(Invalid::new(
                    field,
                    "must be a name without . * > or spaces",
                ));
            }
        }
        for (field, value) in [
            ("queue.subject", &self.subject),
            ("queue.dead_letter_subject", &self.dead_letter_subject),
        ] {
            if value.is_empty() || value.contains(['*', '>', ' ']) {
                return Err(Invalid::new(field, "must be a subject without wildcards"));
            }
        }
        if self.subject == self.dead_letter_subject {
            return Err(Invalid::new(
                "queue.dead_letter_subject",
                "must differ from queue.subject",
            ));
        }
        positive(&[
            ("queue.max_in_flight", self.max_in_flight as u64),
            ("queue.ack_wait_secs", self.ack_wait_secs),
            ("queue.retry_ms", self.retry_ms),
        ])
    }
}
