//! The logic tier's sections of the configuration file: `[auth]`,
//! `[storage]`, `[logic]` and `[redis]`, each with the check that refuses
//! what the tier would refuse at start. The file as a whole is read by the
//! binary (the `server` crate's `config.rs`).

use runtime::config::{Invalid, positive};
use serde::{Deserialize, Serialize};

/// `[auth]`: login tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The HMAC secret tokens are signed with. Empty: the environment
    /// variable `IM_AUTH_SECRET`, else a random secret generated once into
    /// `<data_dir>/auth.secret`. There is no setting that accepts unsigned logins.
    pub secret: String,
    /// Lifetime of tokens minted by `im-server token` unless `--ttl` says otherwise.
    pub token_ttl_secs: u64,
    /// During a rollover: the secret being replaced. Tokens it signed are
    /// still accepted; new tokens are signed with `secret` only. Empty (the
    /// default): none. Or the environment variable `IM_AUTH_PREVIOUS_SECRET`.
    pub previous_secret: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secret: String::new(),
            token_ttl_secs: 7 * 24 * 3600,
            previous_secret: String::new(),
        }
    }
}

/// The environment variable that overrides `auth.secret`.
pub const SECRET_ENV: &str = "IM_AUTH_SECRET";
/// The environment variable that overrides `auth.previous_secret`.
pub const PREVIOUS_SECRET_ENV: &str = "IM_AUTH_PREVIOUS_SECRET";

impl AuthConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        positive(&[("auth.token_ttl_secs", self.token_ttl_secs)])
    }

    /// `IM_AUTH_SECRET` and `IM_AUTH_PREVIOUS_SECRET`, when set and not
    /// empty, win over the file.
    pub fn apply_env(&mut self) {
        runtime::config::secret_from_env(SECRET_ENV, &mut self.secret);
        runtime::config::secret_from_env(PREVIOUS_SECRET_ENV, &mut self.previous_secret);
    }
}

/// `[storage]`: where messages live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// "sqlite" (embedded, the default) or "mysql".
    pub backend: BackendKind,
    /// Where the embedded store and the generated secret live.
    pub data_dir: String,
    /// One URL per MySQL shard, in shard order (backend = "mysql").
    pub mysql_urls: Vec<String>,
    /// Embedded store: "full" (every commit fsynced: survives power loss)
    /// or "normal" (survives process crashes only). See docs/operations.md.
    pub sqlite_synchronous: Synchronous,
    /// MySQL: the writer's lease (docs/cluster.md, "Logic failover"). A
    /// standby takes over within about 4/3 of this after the writer stops
    /// renewing; shorter costs more renewals and risks a takeover from a
    /// writer that is merely slow (it is then fenced: nothing is lost).
    pub writer_lease_ms: u64,
}

/// `storage.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The embedded store: a journal in front of SQLite, in `data_dir`.
    Sqlite,
    /// MySQL, MariaDB or TiDB, one database per shard.
    Mysql,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Mysql => "mysql",
        }
    }
}

/// `storage.sqlite_synchronous`: when the embedded store's commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Every commit fsynced before it is acknowledged: survives power loss.
    Full,
    /// fsync at checkpoints only: survives process crashes.
    Normal,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: BackendKind::Sqlite,
            data_dir: "data".into(),
            mysql_urls: Vec::new(),
            sqlite_synchronous: Synchronous::Full,
            writer_lease_ms: crate::store::mysql::DEFAULT_LEASE_MS,
        }
    }
}

impl StorageConfig {
    /// Checks the section; the error names the field. What only the
    /// database can say (is it up, is the shard layout the one it was made
    /// with) is found at start.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.data_dir.is_empty() {
            return Err(Invalid::new("storage.data_dir", "must not be empty"));
        }
        if self.backend != BackendKind::Mysql {
            return Ok(());
        }
        if !(300..=60_000).contains(&self.writer_lease_ms) {
            return Err(Invalid::new(
                "storage.writer_lease_ms",
                "must be between 300 and 60000",
            ));
        }
        if self.mysql_urls.is_empty() {
            return Err(Invalid::new(
                "storage.mysql_urls",
                "is empty: give one URL per shard",
            ));
        }
        let mut names: Vec<String> = Vec::with_capacity(self.mysql_urls.len());
        for (index, url) in self.mysql_urls.iter().enumerate() {
            let name = crate::store::mysql::database_name(url)
                .map_err(|reason| Invalid::new("storage.mysql_urls", reason))?;
            if let Some(same) = names.iter().position(|n| *n == name) {
                return Err(Invalid::new(
                    "storage.mysql_urls",
                    format!("shards {same} and {index} are both database `{name}`"),
                ));
            }
            names.push(name);
        }
        Ok(())
    }
}

