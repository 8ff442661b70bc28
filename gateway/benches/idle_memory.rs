//! Memory per idle, logged-in session: starts the release `im-gateway` as
//! its own process, opens N logged-in connections that then sit idle, and
//! reports the server's RSS growth per connection.
//!
//!   cargo bench -p im-gateway --bench idle_memory            # 15,000 connections
//!   IM_IDLE_CONNECTIONS=5000 cargo bench -p im-gateway --bench idle_memory
//!
//! The machine's per-process open-file limit is 20,000, so 15,000 is as far
//! as one client process goes; `im-loadtest idle` spreads further.

use std::fs;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use protocol::{Client, pb, token};

const SECRET: &str = "idle-memory-bench-secret";
/// Connections opened before the baseline, so that one-time allocations
/// (thread stacks touched, first slab pages, channel blocks) are not
/// charged to the measured connections.
const WARMUP: usize = 200;

fn rss_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc status");
    kb * 1024
}

/// Kernel slab memory (socket structures live there), from /proc/meminfo.
fn kernel_slab_bytes() -> u64 {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Slab:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain struct in, plain struct out.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(port: u16, data_dir: &str) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_im-gateway"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data_dir,
        ])
        .env("IM_AUTH_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn im-gateway");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "im-gateway did not start");
        thread::sleep(Duration::from_millis(50));
    }
    Server(child)
}

fn open(port: u16, uid: u64, expires: u64) -> Client {
    let mut client = Client::connect(("127.0.0.1", port)).expect("connect");
    let token = token::mint(SECRET.as_bytes(), uid, expires);
    client
        .login(uid, &token, "bench", pb::Platform::Mobile)
        .expect("login");
    client
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs us with no
    // such flag: keep that run tiny.
    let benching = std::env::args().any(|a| a == "--bench");
    let count: usize = std::env::var("IM_IDLE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 15_000 } else { 100 });
    raise_fd_limit();
    let port = 27_000 + (std::process::id() % 1000) as u16;
    let data_dir = std::env::temp_dir().join(format!("im-idle-bench-{}", std::process::id()));
    let server = start_server(port, data_dir.to_str().expect("utf-8 temp dir"));
    let pid = server.0.id();
    let expires = logic::auth::unix_secs() + 3600;

    let mut clients: Vec<Client> = (0..WARMUP as u64)
        .map(|uid| open(port, uid + 1, expires))
        .collect();
    thread::sleep(Duration::from_millis(500));
    let baseline = rss_bytes(pid);
    let slab_baseline = kernel_slab_bytes();
    let started = Instant::now();
    for i in 0..count as u64 {
        clients.push(open(port, WARMUP as u64 + i + 1, expires));
    }
    let login_secs = started.elapsed().as_secs_f64();
    // Let the server settle (freed buffers returned), then measure.
    thread::sleep(Duration::from_secs(2));
    let loaded = rss_bytes(pid);
    let slab_loaded = kernel_slab_bytes();
    let per_conn = loaded.saturating_sub(baseline) as f64 / count as f64;

    println!("idle sessions:          {count} (after {WARMUP} warm-up)");
    println!(
        "logins:                 {:.0}/s sequential",
        count as f64 / login_secs
    );
    println!(
        "server RSS before:      {:.1} MiB",
        baseline as f64 / 1048576.0
    );
    println!(
        "server RSS after:       {:.1} MiB",
        loaded as f64 / 1048576.0
    );
    println!("RSS per idle session:   {per_conn:.0} bytes");
    // Both ends of every connection are on this host: half the growth is
    // the server's. Noisy (other processes allocate too): an estimate.
    let slab_per_conn = slab_loaded.saturating_sub(slab_baseline) as f64 / count as f64 / 2.0;
    println!(
        "kernel slab per socket: {slab_per_conn:.0} bytes (estimate, half of both ends' growth)"
    );
    drop(clients);
    drop(server);
    let _ = fs::remove_dir_all(&data_dir);
}
