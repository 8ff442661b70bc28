//! The business API against the real `im-server` binary, over real HTTP:
//! every endpoint, its refusals (wrong key, oversized body, malformed JSON,
//! bad uids, over the key's rate), an API send reaching a TCP client's
//! device in its conversation's seq order, dedup by client_msg_id, presence
//! and kick of real connections; `/metrics` clean under `promtool check
//! metrics`, the Grafana dashboard naming only exported metrics, and
//! `/readyz` failing while MySQL is cut off.

#[path = "contract/harness.rs"]
mod harness;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use client::Client;
use harness::*;
use protocol::{Body, ErrorCode, pb};
use serde_json::{Value, json};

const KEY: &str = "main:api-test-key-0123456789";
const LIMITED: &str = "limited:api-limited-key-0123456789";
/// The system account, api.system_uid.
const SYSTEM: u64 = 10;

fn secret(key: &str) -> &str {
    key.split_once(':').map_or(key, |(_, secret)| secret)
}

/// One `im-server` process with its client, admin and API ports.
struct Server {
    process: Process,
    dir: PathBuf,
    client: SocketAddr,
    admin: SocketAddr,
    api: String,
    http: ureq::Agent,
}

impl Server {
    fn start(name: &str, extra_toml: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("im-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (port, admin, api) = (free_port(), free_port(), free_port());
        let config = dir.join("im.toml");
        std::fs::write(
            &config,
            format!(
                "[gateway]\nlisten = \"127.0.0.1:{port}\"\n\
                 [gateway.websocket]\nlisten = \"\"\n\
                 [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
                 [auth]\nsecret = \"{SECRET}\"\n\
                 [api]\nlisten = \"127.0.0.1:{api}\"\nkeys = [\"{KEY}\", \"{LIMITED}\"]\n\
                 system_uid = {SYSTEM}\nmax_body_bytes = 16384\nrequests_per_sec = 100\nburst = 1500\n\
                 {extra_toml}"
            ),
        )
        .unwrap();
        let process = Self::spawn(&dir);
        wait_for_port(api, "the API port");
        wait_for_port(port, "the client port");
        Server {
            process,
            dir,
            client: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            api: format!("http://127.0.0.1:{api}"),
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(15)))
                .build()
                .into(),
        }
    }

    fn spawn(dir: &std::path::Path) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_im-server"));
        command
            .arg("--config")
            .arg(dir.join("im.toml"))
            .args(["--data-dir", &dir.display().to_string()])
            .env("RUST_LOG", "info")
            .env_remove("IM_API_KEYS");
        spawn_logged(command, "", &dir.join("server.log"))
    }

    /// kill -9, then the same server again on the same data.
    fn restart(&mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        self.process = Self::spawn(&self.dir);
        let api_port = self.api.rsplit(':').next().unwrap().parse().unwrap();
        wait_for_port(api_port, "the API port");
        wait_for_port(self.client.port(), "the client port");
    }

    /// A request with `key` (None: no Authorization header) and a raw
    /// body; returns the status and the JSON answer (Null if not JSON).
    fn raw(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&[u8]>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.api);
        let request = ureq::http::Request::builder().method(method).uri(&url);
        let request = match key {
            Some(key) => request.header("Authorization", format!("Bearer {}", secret(key))),
            None => request,
        };
        let request = request.header("Content-Type", "application/json");
        let result = match body {
            Some(body) => self.http.run(request.body(body.to_vec()).unwrap()),
            None => self.http.run(request.body(()).unwrap()),
        };
        let mut response = result.expect("an HTTP answer");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string().into_bytes());
        self.raw(method, path, Some(KEY), body.as_deref())
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(method, path, body);
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer
    }

    /// Asserts the call is refused with `status` and the wire code `code`.
    fn refused(&self, method: &str, path: &str, body: Option<Value>, status: u16, code: &str) {
        let (got, answer) = self.call(method, path, body);
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {answer}"
        );
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    fn token(&self, uid: u64) -> String {
        let answer = self.ok(
            "POST",
            "/v1/tokens",
            Some(json!({"uid": uid, "ttl_secs": 600})),
        );
        answer["token"].as_str().expect("a token").to_owned()
    }

    /// A TCP client logged in as `uid` with a token the API minted.
    fn login(&self, uid: u64, device: &str) -> Client {
        let mut client = Client::connect(self.client).expect("connect");
        client.set_timeout(WAIT);
        client
            .login(uid, &self.token(uid), device, pb::Platform::Mobile)
            .expect("login with an API-minted token");
        client
    }

    fn admin_get(&self, path: &str) -> (u16, String) {
        let mut response = self
            .http
            .get(format!("http://{}{path}", self.admin))
            .call()
            .expect("the admin port answers");
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            eprintln!("server log:\n{log}");
        }
    }
}