/// `[logic]`: the messaging pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogicConfig {
    /// Requests that may wait for the logic tier (and writes for the
    /// writer, reads for the readers) before clients get UNAVAILABLE.
    pub queue_capacity: usize,
    /// This logic node's id, 0..1023, part of every msg_id it makes; give
    /// every logic node of a deployment its own.
    pub node_id: u64,
    /// Largest message content, bytes.
    pub max_content_bytes: usize,
    /// Messages per second one user may send, and the burst allowed.
    pub messages_per_sec: u32,
    pub message_burst: u32,
    /// Failed logins per minute for one uid; past it, that uid's logins are
    /// refused RATE_LIMITED, unverified, for the rest of the minute (its
    /// owner's too: a guesser can hold an account off for a minute at a
    /// time, never get in). 0: no limit.
    pub failed_logins_per_min_per_uid: u32,
    /// Words that get a message refused with CONTENT_REJECTED (ASCII case-insensitive).
    pub content_filter: Vec<String>,
    /// An unacked push is resent after this...
    pub push_resend_first_ms: u64,
    /// ...again this long after the first resend...
    pub push_resend_second_ms: u64,
    /// ...and its session is closed this long after the second resend.
    pub push_close_ms: u64,
    /// Most writes committed in one transaction.
    pub group_commit_max: usize,
    /// How long a batch waits for more writes when none are queued, in
    /// microseconds. 0: commit what is queued at once.
    pub group_commit_window_us: u64,
    /// Threads (and storage connections) serving history, sync,
    /// conversation lists and profiles.
    pub reader_threads: usize,
    /// Recent (sender, client_msg_id) pairs kept in memory for fast dedup.
    pub recent_ids: usize,
    /// Conversation rows the writer keeps in memory.
    pub row_cache: usize,
    /// `[logic.webhook]`: the offline-notification outbox.
    pub webhook: WebhookConfig,
}

impl Default for LogicConfig {
    fn default() -> Self {
        LogicConfig {
            queue_capacity: 65_536,
            node_id: 0,
            max_content_bytes: 16_384,
            messages_per_sec: 200,
            message_burst: 400,
            failed_logins_per_min_per_uid: 20,
            content_filter: Vec::new(),
            push_resend_first_ms: 2_000,
            push_resend_second_ms: 4_000,
            push_close_ms: 8_000,
            group_commit_max: 4_096,
            group_commit_window_us: 0,
            reader_threads: 2,
            recent_ids: 200_000,
            row_cache: 1_000_000,
            webhook: WebhookConfig::default(),
        }
    }
}

impl LogicConfig {
    /// Checks the section; the error names the field.
    pub fn validate(&self) -> Result<(), Invalid> {
        positive(&[
            ("logic.queue_capacity", self.queue_capacity as u64),
            ("logic.messages_per_sec", self.messages_per_sec as u64),
            ("logic.message_burst", self.message_burst as u64),
            ("logic.group_commit_max", self.group_commit_max as u64),
            ("logic.reader_threads", self.reader_threads as u64),
            ("logic.recent_ids", self.recent_ids as u64),
            ("logic.push_resend_first_ms", self.push_resend_first_ms),
            ("logic.push_resend_second_ms", self.push_resend_second_ms),
            ("logic.push_close_ms", self.push_close_ms),
        ])?;
        if self.node_id > crate::ids::MAX_NODE_ID {
            return Err(Invalid::new(
                "logic.node_id",
                format!("must be 0 to {}", crate::ids::MAX_NODE_ID),
            ));
        }
        crate::filter::ContentFilter::new(&self.content_filter)
            .map_err(|e| Invalid::new("logic.content_filter", e.to_string()))?;
        self.webhook.validate()
    }
}

/// `[logic.webhook]`: where offline notifications go (the bridge to APNs
/// or FCM), through the durable outbox (`outbox/`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://…` or `http://…`. Empty (the default): no outbox; a
    /// message to an offline recipient is only counted.
    pub url: String,
    /// The HMAC-SHA256 key each request is signed with (docs/webhook.md).
    /// Required with a url; or the environment variable `IM_WEBHOOK_SECRET`.
    pub secret: String,
    /// A PEM file of CA certificates to trust besides the public roots
    /// (a receiver with a private CA). Empty: public roots only.
    pub ca_file: String,
    /// The first this many characters of a text message go in the
    /// notification's `preview`. 0: no preview (nothing of the content
    /// leaves the server).
    pub preview_chars: usize,
    /// Deliveries in flight at once.
    pub senders: usize,
    /// One delivery's connect-to-answer limit, milliseconds.
    pub timeout_ms: u64,
    /// The first retry of a failed delivery waits up to this long
    /// (milliseconds); each further one twice as long, up to `retry_max_ms`;
    /// each wait is drawn uniformly below its bound (full jitter).
    pub retry_first_ms: u64,
    pub retry_max_ms: u64,
    /// Most notifications the outbox holds; past it new ones are not
    /// recorded (counted in `im_logic_webhook_dropped_total`).
    pub max_backlog: u64,
    /// A notification undelivered this long is dropped (counted).
    pub max_age_secs: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            secret: String::new(),
            ca_file: String::new(),
            preview_chars: 100,
            senders: 4,
            timeout_ms: 10_000,
            retry_first_ms: 1_000,
            retry_max_ms: 300_000,
            max_backlog: 1_000_000,
            max_age_secs: 3 * 86_400,
        }
    }
}

