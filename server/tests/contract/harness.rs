//! A whole node on port 0 with its own data dir, and helpers that speak the
//! contract through the real client.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use client::Client;
use protocol::{Body, ErrorCode, Frame, pb, token};
use server::Node;
use server::{Config, GatewayNode, LogicNode};

pub const SECRET: &str = "contract-test-secret";
pub const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// Which storage backend a test node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    MySql,
    /// MySQL with Redis beside it, on a key prefix of the test's own.
    MySqlRedis,
    /// Two MySQL databases as two shards.
    MySqlSharded,
    /// The embedded store behind one logic node with two gateways, over
    /// the TCP link; clients spread over the gateways.
    Split,
    /// The embedded store, every other client over TLS (the server's
    /// self-signed certificate, pinned).
    Tls,
}

/// What a test node runs: one process's worth of tiers, joined in process
/// or over the link.
enum Running {
    One(Node),
    Split {
        logic: LogicNode,
        gateways: Vec<GatewayNode>,
    },
}

impl Running {
    fn start(config: &Config, split: bool) -> Result<Running, server::NodeError> {
        if !split {
            return Node::start(config).map(Running::One);
        }
        let logic = LogicNode::start(config)?;
        let mut gateway_config = config.clone();
        gateway_config.link.logic = vec![logic.link_addr().to_string()];
        let gateways = (0..2)
            .map(|_| GatewayNode::start(&gateway_config))
            .collect::<Result<Vec<_>, _>>()?;
        let deadline = std::time::Instant::now() + WAIT;
        while !gateways.iter().all(GatewayNode::linked) {
            assert!(
                std::time::Instant::now() < deadline,
                "gateways did not link"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Running::Split { logic, gateways })
    }

    fn addrs(&self) -> Vec<std::net::SocketAddr> {
        match self {
            Running::One(node) => vec![node.local_addr()],
            Running::Split { gateways, .. } => {
                gateways.iter().map(GatewayNode::local_addr).collect()
            }
        }
    }

    fn tls_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Running::One(node) => node.tls_addr(),
            Running::Split { .. } => None,
        }
    }

    fn ws_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Running::One(node) => node.ws_addr(),
            Running::Split { .. } => None,
        }
    }

    fn reload_tls(&self) {
        if let Running::One(node) = self {
            node.reload_tls();
        }
    }

    fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Running::One(node) => node.admin_addr(),
            Running::Split { logic, .. } => logic.admin_addr(),
        }
    }

    fn shutdown(self) {
        match self {
            Running::One(node) => node.shutdown(),
            Running::Split { logic, gateways } => {
                for gateway in gateways {
                    gateway.shutdown();
                }
                logic.shutdown();
            }
        }
    }
}

/// The MariaDB/MySQL server tests use (a private one, see `testkit`); each
/// test creates its own database.
pub fn mysql_server_url() -> String {
    testkit::mysql_url()
}

/// The Redis server tests use (a private one, see `testkit`); each test
/// writes under a key prefix of its own.
pub fn redis_url() -> String {
    testkit::redis_url()
}

pub struct TestNode {
    node: Option<Running>,
    split: bool,
    /// Which gateway the next client connects to.
    next: AtomicU64,
    pub config: Config,
    pub dir: PathBuf,
    /// The test's own MySQL databases, dropped with the node.
    databases: Vec<String>,
}

/// A config for tests: loopback, port 0, no admin port, a fresh data dir.
pub fn test_config() -> (Config, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "im-contract-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::default();
    config.gateway.listen = "127.0.0.1:0".into();
    config.gateway.workers = 2;
    config.admin.listen = String::new();
    config.api.listen = String::new();
    config.gateway.websocket.listen = String::new();
    config.auth.secret = SECRET.into();
    config.storage.data_dir = dir.display().to_string();
    (config, dir)
}

