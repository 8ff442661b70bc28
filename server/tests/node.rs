//! A whole node (gateway, logic tier, admin port) on port 0: real tokens,
//! real presence, real metrics page.

use std::time::Duration;

#[path = "contract/harness.rs"]
mod harness;

use client::Client;
use harness::http_get;
use protocol::{Body, ErrorCode, pb, token};
use server::Config;
use server::Node;

const SECRET: &[u8] = b"node-test-secret";

static NEXT_DIR: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn node() -> Node {
    let mut config = Config::default();
    config.gateway.listen = "127.0.0.1:0".into();
    config.admin.listen = "127.0.0.1:0".into();
    config.api.listen = String::new();
    config.gateway.websocket.listen = String::new();
    config.auth.secret = String::from_utf8(SECRET.to_vec()).unwrap();
    config.storage.data_dir = std::env::temp_dir()
        .join(format!(
            "im-node-test-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ))
        .display()
        .to_string();
    Node::start(&config).expect("node starts")
}

fn valid_token(uid: u64) -> String {
    token::mint(SECRET, uid, runtime::clock::unix_secs() + 60)
}

fn connect(node: &Node) -> Client {
    let mut client = Client::connect(node.local_addr()).unwrap();
    client.set_timeout(Duration::from_secs(5));
    client
}

#[test]
fn tokens_are_verified_and_same_device_is_kicked() {
    let node = node();
    let mut phone = connect(&node);
    phone
        .login(42, &valid_token(42), "phone", pb::Platform::Mobile)
        .unwrap();

    // Another uid's token, an expired one, a forged one: AUTH_FAILED, closed.
    let expired = token::mint(SECRET, 42, runtime::clock::unix_secs() - 1);
    let forged = token::mint(b"other secret", 42, runtime::clock::unix_secs() + 60);
    for bad in [valid_token(43), expired, forged] {
        let mut client = connect(&node);
        let err = client.login(42, &bad, "pc", pb::Platform::Pc).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::AuthFailed), "{err}");
        client.wait_closed(Duration::from_secs(5)).unwrap();
    }

    let mut again = connect(&node);
    again
        .login(42, &valid_token(42), "phone", pb::Platform::Mobile)
        .unwrap();
    let kick = phone
        .next_event(Duration::from_secs(5))
        .unwrap()
        .expect("kick");
    assert!(matches!(kick.body, Some(Body::Kick(_))), "{kick:?}");
    phone.wait_closed(Duration::from_secs(5)).unwrap();
    again.call(pb::Ping {}).unwrap();
    node.shutdown();
}

#[test]
fn admin_port_serves_metrics_and_health() {
    let node = node();
    let mut client = connect(&node);
    client
        .login(7, &valid_token(7), "phone", pb::Platform::Mobile)
        .unwrap();
    // One stored message to an offline user, one refused send.
    client
        .call(pb::SendReq {
            to_uid: 8,
            client_msg_id: "m".into(),
            content_type: 1,
            content: b"hi".to_vec(),
        })
        .unwrap();
    let refused = client.call(pb::SendReq {
        to_uid: 7,
        client_msg_id: "x".into(),
        content_type: 1,
        content: vec![],
    });
    assert_eq!(
        refused.unwrap_err().code(),
        Some(ErrorCode::InvalidArgument)
    );
    let admin = node.admin_addr().expect("admin port on");
    assert!(http_get(admin, "/healthz").ends_with("ok\n"));
    let metrics = http_get(admin, "/metrics");
    assert!(metrics.starts_with("HTTP/1.0 200 OK"), "{metrics}");
    assert!(metrics.contains("\nim_gateway_sessions 1\n"), "{metrics}");
    assert!(
        metrics.contains("\nim_gateway_logins_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("im_gateway_queue_depth{queue=\"uplink\"}"),
        "{metrics}"
    );
    for line in [
        "\nim_logic_logins_total 1\n",
        "\nim_logic_messages_stored_total 1\n",
        "\nim_logic_commit_batches_total 1\n",
        "\nim_logic_offline_notifications_total 1\n",
        "\nim_logic_online_users 1\n",
        "\nim_logic_errors_total{code=\"INVALID_ARGUMENT\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line:?} missing from\n{metrics}");
    }
    assert!(http_get(admin, "/nope").contains(" 404 "));
    node.shutdown();
}
