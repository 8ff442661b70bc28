//! The SDK for Kotlin, Swift and Python: UniFFI exports [`ChatClient`]
//! (the blocking [`sdk::Sdk`] API) and [`ChatListener`] (a callback
//! interface the app implements) from one shared library, and generates
//! each language's sources from it (`scripts/bindings.sh`).
//!
//! This crate only translates: records and enums of plain fields for the
//! SDK's types, errors as one enum. What the SDK does is in `sdk/`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

uniffi::setup_scaffolding!("im_sdk");

#[derive(uniffi::Record)]
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

impl From<sdk::Message> for Message {
    fn from(m: sdk::Message) -> Message {
        Message {
            msg_id: m.msg_id,
            from_uid: m.from_uid,
            to_uid: m.to_uid,
            peer_uid: m.peer_uid,
            seq: m.seq,
            client_msg_id: m.client_msg_id,
            content_type: m.content_type,
            content: m.content,
            server_time_ms: m.server_time_ms,
        }
    }
}

#[derive(uniffi::Record)]
pub struct Conversation {
    pub peer_uid: u64,
    pub last_seq: u64,
    pub read_seq: u64,
    pub unread: u64,
    pub peer_read_seq: u64,
    pub last_message: Option<Message>,
    pub updated_ms: u64,
}

impl From<sdk::Conversation> for Conversation {
    fn from(c: sdk::Conversation) -> Conversation {
        Conversation {
            peer_uid: c.peer_uid,
            last_seq: c.last_seq,
            read_seq: c.read_seq,
            unread: c.unread,
            peer_read_seq: c.peer_read_seq,
            last_message: c.last_message.map(Message::from),
            updated_ms: c.updated_ms,
        }
    }
}

#[derive(uniffi::Enum)]
pub enum SendState {
    Pending,
    Sent { msg_id: u64, seq: u64 },
    Failed { code: i32 },
}

impl From<sdk::SendState> for SendState {
    fn from(state: sdk::SendState) -> SendState {
        match state {
            sdk::SendState::Pending => SendState::Pending,
            sdk::SendState::Sent { msg_id, seq } => SendState::Sent { msg_id, seq },
            sdk::SendState::Failed { code } => SendState::Failed { code },
        }
    }
}

#[derive(uniffi::Record)]
pub struct Outgoing {
    pub client_msg_id: String,
    pub to_uid: u64,
    pub content_type: u32,
    pub content: Vec<u8>,
    pub state: SendState,
    pub created_ms: u64,
}

impl From<sdk::Outgoing> for Outgoing {
    fn from(o: sdk::Outgoing) -> Outgoing {
        Outgoing {
            client_msg_id: o.client_msg_id,
            to_uid: o.to_uid,
            content_type: o.content_type,
            content: o.content,
            state: o.state.into(),
            created_ms: o.created_ms,
        }
    }
}

#[derive(uniffi::Record)]
pub struct Profile {
    pub uid: u64,
    pub nickname: String,
    pub avatar_url: String,
}

#[derive(uniffi::Enum)]
pub enum ConnectionState {
    Connecting,
    Online,
    Waiting { retry_in_ms: u64 },
    Paused,
    TokenExpired,
    Kicked,
    Closed,
}

impl From<&sdk::ConnectionState> for ConnectionState {
    fn from(state: &sdk::ConnectionState) -> ConnectionState {
        match state {
            sdk::ConnectionState::Connecting => ConnectionState::Connecting,
            sdk::ConnectionState::Online => ConnectionState::Online,
            sdk::ConnectionState::Waiting { retry_in } => ConnectionState::Waiting {
                retry_in_ms: retry_in.as_millis() as u64,
            },
            sdk::ConnectionState::Paused => ConnectionState::Paused,
            sdk::ConnectionState::TokenExpired => ConnectionState::TokenExpired,
            sdk::ConnectionState::Kicked => ConnectionState::Kicked,
            sdk::ConnectionState::Closed => ConnectionState::Closed,
        }
    }
}

#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ChatError {
    #[error("local store: {message}")]
    Store { message: String },
    #[error("not connected")]
    Offline,
    #[error("the server said {code}: {message}")]
    Server { code: i32, message: String },
    #[error("the client is closed")]
    Closed,
    #[error("could not start: {message}")]
    Start { message: String },
    #[error("content of {len} bytes is over the {limit} a frame can carry")]
    TooLarge { len: u64, limit: u64 },
}

