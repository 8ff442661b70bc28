//! The offline-notification outbox against a real HTTPS receiver (a test
//! CA): signatures verify; a receiver that is down, then up, gets every
//! notification at least once; `kill -9` with a thousand notifications
//! pending loses none, they go out after the restart.

#[path = "contract/harness.rs"]
mod harness;
#[path = "contract/receiver.rs"]
mod receiver;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use client::Client;
use harness::{Store, TestNode, eventually, free_port, login_to as login, send};
use protocol::pb;
use receiver::{Receiver, TestCa};

const HOOK_SECRET: &str = "outbox-test-hook-secret";

/// A node whose webhook goes to `receiver`, trusting `ca`, retrying fast.
fn node(store: Store, receiver: &Receiver, ca_file: &Path) -> TestNode {
    TestNode::with(store, |c| {
        c.admin.listen = "127.0.0.1:0".into();
        c.logic.messages_per_sec = 1_000_000;
        c.logic.message_burst = 1_000_000;
        c.gateway.inbound_frames_per_sec = 1_000_000;
        c.gateway.inbound_burst = 1_000_000;
        c.logic.webhook.url = receiver.url();
        c.logic.webhook.secret = HOOK_SECRET.into();
        c.logic.webhook.ca_file = ca_file.display().to_string();
        c.logic.webhook.retry_first_ms = 50;
        c.logic.webhook.retry_max_ms = 400;
    })
}

fn ca_file(ca: &TestCa, name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("im-outbox-{name}-{}.pem", std::process::id()));
    ca.write(&path);
    path
}

/// Sends `n` messages from 1 to offline users 1000.., returns their msg_ids.
fn send_offline(client: &mut Client, n: usize, prefix: &str) -> HashSet<String> {
    (0..n)
        .map(|i| {
            let to = 1000 + (i % 50) as u64;
            send(client, to, &format!("{prefix}{i}"), b"ping")
                .msg_id
                .to_string()
        })
        .collect()
}

