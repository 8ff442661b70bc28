//! `im-loadtest pairs`: P pairs of users exchanging messages, measured and
//! checked.
//!
//! Each pair is a sender and a receiver (both send with `--bidir`), each
//! user on `--devices` connections; device 0 of a sending user sends. A
//! message must reach every device of the recipient and the sender's other
//! devices, once, in seq order: the [`Checker`] says whether it did.
//! Latencies: send to SendResp (ack) and send to Push (deliver), from the
//! intended send time at a fixed rate, and how late the sends themselves
//! left (the load tester's own share of both).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use protocol::{Body, pb};

use crate::check::{Checker, DeviceId, Verdict};
use crate::fleet::{Event, Fleet, Progress};
use crate::report::Latency;
use crate::workload::{Rng, Schedule, parse_payload, payload};

#[derive(Debug, Clone)]
pub struct PairsConfig {
    /// The gateways, connections spread over them in turn.
    pub addrs: Vec<SocketAddr>,
    pub pairs: usize,
    /// Connections per user.
    pub devices: usize,
    /// Messages per second over all senders; 0: as fast as the window allows.
    pub rate: f64,
    /// Unacknowledged messages a sender may have in flight.
    pub window: usize,
    /// Content bytes per message (at least 16: timestamp and counter).
    pub size: usize,
    /// Send for this long...
    pub duration: Option<Duration>,
    /// ...or this many messages in all.
    pub messages: Option<u64>,
    pub bidir: bool,
    pub secret: Vec<u8>,
    pub seed: u64,
    /// Users are uid_base + 1, + 2, ...
    pub uid_base: u64,
    /// After sending stops, how long to wait for the last pushes.
    pub drain: Duration,
    /// Loopback source addresses to spread connections over.
    pub sources: Vec<IpAddr>,
    /// Where to write one line per delivery (see [`LatencyLog`]).
    pub latency_log: Option<PathBuf>,
}

#[derive(Debug)]
pub struct PairsReport {
    pub sent: u64,
    pub acked: u64,
    pub verdict: Verdict,
    /// Error answers, closed connections, failed logins.
    pub errors: u64,
    pub elapsed_secs: f64,
    pub ack: Latency,
    pub deliver: Latency,
    /// How late sends left against their intended times (fixed rate only):
    /// the load tester's own share of `ack` and `deliver`.
    pub late: Latency,
}

impl PairsReport {
    pub fn delivered_per_sec(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.verdict.delivered as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }
}

/// One sending device.
struct Sender {
    key: usize,
    to_uid: u64,
    schedule: Schedule,
    /// Messages sent so far (the next counter).
    sent: u64,
    limit: u64,
    /// req_id -> intended send time (ns since start).
    in_flight: HashMap<u64, u64>,
    /// Devices each of its messages must reach.
    targets: Vec<DeviceId>,
    /// At a fixed rate: a message is due but the window is full.
    blocked: bool,
}

/// What a connection is to the test.
struct Role {
    device: DeviceId,
    sender: Option<usize>,
}

