//! Redis beside MySQL: the caches hold what storage holds and follow every
//! write, profiles are replaced on update, presence entries follow logins
//! and expire when their node dies, and messaging carries on while Redis is
//! killed, with the caches rebuilt when it is back.
//!
//! Real MariaDB (a database per test) and real Redis: the test binary's
//! private server (`testkit`; a key prefix per test), or, for the test that
//! kills it, a `redis-server` of the test's own on a free port.

#[path = "contract/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use harness::*;
use logic::cache::keeper::PresenceEntry;
use logic::cache::{convs_key, online_key, profile_key, unread_key};
use protocol::pb;

fn redis(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("redis must be reachable for these tests")
}

fn node_with_redis(tweak: impl FnOnce(&mut server::Config)) -> TestNode {
    TestNode::with(Store::MySqlRedis, |config| {
        config.admin.listen = "127.0.0.1:0".into();
        config.api.listen = String::new();
        config.gateway.websocket.listen = String::new();
        tweak(config);
    })
}

fn hgetall(conn: &mut redis::Connection, key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL").arg(key).query(conn).expect("HGETALL")
}

fn zmembers(conn: &mut redis::Connection, key: &str) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(conn)
        .expect("ZRANGE")
}

fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn caches_are_built_from_storage_and_follow_every_write() {
    let node = node_with_redis(|_| {});
    let prefix = node.config.redis.key_prefix.clone();
    let mut conn = redis(&node.config.redis.url);
    let (mut alice, mut bob, mut carol) = (
        node.login(1, "phone"),
        node.login(2, "phone"),
        node.login(3, "phone"),
    );
    for n in 0..3 {
        send(&mut alice, 2, &format!("a{n}"), b"hi bob");
    }
    send(&mut carol, 2, "c0", b"hi from carol");

    // Bob's first list misses and asks the writer to build his entries.
    let first = conversations(&mut bob, 10, Vec::new());
    assert_eq!(first.total_unread, 4);
    let unread = unread_key(&prefix, 2);
    let built = eventually("bob's unread entry", || {
        let hash = hgetall(&mut conn, &unread);
        (!hash.is_empty()).then_some(hash)
    });
    assert_eq!(built, fields(&[("0", "0"), ("1", "3"), ("3", "1")]));
    let convs = convs_key(&prefix, 2);
    assert_eq!(zmembers(&mut conn, &convs), vec!["0", "1", "3"]);

    // Every write reaches the entries: a message counts up...
    send(&mut alice, 2, "a3", b"one more");
    let hash = eventually("the increment", || {
        let hash = hgetall(&mut conn, &unread);
        (hash.get("1").map(String::as_str) == Some("4")).then_some(hash)
    });
    assert_eq!(hash.get("3").map(String::as_str), Some("1"));
    // ...a partial read sets what is left, a full read clears the field...
    assert_eq!(read(&mut bob, 1, 2).unread, 2);
    eventually("the partial read", || {
        (hgetall(&mut conn, &unread).get("1").map(String::as_str) == Some("2")).then_some(())
    });
    read(&mut bob, 1, 4);
    eventually("the full read", || {
        (!hgetall(&mut conn, &unread).contains_key("1")).then_some(())
    });
    // ...and a deleted conversation leaves the list.
    bob.call(pb::DeleteConversationReq { peer_uid: 3 })
        .expect("delete");
    eventually("the delete", || {
        (zmembers(&mut conn, &convs) == vec!["0", "1"]).then_some(())
    });

    // Answers come from the entries while they exist: tamper with one and
    // the answer shows it (no real deployment writes these keys but us).
    let hits = node.metric("im_logic_cache_hits_total").unwrap_or(0);
    redis::cmd("HSET")
        .arg(&unread)
        .arg(1)
        .arg(40)
        .query::<()>(&mut conn)
        .unwrap();
    let list = conversations(&mut bob, 10, Vec::new());
    assert_eq!(list.total_unread, 40, "total unread read from the cache");
    let peers: Vec<u64> = list.conversations.iter().map(|c| c.peer_uid).collect();
    assert_eq!(peers, vec![1]);
    assert!(node.metric("im_logic_cache_hits_total").unwrap_or(0) > hits);

    // A lost entry is rebuilt from storage, which has the truth.
    redis::cmd("DEL")
        .arg(&unread)
        .query::<()>(&mut conn)
        .unwrap();
    assert_eq!(conversations(&mut bob, 10, Vec::new()).total_unread, 0);
    let rebuilt = eventually("the rebuild", || {
        let hash = hgetall(&mut conn, &unread);
        (!hash.is_empty()).then_some(hash)
    });
    assert_eq!(rebuilt, fields(&[("0", "0")]));
    // Counted just after the entry is written: the test may look in between.
    eventually("the rebuild counted", || {
        (node.metric("im_logic_cache_rebuilds_total").unwrap_or(0) >= 2).then_some(())
    });
}

