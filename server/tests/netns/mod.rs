//! Network namespaces for the fault tests: the logic tier in one, the
//! gateways (and the tests' clients) in another, a veth pair between, and
//! iptables in the logic's namespace to cut or thin the link. Needs root,
//! `ip` (iproute2) and `iptables`; everything made is deleted when dropped.

#![allow(dead_code)]

use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

/// The veth pair's addresses (link-local: they exist only in the two
/// namespaces a test makes).
pub const LOGIC_IP: &str = "169.254.77.1";
pub const GATEWAY_IP: &str = "169.254.77.2";

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A network namespace the test made; deleted when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Netns {
        let name = format!(
            "imf-{role}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command in the namespace; it must succeed.
    pub fn run(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full);
    }

    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Moves the calling thread into the namespace: sockets it opens from
    /// now on live there.
    pub fn enter(&self) {
        let file = std::fs::File::open(format!("/var/run/netns/{}", self.name))
            .expect("the namespace's file");
        // SAFETY: setns with a namespace file descriptor we own; it only
        // changes this thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

pub fn sh(args: &[&str]) {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} cannot run ({e}): install iproute2 and iptables, run as root",
                args[0]
            )
        });
    assert!(
        output.status.success(),
        "{:?} failed: {}",
        args,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The logic node's namespace and the gateways', joined by a veth pair.
pub struct Net {
    pub logic: Netns,
    pub gateways: Netns,
}

impl Net {
    pub fn new() -> Net {
        let (logic, gateways) = (Netns::new("logic"), Netns::new("gw"));
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let (a, b) = (format!("imfa{n}"), format!("imfb{n}"));
        sh(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        sh(&["ip", "link", "set", &a, "netns", &logic.name]);
        sh(&["ip", "link", "set", &b, "netns", &gateways.name]);
        logic.run(&["ip", "addr", "add", &format!("{LOGIC_IP}/30"), "dev", &a]);
        logic.run(&["ip", "link", "set", &a, "up"]);
        gateways.run(&["ip", "addr", "add", &format!("{GATEWAY_IP}/30"), "dev", &b]);
        gateways.run(&["ip", "link", "set", &b, "up"]);
        Net { logic, gateways }
    }

    /// Drops the packets of `port` both ways (in the logic's namespace).
    pub fn cut(&self, port: u16) {
        self.drop_packets(port, &[]);
    }

    /// Adds a DROP rule, with `matching` on top of the port, each way.
    pub fn drop_packets(&self, port: u16, matching: &[&str]) {
        let port = port.to_string();
        for (chain, side) in [("INPUT", "--dport"), ("OUTPUT", "--sport")] {
            let mut rule = vec!["iptables", "-A", chain, "-p", "tcp", side, &port];
            rule.extend_from_slice(matching);
            rule.extend_from_slice(&["-j", "DROP"]);
            self.logic.run(&rule);
        }
    }

    pub fn heal(&self) {
        self.logic.run(&["iptables", "-F"]);
    }

    /// Drops each of the link's packets, either way, with this probability.
    pub fn lose(&self, probability: &str, port: u16) {
        let matching = [
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            probability,
        ];
        self.drop_packets(port, &matching);
    }
}

/// Runs `f` on a thread inside `ns` (its sockets live there).
pub fn in_namespace<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        s.spawn(|| {
            ns.enter();
            f()
        })
        .join()
        .expect("the namespace thread")
    })
}
