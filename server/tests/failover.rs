//! Logic failover under load: two `im-logic serve` processes on one MariaDB
//! database (the second a standby waiting for the writer's lease), two
//! gateways listing both, the logic tier in one network namespace and the
//! gateways with the test's clients in another. The active logic process is
//! killed (SIGKILL) or frozen (SIGSTOP) while pairs of users exchange
//! messages and hundreds of idle clients stay connected; the test counts:
//! the standby's takeover time, acked messages all stored once with gapless
//! seqs, no client disconnected, and every receiving device holding every
//! message (pushed, or pulled when told to sync) with no duplicate shown.
//!
//! The database is the test MariaDB, reached from the logic's namespace
//! through a relay (a listener in that namespace, connections out of the
//! test's own); or a three-node Galera cluster of the test's own, each
//! logic process on a node of its own, whose writer's node is killed.
//! Needs root, `ip` and `iptables`, like `faults.rs`.

#[path = "contract/harness.rs"]
mod harness;
#[path = "netns/mod.rs"]
mod netns;

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use client::Client;
use harness::*;
use mysql::prelude::Queryable;
use netns::{LOGIC_IP, Net, in_namespace};
use protocol::{Body, ErrorCode, pb};

const LINK_SECRET: &str = "failover-test-link-secret";
/// The two logic processes' link ports.
const LINK_PORTS: [u16; 2] = [7100, 7101];
/// Where logic process n reaches its database, in their namespace: this
/// port + n.
const DB_PORT: u16 = 13306;
/// The takeover bound at the default lease (3 s).
const BOUND: Duration = Duration::from_secs(5);

/// The processes of a deployment with a standby.
struct Cluster {
    net: Net,
    dir: PathBuf,
    /// The gateways' configuration; logic process n has `logic-<n>.toml`.
    config: PathBuf,
    database: String,
    _relays: Vec<Proxy>,
    logic: [Option<Process>; 2],
    /// Which logic process holds the lease now.
    active: usize,
    _gateways: Vec<Process>,
    addrs: Vec<SocketAddr>,
}

impl Cluster {
    /// The deployment on the test MariaDB, both logic processes on it.
    fn start(name: &str) -> Cluster {
        Cluster::start_on(name, [mariadb(), mariadb()])
    }

