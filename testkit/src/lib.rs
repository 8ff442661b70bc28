//! Private database servers for tests, so that the test command passes on
//! a machine where nothing listens on MariaDB's or Redis's standard ports
//! (and never touches a server that does).
//!
//! [`mysql_url`] and [`redis_url`] start one server each, once per test
//! binary, on a free loopback port with a data dir of its own, and return
//! its URL. `IM_TEST_MYSQL_URL` / `IM_TEST_REDIS_URL` point them at an
//! existing server instead. When the binaries are missing the test fails
//! with one line saying what to install.
//!
//! Each server runs under a small shell supervisor that watches the test
//! process: once it has exited, the supervisor stops the server and removes
//! its data dir. (The test harness runs no destructors at exit, and a
//! parent-death signal follows the thread that spawned, not the process.)

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a private server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The MariaDB (or MySQL) server tests use, as `mysql://root@host:port`;
/// each test creates databases of its own on it.
pub fn mysql_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    once(&URL, "IM_TEST_MYSQL_URL", start_mariadb)
}

/// The Redis server tests use, as `redis://host:port`; each test writes
/// under a key prefix of its own.
pub fn redis_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    once(&URL, "IM_TEST_REDIS_URL", start_redis)
}

/// The URL in `env`, else the one `start` gives, started once per process.
fn once(url: &OnceLock<String>, env: &str, start: fn() -> String) -> String {
    url.get_or_init(|| match std::env::var(env) {
        Ok(url) if !url.is_empty() => url,
        _ => start(),
    })
    .clone()
}