impl TestNode {
    pub fn with(store: Store, tweak: impl FnOnce(&mut Config)) -> TestNode {
        let _ = env_logger::builder().is_test(true).try_init();
        let (mut config, dir) = test_config();
        let name = dir.file_name().unwrap().to_string_lossy().replace('-', "_");
        let databases: Vec<String> = match store {
            Store::Sqlite | Store::Split | Store::Tls => Vec::new(),
            Store::MySql | Store::MySqlRedis => vec![name],
            Store::MySqlSharded => vec![format!("{name}_s0"), format!("{name}_s1")],
        };
        if !databases.is_empty() {
            config.storage.backend = logic::config::BackendKind::Mysql;
            config.storage.mysql_urls = databases
                .iter()
                .map(|db| format!("{}/{db}", mysql_server_url()))
                .collect();
        }
        if store == Store::MySqlRedis {
            config.redis.url = redis_url();
            config.redis.key_prefix = format!("{}:", dir.file_name().unwrap().to_string_lossy());
        }
        if store == Store::Tls {
            config.gateway.tls.listen = "127.0.0.1:0".into();
        }
        let split = store == Store::Split;
        if split {
            config.link.listen = "127.0.0.1:0".into();
            config.link.secret = "contract-link-secret".into();
        }
        tweak(&mut config);
        let node = match Running::start(&config, split) {
            Ok(node) => node,
            Err(e) => {
                drop_databases(&databases);
                panic!("node did not start: {e}");
            }
        };
        TestNode {
            node: Some(node),
            split,
            next: AtomicU64::new(0),
            config,
            dir,
            databases,
        }
    }

    /// Where clients connect (the first gateway, when split).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.node.as_ref().expect("running").addrs()[0]
    }

    /// Where TLS clients connect (`gateway.tls.listen` set).
    pub fn tls_addr(&self) -> std::net::SocketAddr {
        self.node
            .as_ref()
            .expect("running")
            .tls_addr()
            .expect("a TLS listener")
    }

    /// Where WebSocket clients connect (`gateway.websocket.listen` set).
    pub fn ws_addr(&self) -> std::net::SocketAddr {
        self.node
            .as_ref()
            .expect("running")
            .ws_addr()
            .expect("a WebSocket listener")
    }

    /// SIGHUP's work: the TLS certificate read again.
    pub fn reload_tls(&self) {
        self.node.as_ref().expect("running").reload_tls();
    }

    /// A client of the next gateway in turn (with a TLS listener, every
    /// other client over TLS).
    pub fn connect(&self) -> Client {
        let node = self.node.as_ref().expect("running");
        let addrs = node.addrs();
        let n = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        let mut client = match node.tls_addr() {
            Some(tls) if n % 2 == 1 => {
                let pem =
                    std::fs::read(self.dir.join("tls/self-signed.crt")).expect("the certificate");
                let config = client::tls_config(&pem).expect("a TLS client config");
                Client::connect_tls(tls, "localhost", config).expect("connect over TLS")
            }
            _ => Client::connect(addrs[n % addrs.len()]).expect("connect"),
        };
        client.set_timeout(WAIT);
        client
    }

    /// A logged-in client of `uid` on `device`.
    pub fn login(&self, uid: u64, device: &str) -> Client {
        let mut client = self.connect();
        client
            .login(uid, &valid_token(uid), device, pb::Platform::Mobile)
            .expect("login");
        client
    }

    /// Graceful stop and a new node on the same data dir and port-0 config.
    pub fn restart(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown();
        }
        self.node = Some(Running::start(&self.config, self.split).expect("node restarts"));
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        drop_databases(&self.databases);
        if self.config.redis.enabled() {
            delete_redis_keys(&self.config.redis.url, &self.config.redis.key_prefix);
        }
    }
}

impl TestNode {
    /// The admin page's value of one metric (the node must have an admin port).
    pub fn metric(&self, name: &str) -> Option<i64> {
        let admin = self.node.as_ref()?.admin_addr()?;
        let page = http_get(admin, "/metrics");
        page.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}

/// The body (and head) of a plain HTTP GET, as the admin port answers it.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("admin port");
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").expect("request");
    let mut page = String::new();
    stream.read_to_string(&mut page).expect("response");
    page
}

