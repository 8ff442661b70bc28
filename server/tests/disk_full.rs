//! A full disk under the embedded store, on a small tmpfs each test mounts
//! (root, as CI runs): sends are refused UNAVAILABLE once the journal
//! cannot grow, or at once once SQLite cannot (while reads go on answering
//! from what SQLite holds), nothing acknowledged is lost, nothing refused
//! is stored, and writes resume by themselves once space is freed: no
//! restart.

#[path = "contract/harness.rs"]
mod harness;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use client::Client;
use harness::*;
use protocol::ErrorCode;

/// A tmpfs of `size` mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(name: &str, size: &str) -> Tmpfs {
        let dir = std::env::temp_dir().join(format!("im-disk-full-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a file until the file system is full; returns its path.
fn fill(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xAB; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    path
}

/// Sends `content` to uid 2 as `<prefix>-<n>` until a send is refused
/// (UNAVAILABLE, as the contract says for a full disk), each acked one
/// taking the next seq after `acked`; returns the refused client_msg_id.
fn send_until_refused(
    client: &mut Client,
    acked: &mut Vec<String>,
    prefix: &str,
    content: &[u8],
) -> String {
    for n in 0..200_000 {
        let cmid = format!("{prefix}-{n}");
        match try_send(client, 2, &cmid, content) {
            Ok(resp) => {
                assert_eq!(resp.seq as usize, acked.len() + 1);
                acked.push(cmid);
            }
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::Unavailable), "{e}");
                return cmid;
            }
        }
    }
    panic!("the disk never filled up");
}

/// Once space is freed: sends `cmid` again until it goes in (20 s at
/// most); it must be new, not a duplicate (a refused send stored nothing).
fn resend_until_stored(client: &mut Client, cmid: &str, content: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let resp = loop {
        match try_send(client, 2, cmid, content) {
            Ok(resp) => break resp,
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::Unavailable), "{e}");
                assert!(
                    Instant::now() < deadline,
                    "writes did not resume after space was freed"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    assert!(!resp.duplicate, "the refused send was not stored");
}

const BIG: &[u8] = &[b'x'; 16_000];

/// A node whose data dir is on `disk`, its rate limits out of the way.
fn node_on(disk: &Tmpfs) -> TestNode {
    let data = disk.0.join("data");
    TestNode::with(Store::Sqlite, |config| {
        config.admin.listen = "127.0.0.1:0".into();
        config.storage.data_dir = data.display().to_string();
        config.logic.messages_per_sec = 1_000_000;
        config.logic.message_burst = 1_000_000;
        config.gateway.inbound_frames_per_sec = 1_000_000;
        config.gateway.inbound_burst = 1_000_000;
    })
}

#[test]
fn a_full_disk_refuses_writes_keeps_what_was_acked_and_recovers_when_space_is_freed() {
    let disk = Tmpfs::mount("journal", "40m");
    let node = node_on(&disk);
    let mut alice = node.login(1, "phone");
    send(&mut alice, 2, "before", b"room to spare");
    let filler = fill(&disk.0);

    // 16 KB messages until the journal cannot take one more.
    let mut acked = vec!["before".to_owned()];
    let refused = send_until_refused(&mut alice, &mut acked, "full", BIG);
    assert!(node.metric("im_logic_storage_disk_full_total").unwrap_or(0) >= 1);
    // Still full: still refused, and the connection is still usable.
    expect_code(
        try_send(&mut alice, 2, "still-full", BIG),
        ErrorCode::Unavailable,
    );

    // Space freed: the refused message goes in on its retry, no restart.
    std::fs::remove_file(&filler).unwrap();
    resend_until_stored(&mut alice, &refused, BIG);
    acked.push(refused);
    let after = send(&mut alice, 2, "after", b"space again");
    assert_eq!(after.seq as usize, acked.len() + 1);
    acked.push("after".into());

    // Everything acked, once, in order, without gaps; nothing refused.
    let mut bob = node.login(2, "phone");
    let stored: Vec<(u64, String)> = whole_history(&mut bob, 1)
        .into_iter()
        .map(|m| (m.seq, m.client_msg_id))
        .collect();
    let expected: Vec<(u64, String)> = acked
        .iter()
        .enumerate()
        .map(|(i, cmid)| (i as u64 + 1, cmid.clone()))
        .collect();
    assert_eq!(stored.len(), expected.len());
    assert!(stored == expected, "history differs from what was acked");
    eprintln!(
        "disk full after {} acked 16 KB messages; refused UNAVAILABLE while full; resumed after freeing space",
        acked.len() - 2
    );
}

#[test]
fn with_sqlite_full_writes_are_refused_at_once_reads_answer_and_both_recover() {
    let disk = Tmpfs::mount("sqlite", "40m");
    let node = node_on(&disk);
    let mut alice = node.login(1, "phone");
    let mut bob = node.login(2, "phone");
    send(&mut alice, 2, "before", b"room to spare");
    expect_push(&mut bob);
    // A read waits for SQLite to hold it.
    assert_eq!(whole_history(&mut bob, 1).len(), 1);
    // Bob goes offline while the disk fills: a device that reads none of
    // the thousands of pushes meanwhile would be closed as a slow consumer.
    drop(bob);
    let filler = fill(&disk.0);

    // Small messages: the journal's preallocated segment has room, SQLite
    // runs out; once it has, sends are refused.
    let mut acked = vec!["before".to_owned()];
    let refused = send_until_refused(&mut alice, &mut acked, "small", b"a small message");
    // Refused at once, not after a wait for the applier.
    let started = Instant::now();
    expect_code(
        try_send(&mut alice, 2, "still-full", b"x"),
        ErrorCode::Unavailable,
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Reads answer at once from what SQLite holds.
    let mut bob = node.login(2, "tablet");
    let started = Instant::now();
    let readable = whole_history(&mut bob, 1);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(readable[0].client_msg_id, "before");
    assert!(readable.len() <= acked.len());

    // Space freed: SQLite catches up, writes resume, nothing acked is missing.
    std::fs::remove_file(&filler).unwrap();
    resend_until_stored(&mut alice, &refused, b"a small message");
    acked.push(refused);
    let stored: Vec<String> = whole_history(&mut bob, 1)
        .into_iter()
        .map(|m| m.client_msg_id)
        .collect();
    assert!(stored == acked, "history differs from what was acked");
    eprintln!(
        "SQLite full after {} acked small messages ({} readable while full); refused at once, read answered at once; recovered",
        acked.len() - 2,
        readable.len()
    );
}
