//! The admin HTTP port: `GET /metrics` (Prometheus text format) and
//! `GET /healthz`. Loopback by default, off when `admin.listen` is empty.
//!
//! A blocking thread with a tiny HTTP/1.0 responder: it serves a scraper
//! every few seconds, so it needs no event loop and no HTTP crate.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Renders the metrics page on demand.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

pub struct AdminHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

pub fn start(addr: SocketAddr, render: Render) -> io::Result<AdminHandle> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = thread::Builder::new()
        .name("im-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Acquire) {
                    return;
                }
                if let Ok(stream) = stream {
                    if let Err(e) = serve(stream, &render) {
                        log::debug!("admin: {e}");
                    }
                }
            }
        })?;
    log::info!("admin port on http://{addr}/metrics");
    Ok(AdminHandle { addr, stop, thread })
}

impl AdminHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        // Unblock the accept with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = self.thread.join();
    }
}

fn serve(stream: TcpStream, render: &Render) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request_line = String::new();
    // One line of at most 8 KiB: a request line, not a whole upload.
    BufReader::new((&stream).take(8192)).read_line(&mut request_line)?;
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let (status, content_type, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", render()),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