pub fn run(config: &PairsConfig) -> anyhow::Result<PairsReport> {
    anyhow::ensure!(
        config.pairs > 0 && config.devices > 0,
        "pairs and devices must be at least 1"
    );
    let window = config.window.max(1);
    let mut fleet = Fleet::new()?;
    let mut rng = Rng::new(config.seed);

    // Users 2p+1 and 2p+2 form pair p; every user has `devices` connections.
    let users = config.pairs * 2;
    let who: Vec<(u64, String)> = (0..users)
        .flat_map(|u| {
            (0..config.devices).map(move |d| (config.uid_base + u as u64 + 1, format!("lt-{d}")))
        })
        .collect();
    let (keys, _) = fleet.login_all(
        &config.addrs,
        &config.sources,
        &config.secret,
        &who,
        Duration::from_secs(60),
    );
    let failed = keys.iter().filter(|k| k.is_none()).count();
    anyhow::ensure!(failed == 0, "{failed} of {} logins failed", keys.len());
    let keys: Vec<usize> = keys.into_iter().flatten().collect();
    let device_of = |user: usize, device: usize| user * config.devices + device;

    let senders_per_pair = if config.bidir { 2 } else { 1 };
    let sender_count = config.pairs * senders_per_pair;
    let per_sender_rate = config.rate / sender_count as f64;
    let limit = config
        .messages
        .map_or(u64::MAX, |m| m.div_ceil(sender_count as u64));
    let mut senders = Vec::with_capacity(sender_count);
    let mut roles: HashMap<usize, Role> = HashMap::new();
    for (device, key) in keys.iter().enumerate() {
        roles.insert(
            *key,
            Role {
                device,
                sender: None,
            },
        );
    }
    for pair in 0..config.pairs {
        for side in 0..senders_per_pair {
            let (from, to) = if side == 0 {
                (2 * pair, 2 * pair + 1)
            } else {
                (2 * pair + 1, 2 * pair)
            };
            let mut targets: Vec<DeviceId> =
                (0..config.devices).map(|d| device_of(to, d)).collect();
            targets.extend((1..config.devices).map(|d| device_of(from, d)));
            let key = keys[device_of(from, 0)];
            roles.get_mut(&key).expect("every key has a role").sender = Some(senders.len());
            let schedule = Schedule::new(per_sender_rate, &mut rng);
            let scheduled = config
                .duration
                .and_then(|d| schedule.due_before(d))
                .unwrap_or(u64::MAX);
            senders.push(Sender {
                key,
                to_uid: config.uid_base + to as u64 + 1,
                schedule,
                sent: 0,
                limit: limit.min(scheduled),
                in_flight: HashMap::new(),
                targets,
                blocked: false,
            });
        }
    }

    let log = config
        .latency_log
        .as_deref()
        .map(LatencyLog::create)
        .transpose()?;
    let mut state = Run {
        start: Instant::now(),
        senders,
        checker: Checker::with_capacity(expected_messages(config)),
        ack: histogram(),
        deliver: histogram(),
        late: histogram(),
        log,
        errors: 0,
        acked: 0,
        sent: 0,
        size: config.size,
        window,
        last_delivery: Duration::ZERO,
    };
    let mut due: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    for (i, sender) in state.senders.iter().enumerate() {
        if let Some(at) = sender.schedule.due(0) {
            due.push(Reverse((at.as_nanos() as u64, i)));
        }
    }
    // Window mode: fill every window now.
    for i in 0..state.senders.len() {
        state.fill_window(&mut fleet, i);
    }

    // A fixed-rate run sends what its schedule holds (its senders' limits),
    // late if need be, giving up only a drain period past the end; a
    // window run sends for the duration.
    let stop_sending = config.duration.map(|d| {
        let grace = if config.rate > 0.0 {
            config.drain
        } else {
            Duration::ZERO
        };
        state.start + d + grace
    });
    let progress = Progress::new();
    let mut drain_deadline: Option<Instant> = None;
    let mut next_drain_check = Instant::now();
    loop {
        let now = Instant::now();
        let sending = stop_sending.is_none_or(|end| now < end)
            && state.senders.iter().any(|s| s.sent < s.limit);
        if sending {
            let now_ns = state.elapsed_ns();
            while let Some(Reverse((at, i))) = due.peek().copied() {
                if at > now_ns {
                    break;
                }
                due.pop();
                let sender = &mut state.senders[i];
                if sender.sent >= sender.limit {
                    continue;
                }
                if sender.in_flight.len() >= window {
                    sender.blocked = true;
                    continue;
                }
                record_since(&mut state.late, at, now_ns);
                state.send(&mut fleet, i, at);
                if let Some(next) = state.senders[i].schedule.due(state.senders[i].sent) {
                    due.push(Reverse((next.as_nanos() as u64, i)));
                }
            }
        } else if drain_deadline.is_none() {
            drain_deadline = Some(now + config.drain);
            for sender in &mut state.senders {
                sender.limit = sender.sent;
            }
        }
        if let Some(deadline) = drain_deadline {
            let in_flight: usize = state.senders.iter().map(|s| s.in_flight.len()).sum();
            if now >= next_drain_check {
                next_drain_check = now + Duration::from_millis(50);
                if (in_flight == 0 && state.checker.missing() == 0) || now >= deadline {
                    break;
                }
            }
        }
        let timeout = match due.peek() {
            Some(Reverse((at, _))) if sending => {
                Duration::from_nanos(at.saturating_sub(state.elapsed_ns()))
                    .min(Duration::from_millis(5))
            }
            _ => Duration::from_millis(5),
        };
        // Write what was just queued before waiting: a queued message must
        // not sit out the poll timeout.
        state.errors += fleet.flush().len() as u64;
        fleet.poll(Some(timeout), |fleet, key, event| {
            state.on_event(fleet, &roles, key, event, &mut due)
        })?;
        state.errors += fleet.flush().len() as u64;
        progress.show(|| {
            format!(
                "{:>6.1}s  sent {:>10}  acked {:>10}  errors {:>6}",
                state.start.elapsed().as_secs_f64(),
                state.sent,
                state.acked,
                state.errors
            )
        });
    }
    progress.done();
    if let Some(log) = state.log.take() {
        log.finish()?;
    }
    let verdict = state.checker.verdict();
    Ok(PairsReport {
        sent: state.sent,
        acked: state.acked,
        verdict,
        errors: state.errors,
        elapsed_secs: state.last_delivery.as_secs_f64(),
        ack: Latency::of(&state.ack),
        deliver: Latency::of(&state.deliver),
        late: Latency::of(&state.late),
    })
}

