//! The SDK against the real server, with everything that loses or doubles
//! messages in other chat systems: two users on three devices exchange
//! messages while the server is killed with `kill -9` and restarted, one
//! device's network is cut (a TCP proxy the test controls; the last cut
//! lasts until the others are done, so that only its catch-up can bring
//! it what it missed), and device processes are killed and restarted on
//! the same store. At the end every
//! send each device's outbox ever held is on the server exactly once, in
//! the device's order; every device's store holds the server's history
//! exactly; unread counts agree with the server's; no outbox holds a
//! pending message.
//!
//! Each device is a process of this same test binary (its own `main`, no
//! libtest harness): `IM_SDK_ROLE=device` makes it a device, so that it can
//! be killed for real.

#[path = "contract/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use client::Client;
use harness::{Proxy, ServerProcess, free_port, spawn_server, valid_token, whole_history};
use protocol::pb;

fn main() {
    match std::env::var("IM_SDK_ROLE").as_deref() {
        Ok("device") => return device(),
        Ok("storm") => return storm_clients(),
        _ => {}
    }
    // `cargo test --test sdk -- NAME` runs the tests whose name holds NAME.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: [(&str, fn()); 2] = [
        (
            "three_devices_through_kills_cuts_and_restarts",
            three_devices_through_kills_cuts_and_restarts,
        ),
        (
            "a_reconnect_storm_spreads_and_everyone_syncs",
            a_reconnect_storm_spreads_and_everyone_syncs,
        ),
    ];
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        test();
        println!(
            "test {name} ... ok ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
}

/// One device, as a process: sends `IM_SDK_SENDS` messages to its peer (a
/// line in the progress file after each is durable in the outbox, so a
/// restart goes on from there), marks the conversation read now and then,
/// and keeps syncing until killed.
fn device() {
    env_logger::init();
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} set"));
    let uid: u64 = var("IM_SDK_UID").parse().unwrap();
    let peer: u64 = var("IM_SDK_PEER").parse().unwrap();
    let sends: usize = var("IM_SDK_SENDS").parse().unwrap();
    let progress = PathBuf::from(var("IM_SDK_PROGRESS"));
    let mut config = sdk::Config::new(
        vec![var("IM_SDK_ADDR")],
        uid,
        &valid_token(uid),
        &var("IM_SDK_DEVICE"),
        PathBuf::from(var("IM_SDK_STORE")),
    );
    config.backoff.first = Duration::from_millis(200);
    config.backoff.max = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(3);
    struct Quiet;
    impl sdk::Listener for Quiet {}
    let sdk = sdk::Sdk::start(config, Arc::new(Quiet)).expect("the SDK starts");
    let done = std::fs::read_to_string(&progress)
        .map(|text| text.lines().count())
        .unwrap_or(0);
    for n in done..sends {
        let text = format!("{uid}:{n}");
        sdk.send(peer, 1, text.as_bytes()).expect("queued");
        append(&progress, &text);
        if n % 10 == 9
            && let Some(conversation) = sdk
                .conversations()
                .expect("conversations")
                .into_iter()
                .find(|c| c.peer_uid == peer)
        {
            sdk.mark_read(peer, conversation.last_seq.saturating_sub(3))
                .expect("read");
        }
        thread::sleep(Duration::from_millis(25));
    }
    loop {
        thread::sleep(Duration::from_secs(1));
    }
}

fn append(path: &Path, line: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("progress file");
    writeln!(file, "{line}").expect("progress written");
}

/// A device process the test can kill and start again on the same store.
struct Device {
    name: &'static str,
    uid: u64,
    peer: u64,
    addr: String,
    dir: PathBuf,
    child: Option<Child>,
    starts: usize,
}

const SENDS: usize = 300;

impl Device {
    fn new(name: &'static str, uid: u64, peer: u64, addr: String, dir: &Path) -> Device {
        let mut device = Device {
            name,
            uid,
            peer,
            addr,
            dir: dir.to_owned(),
            child: None,
            starts: 0,
        };
        device.start();
        device
    }

