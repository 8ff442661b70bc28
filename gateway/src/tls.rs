//! TLS on the client port: rustls driven inside the worker's event loop,
//! one `ServerConnection` per session, no thread and no blocking handshake.
//!
//! The handshake runs on the session's reads and writes like any other
//! bytes: a read feeds records to rustls and returns the plaintext they
//! carried (none, during the handshake); whatever rustls must send (its
//! handshake messages, alerts) is written opportunistically, and what the
//! socket does not take makes the transport want WRITABLE until it does.
//! The login deadline bounds the handshake.
//!
//! The certificate and key come from PEM files. [`TlsAcceptor::reload`]
//! reads them again (SIGHUP): connections accepted from then on use the new
//! pair; those already up keep theirs.

use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use crate::metrics::TlsFailure;

/// The metrics' reason for a TLS error that ended a connection, if `e` is one.
pub fn failure(e: &io::Error) -> Option<TlsFailure> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidMessage(_) => TlsFailure::NotTls,
        rustls::Error::AlertReceived(_) => TlsFailure::AlertReceived,
        rustls::Error::PeerMisbehaved(_) | rustls::Error::PeerIncompatible(_) => {
            TlsFailure::Protocol
        }
        _ => TlsFailure::Other,
    })
}

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The server side of TLS for new connections, reloadable.
pub struct TlsAcceptor {
    cert: PathBuf,
    key: PathBuf,
    config: RwLock<Arc<ServerConfig>>,
}

impl TlsAcceptor {
    /// Loads the PEM certificate chain and private key.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor {
            config: RwLock::new(server_config(cert, key)?),
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Reads the files again; on an error the pair in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.cert, &self.key)?;
        *self.config.write() = fresh;
        Ok(())
    }

    /// A new connection's TLS state.
    pub fn accept(&self, stream: TcpStream) -> io::Result<TlsStream> {
        let config = self.config.read().clone();
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream { conn, stream })
    }
}

fn pem_error(path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError + '_ {
    move |e| TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem_error(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_error(key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// One TLS connection: rustls's state over the socket.
pub struct TlsStream {
    conn: ServerConnection,
    stream: TcpStream,
}

impl TlsStream {
    pub fn socket(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.stream
    }

    /// Plaintext, reading and processing records until some is there, the
    /// socket is empty (WouldBlock) or the peer is gone (`Ok(0)`).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: an end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut self.stream) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    let processed = self.conn.process_new_packets();
                    // Send what rustls has to say (handshake, or the alert
                    // for what it refused) before anything else.
                    let flushed = self.flush();
                    processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    flushed?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypts as much of `bufs` as rustls takes, and writes the records
    /// the socket takes; `WouldBlock` when neither moved.
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.flush()?;
        if self.conn.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.conn.writer().write_vectored(bufs)?;
        self.flush()?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Writes pending records until the socket is full (not an error).
    pub fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.stream) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// close_notify, then FIN.
    pub fn shutdown_write(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush();
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}