/// Waits up to `secs` for the receiver to have every one of `expected`.
fn wait_for_all(receiver: &Receiver, expected: &HashSet<String>, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while receiver.unique() != *expected {
        assert!(
            Instant::now() < deadline,
            "{} of {} notifications arrived",
            receiver.unique().len(),
            expected.len()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn notifications_are_signed_and_carry_what_a_push_bridge_needs() {
    let ca = TestCa::new();
    let ca_path = ca_file(&ca, "signed");
    let mut receiver = Receiver::new(free_port(), HOOK_SECRET.as_bytes(), Some(&ca));
    receiver.start();
    let node = node(Store::Sqlite, &receiver, &ca_path);
    let mut alice = node.login(1, "phone");
    let sent: Vec<pb::SendResp> = (0..3)
        .map(|i| {
            send(
                &mut alice,
                2,
                &format!("m{i}"),
                format!("hello {i}").as_bytes(),
            )
        })
        .collect();
    let mut got = eventually("three notifications", || {
        let got = receiver.deliveries();
        (got.len() >= 3).then_some(got)
    });
    got.sort_by_key(|d| d.json()["seq"].as_u64());
    for (i, (delivery, resp)) in got.iter().zip(&sent).enumerate() {
        assert!(delivery.signature_ok, "the signature verifies");
        let now = runtime::clock::unix_secs();
        let stamped: u64 = delivery.headers["x-im-timestamp"].parse().unwrap();
        assert!(stamped.abs_diff(now) < 60);
        assert_eq!(delivery.msg_id(), resp.msg_id.to_string());
        let json = delivery.json();
        assert_eq!(json["event"], "message.offline");
        assert_eq!(json["msg_id"], resp.msg_id.to_string());
        assert_eq!(
            (json["to_uid"].as_u64(), json["from_uid"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(json["conversation"], "1:2");
        assert_eq!(json["seq"], resp.seq);
        assert_eq!(json["preview"], format!("hello {i}"));
        // The badge is counted at delivery: at least this message's seq.
        let unread = json["unread_total"].as_u64().unwrap();
        assert!((resp.seq..=3).contains(&unread), "{json}");
    }
    // A forged body does not verify with the same headers.
    let forged = got[0].body.iter().map(|b| b ^ 1).collect::<Vec<u8>>();
    assert!(!logic::outbox::signing::verify(
        HOOK_SECRET.as_bytes(),
        got[0].headers["x-im-timestamp"].parse().unwrap(),
        &forged,
        &got[0].headers["x-im-signature"],
    ));
    // The receiver in docs/webhook.md accepts the real request and refuses the forgery.
    assert!(python_verifies(&got[0].headers, &got[0].body));
    assert!(!python_verifies(&got[0].headers, &forged));
    eventually("an empty outbox", || {
        (node.metric("im_logic_webhook_backlog") == Some(0)).then_some(())
    });
}

/// Runs docs/webhook.md's Python `verify` on a request.
fn python_verifies(headers: &std::collections::BTreeMap<String, String>, body: &[u8]) -> bool {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/webhook.md"))
        .unwrap();
    let start = doc.find("```python\n").expect("a Python example") + "```python\n".len();
    let code = &doc[start..start + doc[start..].find("```").unwrap()];
    let script = format!(
        "{code}\nimport sys\nheaders = {{'X-IM-Timestamp': sys.argv[1], 'X-IM-Signature': sys.argv[2]}}\n\
         body = bytes.fromhex(sys.argv[3])\nsys.exit(0 if verify(sys.argv[4].encode(), headers, body) else 1)\n"
    );
    let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
    Command::new("python3")
        .args(["-c", &script])
        .args([
            &headers["x-im-timestamp"],
            &headers["x-im-signature"],
            &hex,
            HOOK_SECRET,
        ])
        .status()
        .expect("python3")
        .success()
}

#[test]
fn a_receiver_down_then_up_gets_every_notification() {
    for store in [Store::Sqlite, Store::MySql] {
        let ca = TestCa::new();
        let ca_path = ca_file(&ca, "down");
        let mut receiver = Receiver::new(free_port(), HOOK_SECRET.as_bytes(), Some(&ca));
        let node = node(store, &receiver, &ca_path);
        let mut alice = node.login(1, "phone");
        let mut expected = send_offline(&mut alice, 300, "down");
        eventually("the receiver counted as down", || {
            (node.metric("im_logic_webhook_receiver_down") == Some(1)).then_some(())
        });
        assert!(node.metric("im_logic_webhook_failures_total").unwrap() >= 3);
        eventually("a backlog of 300", || {
            (node.metric("im_logic_webhook_backlog") == Some(300)).then_some(())
        });
        receiver.start();
        expected.extend(send_offline(&mut alice, 100, "up"));
        wait_for_all(&receiver, &expected, 30);
        assert!(receiver.deliveries().iter().all(|d| d.signature_ok));
        eventually("an empty outbox", || {
            (node.metric("im_logic_webhook_backlog") == Some(0)).then_some(())
        });
        assert_eq!(node.metric("im_logic_webhook_receiver_down"), Some(0));
        receiver.stop();
    }
}

#[test]
fn notices_past_their_age_are_dropped_and_counted_and_previews_can_be_off() {
    let ca = TestCa::new();
    let ca_path = ca_file(&ca, "expire");
    let mut receiver = Receiver::new(free_port(), HOOK_SECRET.as_bytes(), Some(&ca));
    let node = TestNode::with(Store::Sqlite, |c| {
        c.admin.listen = "127.0.0.1:0".into();
        c.logic.webhook.url = receiver.url();
        c.logic.webhook.secret = HOOK_SECRET.into();
        c.logic.webhook.ca_file = ca_path.display().to_string();
        c.logic.webhook.retry_first_ms = 50;
        c.logic.webhook.retry_max_ms = 200;
        c.logic.webhook.max_age_secs = 1;
        c.logic.webhook.preview_chars = 0;
    });
    let mut alice = node.login(1, "phone");
    send_offline(&mut alice, 20, "old");
    eventually("20 expired", || {
        (node.metric("im_logic_webhook_expired_total") == Some(20)).then_some(())
    });
    eventually("an empty outbox", || {
        (node.metric("im_logic_webhook_backlog") == Some(0)).then_some(())
    });
    receiver.start();
    let fresh = send_offline(&mut alice, 1, "new");
    eventually("the fresh one delivered", || {
        (receiver.unique() == fresh).then_some(())
    });
    let delivered = receiver.deliveries();
    assert_eq!(delivered.len(), 1, "nothing expired was sent");
    let json = delivered[0].json();
    assert!(json.get("preview").is_none(), "preview_chars = 0: {json}");
    assert_eq!(json["content_type"], 1);
}

/// The real binary, so that it can be killed for real.
fn start_server(
    dir: &Path,
    port: u16,
    receiver: &Receiver,
    ca_file: &Path,
    log: &str,
) -> harness::ServerProcess {
    let webhook = format!(
        "[logic.webhook]\nurl = \"{}\"\nca_file = \"{}\"\nretry_first_ms = 50\nretry_max_ms = 400\n",
        receiver.url(),
        ca_file.display()
    );
    harness::spawn_server(
        dir,
        port,
        log,
        &webhook,
        &[("IM_WEBHOOK_SECRET", HOOK_SECRET)],
    )
}

#[test]
fn pending_notifications_survive_kill_9() {
    let dir = std::env::temp_dir().join(format!("im-outbox-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = TestCa::new();
    let ca_path = ca_file(&ca, "kill");
    let mut receiver = Receiver::new(free_port(), HOOK_SECRET.as_bytes(), Some(&ca));
    let port = free_port();

    // The receiver is down: every notification stays pending.
    let mut server = start_server(&dir, port, &receiver, &ca_path, "first.log");
    let expected = send_offline(&mut login(port, 1), 1_000, "k");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert!(receiver.deliveries().is_empty());

    receiver.start();
    let _server = start_server(&dir, port, &receiver, &ca_path, "second.log");
    wait_for_all(&receiver, &expected, 60);
    assert!(receiver.deliveries().iter().all(|d| d.signature_ok));
    let _ = std::fs::remove_dir_all(&dir);
}