fn send(server: &Server, from: Option<u64>, to: u64, client_msg_id: &str, text: &str) -> Value {
    let mut body = json!({"to_uid": to, "client_msg_id": client_msg_id, "text": text});
    if let Some(from) = from {
        body["from_uid"] = json!(from);
    }
    server.ok("POST", "/v1/messages", Some(body))
}

fn msg_id(answer: &Value) -> u64 {
    answer["msg_id"]
        .as_str()
        .expect("msg_id")
        .parse()
        .expect("decimal msg_id")
}

#[test]
fn api_sends_take_the_clients_path_in_seq_order_and_dedup() {
    let server = Server::start("path", "");
    let mut alice = server.login(101, "phone");

    // System message, the user's own send, a system message: one conversation.
    let first = send(&server, None, 101, "order-1", "your order shipped");
    assert_eq!(
        (first["seq"].as_u64(), first["duplicate"].as_bool()),
        (Some(1), Some(false))
    );
    let pushed = expect_push(&mut alice);
    assert_eq!(
        (pushed.msg_id, pushed.seq, pushed.from_uid),
        (msg_id(&first), 1, SYSTEM)
    );
    assert_eq!(&pushed.content[..], b"your order shipped");
    ack(&mut alice, pushed.msg_id);
    let own = send_from_client(&mut alice, SYSTEM, "c-1", b"thanks");
    assert_eq!(own.seq, 2);
    let third = send(&server, None, 101, "order-2", "delivered");
    assert_eq!(third["seq"].as_u64(), Some(3));
    let pushed = expect_push(&mut alice);
    assert_eq!((pushed.msg_id, pushed.seq), (msg_id(&third), 3));
    ack(&mut alice, pushed.msg_id);

    // The same client_msg_id again: the same message, not a second one.
    let again = send(&server, None, 101, "order-2", "delivered");
    assert_eq!(
        (
            msg_id(&again),
            again["seq"].as_u64(),
            again["duplicate"].as_bool()
        ),
        (msg_id(&third), Some(3), Some(true))
    );
    expect_quiet(&mut alice);

    // A user's send through the API, and binary content.
    let from_bob = server.ok(
        "POST",
        "/v1/messages",
        Some(
            json!({"from_uid": 102, "to_uid": 101, "client_msg_id": "b-1",
                    "content_type": 7, "content_base64": "AAEC/w=="}),
        ),
    );
    let pushed = expect_push(&mut alice);
    assert_eq!(
        (pushed.from_uid, pushed.content_type, &pushed.content[..]),
        (102, 7, &[0u8, 1, 2, 255][..])
    );
    assert_eq!(pushed.msg_id, msg_id(&from_bob));

    // History and conversations as the API shows them.
    let page = server.ok(
        "GET",
        &format!("/v1/users/101/conversations/{SYSTEM}/messages?limit=10"),
        None,
    );
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(page["messages"][1]["text"], "thanks");
    assert_eq!(page["messages"][1]["from_uid"], 101);
    let older = server.ok(
        "GET",
        &format!("/v1/users/101/conversations/{SYSTEM}/messages?before_seq=3&limit=1"),
        None,
    );
    assert_eq!(
        (
            older["messages"][0]["seq"].as_u64(),
            older["more"].as_bool()
        ),
        (Some(2), Some(true))
    );
    let list = server.ok("GET", "/v1/users/101/conversations?limit=1", None);
    assert_eq!(
        list["conversations"][0]["peer_uid"], 102,
        "most recent first: {list}"
    );
    let cursor = list["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let rest = server.ok(
        "GET",
        &format!("/v1/users/101/conversations?limit=1&cursor={cursor}"),
        None,
    );
    assert_eq!(rest["conversations"][0]["peer_uid"], SYSTEM);
    assert_eq!(rest["conversations"][0]["last_seq"], 3);
    assert!(rest.get("next_cursor").is_none(), "{rest}");
    assert_eq!(list["total_unread"], rest["total_unread"]);
}

