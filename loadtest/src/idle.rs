//! `im-loadtest idle`: N logged-in connections that only heartbeat.
//!
//! One process holds at most `per_process` connections (the open-file limit
//! is per process: 20,000 here, 1,024 on many machines). Beyond that the run
//! spreads over child processes, each from its own loopback source address
//! (127.0.0.2, 127.0.0.3, ...: each address has its own ~28,000 ephemeral
//! ports), transparently: the parent sums what the children report.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use protocol::pb;

use crate::fleet::{Event, Fleet};

#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// The gateways, connections spread over them in turn.
    pub addrs: Vec<SocketAddr>,
    pub connections: usize,
    pub duration: Duration,
    pub secret: Vec<u8>,
    pub uid_base: u64,
    /// Connections per process before the run spreads over children.
    pub per_process: usize,
    /// Source addresses for this process's connections (empty: the default).
    pub sources: Vec<IpAddr>,
    /// The server's pid, to report its RSS per connection.
    pub server_pid: Option<u32>,
}

#[derive(Debug, Default)]
pub struct IdleReport {
    pub connections: usize,
    pub failed: usize,
    /// Time to connect and log everyone in.
    pub elapsed_secs: f64,
    pub server_rss_bytes_per_conn: Option<f64>,
}

impl IdleReport {
    pub fn logins_per_sec(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.connections as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }
}

/// The server's resident memory, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

pub fn run(config: &IdleConfig) -> anyhow::Result<IdleReport> {
    let baseline = config.server_pid.and_then(rss_bytes);
    let (mut report, hold) = if config.connections <= config.per_process {
        let (report, fleet) = connect(config)?;
        (report, Hold::Local(fleet))
    } else {
        spawn_children(config)?
    };
    if let (Some(pid), Some(before)) = (config.server_pid, baseline) {
        // Let the server settle before measuring.
        std::thread::sleep(Duration::from_secs(2));
        if let Some(after) = rss_bytes(pid) {
            report.server_rss_bytes_per_conn =
                Some(after.saturating_sub(before) as f64 / report.connections.max(1) as f64);
        }
    }
    match hold {
        Hold::Local(mut fleet) => heartbeat(&mut fleet, config.duration),
        Hold::Children(children) => {
            for mut child in children {
                let _ = child.wait();
            }
        }
    }
    Ok(report)
}

enum Hold {
    Local(Fleet),
    Children(Vec<std::process::Child>),
}

/// Connects and logs in this process's share.
pub fn connect(config: &IdleConfig) -> anyhow::Result<(IdleReport, Fleet)> {
    let mut fleet = Fleet::new()?;
    let who: Vec<(u64, String)> = (0..config.connections)
        .map(|i| (config.uid_base + i as u64 + 1, "idle".to_owned()))
        .collect();
    let (keys, took) = fleet.login_all(
        &config.addrs,
        &config.sources,
        &config.secret,
        &who,
        Duration::from_secs(120),
    );
    let connections = keys.iter().filter(|k| k.is_some()).count();
    Ok((
        IdleReport {
            connections,
            failed: keys.len() - connections,
            elapsed_secs: took.as_secs_f64(),
            server_rss_bytes_per_conn: None,
        },
        fleet,
    ))
}

/// Holds the connections for `duration`, pinging each every 15 s (the
/// server's default heartbeat is 30 s, its timeout 60 s).
pub fn heartbeat(fleet: &mut Fleet, duration: Duration) {
    let end = Instant::now() + duration;
    let mut next_ping = Instant::now() + Duration::from_secs(15);
    let mut closed = 0usize;
    while Instant::now() < end {
        let wait = end
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(500));
        let _ = fleet.poll(Some(wait), |_, _, event| {
            if let Event::Closed = event {
                closed += 1;
            }
        });
        if Instant::now() >= next_ping {
            next_ping += Duration::from_secs(15);
            let keys: Vec<usize> = fleet.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                fleet.request(key, pb::Ping {});
            }
        }
        fleet.flush();
    }
    if closed > 0 {
        log::warn!("{closed} idle connections were closed by the server");
    }
}

/// Runs the connections in child processes, `per_process` each, each from
/// its own source address. A child prints `READY <connected> <failed>
/// <secs>` once logged in and exits after the duration.
fn spawn_children(config: &IdleConfig) -> anyhow::Result<(IdleReport, Hold)> {
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let mut children = Vec::new();
    let mut readers = Vec::new();
    let chunks = config.connections.div_ceil(config.per_process);
    for k in 0..chunks {
        let count = config
            .per_process
            .min(config.connections - k * config.per_process);
        // 127.0.0.2 onwards for loopback targets; the default route otherwise.
        let source = match config.addrs[0].ip() {
            IpAddr::V4(ip) if ip.is_loopback() => {
                Some(Ipv4Addr::new(127, 0, 0, 2 + k as u8).to_string())
            }
            _ => None,
        };
        let mut command = Command::new(&exe);
        command
            .arg("idle")
            .args(["--addr", &addrs_arg(&config.addrs)])
            .args(["--connections", &count.to_string()])
            .args(["--duration", &config.duration.as_secs_f64().to_string()])
            .args([
                "--uid-base",
                &(config.uid_base + (k * config.per_process) as u64).to_string(),
            ])
            .args(["--per-process", &count.to_string()])
            .arg("--child")
            .args(crate::conn::child_args())
            .env(
                "IM_AUTH_SECRET",
                String::from_utf8_lossy(&config.secret).to_string(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(source) = source {
            command.args(["--source", &source]);
        }
        let mut child = command.spawn()?;
        readers.push(BufReader::new(child.stdout.take().expect("piped stdout")));
        children.push(child);
    }
    let mut report = IdleReport::default();
    for reader in &mut readers {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["READY", connected, failed, _secs] => {
                report.connections += connected.parse::<usize>()?;
                report.failed += failed.parse::<usize>()?;
            }
            _ => anyhow::bail!("a child process failed: {line:?}"),
        }
    }
    report.elapsed_secs = started.elapsed().as_secs_f64();
    Ok((report, Hold::Children(children)))
}

/// The addresses as one `--addr` value.
fn addrs_arg(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
