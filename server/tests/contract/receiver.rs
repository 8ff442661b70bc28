//! A webhook receiver for the outbox's tests: HTTP or HTTPS (a test CA of
//! its own), keep-alive, every request recorded with whether its signature
//! verified; it can be stopped (connections refused) and started again on
//! the same port.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::Mutex;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// One request the receiver took.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub signature_ok: bool,
}

impl Delivery {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn msg_id(&self) -> String {
        self.headers
            .get("idempotency-key")
            .cloned()
            .unwrap_or_default()
    }
}

/// A CA of the test's own and a localhost certificate it signed.
pub struct TestCa {
    pub pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let chain = vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        TestCa {
            pem,
            server: Arc::new(server),
        }
    }

    /// Writes the CA certificate to `path` (for `logic.webhook.ca_file`).
    pub fn write(&self, path: &Path) {
        std::fs::write(path, &self.pem).unwrap();
    }
}

pub struct Receiver {
    pub port: u16,
    secret: Vec<u8>,
    tls: Option<Arc<rustls::ServerConfig>>,
    pub got: Arc<Mutex<Vec<Delivery>>>,
    running: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Receiver {
    /// A receiver for `port`, not yet listening; over TLS with `ca`'s
    /// certificate if given.
    pub fn new(port: u16, secret: &[u8], ca: Option<&TestCa>) -> Receiver {
        Receiver {
            port,
            secret: secret.to_vec(),
            tls: ca.map(|ca| ca.server.clone()),
            got: Arc::default(),
            running: None,
        }
    }

    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}/hook", self.port),
            None => format!("http://127.0.0.1:{}/hook", self.port),
        }
    }

    /// Listens (and answers 204 to every request).
    pub fn start(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("the receiver's port");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (stopping, got, tls, secret) = (
            stop.clone(),
            self.got.clone(),
            self.tls.clone(),
            self.secret.clone(),
        );
        let thread = thread::spawn(move || {
            let mut connections = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (stopping, got, tls, secret) =
                            (stopping.clone(), got.clone(), tls.clone(), secret.clone());
                        connections.push(thread::spawn(move || {
                            serve(stream, tls, &secret, &got, &stopping)
                        }));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            for connection in connections {
                let _ = connection.join();
            }
        });
        self.running = Some((stop, thread));
    }

    /// Stops listening and closes every connection.
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().clone()
    }

    /// The distinct msg_ids received (what a receiver that dedups processes).
    pub fn unique(&self) -> HashSet<String> {
        self.got.lock().iter().map(Delivery::msg_id).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Requests on one connection until it closes or the receiver stops.
fn serve(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    secret: &[u8],
    got: &Mutex<Vec<Delivery>>,
    stop: &AtomicBool,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    match tls {
        Some(config) => {
            let conn = rustls::ServerConnection::new(config).unwrap();
            requests(rustls::StreamOwned::new(conn, stream), secret, got, stop)
        }
        None => requests(stream, secret, got, stop),
    }
}

fn requests(
    stream: impl Read + Write,
    secret: &[u8],
    got: &Mutex<Vec<Delivery>>,
    stop: &AtomicBool,
) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut headers = BTreeMap::new();
        let mut line = String::new();
        // The request line, waiting through read timeouts until stopped.
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) if line.ends_with('\n') => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
        loop {
            let mut header = String::new();
            if !matches!(reader.read_line(&mut header), Ok(n) if n > 0) {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let timestamp: u64 = headers
            .get("x-im-timestamp")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let signature = headers.get("x-im-signature").cloned().unwrap_or_default();
        let signature_ok = logic::outbox::signing::verify(secret, timestamp, &body, &signature);
        got.lock().push(Delivery {
            headers,
            body,
            signature_ok,
        });
        let stream = reader.get_mut();
        if stream
            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
    }
}