fn send_from_client(
    client: &mut Client,
    to: u64,
    client_msg_id: &str,
    content: &[u8],
) -> pb::SendResp {
    client
        .call(pb::SendReq {
            to_uid: to,
            client_msg_id: client_msg_id.into(),
            content_type: 0,
            content: content.to_vec(),
        })
        .expect("send_resp")
}

#[test]
fn refusals_have_wire_codes_and_fitting_statuses() {
    let server = Server::start("refusals", "");
    let send = || json!({"to_uid": 2, "client_msg_id": "x", "text": "hi"});

    let (status, answer) = server.raw(
        "POST",
        "/v1/messages",
        None,
        Some(send().to_string().as_bytes()),
    );
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("AUTH_FAILED"))
    );
    let wrong = "main:api-test-key-0123456780";
    let (status, answer) = server.raw(
        "POST",
        "/v1/messages",
        Some(wrong),
        Some(send().to_string().as_bytes()),
    );
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("AUTH_FAILED"))
    );
    let (_, metrics) = server.admin_get("/metrics");
    assert!(
        metrics.contains("im_api_unauthorized_total 2\n"),
        "the 401s are counted"
    );

    // max_body_bytes is 16384.
    let big = json!({"to_uid": 2, "client_msg_id": "big", "text": "x".repeat(17000)});
    server.refused("POST", "/v1/messages", Some(big), 413, "FRAME_TOO_LARGE");
    let (status, answer) = server.raw("POST", "/v1/messages", Some(KEY), Some(b"{\"to_uid\": 2,"));
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    let (status, _) = server.raw("POST", "/v1/messages", Some(KEY), Some(b"[1, 2]"));
    assert_eq!(status, 400);
    server.refused(
        "POST",
        "/v1/messages",
        Some(json!({"to_uid": 2, "client_msg_id": "x", "text": "a", "extra": 1})),
        400,
        "INVALID_ARGUMENT",
    );
    server.refused(
        "POST",
        "/v1/messages",
        Some(json!({"to_uid": 2, "client_msg_id": "x"})),
        400,
        "INVALID_ARGUMENT",
    );
    server.refused(
        "POST",
        "/v1/messages",
        Some(json!({"to_uid": 2, "client_msg_id": "x", "text": "a", "content_base64": "YQ=="})),
        400,
        "INVALID_ARGUMENT",
    );
    server.refused(
        "POST",
        "/v1/messages",
        Some(json!({"to_uid": 2, "client_msg_id": "x", "content_base64": "not base64!"})),
        400,
        "INVALID_ARGUMENT",
    );

    // Bad uids: 0, not a number, the sender itself; a client_msg_id too long;
    // content over logic.max_content_bytes is the logic tier's refusal.
    server.refused(
        "POST",
        "/v1/messages",
        Some(json!({"to_uid": 0, "client_msg_id": "x", "text": "a"})),
        400,
        "INVALID_ARGUMENT",
    );
    server.refused(
        "POST",
        "/v1/messages",
        Some(json!({"from_uid": 0, "to_uid": 2, "client_msg_id": "x", "text": "a"})),
        400,
        "INVALID_ARGUMENT",
    );
    server.refused(
        "POST",
        "/v1/messages",
        Some(json!({"from_uid": 3, "to_uid": 3, "client_msg_id": "x", "text": "a"})),
        400,
        "INVALID_ARGUMENT",
    );
    server.refused(
        "POST",
        "/v1/messages",
        Some(json!({"to_uid": 2, "client_msg_id": "x".repeat(65), "text": "a"})),
        400,
        "INVALID_ARGUMENT",
    );
    server.refused(
        "GET",
        "/v1/users/abc/conversations",
        None,
        400,
        "INVALID_ARGUMENT",
    );
    server.refused("GET", "/v1/users/0/profile", None, 400, "INVALID_ARGUMENT");
    server.refused(
        "GET",
        "/v1/presence?uids=1,x",
        None,
        400,
        "INVALID_ARGUMENT",
    );
    let many: Vec<String> = (1..=101).map(|u| u.to_string()).collect();
    server.refused(
        "GET",
        &format!("/v1/presence?uids={}", many.join(",")),
        None,
        400,
        "INVALID_ARGUMENT",
    );
    server.refused(
        "POST",
        "/v1/tokens",
        Some(json!({"uid": 5, "ttl_secs": 0})),
        400,
        "INVALID_ARGUMENT",
    );
    server.refused("GET", "/v1/nothing-here", None, 404, "NOT_FOUND");

    // A uid nobody has used: offline, no conversations, an empty profile.
    let nobody = server.ok("GET", "/v1/presence?uids=987654", None);
    assert_eq!(
        nobody["users"][0],
        json!({"uid": 987654, "online": false, "devices": []})
    );
    let list = server.ok("GET", "/v1/users/987654/conversations", None);
    assert_eq!(
        (
            list["conversations"].as_array().map(Vec::len),
            list["total_unread"].as_u64()
        ),
        (Some(0), Some(0))
    );
    let profile = server.ok("GET", "/v1/users/987654/profile", None);
    assert_eq!(profile, json!({"nickname": "", "avatar_url": ""}));
    let page = server.ok("GET", "/v1/users/987654/conversations/1/messages", None);
    assert_eq!(page, json!({"messages": [], "more": false}));

    // Nothing refused was stored.
    let page = server.ok(
        "GET",
        &format!("/v1/users/2/conversations/{SYSTEM}/messages"),
        None,
    );
    assert_eq!(page["messages"], json!([]));
}