/// Users 1 to `peers` each send `to` one message, in that order.
fn hello_from_peers(node: &TestNode, to: u64, peers: u64) {
    for peer in 1..=peers {
        let mut other = node.login(peer, "phone");
        send(&mut other, to, &format!("m{peer}"), b"hello");
    }
}

/// Every conversation's peer, paging through the list `page` at a time.
fn all_peers(client: &mut client::Client, page: u32) -> Vec<u64> {
    let mut cursor = Vec::new();
    let mut peers = Vec::new();
    loop {
        let resp = conversations(client, page, cursor);
        peers.extend(resp.conversations.iter().map(|c| c.peer_uid));
        if resp.next_cursor.is_empty() {
            return peers;
        }
        cursor = resp.next_cursor;
    }
}

#[test]
fn the_cached_list_pages_like_storage() {
    let node = node_with_redis(|_| {});
    let mut me = node.login(100, "phone");
    hello_from_peers(&node, 100, 12);
    let from_storage = conversations(&mut me, 5, Vec::new());
    let prefix = node.config.redis.key_prefix.clone();
    let mut conn = redis(&node.config.redis.url);
    eventually("the list entry", || {
        (zmembers(&mut conn, &convs_key(&prefix, 100)).len() == 13).then_some(())
    });
    // Page through from the cache: latest first, every peer once.
    let peers = all_peers(&mut me, 5);
    assert_eq!(peers, (1..=12).rev().collect::<Vec<u64>>());
    let first_page: Vec<u64> = from_storage
        .conversations
        .iter()
        .map(|c| c.peer_uid)
        .collect();
    assert_eq!(first_page, peers[..5]);
}

#[test]
fn a_list_longer_than_the_cache_holds_falls_back_to_storage() {
    let node = node_with_redis(|config| config.redis.cached_conversations = 4);
    let mut me = node.login(200, "phone");
    hello_from_peers(&node, 200, 10);
    conversations(&mut me, 3, Vec::new());
    let prefix = node.config.redis.key_prefix.clone();
    let mut conn = redis(&node.config.redis.url);
    // Four peers and the marker, scored with the oldest cached conversation.
    eventually("the capped list entry", || {
        (zmembers(&mut conn, &convs_key(&prefix, 200)).len() == 5).then_some(())
    });
    let peers = all_peers(&mut me, 3);
    assert_eq!(peers, (1..=10).rev().collect::<Vec<u64>>());
}

#[test]
fn profiles_are_cached_and_replaced_on_update() {
    let node = node_with_redis(|_| {});
    let mut alice = node.login(1, "phone");
    alice
        .call(pb::SetProfileReq {
            nickname: "alice".into(),
            avatar_url: "https://a/1.png".into(),
        })
        .expect("set_profile");
    let prefix = node.config.redis.key_prefix.clone();
    let mut conn = redis(&node.config.redis.url);
    let cached: Option<Vec<u8>> = redis::cmd("GET")
        .arg(profile_key(&prefix, 1))
        .query(&mut conn)
        .unwrap();
    let cached = cached.expect("written through on update");
    assert_eq!(
        <pb::Profile as prost::Message>::decode(cached.as_slice())
            .unwrap()
            .nickname,
        "alice"
    );

    // Reads are served from the cache: change the row behind its back...
    {
        use mysql::prelude::Queryable;
        let url = node.config.storage.mysql_urls[0].clone();
        let mut db = mysql::Conn::new(url.as_str()).expect("mysql");
        db.query_drop("UPDATE profiles SET nickname = 'changed behind the cache' WHERE uid = 1")
            .unwrap();
    }
    let got: pb::ProfileResp = alice.call(pb::ProfileReq { uids: vec![1, 9] }).unwrap();
    assert_eq!(got.profiles[0].nickname, "alice");
    assert_eq!(
        got.profiles[1].nickname, "",
        "unknown uid: an empty profile"
    );
    // ...and an update replaces the cached copy at once.
    alice
        .call(pb::SetProfileReq {
            nickname: "alice 2".into(),
            avatar_url: String::new(),
        })
        .expect("set_profile");
    let got: pb::ProfileResp = alice.call(pb::ProfileReq { uids: vec![1] }).unwrap();
    assert_eq!(got.profiles[0].nickname, "alice 2");
}

