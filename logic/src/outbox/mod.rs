//! The offline-notification outbox: how a push bridge (APNs, FCM) learns of
//! messages to users with no device online, without losing any.
//!
//! A notice is recorded in the same durable write as its message (the
//! pipeline sets `WriteOp::Send::notify`; the sequencer adds the notice to
//! the batch's transaction, or the journal record), so a message acked to
//! its sender has its notification on disk too. This module delivers them:
//!
//! - the dispatcher thread (`im-outbox`) reads notices from storage in
//!   msg_id order, a bounded window at a time, and hands the due ones to
//!   the sender threads, at most `senders` in flight;
//! - each sender builds the JSON ([`notification`]), signs it
//!   ([`signing`]) and POSTs it ([`http`]);
//! - a 2xx takes the notice out of the outbox: the removals go to the
//!   writer in batches (`WriteOp::NoticesDone`), after the notices they
//!   remove in every store's order;
//! - a failure is retried with exponential backoff and full jitter, and a
//!   receiver that keeps failing is only probed ([`retry`]).
//!
//! At least once: a notice delivered but not yet removed when the process
//! dies is delivered again after the restart, with the same
//! `Idempotency-Key` (its msg_id). Every so often the dispatcher reads the
//! outbox from the start again, which finds a notice committed out of
//! msg_id order (sharded storage) and a removal that failed.

pub mod http;
pub mod notification;
pub mod retry;
pub mod signing;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use runtime::clock::unix_ms;

use self::notification::Notification;
use self::retry::{Backoff, Gate, Rng};
use crate::config::WebhookConfig;
use crate::direct::{Direct, Unanswered};
use crate::metrics::{Counter, Gauge, LogicMetrics};
use crate::store::{Backend, Notice, ReadStore, StoreError};

/// Most notices the dispatcher holds in memory; it reads more from storage
/// once under half.
const WINDOW: usize = 4_096;
/// How often the dispatcher looks for new notices while it has room.
const POLL: Duration = Duration::from_millis(50);
/// How often it reads the outbox from the start again.
const RESCAN: Duration = Duration::from_secs(30);
/// How often the backlog is counted.
const COUNT: Duration = Duration::from_secs(1);
/// Removals sent to the writer together, at most.
const REMOVALS: usize = 512;
/// How long a removal waits for others to join its batch.
const REMOVAL_WAIT: Duration = Duration::from_millis(20);

/// The outbox's size, as the pipeline sees it when deciding whether to
/// record one more notice.
#[derive(Debug)]
pub struct Backlog {
    held: AtomicU64,
    max: u64,
}

impl Backlog {
    pub fn new(max: u64) -> Backlog {
        Backlog {
            held: AtomicU64::new(0),
            max,
        }
    }

    /// Whether one more notice may be recorded; counts it if so.
    pub fn admit(&self) -> bool {
        self.held.fetch_add(1, Ordering::Relaxed) < self.max
    }

    fn set(&self, held: u64) {
        self.held.store(held, Ordering::Relaxed);
    }
}

/// A notice waiting in memory for its next attempt.
struct Entry {
    notice: Notice,
    attempts: u32,
}

/// What a sender thread reports.
struct Attempt {
    notice: Notice,
    result: Result<(), String>,
    took: Duration,
}

/// Starts the dispatcher and its senders; the returned backlog is the
/// pipeline's. They stop once `stop` is set (within a poll), handing the
/// removals they hold to the writer first.
pub fn start(
    config: &WebhookConfig,
    backend: &Arc<dyn Backend>,
    direct: Direct,
    metrics: Arc<LogicMetrics>,
    stop: Arc<AtomicBool>,
) -> Result<Arc<Backlog>, StartError> {
    let agent = http::agent(config).map_err(StartError::Config)?;
    let backlog = Arc::new(Backlog::new(config.max_backlog));
    let (jobs, job_rx) = crossbeam_channel::bounded::<Notice>(config.senders);
    let (done, results) = crossbeam_channel::unbounded::<Attempt>();
    for i in 0..config.senders {
        let sender = Courier {
            agent: agent.clone(),
            url: config.url.clone(),
            secret: config.secret.clone().into_bytes(),
            preview_chars: config.preview_chars,
            store: backend.reader()?,
        };
        let (job_rx, done) = (job_rx.clone(), done.clone());
        thread::Builder::new()
            .name(format!("im-outbox-{i}"))
            .spawn(move || sender.run(job_rx, done))
            .map_err(StartError::Thread)?;
    }
    let dispatcher = Dispatcher {
        store: backend.reader()?,
        direct,
        backlog: backlog.clone(),
        metrics,
        senders: config.senders,
        backoff: Backoff {
            first: Duration::from_millis(config.retry_first_ms),
            max: Duration::from_millis(config.retry_max_ms),
        },
        max_age_ms: config.max_age_secs.saturating_mul(1000),
        rng: Rng::default(),
        gate: Gate::default(),
        entries: HashMap::new(),
        due: BinaryHeap::new(),
        in_flight: 0,
        cursor: 0,
        delivered: HashSet::new(),
        suspect: HashSet::new(),
        removals: Vec::new(),
        stop,
    };
    thread::Builder::new()
        .name("im-outbox".into())
        .spawn(move || dispatcher.run(jobs, results))
        .map_err(StartError::Thread)?;
    log::info!(
        "offline notifications go to {} through the outbox ({} senders)",
        config.url,
        config.senders
    );
    Ok(backlog)
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("logic.webhook: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start an outbox thread: {0}")]
    Thread(std::io::Error),
}

