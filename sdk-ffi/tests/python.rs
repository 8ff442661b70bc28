//! Drives the SDK through its generated Python binding against a real
//! node: generates `im_sdk.py` from the library cargo built for this test
//! (the same command as scripts/bindings.sh), then runs
//! `tests/python/test_sdk.py` with `python3`.

use std::path::PathBuf;
use std::process::Command;

const SECRET: &str = "im-sdk-ffi-test-secret";

#[test]
fn the_python_binding_sends_receives_and_keeps_its_outbox() {
    let dir = std::env::temp_dir().join(format!("im-sdk-ffi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bindings = dir.join("bindings");
    std::fs::create_dir_all(&bindings).unwrap();

    // The library cargo built beside this test binary (target/<profile>/deps).
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let library: PathBuf = deps.join("libim_sdk_ffi.so");
    assert!(library.exists(), "{} was built", library.display());
    let generated = Command::new(env!("CARGO_BIN_EXE_uniffi-bindgen"))
        .args([
            "generate",
            "--no-format",
            "--language",
            "python",
            "--library",
        ])
        .arg(&library)
        .arg("--out-dir")
        .arg(&bindings)
        .status()
        .expect("uniffi-bindgen runs");
    assert!(generated.success());
    std::fs::copy(&library, bindings.join("libim_sdk_ffi.so")).unwrap();

    let mut config = server::Config::default();
    config.gateway.listen = "127.0.0.1:0".into();
    config.admin.listen = String::new();
    config.api.listen = String::new();
    config.gateway.websocket.listen = String::new();
    config.auth.secret = SECRET.into();
    config.storage.data_dir = dir.join("server").display().to_string();
    let node = server::Node::start(&config).expect("the node starts");
    // A port nothing listens on: bound, then closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let token =
        |uid| protocol::token::mint(SECRET.as_bytes(), uid, runtime::clock::unix_secs() + 3600);

    let output = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/test_sdk.py"
        ))
        .env("IM_BINDINGS", &bindings)
        .env("IM_ADDR", node.local_addr().to_string())
        .env("IM_DEAD_ADDR", dead.to_string())
        .env("IM_STORE_DIR", &dir)
        .env("IM_TOKEN_1", token(1))
        .env("IM_TOKEN_2", token(2))
        .output()
        .expect("python3 runs");
    print!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "the Python test failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    node.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