/// How many messages a run will send, if that can be known up front: a
/// message count, or a rate for a duration (with 10 % to spare).
fn expected_messages(config: &PairsConfig) -> usize {
    let by_rate = match config.duration {
        Some(d) if config.rate > 0.0 => (config.rate * d.as_secs_f64() * 1.1) as usize,
        _ => 0,
    };
    match (config.messages.map(|m| m as usize), by_rate) {
        (Some(m), 0) => m,
        (Some(m), r) => m.min(r),
        (None, r) => r,
    }
}

/// `--latency-log`: a first line `start <secs> <nanos>`, the run's start on
/// CLOCK_MONOTONIC (the clock of `perf record -k CLOCK_MONOTONIC`), then one
/// line per delivery: the intended send time in µs since the start, and
/// the send-to-push latency in µs. The p99 says how many deliveries were
/// slow; this says when, to line them up with what the server was doing.
struct LatencyLog {
    out: BufWriter<File>,
    /// The first write error; the run goes on, the log is reported broken.
    failed: Option<std::io::Error>,
}

impl LatencyLog {
    fn create(path: &std::path::Path) -> anyhow::Result<LatencyLog> {
        use anyhow::Context;
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the local struct.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let mut log = LatencyLog {
            out: BufWriter::new(file),
            failed: None,
        };
        log.write(format_args!("start {} {}\n", now.tv_sec, now.tv_nsec));
        Ok(log)
    }

    fn delivered(&mut self, intended_ns: u64, latency_us: u64) {
        self.write(format_args!("{} {latency_us}\n", intended_ns / 1_000));
    }

    fn write(&mut self, line: std::fmt::Arguments<'_>) {
        if self.failed.is_none() {
            self.failed = self.out.write_fmt(line).err();
        }
    }

    fn finish(mut self) -> anyhow::Result<()> {
        if self.failed.is_none() {
            self.failed = self.out.flush().err();
        }
        match self.failed {
            None => Ok(()),
            Some(e) => Err(anyhow::anyhow!("writing the latency log: {e}")),
        }
    }
}

/// Records the time from `since_ns` to `now_ns` in a microsecond histogram
/// (at least 1 µs, its lowest value); returns it.
fn record_since(histogram: &mut Histogram<u64>, since_ns: u64, now_ns: u64) -> u64 {
    let us = (now_ns.saturating_sub(since_ns) / 1_000).max(1);
    let _ = histogram.record(us);
    us
}

/// Microsecond histogram from 1 µs to 10 minutes, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

struct Run {
    start: Instant,
    senders: Vec<Sender>,
    checker: Checker,
    ack: Histogram<u64>,
    deliver: Histogram<u64>,
    late: Histogram<u64>,
    log: Option<LatencyLog>,
    errors: u64,
    acked: u64,
    sent: u64,
    size: usize,
    window: usize,
    /// When the last push arrived: the end of the measured interval.
    last_delivery: Duration,
}