impl From<sdk::SdkError> for ChatError {
    fn from(error: sdk::SdkError) -> ChatError {
        match error {
            sdk::SdkError::Store(e) => ChatError::Store {
                message: e.to_string(),
            },
            sdk::SdkError::Offline => ChatError::Offline,
            sdk::SdkError::Server { code, message } => ChatError::Server {
                code: code as i32,
                message,
            },
            sdk::SdkError::Closed => ChatError::Closed,
            sdk::SdkError::Start(e) => ChatError::Start {
                message: e.to_string(),
            },
            sdk::SdkError::TooLarge { len, limit } => ChatError::TooLarge {
                len: len as u64,
                limit: limit as u64,
            },
        }
    }
}

/// What the app implements to hear from the SDK; called on the SDK's
/// thread (return quickly).
#[uniffi::export(with_foreign)]
pub trait ChatListener: Send + Sync {
    fn on_messages(&self, messages: Vec<Message>);
    fn on_send_state(&self, client_msg_id: String, state: SendState);
    fn on_conversation(&self, conversation: Conversation);
    fn on_total_unread(&self, total: u64);
    fn on_read_receipt(&self, peer_uid: u64, seq: u64);
    fn on_connection(&self, state: ConnectionState);
    fn on_kicked(&self, reason: String);
    fn on_token_expired(&self);
}

struct Bridge(Arc<dyn ChatListener>);

impl sdk::Listener for Bridge {
    fn messages(&self, messages: &[sdk::Message]) {
        self.0
            .on_messages(messages.iter().cloned().map(Message::from).collect());
    }
    fn send_state(&self, client_msg_id: &str, state: sdk::SendState) {
        self.0.on_send_state(client_msg_id.to_owned(), state.into());
    }
    fn conversation(&self, conversation: &sdk::Conversation) {
        self.0.on_conversation(conversation.clone().into());
    }
    fn total_unread(&self, total: u64) {
        self.0.on_total_unread(total);
    }
    fn read_receipt(&self, peer_uid: u64, seq: u64) {
        self.0.on_read_receipt(peer_uid, seq);
    }
    fn connection(&self, state: &sdk::ConnectionState) {
        self.0.on_connection(state.into());
    }
    fn kicked(&self, reason: &str) {
        self.0.on_kicked(reason.to_owned());
    }
    fn token_expired(&self) {
        self.0.on_token_expired();
    }
}

/// How to start a [`ChatClient`]: [`default_config`] fills in the rest.
#[derive(uniffi::Record)]
pub struct ChatConfig {
    pub addrs: Vec<String>,
    pub uid: u64,
    pub token: String,
    pub device_id: String,
    pub store_path: String,
    /// TLS: the CA to trust (PEM) and the server's name; both or neither.
    pub tls_ca_pem: Option<Vec<u8>>,
    pub tls_server_name: Option<String>,
    pub reconnect_first_ms: u64,
    pub reconnect_max_ms: u64,
    pub request_timeout_ms: u64,
}

/// The SDK's defaults: TCP, reconnects from 0.5 s to 30 s, 10 s requests.
#[uniffi::export]
pub fn default_config(
    addrs: Vec<String>,
    uid: u64,
    token: String,
    device_id: String,
    store_path: String,
) -> ChatConfig {
    let defaults = sdk::Config::new(
        addrs.clone(),
        uid,
        &token,
        &device_id,
        store_path.clone().into(),
    );
    ChatConfig {
        addrs,
        uid,
        token,
        device_id,
        store_path,
        tls_ca_pem: None,
        tls_server_name: None,
        reconnect_first_ms: defaults.backoff.first.as_millis() as u64,
        reconnect_max_ms: defaults.backoff.max.as_millis() as u64,
        request_timeout_ms: defaults.request_timeout.as_millis() as u64,
    }
}

