//! System messages from NATS JetStream, against a real broker: a private
//! `nats-server -js` this test starts on its own port and data dir (never
//! the machine's shared one), so it can kill and restart it. 10,000 queued
//! sends are all stored once, each conversation in queue order, through a
//! `kill -9` of the broker mid-run; poison requests are dead-lettered with
//! their reason and hold nothing up.

#[path = "contract/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use harness::{Store, TestNode, eventually, free_port, wait_for_port, whole_history};

/// The system account queued sends come from.
const SYSTEM: u64 = 1;

/// A private JetStream broker.
struct Broker {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn nats_server() -> &'static str {
    [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("nats-server installed (Debian: apt-get install nats-server)")
}

impl Broker {
    fn start(name: &str) -> Broker {
        let dir = std::env::temp_dir().join(format!("im-nats-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = Broker {
            port: free_port(),
            dir,
            child: None,
        };
        broker.up();
        broker
    }

    fn up(&mut self) {
        let child = Command::new(nats_server())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("nats.log")).unwrap())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        wait_for_port(self.port, "nats-server");
    }

    /// kill -9.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Publishes `bodies` to the node's subject, each until the broker stored
/// it (through a broker restart: retried until acked).
fn publish(url: &str, bodies: &[Vec<u8>]) {
    runtime().block_on(async {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(url)
            .await
            .unwrap();
        let js = jetstream::new(client);
        // The node creates the stream; wait for it.
        let deadline = Instant::now() + Duration::from_secs(20);
        while js.get_stream("IM_SYSTEM").await.is_err() {
            assert!(Instant::now() < deadline, "the node created no stream");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for chunk in bodies.chunks(500) {
            let mut acks = Vec::new();
            for body in chunk {
                acks.push(js.publish("im.system.send", body.clone().into()).await);
            }
            for (ack, body) in acks.into_iter().zip(chunk) {
                let stored = match ack {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                };
                if !stored {
                    loop {
                        if let Ok(ack) = js.publish("im.system.send", body.clone().into()).await {
                            if ack.await.is_ok() {
                                break;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    });
}

fn node(broker: &Broker) -> TestNode {
    TestNode::with(Store::Sqlite, |c| {
        c.admin.listen = "127.0.0.1:0".into();
        c.api.system_uid = SYSTEM;
        c.queue.url = broker.url();
        c.queue.max_in_flight = 64;
        c.queue.ack_wait_secs = 5;
    })
}

fn send_body(to: u64, id: &str) -> Vec<u8> {
    format!(r#"{{"to_uid": {to}, "client_msg_id": "{id}", "text": "{id}"}}"#).into_bytes()
}

#[test]
fn ten_thousand_queued_sends_are_stored_once_in_order_through_a_broker_restart() {
    let mut broker = Broker::start("restart");
    let node = node(&broker);
    // 100 conversations of 100 messages, interleaved in the queue.
    let sends: Vec<(u64, String)> = (0..10_000)
        .map(|i| (100 + (i % 100) as u64, format!("q{i}")))
        .collect();
    let bodies: Vec<Vec<u8>> = sends.iter().map(|(to, id)| send_body(*to, id)).collect();
    let stored = || node.metric("im_queue_stored_total").unwrap_or(0);

    publish(&broker.url(), &bodies[..5_000]);
    eventually("2,000 stored", || (stored() >= 2_000).then_some(()));
    broker.kill();
    let at_kill = stored();
    thread::sleep(Duration::from_millis(500));
    broker.up();
    publish(&broker.url(), &bodies[5_000..]);

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut most_in_flight = 0;
    while stored() < 10_000 {
        assert!(Instant::now() < deadline, "{} of 10,000 stored", stored());
        most_in_flight = most_in_flight.max(node.metric("im_queue_in_flight").unwrap_or(0));
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        most_in_flight <= 64,
        "in flight {most_in_flight} over the bound"
    );
    assert!(
        at_kill < 10_000,
        "the broker died mid-run ({at_kill} stored)"
    );

    // Every conversation holds its messages once, in queue order.
    let mut expected: HashMap<u64, Vec<String>> = HashMap::new();
    for (to, id) in &sends {
        expected.entry(*to).or_default().push(id.clone());
    }
    let mut system = node.login(SYSTEM, "check");
    for (to, ids) in &expected {
        let history: Vec<String> = whole_history(&mut system, *to)
            .into_iter()
            .map(|m| m.client_msg_id)
            .collect();
        assert_eq!(&history, ids, "conversation with {to}");
    }
    thread::sleep(Duration::from_millis(500));
    assert_eq!(stored(), 10_000, "nothing stored twice");
    eprintln!(
        "stored 10,000 ({at_kill} before the broker's kill -9); {} duplicates absorbed, {} retries, most in flight {most_in_flight}",
        node.metric("im_queue_duplicates_total").unwrap_or(0),
        node.metric("im_queue_retries_total").unwrap_or(0),
    );
}

#[test]
fn poison_requests_are_dead_lettered_with_their_reason_and_hold_nothing_up() {
    let broker = Broker::start("poison");
    let node = node(&broker);
    let poison: [&[u8]; 4] = [
        b"not json",
        br#"{"to_uid": 0, "client_msg_id": "zero", "text": "x"}"#,
        br#"{"to_uid": 5, "client_msg_id": "extra", "text": "x", "colour": "red"}"#,
        br#"{"to_uid": 5, "client_msg_id": "both", "text": "x", "content_base64": "eA=="}"#,
    ];
    let mut bodies: Vec<Vec<u8>> = poison.iter().map(|b| b.to_vec()).collect();
    bodies.push(send_body(5, "good"));
    publish(&broker.url(), &bodies);
    eventually("the good one stored", || {
        (node.metric("im_queue_stored_total") == Some(1)).then_some(())
    });
    eventually("four dead letters", || {
        (node.metric("im_queue_dead_lettered_total") == Some(4)).then_some(())
    });

    let dead = runtime().block_on(async {
        let client = async_nats::connect(broker.url()).await.unwrap();
        let js = jetstream::new(client);
        let stream = js.get_stream("IM_SYSTEM_DEAD").await.unwrap();
        let consumer = stream
            .create_consumer(consumer::pull::Config::default())
            .await
            .unwrap();
        let mut batch = consumer.fetch().max_messages(10).messages().await.unwrap();
        let mut dead = Vec::new();
        while let Some(Ok(message)) = batch.next().await {
            let headers = message.headers.clone().unwrap();
            dead.push((
                message.payload.to_vec(),
                headers.get("Im-Error-Code").unwrap().to_string(),
                headers.get("Im-Error-Reason").unwrap().to_string(),
            ));
        }
        dead
    });
    assert_eq!(dead.len(), 4);
    for (body, code, reason) in &dead {
        assert!(
            poison.contains(&body.as_slice()),
            "the request as published"
        );
        assert_eq!(code, "INVALID_ARGUMENT", "{reason}");
        assert!(!reason.is_empty());
    }
    let mut system = node.login(SYSTEM, "check");
    assert_eq!(whole_history(&mut system, 5).len(), 1);
}
