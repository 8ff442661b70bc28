//! The MySQL store under stress the contract suite does not apply:
//!
//! - The database goes away mid-run and comes back: sends fail with
//!   UNAVAILABLE while it is gone (never a SendResp for a message that was
//!   not stored), and succeed again after, on fresh connections, with seqs
//!   that have no gap. The outage is a TCP proxy in front of MariaDB that the
//!   test cuts and restores, so other tests on the same server are untouched.
//! - One writer per database: a second logic process on the same database
//!   refuses to start; other databases are unaffected.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use gateway::Config;
use gateway::node::Node;
use mysql::prelude::Queryable;
use parking_lot::Mutex;
use protocol::{Client, ErrorCode, pb, token};

const SECRET: &str = "outage-test-secret";
const MARIADB: &str = "127.0.0.1:3306";

/// Forwards connections to MariaDB while up; while down, refuses new ones
/// and has cut the open ones.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (up2, open2) = (up.clone(), open.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(MARIADB) else {
                    continue;
                };
                open2
                    .lock()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Proxy { addr, up, open }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for stream in self.open.lock().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// Drops the test's database however the test ends.
struct Database(String);

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(pool) = mysql::Pool::new(format!("mysql://root@{MARIADB}").as_str()) {
            if let Ok(mut conn) = pool.get_conn() {
                let _ = conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.0));
            }
        }
    }
}

fn send(client: &mut Client, id: &str) -> Result<pb::SendResp, protocol::ClientError> {
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
    let node = Node::start(&config).expect("node starts (is MariaDB up on 127.0.0.1:3306?)");

    let mut alice = Client::connect(node.local_addr()).unwrap();
    alice.set_timeout(Duration::from_secs(15));
    let token = token::mint(SECRET.as_bytes(), 1, logic::auth::unix_secs() + 600);
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
    let mut config = Config::default();
    config.gateway.listen = "127.0.0.1:0".into();
    config.admin.listen = String::new();
    config.auth.secret = SECRET.into();
    config.storage.data_dir = dir.display().to_string();
    config.storage.backend = "mysql".into();
    config.storage.mysql_urls = vec![url.to_owned()];
    config
}

fn node_on(database: &str, dir: &std::path::Path) -> Result<Node, gateway::node::NodeError> {
    Node::start(&config_for(
        &format!("mysql://root@{MARIADB}/{database}"),
        dir,
    ))
}

#[test]
fn a_second_logic_process_cannot_become_another_writer() {
    let database = format!("im_single_writer_{}", std::process::id());
    let _cleanup = Database(database.clone());
    let other = format!("im_other_writer_{}", std::process::id());
    let _cleanup_other = Database(other.clone());
    let dir = std::env::temp_dir().join(&database);

    let first = node_on(&database, &dir).expect("the first node starts");
    let refused = node_on(&database, &dir)
        .err()
        .expect("a second writer is refused");
    assert!(
        refused
            .to_string()
            .contains("another logic process is the writer"),
        "{refused}"
    );
    // The lock is per database: a node on another database starts.
    let elsewhere = node_on(&other, &dir).expect("another database has its own writer");
    elsewhere.shutdown();

    first.shutdown();
    let again = node_on(&database, &dir).expect("after the first stops, a new writer starts");
    again.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
