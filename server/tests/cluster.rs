//! The tiers as separate processes: the real `im-logic serve` and several
//! real `im-gateway`s on one machine, linked over TCP. Messages, read
//! notices and kicks cross gateways; a gateway killed with SIGKILL loses its
//! sessions and nothing else; a gateway without the link secret is refused.

#[path = "contract/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use client::Client;
use harness::*;
use protocol::{Body, ErrorCode, pb};

const LINK_SECRET: &str = "cluster-test-link-secret";
const API_KEY: &str = "cluster-test-api-key";

/// One `im-logic serve` and its gateways, each a process of its own.
struct Cluster {
    dir: PathBuf,
    config: PathBuf,
    link: SocketAddr,
    admin: SocketAddr,
    /// The logic node's business API.
    api: SocketAddr,
    /// Kept to be killed with the cluster.
    _logic: Process,
    gateways: Vec<(Process, SocketAddr)>,
}

impl Cluster {
    fn start(name: &str, gateways: usize) -> Cluster {
        let dir = std::env::temp_dir().join(format!("im-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (link_port, admin_port, api_port) = (free_port(), free_port(), free_port());
        let config = dir.join("im.toml");
        let toml = format!(
            "[auth]\nsecret = \"{SECRET}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\nkeys = [\"{API_KEY}\"]\nsystem_uid = 9\n\
             [gateway.websocket]\nlisten = \"\"\n\
             [storage]\ndata_dir = \"{}\"\n\
             [link]\nlisten = \"127.0.0.1:{link_port}\"\nheartbeat_secs = 1\ndead_after_secs = 3\n",
            dir.display()
        );
        std::fs::write(&config, toml).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_im-logic"));
        command.arg("serve").arg("--config").arg(&config);
        let logic = spawn_logged(command, LINK_SECRET, &dir.join("logic.log"));
        wait_for_port(link_port, "im-logic's link port");
        wait_for_port(admin_port, "im-logic's admin port");
        let mut cluster = Cluster {
            dir,
            config,
            link: SocketAddr::from(([127, 0, 0, 1], link_port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
            _logic: logic,
            gateways: Vec::new(),
        };
        for _ in 0..gateways {
            cluster.add_gateway(LINK_SECRET);
        }
        cluster.wait_linked(gateways);
        cluster
    }

    /// Starts one more gateway with this link secret; returns its index.
    fn add_gateway(&mut self, secret: &str) -> usize {
        let n = self.gateways.len();
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_im-gateway"));
        command
            .arg("--config")
            .arg(&self.config)
            .args(["--logic", &self.link.to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin", ""]);
        let log = self.dir.join(format!("gateway-{n}.log"));
        let gateway = spawn_logged(command, secret, &log);
        self.gateways
            .push((gateway, SocketAddr::from(([127, 0, 0, 1], port))));
        wait_for_port(port, "im-gateway's client port");
        n
    }

    /// The gateways the logic node has linked.
    fn linked(&self) -> i64 {
        let page = http_get(self.admin, "/metrics");
        page.lines()
            .find_map(|l| l.strip_prefix("im_link_gateways ")?.parse().ok())
            .unwrap_or(-1)
    }

    fn wait_linked(&self, count: usize) {
        eventually(&format!("{count} gateways linked"), || {
            (self.linked() == count as i64).then_some(())
        });
    }

    fn login(&self, gateway: usize, uid: u64, device: &str) -> Client {
        let mut client = Client::connect(self.gateways[gateway].1).expect("connect");
        client.set_timeout(WAIT);
        client
            .login(uid, &valid_token(uid), device, pb::Platform::Mobile)
            .expect("login");
        client
    }

    /// A call to the logic node's API; the answer's JSON.
    fn api(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.api))
            .header("Authorization", format!("Bearer {API_KEY}"));
        let agent = ureq::agent();
        let mut response = match body {
            Some(body) => agent.run(request.body(body.to_string()).unwrap()),
            None => agent.run(request.body(()).unwrap()),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        response.body_mut().read_json().expect("JSON")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.gateways.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn messages_read_notices_and_kicks_cross_gateways() {
    let cluster = Cluster::start("cross", 3);
    let mut alice = cluster.login(0, 1, "phone");
    let mut bob_phone = cluster.login(1, 2, "phone");
    let mut bob_laptop = cluster.login(2, 2, "laptop");

    let sent = send(&mut alice, 2, "c1", b"across gateways");
    assert_eq!(sent.seq, 1);
    for device in [&mut bob_phone, &mut bob_laptop] {
        let message = expect_push(device);
        assert_eq!(
            (message.msg_id, message.content.as_slice()),
            (sent.msg_id, &b"across gateways"[..])
        );
    }

    // Bob reads on his phone: Alice (gateway 0) gets the receipt, his laptop (gateway 2) too.
    read(&mut bob_phone, 1, 1);
    for device in [&mut alice, &mut bob_laptop] {
        let notice = expect_read_notice(device);
        assert_eq!((notice.reader_uid, notice.peer_uid, notice.seq), (2, 1, 1));
    }

    // Bob's phone logs in again through gateway 0: the session on gateway 1 is kicked.
    let _phone_again = cluster.login(0, 2, "phone");
    let frame = next_event(&mut bob_phone);
    assert!(matches!(frame.body, Some(Body::Kick(_))), "{frame:?}");
    bob_phone
        .wait_closed(WAIT)
        .expect("the replaced session closes");
}

#[test]
fn the_logic_nodes_api_sees_and_reaches_every_gateway() {
    let cluster = Cluster::start("api", 2);
    let mut alice = cluster.login(0, 1, "phone");
    let mut bob = cluster.login(1, 2, "laptop");
    wait_for_port(cluster.api.port(), "the logic node's API");

    // Presence names the gateway each device is on, and where it listens.
    let answer = cluster.api("GET", "/v1/presence?uids=1,2", None);
    for (user, gateway) in answer["users"].as_array().unwrap().iter().zip([0, 1]) {
        assert_eq!(user["online"], true, "{answer}");
        assert_eq!(
            user["devices"][0]["gateway_addr"],
            cluster.gateways[gateway].1.to_string()
        );
    }
    assert_ne!(
        answer["users"][0]["devices"][0]["gateway"],
        answer["users"][1]["devices"][0]["gateway"]
    );

    // A system message reaches the device on gateway 1; a kick closes it.
    let sent = cluster.api(
        "POST",
        "/v1/messages",
        Some(serde_json::json!({"to_uid": 2, "client_msg_id": "sys-1", "text": "hello"})),
    );
    let pushed = expect_push(&mut bob);
    assert_eq!(pushed.msg_id.to_string(), sent["msg_id"].as_str().unwrap());
    assert_eq!(pushed.from_uid, 9);
    let kicked = cluster.api(
        "POST",
        "/v1/users/2/kick",
        Some(serde_json::json!({"reason": "maintenance"})),
    );
    assert_eq!(kicked["kicked"], 1);
    let frame = next_event(&mut bob);
    assert_eq!(
        frame.body,
        Some(Body::Kick(pb::Kick {
            reason: "maintenance".into()
        }))
    );
    bob.wait_closed(WAIT).expect("kicked across the link");
    expect_quiet(&mut alice);
}

#[test]
fn a_killed_gateway_loses_its_sessions_and_nothing_else() {
    let mut cluster = Cluster::start("kill", 3);
    let mut alice = cluster.login(0, 1, "phone");
    let mut bob = cluster.login(1, 2, "phone");
    for i in 1..=5 {
        send(&mut alice, 2, &format!("before-{i}"), b"x");
        expect_push(&mut bob);
    }

    // SIGKILL: no goodbye on the link; the logic node sees it end.
    drop(cluster.gateways.remove(1));
    cluster.wait_linked(2);
    assert!(
        cluster
            .log("logic.log")
            .contains("gone: 1 sessions dropped")
    );
    for i in 1..=5 {
        let sent = send(&mut alice, 2, &format!("after-{i}"), b"y");
        assert_eq!(sent.seq, 5 + i);
    }

    // Bob's client comes back through another gateway and finds everything.
    let mut bob = cluster.login(1, 2, "phone");
    let page = history(&mut bob, 1, 0, 0, 0);
    assert_eq!(seqs(&page.messages), (1..=10).collect::<Vec<_>>());
    let synced = sync(&mut bob, 0, 0);
    assert_eq!(synced.conversations.len(), 1);
    assert_eq!(synced.conversations[0].unread, 10);
    // And what is sent now reaches him there.
    let sent = send(&mut alice, 2, "later", b"z");
    assert_eq!(expect_push(&mut bob).msg_id, sent.msg_id);
    expect_quiet(&mut bob);
}

#[test]
fn a_gateway_without_the_link_secret_is_refused_and_its_clients_told() {
    let mut cluster = Cluster::start("secret", 1);
    let rogue = cluster.add_gateway("not-the-secret");
    eventually("the refusal logged", || {
        cluster
            .log("logic.log")
            .contains("refused a gateway")
            .then_some(())
    });
    assert_eq!(cluster.linked(), 1);
    let mut client = Client::connect(cluster.gateways[rogue].1).expect("connect");
    client.set_timeout(WAIT);
    let err = client
        .login(7, &valid_token(7), "phone", pb::Platform::Mobile)
        .expect_err("no logic tier behind this gateway");
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");
    assert!(
        cluster
            .log(&format!("gateway-{rogue}.log"))
            .contains("refused this gateway")
    );
}
