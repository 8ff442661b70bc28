//! The MySQL store under stress the contract suite does not apply:
//!
//! - The database goes away mid-run and comes back: sends fail with
//!   UNAVAILABLE while it is gone (never a SendResp for a message that was
//!   not stored), and succeed again after, on fresh connections, with seqs
//!   that have no gap. The outage is a TCP proxy in front of MariaDB that the
//!   test cuts and restores, so other tests on the same server are untouched.
//! - One writer per database: a second node on the same database is a
//!   standby until the first stops (and gives the writer's lease up); other
//!   databases are unaffected. A writer whose lease another took is fenced:
//!   its next batch stores nothing.
//! - Two shards (two databases): every row lands on the shard the map says,
//!   a conversation's history is read from its one shard (the other shard
//!   can be down), and a changed shard list is refused, never reshuffled.

#[path = "contract/harness.rs"]
mod harness;

use std::thread;
use std::time::{Duration, Instant};

use client::Client;
use harness::Proxy;
use mysql::prelude::Queryable;
use protocol::{ErrorCode, pb, token};
use server::Config;
use server::Node;

const SECRET: &str = "outage-test-secret";

/// The test's MariaDB, as host:port.
/// Drops the test's database however the test ends.
struct Database(String);

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(pool) = mysql::Pool::new(testkit::mysql_url().as_str()) {
            if let Ok(mut conn) = pool.get_conn() {
                let _ = conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.0));
            }
        }
    }
}

fn send(client: &mut Client, id: &str) -> Result<pb::SendResp, client::ClientError> {
    client.call(pb::SendReq {
        to_uid: 2,
        client_msg_id: id.into(),
        content_type: 1,
        content: id.as_bytes().to_vec(),
    })
}

#[test]
fn sends_fail_cleanly_while_the_database_is_down_and_recover_after() {
    let proxy = Proxy::start();
    let database = format!("im_outage_{}", std::process::id());
    let _cleanup = Database(database.clone());
    let dir = std::env::temp_dir().join(&database);
    // prefer_socket=false: the crate would otherwise switch a local server to
    // its Unix socket, around the proxy.
    let url = format!("mysql://root@{}/{database}?prefer_socket=false", proxy.addr);
    let config = config_for(&url, &dir);
    let node = Node::start(&config).expect("node starts");

    let mut alice = Client::connect(node.local_addr()).unwrap();
    alice.set_timeout(Duration::from_secs(15));
    let token = token::mint(SECRET.as_bytes(), 1, runtime::clock::unix_secs() + 600);
    alice
        .login(1, &token, "phone", pb::Platform::Mobile)
        .unwrap();
    assert_eq!(send(&mut alice, "before").unwrap().seq, 1);

    proxy.cut();
    for i in 0..3 {
        let err = send(&mut alice, &format!("during-{i}"))
            .expect_err("no SendResp while the database is down");
        assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");
    }
    let err = alice
        .call(pb::HistoryReq {
            peer_uid: 2,
            after_seq: 0,
            before_seq: 0,
            limit: 10,
        })
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable));
    // The session itself is fine.
    alice.call(pb::Ping {}).unwrap();

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match send(&mut alice, "after") {
            Ok(resp) => break resp,
            Err(e) if e.code() == Some(ErrorCode::Unavailable) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("sends did not recover: {e}"),
        }
    };
    assert_eq!(
        after.seq, 2,
        "nothing from the outage was stored or consumed a seq"
    );
    // A send refused during the outage can simply be resent.
    let resent = send(&mut alice, "during-0").unwrap();
    assert!(!resent.duplicate);
    assert_eq!(resent.seq, 3);
    let history = alice
        .call(pb::HistoryReq {
            peer_uid: 2,
            after_seq: 0,
            before_seq: 0,
            limit: 10,
        })
        .unwrap();
    let ids: Vec<&str> = history
        .messages
        .iter()
        .map(|m| m.client_msg_id.as_str())
        .collect();
    assert_eq!(ids, vec!["before", "after", "during-0"]);

    node.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node config on the MySQL database at `url`, everything else local.
fn config_for(url: &str, dir: &std::path::Path) -> Config {
    config_for_shards(&[url.to_owned()], dir)
}

fn config_for_shards(urls: &[String], dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.gateway.listen = "127.0.0.1:0".into();
    config.admin.listen = String::new();
    config.api.listen = String::new();
    config.gateway.websocket.listen = String::new();
    config.auth.secret = SECRET.into();
    config.storage.data_dir = dir.display().to_string();
    config.storage.backend = logic::config::BackendKind::Mysql;
    config.storage.mysql_urls = urls.to_vec();
    config
}

fn node_on(database: &str, dir: &std::path::Path) -> Result<Node, server::NodeError> {
    Node::start(&config_for(
        &format!("{}/{database}", testkit::mysql_url()),
        dir,
    ))
}