struct Dispatcher {
    store: Box<dyn ReadStore>,
    direct: Direct,
    backlog: Arc<Backlog>,
    metrics: Arc<LogicMetrics>,
    senders: usize,
    backoff: Backoff,
    max_age_ms: u64,
    rng: Rng,
    gate: Gate,
    /// Notices in memory, by msg_id: waiting or in flight.
    entries: HashMap<u64, Entry>,
    /// (when due, msg_id) of the waiting ones.
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: usize,
    /// The highest msg_id read from storage since the last rescan.
    cursor: u64,
    /// Delivered since the last rescan began: found in storage again, a
    /// notice is not delivered again, its removal is asked for again.
    delivered: HashSet<u64>,
    /// Delivered before the rescan under way: those it does not find were
    /// removed, and are forgotten when it ends.
    suspect: HashSet<u64>,
    /// Removals not yet handed to the writer.
    removals: Vec<Notice>,
    stop: Arc<AtomicBool>,
}

impl Dispatcher {
    fn run(mut self, jobs: Sender<Notice>, results: Receiver<Attempt>) {
        let mut next_poll = Instant::now();
        let mut next_rescan = Instant::now() + RESCAN;
        let mut next_count = Instant::now();
        let mut removal_since: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next_count {
                self.count();
                next_count = now + COUNT;
            }
            if now >= next_rescan {
                self.rescan();
                next_rescan = now + RESCAN;
            }
            if now >= next_poll && self.entries.len() < WINDOW / 2 {
                self.read_more(now);
                next_poll = now + POLL;
            }
            self.dispatch(&jobs, now);
            if !self.removals.is_empty() {
                let since = *removal_since.get_or_insert(now);
                if self.removals.len() >= REMOVALS || now >= since + REMOVAL_WAIT {
                    if !self.remove() {
                        break;
                    }
                    removal_since = None;
                }
            }
            let wake = [
                Some(next_poll),
                Some(next_count),
                removal_since.map(|t| t + REMOVAL_WAIT),
                self.next_due(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_poll);
            match results.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(attempt) => {
                    self.finished(attempt);
                    while let Ok(attempt) = results.try_recv() {
                        self.finished(attempt);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if !self.removals.is_empty() {
            self.remove();
        }
        log::debug!("outbox stopped");
    }

    /// When the next waiting notice may go, if the gate lets it.
    fn next_due(&self) -> Option<Instant> {
        let Reverse((at, _)) = self.due.peek()?;
        Some(match self.gate.next_probe() {
            Some(probe) => probe.max(*at),
            None => *at,
        })
    }

    fn count(&mut self) {
        match self.store.notice_count() {
            Ok(held) => {
                self.backlog.set(held);
                self.metrics.set(Gauge::WebhookBacklog, held as usize);
            }
            Err(e) => log::warn!("outbox: cannot count the backlog: {e}"),
        }
        self.metrics
            .set(Gauge::WebhookReceiverDown, usize::from(self.gate.is_down()));
    }

    /// Reads the notices after the cursor, up to the window.
    fn read_more(&mut self, now: Instant) {
        let room = WINDOW - self.entries.len();
        let notices = match self.store.notices(self.cursor, room) {
            Ok(notices) if notices.len() < room => {
                // The end of the outbox: a rescan has seen all of it.
                self.suspect.clear();
                notices
            }
            Ok(notices) => notices,
            Err(e) => {
                log::warn!("outbox: cannot read notices: {e}");
                return;
            }
        };
        for notice in notices {
            self.cursor = self.cursor.max(notice.msg_id);
            if self.entries.contains_key(&notice.msg_id) {
                continue;
            }
            if self.delivered.contains(&notice.msg_id) || self.suspect.remove(&notice.msg_id) {
                // Delivered; its removal did not reach storage yet, or failed.
                self.delivered.insert(notice.msg_id);
                self.removals.push(notice);
                continue;
            }
            if self.expired(&notice) {
                continue;
            }
            self.entries.insert(
                notice.msg_id,
                Entry {
                    notice,
                    attempts: 0,
                },
            );
            self.due.push(Reverse((now, notice.msg_id)));
        }
    }

    /// Whether `notice` is past `max_age_secs`: if so it is counted and
    /// its removal asked for.
    fn expired(&mut self, notice: &Notice) -> bool {
        if unix_ms().saturating_sub(notice.created_ms) <= self.max_age_ms {
            return false;
        }
        self.metrics.add(Counter::WebhookExpired, 1);
        log::warn!(
            "outbox: notice of message {} to {} expired undelivered",
            notice.msg_id,
            notice.to_uid
        );
        self.removals.push(*notice);
        true
    }

    /// Starts reading from the first notice again.
    fn rescan(&mut self) {
        self.cursor = 0;
        self.suspect.extend(self.delivered.drain());
    }

    fn dispatch(&mut self, jobs: &Sender<Notice>, now: Instant) {
        while self.in_flight < self.gate.allowed(self.senders, now) {
            let Some(Reverse((at, msg_id))) = self.due.peek().copied() else {
                return;
            };
            if at > now {
                return;
            }
            self.due.pop();
            let Some(notice) = self.entries.get(&msg_id).map(|e| e.notice) else {
                continue;
            };
            if self.expired(&notice) {
                self.entries.remove(&msg_id);
                continue;
            }
            if let Some(entry) = self.entries.get_mut(&msg_id) {
                entry.attempts += 1;
            }
            if jobs.send(notice).is_err() {
                return;
            }
            self.in_flight += 1;
        }
    }

    fn finished(&mut self, attempt: Attempt) {
        self.in_flight -= 1;
        self.metrics.webhook.observe(attempt.took);
        let msg_id = attempt.notice.msg_id;
        match attempt.result {
            Ok(()) => {
                self.gate.succeeded();
                self.metrics.add(Counter::WebhookDelivered, 1);
                self.entries.remove(&msg_id);
                self.delivered.insert(msg_id);
                self.removals.push(attempt.notice);
            }
            Err(e) => {
                let now = Instant::now();
                self.metrics.add(Counter::WebhookFailures, 1);
                let was_down = self.gate.is_down();
                self.gate.failed(&self.backoff, &mut self.rng, now);
                if self.gate.is_down() && !was_down {
                    log::warn!("outbox: the webhook receiver is failing ({e}); probing it");
                } else {
                    log::debug!("outbox: message {msg_id}: {e}");
                }
                if let Some(entry) = self.entries.get(&msg_id) {
                    let wait = self.backoff.wait(entry.attempts, &mut self.rng);
                    self.due.push(Reverse((now + wait, msg_id)));
                }
            }
        }
    }

    /// Hands the removals to the writer. `false`: the tier has stopped.
    /// (Removals the tier is too busy to take are asked for again by the
    /// next rescan.)
    fn remove(&mut self) -> bool {
        let removals = std::mem::take(&mut self.removals);
        self.direct.notices_done(removals) != Err(Unanswered::Stopped)
    }
}

/// A sender thread: builds, signs and posts one notification at a time.
struct Courier {
    agent: ureq::Agent,
    url: String,
    secret: Vec<u8>,
    preview_chars: usize,
    store: Box<dyn ReadStore>,
}

impl Courier {
    fn run(mut self, jobs: Receiver<Notice>, done: Sender<Attempt>) {
        for notice in jobs {
            let started = Instant::now();
            let result = self.deliver(&notice);
            let attempt = Attempt {
                notice,
                result,
                took: started.elapsed(),
            };
            if done.send(attempt).is_err() {
                break;
            }
        }
    }

    fn deliver(&mut self, notice: &Notice) -> Result<(), String> {
        let notification = Notification::read(self.store.as_mut(), notice, self.preview_chars)
            .map_err(|e| e.to_string())?;
        let body = serde_json::to_vec(&notification).map_err(|e| e.to_string())?;
        let timestamp = unix_ms() / 1000;
        let headers = [
            (signing::TIMESTAMP_HEADER, timestamp.to_string()),
            (
                signing::SIGNATURE_HEADER,
                signing::sign(&self.secret, timestamp, &body),
            ),
            (signing::IDEMPOTENCY_HEADER, notification.msg_id.clone()),
        ];
        http::post(&self.agent, &self.url, &headers, &body)
    }
}
