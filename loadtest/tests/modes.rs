//! Every mode, briefly, against a real node in this process (and the real
//! binary for the multi-process idle run), asserting the counts.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use loadtest::{idle, pairs, storm};
use server::Config;
use server::Node;

const SECRET: &str = "loadtest-test-secret";

fn node(name: &str) -> (Node, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("im-loadtest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::default();
    config.gateway.listen = "127.0.0.1:0".into();
    config.gateway.inbound_frames_per_sec = 1_000_000;
    config.gateway.inbound_burst = 1_000_000;
    config.admin.listen = String::new();
    config.api.listen = String::new();
    config.gateway.websocket.listen = String::new();
    config.auth.secret = SECRET.into();
    config.logic.messages_per_sec = 1_000_000;
    config.logic.message_burst = 1_000_000;
    config.storage.data_dir = dir.display().to_string();
    (Node::start(&config).expect("node starts"), dir)
}

fn pairs_config(addr: SocketAddr) -> pairs::PairsConfig {
    pairs::PairsConfig {
        addrs: vec![addr],
        pairs: 5,
        devices: 2,
        rate: 0.0,
        window: 16,
        size: 64,
        duration: None,
        messages: Some(1_000),
        bidir: true,
        secret: SECRET.as_bytes().to_vec(),
        seed: 7,
        uid_base: 0,
        drain: Duration::from_secs(10),
        sources: vec![],
        latency_log: None,
    }
}

#[test]
fn pairs_delivers_every_message_to_every_device() {
    let (node, dir) = node("pairs");
    let report = pairs::run(&pairs_config(node.local_addr())).unwrap();
    assert_eq!(report.sent, 1_000);
    assert_eq!(report.acked, 1_000);
    // Each message reaches the recipient's 2 devices and the sender's other one.
    assert_eq!(report.verdict.delivered, 3_000);
    assert!(report.verdict.clean(), "{:?}", report.verdict);
    assert_eq!(report.errors, 0);
    assert_eq!(report.ack.count, 1_000);
    assert_eq!(report.deliver.count, 3_000);
    node.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn pairs_at_a_fixed_rate_keeps_the_rate() {
    let (node, dir) = node("rate");
    let mut config = pairs_config(node.local_addr());
    config.rate = 500.0;
    config.messages = None;
    config.duration = Some(Duration::from_secs(2));
    config.bidir = false;
    config.devices = 1;
    let log = dir.join("latency.log");
    config.latency_log = Some(log.clone());
    let report = pairs::run(&config).unwrap();
    // 500/s for 2 s: everything scheduled is sent, late if the machine is
    // slow (the lateness shows in `late`, not as fewer messages).
    assert_eq!(report.sent, 1_000);
    assert_eq!(report.acked, report.sent);
    assert!(report.verdict.clean());
    // Every send was timed against its schedule.
    assert_eq!(report.late.count, report.sent);
    // The log: the start, then a line per delivery, intended time within
    // the 2 s of sending, and the same latencies the histogram holds.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines = text.lines();
    let start: Vec<&str> = lines.next().unwrap().split(' ').collect();
    assert_eq!(start[0], "start");
    assert!(start[1].parse::<u64>().is_ok() && start[2].parse::<u64>().is_ok());
    let deliveries: Vec<(u64, u64)> = lines
        .map(|line| {
            let (at, latency) = line.split_once(' ').unwrap();
            (at.parse().unwrap(), latency.parse().unwrap())
        })
        .collect();
    assert_eq!(deliveries.len() as u64, report.verdict.delivered);
    assert!(deliveries.iter().all(|(at, _)| *at < 2_100_000));
    // The histogram keeps 3 significant digits: the same to within 1 %.
    let slowest = deliveries.iter().map(|(_, l)| *l).max().unwrap() as f64;
    let histogram_max = report.deliver.max * 1_000.0;
    assert!(
        (slowest - histogram_max).abs() <= slowest / 100.0 + 1.0,
        "log {slowest} µs, histogram {histogram_max} µs"
    );
    node.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn idle_holds_logged_in_connections_and_measures_the_server() {
    let (node, dir) = node("idle");
    let config = idle::IdleConfig {
        addrs: vec![node.local_addr()],
        connections: 300,
        duration: Duration::from_millis(500),
        secret: SECRET.as_bytes().to_vec(),
        uid_base: 0,
        per_process: 1_000,
        sources: vec![],
        server_pid: Some(std::process::id()),
    };
    let report = idle::run(&config).unwrap();
    assert_eq!((report.connections, report.failed), (300, 0));
    assert!(report.server_rss_bytes_per_conn.is_some());
    node.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn idle_spreads_over_child_processes_and_source_addresses() {
    let (node, dir) = node("children");
    let output = Command::new(env!("CARGO_BIN_EXE_im-loadtest"))
        .args([
            "idle",
            "--connections",
            "250",
            "--per-process",
            "100",
            "--duration",
            "0.5",
            "--json",
        ])
        .args(["--addr", &node.local_addr().to_string()])
        .env("IM_AUTH_SECRET", SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap();
    let json: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(json["mode"], "idle");
    assert_eq!(json["connections"], 250);
    assert_eq!(json["failed"], 0);
    assert!(
        json["server_rss_bytes_per_conn"].is_null(),
        "no --server-pid given"
    );
    node.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn storm_reconnects_everyone_and_recovers_every_message() {
    let (node, dir) = node("storm");
    let config = storm::StormConfig {
        addrs: vec![node.local_addr()],
        clients: 40,
        messages: 3,
        secret: SECRET.as_bytes().to_vec(),
        uid_base: 0,
        sources: vec![],
        timeout: Duration::from_secs(30),
    };
    let report = storm::run(&config).unwrap();
    assert_eq!(report.failed, 0);
    assert_eq!(report.messages_recovered, 120);
    node.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_workload_file_supplies_the_flags_and_json_is_the_last_line() {
    let (node, dir) = node("workload");
    let file = dir.join("workload.toml");
    std::fs::write(
        &file,
        "[pairs]\npairs = 3\nmessages = 300\nwindow = 8\nsize = 32\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_im-loadtest"))
        .args(["pairs", "--json", "--workload"])
        .arg(&file)
        .args(["--addr", &node.local_addr().to_string()])
        .env("IM_AUTH_SECRET", SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(json["mode"], "pairs");
    assert_eq!(json["sent"], 300);
    assert_eq!(json["delivered"], 300);
    for key in ["lost", "duplicated", "reordered", "errors"] {
        assert_eq!(json[key], 0, "{key}");
    }
    for key in [
        "elapsed_secs",
        "delivered_per_sec",
        "ack_p50_ms",
        "ack_p99_ms",
        "deliver_p50_ms",
        "deliver_p99_ms",
        "deliver_p999_ms",
        "deliver_max_ms",
        "late_p50_ms",
        "late_p99_ms",
    ] {
        assert!(json[key].is_number(), "{key} missing");
    }
    // An unknown key in the file is an error, not a silent default.
    std::fs::write(&file, "[pairs]\npiars = 3\n").unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_im-loadtest"))
        .args(["pairs", "--workload"])
        .arg(&file)
        .args(["--addr", &node.local_addr().to_string()])
        .env("IM_AUTH_SECRET", SECRET)
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(3));
    node.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}