    fn store(&self) -> PathBuf {
        self.dir.join(format!("{}.db", self.name))
    }

    fn start(&mut self) {
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("{}-{}.log", self.name, self.starts)))
                .expect("log");
        let child = Command::new(std::env::current_exe().expect("this test binary"))
            .env("IM_SDK_ROLE", "device")
            .env("IM_SDK_UID", self.uid.to_string())
            .env("IM_SDK_PEER", self.peer.to_string())
            .env("IM_SDK_SENDS", SENDS.to_string())
            .env("IM_SDK_ADDR", &self.addr)
            .env("IM_SDK_DEVICE", self.name)
            .env("IM_SDK_STORE", self.store())
            .env(
                "IM_SDK_PROGRESS",
                self.dir.join(format!("{}.progress", self.name)),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn a device");
        self.child = Some(child);
    }

    /// kill -9, then start again on the same store.
    fn restart(&mut self) {
        self.kill();
        thread::sleep(Duration::from_millis(200));
        self.start();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every send queued and acknowledged.
    fn drained(&self) -> bool {
        self.queued() >= SENDS
            && read_store(&self.store(), self.peer)
                .is_some_and(|stored| stored.outbox.iter().all(|(_, state, ..)| *state == 1))
    }

    fn queued(&self) -> usize {
        std::fs::read_to_string(self.dir.join(format!("{}.progress", self.name)))
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a device's store holds, read beside the running device (WAL).
struct Stored {
    /// The outbox in order: client_msg_id, state, msg_id, seq.
    outbox: Vec<(String, i64, u64, u64)>,
    /// (msg_id, seq, client_msg_id) in seq order.
    messages: Vec<(u64, u64, String)>,
    unread: u64,
}

fn read_store(path: &Path, peer: u64) -> Option<Stored> {
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    db.busy_timeout(Duration::from_secs(5)).ok()?;
    let mut outbox = db
        .prepare("SELECT client_msg_id, state, msg_id, seq FROM outbox ORDER BY local_id")
        .ok()?;
    let outbox = outbox
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
            ))
        })
        .ok()?
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let mut messages = db
        .prepare("SELECT msg_id, seq, client_msg_id FROM messages WHERE peer_uid = ?1 ORDER BY seq")
        .ok()?;
    let messages = messages
        .query_map([peer as i64], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get(2)?,
            ))
        })
        .ok()?
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let unread: i64 = db
        .query_row(
            "SELECT last_seq - read_seq FROM conversations WHERE peer_uid = ?1",
            [peer as i64],
            |r| r.get(0),
        )
        .ok()?;
    Some(Stored {
        outbox,
        messages,
        unread: unread.max(0) as u64,
    })
}

/// The server's view for `uid`, through a session of its own device id.
fn server_view(port: u16, uid: u64, peer: u64) -> Option<(Vec<pb::Message>, u64)> {
    let mut client = Client::connect(("127.0.0.1", port)).ok()?;
    client.set_timeout(Duration::from_secs(5));
    client
        .login(uid, &valid_token(uid), "checker", pb::Platform::Web)
        .ok()?;
    let history = whole_history(&mut client, peer);
    let list = client
        .call(pb::ConversationsReq {
            limit: 50,
            cursor: vec![],
        })
        .ok()?;
    let unread = list
        .conversations
        .iter()
        .find(|c| c.peer_uid == peer)
        .map_or(0, |c| c.unread);
    Some((history, unread))
}

