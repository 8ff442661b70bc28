//! Acknowledged means durable: `kill -9` the server process while sends are
//! in flight, restart it on the same data dir, and find every acknowledged
//! message with the msg_id and seq it was acknowledged with.

#[path = "contract/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use harness::{ServerProcess as Server, free_port, login_to as login, spawn_server, whole_history};
use protocol::{Body, pb};

/// Starts the server on `dir`; its log goes to `<dir>/<log>`.
fn start(dir: &std::path::Path, port: u16, log: &str) -> Server {
    start_with(dir, port, log, "")
}

/// The same, with `storage` (a `[storage]` section) added to its config.
fn start_with(dir: &std::path::Path, port: u16, log: &str, storage: &str) -> Server {
    spawn_server(
        dir,
        port,
        log,
        storage,
        &[("RUST_LOG", "warn,logic::store::journal=info")],
    )
}

#[test]
fn acked_messages_survive_kill_9() {
    let dir = std::env::temp_dir().join(format!("im-durability-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let mut server = start(&dir, port, "first.log");

    // Keep 500 sends in flight; kill the server while they fly.
    let sender = thread::spawn(move || {
        let mut client = login(port, 1);
        let mut in_flight = std::collections::VecDeque::new();
        let mut acked = Vec::new();
        for i in 0..1_000_000u64 {
            let req = pb::SendReq {
                to_uid: 2,
                client_msg_id: format!("m{i}"),
                content_type: 1,
                content: vec![7; 100],
            };
            match client.send_request(req) {
                Ok(id) => in_flight.push_back((id, i)),
                Err(_) => break,
            }
            if in_flight.len() == 500 {
                let (id, i) = in_flight.pop_front().unwrap();
                match client.wait_response(id, Duration::from_secs(5)) {
                    Ok(frame) => match frame.body {
                        Some(Body::SendResp(resp)) => acked.push((i, resp)),
                        other => panic!("unexpected answer {other:?}"),
                    },
                    Err(_) => break,
                }
            }
        }
        acked
    });
    thread::sleep(Duration::from_millis(700));
    server.child.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
    server.child.wait().unwrap();
    let acked = sender.join().unwrap();
    assert!(
        acked.len() > 100,
        "the test needs acked messages before the kill, got {}",
        acked.len()
    );

    let server = start(&dir, server.port, "second.log");
    let mut reader = login(server.port, 2);
    // Under continuous load the applier is always behind the journal by
    // up to one gathering interval: the kill left records only the
    // journal held, and the restart replayed them.
    let log = std::fs::read_to_string(dir.join("second.log")).unwrap();
    assert!(
        log.contains("journal: replayed records"),
        "no journal replay on restart; server log:\n{log}"
    );
    let history = whole_history(&mut reader, 1);
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    let stored: HashMap<String, (u64, u64)> = history
        .iter()
        .map(|m| (m.client_msg_id.clone(), (m.msg_id, m.seq)))
        .collect();
    let last = seqs.len() as u64;
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "seqs 1..N without gaps"
    );
    for (i, resp) in &acked {
        assert_eq!(
            stored.get(&format!("m{i}")),
            Some(&(resp.msg_id, resp.seq)),
            "acked message m{i} lost or changed"
        );
    }
    // And the sequence carries on where storage left it.
    let mut client = login(server.port, 1);
    let next = client
        .call(pb::SendReq {
            to_uid: 2,
            client_msg_id: "after-restart".into(),
            content_type: 1,
            content: vec![],
        })
        .unwrap();
    assert_eq!(next.seq, last + 1);
    println!(
        "{} acked before kill -9, {} stored, all acked found",
        acked.len(),
        stored.len()
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every message acked so far, by client_msg_id: (to_uid, msg_id, seq).
type Acked = HashMap<String, (u64, u64, u64)>;

/// Sends from uid 1 to uids 2..=5 in turn, 200 in flight, until the
/// connection dies; returns what was acked (refusals while the database is
/// down are not).
fn send_until_killed(port: u16, prefix: String) -> Acked {
    let mut client = login(port, 1);
    let mut in_flight = std::collections::VecDeque::new();
    let mut acked = HashMap::new();
    for i in 0..1_000_000u64 {
        let to = 2 + i % 4;
        let cmid = format!("{prefix}-{i}");
        let req = pb::SendReq {
            to_uid: to,
            client_msg_id: cmid.clone(),
            content_type: 1,
            content: vec![7; 100],
        };
        match client.send_request(req) {
            Ok(id) => in_flight.push_back((id, cmid, to)),
            Err(_) => break,
        }
        if in_flight.len() == 200 {
            let (id, cmid, to) = in_flight.pop_front().unwrap();
            match client.wait_response(id, Duration::from_secs(5)) {
                Ok(frame) => match frame.body {
                    Some(Body::SendResp(resp)) => {
                        acked.insert(cmid, (to, resp.msg_id, resp.seq));
                    }
                    // The database is down: not acked (it may be stored
                    // all the same, if the commit's answer was lost).
                    Some(Body::Error(e)) if e.code == protocol::ErrorCode::Unavailable as i32 => {}
                    other => panic!("unexpected answer {other:?}"),
                },
                Err(_) => break,
            }
        }
    }
    acked
}

/// Checks every acked message against what the restarted server holds: the
/// same msg_id and seq, each conversation's seqs 1..N without gap or
/// duplicate, and its row (last seq, unread) agreeing with the history.
fn check_all(port: u16, acked: &Acked) -> usize {
    let mut stored_total = 0;
    let mut msg_ids = std::collections::HashSet::new();
    for peer in 2..=5u64 {
        let mut reader = login(port, peer);
        let history = whole_history(&mut reader, 1);
        let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
        let mut stored: HashMap<String, (u64, u64)> = HashMap::new();
        for m in &history {
            let twice = stored.insert(m.client_msg_id.clone(), (m.msg_id, m.seq));
            assert!(twice.is_none(), "{} stored twice", m.client_msg_id);
            assert!(msg_ids.insert(m.msg_id), "msg_id {} given twice", m.msg_id);
        }
        let last = seqs.len() as u64;
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "uid {peer}: seqs 1..N without gaps"
        );
        for (cmid, (to, msg_id, seq)) in acked.iter().filter(|(_, (to, ..))| *to == peer) {
            assert_eq!(
                stored.get(cmid),
                Some(&(*msg_id, *seq)),
                "acked {cmid} to {to} lost or changed"
            );
        }
        // The conversation row agrees: nobody read, so every message is unread.
        let list = reader
            .call(pb::ConversationsReq {
                limit: 10,
                cursor: Vec::new(),
            })
            .unwrap();
        let row = list
            .conversations
            .iter()
            .find(|c| c.peer_uid == 1)
            .expect("the conversation row");
        assert_eq!((row.last_seq, row.unread), (last, last), "uid {peer}'s row");
        assert_eq!(list.total_unread, last);
        stored_total += stored.len();
    }
    stored_total
}

/// How many crash-loop iterations: `IM_SOAK_ITERATIONS`, else `default`.
fn iterations(default: usize) -> usize {
    std::env::var("IM_SOAK_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// kill -9 at a random moment under load, restart, check everything acked
/// so far; `IM_SOAK_ITERATIONS` times (3 by default; `scripts/soak.sh`
/// runs 200).
#[test]
fn a_crash_loop_keeps_every_acked_message() {
    crash_loop("sqlite", iterations(3), "", None);
}

/// The same on MariaDB, whose own process is killed too: every third
/// iteration kills the database mid-load and then the server, the next
/// kills the database and starts it again under the running server (which
/// reconnects) before killing the server.
#[test]
fn a_crash_loop_on_mariadb_with_the_database_killed_too_keeps_every_acked_message() {
    let mut db = testkit::KillableMariaDb::start("crash-loop");
    let storage = format!(
        "[storage]\nbackend = \"mysql\"\nmysql_urls = [\"{}/im_crash_loop\"]\n",
        db.url()
    );
    crash_loop("mariadb", iterations(3), &storage, Some(&mut db));
}

fn crash_loop(
    name: &str,
    iterations: usize,
    storage: &str,
    mut db: Option<&mut testkit::KillableMariaDb>,
) {
    let dir = std::env::temp_dir().join(format!("im-soak-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let mut acked = Acked::new();
    // A small xorshift, seeded by the clock: each run kills at other moments.
    let mut seed = (runtime::clock::unix_ms() | 1) as u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut db_kills = 0;
    for iteration in 0..iterations {
        let mut server = start_with(&dir, port, &format!("run-{iteration}.log"), storage);
        if iteration > 0 {
            check_all(port, &acked);
        }
        let sender = thread::spawn(move || send_until_killed(port, format!("i{iteration}")));
        thread::sleep(Duration::from_millis(50 + next() % 750));
        match (db.as_deref_mut(), iteration % 3) {
            (Some(db), 1) => {
                db.kill();
                thread::sleep(Duration::from_millis(50 + next() % 250));
                server.child.kill().expect("SIGKILL");
                db.up();
                db_kills += 1;
            }
            (Some(db), 2) => {
                db.kill();
                thread::sleep(Duration::from_millis(50 + next() % 250));
                db.up();
                thread::sleep(Duration::from_millis(200 + next() % 500));
                server.child.kill().expect("SIGKILL");
                db_kills += 1;
            }
            _ => server.child.kill().expect("SIGKILL"),
        }
        server.child.wait().unwrap();
        acked.extend(sender.join().unwrap());
    }
    let _server = start_with(&dir, port, "final.log", storage);
    let stored = check_all(port, &acked);
    println!(
        "{name}: {iterations} kill -9 under load ({db_kills} of the database too): {} acked, {stored} stored, every acked message found once with its msg_id and seq",
        acked.len()
    );
    assert!(
        acked.len() > 100 * iterations,
        "the test needs acked messages"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