impl Run {
    fn elapsed_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn send(&mut self, fleet: &mut Fleet, i: usize, intended_ns: u64) {
        let sender = &mut self.senders[i];
        let content = payload(intended_ns, sender.sent, self.size);
        let req = pb::SendReq {
            to_uid: sender.to_uid,
            client_msg_id: format!("{}-{}", sender.key, sender.sent),
            content_type: 1,
            content,
        };
        let req_id = fleet.request(sender.key, req);
        sender.in_flight.insert(req_id, intended_ns);
        sender.sent += 1;
        self.sent += 1;
    }

    /// Window mode: keep `window` messages in flight.
    fn fill_window(&mut self, fleet: &mut Fleet, i: usize) {
        while {
            let s = &self.senders[i];
            matches!(s.schedule, Schedule::Window)
                && s.in_flight.len() < self.window
                && s.sent < s.limit
        } {
            let now = self.elapsed_ns();
            self.send(fleet, i, now);
        }
    }

    /// A slot in sender `i`'s window freed up.
    fn on_slot(
        &mut self,
        fleet: &mut Fleet,
        i: usize,
        due: &mut BinaryHeap<Reverse<(u64, usize)>>,
    ) {
        let sender = &mut self.senders[i];
        if sender.blocked && sender.sent < sender.limit {
            // The message was due while the window was full: send it now,
            // still timed from when it was due.
            sender.blocked = false;
            if let Some(at) = sender.schedule.due(sender.sent) {
                let (at, now_ns) = (at.as_nanos() as u64, self.elapsed_ns());
                record_since(&mut self.late, at, now_ns);
                self.send(fleet, i, at);
                if let Some(next) = self.senders[i].schedule.due(self.senders[i].sent) {
                    due.push(Reverse((next.as_nanos() as u64, i)));
                }
            }
        }
        self.fill_window(fleet, i);
    }

    fn on_event(
        &mut self,
        fleet: &mut Fleet,
        roles: &HashMap<usize, Role>,
        key: usize,
        event: Event,
        due: &mut BinaryHeap<Reverse<(u64, usize)>>,
    ) {
        let Some(role) = roles.get(&key) else { return };
        let frame = match event {
            Event::Frame(frame) => frame,
            Event::Closed => {
                self.errors += 1;
                log::warn!("connection of device {} closed by the server", role.device);
                return;
            }
        };
        let now_ns = self.elapsed_ns();
        match frame.body {
            Some(Body::SendResp(resp)) => {
                let Some(i) = role.sender else { return };
                if let Some(intended) = self.senders[i].in_flight.remove(&frame.req_id) {
                    self.acked += 1;
                    record_since(&mut self.ack, intended, now_ns);
                    self.checker
                        .acked(resp.msg_id, self.senders[i].targets.clone());
                    self.on_slot(fleet, i, due);
                }
            }
            Some(Body::Error(error)) => {
                self.errors += 1;
                log::debug!("error {:?}: {}", error.code, error.message);
                if let Some(i) = role.sender {
                    if self.senders[i].in_flight.remove(&frame.req_id).is_some() {
                        self.on_slot(fleet, i, due);
                    }
                }
            }
            Some(Body::Push(push)) => {
                let Some(message) = push.message else { return };
                fleet.notify(
                    key,
                    pb::PushAck {
                        msg_id: message.msg_id,
                    },
                );
                if let Some((intended, _)) = parse_payload(&message.content) {
                    let latency_us = record_since(&mut self.deliver, intended, now_ns);
                    if let Some(log) = self.log.as_mut() {
                        log.delivered(intended, latency_us);
                    }
                }
                let conversation = message.from_uid.min(message.to_uid) << 32
                    | message.from_uid.max(message.to_uid);
                self.checker
                    .pushed(role.device, conversation, message.msg_id, message.seq);
                self.last_delivery = self.start.elapsed();
            }
            Some(Body::Kick(_)) => self.errors += 1,
            _ => {}
        }
    }
}