impl From<ChatConfig> for sdk::Config {
    fn from(c: ChatConfig) -> sdk::Config {
        let mut config =
            sdk::Config::new(c.addrs, c.uid, &c.token, &c.device_id, c.store_path.into());
        if let (Some(ca_pem), Some(server_name)) = (c.tls_ca_pem, c.tls_server_name) {
            config.tls = Some(sdk::Tls {
                ca_pem,
                server_name,
            });
        }
        config.backoff.first = Duration::from_millis(c.reconnect_first_ms);
        config.backoff.max = Duration::from_millis(c.reconnect_max_ms);
        config.request_timeout = Duration::from_millis(c.request_timeout_ms);
        config
    }
}

/// The SDK, as the app holds it.
#[derive(uniffi::Object)]
pub struct ChatClient {
    sdk: RwLock<Option<sdk::Sdk>>,
}

impl ChatClient {
    fn with<T>(
        &self,
        call: impl FnOnce(&sdk::Sdk) -> Result<T, sdk::SdkError>,
    ) -> Result<T, ChatError> {
        let sdk = self.sdk.read().map_err(|_| ChatError::Closed)?;
        let sdk = sdk.as_ref().ok_or(ChatError::Closed)?;
        Ok(call(sdk)?)
    }
}

#[uniffi::export]
impl ChatClient {
    /// Opens the store and starts connecting.
    #[uniffi::constructor]
    pub fn new(
        config: ChatConfig,
        listener: Arc<dyn ChatListener>,
    ) -> Result<Arc<ChatClient>, ChatError> {
        let sdk = sdk::Sdk::start(config.into(), Arc::new(Bridge(listener)))?;
        Ok(Arc::new(ChatClient {
            sdk: RwLock::new(Some(sdk)),
        }))
    }

    /// Queues a message (durable when this returns); its client_msg_id.
    pub fn send(
        &self,
        to_uid: u64,
        content_type: u32,
        content: Vec<u8>,
    ) -> Result<String, ChatError> {
        self.with(|sdk| sdk.send(to_uid, content_type, &content))
    }

    pub fn unsent(&self) -> Result<Vec<Outgoing>, ChatError> {
        self.with(|sdk| Ok(sdk.unsent()?.into_iter().map(Outgoing::from).collect()))
    }

    pub fn conversations(&self) -> Result<Vec<Conversation>, ChatError> {
        self.with(|sdk| {
            Ok(sdk
                .conversations()?
                .into_iter()
                .map(Conversation::from)
                .collect())
        })
    }

    pub fn total_unread(&self) -> Result<u64, ChatError> {
        self.with(|sdk| sdk.total_unread())
    }

    pub fn history(
        &self,
        peer_uid: u64,
        before_seq: u64,
        limit: u32,
    ) -> Result<Vec<Message>, ChatError> {
        self.with(|sdk| {
            Ok(sdk
                .history(peer_uid, before_seq, limit)?
                .into_iter()
                .map(Message::from)
                .collect())
        })
    }

    pub fn mark_read(&self, peer_uid: u64, seq: u64) -> Result<(), ChatError> {
        self.with(|sdk| sdk.mark_read(peer_uid, seq))
    }

    pub fn delete_conversation(&self, peer_uid: u64) -> Result<(), ChatError> {
        self.with(|sdk| sdk.delete_conversation(peer_uid))
    }

    pub fn profiles(&self, uids: Vec<u64>) -> Result<Vec<Profile>, ChatError> {
        self.with(|sdk| {
            Ok(sdk
                .profiles(&uids)?
                .into_iter()
                .map(|p| Profile {
                    uid: p.uid,
                    nickname: p.nickname,
                    avatar_url: p.avatar_url,
                })
                .collect())
        })
    }

    pub fn pause(&self) -> Result<(), ChatError> {
        self.with(|sdk| {
            sdk.pause();
            Ok(())
        })
    }

    pub fn resume(&self) -> Result<(), ChatError> {
        self.with(|sdk| {
            sdk.resume();
            Ok(())
        })
    }

    pub fn set_token(&self, token: String) -> Result<(), ChatError> {
        self.with(|sdk| {
            sdk.set_token(&token);
            Ok(())
        })
    }

    pub fn state(&self) -> Result<ConnectionState, ChatError> {
        self.with(|sdk| Ok((&sdk.state()).into()))
    }

    /// Stops the SDK's thread; the store stays. Later calls fail Closed.
    pub fn close(&self) {
        let sdk = self.sdk.write().map(|mut sdk| sdk.take());
        if let Ok(Some(sdk)) = sdk {
            sdk.close();
        }
    }
}
