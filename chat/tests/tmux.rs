//! Two `im-chat` processes in tmux against a real node: what one types,
//! the other's screen shows, and the sender's screen shows it seen.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SECRET: &str = "im-chat-test-secret";

/// A private tmux server, killed with everything in it when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux {
            socket: format!("im-chat-test-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs (scripts/test.sh installs it)");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn start(&self, session: &str, command: &str) {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "110",
            "-y",
            "24",
            command,
        ]);
    }

    fn screen(&self, session: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", session])
    }

    fn type_line(&self, session: &str, text: &str) {
        self.run(&["send-keys", "-t", session, "-l", text]);
        self.run(&["send-keys", "-t", session, "Enter"]);
    }

    /// Waits until `session`'s screen shows `text`.
    fn wait_for(&self, session: &str, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen(session);
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{session}'s screen never showed {text:?}; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn chat(addr: std::net::SocketAddr, uid: u64, to: u64, dir: &Path) -> String {
    format!(
        "{} --uid {uid} --to {to} --server {addr} --secret-file {} --store {} 2>{}",
        env!("CARGO_BIN_EXE_im-chat"),
        dir.join("secret").display(),
        dir.join(format!("{uid}.db")).display(),
        dir.join(format!("{uid}.log")).display(),
    )
}

#[test]
fn two_terminals_exchange_a_message_and_see_it_seen() {
    let dir = std::env::temp_dir().join(format!("im-chat-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    let mut config = server::Config::default();
    config.gateway.listen = "127.0.0.1:0".into();
    config.admin.listen = String::new();
    config.api.listen = String::new();
    config.gateway.websocket.listen = String::new();
    config.auth.secret = SECRET.into();
    config.storage.data_dir = dir.join("server").display().to_string();
    let node = server::Node::start(&config).expect("the node starts");
    let addr = node.local_addr();

    let tmux = Tmux::new();
    tmux.start("alice", &chat(addr, 1, 2, &dir));
    tmux.start("bob", &chat(addr, 2, 1, &dir));
    tmux.wait_for("alice", "online");
    tmux.wait_for("bob", "online");

    tmux.type_line("alice", "hello from alice");
    tmux.wait_for("bob", "1: hello from alice");
    // Bob has the conversation open: it is read, and Alice sees it seen.
    tmux.wait_for("alice", "me: hello from alice  ✓ seen");
    tmux.type_line("bob", "hi alice");
    let alice = tmux.wait_for("alice", "2: hi alice");
    assert!(
        alice.contains("uid 2"),
        "the conversation is listed:\n{alice}"
    );
    println!("alice's screen:\n{alice}");

    drop(tmux);
    node.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