/// `host:port` of a `mysql://` or `redis://` URL.
pub fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The path of an installed program, looked up in PATH and the sbin
/// directories (Debian puts `mariadbd` in /usr/sbin, outside a user's PATH).
pub fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"]);
    for dir in dirs {
        for name in names {
            let candidate = Path::new(dir).join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The first of `names` on the PATH; else a panic saying what to install
/// (or, when `env` names one, which variable points at a running server).
fn require(names: &[&str], package: &str, env: &str) -> PathBuf {
    find_program(names).unwrap_or_else(|| {
        let or = match env {
            "" => String::new(),
            env => format!(" or set {env} to a running server"),
        };
        panic!(
            "{} not found: install it (Debian: apt-get install {package}){or}",
            names[0]
        )
    })
}

fn start_mariadb() -> String {
    let dir = private_dir("mariadb");
    let port = free_port();
    supervise(&dir, &mariadb_command(&dir, port));
    wait_for(port, &dir.join("error.log"), "mariadbd");
    format!("mysql://root@127.0.0.1:{port}")
}

/// Initializes a MariaDB data dir under `dir` and returns the command line
/// of a server on it, listening on the loopback `port`.
fn mariadb_command(dir: &Path, port: u16) -> Vec<String> {
    let install = require(
        &["mariadb-install-db", "mysql_install_db"],
        "mariadb-server",
        "IM_TEST_MYSQL_URL",
    );
    let server = require(
        &["mariadbd", "mysqld"],
        "mariadb-server",
        "IM_TEST_MYSQL_URL",
    );
    let data = dir.join("data");
    // As root it must be told to make the files for root.
    install_db(&install, &data, is_root().then_some("root"));
    let mut run = vec![
        server.display().to_string(),
        "--no-defaults".into(),
        format!("--datadir={}", data.display()),
        format!("--socket={}", dir.join("mysqld.sock").display()),
        format!("--pid-file={}", dir.join("mysqld.pid").display()),
        format!("--log-error={}", dir.join("error.log").display()),
        format!("--port={port}"),
        "--bind-address=127.0.0.1".into(),
        "--skip-log-bin".into(),
        "--innodb-buffer-pool-size=64M".into(),
        "--max-connections=1000".into(),
    ];
    if is_root() {
        run.push("--user=root".into());
    }
    run
}

/// A MariaDB of one test's own that the test can kill (`kill -9`) and
/// start again on the same data, for crash tests of the database itself.
/// Always a private server (never `IM_TEST_MYSQL_URL`'s); stopped and
/// removed when dropped.
pub struct KillableMariaDb {
    dir: PathBuf,
    port: u16,
    command: Vec<String>,
    child: Option<Child>,
}

impl KillableMariaDb {
    pub fn start(name: &str) -> KillableMariaDb {
        let dir = private_dir(&format!("mariadb-{name}"));
        let port = free_port();
        let command = mariadb_command(&dir, port);
        let mut db = KillableMariaDb {
            dir,
            port,
            command,
            child: None,
        };
        db.up();
        db
    }

    /// `mysql://root@127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// Starts the server (after a kill: InnoDB recovers from its log).
    pub fn up(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stdout.log"))
            .expect("a log file");
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
        wait_for(self.port, &self.dir.join("error.log"), "mariadbd");
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for KillableMariaDb {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A three-node MariaDB Galera cluster of one test's own (Debian's
/// `galera-4`), on free loopback ports with small buffer pools: node 0
/// bootstraps it, nodes 1 and 2 join by rsync state transfer. Nodes can be
/// killed (`kill -9`) and started again (they rejoin, by incremental state
/// transfer). Needs root: the servers run as the `mysql` user, which
/// rsync's state transfer requires of the data dirs. Stopped and removed
/// when dropped.
pub struct Galera {
    dir: PathBuf,
    nodes: Vec<GaleraNode>,
}

struct GaleraNode {
    dir: PathBuf,
    port: u16,
    command: Vec<String>,
    child: Option<Child>,
}

impl Galera {
    pub fn start(name: &str) -> Galera {
        assert!(is_root(), "a Galera cluster test runs as root");
        let server = require(&["mariadbd", "mysqld"], "mariadb-server", "");
        let provider = [
            "/usr/lib/galera/libgalera_smm.so",
            "/usr/lib/libgalera_smm.so",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("the Galera provider: apt-get install galera-4");
        require(&["rsync"], "rsync", "");
        let dir = private_dir(&format!("galera-{name}"));
        let ports: Vec<[u16; 4]> = (0..3)
            .map(|_| [free_port(), free_port(), free_port(), free_port()])
            .collect();
        let members = ports
            .iter()
            .map(|[_, gcomm, _, _]| format!("127.0.0.1:{gcomm}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes: Vec<GaleraNode> = ports
            .iter()
            .enumerate()
            .map(|(n, [port, gcomm, sst, ist])| {
                let node_dir = dir.join(format!("n{n}"));
                std::fs::create_dir_all(node_dir.join("data")).expect("a node dir");
                let command = vec![
                    server.display().to_string(),
                    "--no-defaults".into(),
                    "--user=mysql".into(),
                    format!("--datadir={}", node_dir.join("data").display()),
                    format!("--socket={}", node_dir.join("sock").display()),
                    format!("--pid-file={}", node_dir.join("pid").display()),
                    format!("--log-error={}", node_dir.join("error.log").display()),
                    format!("--port={port}"),
                    "--bind-address=127.0.0.1".into(),
                    "--innodb-buffer-pool-size=32M".into(),
                    "--max-connections=500".into(),
                    "--binlog-format=ROW".into(),
                    "--default-storage-engine=InnoDB".into(),
                    "--innodb-autoinc-lock-mode=2".into(),
                    "--wsrep-on=ON".into(),
                    format!("--wsrep-provider={provider}"),
                    "--wsrep-cluster-name=im-test".into(),
                    format!("--wsrep-cluster-address=gcomm://{members}"),
                    format!("--wsrep-node-address=127.0.0.1:{gcomm}"),
                    format!("--wsrep-node-name=n{n}"),
                    // Small timeouts: a killed node leaves the group in
                    // about two seconds, not the default's five to fifteen.
                    format!(
                        "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{gcomm};ist.recv_addr=127.0.0.1:{ist};gcache.size=64M;evs.keepalive_period=PT0.5S;evs.suspect_timeout=PT2S;evs.inactive_timeout=PT3S;evs.install_timeout=PT3S"
                    ),
                    "--wsrep-sst-method=rsync".into(),
                    format!("--wsrep-sst-receive-address=127.0.0.1:{sst}"),
                ];
                GaleraNode {
                    dir: node_dir,
                    port: *port,
                    command,
                    child: None,
                }
            })
            .collect();
        let install = require(
            &["mariadb-install-db", "mysql_install_db"],
            "mariadb-server",
            "",
        );
        install_db(&install, &nodes[0].dir.join("data"), Some("mysql"));
        let chown = Command::new("chown")
            .args(["-R", "mysql:mysql"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(chown.success(), "chown the Galera data dirs to mysql");
        let mut galera = Galera { dir, nodes };
        galera.launch(0, &["--wsrep-new-cluster"]);
        galera.up(1);
        galera.up(2);
        galera
    }

    /// `mysql://root@127.0.0.1:<port>` of node `n`.
    pub fn url(&self, n: usize) -> String {
        format!("mysql://root@127.0.0.1:{}", self.nodes[n].port)
    }

    /// Starts node `n` (again) and waits until it is synced with the group.
    pub fn up(&mut self, n: usize) {
        self.launch(n, &[]);
    }

    fn launch(&mut self, n: usize, extra: &[&str]) {
        let node = &mut self.nodes[n];
        let log = node.dir.join("error.log");
        let synced = |log: &Path| {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .matches("Synchronized with group")
                .count()
        };
        let before = synced(&log);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("stdout.log"))
            .expect("a log file");
        let child = Command::new(&node.command[0])
            .args(&node.command[1..])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("a log file"))
            .stderr(out)
            .spawn()
            .expect("start mariadbd");
        node.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while synced(&log) <= before {
            if Instant::now() > deadline {
                panic!(
                    "Galera node {n} did not sync within {START_TIMEOUT:?}; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_for(node.port, &log, "a Galera node");
    }

    /// SIGKILL node `n`, and waits for the process to be gone.
    pub fn kill(&mut self, n: usize) {
        if let Some(mut child) = self.nodes[n].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Galera {
    fn drop(&mut self) {
        for n in 0..self.nodes.len() {
            self.kill(n);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_redis() -> String {
    let server = require(&["redis-server"], "redis-server", "IM_TEST_REDIS_URL");
    let dir = private_dir("redis");
    let port = free_port();
    let run = vec![
        server.display().to_string(),
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        String::new(),
        "--appendonly".into(),
        "no".into(),
        "--dir".into(),
        dir.display().to_string(),
        "--logfile".into(),
        dir.join("redis.log").display().to_string(),
    ];
    supervise(&dir, &run);
    wait_for(port, &dir.join("redis.log"), "redis-server");
    format!("redis://127.0.0.1:{port}")
}

/// A fresh directory for one private server of this test process.
fn private_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("im-test-{kind}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir for a test server");
    dir
}

/// Runs `command` in the background under a supervisor that stops it (and
/// removes `dir`) once this test process is gone.
fn supervise(dir: &Path, command: &[String]) {
    const SUPERVISOR: &str = r#"
test_pid=$1; dir=$2; shift 2
"$@" </dev/null >>"$dir/stdout.log" 2>&1 &
child=$!
while kill -0 "$test_pid" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
kill "$child" 2>/dev/null
wait "$child" 2>/dev/null
rm -rf "$dir"
"#;
    // Never waited for: it outlives this process by design, and is reaped
    // by init once it has cleaned up.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(SUPERVISOR)
        .arg("im-test-supervisor")
        .arg(std::process::id().to_string())
        .arg(dir)
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a test server's supervisor");
}

fn wait_for(port: u16, log: &Path, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not listen on {addr} within {START_TIMEOUT:?}; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Makes a fresh MariaDB data dir at `data`, its files owned by `user`
/// (the invoking user's when `None`).
fn install_db(install: &Path, data: &Path, user: Option<&str>) {
    let mut init = Command::new(install);
    init.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db");
    if let Some(user) = user {
        init.arg(format!("--user={user}"));
    }
    let output = init.output().expect("run mariadb-install-db");
    assert!(
        output.status.success(),
        "mariadb-install-db failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_is_taken_from_either_kind_of_url() {
        assert_eq!(
            host_port("mysql://root@127.0.0.1:3306/db"),
            "127.0.0.1:3306"
        );
        assert_eq!(host_port("redis://127.0.0.1:6379"), "127.0.0.1:6379");
        assert_eq!(host_port("mysql://u:p@h:1?x=y"), "h:1");
    }
}
