//! Faults on the link between the tiers, with each tier in a network
//! namespace of its own joined by a veth pair: the logic node in one, the
//! gateways (and the test's clients) in the other. The faults are real:
//! iptables drops the link's packets (both ways, or 1 % of them at random)
//! and a gateway process is killed with SIGKILL.
//!
//! Delay: this machine's kernel has no `netem` qdisc (CONFIG_NET_SCH_NETEM is
//! not set), so the 50 ms +/- 20 ms delay is added by a relay in the logic's
//! namespace, in front of its link port, that holds every chunk it forwards
//! for that long (in order); the 1 % loss is still the kernel's, on the veth.
//!
//! Needs root, `ip` (iproute2) and `iptables` (CI installs them). Each test
//! prints its counts (`--nocapture` shows them).

#[path = "contract/harness.rs"]
mod harness;
#[path = "netns/mod.rs"]
mod netns;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use client::Client;
use harness::*;
use netns::{LOGIC_IP, Net, in_namespace};
use protocol::{Body, ErrorCode, pb};

const LINK_SECRET: &str = "faults-test-link-secret";
const LINK_PORT: u16 = 7100;
/// What the link is configured with here.
const DEAD_AFTER_SECS: u64 = 3;

/// The processes of one split deployment across the two namespaces.
struct Deployment {
    dir: PathBuf,
    config: PathBuf,
    _logic: Process,
    /// (process, client address in the gateways' namespace); `None` once killed.
    gateways: Vec<Option<(Process, SocketAddr)>>,
}