#[test]
fn presence_entries_follow_logins_and_logouts() {
    let node = node_with_redis(|_| {});
    let prefix = node.config.redis.key_prefix.clone();
    let mut conn = redis(&node.config.redis.url);
    let key = online_key(&prefix, 7);
    let phone = node.login(7, "phone");
    let _pc = node.login(7, "pc");
    let entries = eventually("two presence entries", || {
        let hash = hgetall(&mut conn, &key);
        (hash.len() == 2).then_some(hash)
    });
    let entry: PresenceEntry = serde_json::from_str(&entries["phone"]).expect("a JSON entry");
    assert_eq!(entry.gateway, node.addr().to_string());
    assert!(entry.gateway_epoch_ms > 0, "{entry:?}");
    assert_eq!(entry.platform, pb::Platform::Mobile as i32);
    assert!(entry.expires_ms > entry.login_ms);
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut conn).unwrap();
    assert!(
        ttl > 0 && ttl <= 90,
        "the key expires unless refreshed: {ttl}"
    );
    drop(phone);
    eventually("the phone's entry removed", || {
        let hash = hgetall(&mut conn, &key);
        (hash.len() == 1 && hash.contains_key("pc")).then_some(())
    });
}

/// A directory for one test's `im-server` process on Redis, and the config
/// file in it (no admin, API or WebSocket port; keys under `prefix`).
fn redis_node_dir(
    name: &str,
    prefix: &str,
    extra: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("im-redis-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("test.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"\"\n[api]\nlisten = \"\"\n[gateway.websocket]\nlisten = \"\"\n[redis]\nkey_prefix = \"{prefix}\"\n{extra}"
        ),
    )
    .unwrap();
    (dir, config)
}

/// Starts `im-server` on `config` and Redis, its log in `log`; waits for its port.
fn spawn_on_redis(
    config: &std::path::Path,
    dir: &std::path::Path,
    port: u16,
    log: &std::path::Path,
) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_im-server"));
    command
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("IM_AUTH_SECRET", SECRET)
        .env("IM_REDIS_URL", redis_url())
        .env("RUST_LOG", "info");
    let server = spawn_logged(command, "", log);
    wait_for_port(port, "the server");
    server
}

/// A child process that is killed however the test ends.
#[test]
fn presence_of_a_killed_node_expires() {
    let prefix = format!("im-presence-test-{}:", std::process::id());
    let (dir, config) = redis_node_dir("presence", &prefix, "presence_ttl_secs = 2\n");
    let port = free_port();
    let mut server = spawn_on_redis(&config, &dir, port, &dir.join("server.log"));
    let mut client = client::Client::connect(("127.0.0.1", port)).unwrap();
    client.set_timeout(WAIT);
    client
        .login(8, &valid_token(8), "phone", pb::Platform::Mobile)
        .unwrap();
    let mut conn = redis(&redis_url());
    let key = online_key(&prefix, 8);
    eventually("the entry", || {
        (hgetall(&mut conn, &key).len() == 1).then_some(())
    });
    // Refreshed while the node lives: still there after two TTLs.
    thread::sleep(Duration::from_secs(4));
    assert_eq!(
        hgetall(&mut conn, &key).len(),
        1,
        "refreshed by the live node"
    );
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let gone = Instant::now();
    eventually("the dead node's entry to expire", || {
        hgetall(&mut conn, &key).is_empty().then_some(())
    });
    assert!(gone.elapsed() < Duration::from_secs(4));
    drop(client);
    delete_redis_keys(&redis_url(), &prefix);
    let _ = std::fs::remove_dir_all(&dir);
}

fn start_redis(port: u16) -> Process {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed for this test");
    let process = Process(child);
    wait_for_port(port, "redis-server");
    process
}

#[test]
fn messaging_carries_on_while_redis_is_killed_and_caches_rebuild_after() {
    let redis_port = free_port();
    let url = format!("redis://127.0.0.1:{redis_port}");
    let mut redis_server = start_redis(redis_port);
    let node = node_with_redis(|config| {
        config.redis.url = url.clone();
        config.redis.breaker_open_ms = 200;
    });
    let prefix = node.config.redis.key_prefix.clone();
    assert_eq!(node.metric("im_logic_redis_up"), Some(1));
    let mut alice = node.login(1, "phone");
    let mut bob = node.login(2, "phone");
    send(&mut alice, 2, "before-0", b"x");
    conversations(&mut bob, 10, Vec::new());
    {
        let mut conn = redis(&url);
        eventually("bob's entry", || {
            (hgetall(&mut conn, &unread_key(&prefix, 2)).get("1") == Some(&"1".into()))
                .then_some(())
        });
    }

    // Kill Redis: every send still succeeds and reads answer from MySQL.
    redis_server.0.kill().unwrap();
    redis_server.0.wait().unwrap();
    let started = Instant::now();
    for n in 0..50 {
        let resp = send(&mut alice, 2, &format!("during-{n}"), b"x");
        assert_eq!(resp.seq, n + 2);
    }
    let list = conversations(&mut bob, 10, Vec::new());
    assert_eq!(list.total_unread, 51);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the breaker spares each request the Redis timeout"
    );
    assert_eq!(node.metric("im_logic_redis_up"), Some(0));
    assert!(
        node.metric("im_logic_redis_breaker_trips_total")
            .unwrap_or(0)
            >= 1
    );

    // Redis back (empty, like a restart without persistence): the keeper
    // finds it, and the entries rebuild from MySQL on the next read.
    let _redis_server = start_redis(redis_port);
    eventually("redis in use again", || {
        (node.metric("im_logic_redis_up") == Some(1)).then_some(())
    });
    send(&mut alice, 2, "after-0", b"x");
    assert_eq!(conversations(&mut bob, 10, Vec::new()).total_unread, 52);
    let mut conn = redis(&url);
    let rebuilt = eventually("bob's entry rebuilt", || {
        let hash = hgetall(&mut conn, &unread_key(&prefix, 2));
        (!hash.is_empty()).then_some(hash)
    });
    assert_eq!(rebuilt, fields(&[("0", "0"), ("1", "52")]));
    assert_eq!(conversations(&mut bob, 10, Vec::new()).total_unread, 52);
    // Presence came back too: the keeper rewrote this node's devices.
    let online = hgetall(&mut conn, &online_key(&prefix, 2));
    assert!(online.contains_key("phone"), "{online:?}");
}