#[test]
fn batches_send_per_recipient_and_retry_without_doubles() {
    let server = Server::start("batch", "");
    let mut carol = server.login(203, "phone");
    let batch =
        json!({"to_uids": [201, 202, 203, SYSTEM], "client_msg_id": "promo-7", "text": "50% off"});
    let answer = server.ok("POST", "/v1/messages/batch", Some(batch.clone()));
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for (result, to) in results.iter().zip([201, 202, 203]) {
        assert_eq!(result["to_uid"], to);
        assert_eq!(
            (
                result["sent"]["seq"].as_u64(),
                result["sent"]["duplicate"].as_bool()
            ),
            (Some(1), Some(false)),
            "{result}"
        );
    }
    // The system account cannot message itself; the others are not held back.
    assert_eq!(results[3]["error"]["code"], "INVALID_ARGUMENT");
    let pushed = expect_push(&mut carol);
    assert_eq!(
        (pushed.seq, pushed.client_msg_id.as_str()),
        (1, "promo-7:203")
    );
    assert_eq!(
        pushed.msg_id,
        results[2]["sent"]["msg_id"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    );
    ack(&mut carol, pushed.msg_id);

    let retry = server.ok("POST", "/v1/messages/batch", Some(batch));
    for (before, after) in results
        .iter()
        .zip(retry["results"].as_array().unwrap())
        .take(3)
    {
        assert_eq!(after["sent"]["msg_id"], before["sent"]["msg_id"]);
        assert_eq!(after["sent"]["duplicate"], true);
    }
    expect_quiet(&mut carol);

    let too_many: Vec<u64> = (1000..2001).collect();
    server.refused(
        "POST",
        "/v1/messages/batch",
        Some(json!({"to_uids": too_many, "client_msg_id": "b", "text": "x"})),
        400,
        "INVALID_ARGUMENT",
    );
    server.refused(
        "POST",
        "/v1/messages/batch",
        Some(json!({"to_uids": [5, 5], "client_msg_id": "b", "text": "x"})),
        400,
        "INVALID_ARGUMENT",
    );
    server.refused(
        "POST",
        "/v1/messages/batch",
        Some(json!({"to_uids": [5], "client_msg_id": "b".repeat(44), "text": "x"})),
        400,
        "INVALID_ARGUMENT",
    );
}

#[test]
fn a_key_over_its_rate_gets_429_and_other_keys_do_not() {
    let server = Server::start("rate", "");
    let recipients: Vec<u64> = (5000..6000).collect();
    let batch = json!({"to_uids": recipients, "client_msg_id": "r", "text": "x"});
    let body = batch.to_string().into_bytes();
    // burst 1500: a batch of 1,000 fits once, not twice.
    let (status, answer) = server.raw("POST", "/v1/messages/batch", Some(LIMITED), Some(&body));
    assert_eq!(status, 200, "{answer}");
    let sent = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["sent"].is_object())
        .count();
    assert_eq!(sent, 1000);
    let (status, answer) = server.raw("POST", "/v1/messages/batch", Some(LIMITED), Some(&body));
    assert_eq!(
        (status, answer["code"].as_str()),
        (429, Some("RATE_LIMITED"))
    );
    // The main key has its own bucket.
    send(&server, None, 5000, "other-key", "x");
    let (_, metrics) = server.admin_get("/metrics");
    assert!(metrics.contains("im_api_rate_limited_total 1\n"), "counted");
}

