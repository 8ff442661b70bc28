//! `im-loadtest`: pairs, idle and storm runs against an im server.
//!
//! Every flag may also come from a TOML workload file (`--workload FILE`,
//! keys named like the flags with underscores); flags win over the file.
//! `--json` prints one machine-readable line as the last line of stdout.
//! Exit status: 0 clean; 1 lost, duplicated or reordered messages (or
//! failed clients); 2 error answers from the server.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use loadtest::{cpu, idle, pairs, storm};
use serde::Deserialize;
use serde_json::json;

#[derive(Parser)]
#[command(name = "im-loadtest", version, about = "Load client for the im server")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Args)]
struct Common {
    /// Server addresses (gateways), comma-separated or repeated:
    /// connections are spread over them in turn.
    #[arg(long, global = true, value_delimiter = ',')]
    addr: Vec<String>,
    /// The server's token secret (else IM_AUTH_SECRET, else --secret-file).
    #[arg(long, global = true)]
    secret: Option<String>,
    /// A file holding the secret (e.g. the server's data/auth.secret).
    #[arg(long, global = true)]
    secret_file: Option<String>,
    /// Print one JSON line as the last line of stdout.
    #[arg(long, global = true)]
    json: bool,
    /// A TOML file with defaults for any flag.
    #[arg(long, global = true)]
    workload: Option<String>,
    /// First uid is uid_base + 1 (keep runs apart on one server).
    #[arg(long, global = true)]
    uid_base: Option<u64>,
    /// Loopback source addresses to spread connections over, comma-separated.
    #[arg(long, global = true, value_delimiter = ',')]
    source: Vec<IpAddr>,
    /// Connect over TLS, trusting the certificate authorities in this PEM
    /// file (for a self-signed server: its certificate).
    #[arg(long, global = true)]
    tls: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry (with --tls).
    #[arg(long, global = true, default_value = "localhost")]
    tls_name: String,
    /// Speak WebSocket, upgrading on this path (e.g. /im); with --tls, wss.
    #[arg(long, global = true)]
    ws: Option<String>,
}

#[derive(Subcommand)]
enum Mode {
    /// Pairs of users exchanging messages: throughput, latency, correctness.
    Pairs(PairsArgs),
    /// Logged-in connections that only heartbeat: connections and memory.
    Idle(IdleArgs),
    /// Everyone disconnects and reconnects at once, then syncs.
    Storm(StormArgs),
}

#[derive(Args, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PairsArgs {
    #[arg(long)]
    pairs: Option<usize>,
    #[arg(long)]
    devices: Option<usize>,
    /// Total messages per second over all senders; 0 = as fast as the window allows.
    #[arg(long)]
    rate: Option<f64>,
    /// Unacknowledged messages per sender.
    #[arg(long)]
    window: Option<usize>,
    /// Content bytes per message.
    #[arg(long)]
    size: Option<usize>,
    /// Seconds to send for (default 10 unless --messages is given). At a
    /// fixed --rate every message scheduled in that time is sent, late if
    /// the machine falls behind (giving up --drain seconds past the end).
    #[arg(long)]
    duration: Option<f64>,
    /// Messages to send in all.
    #[arg(long)]
    messages: Option<u64>,
    /// Both users of a pair send.
    #[arg(long)]
    #[serde(skip)]
    bidir: bool,
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds to wait for the last pushes after sending stops.
    #[arg(long)]
    drain: Option<f64>,
    /// Write every delivery's intended send time and latency to this file
    /// (to line up the slow ones with a trace of the server).
    #[arg(long)]
    latency_log: Option<std::path::PathBuf>,
    /// The server's pid, to report its CPU time per delivered message.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Args, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct IdleArgs {
    #[arg(long)]
    connections: Option<usize>,
    /// Seconds to hold the connections.
    #[arg(long)]
    duration: Option<f64>,
    /// The server's pid, to report its RSS per connection.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Connections per process before spreading over child processes.
    #[arg(long)]
    per_process: Option<usize>,
    /// Internal: run as a child of another im-loadtest idle.
    #[arg(long, hide = true)]
    #[serde(skip)]
    child: bool,
}

