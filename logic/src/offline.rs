//! The offline-notification hook: fires once per message whose recipient
//! had no device online, for bridges to mobile push (APNs, FCM).
//!
//! [`LogNotifier`] (the default) logs; [`WebhookNotifier`] POSTs a JSON
//! object to a configured `http://` URL from its own thread, so a slow or
//! dead webhook never holds up the message pipeline: notifications beyond
//! its queue are dropped and counted, never waited for. (TLS: terminate it
//! in a local sidecar or proxy.)

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use protocol::pb;

use crate::metrics::{Counter, LogicMetrics};

pub trait OfflineNotifier: Send + Sync {
    /// Called once for a message whose recipient had no device online.
    /// Must not block.
    fn notify(&self, message: &pb::Message);
}

pub struct LogNotifier;

impl OfflineNotifier for LogNotifier {
    fn notify(&self, message: &pb::Message) {
        log::debug!(
            "offline recipient {}: message {} from {}",
            message.to_uid,
            message.msg_id,
            message.from_uid
        );
    }
}

/// The JSON body the webhook receives.
pub fn webhook_json(message: &pb::Message) -> String {
    format!(
        "{{\"to_uid\":{},\"from_uid\":{},\"msg_id\":{},\"seq\":{},\"content_type\":{},\"server_time_ms\":{}}}",
        message.to_uid,
        message.from_uid,
        message.msg_id,
        message.seq,
        message.content_type,
        message.server_time_ms
    )
}

pub struct WebhookNotifier {
    queue: Sender<String>,
    dropped: Arc<AtomicU64>,
    metrics: Arc<LogicMetrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook url must be http://host:port/path, got {0:?}")]
    BadUrl(String),
    #[error("cannot start the webhook thread: {0}")]
    Thread(std::io::Error),
}

/// Where the webhook posts: `http://host[:port]/path`, taken apart once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    /// For the Host header.
    host: String,
    /// host:port to connect to.
    addr: String,
    path: String,
}

impl WebhookUrl {
    /// Parses `logic.offline_webhook` (also `--check-config`'s check).
    pub fn parse(url: &str) -> Result<WebhookUrl, WebhookError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| WebhookError::BadUrl(url.into()))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(WebhookError::BadUrl(url.into()));
        }
        let addr = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(WebhookUrl {
            host: authority.to_owned(),
            addr,
            path: path.to_owned(),
        })
    }
}

impl WebhookNotifier {
    /// Starts the delivery thread for `url` (`http://host[:port]/path`).
    /// Each attempt's time goes to `metrics.webhook`, each failure and
    /// each notification dropped on a full queue to their counters.
    pub fn start(
        url: &str,
        queue_len: usize,
        metrics: Arc<LogicMetrics>,
    ) -> Result<WebhookNotifier, WebhookError> {
        let WebhookUrl { host, addr, path } = WebhookUrl::parse(url)?;
        let (tx, rx) = crossbeam_channel::bounded::<String>(queue_len);
        let dropped = Arc::new(AtomicU64::new(0));
        let delivering = metrics.clone();
        thread::Builder::new()
            .name("im-offline-webhook".into())
            .spawn(move || {
                for body in rx {
                    let started = std::time::Instant::now();
                    let result = post(&addr, &host, &path, &body);
                    delivering.webhook.observe(started.elapsed());
                    if let Err(e) = result {
                        delivering.add(Counter::WebhookFailures, 1);
                        log::warn!("offline webhook {addr}{path}: {e}");
                    }
                }
            })
            .map_err(WebhookError::Thread)?;
        Ok(WebhookNotifier {
            queue: tx,
            dropped,
            metrics,
        })
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl OfflineNotifier for WebhookNotifier {
    fn notify(&self, message: &pb::Message) {
        if let Err(TrySendError::Full(_)) = self.queue.try_send(webhook_json(message)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.add(Counter::WebhookDropped, 1);
        }
    }
}

/// One HTTP/1.1 POST, connection closed after.
fn post(addr: &str, host: &str, path: &str, body: &str) -> std::io::Result<()> {
    let timeout = Duration::from_secs(5);
    let socket = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut stream = TcpStream::connect_timeout(&socket, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut status = [0u8; 12];
    stream.read_exact(&mut status)?;
    if !status.starts_with(b"HTTP/1.1 2") && !status.starts_with(b"HTTP/1.0 2") {
        return Err(std::io::Error::other(format!(
            "answered {}",
            String::from_utf8_lossy(&status)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    #[test]
    fn webhook_posts_json_for_each_message() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        let notifier = WebhookNotifier::start(&url, 16, Default::default()).unwrap();
        let message = pb::Message {
            msg_id: 5,
            from_uid: 1,
            to_uid: 2,
            seq: 3,
            ..Default::default()
        };
        notifier.notify(&message);

        let (stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        assert_eq!(request_line, "POST /notify HTTP/1.1\r\n");
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        assert_eq!(String::from_utf8(body).unwrap(), webhook_json(&message));
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap();
    }

    #[test]
    fn only_http_urls() {
        assert!(WebhookNotifier::start("https://x/y", 1, Default::default()).is_err());
        assert!(WebhookNotifier::start("http:///y", 1, Default::default()).is_err());
    }
}