#[test]
fn heavy_login_churn_never_opens_the_breaker_while_redis_is_healthy() {
    let node = node_with_redis(|_| {});
    let prefix = node.config.redis.key_prefix.clone();
    let mut conn = redis(&node.config.redis.url);
    // 30 users, 10 rounds: each round every user logs in on two devices
    // and out on one, the rest stay for the next round to replace.
    let mut kept = Vec::new();
    for round in 0..10 {
        let mut clients = Vec::new();
        for uid in 900..930u64 {
            clients.push(node.login(uid, "phone"));
            clients.push(node.login(uid, &format!("tab-{round}")));
        }
        // Every other client goes at once.
        kept.clear();
        for (i, client) in clients.into_iter().enumerate() {
            if i % 2 == 0 {
                kept.push(client);
            }
        }
    }
    eventually("each user's phone entry, the tabs gone", || {
        (900..930u64)
            .all(|uid| {
                let hash = hgetall(&mut conn, &online_key(&prefix, uid));
                hash.len() == 1 && hash.contains_key("phone")
            })
            .then_some(())
    });
    assert_eq!(node.metric("im_logic_redis_errors_total"), Some(0));
    assert_eq!(node.metric("im_logic_redis_breaker_trips_total"), Some(0));
    assert_eq!(node.metric("im_logic_redis_up"), Some(1));
}

#[test]
fn a_clean_stop_removes_the_nodes_entries_and_logs_no_redis_failure() {
    let prefix = format!("im-stop-test-{}:", std::process::id());
    let (dir, config) = redis_node_dir("stop", &prefix, "");
    let mut conn = redis(&redis_url());
    // Twice: once stopping with users online, once with nobody left (an
    // empty removal, which Redis would refuse were it sent).
    for (run, online_at_stop) in [(1, true), (2, false)] {
        let port = free_port();
        let log = dir.join(format!("server-{run}.log"));
        let mut server = spawn_on_redis(&config, &dir, port, &log);
        let login = |uid: u64, device: &str| {
            let mut client = client::Client::connect(("127.0.0.1", port)).unwrap();
            client.set_timeout(WAIT);
            client
                .login(uid, &valid_token(uid), device, pb::Platform::Mobile)
                .unwrap();
            client
        };
        let (phone, pc, other) = (login(21, "phone"), login(21, "pc"), login(22, "phone"));
        eventually("the entries", || {
            (hgetall(&mut conn, &online_key(&prefix, 21)).len() == 2
                && hgetall(&mut conn, &online_key(&prefix, 22)).len() == 1)
                .then_some(())
        });
        drop(other);
        if !online_at_stop {
            drop((phone, pc));
            eventually("everyone offline", || {
                hgetall(&mut conn, &online_key(&prefix, 21))
                    .is_empty()
                    .then_some(())
            });
        }
        // SIGTERM: a clean stop.
        let pid = server.0.id() as i32;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = server.0.wait().unwrap();
        assert!(status.success(), "{status}");
        let printed = std::fs::read_to_string(&log).unwrap();
        assert!(printed.contains("node stopped"), "{printed}");
        assert!(
            !printed.contains("redis failed"),
            "run {run}: a Redis failure logged at a clean stop:\n{printed}"
        );
        for uid in [21, 22] {
            assert!(
                hgetall(&mut conn, &online_key(&prefix, uid)).is_empty(),
                "run {run}: uid {uid}'s entries outlived the node"
            );
        }
    }
    delete_redis_keys(&redis_url(), &prefix);
    let _ = std::fs::remove_dir_all(&dir);
}