#[derive(Args, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StormArgs {
    #[arg(long)]
    clients: Option<usize>,
    /// Messages each client misses while away (at most 200).
    #[arg(long)]
    messages: Option<u64>,
    /// Seconds before giving up on stragglers.
    #[arg(long)]
    timeout: Option<f64>,
}

/// The workload file: one optional table per mode, plus the shared keys.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Workload {
    addr: Option<String>,
    uid_base: Option<u64>,
    pairs: PairsArgs,
    idle: IdleArgs,
    storm: StormArgs,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("im-loadtest: {e:#}");
            std::process::exit(3);
        }
    }
}

fn run() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    runtime::fd_limit::raise_to_hard_limit();
    let file: Workload = match &cli.common.workload {
        Some(path) => toml::from_str(
            &std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        )
        .with_context(|| format!("parsing {path}"))?,
        None => Workload::default(),
    };
    let addr_texts: Vec<String> = if !cli.common.addr.is_empty() {
        cli.common.addr.clone()
    } else if let Some(addr) = &file.addr {
        addr.split(',').map(str::to_owned).collect()
    } else {
        vec!["127.0.0.1:7000".into()]
    };
    let addrs = addr_texts
        .iter()
        .map(|text| {
            text.to_socket_addrs()
                .with_context(|| format!("resolving {text}"))?
                .next()
                .context("no address")
        })
        .collect::<anyhow::Result<Vec<SocketAddr>>>()?;
    if let Some(ca) = &cli.common.tls {
        loadtest::conn::use_tls(ca, &cli.common.tls_name)?;
    }
    if let Some(path) = &cli.common.ws {
        loadtest::conn::use_websocket(path);
    }
    let secret = secret(&cli.common)?;
    let uid_base = cli.common.uid_base.or(file.uid_base).unwrap_or(0);
    let sources = cli.common.source.clone();

    match cli.mode {
        Mode::Pairs(a) => {
            let f = file.pairs;
            let messages = a.messages.or(f.messages);
            let duration =
                a.duration
                    .or(f.duration)
                    .or(if messages.is_none() { Some(10.0) } else { None });
            let config = pairs::PairsConfig {
                addrs: addrs.clone(),
                pairs: a.pairs.or(f.pairs).unwrap_or(10),
                devices: a.devices.or(f.devices).unwrap_or(1),
                rate: a.rate.or(f.rate).unwrap_or(0.0),
                window: a.window.or(f.window).unwrap_or(64),
                size: a.size.or(f.size).unwrap_or(64),
                duration: duration.map(Duration::from_secs_f64),
                messages,
                bidir: a.bidir,
                secret,
                seed: a.seed.or(f.seed).unwrap_or(1),
                uid_base,
                drain: Duration::from_secs_f64(a.drain.or(f.drain).unwrap_or(10.0)),
                sources,
                latency_log: a.latency_log.or(f.latency_log),
            };
            let server_pid = a.server_pid.or(f.server_pid);
            let cpu_before = (server_pid.and_then(cpu::process_cpu), cpu::own_cpu());
            let r = pairs::run(&config)?;
            let v = r.verdict;
            let server_cpu = cpu::micros_per(
                cpu_before.0,
                server_pid.and_then(cpu::process_cpu),
                v.delivered,
            );
            let own_cpu = cpu::micros_per(cpu_before.1, cpu::own_cpu(), v.delivered);
            println!(
                "pairs: {} pairs x {} devices{}",
                config.pairs,
                config.devices,
                if config.bidir { ", both ways" } else { "" }
            );
            println!(
                "  sent {}  acked {}  delivered {}  in {:.2} s: {:.0} delivered/s",
                r.sent,
                r.acked,
                v.delivered,
                r.elapsed_secs,
                r.delivered_per_sec()
            );
            println!("  send -> SendResp:  {}", r.ack.line());
            println!("  send -> Push:      {}", r.deliver.line());
            if r.late.count > 0 {
                println!("  sends late by:     {}", r.late.line());
            }
            println!(
                "  lost {}  duplicated {}  reordered {}  errors {}",
                v.lost, v.duplicated, v.reordered, r.errors
            );
            if let Some(us) = server_cpu {
                println!("  server CPU {us:.2} µs per delivered message");
            }
            if cli.common.json {
                println!(
                    "{}",
                    json!({
                        "mode": "pairs", "sent": r.sent, "acked": r.acked, "delivered": v.delivered,
                        "lost": v.lost, "duplicated": v.duplicated, "reordered": v.reordered, "errors": r.errors,
                        "elapsed_secs": r.elapsed_secs, "delivered_per_sec": r.delivered_per_sec(),
                        "ack_p50_ms": r.ack.p50, "ack_p90_ms": r.ack.p90, "ack_p99_ms": r.ack.p99, "ack_p999_ms": r.ack.p999, "ack_max_ms": r.ack.max,
                        "deliver_p50_ms": r.deliver.p50, "deliver_p90_ms": r.deliver.p90, "deliver_p99_ms": r.deliver.p99,
                        "deliver_p999_ms": r.deliver.p999, "deliver_max_ms": r.deliver.max,
                        "late_p50_ms": r.late.p50, "late_p99_ms": r.late.p99, "late_p999_ms": r.late.p999,
                        "server_cpu_us_per_msg": server_cpu, "loadtest_cpu_us_per_msg": own_cpu,
                    })
                );
            }
            Ok(if !v.clean() {
                1
            } else if r.errors > 0 {
                2
            } else {
                0
            })
        }
        Mode::Idle(a) => {
            let f = file.idle;
            let config = idle::IdleConfig {
                addrs: addrs.clone(),
                connections: a.connections.or(f.connections).unwrap_or(1000),
                duration: Duration::from_secs_f64(a.duration.or(f.duration).unwrap_or(10.0)),
                secret,
                uid_base,
                per_process: a.per_process.or(f.per_process).unwrap_or(15_000),
                sources,
                server_pid: a.server_pid.or(f.server_pid),
            };
            if a.child {
                let (report, mut fleet) = idle::connect(&config)?;
                println!(
                    "READY {} {} {:.3}",
                    report.connections, report.failed, report.elapsed_secs
                );
                idle::heartbeat(&mut fleet, config.duration);
                return Ok(0);
            }
            let r = idle::run(&config)?;
            println!(
                "idle: {} connected, {} failed, logged in at {:.0}/s",
                r.connections,
                r.failed,
                r.logins_per_sec()
            );
            if let Some(per) = r.server_rss_bytes_per_conn {
                println!("  server RSS per connection: {per:.0} bytes");
            }
            if cli.common.json {
                println!(
                    "{}",
                    json!({
                        "mode": "idle", "connections": r.connections, "failed": r.failed,
                        "elapsed_secs": r.elapsed_secs, "server_rss_bytes_per_conn": r.server_rss_bytes_per_conn,
                    })
                );
            }
            Ok(if r.failed > 0 { 1 } else { 0 })
        }
        Mode::Storm(a) => {
            let f = file.storm;
            let config = storm::StormConfig {
                addrs: addrs.clone(),
                clients: a.clients.or(f.clients).unwrap_or(1000),
                messages: a.messages.or(f.messages).unwrap_or(2).min(200),
                secret,
                uid_base,
                sources,
                timeout: Duration::from_secs_f64(a.timeout.or(f.timeout).unwrap_or(60.0)),
            };
            let r = storm::run(&config)?;
            println!(
                "storm: {} clients back and in sync in {:.2} s, {} messages recovered, {} failed",
                r.clients - r.failed,
                r.resync_secs,
                r.messages_recovered,
                r.failed
            );
            if cli.common.json {
                println!(
                    "{}",
                    json!({
                        "mode": "storm", "clients": r.clients, "failed": r.failed,
                        "resync_secs": r.resync_secs, "messages_recovered": r.messages_recovered,
                    })
                );
            }
            Ok(if r.failed > 0 { 1 } else { 0 })
        }
    }
}

/// `--secret`, else `IM_AUTH_SECRET`, else `--secret-file`.
fn secret(common: &Common) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &common.secret {
        return Ok(secret.clone().into_bytes());
    }
    if let Ok(secret) = std::env::var("IM_AUTH_SECRET") {
        if !secret.is_empty() {
            return Ok(secret.into_bytes());
        }
    }
    if let Some(path) = &common.secret_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        return Ok(text.trim().as_bytes().to_vec());
    }
    anyhow::bail!(
        "no secret: give --secret, IM_AUTH_SECRET or --secret-file (the server's data/auth.secret)"
    )
}