impl Deployment {
    /// `link_port`: where gateways reach the logic node (its link port, or a
    /// relay in front of it).
    fn start(net: &Net, name: &str, gateways: usize, link_port: u16) -> Deployment {
        let dir = std::env::temp_dir().join(format!("im-faults-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("im.toml");
        std::fs::write(
            &config,
            format!(
                "[auth]\nsecret = \"{SECRET}\"\n[admin]\nlisten = \"\"\n[api]\nlisten = \"\"\n[gateway.websocket]\nlisten = \"\"\n\
                 [storage]\ndata_dir = \"{}\"\n\
                 [logic]\nmessages_per_sec = 100000\nmessage_burst = 100000\n\
                 [link]\nlisten = \"{LOGIC_IP}:{LINK_PORT}\"\nlogic = [\"{LOGIC_IP}:{link_port}\"]\n\
                 heartbeat_secs = 1\ndead_after_secs = {DEAD_AFTER_SECS}\nreconnect_max_ms = 1000\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut command = net.logic.command(env!("CARGO_BIN_EXE_im-logic"));
        command.arg("serve").arg("--config").arg(&config);
        let logic = spawn_logged(command, LINK_SECRET, &dir.join("logic.log"));
        let mut deployment = Deployment {
            dir,
            config,
            _logic: logic,
            gateways: Vec::new(),
        };
        in_namespace(&net.logic, || {
            eventually("the logic node's link port", || {
                TcpStream::connect((LOGIC_IP, LINK_PORT)).ok()
            })
        });
        for n in 0..gateways {
            let port = 7001 + n as u16;
            let mut command = net.gateways.command(env!("CARGO_BIN_EXE_im-gateway"));
            command
                .arg("--config")
                .arg(&deployment.config)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--admin", ""]);
            let log = deployment.dir.join(format!("gateway-{n}.log"));
            let gateway = spawn_logged(command, LINK_SECRET, &log);
            deployment
                .gateways
                .push(Some((gateway, SocketAddr::from(([127, 0, 0, 1], port)))));
        }
        for n in 0..gateways {
            eventually("the gateway linked", || {
                deployment
                    .log(&format!("gateway-{n}.log"))
                    .contains("is up")
                    .then_some(())
            });
        }
        deployment
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn kill(&mut self, gateway: usize) {
        drop(self.gateways[gateway].take());
    }

    /// The client addresses of the gateways still running.
    fn addrs(&self) -> Vec<SocketAddr> {
        self.gateways.iter().flatten().map(|(_, a)| *a).collect()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.gateways.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client that logs in through whichever gateway answers, and again
/// after it is closed: what the SDK does.
struct Roaming {
    uid: u64,
    device: &'static str,
    client: Option<Client>,
    next: usize,
    /// Connections lost, and refusals (UNAVAILABLE) met, for the report.
    closes: u64,
    unavailable: u64,
}

impl Roaming {
    fn new(uid: u64, device: &'static str) -> Roaming {
        Roaming {
            uid,
            device,
            client: None,
            next: 0,
            closes: 0,
            unavailable: 0,
        }
    }

    /// The logged-in client, connecting (in turn through `addrs`) if needed.
    fn client(&mut self, addrs: &[SocketAddr], deadline: Instant) -> &mut Client {
        while self.client.is_none() {
            assert!(
                Instant::now() < deadline,
                "uid {} could not log in",
                self.uid
            );
            let addr = addrs[self.next % addrs.len()];
            self.next += 1;
            let Ok(mut client) = Client::connect(addr) else {
                thread::sleep(Duration::from_millis(100));
                continue;
            };
            client.set_timeout(Duration::from_secs(DEAD_AFTER_SECS + 5));
            match client.login(
                self.uid,
                &valid_token(self.uid),
                self.device,
                pb::Platform::Mobile,
            ) {
                Ok(_) => self.client = Some(client),
                Err(e) => {
                    if e.code() == Some(ErrorCode::Unavailable) {
                        self.unavailable += 1;
                    }
                    thread::sleep(Duration::from_millis(200));
                }
            }
        }
        self.client.as_mut().expect("logged in")
    }

    fn lost(&mut self) {
        self.client = None;
        self.closes += 1;
    }
}

/// What the receiving app saw: pushes deduplicated by msg_id, as an SDK does.
#[derive(Default)]
struct Inbox {
    seen: HashSet<u64>,
    /// msg_id -> (seq, client_msg_id)
    messages: BTreeMap<u64, (u64, String)>,
    duplicates_dropped: u64,
}

/// Sends messages `ids` from `alice` to `bob` through the deployment's
/// gateways while `fault` runs alongside, retrying each (same
/// client_msg_id) until acknowledged. Returns the acknowledged
/// (client_msg_id, msg_id, seq)s and the longest any one request waited.
fn send_through(
    deployment: &Deployment,
    alice: &mut Roaming,
    ids: std::ops::Range<u64>,
    pace: Duration,
    deadline: Instant,
) -> (Vec<(String, u64, u64)>, Duration) {
    let mut acked = Vec::new();
    let mut longest = Duration::ZERO;
    for i in ids {
        let id = format!("m-{i}");
        loop {
            let addrs = deployment.addrs();
            let client = alice.client(&addrs, deadline);
            let started = Instant::now();
            let result = client.call(pb::SendReq {
                to_uid: 2,
                client_msg_id: id.clone(),
                content_type: 1,
                content: id.clone().into_bytes(),
            });
            longest = longest.max(started.elapsed());
            match result {
                Ok(resp) => {
                    acked.push((id.clone(), resp.msg_id, resp.seq));
                    break;
                }
                Err(e) if e.code() == Some(ErrorCode::Unavailable) => {
                    alice.unavailable += 1;
                    thread::sleep(Duration::from_millis(100));
                }
                Err(_) => alice.lost(),
            }
            assert!(Instant::now() < deadline, "message {id} never acknowledged");
        }
        thread::sleep(pace);
    }
    (acked, longest)
}

/// What is stored at the end: Bob's history from the start, read through
/// any gateway by a device of his own (which kicks none of his others).
fn stored(net: &Net, deployment: &Deployment) -> Vec<pb::Message> {
    in_namespace(&net.gateways, || {
        history_of(deployment, &mut Roaming::new(2, "history"))
    })
}

/// Bob's view at the end: history from the start, through any gateway.
fn history_of(deployment: &Deployment, bob: &mut Roaming) -> Vec<pb::Message> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let addrs = deployment.addrs();
        let client = bob.client(&addrs, deadline);
        match client.call(pb::HistoryReq {
            peer_uid: 1,
            after_seq: after,
            before_seq: 0,
            limit: 200,
        }) {
            Ok(page) => {
                after = page.messages.last().map_or(after, |m| m.seq);
                all.extend(page.messages);
                if !page.more {
                    return all;
                }
            }
            Err(_) => bob.lost(),
        }
        assert!(Instant::now() < deadline, "history never came");
    }
}

/// Every acknowledged message is stored exactly once, in order, seqs without gaps.
fn check_exactly_once(acked: &[(String, u64, u64)], history: &[pb::Message]) {
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=history.len() as u64).collect::<Vec<_>>(),
        "gapless seqs"
    );
    let ids: Vec<&str> = history.iter().map(|m| m.client_msg_id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a client_msg_id stored twice");
    for (id, msg_id, seq) in acked {
        let stored = history
            .iter()
            .find(|m| m.msg_id == *msg_id)
            .unwrap_or_else(|| panic!("acknowledged message {id} is not stored"));
        assert_eq!((&stored.client_msg_id, stored.seq), (id, *seq));
    }
}

#[test]
fn a_link_cut_both_ways_for_ten_seconds_hangs_nothing_and_loses_nothing() {
    let net = Net::new();
    let deployment = Deployment::start(&net, "cut", 1, LINK_PORT);
    let (acked, longest, closes, unavailable) = thread::scope(|s| {
        let cutter = s.spawn(|| {
            thread::sleep(Duration::from_secs(2));
            net.cut(LINK_PORT);
            let cut_at = Instant::now();
            thread::sleep(Duration::from_secs(10));
            net.heal();
            cut_at
        });
        let sender = s.spawn(|| {
            net.gateways.enter();
            let mut alice = Roaming::new(1, "phone");
            let deadline = Instant::now() + Duration::from_secs(60);
            let (acked, longest) = send_through(
                &deployment,
                &mut alice,
                0..150,
                Duration::from_millis(100),
                deadline,
            );
            (acked, longest, alice.closes, alice.unavailable)
        });
        cutter.join().unwrap();
        sender.join().unwrap()
    });
    let history = stored(&net, &deployment);
    println!(
        "link cut 10 s: {} acknowledged, {} stored, {} connections lost, {} UNAVAILABLE, longest request {:?}",
        acked.len(),
        history.len(),
        closes,
        unavailable,
        longest
    );
    check_exactly_once(&acked, &history);
    assert_eq!((acked.len(), history.len()), (150, 150));
    assert!(closes + unavailable > 0, "the cut was felt");
    assert!(
        longest < Duration::from_secs(DEAD_AFTER_SECS + 3),
        "a request waited {longest:?}"
    );
}

#[test]
fn a_gateway_killed_under_load_loses_nothing_and_the_app_sees_no_duplicate() {
    let net = Net::new();
    let mut deployment = Deployment::start(&net, "kill", 2, LINK_PORT);
    let deployment_ref = &mut deployment;
    let (acked, inbox, closes) = in_namespace(&net.gateways, move || {
        let addrs = deployment_ref.addrs();
        // Bob on gateway 1 (which survives), Alice on gateway 0 (which dies).
        let mut bob = Client::connect(addrs[1]).unwrap();
        bob.set_timeout(WAIT);
        bob.login(2, &valid_token(2), "phone", pb::Platform::Mobile)
            .unwrap();
        let mut alice = Roaming::new(1, "phone");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut inbox = Inbox::default();
        let mut acked = Vec::new();
        for round in 0..2 {
            if round == 1 {
                deployment_ref.kill(0);
            }
            let ids = round * 100..(round + 1) * 100;
            let (more, _) = send_through(deployment_ref, &mut alice, ids, Duration::ZERO, deadline);
            acked.extend(more);
            // Bob's app takes what is pushed, acks it, drops what it has seen.
            while let Ok(Some(frame)) = bob.next_event(Duration::from_millis(500)) {
                if let Some(Body::Push(push)) = frame.body {
                    let message = push.message.expect("a message");
                    ack(&mut bob, message.msg_id);
                    if inbox.seen.insert(message.msg_id) {
                        inbox
                            .messages
                            .insert(message.msg_id, (message.seq, message.client_msg_id));
                    } else {
                        inbox.duplicates_dropped += 1;
                    }
                }
            }
        }
        (acked, inbox, alice.closes)
    });
    let history = stored(&net, &deployment);
    println!(
        "gateway killed: {} acknowledged, {} stored, {} pushed to the app ({} repeats dropped by msg_id), sender reconnected {} times",
        acked.len(),
        history.len(),
        inbox.messages.len(),
        inbox.duplicates_dropped,
        closes
    );
    check_exactly_once(&acked, &history);
    assert_eq!((acked.len(), history.len()), (200, 200));
    // The app got every message once (pushed live or, for any push lost
    // with the killed gateway, by the sync an app does on reconnect).
    let pushed: HashSet<u64> = inbox.messages.keys().copied().collect();
    let stored: HashSet<u64> = history.iter().map(|m| m.msg_id).collect();
    assert!(pushed.is_subset(&stored));
    assert_eq!(
        pushed.len(),
        stored.len(),
        "every stored message pushed to the live device"
    );
}

/// Forwards `listen` to `target`, holding every chunk for `delay` plus up to
/// `jitter` either way, without reordering: the delay the kernel's netem
/// would add.
fn delay_relay(listen: SocketAddr, target: SocketAddr, delay: Duration, jitter: Duration) {
    let listener = TcpListener::bind(listen).expect("the relay's port");
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(target) else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            for (from, to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                thread::spawn(move || delayed_pipe(from, to, delay, jitter));
            }
        }
    });
}

fn delayed_pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration, jitter: Duration) {
    let (queue, due) = crossbeam_channel::unbounded::<(Instant, Vec<u8>)>();
    let writer = thread::spawn(move || {
        for (at, bytes) in due {
            thread::sleep(at.saturating_duration_since(Instant::now()));
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
    let mut seed = (from.as_raw_fd() as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut last_due = Instant::now();
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        // xorshift: a delay in [delay - jitter, delay + jitter], never
        // before the chunk ahead of it.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let offset = Duration::from_micros(seed % (jitter.as_micros() as u64 * 2 + 1));
        let at = (Instant::now() + delay + offset)
            .checked_sub(jitter)
            .unwrap_or_else(Instant::now)
            .max(last_due);
        last_due = at;
        if queue.send((at, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(queue);
    let _ = writer.join();
}

#[test]
fn a_slow_lossy_link_still_delivers_every_message_once_in_order() {
    let net = Net::new();
    const RELAY_PORT: u16 = 7200;
    in_namespace(&net.logic, || {
        delay_relay(
            SocketAddr::from(([169, 254, 77, 1], RELAY_PORT)),
            SocketAddr::from(([169, 254, 77, 1], LINK_PORT)),
            Duration::from_millis(50),
            Duration::from_millis(20),
        )
    });
    net.lose("0.01", RELAY_PORT);
    let deployment = Deployment::start(&net, "lossy", 1, RELAY_PORT);
    let (acked, pushed) = in_namespace(&net.gateways, || {
        let addrs = deployment.addrs();
        let mut bob = Client::connect(addrs[0]).unwrap();
        bob.set_timeout(Duration::from_secs(10));
        bob.login(2, &valid_token(2), "phone", pb::Platform::Mobile)
            .unwrap();
        // Bob's app acks each push as it comes, while Alice sends.
        let receiving = thread::spawn(move || {
            let mut pushed = Vec::new();
            while pushed.len() < 200 {
                match bob.next_event(Duration::from_secs(10)) {
                    Ok(Some(frame)) => {
                        if let Some(Body::Push(push)) = frame.body {
                            let message = push.message.expect("a message");
                            ack(&mut bob, message.msg_id);
                            pushed.push(message);
                        }
                    }
                    other => panic!("pushes stopped after {}: {other:?}", pushed.len()),
                }
            }
            pushed
        });
        let mut alice = Roaming::new(1, "phone");
        let deadline = Instant::now() + Duration::from_secs(120);
        let (acked, _) = send_through(&deployment, &mut alice, 0..200, Duration::ZERO, deadline);
        let pushed = receiving.join().expect("bob's pushes");
        assert_eq!(alice.closes, 0, "a lossy link is slow, not dead");
        (acked, pushed)
    });
    let history = stored(&net, &deployment);
    println!(
        "50 ms +/- 20 ms, 1 % loss: {} acknowledged, {} stored, {} pushed",
        acked.len(),
        history.len(),
        pushed.len()
    );
    check_exactly_once(&acked, &history);
    let seqs: Vec<u64> = pushed.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<_>>(),
        "pushed once each, in order"
    );
}