/// The environment variable that overrides `logic.webhook.secret`.
pub const WEBHOOK_SECRET_ENV: &str = "IM_WEBHOOK_SECRET";

impl WebhookConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// `IM_WEBHOOK_SECRET`, when set and not empty, wins over the file.
    pub fn apply_env(&mut self) {
        runtime::config::secret_from_env(WEBHOOK_SECRET_ENV, &mut self.secret);
    }

    /// Checks the section; the error names the field.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !self.enabled() {
            return Ok(());
        }
        let parsed = self
            .url
            .parse::<ureq::http::Uri>()
            .map_err(|e| Invalid::new("logic.webhook.url", e.to_string()))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
            return Err(Invalid::new(
                "logic.webhook.url",
                "must be https://host[:port]/path or http://…",
            ));
        }
        if self.secret.is_empty() {
            return Err(Invalid::new(
                "logic.webhook.secret",
                "must be set with a url (or IM_WEBHOOK_SECRET): receivers verify it",
            ));
        }
        if !self.ca_file.is_empty() {
            crate::outbox::http::read_roots(std::path::Path::new(&self.ca_file))
                .map_err(|e| Invalid::new("logic.webhook.ca_file", e))?;
        }
        positive(&[
            ("logic.webhook.senders", self.senders as u64),
            ("logic.webhook.timeout_ms", self.timeout_ms),
            ("logic.webhook.retry_first_ms", self.retry_first_ms),
            ("logic.webhook.retry_max_ms", self.retry_max_ms),
            ("logic.webhook.max_backlog", self.max_backlog),
            ("logic.webhook.max_age_secs", self.max_age_secs),
        ])
    }
}

/// `[redis]`: the shared cache and presence directory. Absent (or an empty
/// `url`): no Redis; the node keeps its caches in process. Redis never
/// holds the only copy of anything: see `cache/mod.rs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`. Empty: no Redis.
    pub url: String,
    /// Every key this deployment writes starts with this.
    pub key_prefix: String,
    /// Connect, read and write timeout of one Redis call, milliseconds.
    pub timeout_ms: u64,
    /// After a failed call, Redis is left alone (reads go to storage) for
    /// this long before one probe tries it again, milliseconds.
    pub breaker_open_ms: u64,
    /// A device's presence entry disappears this long after its node last
    /// refreshed it (a crashed node's devices go away on their own).
    pub presence_ttl_secs: u64,
    /// Cached unread counters, conversation lists and profiles expire this
    /// long after they were built (they are rebuilt on the next read).
    pub cache_ttl_secs: u64,
    /// Most conversations a cached list holds; older ones are read from storage.
    pub cached_conversations: usize,
    /// The client address a gateway tells (written into presence entries).
    /// Empty: where it listens.
    pub advertise: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            key_prefix: "im:".into(),
            timeout_ms: 200,
            breaker_open_ms: 2_000,
            presence_ttl_secs: 90,
            cache_ttl_secs: 86_400,
            cached_conversations: 1_000,
            advertise: String::new(),
        }
    }
}

/// The environment variable that overrides `redis.url`.
pub const REDIS_URL_ENV: &str = "IM_REDIS_URL";

impl RedisConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// `IM_REDIS_URL`, when set, wins over the file (set it empty to turn Redis off).
    pub fn apply_env(&mut self) {
        if let Ok(url) = std::env::var(REDIS_URL_ENV) {
            self.url = url;
        }
    }

    /// Checks the section; the error names the field.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !self.enabled() {
            return Ok(());
        }
        if let Err(e) = redis::Client::open(self.url.as_str()) {
            return Err(Invalid::new("redis.url", e.to_string()));
        }
        positive(&[
            ("redis.timeout_ms", self.timeout_ms),
            ("redis.breaker_open_ms", self.breaker_open_ms),
            ("redis.presence_ttl_secs", self.presence_ttl_secs),
            ("redis.cache_ttl_secs", self.cache_ttl_secs),
            (
                "redis.cached_conversations",
                self.cached_conversations as u64,
            ),
        ])
    }
}