#[allow(unused_imports)]
pub use testkit::free_port;

/// Deletes every key under `prefix`.
pub fn delete_redis_keys(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut conn)
        .unwrap_or_default();
    if !keys.is_empty() {
        let _ = redis::cmd("DEL").arg(keys).query::<()>(&mut conn);
    }
}

/// A client of the server on the loopback `port`, logged in as `uid` with
/// a token of [`SECRET`].
pub fn login_to(port: u16, uid: u64) -> Client {
    let mut client = Client::connect(("127.0.0.1", port)).expect("connect");
    client.set_timeout(WAIT);
    client
        .login(uid, &valid_token(uid), "phone", pb::Platform::Mobile)
        .expect("login");
    client
}

pub fn valid_token(uid: u64) -> String {
    token::mint(SECRET.as_bytes(), uid, runtime::clock::unix_secs() + 3600)
}

pub fn send(client: &mut Client, to_uid: u64, client_msg_id: &str, content: &[u8]) -> pb::SendResp {
    try_send(client, to_uid, client_msg_id, content).expect("send_resp")
}

pub fn try_send(
    client: &mut Client,
    to_uid: u64,
    client_msg_id: &str,
    content: &[u8],
) -> Result<pb::SendResp, client::ClientError> {
    client.call(pb::SendReq {
        to_uid,
        client_msg_id: client_msg_id.into(),
        content_type: 1,
        content: content.to_vec(),
    })
}

pub fn expect_code<T: std::fmt::Debug>(result: Result<T, client::ClientError>, code: ErrorCode) {
    match result {
        Err(e) => assert_eq!(e.code(), Some(code), "{e}"),
        Ok(v) => panic!("expected {code:?}, got {v:?}"),
    }
}

/// The next server-initiated frame, which must exist.
pub fn next_event(client: &mut Client) -> Frame {
    client
        .next_event(WAIT)
        .expect("read")
        .expect("a server-initiated frame")
}

/// The next event must be a push; it is acked.
pub fn expect_push(client: &mut Client) -> pb::Message {
    let frame = next_event(client);
    let Some(Body::Push(push)) = frame.body else {
        panic!("expected a push, got {frame:?}");
    };
    let message = push.message.expect("push carries a message");
    ack(client, message.msg_id);
    message
}

pub fn ack(client: &mut Client, msg_id: u64) {
    client
        .send_frame(&Frame {
            req_id: 0,
            body: Some(pb::PushAck { msg_id }.into()),
        })
        .expect("push_ack");
}

pub fn expect_read_notice(client: &mut Client) -> pb::ReadNotice {
    let frame = next_event(client);
    match frame.body {
        Some(Body::ReadNotice(notice)) => notice,
        other => panic!("expected a read notice, got {other:?}"),
    }
}

/// Nothing server-initiated arrives for a while.
pub fn expect_quiet(client: &mut Client) {
    if let Some(frame) = client.next_event(QUIET).expect("read") {
        panic!("expected nothing, got {frame:?}");
    }
}

pub fn history(
    client: &mut Client,
    peer_uid: u64,
    after_seq: u64,
    before_seq: u64,
    limit: u32,
) -> pb::HistoryResp {
    client
        .call(pb::HistoryReq {
            peer_uid,
            after_seq,
            before_seq,
            limit,
        })
        .expect("history_resp")
}

/// A whole conversation with `peer_uid`, newest page first and then the
/// pages before it, returned in seq order.
pub fn whole_history(client: &mut Client, peer_uid: u64) -> Vec<pb::Message> {
    let mut all = Vec::new();
    let mut before_seq = 0;
    loop {
        let page = history(client, peer_uid, 0, before_seq, 200);
        let more = page.more;
        let first = page.messages.first().map(|m| m.seq);
        all.extend(page.messages);
        match first {
            Some(first) if more => before_seq = first,
            _ => break,
        }
    }
    all.sort_by_key(|m| m.seq);
    all
}

