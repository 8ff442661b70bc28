//! The outbox's HTTP client: ureq over rustls (a well-kept blocking client
//! fits threads that do nothing else; no async runtime in the logic tier),
//! keep-alive connections shared by the sender threads.

use std::path::Path;
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::config::WebhookConfig;

/// The CA certificates in a PEM file.
pub fn read_roots(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut roots = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => roots.push(cert),
            Ok(_) => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    if roots.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(roots)
}

/// An agent for `config`: its timeout, its roots (the public ones, or only
/// `ca_file`'s), a connection per sender kept alive.
pub fn agent(config: &WebhookConfig) -> Result<ureq::Agent, String> {
    let tls = if config.ca_file.is_empty() {
        TlsConfig::builder().build()
    } else {
        let roots = read_roots(Path::new(&config.ca_file))?;
        TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(&roots))
            .build()
    };
    Ok(ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(config.timeout_ms)))
        .http_status_as_error(false)
        .max_idle_connections_per_host(config.senders)
        .tls_config(tls)
        .build()
        .into())
}

/// POSTs `body` with `headers`; `Ok` on a 2xx answer.
pub fn post(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<(), String> {
    let mut request = agent.post(url).header("Content-Type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    match request.send(body) {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("answered {}", response.status())),
        Err(e) => Err(e.to_string()),
    }
}