    /// The deployment with logic process n on the database server at
    /// `servers[n]` (`host:port`).
    fn start_on(name: &str, servers: [String; 2]) -> Cluster {
        let net = Net::new();
        let dir = std::env::temp_dir().join(format!("im-failover-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let database = format!("im_failover_{name}_{}", std::process::id());
        let relays = servers
            .into_iter()
            .enumerate()
            .map(|(n, server)| {
                let port = DB_PORT + n as u16;
                let listener = in_namespace(&net.logic, || {
                    TcpListener::bind(("127.0.0.1", port)).unwrap()
                });
                Proxy::on(listener, server)
            })
            .collect();
        let common = format!(
            "[auth]\nsecret = \"{SECRET}\"\n[admin]\nlisten = \"\"\n[api]\nlisten = \"\"\n[gateway.websocket]\nlisten = \"\"\n\
             [gateway]\ninbound_frames_per_sec = 1000000\ninbound_burst = 1000000\n\
             [logic]\nmessages_per_sec = 1000000\nmessage_burst = 1000000\n\
             [link]\nlogic = [\"{LOGIC_IP}:{}\", \"{LOGIC_IP}:{}\"]\n\
             heartbeat_secs = 1\ndead_after_secs = 3\nreconnect_max_ms = 1000\n",
            LINK_PORTS[0], LINK_PORTS[1],
        );
        let config = dir.join("gateway.toml");
        std::fs::write(&config, &common).unwrap();
        for n in 0..2 {
            std::fs::write(
                dir.join(format!("logic-{n}.toml")),
                format!(
                    "{common}[storage]\ndata_dir = \"{}\"\nbackend = \"mysql\"\n\
                     mysql_urls = [\"mysql://root@127.0.0.1:{}/{database}?prefer_socket=false\"]\n",
                    dir.display(),
                    DB_PORT + n as u16,
                ),
            )
            .unwrap();
        }
        let mut cluster = Cluster {
            net,
            dir,
            config,
            database,
            _relays: relays,
            logic: [None, None],
            active: 0,
            _gateways: Vec::new(),
            addrs: Vec::new(),
        };
        cluster.start_logic(0);
        cluster.wait_linkable(0, Duration::from_secs(20));
        cluster.start_logic(1);
        cluster.wait_standby(1);
        for n in 0..2u16 {
            let addr = SocketAddr::from(([127, 0, 0, 1], 7001 + n));
            let mut command = cluster
                .net
                .gateways
                .command(env!("CARGO_BIN_EXE_im-gateway"));
            command
                .arg("--config")
                .arg(&cluster.config)
                .args(["--listen", &addr.to_string()])
                .args(["--admin", ""]);
            let log = cluster.dir.join(format!("gateway-{n}.log"));
            cluster
                ._gateways
                .push(spawn_logged(command, LINK_SECRET, &log));
            cluster.addrs.push(addr);
        }
        for n in 0..2 {
            eventually("the gateway linked", || {
                cluster
                    .log(&format!("gateway-{n}.log"))
                    .contains("is up")
                    .then_some(())
            });
        }
        cluster
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn logic_log(&self, n: usize) -> String {
        self.log(&format!("logic-{n}.log"))
    }

    /// Starts logic process `n` (a standby if the other holds the lease),
    /// its log appended to `logic-<n>.log`.
    fn start_logic(&mut self, n: usize) {
        let log = self.dir.join(format!("logic-{n}.log"));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        use std::io::Write;
        writeln!(file, "---- started by the test ----").unwrap();
        let mut command = self.net.logic.command(env!("CARGO_BIN_EXE_im-logic"));
        command
            .arg("serve")
            .arg("--config")
            .arg(self.dir.join(format!("logic-{n}.toml")))
            .args(["--link-listen", &format!("{LOGIC_IP}:{}", LINK_PORTS[n])]);
        let child = command
            .env("IM_LINK_SECRET", LINK_SECRET)
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn im-logic");
        self.logic[n] = Some(Process(child));
    }

    /// Waits until logic process `n` takes link connections (it is active).
    fn wait_linkable(&self, n: usize, within: Duration) -> Instant {
        let port = LINK_PORTS[n];
        in_namespace(&self.net.logic, || {
            let deadline = Instant::now() + within;
            loop {
                if TcpStream::connect((LOGIC_IP, port)).is_ok() {
                    return Instant::now();
                }
                assert!(
                    Instant::now() < deadline,
                    "logic process {n} did not become active within {within:?}"
                );
                thread::sleep(Duration::from_millis(5));
            }
        })
    }

    /// Waits until logic process `n` says it is a standby.
    fn wait_standby(&self, n: usize) {
        eventually("the standby", || {
            let log = self.logic_log(n);
            let last_start = log.rsplit("---- started by the test ----").next()?;
            last_start.contains("standby:").then_some(())
        });
    }

    /// Waits for logic process `n` to exit by itself; its status and when.
    fn wait_exit(&mut self, n: usize, within: Duration) -> (std::process::ExitStatus, Instant) {
        let process = self.logic[n].as_mut().expect("started");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = process.0.try_wait().unwrap() {
                return (status, Instant::now());
            }
            assert!(
                Instant::now() < deadline,
                "logic process {n} did not exit within {within:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, n: usize, signal: &str) {
        let pid = self.logic[n].as_ref().expect("running").0.id().to_string();
        netns::sh(&["kill", signal, &pid]);
    }

    /// Kills the active process; returns when it was killed and how long
    /// the standby took to take link connections.
    fn kill_active(&mut self) -> Duration {
        let old = self.active;
        let killed = Instant::now();
        drop(self.logic[old].take());
        let new = 1 - old;
        let active = self.wait_linkable(new, Duration::from_secs(15));
        self.active = new;
        active - killed
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.logic = [None, None];
        self._gateways.clear();
        drop_databases(std::slice::from_ref(&self.database));
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

/// A logged-in client; a login refused UNAVAILABLE (the gateway's link to
/// the writer down for a moment) is tried again, as a client would.
fn login(addr: SocketAddr, uid: u64, device: &str) -> Client {
    retrying(|| {
        let mut client = Client::connect(addr).expect("connect to a gateway");
        client.set_timeout(Duration::from_secs(20));
        client.login(uid, &valid_token(uid), device, pb::Platform::Mobile)?;
        Ok(client)
    })
}

/// The cluster tests take turns: each runs two logic processes, two
/// gateways, relays and its load on the same two cores, and a takeover
/// bound measured while another test's cluster competes for them would
/// measure the competition.
fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One acknowledged send.
#[derive(Clone, Debug)]
struct Acked {
    client_msg_id: String,
    msg_id: u64,
    seq: u64,
}

/// What a run counts.
#[derive(Default)]
struct Counts {
    acked: AtomicU64,
    unavailable: AtomicU64,
    hints: AtomicU64,
    /// Messages a device got by a history pull (after a hint or a gap).
    pulled: AtomicU64,
    /// Pushes of a message the device already had (dropped, never shown).
    repeats: AtomicU64,
}

/// A receiving device: what it holds, by seq.
#[derive(Default)]
struct Device {
    messages: BTreeMap<u64, (u64, String)>,
    shown: HashSet<u64>,
}

impl Device {
    /// The highest seq below which nothing is missing.
    fn contiguous(&self) -> u64 {
        let mut next = 1;
        while self.messages.contains_key(&next) {
            next += 1;
        }
        next - 1
    }

    fn take(&mut self, message: pb::Message, counts: &Counts) {
        if self.shown.insert(message.msg_id) {
            self.messages
                .insert(message.seq, (message.msg_id, message.client_msg_id));
        } else {
            counts.repeats.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Pulls every message after what it holds without a gap: what an SDK
    /// does on a SyncHint or when a push skips a seq.
    fn fill(
        &mut self,
        client: &mut Client,
        peer: u64,
        counts: &Counts,
    ) -> Result<(), client::ClientError> {
        for message in history_after(client, peer, self.contiguous())? {
            if !self.shown.contains(&message.msg_id) {
                counts.pulled.fetch_add(1, Ordering::Relaxed);
            }
            self.take(message, counts);
        }
        Ok(())
    }
}

/// Every message of the conversation with `peer` after seq `after`, in seq
/// order. (`after_seq` 0 asks for the latest page, so from the start the
/// pages are walked backwards.)
fn history_after(
    client: &mut Client,
    peer: u64,
    after: u64,
) -> Result<Vec<pb::Message>, client::ClientError> {
    let mut all: Vec<pb::Message> = Vec::new();
    let (mut after_seq, mut before_seq) = (after, 0);
    loop {
        let page = client.call(pb::HistoryReq {
            peer_uid: peer,
            after_seq,
            before_seq,
            limit: 200,
        })?;
        let (first, last) = (
            page.messages.first().map(|m| m.seq),
            page.messages.last().map(|m| m.seq),
        );
        all.extend(page.messages);
        match (after, first, last) {
            (0, Some(first), _) if page.more => before_seq = first,
            (_, _, Some(last)) if after > 0 && page.more => after_seq = last,
            _ => break,
        }
    }
    all.sort_by_key(|m| m.seq);
    Ok(all)
}

/// Sends from `from` to `to` until `stop`, retrying each message (same
/// client_msg_id) while it is refused UNAVAILABLE.
fn sender(
    mut client: Client,
    from: u64,
    to: u64,
    stop: &AtomicBool,
    counts: &Counts,
) -> (Client, Vec<Acked>) {
    let mut acked = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let id = format!("{from}-{n}");
        let result = client.call(pb::SendReq {
            to_uid: to,
            client_msg_id: id.clone(),
            content_type: 1,
            content: id.clone().into_bytes(),
        });
        match result {
            Ok(resp) => {
                acked.push(Acked {
                    client_msg_id: id,
                    msg_id: resp.msg_id,
                    seq: resp.seq,
                });
                counts.acked.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            Err(e) if e.code() == Some(ErrorCode::Unavailable) => {
                counts.unavailable.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                panic!("sender {from} lost its connection: {e}");
            }
        }
    }
    (client, acked)
}

/// Takes pushes (acking each) and SyncHints until `done` and quiet.
fn receiver(
    mut client: Client,
    me: u64,
    peer: u64,
    done: &AtomicBool,
    counts: &Counts,
) -> (Client, Device) {
    let mut device = Device::default();
    let mut quiet_since = Instant::now();
    loop {
        let event = match client.next_event(Duration::from_millis(100)) {
            Ok(event) => event,
            Err(e) => {
                panic!("receiver {me} lost its connection: {e}");
            }
        };
        match event.and_then(|frame| frame.body) {
            Some(Body::Push(push)) => {
                quiet_since = Instant::now();
                let message = push.message.expect("a pushed message");
                ack(&mut client, message.msg_id);
                let gap = message.seq > device.contiguous() + 1;
                device.take(message, counts);
                if gap {
                    retrying(|| device.fill(&mut client, peer, counts));
                }
            }
            Some(Body::SyncHint(_)) => {
                quiet_since = Instant::now();
                counts.hints.fetch_add(1, Ordering::Relaxed);
                retrying(|| device.fill(&mut client, peer, counts));
            }
            Some(Body::Kick(kick)) => {
                panic!("receiver {me} kicked: {}", kick.reason);
            }
            _ => {}
        }
        if done.load(Ordering::Acquire) && quiet_since.elapsed() > Duration::from_secs(2) {
            return (client, device);
        }
    }
}

/// `call`, retried while it is refused UNAVAILABLE (a gateway not yet
/// linked to the new writer), for up to 15 s.
fn retrying<T>(mut call: impl FnMut() -> Result<T, client::ClientError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match call() {
            Ok(value) => return value,
            Err(e) if e.code() == Some(ErrorCode::Unavailable) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// The whole history of a conversation, as stored.
fn stored(client: &mut Client, peer: u64) -> Vec<pb::Message> {
    retrying(|| history_after(client, peer, 0))
}

/// Runs `pairs` conversations and `idle` idle sessions over the cluster's
/// two gateways, calls `fault` after `before`, keeps the load on for
/// `after` more, then checks everything. Returns the counts.
fn run_with_fault(
    cluster: &mut Cluster,
    pairs: u64,
    idle: u64,
    before: Duration,
    fault: impl FnOnce(&mut Cluster),
    after: Duration,
) -> Arc<Counts> {
    let counts = Arc::new(Counts::default());
    let addrs = cluster.addrs.clone();
    // Each pair: the sender on one gateway, the receiver on the other.
    let clients: Vec<(Client, Client)> = in_namespace(&cluster.net.gateways, || {
        (0..pairs)
            .map(|p| {
                let (from, to) = (10_000 + 2 * p, 10_001 + 2 * p);
                let gw = p as usize % 2;
                (
                    login(addrs[gw], from, "phone"),
                    login(addrs[1 - gw], to, "phone"),
                )
            })
            .collect()
    });
    let mut idlers: Vec<Client> = in_namespace(&cluster.net.gateways, || {
        (0..idle)
            .map(|i| login(addrs[i as usize % 2], 50_000 + i, "tablet"))
            .collect()
    });
    let stop = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let (sent, received) = thread::scope(|s| {
        let senders: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(p, (from_client, to_client))| {
                let (from, to) = (10_000 + 2 * p as u64, 10_001 + 2 * p as u64);
                let (stop, done, counts) = (&stop, &done, &counts);
                (
                    s.spawn(move || sender(from_client, from, to, stop, counts)),
                    s.spawn(move || receiver(to_client, to, from, done, counts)),
                )
            })
            .collect();
        thread::sleep(before);
        fault(cluster);
        thread::sleep(after);
        stop.store(true, Ordering::Release);
        let mut sent = Vec::new();
        let mut receivers = Vec::new();
        for (sender, receiver) in senders {
            sent.push(sender.join().expect("a sender"));
            receivers.push(receiver);
        }
        done.store(true, Ordering::Release);
        let received: Vec<_> = receivers
            .into_iter()
            .map(|r| r.join().expect("a receiver"))
            .collect();
        (sent, received)
    });

    // Every acked message stored once, in order, gapless; every device
    // holds exactly the stored history.
    let mut stored_total = 0;
    for (p, ((mut sender, acked), (_, device))) in sent.into_iter().zip(received).enumerate() {
        let to = 10_001 + 2 * p as u64;
        let history = in_namespace(&cluster.net.gateways, || stored(&mut sender, to));
        stored_total += history.len();
        let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=history.len() as u64).collect::<Vec<_>>(),
            "pair {p}: gapless seqs"
        );
        let ids: HashSet<&str> = history.iter().map(|m| m.client_msg_id.as_str()).collect();
        assert_eq!(
            ids.len(),
            history.len(),
            "pair {p}: a client_msg_id stored twice"
        );
        assert_eq!(
            acked.len(),
            history.len(),
            "pair {p}: stored but never acked, or acked and lost"
        );
        for a in &acked {
            let m = history
                .iter()
                .find(|m| m.msg_id == a.msg_id)
                .unwrap_or_else(|| panic!("pair {p}: acked {} is not stored", a.client_msg_id));
            assert_eq!((&m.client_msg_id, m.seq), (&a.client_msg_id, a.seq));
        }
        let held: Vec<(u64, u64)> = device
            .messages
            .iter()
            .map(|(seq, (id, _))| (*seq, *id))
            .collect();
        let want: Vec<(u64, u64)> = history.iter().map(|m| (m.seq, m.msg_id)).collect();
        assert_eq!(
            held, want,
            "pair {p}: the receiving device holds every message once"
        );
    }
    // The idle sessions are still connected: each answers a ping.
    let alive = in_namespace(&cluster.net.gateways, || {
        idlers
            .iter_mut()
            .map(|c| c.call(pb::Ping {}).is_ok())
            .filter(|ok| *ok)
            .count()
    });
    let counts_now = &counts;
    println!(
        "{} pairs, {} idle: {} acked, {} stored, {} UNAVAILABLE retried, {} SyncHints, {} messages pulled, {} repeated pushes dropped, {} of {} sessions still connected",
        pairs,
        idle,
        counts_now.acked.load(Ordering::Relaxed),
        stored_total,
        counts_now.unavailable.load(Ordering::Relaxed),
        counts_now.hints.load(Ordering::Relaxed),
        counts_now.pulled.load(Ordering::Relaxed),
        counts_now.repeats.load(Ordering::Relaxed),
        alive + 2 * pairs as usize,
        idle + 2 * pairs,
    );
    assert_eq!(alive as u64, idle, "every idle session stays connected");
    // (A sender or receiver that lost its connection panicked already.)
    assert!(
        counts.hints.load(Ordering::Relaxed) >= pairs,
        "every receiving device was told to sync"
    );
    counts
}

#[test]
fn the_active_logic_process_killed_under_load_the_standby_takes_over_and_nothing_is_lost() {
    let _turn = one_cluster_at_a_time();
    let mut cluster = Cluster::start("kill");
    let mut takeover = Duration::ZERO;
    let counts = run_with_fault(
        &mut cluster,
        20,
        200,
        Duration::from_secs(3),
        |cluster| takeover = cluster.kill_active(),
        Duration::from_secs(4),
    );
    println!("kill -9: the standby took link connections {takeover:?} after the kill");
    assert!(takeover < BOUND, "takeover took {takeover:?}");
    assert!(counts.acked.load(Ordering::Relaxed) > 0);
    assert!(
        cluster
            .log("gateway-0.log")
            .contains("open sessions registered again"),
        "the gateway re-registered its sessions"
    );
}

#[test]
fn a_frozen_logic_process_is_fenced_when_it_wakes_and_writes_nothing() {
    let _turn = one_cluster_at_a_time();
    let mut cluster = Cluster::start("stop");
    let mut takeover = Duration::ZERO;
    let mut woke_at = None;
    run_with_fault(
        &mut cluster,
        20,
        100,
        Duration::from_secs(3),
        |cluster| {
            let old = cluster.active;
            let frozen = Instant::now();
            cluster.signal(old, "-STOP");
            let active = cluster.wait_linkable(1 - old, Duration::from_secs(15));
            takeover = active - frozen;
            cluster.active = 1 - old;
            // Both gateways follow the new writer before the old one wakes.
            thread::sleep(Duration::from_secs(4));
            cluster.signal(old, "-CONT");
            woke_at = Some(Instant::now());
        },
        Duration::from_secs(3),
    );
    let old = 1 - cluster.active;
    let (status, exited) = cluster.wait_exit(old, Duration::from_secs(10));
    let log = cluster.logic_log(old);
    let fenced: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("fenced") || l.contains("superseded"))
        .collect();
    let batches_refused = fenced.iter().filter(|l| l.contains("commit of")).count();
    println!(
        "SIGSTOP: the standby took link connections {takeover:?} after the freeze; the woken process exited with {status} at most {:?} after SIGCONT ({batches_refused} batches refused by the fence before it did); its log:\n  {}",
        woke_at.map(|t| exited - t),
        fenced.join("\n  ")
    );
    assert_eq!(
        status.code(),
        Some(75),
        "the fenced process exits with EXIT_FENCED"
    );
    assert!(!fenced.is_empty(), "the fencing is logged");
    assert!(takeover < BOUND, "takeover took {takeover:?}");
}

#[test]
fn twenty_failovers_in_a_row_each_within_the_bound() {
    let _turn = one_cluster_at_a_time();
    let rounds: usize = std::env::var("IM_FAILOVERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let mut cluster = Cluster::start("repeat");
    let addrs = cluster.addrs.clone();
    let (mut alice, mut bob) = in_namespace(&cluster.net.gateways, || {
        (login(addrs[0], 1, "phone"), login(addrs[1], 2, "phone"))
    });
    let mut takeovers = Vec::new();
    let mut served = Vec::new();
    let mut acked = Vec::new();
    for round in 0..rounds {
        let old = cluster.active;
        let killed = Instant::now();
        let took = cluster.kill_active();
        // Service back: the first send acked after the kill.
        let id = format!("round-{round}");
        let ack = in_namespace(&cluster.net.gateways, || {
            loop {
                match alice.call(pb::SendReq {
                    to_uid: 2,
                    client_msg_id: id.clone(),
                    content_type: 1,
                    content: id.clone().into_bytes(),
                }) {
                    Ok(resp) => break resp,
                    Err(e) if e.code() == Some(ErrorCode::Unavailable) => {
                        thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("alice lost her connection: {e}"),
                }
            }
        });
        served.push(killed.elapsed());
        acked.push((id, ack.msg_id, ack.seq));
        // Bob, on the other gateway, is still connected, and his gateway
        // has followed the new writer too before it is killed in turn (a
        // request answered by the logic tier, not a ping the gateway
        // answers itself).
        in_namespace(&cluster.net.gateways, || {
            retrying(|| {
                bob.call(pb::SyncReq {
                    cursor: 0,
                    limit: 1,
                })
            })
        });
        takeovers.push(took);
        cluster.start_logic(old);
        cluster.wait_standby(old);
    }
    let history = in_namespace(&cluster.net.gateways, || stored(&mut bob, 1));
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=rounds as u64).collect::<Vec<_>>());
    for ((id, msg_id, seq), m) in acked.iter().zip(&history) {
        assert_eq!((&m.client_msg_id, m.msg_id, m.seq), (id, *msg_id, *seq));
    }
    let stats = |mut v: Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (p50, max) = stats(takeovers.clone());
    let (served_p50, served_max) = stats(served);
    println!(
        "{rounds} failovers (kill -9 of the active process): standby active p50 {p50:?} max {max:?}; first send acked after the kill p50 {served_p50:?} max {served_max:?}"
    );
    assert!(max < BOUND, "a takeover took {max:?}: {takeovers:?}");
    // Both clients were connected through it all.
    in_namespace(&cluster.net.gateways, || {
        retrying(|| bob.call(pb::Ping {}));
    });
}

#[test]
fn the_database_relay_reaches_mariadb_from_the_logic_namespace() {
    // The plumbing the tests above stand on: a connection made inside the
    // logic's namespace reaches the test MariaDB.
    let net = Net::new();
    let listener = in_namespace(&net.logic, || {
        TcpListener::bind(("127.0.0.1", DB_PORT)).unwrap()
    });
    let _relay = Proxy::on(listener, mariadb());
    let version: String = in_namespace(&net.logic, || {
        let url = format!("mysql://root@127.0.0.1:{DB_PORT}/mysql?prefer_socket=false");
        let mut conn = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
        conn.query_first("SELECT VERSION()").unwrap().unwrap()
    });
    assert!(!version.is_empty());
}

#[test]
fn on_galera_the_writer_losing_its_node_is_replaced_then_fenced_and_nothing_is_lost() {
    let _turn = one_cluster_at_a_time();
    let mut galera = testkit::Galera::start("failover");
    let servers = [0, 1].map(|n| testkit::host_port(&galera.url(n)).to_owned());
    let mut cluster = Cluster::start_on("galera", servers);
    let mut takeover = Duration::ZERO;
    let counts = run_with_fault(
        &mut cluster,
        10,
        50,
        Duration::from_secs(3),
        |cluster| {
            // The writer's Galera node dies; the standby, on another
            // node, takes the lease (a replicated row) once it runs out.
            let killed = Instant::now();
            galera.kill(0);
            takeover = cluster.wait_linkable(1, Duration::from_secs(20)) - killed;
            cluster.active = 1;
        },
        Duration::from_secs(4),
    );
    // Node 0 rejoins; the old writer reaches the database again and meets
    // the new epoch: fenced, it exits.
    galera.up(0);
    let (status, _) = cluster.wait_exit(0, Duration::from_secs(30));
    // The third node, which no logic process used, holds every message.
    let on_third: u64 = {
        let url = format!("{}/{}", galera.url(2), cluster.database);
        let mut conn = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
        conn.query_first("SELECT COUNT(*) FROM messages")
            .unwrap()
            .unwrap()
    };
    let old_log = cluster.logic_log(0);
    let lines = |needle: &str| {
        old_log
            .lines()
            .filter(|l| l.contains(needle))
            .map(|l| format!("\n  {l}"))
            .collect::<String>()
    };
    println!(
        "Galera: the writer's node killed; the standby on another node active {takeover:?} later; {} messages on the third node; the old writer exited with {status} once its node rejoined:{}{}",
        on_third,
        lines("lease not renewed"),
        lines("writer lease lost"),
    );
    assert_eq!(on_third, counts.acked.load(Ordering::Relaxed));
    assert_eq!(
        status.code(),
        Some(75),
        "fenced on Galera: the old writer exits with EXIT_FENCED"
    );
}