#[test]
fn a_second_node_is_a_standby_until_the_writer_stops() {
    let database = format!("im_single_writer_{}", std::process::id());
    let _cleanup = Database(database.clone());
    let other = format!("im_other_writer_{}", std::process::id());
    let _cleanup_other = Database(other.clone());
    let dir = std::env::temp_dir().join(&database);

    let first = node_on(&database, &dir).expect("the first node starts");
    let (started_tx, started) = std::sync::mpsc::channel();
    let standby = {
        let (database, dir) = (database.clone(), dir.clone());
        thread::spawn(move || {
            let node = node_on(&database, &dir);
            let _ = started_tx.send(Instant::now());
            node
        })
    };
    assert!(
        started.recv_timeout(Duration::from_secs(5)).is_err(),
        "a second node on the same database waits while the first renews its lease"
    );
    // The lease is per database: a node on another database starts.
    let elsewhere = node_on(&other, &dir).expect("another database has its own writer");
    elsewhere.shutdown();

    let stopped = Instant::now();
    first.shutdown();
    let took_over = started
        .recv_timeout(Duration::from_secs(10))
        .expect("the standby takes over once the first stops");
    let second = standby.join().unwrap().expect("the standby starts");
    println!(
        "standby active {:?} after the writer's clean stop",
        took_over - stopped
    );
    assert!(
        took_over - stopped < Duration::from_secs(3),
        "a clean stop gives the lease up: no waiting for it to run out"
    );
    second.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_writer_whose_lease_another_took_stores_nothing_more() {
    use logic::sequencer::{Outcome, WriteOp};
    use logic::store::lease::Holder;
    use logic::store::{Backend, StoreError};
    let send = |id: &str| WriteOp::Send {
        from: 1,
        to: 2,
        client_msg_id: id.into(),
        content_type: 1,
        content: id.as_bytes().to_vec(),
        notify: false,
    };
    let database = format!("im_fenced_{}", std::process::id());
    let _cleanup = Database(database.clone());
    let url = format!("{}/{database}", testkit::mysql_url());
    let lease_ms = 300;

    let old = logic::store::mysql::MySql::open(std::slice::from_ref(&url)).unwrap();
    assert_eq!(old.lease(lease_ms).try_take().unwrap(), Holder::Us);
    let mut old_writer = old.writer().unwrap();
    let mut old_sequencer =
        logic::sequencer::Sequencer::new(old_writer.recover().unwrap(), 1, 1024);
    let sent = old_sequencer
        .apply(old_writer.as_mut(), &[&send("before")], 1)
        .expect("the writer writes while it holds the lease");
    assert_eq!(sent.outcomes.len(), 1);

    // The old writer stops renewing (frozen); its lease runs out and a
    // standby takes over.
    thread::sleep(Duration::from_millis(lease_ms + 200));
    let new = logic::store::mysql::MySql::open(std::slice::from_ref(&url)).unwrap();
    assert_eq!(new.lease(lease_ms).try_take().unwrap(), Holder::Us);

    // The old writer wakes. The takeover killed its connection (so that a
    // transaction it had open could not hold locks): its first batch fails
    // on that, and on a new connection the fence refuses it. Its renewal
    // is refused too.
    let first = old_sequencer.apply(old_writer.as_mut(), &[&send("after")], 2);
    assert!(
        matches!(
            first,
            Err(StoreError::Unavailable(_) | StoreError::Fenced(_))
        ),
        "{:?}",
        first.map(|a| a.outcomes)
    );
    let again = old_sequencer.apply(old_writer.as_mut(), &[&send("after")], 2);
    assert!(
        matches!(again, Err(StoreError::Fenced(_))),
        "{:?}",
        again.map(|a| a.outcomes)
    );
    assert!(matches!(
        old.lease(lease_ms).renew(),
        Err(StoreError::Fenced(_))
    ));

    // The new writer sees only what the old one committed under its lease.
    let mut new_writer = new.writer().unwrap();
    let recovered = new_writer.recover().unwrap();
    let mut new_sequencer = logic::sequencer::Sequencer::new(recovered, 1, 1024);
    let applied = new_sequencer
        .apply(new_writer.as_mut(), &[&send("after")], 3)
        .expect("the new writer writes");
    match &applied.outcomes[0] {
        Outcome::Sent { message, duplicate } => {
            assert_eq!(
                (message.seq, *duplicate),
                (2, false),
                "seq 2: the fenced batch left nothing"
            )
        }
        other => panic!("not a send: {other:?}"),
    }
}

fn login(node: &Node, uid: u64) -> Client {
    let mut client = Client::connect(node.local_addr()).unwrap();
    client.set_timeout(Duration::from_secs(10));
    let token = token::mint(SECRET.as_bytes(), uid, runtime::clock::unix_secs() + 600);
    client
        .login(uid, &token, "phone", pb::Platform::Mobile)
        .unwrap();
    client
}

/// (first column, second column) of every row of a query on one database.
fn pairs_in(database: &str, sql: &str) -> Vec<(u64, u64)> {
    let mut conn =
        mysql::Conn::new(format!("{}/{database}", testkit::mysql_url()).as_str()).unwrap();
    conn.query(sql).unwrap()
}

#[test]
fn two_shards_hold_each_row_where_the_map_says() {
    use logic::store::Pair;
    use logic::store::sharded::ShardMap;

    let base = format!("im_sharded_{}", std::process::id());
    let shards = [format!("{base}_0"), format!("{base}_1")];
    let _cleanup = (Database(shards[0].clone()), Database(shards[1].clone()));
    let dir = std::env::temp_dir().join(&base);
    // Shard 1 is reached through a proxy the test can cut.
    let proxy = Proxy::start();
    let urls = vec![
        format!("{}/{}", testkit::mysql_url(), shards[0]),
        format!(
            "mysql://root@{}/{}?prefer_socket=false",
            proxy.addr, shards[1]
        ),
    ];
    let node = Node::start(&config_for_shards(&urls, &dir)).expect("a two-shard node starts");
    let map = ShardMap { shards: 2 };

    let users: Vec<u64> = (1..=12).collect();
    let mut clients: Vec<Client> = users.iter().map(|uid| login(&node, *uid)).collect();
    for (n, from) in users.iter().enumerate() {
        for to in users.iter().filter(|to| *to != from).take(4) {
            let resp: pb::SendResp = clients[n]
                .call(pb::SendReq {
                    to_uid: *to,
                    client_msg_id: format!("{from}-{to}"),
                    content_type: 1,
                    content: b"hello".to_vec(),
                })
                .expect("send");
            assert!(resp.seq >= 1);
        }
        let _: pb::SetProfileResp = clients[n]
            .call(pb::SetProfileReq {
                nickname: format!("user {from}"),
                avatar_url: String::new(),
            })
            .expect("set_profile");
    }

    let (mut messages, mut rows, mut profiles) = (0, 0, 0);
    for (index, database) in shards.iter().enumerate() {
        for (small, big) in pairs_in(database, "SELECT small_uid, big_uid FROM messages") {
            assert_eq!(
                map.pair_shard(Pair::of(small, big)),
                index,
                "message of ({small}, {big})"
            );
            messages += 1;
        }
        for (owner, peer) in pairs_in(database, "SELECT uid_a, uid_b FROM conversations") {
            assert_eq!(map.user_shard(owner), index, "row ({owner}, {peer})");
            rows += 1;
        }
        for (uid, _) in pairs_in(database, "SELECT uid, updated_ms FROM profiles") {
            assert_eq!(map.user_shard(uid), index, "profile of {uid}");
            profiles += 1;
        }
    }
    assert_eq!((messages, profiles), (48, 12));
    assert!(rows >= 48, "two rows per pair: {rows}");
    for database in &shards {
        let held = pairs_in(database, "SELECT COUNT(*), 0 FROM messages")[0].0;
        assert!(held > 0, "both shards hold messages");
    }

    // With shard 1 down, a conversation that lives wholly on shard 0 (its
    // messages and the reader's row) still has its history: one shard.
    proxy.cut();
    let on_zero =
        |uid: u64, peer: u64| map.user_shard(uid) == 0 && map.pair_shard(Pair::of(uid, peer)) == 0;
    let (uid, peer) = users
        .iter()
        .flat_map(|u| users[..5].iter().map(move |p| (*u, *p)))
        .find(|(u, p)| u != p && on_zero(*u, *p))
        .expect("a conversation wholly on shard 0");
    let index = users.iter().position(|u| *u == uid).unwrap();
    let history: pb::HistoryResp = clients[index]
        .call(pb::HistoryReq {
            peer_uid: peer,
            after_seq: 0,
            before_seq: 0,
            limit: 50,
        })
        .expect("history from shard 0 while shard 1 is down");
    assert!(!history.messages.is_empty());
    // A conversation stored on shard 1 is unavailable meanwhile, not wrong.
    let (uid1, peer1) = users
        .iter()
        .flat_map(|u| users.iter().map(move |p| (*u, *p)))
        .find(|(u, p)| u != p && map.pair_shard(Pair::of(*u, *p)) == 1 && map.user_shard(*u) == 0)
        .expect("a conversation on shard 1");
    let index1 = users.iter().position(|u| *u == uid1).unwrap();
    let refused = clients[index1].call::<pb::HistoryReq>(pb::HistoryReq {
        peer_uid: peer1,
        after_seq: 0,
        before_seq: 0,
        limit: 50,
    });
    assert_eq!(
        refused.err().and_then(|e| e.code()),
        Some(ErrorCode::Unavailable)
    );
    proxy.restore();
    drop(clients);
    node.shutdown();

    // The shard list is part of the data: it cannot change under it.
    let three = [
        urls.clone(),
        vec![format!("{}/{base}_2", testkit::mysql_url())],
    ]
    .concat();
    let _cleanup_third = Database(format!("{base}_2"));
    let refused = Node::start(&config_for_shards(&three, &dir))
        .err()
        .expect("a third shard is refused");
    assert!(refused.to_string().contains("is shard 0 of 2"), "{refused}");
    let swapped = vec![urls[1].clone(), urls[0].clone()];
    let refused = Node::start(&config_for_shards(&swapped, &dir))
        .err()
        .expect("reordered shards are refused");
    assert!(
        refused.to_string().contains("makes it shard 0 of 2"),
        "{refused}"
    );
    let again = Node::start(&config_for_shards(&urls, &dir)).expect("the same list starts");
    again.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
