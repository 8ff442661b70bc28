//! TLS on the client port: rustls driven inside the worker's event loop,
//! one `ServerConnection` per session, no thread and no blocking handshake.
//!
//! The handshake runs on the session's reads and writes like any other
//! bytes: a read feeds records to rustls and returns the plaintext they
//! carried (none, during the handshake); whatever rustls must send (its
//! handshake messages) is written opportunistically, and what the socket
//! does not take makes the transport want WRITABLE until it does. The
//! login deadline bounds the handshake. The buffers are ours, not rustls's
//! (its unbuffered API), so an idle TLS session holds none.
//!
//! The certificate and key come from PEM files. [`TlsAcceptor::reload`]
//! reads them again (SIGHUP): connections accepted from then on use the new
//! pair; those already up keep theirs.

use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

use crate::metrics::TlsFailure;
use crate::transport::{take_into, write_out};

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
        let conn = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream {
            conn,
            stream,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            plaintext: Vec::new(),
            peer_closed: false,
        })
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
    runtime::config::warn_if_exposed(key, "the TLS private key");
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_error(key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// The most bytes read from the socket at once (a TLS record is at most
/// 16 KiB plus its header and tag).
const READ_CHUNK: usize = 18 * 1024;

/// The most plaintext sealed into one record per write: TLS's limit.
const RECORD_PLAINTEXT: usize = 16 * 1024;

/// One TLS connection: rustls's state over the socket, with the buffers
/// owned here (rustls's unbuffered API), so that an idle connection holds
/// none: the incoming buffer exists only while a record is partial, the
/// outgoing one only while records wait for the socket, the plaintext one
/// only while the session has not taken it all.
pub struct TlsStream {
    conn: UnbufferedServerConnection,
    stream: TcpStream,
    /// TLS bytes read and not yet processed (a partial record).
    incoming: Vec<u8>,
    /// TLS bytes made and not yet written.
    outgoing: Vec<u8>,
    /// Plaintext decrypted and not yet read by the session.
    plaintext: Vec<u8>,
    /// The peer sent close_notify, or its FIN.
    peer_closed: bool,
}

/// Where processing what was received left the connection.
enum Progress {
    /// It needs more bytes from the peer (a partial record, or the handshake
    /// waits for the peer's next flight).
    NeedMore,
    /// The handshake is done and nothing received is left to process.
    Open,
    /// The peer closed (close_notify).
    PeerClosed,
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Appends what `write` makes to `buf`, growing it to the size `write`
/// reports it needs (`Err(required)`), the way rustls's encoders work.
fn append_with(
    buf: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, usize>,
) -> io::Result<()> {
    let start = buf.len();
    let mut room = 1024;
    loop {
        buf.resize(start + room, 0);
        match write(&mut buf[start..]) {
            Ok(n) => {
                buf.truncate(start + n);
                return Ok(());
            }
            Err(required) if required > room => room = required,
            Err(_) => {
                buf.truncate(start);
                return Err(io::Error::other("a TLS record did not fit"));
            }
        }
    }
}

impl TlsStream {
    pub fn socket(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.stream
    }

    /// Drives rustls over what was received: decrypts application data into
    /// `plaintext`, makes handshake records into `outgoing`.
    fn process(&mut self) -> io::Result<Progress> {
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let progress = match state.map_err(invalid)? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(invalid)?;
                        discard += record.discard;
                        self.plaintext.extend_from_slice(record.payload);
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    append_with(&mut self.outgoing, |out| {
                        encode.encode(out).map_err(|e| match e {
                            EncodeError::InsufficientSize(size) => size.required_size,
                            EncodeError::AlreadyEncoded => 0,
                        })
                    })?;
                    None
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    // Written from `outgoing` as the socket takes it, in order.
                    transmit.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Progress::NeedMore),
                ConnectionState::WriteTraffic(_) => Some(if self.incoming.len() > discard {
                    Progress::NeedMore
                } else {
                    Progress::Open
                }),
                ConnectionState::PeerClosed | ConnectionState::Closed => Some(Progress::PeerClosed),
                _ => Some(Progress::NeedMore),
            };
            self.incoming.drain(..discard.min(self.incoming.len()));
            if self.incoming.is_empty() {
                // An idle connection holds no buffer.
                self.incoming = Vec::new();
            }
            if let Some(progress) = progress {
                return Ok(progress);
            }
        }
    }

    /// Plaintext, reading and processing records until some is there, the
    /// socket is empty (WouldBlock) or the peer is gone (`Ok(0)`).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.plaintext.is_empty() {
                return Ok(take_into(&mut self.plaintext, buf));
            }
            if self.peer_closed {
                return Ok(0);
            }
            let progress = self.process();
            // Send what rustls has to say (its handshake) before anything else.
            self.flush()?;
            match progress? {
                Progress::PeerClosed => self.peer_closed = true,
                Progress::Open | Progress::NeedMore if !self.plaintext.is_empty() => {}
                Progress::Open | Progress::NeedMore => {
                    let mut chunk = [0u8; READ_CHUNK];
                    match self.stream.read(&mut chunk) {
                        Ok(0) => self.peer_closed = true,
                        Ok(n) => self.incoming.extend_from_slice(&chunk[..n]),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Seals as much of `bufs` as one record holds and writes what the
    /// socket takes; `WouldBlock` when nothing moved (the handshake is not
    /// done, or records still wait for the socket).
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.flush()?;
        if !self.outgoing.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut self.incoming);
        let mut written = 0;
        if let ConnectionState::WriteTraffic(mut traffic) = state.map_err(invalid)? {
            // Many small frames make one record, not a record each.
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            let mut record = Vec::with_capacity(total.min(RECORD_PLAINTEXT));
            for buf in bufs.iter().filter(|b| !b.is_empty()) {
                let take = buf.len().min(RECORD_PLAINTEXT - record.len());
                record.extend_from_slice(&buf[..take]);
                written += take;
                if record.len() == RECORD_PLAINTEXT {
                    break;
                }
            }
            if !record.is_empty() {
                append_with(&mut self.outgoing, |out| {
                    traffic.encrypt(&record, out).map_err(|e| match e {
                        EncryptError::InsufficientSize(size) => size.required_size,
                        _ => 0,
                    })
                })?;
            }
        }
        // Only a partial record waits here; keep to the contract anyway.
        self.incoming.drain(..discard.min(self.incoming.len()));
        self.flush()?;
        if written == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(written)
    }

    /// Writes pending records until the socket is full (not an error).
    pub fn flush(&mut self) -> io::Result<()> {
        write_out(&mut self.outgoing, |bytes| self.stream.write(bytes))
    }

    pub fn wants_write(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// close_notify, then FIN.
    pub fn shutdown_write(&mut self) {
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut self.incoming);
        if let Ok(ConnectionState::WriteTraffic(mut traffic)) = state {
            let _ = append_with(&mut self.outgoing, |out| {
                traffic.queue_close_notify(out).map_err(|e| match e {
                    EncryptError::InsufficientSize(size) => size.required_size,
                    _ => 0,
                })
            });
        }
        let _ = self.flush();
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}
