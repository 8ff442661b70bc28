//! The gateway's metrics, named and described in one place, exported by the
//! admin port in Prometheus text format.
//!
//! Each worker thread owns its own block of counters and is the only writer
//! (relaxed atomics, no shared cache line between workers on the hot path);
//! a scrape sums the blocks.

use runtime::metric_table;
use runtime::metrics::{Kind, write_family, write_table};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

metric_table! { pub Counter, COUNTERS,
    Accepted => "im_gateway_connections_accepted_total", "Connections accepted and handed to a worker.";
    Refused => "im_gateway_connections_refused_total", "Connections refused because max_connections was reached.";
    AcceptRateLimited => "im_gateway_accept_rate_limited_total", "Connections refused at accept because their address opened too many per second.";
    LoginsThrottled => "im_gateway_logins_throttled_total", "Logins refused RATE_LIMITED, unverified, because their address failed too many this minute.";
    LoginsFailed => "im_gateway_logins_failed_total", "Logins the logic tier refused (the per-address failure budget counts them).";
    Logins => "im_gateway_logins_total", "Logins accepted by the logic tier.";
    FramesIn => "im_gateway_frames_in_total", "Frames decoded from clients.";
    FramesOut => "im_gateway_frames_out_total", "Frames queued to clients.";
    BytesIn => "im_gateway_bytes_in_total", "Bytes read from clients.";
    BytesOut => "im_gateway_bytes_out_total", "Bytes written to clients.";
    RateLimited => "im_gateway_rate_limited_total", "Frames refused with RATE_LIMITED by the per-connection limit.";
    UplinkFull => "im_gateway_uplink_full_total", "Requests answered UNAVAILABLE because the logic tier's queue was full.";
    StaleDowncalls => "im_gateway_stale_downcalls_total", "Messages from the logic tier for sessions already closed.";
}

metric_table! { pub Gauge, GAUGES,
    Connections => "im_gateway_connections", "Open client connections.";
    Sessions => "im_gateway_sessions", "Logged-in sessions.";
    OutboundBytes => "im_gateway_outbound_queued_bytes", "Bytes queued to clients and not yet written.";
}

metric_table! { pub CloseReason, CLOSE_REASONS,
    PeerClosed => "peer_closed", "";
    IoError => "io_error", "";
    BadFrame => "bad_frame", "";
    FrameTooLarge => "frame_too_large", "";
    NotLoggedIn => "not_logged_in", "";
    InvalidLogin => "invalid_login", "";
    LoginTimeout => "login_timeout", "";
    HeartbeatTimeout => "heartbeat_timeout", "";
    SlowConsumer => "slow_consumer", "";
    RateLimited => "rate_limited", "";
    ClosedByLogic => "closed_by_logic", "";
    Shutdown => "shutdown", "";
    TlsError => "tls_error", "";
}

metric_table! { pub TlsFailure, TLS_FAILURES,
    NotTls => "not_tls", "";
    AlertReceived => "alert_received", "";
    Protocol => "protocol", "";
    Other => "other", "";
}

impl CloseReason {
    pub fn label(self) -> &'static str {
        CLOSE_REASONS[self as usize].0
    }
}

/// One thread's metrics. Only that thread writes them.
#[derive(Debug)]
pub struct Block {
    counters: Vec<AtomicU64>,
    gauges: Vec<AtomicI64>,
    closes: Vec<AtomicU64>,
    tls_failures: Vec<AtomicU64>,
}

impl Default for Block {
    fn default() -> Self {
        Block {
            counters: COUNTERS.iter().map(|_| AtomicU64::new(0)).collect(),
            gauges: GAUGES.iter().map(|_| AtomicI64::new(0)).collect(),
            closes: CLOSE_REASONS.iter().map(|_| AtomicU64::new(0)).collect(),
            tls_failures: TLS_FAILURES.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Block {
    pub fn add(&self, counter: Counter, n: u64) {
        self.counters[counter as usize].fetch_add(n, Relaxed);
    }

    pub fn gauge(&self, gauge: Gauge, delta: i64) {
        self.gauges[gauge as usize].fetch_add(delta, Relaxed);
    }

    pub fn closed(&self, reason: CloseReason) {
        self.closes[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn tls_failed(&self, failure: TlsFailure) {
        self.tls_failures[failure as usize].fetch_add(1, Relaxed);
    }
}

/// Every thread's block, plus queue depths sampled at scrape time.
#[derive(Debug, Default)]
pub struct Metrics {
    blocks: parking_lot::Mutex<Vec<Arc<Block>>>,
}

impl Metrics {
    /// A new block for one thread.
    pub fn block(&self) -> Arc<Block> {
        let block = Arc::new(Block::default());
        self.blocks.lock().push(block.clone());
        block
    }

    pub fn counter(&self, counter: Counter) -> u64 {
        self.blocks
            .lock()
            .iter()
            .map(|b| b.counters[counter as usize].load(Relaxed))
            .sum()
    }

    pub fn gauge(&self, gauge: Gauge) -> i64 {
        self.blocks
            .lock()
            .iter()
            .map(|b| b.gauges[gauge as usize].load(Relaxed))
            .sum()
    }

    pub fn closes(&self, reason: CloseReason) -> u64 {
        self.blocks
            .lock()
            .iter()
            .map(|b| b.closes[reason as usize].load(Relaxed))
            .sum()
    }

    /// Prometheus text exposition format.
    pub fn render(&self, queues: &[(String, usize)]) -> String {
        let mut out = String::new();
        write_table(&mut out, COUNTERS, Kind::Counter, |i| {
            self.sum(|b| b.counters[i].load(Relaxed)) as i64
        });
        write_table(&mut out, GAUGES, Kind::Gauge, |i| {
            self.sum(|b| b.gauges[i].load(Relaxed))
        });
        self.write_labelled(
            &mut out,
            ("im_gateway_closes_total", "Connections closed, by reason."),
            CLOSE_REASONS,
            |b, i| b.closes[i].load(Relaxed),
        );
        self.write_labelled(
            &mut out,
            (
                "im_gateway_tls_failures_total",
                "TLS connections ended by a TLS error (a failed handshake, mostly), by reason.",
            ),
            TLS_FAILURES,
            |b, i| b.tls_failures[i].load(Relaxed),
        );
        let depths: Vec<(Option<&str>, i64)> = queues
            .iter()
            .map(|(queue, depth)| (Some(queue.as_str()), *depth as i64))
            .collect();
        write_family(
            &mut out,
            "im_gateway_queue_depth",
            "Messages waiting in an internal queue.",
            Kind::Gauge,
            "queue",
            &depths,
        );
        out
    }

    /// One counter family with a `reason` label per entry of `table`.
    fn write_labelled(
        &self,
        out: &mut String,
        (name, help): (&str, &str),
        table: &[(&str, &str)],
        value: impl Fn(&Block, usize) -> u64,
    ) {
        let samples: Vec<(Option<&str>, i64)> = table
            .iter()
            .enumerate()
            .map(|(i, (label, _))| (Some(*label), self.sum(|b| value(b, i)) as i64))
            .collect();
        write_family(out, name, help, Kind::Counter, "reason", &samples);
    }

    fn sum<T: std::iter::Sum<T>>(&self, f: impl Fn(&Block) -> T) -> T {
        self.blocks.lock().iter().map(|b| f(b)).sum()
    }
}
