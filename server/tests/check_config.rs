//! `im-server --check-config` refuses what start-up would refuse, section by
//! section, naming the field (the systemd unit runs it before every start).
//! Each case runs the real binary on a file holding one bad value.

use std::process::Command;

/// Runs `--check-config` on `toml`; returns (success, everything printed).
fn check(toml: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("im-check-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{:x}.toml", hash(toml)));
    std::fs::write(&file, toml).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_im-server"))
        .arg("--config")
        .arg(&file)
        .arg("--check-config")
        .env_remove("IM_AUTH_SECRET")
        .env_remove("IM_REDIS_URL")
        .env_remove("IM_API_KEYS")
        .output()
        .expect("run im-server");
    let _ = std::fs::remove_file(&file);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// Each (file, word the refusal must name) is refused.
fn refused(cases: &[(&str, &str)]) {
    for (toml, names) in cases {
        let (ok, printed) = check(toml);
        assert!(!ok, "accepted:\n{toml}\nprinted: {printed}");
        assert!(
            printed.contains(names),
            "refusal of\n{toml}\ndoes not name {names:?}: {printed}"
        );
    }
}

#[test]
fn a_valid_file_and_no_file_pass() {
    let (ok, printed) = check("[gateway]\nlisten = \"127.0.0.1:7000\"\n");
    assert!(ok, "{printed}");
    assert!(printed.contains("configuration ok"));
    let (ok, printed) = check("");
    assert!(ok, "{printed}");
}

#[test]
fn gateway_section() {
    refused(&[
        ("[gateway]\nlisten = \"localhost\"\n", "gateway.listen"),
        ("[gateway]\nmax_frame = 10\n", "gateway.max_frame"),
        (
            "[gateway]\nmax_outbound_bytes = 100\n",
            "gateway.max_outbound_bytes",
        ),
        ("[gateway]\nheartbeat_secs = 0\n", "gateway.heartbeat_secs"),
        ("[gateway]\nlisten_port = 1\n", "listen_port"),
        ("[gateway]\nworkers = -1\n", "workers"),
    ]);
}

#[test]
fn admin_section() {
    refused(&[("[admin]\nlisten = \"9100\"\n", "admin.listen")]);
}

#[test]
fn api_section() {
    refused(&[
        ("[api]\nlisten = \"9200\"\n", "api.listen"),
        ("[api]\nkeys = [\"short\"]\n", "api.keys"),
        (
            "[api]\nkeys = [\"bad name:0123456789abcdef\"]\n",
            "api.keys",
        ),
        (
            "[api]\nkeys_file = \"/nonexistent/im-api-keys\"\n",
            "api.keys_file",
        ),
        ("[api]\nburst = 0\n", "api.burst"),
        ("[api]\ntimeout_ms = 0\n", "api.timeout_ms"),
    ]);
}

#[test]
fn auth_section() {
    refused(&[
        ("[auth]\ntoken_ttl_secs = 0\n", "auth.token_ttl_secs"),
        ("[auth]\nsecret = 5\n", "secret"),
    ]);
}

#[test]
fn storage_section() {
    refused(&[
        ("[storage]\nbackend = \"postgres\"\n", "backend"),
        (
            "[storage]\nsqlite_synchronous = \"off\"\n",
            "sqlite_synchronous",
        ),
        ("[storage]\ndata_dir = \"\"\n", "storage.data_dir"),
        ("[storage]\nbackend = \"mysql\"\n", "storage.mysql_urls"),
        (
            "[storage]\nbackend = \"mysql\"\nmysql_urls = [\"postgres://x/y\"]\n",
            "storage.mysql_urls",
        ),
        (
            "[storage]\nbackend = \"mysql\"\nmysql_urls = [\"mysql://root@127.0.0.1:3306\"]\n",
            "names no database",
        ),
        (
            "[storage]\nbackend = \"mysql\"\nmysql_urls = [\"mysql://h/a\", \"mysql://h/a\"]\n",
            "shards 0 and 1",
        ),
        (
            "[storage]\nbackend = \"mysql\"\nmysql_urls = [\"mysql://h/bad-name\"]\n",
            "database name",
        ),
        (
            "[storage]\nbackend = \"mysql\"\nmysql_urls = [\"mysql://h/im\"]\nwriter_lease_ms = 100\n",
            "storage.writer_lease_ms",
        ),
    ]);
}

