//! A self-signed certificate for a TLS listener configured without one, so
//! that a developer can try TLS with no certificate at hand. Made once into
//! the data dir and reused; its path and SHA-256 fingerprint are logged
//! (clients pin it, or are told to trust it). Production configures
//! `gateway.tls.cert` and `key`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The certificate and key files in `dir`, made if they are not there.
pub fn self_signed(dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("self-signed.crt"), dir.join("self-signed.key"));
    if !(cert.exists() && key.exists()) {
        std::fs::create_dir_all(dir)?;
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let made = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
        write_private(&key, &made.signing_key.serialize_pem())?;
        std::fs::write(&cert, made.cert.pem())?;
    }
    let pem = std::fs::read(&cert)?;
    let der = rustls_pem_der(&pem)?;
    let fingerprint: Vec<String> = Sha256::digest(&der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    log::warn!(
        "gateway.tls has no certificate: using the self-signed {} (SHA-256 {}); configure gateway.tls.cert and key for production",
        cert.display(),
        fingerprint.join(":")
    );
    Ok((cert, key))
}

/// The DER bytes of the first certificate in a PEM file.
fn rustls_pem_der(pem: &[u8]) -> io::Result<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem)
        .map(|der| der.to_vec())
        .map_err(|e| io::Error::other(e.to_string()))
}

fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}
