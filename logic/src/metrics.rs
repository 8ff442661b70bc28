//! The logic tier's metrics, exported with the gateway's on the admin port.
//!
//! The pipeline and the writer each write their own counters (relaxed
//! atomics, no locks); gauges are set by the thread that owns the state.

use protocol::pb::ErrorCode;
use runtime::metric_table;
use runtime::metrics::{Cells, Histogram, Kind, write_family, write_histograms, write_table};

metric_table! { pub Counter, COUNTERS,
    Logins => "im_logic_logins_total", "Logins whose token verified.";
    Resumed => "im_logic_sessions_resumed_total", "Sessions a gateway registered again on a new link (the logic node was replaced or the link blipped), each told to sync.";
    LoginsRefused => "im_logic_logins_refused_total", "Logins refused with AUTH_FAILED.";
    LoginsThrottled => "im_logic_logins_throttled_total", "Logins refused RATE_LIMITED, unverified, because their uid failed too many this minute.";
    MessagesStored => "im_logic_messages_stored_total", "New messages committed to storage.";
    Duplicates => "im_logic_duplicate_sends_total", "Sends answered with the message an earlier send of the same client_msg_id stored.";
    Batches => "im_logic_commit_batches_total", "Transactions the writer committed.";
    CommittedWrites => "im_logic_committed_writes_total", "Writes committed (sends, reads, deletes, profiles); over batches: the mean batch size.";
    StorageErrors => "im_logic_storage_errors_total", "Batches that failed and were rolled back; their writes were answered UNAVAILABLE.";
    DiskFull => "im_logic_storage_disk_full_total", "Batches refused because the disk was full or read-only (also in storage_errors_total); writes resume once space is freed.";
    Pushes => "im_logic_pushes_total", "Pushes sent to devices (first sends).";
    PushResends => "im_logic_push_resends_total", "Pushes resent because no PushAck came in time.";
    AckTimeoutCloses => "im_logic_ack_timeout_closes_total", "Sessions closed because their pushes went unacked.";
    ReadNotices => "im_logic_read_notices_total", "ReadNotice frames sent to devices.";
    WebhookDelivered => "im_logic_webhook_delivered_total", "Offline notifications the receiver answered 2xx (taken out of the outbox).";
    WebhookFailures => "im_logic_webhook_failures_total", "Offline-webhook attempts that failed (no answer, or not 2xx); each is retried with backoff.";
    WebhookExpired => "im_logic_webhook_expired_total", "Offline notifications taken out of the outbox undelivered after logic.webhook.max_age_secs.";
    WebhookDropped => "im_logic_webhook_dropped_total", "Offline notifications not recorded because the outbox held logic.webhook.max_backlog.";
    OfflineNotifications => "im_logic_offline_notifications_total", "Messages whose recipient had no device online (the offline hook fired).";
    RedisErrors => "im_logic_redis_errors_total", "Redis calls that failed (each opens the breaker if it was closed).";
    RedisBreakerTrips => "im_logic_redis_breaker_trips_total", "Times the Redis breaker opened: Redis left alone, everything served from storage.";
    CacheHits => "im_logic_cache_hits_total", "Reads answered from a Redis cache entry.";
    CacheMisses => "im_logic_cache_misses_total", "Reads that found no usable Redis entry and went to storage.";
    CacheRebuilds => "im_logic_cache_rebuilds_total", "Users whose unread and conversation entries were rebuilt from storage.";
}

metric_table! { pub Gauge, GAUGES,
    OnlineUsers => "im_logic_online_users", "Users with at least one device online.";
    PendingPushes => "im_logic_pending_pushes", "Pushes waiting for their PushAck.";
    RecentIds => "im_logic_recent_ids", "Sends in the in-memory dedup cache.";
    RedisUp => "im_logic_redis_up", "1 while Redis is in use, 0 while the breaker is open or Redis is not configured.";
    WebhookBacklog => "im_logic_webhook_backlog", "Offline notifications in the outbox, not yet delivered (counted about once a second).";
    WebhookReceiverDown => "im_logic_webhook_receiver_down", "1 while the webhook receiver is failing and the outbox only probes it, else 0.";
}

/// Error codes, by their wire value, that the logic tier answered with.
const ERROR_CODES: usize = 11;

#[derive(Debug)]
pub struct LogicMetrics {
    counters: Cells,
    gauges: Cells,
    errors: Cells,
    /// From the pipeline taking a SendReq to its SendResp going out.
    pub send_to_ack: Histogram,
    /// From a batch's commit starting to its being durable.
    pub commit: Histogram,
    /// From a push's first send to its PushAck.
    pub push_ack: Histogram,
    /// One offline-webhook delivery attempt.
    pub webhook: Histogram,
}

impl Default for LogicMetrics {
    fn default() -> Self {
        LogicMetrics {
            counters: Cells::new(COUNTERS.len()),
            gauges: Cells::new(GAUGES.len()),
            errors: Cells::new(ERROR_CODES),
            send_to_ack: Histogram::latency(),
            commit: Histogram::latency(),
            push_ack: Histogram::latency(),
            webhook: Histogram::latency(),
        }
    }
}

impl LogicMetrics {
    pub fn add(&self, counter: Counter, n: u64) {
        self.counters.add(counter as usize, n as i64);
    }

    pub fn set(&self, gauge: Gauge, value: usize) {
        self.gauges.set(gauge as usize, value as i64);
    }

    /// A request was answered with an error.
    pub fn error(&self, code: ErrorCode) {
        let index = code as usize;
        if index < ERROR_CODES {
            self.errors.add(index, 1);
        }
    }

    pub fn counter(&self, counter: Counter) -> i64 {
        self.counters.get(counter as usize)
    }

    pub fn errors(&self, code: ErrorCode) -> i64 {
        self.errors.get(code as usize)
    }

    pub fn render(&self, out: &mut String) {
        write_table(out, COUNTERS, Kind::Counter, |i| self.counters.get(i));
        write_table(out, GAUGES, Kind::Gauge, |i| self.gauges.get(i));
        let errors: Vec<(Option<&str>, i64)> = (1..ERROR_CODES as i32)
            .filter_map(|code| ErrorCode::try_from(code).ok())
            .map(|code| (Some(code.as_str_name()), self.errors.get(code as usize)))
            .collect();
        for (name, help, histogram) in [
            (
                "im_logic_send_to_ack_seconds",
                "From the logic tier taking a SendReq to its SendResp going out (durable), duplicates included.",
                &self.send_to_ack,
            ),
            (
                "im_logic_commit_duration_seconds",
                "From a batch's commit starting to its being durable (the embedded store's flush included).",
                &self.commit,
            ),
            (
                "im_logic_push_ack_seconds",
                "From a push's first send to the device's PushAck.",
                &self.push_ack,
            ),
            (
                "im_logic_webhook_delivery_seconds",
                "One offline-webhook delivery attempt, answered or failed.",
                &self.webhook,
            ),
        ] {
            write_histograms(out, name, help, "", &[(None, histogram)]);
        }
        write_family(
            out,
            "im_logic_errors_total",
            "Requests the logic tier answered with an error, by code.",
            Kind::Counter,
            "code",
            &errors,
        );
    }
}