#[test]
fn logic_section() {
    refused(&[
        ("[logic]\nqueue_capacity = 0\n", "logic.queue_capacity"),
        ("[logic]\nnode_id = 5000\n", "logic.node_id"),
        (
            "[logic.webhook]\nurl = \"ftp://example.test/hook\"\nsecret = \"s\"\n",
            "logic.webhook.url",
        ),
        (
            "[logic.webhook]\nurl = \"https://example.test/hook\"\n",
            "logic.webhook.secret",
        ),
        (
            "[logic.webhook]\nurl = \"https://example.test/hook\"\nsecret = \"s\"\nca_file = \"/nonexistent.pem\"\n",
            "logic.webhook.ca_file",
        ),
        (
            "[logic.webhook]\nurl = \"https://example.test/hook\"\nsecret = \"s\"\nsenders = 0\n",
            "logic.webhook.senders",
        ),
        (
            "[logic]\nmax_content_bytes = 65000\n",
            "logic.max_content_bytes",
        ),
    ]);
}

#[test]
fn redis_section() {
    refused(&[
        ("[redis]\nurl = \"http://127.0.0.1:6379\"\n", "redis.url"),
        (
            "[redis]\nurl = \"redis://127.0.0.1:6379\"\ntimeout_ms = 0\n",
            "redis.timeout_ms",
        ),
    ]);
}

#[test]
fn link_section() {
    refused(&[
        ("[link]\nlisten = \"7100\"\n", "link.listen"),
        ("[link]\nlogic = [\"logic-host\"]\n", "link.logic"),
        ("[link]\nheartbeat_secs = 0\n", "link.heartbeat_secs"),
        (
            "[link]\nheartbeat_secs = 5\ndead_after_secs = 5\n",
            "link.dead_after_secs",
        ),
        ("[link]\nqueue_capacity = 0\n", "link.queue_capacity"),
    ]);
}

/// The split roles check the link on top of the file: a gateway needs the
/// logic tier's address and both need the secret.
#[test]
fn queue_section() {
    refused(&[
        ("[queue]\nurl = \"amqp://127.0.0.1\"\n", "queue.url"),
        (
            "[queue]\nurl = \"nats://127.0.0.1:4222\"\nstream = \"a.b\"\n",
            "queue.stream",
        ),
        (
            "[queue]\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"im.>\"\n",
            "queue.subject",
        ),
        (
            "[queue]\nurl = \"nats://127.0.0.1:4222\"\ndead_letter_subject = \"im.system.send\"\n",
            "queue.dead_letter_subject",
        ),
        (
            "[queue]\nurl = \"nats://127.0.0.1:4222\"\nmax_in_flight = 0\n",
            "queue.max_in_flight",
        ),
        ("[queue]\nprefetch = 5\n", "prefetch"),
    ]);
}

#[test]
fn the_split_roles_refuse_to_start_without_their_link() {
    let config = server::Config::default();
    let gateway = server::GatewayNode::start(&config).err().expect("refused");
    assert!(gateway.to_string().contains("link.secret"), "{gateway}");
    let logic = server::LogicNode::start(&config).err().expect("refused");
    assert!(logic.to_string().contains("link.secret"), "{logic}");
    let mut config = server::Config::default();
    config.link.secret = "s".into();
    let gateway = server::GatewayNode::start(&config).err().expect("refused");
    assert!(gateway.to_string().contains("link.logic"), "{gateway}");
}

/// What `--check-config` refuses, start-up refuses too, with the same words.
#[test]
fn start_up_refuses_what_the_check_refuses() {
    for toml in [
        "[storage]\nbackend = \"mysql\"\n",
        "[logic.webhook]\nurl = \"ftp://x\"\nsecret = \"s\"\n",
    ] {
        let config = server::Config::parse(toml).unwrap();
        let checked = config.validate().unwrap_err();
        let started = match server::Node::start(&config) {
            Ok(_) => panic!("started with\n{toml}"),
            Err(e) => e.to_string(),
        };
        assert!(
            started.contains(checked.field),
            "start-up said {started:?}, the check {checked}"
        );
    }
}
