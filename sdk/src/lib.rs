//! The client SDK core: what a native app links to talk to the server
//! without losing or doubling a message.
//!
//! - [`Sdk::send`] writes the message to a durable outbox (SQLite, at the
//!   app's path) with its `client_msg_id` before anything goes on the wire;
//!   the engine sends the outbox in order and resends with the same id
//!   after any failure, across reconnects and app restarts, so the server's
//!   dedup makes each send exactly once.
//! - Received messages are stored once, by `(peer, seq)`, and handed to the
//!   app in seq order: a push past a gap waits for the gap's history pull.
//! - After every (re)connect, and on a `sync_hint`, the engine syncs from
//!   its stored cursor, pulls every gap, then flushes the outbox and any
//!   read positions and deletes made offline.
//!
//! Threading: the engine runs on a thread of its own over blocking sockets
//! (the `im-client` framing, TCP or TLS) and `poll(2)`; the app calls the
//! blocking [`Sdk`] methods from any thread and gets [`Listener`] calls on
//! the engine's thread. No async runtime is asked of the app: the mobile
//! bindings (UniFFI) and a C header can wrap plain functions, and one
//! thread asleep in `poll` until the next heartbeat costs an idle phone
//! nothing between heartbeats.

mod engine;
mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use protocol::pb;
use runtime::backoff::Backoff;

pub use store::StoreError;

use engine::{Command, Doorbell, Engine};
use store::Store;

/// The most content a send may carry: a frame of the protocol's default
/// size, less room for the other fields.
pub const MAX_CONTENT: usize = protocol::codec::DEFAULT_MAX_FRAME - 1024;

/// What the SDK needs to start.
#[derive(Clone)]
pub struct Config {
    /// Server addresses (`host:port`), tried in turn.
    pub addrs: Vec<String>,
    pub uid: u64,
    /// The token the app's backend issued; replace it with
    /// [`Sdk::set_token`] when [`Listener::token_expired`] is called.
    pub token: String,
    /// Stable per install: the server keeps one session per device id.
    pub device_id: String,
    pub platform: pb::Platform,
    /// The SQLite file of this user's store.
    pub store_path: PathBuf,
    /// TLS: the CA to trust (PEM) and the server's name; `None` for TCP.
    pub tls: Option<Tls>,
    /// Reconnect waits: full jitter under bounds doubling from `first` to `max`.
    pub backoff: Backoff,
    /// How long a request waits for its answer before the connection is
    /// taken for dead.
    pub request_timeout: Duration,
}

#[derive(Clone)]
pub struct Tls {
    pub ca_pem: Vec<u8>,
    pub server_name: String,
}