fn three_devices_through_kills_cuts_and_restarts() {
    let dir = std::env::temp_dir().join(format!("im-sdk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let server_dir = dir.join("server");
    let start_server = |n: usize| -> ServerProcess {
        spawn_server(&server_dir, port, &format!("server-{n}.log"), "", &[])
    };
    let mut server = start_server(0);
    let proxy = Proxy::on(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        format!("127.0.0.1:{port}"),
    );
    let direct = format!("127.0.0.1:{port}");
    let mut devices = [
        Device::new("alice-phone", 1, 2, proxy.addr.to_string(), &dir),
        Device::new("alice-laptop", 1, 2, direct.clone(), &dir),
        Device::new("bob-phone", 2, 1, direct, &dir),
    ];

    // The faults, while the devices send.
    let kill_server = |server: &mut ServerProcess, n: usize, down: Duration| {
        let _ = server.child.kill();
        let _ = server.child.wait();
        thread::sleep(down);
        *server = start_server(n);
    };
    thread::sleep(Duration::from_millis(800));
    kill_server(&mut server, 1, Duration::from_millis(500));
    thread::sleep(Duration::from_millis(800));
    proxy.cut();
    thread::sleep(Duration::from_secs(1));
    proxy.restore();
    devices[2].restart();
    thread::sleep(Duration::from_millis(700));
    kill_server(&mut server, 2, Duration::from_secs(1));
    devices[1].restart();
    thread::sleep(Duration::from_millis(500));
    proxy.cut();
    devices[0].restart();
    thread::sleep(Duration::from_millis(700));
    proxy.restore();
    thread::sleep(Duration::from_millis(500));
    kill_server(&mut server, 3, Duration::from_millis(300));
    devices[2].restart();
    // Alice's phone is cut off while the others finish: nothing is pushed
    // to it after it comes back, so only its catch-up (sync and gap pulls)
    // can bring it what it missed.
    thread::sleep(Duration::from_millis(500));
    proxy.cut();
    let others_done = Instant::now() + Duration::from_secs(60);
    while !devices[1..].iter().all(Device::drained) {
        assert!(
            Instant::now() < others_done,
            "the other devices did not finish sending"
        );
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(500));
    proxy.restore();

    // Then everything converges.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match converged(&devices, port) {
            Ok(summary) => {
                println!("{summary}");
                break;
            }
            Err(problem) => assert!(
                Instant::now() < deadline,
                "not converged after 90 s: {problem} (logs in {})",
                dir.display()
            ),
        }
        thread::sleep(Duration::from_millis(500));
    }
    drop(devices);
    drop(server);
    if std::env::var_os("IM_SDK_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Checks everything the test promises; `Err` says what is not so yet.
fn converged(devices: &[Device], port: u16) -> Result<String, String> {
    for device in devices {
        if device.queued() < SENDS {
            return Err(format!(
                "{} has queued {} sends",
                device.name,
                device.queued()
            ));
        }
    }
    let views: HashMap<u64, (Vec<pb::Message>, u64)> = [(1, 2), (2, 1)]
        .into_iter()
        .map(|(uid, peer)| {
            server_view(port, uid, peer)
                .map(|view| (uid, view))
                .ok_or_else(|| "the server is not answering".to_owned())
        })
        .collect::<Result<_, _>>()?;
    let history = &views[&1].0;
    let server: Vec<(u64, u64, String)> = history
        .iter()
        .map(|m| (m.msg_id, m.seq, m.client_msg_id.clone()))
        .collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for m in history {
        *count.entry(m.client_msg_id.as_str()).or_default() += 1;
    }
    let seq_of: HashMap<&str, (u64, u64)> = history
        .iter()
        .map(|m| (m.client_msg_id.as_str(), (m.msg_id, m.seq)))
        .collect();
    let mut sent = 0;
    for device in devices {
        let stored = read_store(&device.store(), device.peer)
            .ok_or_else(|| format!("{}'s store not readable", device.name))?;
        // Every send the outbox ever held: sent, on the server once, with
        // the msg_id and seq the device was told, in the outbox's order.
        let mut last_seq = 0;
        for (id, state, msg_id, seq) in &stored.outbox {
            if *state != 1 {
                return Err(format!(
                    "{}: {id} is still in the outbox (state {state})",
                    device.name
                ));
            }
            match count.get(id.as_str()) {
                Some(1) => {}
                n => return Err(format!("{id} is on the server {n:?} times")),
            }
            if seq_of[id.as_str()] != (*msg_id, *seq) {
                return Err(format!(
                    "{id}: acked as {msg_id}/{seq}, stored as {:?}",
                    seq_of[id.as_str()]
                ));
            }
            assert!(
                *seq > last_seq,
                "{}: {id} overtook an earlier send",
                device.name
            );
            last_seq = *seq;
        }
        assert!(
            stored.outbox.len() >= SENDS,
            "{}: {} sends in the outbox, {SENDS} queued",
            device.name,
            stored.outbox.len()
        );
        sent += stored.outbox.len();
        if stored.messages != server {
            return Err(format!(
                "{} holds {} messages, the server {}",
                device.name,
                stored.messages.len(),
                server.len()
            ));
        }
        let server_unread = views[&device.uid].1;
        if stored.unread != server_unread {
            return Err(format!(
                "{}: unread {} here, {server_unread} on the server",
                device.name, stored.unread
            ));
        }
    }
    if history.len() != sent {
        return Err(format!("{} on the server, {sent} sent", history.len()));
    }
    // Seqs are 1..=n with no hole.
    assert!(
        history
            .iter()
            .enumerate()
            .all(|(i, m)| m.seq == i as u64 + 1)
    );
    Ok(format!(
        "{sent} messages from 3 devices through 3 server kills, 3 cuts and {} device restarts: \
         each once on the server and in every store, unread agreeing",
        devices.iter().map(|d| d.starts - 1).sum::<usize>()
    ))
}

/// SDK clients per storm process: a thread, a store and a socket each.
const STORM_PER_PROCESS: usize = 1_000;

/// A storm process: `IM_SDK_COUNT` SDK clients from `IM_SDK_FIRST_UID`.
/// Prints `ready` once all are online, then, once each has come back
/// online after losing the server, one line `online <unix ms>` per client
/// (online means logged in and caught up) and `done`.
fn storm_clients() {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// When a client last became online, and how many times it has.
    #[derive(Default)]
    struct Online {
        times: AtomicUsize,
        last_ms: AtomicU64,
    }
    impl sdk::Listener for Online {
        fn connection(&self, state: &sdk::ConnectionState) {
            if *state == sdk::ConnectionState::Online {
                self.last_ms
                    .store(runtime::clock::unix_ms(), Ordering::Release);
                self.times.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    // A store, a socket and a doorbell per client: more than a default
    // soft limit of open files.
    runtime::fd_limit::raise_to_hard_limit();
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} set"));
    let first: u64 = var("IM_SDK_FIRST_UID").parse().unwrap();
    let count: u64 = var("IM_SDK_COUNT").parse().unwrap();
    let dir = PathBuf::from(var("IM_SDK_DIR"));
    let listeners: Vec<Arc<Online>> = (0..count).map(|_| Arc::default()).collect();
    let clients: Vec<sdk::Sdk> = (0..count)
        .map(|i| {
            let uid = first + i;
            let config = sdk::Config::new(
                vec![var("IM_SDK_ADDR")],
                uid,
                &valid_token(uid),
                "phone",
                dir.join(format!("{uid}.db")),
            );
            sdk::Sdk::start(config, listeners[i as usize].clone()).expect("the SDK starts")
        })
        .collect();
    let all_online = |times: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while listeners
            .iter()
            .any(|l| l.times.load(Ordering::Acquire) < times)
        {
            if Instant::now() > deadline {
                let missing = listeners
                    .iter()
                    .filter(|l| l.times.load(Ordering::Acquire) < times)
                    .count();
                println!("missing {missing}");
                std::process::exit(1);
            }
            thread::sleep(Duration::from_millis(20));
        }
    };
    all_online(1);
    println!("ready");
    let _ = std::io::stdout().flush();
    all_online(2);
    let mut out = std::io::stdout().lock();
    for listener in &listeners {
        let _ = writeln!(out, "online {}", listener.last_ms.load(Ordering::Acquire));
    }
    let _ = writeln!(out, "done");
    let _ = out.flush();
    // The stores are durable already; no need to join a thousand threads.
    std::mem::forget(clients);
    std::process::exit(0);
}

/// 5,000 SDK clients (in five processes) lose the server at once (kill -9,
/// down 2 s) and come back: how their reconnects spread over time (per
/// 100 ms after the server accepts again) and how long until all are
/// caught up. Asserted: everyone comes back and catches up.
fn a_reconnect_storm_spreads_and_everyone_syncs() {
    use std::io::{BufRead, BufReader};

    let clients: usize = std::env::var("IM_SDK_STORM")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000);
    let dir = std::env::temp_dir().join(format!("im-sdk-storm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let server_dir = dir.join("server");
    let mut server = spawn_server(&server_dir, port, "server-0.log", "", &[]);
    let mut storms: Vec<(Child, BufReader<std::process::ChildStdout>)> = (0..clients
        .div_ceil(STORM_PER_PROCESS))
        .map(|p| {
            let count = STORM_PER_PROCESS.min(clients - p * STORM_PER_PROCESS);
            let mut child = Command::new(std::env::current_exe().unwrap())
                .env("IM_SDK_ROLE", "storm")
                .env(
                    "IM_SDK_FIRST_UID",
                    (10_000 + p * STORM_PER_PROCESS).to_string(),
                )
                .env("IM_SDK_COUNT", count.to_string())
                .env("IM_SDK_ADDR", format!("127.0.0.1:{port}"))
                .env("IM_SDK_DIR", &dir)
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(dir.join(format!("storm-{p}.log"))).unwrap())
                .spawn()
                .expect("spawn a storm process");
            let out = BufReader::new(child.stdout.take().unwrap());
            (child, out)
        })
        .collect();
    let line = |out: &mut BufReader<std::process::ChildStdout>| {
        let mut line = String::new();
        out.read_line(&mut line).expect("a storm process's output");
        line.trim().to_owned()
    };
    for (_, out) in &mut storms {
        assert_eq!(line(out), "ready", "every client online first");
    }

    let _ = server.child.kill();
    let _ = server.child.wait();
    thread::sleep(Duration::from_secs(2));
    server = spawn_server(&server_dir, port, "server-1.log", "", &[]);
    let back = runtime::clock::unix_ms();

    let mut after_ms: Vec<u64> = Vec::with_capacity(clients);
    for (child, out) in &mut storms {
        loop {
            match line(out).as_str() {
                "done" => break,
                "" => panic!("a storm process ended early: see {}", dir.display()),
                l => match l
                    .strip_prefix("online ")
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    Some(at) => after_ms.push(at.saturating_sub(back)),
                    None => panic!("a storm process says {l:?}"),
                },
            }
        }
        let _ = child.wait();
    }
    assert_eq!(after_ms.len(), clients, "everyone came back");
    let mut buckets: std::collections::BTreeMap<u64, usize> = Default::default();
    for at in &after_ms {
        *buckets.entry(at / 100).or_default() += 1;
    }
    let last = after_ms.iter().max().copied().unwrap_or(0);
    let fullest = buckets.values().max().copied().unwrap_or(0);
    println!(
        "{clients} SDK clients back online (logged in, caught up) per 100 ms after the server accepted again:"
    );
    for (bucket, n) in &buckets {
        println!(
            "  {:>5} ms  {n:>5}  {:>4.1} %  {}",
            bucket * 100,
            *n as f64 * 100.0 / clients as f64,
            "#".repeat(n * 200 / clients)
        );
    }
    println!(
        "all synced {last} ms after the server accepted again; the fullest 100 ms held {fullest} ({:.1} %)",
        fullest as f64 * 100.0 / clients as f64
    );
    // The spread is reported, not asserted: the fullest 100 ms holds more
    // than the few percent aimed at (the clients' attempts spread, but the
    // restarted server serves the first second's logins and syncs in a
    // bunch); see the closing note of the SDK issue.
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
