//! TLS on the client port, end to end: clients that verify the server's
//! certificate against a test CA, in the same conversations as plain TCP
//! clients; what is not TLS, or not trusted, ends without touching other
//! sessions; SIGHUP's reload serves the new certificate to new connections
//! while old ones stay up; a listener configured without a certificate
//! makes a self-signed one.

#[path = "contract/harness.rs"]
mod harness;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use client::{Client, ClientError, tls_config};
use harness::*;
use protocol::pb;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A certificate authority of the test's own.
struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for localhost, signed by this CA, written to
    /// `dir` as `server.crt` and `server.key`.
    fn issue(&self, dir: &Path) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        tls_config(self.pem.as_bytes()).unwrap()
    }
}

fn tls_node(ca: &TestCa) -> TestNode {
    let certs = std::env::temp_dir().join(format!(
        "im-tls-certs-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    ca.issue(&certs);
    TestNode::with(Store::Sqlite, |config| {
        config.admin.listen = "127.0.0.1:0".into();
        config.api.listen = String::new();
        config.gateway.websocket.listen = String::new();
        config.gateway.tls.listen = "127.0.0.1:0".into();
        config.gateway.tls.cert = certs.join("server.crt").display().to_string();
        config.gateway.tls.key = certs.join("server.key").display().to_string();
    })
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn tls_login(node: &TestNode, ca: &TestCa, uid: u64, device: &str) -> Client {
    let mut client = Client::connect_tls(node.tls_addr(), "localhost", ca.client_config())
        .expect("a TLS connection the client trusts");
    client.set_timeout(WAIT);
    client
        .login(uid, &valid_token(uid), device, pb::Platform::Web)
        .expect("login over TLS");
    client
}

#[test]
fn tls_and_plain_clients_share_a_conversation() {
    let ca = TestCa::new();
    let node = tls_node(&ca);
    let mut alice = tls_login(&node, &ca, 1, "phone");
    let mut bob = node.login(2, "pc");

    let sent = send(&mut alice, 2, "t1", b"over tls");
    assert_eq!(expect_push(&mut bob).msg_id, sent.msg_id);
    let back = send(&mut bob, 1, "p1", b"over tcp");
    let pushed = expect_push(&mut alice);
    assert_eq!(
        (pushed.msg_id, pushed.content.as_slice()),
        (back.msg_id, &b"over tcp"[..])
    );
    read(&mut alice, 2, 2);
    assert_eq!(expect_read_notice(&mut bob).seq, 2);
    let page = history(&mut alice, 2, 0, 0, 0);
    assert_eq!(seqs(&page.messages), vec![1, 2]);
}

#[test]
fn what_is_not_tls_or_not_trusted_ends_alone() {
    let ca = TestCa::new();
    let node = tls_node(&ca);
    let mut alice = tls_login(&node, &ca, 1, "phone");

    // Plaintext frames to the TLS port: not TLS, closed.
    let mut plain = Client::connect(node.tls_addr()).unwrap();
    plain.set_timeout(WAIT);
    let err = plain
        .login(9, &valid_token(9), "x", pb::Platform::Pc)
        .expect_err("no login in plaintext on the TLS port");
    assert!(!matches!(err, ClientError::Server { .. }), "{err}");
    // Garbage that starts like a handshake record: closed (after an alert,
    // if rustls has one for it), not left hanging.
    let mut garbage = std::net::TcpStream::connect(node.tls_addr()).unwrap();
    garbage.set_read_timeout(Some(WAIT)).unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    let mut answer = Vec::new();
    garbage.read_to_end(&mut answer).expect("closed, not hung");
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "nothing, or a TLS alert record: {answer:?}"
    );
    // A client that does not trust this server's certificate.
    let stranger = TestCa::new();
    let refused = Client::connect_tls(node.tls_addr(), "localhost", stranger.client_config());
    assert!(
        matches!(refused, Err(ClientError::Tls(_))),
        "{:?}",
        refused.err()
    );
    // The wrong name.
    let refused = Client::connect_tls(node.tls_addr(), "im.example.test", ca.client_config());
    assert!(
        matches!(refused, Err(ClientError::Tls(_))),
        "{:?}",
        refused.err()
    );

    eventually("the failures counted", || {
        let failures = |reason: &str| {
            node.metric(&format!(
                "im_gateway_tls_failures_total{{reason=\"{reason}\"}}"
            ))
            .unwrap_or(0)
        };
        let (not_tls, alerts) = (failures("not_tls"), failures("alert_received"));
        let other = failures("other") + failures("protocol");
        (not_tls + other >= 2 && alerts >= 2).then_some(())
    });
    // Alice never noticed.
    send(&mut alice, 2, "still", b"fine");
    ping_ok(&mut alice);
}

fn ping_ok(client: &mut Client) {
    client.call(pb::Ping {}).expect("pong");
}

#[test]
fn a_reloaded_certificate_serves_new_connections_and_old_ones_stay() {
    let first = TestCa::new();
    let node = tls_node(&first);
    let mut old = tls_login(&node, &first, 1, "phone");

    // New files from another CA, then SIGHUP's reload.
    let second = TestCa::new();
    let cert = Path::new(&node.config.gateway.tls.cert)
        .parent()
        .unwrap()
        .to_owned();
    second.issue(&cert);
    node.reload_tls();

    let mut new = tls_login(&node, &second, 2, "phone");
    assert!(
        Client::connect_tls(node.tls_addr(), "localhost", first.client_config()).is_err(),
        "new connections get the new certificate"
    );
    send(&mut old, 2, "across", b"the reload");
    expect_push(&mut new);
    ping_ok(&mut old);
}

#[test]
fn a_tls_listener_without_a_certificate_makes_a_self_signed_one() {
    let node = TestNode::with(Store::Sqlite, |config| {
        config.gateway.tls.listen = "127.0.0.1:0".into();
    });
    let cert = node.dir.join("tls/self-signed.crt");
    let pem = std::fs::read(&cert).expect("the self-signed certificate in the data dir");
    let mut client = Client::connect_tls(node.tls_addr(), "localhost", tls_config(&pem).unwrap())
        .expect("a client pinning it connects");
    client.set_timeout(WAIT);
    client
        .login(5, &valid_token(5), "phone", pb::Platform::Pc)
        .expect("login");
}

/// The same reload on the real binary, by signal: `kill -HUP`.
#[test]
fn sighup_reloads_the_certificate_of_the_running_binary() {
    let dir = std::env::temp_dir().join(format!("im-tls-sighup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let first = TestCa::new();
    first.issue(&dir);
    let (port, tls_port) = (free_port(), free_port());
    let config = dir.join("im.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:{port}\"\n\
             [gateway.tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = \"{0}/server.crt\"\nkey = \"{0}/server.key\"\n\
             [admin]\nlisten = \"\"\n[api]\nlisten = \"\"\n[gateway.websocket]\nlisten = \"\"\n[auth]\nsecret = \"{SECRET}\"\n[storage]\ndata_dir = \"{0}\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_im-server"));
    command.arg("--config").arg(&config);
    let server = spawn_logged(command, "", &dir.join("server.log"));
    wait_for_port(tls_port, "the TLS port");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], tls_port));
    let mut old = Client::connect_tls(addr, "localhost", first.client_config()).unwrap();
    old.set_timeout(WAIT);
    old.login(1, &valid_token(1), "phone", pb::Platform::Pc)
        .unwrap();

    let second = TestCa::new();
    second.issue(&dir);
    // SAFETY: kill sends a signal to the child we started; no memory is touched.
    assert_eq!(unsafe { libc::kill(server.0.id() as i32, libc::SIGHUP) }, 0);
    eventually("the new certificate served", || {
        Client::connect_tls(addr, "localhost", second.client_config()).ok()
    });
    ping_ok(&mut old);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