pub fn seqs(messages: &[pb::Message]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

pub fn sync(client: &mut Client, cursor: u64, limit: u32) -> pb::SyncResp {
    client
        .call(pb::SyncReq { cursor, limit })
        .expect("sync_resp")
}

pub fn conversations(client: &mut Client, limit: u32, cursor: Vec<u8>) -> pb::ConversationsResp {
    client
        .call(pb::ConversationsReq { limit, cursor })
        .expect("conversations_resp")
}

pub fn read(client: &mut Client, peer_uid: u64, seq: u64) -> pb::ReadResp {
    client
        .call(pb::ReadReq { peer_uid, seq })
        .expect("read_resp")
}

pub fn drop_databases(databases: &[String]) {
    use mysql::prelude::Queryable;
    if databases.is_empty() {
        return;
    }
    if let Ok(mut conn) = mysql::Conn::new(mysql_server_url().as_str()) {
        for database in databases {
            let _ = conn.query_drop(format!("DROP DATABASE IF EXISTS `{database}`"));
        }
    }
}

/// Polls `probe` until it returns `Some`, for up to 10 s.
pub fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process, killed (SIGKILL) when dropped.
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` (an im binary) with this link secret, its log in `log`.
pub fn spawn_logged(
    mut command: std::process::Command,
    secret: &str,
    log: &std::path::Path,
) -> Process {
    let child = command
        .env("IM_LINK_SECRET", secret)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("a log file"))
        .spawn()
        .expect("spawn an im binary");
    Process(child)
}

/// A real `im-server` process, to be killed for real; killed when dropped
/// whatever happened to the test.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub port: u16,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the `im-server` binary on `dir` and the loopback `port`: no
/// admin, API or WebSocket port (tests run side by side), the rate limits
/// out of the way (so that thousands of sends are in flight when it dies),
/// tokens of [`SECRET`], `extra` appended to its config file and `env`
/// set; its log goes to `<dir>/<log>`.
pub fn spawn_server(
    dir: &std::path::Path,
    port: u16,
    log: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> ServerProcess {
    let config = dir.join("test.toml");
    std::fs::create_dir_all(dir).unwrap();
    let toml = format!(
        "[admin]\nlisten = \"\"\n[api]\nlisten = \"\"\n[gateway.websocket]\nlisten = \"\"\n\
         [gateway]\ninbound_frames_per_sec = 1000000\ninbound_burst = 1000000\n\
         [logic]\nmessages_per_sec = 1000000\nmessage_burst = 1000000\n{extra}"
    );
    std::fs::write(&config, toml).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_im-server"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("IM_AUTH_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).expect("log file"))
        .spawn()
        .expect("spawn im-server");
    let mut server = ServerProcess { child, port };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "im-server exited at start ({status}); see {}",
                dir.join(log).display()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "im-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// Waits until something accepts connections on the loopback `port`.
pub fn wait_for_port(port: u16, what: &str) {
    eventually(what, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
}

/// The test MariaDB's `host:port`.
pub fn mariadb() -> String {
    testkit::host_port(&testkit::mysql_url()).to_owned()
}

/// A TCP proxy in front of MariaDB that a test can cut: while down it
/// refuses new connections and has cut the open ones. (A URL through it
/// needs `prefer_socket=false`, or the client switches a local server to
/// its Unix socket, around the proxy.)
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<parking_lot::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn start() -> Proxy {
        Proxy::on(
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            mariadb(),
        )
    }

    /// A proxy taking connections on `listener` to `target` (`host:port`).
    /// The listener may live in another network namespace than the
    /// caller's: its accepted connections do, while the proxy reaches the
    /// target from the caller's.
    pub fn on(listener: std::net::TcpListener, target: String) -> Proxy {
        use std::net::{Shutdown, TcpStream};
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    let _ = client.shutdown(Shutdown::Both);
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

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for stream in self.open.lock().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn pipe(mut from: std::net::TcpStream, mut to: std::net::TcpStream) {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}