impl Config {
    /// A configuration with the defaults: TCP, reconnects from 0.5 s to
    /// 30 s, requests timed out after 10 s.
    pub fn new(
        addrs: Vec<String>,
        uid: u64,
        token: &str,
        device_id: &str,
        store_path: PathBuf,
    ) -> Config {
        Config {
            addrs,
            uid,
            token: token.to_owned(),
            device_id: device_id.to_owned(),
            platform: pb::Platform::Mobile,
            store_path,
            tls: None,
            backoff: Backoff {
                first: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A stored message. `peer_uid` is the other side of its conversation,
/// whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub msg_id: u64,
    pub from_uid: u64,
    pub to_uid: u64,
    pub peer_uid: u64,
    pub seq: u64,
    pub client_msg_id: String,
    pub content_type: u32,
    pub content: Vec<u8>,
    pub server_time_ms: u64,
}

impl Message {
    fn peer_of(me: u64, message: &pb::Message) -> u64 {
        if message.from_uid == me {
            message.to_uid
        } else {
            message.from_uid
        }
    }

    fn from_pb(me: u64, message: &pb::Message) -> Message {
        Message {
            msg_id: message.msg_id,
            from_uid: message.from_uid,
            to_uid: message.to_uid,
            peer_uid: Message::peer_of(me, message),
            seq: message.seq,
            client_msg_id: message.client_msg_id.clone(),
            content_type: message.content_type,
            content: message.content.clone(),
            server_time_ms: message.server_time_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub peer_uid: u64,
    pub last_seq: u64,
    pub read_seq: u64,
    /// `last_seq - read_seq`, as the server counts it.
    pub unread: u64,
    /// How far the peer has read: the "seen" receipt.
    pub peer_read_seq: u64,
    pub last_message: Option<Message>,
    pub updated_ms: u64,
}

/// Where a send stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendState {
    /// In the outbox, to be sent (again) when connected.
    Pending,
    Sent {
        msg_id: u64,
        seq: u64,
    },
    /// Refused for good, with the wire error code (e.g. CONTENT_REJECTED).
    Failed {
        code: i32,
    },
}

/// A send as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub client_msg_id: String,
    pub to_uid: u64,
    pub content_type: u32,
    pub content: Vec<u8>,
    pub state: SendState,
    pub created_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub uid: u64,
    pub nickname: String,
    pub avatar_url: String,
}

/// The connection as the app shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting,
    /// Logged in, synced, outbox flushed.
    Online,
    /// Not connected; the next try in `retry_in`.
    Waiting {
        retry_in: Duration,
    },
    /// [`Sdk::pause`]d: no connection until [`Sdk::resume`].
    Paused,
    /// The server refused the token: waiting for [`Sdk::set_token`].
    TokenExpired,
    /// Another login or a revocation closed this session: no reconnect
    /// until [`Sdk::resume`].
    Kicked,
    Closed,
}

/// What the engine tells the app, on the engine's thread: return quickly
/// and do not call back into [`Sdk`] methods that wait on the engine
/// ([`Sdk::profiles`]). Every method has an empty default.
pub trait Listener: Send + Sync {
    /// Messages new to the store, in seq order per conversation.
    fn messages(&self, _messages: &[Message]) {}
    /// A send left the outbox: sent or failed.
    fn send_state(&self, _client_msg_id: &str, _state: SendState) {}
    fn conversation(&self, _conversation: &Conversation) {}
    fn total_unread(&self, _total: u64) {}
    /// The peer has read the conversation up to `seq`.
    fn read_receipt(&self, _peer_uid: u64, _seq: u64) {}
    fn connection(&self, _state: &ConnectionState) {}
    fn kicked(&self, _reason: &str) {}
    /// The server refused the token: call [`Sdk::set_token`] with a new one.
    fn token_expired(&self) {}
}

#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("not connected")]
    Offline,
    #[error("the server said {code:?}: {message}")]
    Server {
        code: pb::ErrorCode,
        message: String,
    },
    #[error("the SDK is closed")]
    Closed,
    /// Content that cannot fit a frame (the server's `max_frame`); the
    /// server's own content limit, lower, fails the send INVALID_ARGUMENT.
    #[error("content of {len} bytes is over the {limit} a frame can carry")]
    TooLarge { len: usize, limit: usize },
    #[error("could not start the engine: {0}")]
    Start(#[from] std::io::Error),
}

/// The app's handle: blocking calls, safe from any thread.
pub struct Sdk {
    me: u64,
    device_id: String,
    store: Arc<Mutex<Store>>,
    commands: Sender<Command>,
    doorbell: Doorbell,
    engine: Option<JoinHandle<()>>,
    state: Arc<Mutex<ConnectionState>>,
    /// Makes each `client_msg_id` unique within this process's lifetime;
    /// the random part makes it unique across restarts and devices.
    sends: AtomicU64,
    nonce: u64,
    request_timeout: Duration,
}

impl Sdk {
    /// Opens the store and starts the engine, which connects at once.
    pub fn start(config: Config, listener: Arc<dyn Listener>) -> Result<Sdk, SdkError> {
        let store = Arc::new(Mutex::new(Store::open(&config.store_path, config.uid)?));
        let (commands, inbox) = crossbeam_channel::unbounded();
        let (doorbell, wake) = engine::doorbell()?;
        let state = Arc::new(Mutex::new(ConnectionState::Connecting));
        let mut nonce = [0u8; 8];
        let _ = getrandom::fill(&mut nonce);
        let (me, device_id, request_timeout) =
            (config.uid, config.device_id.clone(), config.request_timeout);
        let engine = Engine::new(config, store.clone(), listener, inbox, wake, state.clone());
        let handle = std::thread::Builder::new()
            .name("im-sdk".into())
            .spawn(move || engine.run())?;
        Ok(Sdk {
            me,
            device_id,
            store,
            commands,
            doorbell,
            engine: Some(handle),
            state,
            sends: AtomicU64::new(0),
            nonce: u64::from_le_bytes(nonce) ^ runtime::clock::unix_ms(),
            request_timeout,
        })
    }

    pub fn uid(&self) -> u64 {
        self.me
    }

    /// Queues a message: durable in the outbox when this returns, sent when
    /// connected. Returns its `client_msg_id`.
    pub fn send(&self, to_uid: u64, content_type: u32, content: &[u8]) -> Result<String, SdkError> {
        // Never queued: a message no frame can carry would stop the outbox
        // behind it for good.
        if content.len() > MAX_CONTENT {
            return Err(SdkError::TooLarge {
                len: content.len(),
                limit: MAX_CONTENT,
            });
        }
        let n = self.sends.fetch_add(1, Ordering::Relaxed);
        let client_msg_id = format!("{}-{:016x}-{n}", self.device_id, self.nonce);
        self.store.lock().enqueue(
            &client_msg_id,
            to_uid,
            content_type,
            content,
            runtime::clock::unix_ms(),
        )?;
        self.tell(Command::Flush);
        Ok(client_msg_id)
    }

    /// Sends not yet acknowledged (pending) and those refused (failed).
    pub fn unsent(&self) -> Result<Vec<Outgoing>, SdkError> {
        Ok(self.store.lock().unsent()?)
    }

    /// Visible conversations, latest first.
    pub fn conversations(&self) -> Result<Vec<Conversation>, SdkError> {
        Ok(self.store.lock().conversations()?)
    }

    pub fn total_unread(&self) -> Result<u64, SdkError> {
        Ok(self.store.lock().total_unread()?)
    }

    /// Up to `limit` messages with `peer` before `before_seq` (0: the
    /// latest), in seq order, from the store. The engine keeps the store
    /// complete up to what the server last said (`complete_seq`), so a page
    /// from the store is the page the server would give.
    pub fn history(
        &self,
        peer: u64,
        before_seq: u64,
        limit: u32,
    ) -> Result<Vec<Message>, SdkError> {
        Ok(self.store.lock().history(peer, before_seq, limit)?)
    }

    /// Marks the conversation read up to `seq`: at once here, told to the
    /// server when connected (durably owed until then).
    pub fn mark_read(&self, peer: u64, seq: u64) -> Result<(), SdkError> {
        self.store.lock().read(peer, self.me, seq, false)?;
        self.tell(Command::Flush);
        Ok(())
    }

    /// Deletes the conversation for this user: hidden here at once, told
    /// to the server when connected.
    pub fn delete_conversation(&self, peer: u64) -> Result<(), SdkError> {
        self.store.lock().delete(peer)?;
        self.tell(Command::Flush);
        Ok(())
    }

    /// Profiles, asked of the server (needs the connection).
    pub fn profiles(&self, uids: &[u64]) -> Result<Vec<Profile>, SdkError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.tell(Command::Profiles(uids.to_vec(), reply));
        answer
            .recv_timeout(self.request_timeout + Duration::from_secs(1))
            .map_err(|_| SdkError::Offline)?
    }

    /// The app goes to the background: the connection is closed and not
    /// reopened until [`Sdk::resume`]. (OS push notifications wake the app.)
    pub fn pause(&self) {
        self.tell(Command::Pause);
    }

    /// Connect again now (after pause, a kick, or to skip a backoff wait).
    pub fn resume(&self) {
        self.tell(Command::Resume);
    }

    /// A new token (after [`Listener::token_expired`]); reconnects with it.
    pub fn set_token(&self, token: &str) {
        self.tell(Command::SetToken(token.to_owned()));
    }

    pub fn state(&self) -> ConnectionState {
        self.state.lock().clone()
    }

    fn tell(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            self.doorbell.ring();
        }
    }

    /// Closes the connection and stops the engine; the store stays.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.tell(Command::Close);
        if let Some(engine) = self.engine.take() {
            let _ = engine.join();
        }
    }
}

impl Drop for Sdk {
    fn drop(&mut self) {
        self.stop();
    }
}