#[test]
fn presence_shows_devices_and_kick_closes_them() {
    let server = Server::start("presence", "");
    let mut phone = server.login(301, "phone");
    let mut laptop = Client::connect(server.client).unwrap();
    laptop.set_timeout(WAIT);
    laptop
        .login(301, &server.token(301), "laptop", pb::Platform::Pc)
        .unwrap();

    let answer = server.ok("GET", "/v1/presence?uids=301,302", None);
    let user = &answer["users"][0];
    assert_eq!(
        (user["uid"].as_u64(), user["online"].as_bool()),
        (Some(301), Some(true))
    );
    let mut devices: Vec<(String, String)> = user["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["device_id"].as_str().unwrap().to_owned(),
                d["platform"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    devices.sort();
    assert_eq!(
        devices,
        vec![
            ("laptop".into(), "PC".into()),
            ("phone".into(), "MOBILE".into())
        ]
    );
    assert_eq!(
        user["devices"][0]["gateway_addr"],
        server.client.to_string()
    );
    assert!(user["devices"][0]["since_ms"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(answer["users"][1]["online"], false);

    let kicked = server.ok(
        "POST",
        "/v1/users/301/kick",
        Some(json!({"device_id": "phone", "reason": "account frozen"})),
    );
    assert_eq!(kicked["kicked"], 1);
    let frame = next_event(&mut phone);
    assert_eq!(
        frame.body,
        Some(Body::Kick(pb::Kick {
            reason: "account frozen".into()
        }))
    );
    phone
        .wait_closed(WAIT)
        .expect("the kicked device is closed");
    eventually("the phone offline", || {
        let answer = server.ok("GET", "/v1/presence?uids=301", None);
        (answer["users"][0]["devices"].as_array().unwrap().len() == 1).then_some(())
    });
    let kicked = server.ok(
        "POST",
        "/v1/users/301/kick",
        Some(json!({"reason": "all of them"})),
    );
    assert_eq!(kicked["kicked"], 1);
    laptop.wait_closed(WAIT).expect("closed");
    let kicked = server.ok(
        "POST",
        "/v1/users/301/kick",
        Some(json!({"reason": "nobody left"})),
    );
    assert_eq!(kicked["kicked"], 0);
}

#[test]
fn profiles_round_trip() {
    let server = Server::start("profile", "");
    let set = json!({"nickname": "Ada", "avatar_url": "https://example.com/a.png"});
    assert_eq!(
        server.ok("PUT", "/v1/users/401/profile", Some(set.clone())),
        set
    );
    assert_eq!(server.ok("GET", "/v1/users/401/profile", None), set);
    server.refused(
        "PUT",
        "/v1/users/401/profile",
        Some(json!({"nickname": "n".repeat(65)})),
        400,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        server.ok("GET", "/v1/users/401/profile", None),
        set,
        "a refused write changed nothing"
    );
    // A client sees what the API set.
    let mut client = server.login(402, "d");
    let profiles = client.call(pb::ProfileReq { uids: vec![401] }).unwrap();
    assert_eq!(profiles.profiles[0].nickname, "Ada");
}

#[test]
fn the_document_is_served_and_names_every_route() {
    let server = Server::start("openapi", "");
    let (status, served) = server.raw("GET", "/v1/openapi.json", None, None);
    assert_eq!(status, 200, "served without a key");
    let file: Value = serde_json::from_str(include_str!("../../api/openapi.json")).unwrap();
    assert_eq!(served, file);
    let paths = file["paths"].as_object().unwrap();
    for route in api::metrics::ROUTES.iter().filter(|r| **r != "other") {
        assert!(paths.contains_key(*route), "{route} is not in the document");
    }
    assert_eq!(
        paths.len(),
        api::metrics::ROUTES.len() - 1,
        "every documented path is served"
    );
}

#[test]
fn metrics_pass_promtool_and_the_dashboard_names_only_exported_metrics() {
    let server = Server::start("metrics", "");
    let mut dave = server.login(501, "phone");
    send(&server, None, 501, "m-1", "hello");
    let pushed = expect_push(&mut dave);
    ack(&mut dave, pushed.msg_id);
    server.ok("GET", "/v1/presence?uids=501", None);
    let (status, page) = server.admin_get("/metrics");
    assert_eq!(status, 200);
    for histogram in [
        "im_logic_send_to_ack_seconds",
        "im_logic_commit_duration_seconds",
        "im_logic_push_ack_seconds",
        "im_logic_webhook_delivery_seconds",
        "im_api_request_duration_seconds",
    ] {
        assert!(
            page.contains(&format!("# TYPE {histogram} histogram")),
            "{histogram} missing"
        );
    }
    assert!(
        page.contains("im_logic_push_ack_seconds_count 1\n"),
        "the ack was timed"
    );
    assert!(page.contains("im_api_responses_total{route=\"/v1/messages\",status=\"200\"} 1\n"));

    let promtool = testkit::find_program(&["promtool"])
        .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)");
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );

    // Every metric a dashboard panel queries is on the page.
    let exported: std::collections::HashSet<&str> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let dashboard: Value = serde_json::from_str(include_str!("../../docs/grafana-dashboard.json"))
        .expect("valid JSON");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                assert!(
                    exported.contains(name.as_str()),
                    "panel {:?} queries {name}, which is not exported",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 10, "the dashboard queries {queried} metrics");
}

/// The metric names a PromQL expression reads: identifiers that start
/// with `im_` (the functions and labels it uses do not).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("im_") {
        let preceded = rest[..at].chars().last();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn readyz_fails_while_storage_is_down_and_recovers() {
    let database = format!("im_api_ready_{}", std::process::id());
    let proxy = Proxy::start();
    let url = format!("mysql://root@{}/{database}?prefer_socket=false", proxy.addr);
    let server = Server::start(
        "ready",
        &format!("[storage]\nbackend = \"mysql\"\nmysql_urls = [\"{url}\"]\n"),
    );
    assert_eq!(server.admin_get("/readyz"), (200, "ready\n".into()));
    send(&server, None, 601, "before", "x");

    proxy.cut();
    let (status, reason) = eventually("/readyz to fail", || {
        let (status, body) = server.admin_get("/readyz");
        (status == 503).then_some((status, body))
    });
    assert!(reason.starts_with("not ready: "), "{status} {reason}");
    assert_eq!(
        server.admin_get("/healthz").0,
        200,
        "the process still answers"
    );
    let (status, answer) = server.call(
        "POST",
        "/v1/messages",
        Some(json!({"to_uid": 601, "client_msg_id": "during", "text": "x"})),
    );
    assert_eq!(
        (status, answer["code"].as_str()),
        (503, Some("UNAVAILABLE")),
        "{answer}"
    );

    proxy.restore();
    eventually("/readyz to pass again", || {
        (server.admin_get("/readyz").0 == 200).then_some(())
    });
    let page = eventually("sends to work again", || {
        let (status, _) = server.call(
            "POST",
            "/v1/messages",
            Some(json!({"to_uid": 601, "client_msg_id": "after", "text": "x"})),
        );
        (status == 200).then_some(())?;
        Some(server.ok(
            "GET",
            &format!("/v1/users/601/conversations/{SYSTEM}/messages"),
            None,
        ))
    });
    let ids: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["client_msg_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["before", "after"],
        "what was refused was not stored"
    );
    drop(server);
    if let Ok(mut conn) = mysql::Conn::new(mysql_server_url().as_str()) {
        use mysql::prelude::Queryable;
        let _ = conn.query_drop(format!("DROP DATABASE IF EXISTS `{database}`"));
    }
}

#[test]
fn revoked_tokens_stop_logging_in_and_their_sessions_close_across_a_restart() {
    let mut server = Server::start("revoke", "");
    let old_token = server.token(701);
    let mut phone = Client::connect(server.client).unwrap();
    phone.set_timeout(WAIT);
    phone
        .login(701, &old_token, "phone", pb::Platform::Mobile)
        .unwrap();
    let mut other = server.login(702, "phone");
    std::thread::sleep(Duration::from_millis(5));

    // Through the CLI, which asks the running server's API.
    let revoked_at = std::time::Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_im-server"))
        .arg("--config")
        .arg(server.dir.join("im.toml"))
        .args(["--data-dir", &server.dir.display().to_string()])
        .args(["revoke", "--uid", "701"])
        .env_remove("IM_API_KEYS")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (answer["uid"].as_u64(), answer["kicked"].as_u64()),
        (Some(701), Some(1)),
        "{answer}"
    );

    // The open session is kicked within a second; the old token is refused.
    let frame = next_event(&mut phone);
    assert!(matches!(frame.body, Some(Body::Kick(_))), "{frame:?}");
    phone.wait_closed(WAIT).expect("closed");
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
    let mut again = Client::connect(server.client).unwrap();
    again.set_timeout(WAIT);
    expect_code(
        again.login(701, &old_token, "phone", pb::Platform::Mobile),
        ErrorCode::AuthFailed,
    );
    // Another user is untouched; a token minted now works.
    send_from_client(&mut other, 703, "x", b"still here");
    let new_token = server.token(701);
    let mut fresh = Client::connect(server.client).unwrap();
    fresh.set_timeout(WAIT);
    fresh
        .login(701, &new_token, "phone", pb::Platform::Mobile)
        .expect("a new token");

    // Through the API too, with a time: the same rule holds after a kill -9.
    let (status, answer) = server.call(
        "POST",
        "/v1/users/704/revoke",
        Some(json!({"before_ms": 1})),
    );
    assert_eq!(status, 200, "{answer}");
    server.refused(
        "POST",
        "/v1/users/704/revoke",
        Some(json!({"before_ms": 4_000_000_000_000u64})),
        400,
        "INVALID_ARGUMENT",
    );
    server.restart();
    let mut after = Client::connect(server.client).unwrap();
    after.set_timeout(WAIT);
    expect_code(
        after.login(701, &old_token, "phone", pb::Platform::Mobile),
        ErrorCode::AuthFailed,
    );
    let mut after = Client::connect(server.client).unwrap();
    after.set_timeout(WAIT);
    after
        .login(701, &new_token, "laptop", pb::Platform::Pc)
        .expect("the new token after a restart");
}
