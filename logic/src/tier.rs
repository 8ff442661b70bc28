//! Wiring the tier: open the store, recover where it left off, start the
//! group-commit thread (and the flush thread behind it), the readers, the
//! Redis keeper when configured, and the pipeline that fronts them all.
//!
//! ```text
//!   Inbox (upcalls) ──▶ im-logic (pipeline) ──WriteJob──▶ im-store-writer ──▶ im-store-flusher
//!                            │    ▲                            (commit.rs)        (flush.rs)
//!                            │    └────────── Committed + doorbell ──────────────────┘
//!                            └──ReadJob──▶ im-store-reader-N ──Downcall──▶ gateway
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use protocol::link::{Downlink, Upcall};
use runtime::config::Invalid;
use runtime::doorbell::{Bell, Doorbell};

use crate::answers::{Answers, Done};
use crate::auth::Authenticator;
use crate::cache::keeper;
use crate::cache::link::Shared;
use crate::cache::{Cache, CacheWriter};
use crate::commit::{self, GroupCommit};
use crate::config::{BackendKind, LogicConfig, RedisConfig, StorageConfig};
use crate::direct::Direct;
use crate::metrics::LogicMetrics;
use crate::outbox;
use crate::pipeline::Pipeline;
use crate::presence::GatewayAddrs;
use crate::reader;
use crate::sequencer::Sequencer;
use crate::store::lease::WriterLease;
use crate::store::{Backend, StoreError};

/// Why the logic tier did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] Invalid),
    #[error("cannot start a logic thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error(transparent)]
    Outbox(#[from] crate::outbox::StartError),
}

/// Where the gateway's upcalls arrive: a bounded queue (full: the gateway
/// answers UNAVAILABLE at once) and the doorbell its senders ring once per
/// batch (see `runtime::doorbell`).
pub struct Inbox {
    pub upcalls: Receiver<Upcall>,
    pub doorbell: Doorbell,
}

impl Inbox {
    /// The queue, the inbox's end of it, and the bell to ring after sending.
    pub fn bounded(capacity: usize) -> (Sender<Upcall>, Bell, Inbox) {
        let (tx, upcalls) = crossbeam_channel::bounded(capacity);
        let doorbell = Doorbell::new();
        (tx, doorbell.bell(), Inbox { upcalls, doorbell })
    }
}

pub struct LogicHandle {
    threads: Vec<JoinHandle<()>>,
    /// Tells the outbox's threads to stop (they are not joined: a
    /// delivery in progress may take its timeout).
    outbox_stop: Arc<AtomicBool>,
    metrics: Arc<LogicMetrics>,
    direct: Direct,
    /// The thread renewing the writer's lease, and its stop: stopped after
    /// the last write, when it gives the lease up.
    lease: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl LogicHandle {
    /// The tier's metrics, for the admin page.
    pub fn metrics(&self) -> Arc<LogicMetrics> {
        self.metrics.clone()
    }

    /// Requests from inside the process (the HTTP API).
    pub fn direct(&self) -> Direct {
        self.direct.clone()
    }

    /// Waits for the logic tier to finish: it does once every gateway is
    /// gone (the upcall queue is disconnected) and every write it accepted
    /// is committed and answered.
    pub fn join(self) {
        self.outbox_stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            if thread.join().is_err() {
                log::error!("a logic thread panicked");
            }
        }
        if let Some((stop, keeper)) = self.lease {
            stop.store(true, Ordering::Release);
            if keeper.join().is_err() {
                log::error!("the lease thread panicked");
            }
        }
    }
}

/// The configured storage: the backend, and on MySQL the writer's lease,
/// which must be held before the tier starts (`WriterLease::wait_for`).
pub struct Storage {
    pub backend: Arc<dyn Backend>,
    pub lease: Option<WriterLease>,
}

/// Opens the configured storage backend (creating or migrating its schema).
pub fn open_backend(storage: &StorageConfig) -> Result<Storage, StartError> {
    storage.validate()?;
    Ok(match storage.backend {
        BackendKind::Sqlite => Storage {
            backend: Arc::new(crate::store::journal::Journaled::open(
                std::path::Path::new(&storage.data_dir),
                storage.sqlite_synchronous,
            )?),
            lease: None,
        },
        BackendKind::Mysql => {
            let mysql = crate::store::mysql::MySql::open(&storage.mysql_urls)?;
            let lease = mysql.lease(storage.writer_lease_ms);
            Storage {
                backend: Arc::new(mysql),
                lease: Some(lease),
            }
        }
    })
}

/// How the tier meets its gateways, in one process or across a link.
pub struct Link {
    /// Where their upcalls arrive.
    pub inbox: Inbox,
    /// How downcalls reach them.
    pub downlink: Arc<dyn Downlink>,
    /// Where each one's clients connect, for the presence directory.
    pub addrs: Arc<GatewayAddrs>,
}

/// Starts the logic tier: the pipeline, the writer and the readers, and on
/// MySQL the thread keeping the writer's lease (held by the caller).
pub fn start(
    config: &LogicConfig,
    redis: &RedisConfig,
    max_frame: usize,
    auth: Authenticator,
    storage: Storage,
    link: Link,
) -> Result<LogicHandle, StartError> {
    let Storage { backend, lease } = storage;
    let Link {
        inbox,
        downlink,
        addrs: gateways,
    } = link;
    config.validate()?;
    let direct = Direct::wire(
        config.queue_capacity,
        inbox.doorbell.bell(),
        downlink,
        gateways.clone(),
        Arc::new(auth.clone()),
        max_frame,
    );
    let downlink = direct.downlink;
    redis.validate()?;
    let mut writer_store = backend.writer()?;
    let recovered = writer_store.recover()?;
    log::info!(
        "storage recovered: last msg_id {}, last change version {}",
        recovered.max_msg_id,
        recovered.max_version
    );
    let revocations = writer_store.revocations()?;
    let sequencer = Sequencer::new(recovered, config.node_id, config.row_cache);
    let (write_tx, write_rx) = crossbeam_channel::bounded(config.queue_capacity);
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    let policy = GroupCommit {
        max_batch: config.group_commit_max,
        window: Duration::from_micros(config.group_commit_window_us),
    };
    let metrics = Arc::new(LogicMetrics::default());
    let mut threads = Vec::new();

    // Redis: the keeper, the writer's side of the caches, the readers' side.
    let (directory, cache_writer, reader_caches) = if redis.enabled() {
        let shared = Arc::new(
            Shared::new(redis, metrics.clone())
                .map_err(|e| Invalid::new("redis.url", e.to_string()))?,
        );
        let (directory, keeper) = keeper::start(shared.clone(), config.node_id, gateways)?;
        threads.push(keeper);
        let (rebuild_tx, rebuild_rx) = crossbeam_channel::bounded(4096);
        let writer = CacheWriter::new(
            Cache::new(shared.clone(), None),
            backend.reader()?,
            rebuild_rx,
        );
        let readers: Vec<Cache> = (0..config.reader_threads)
            .map(|_| Cache::new(shared.clone(), Some(rebuild_tx.clone())))
            .collect();
        (Some(directory), Some(writer), readers)
    } else {
        let readers = (0..config.reader_threads)
            .map(|_| Cache::disabled())
            .collect();
        (None, None, readers)
    };

    let answers = Answers {
        metrics: metrics.clone(),
        done: Done {
            queue: done_tx,
            bell: inbox.doorbell.bell(),
        },
        cache: cache_writer,
    };
    threads.push(commit::spawn(
        writer_store,
        sequencer,
        policy,
        write_rx,
        answers,
    )?);

    let readers = reader_caches
        .into_iter()
        .map(|cache| Ok((backend.reader()?, cache)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let (read_tx, read_rx) = crossbeam_channel::bounded(config.queue_capacity);
    threads.extend(reader::spawn(
        readers,
        read_rx,
        downlink.clone(),
        max_frame,
    )?);

    let outbox_stop = Arc::new(AtomicBool::new(false));
    let outbox = if config.webhook.enabled() {
        Some(outbox::start(
            &config.webhook,
            &backend,
            direct.direct.clone(),
            metrics.clone(),
            outbox_stop.clone(),
        )?)
    } else {
        None
    };
    let mut pipeline = Pipeline::new(
        config,
        max_frame,
        auth,
        directory,
        downlink,
        write_tx,
        read_tx,
        outbox,
        metrics.clone(),
    )?;
    for revocation in revocations {
        pipeline.note_revocation(revocation);
    }
    threads.push(
        thread::Builder::new()
            .name("im-logic".into())
            .spawn(move || pipeline.run(inbox, direct.calls, done_rx))?,
    );
    let lease = match lease {
        Some(lease) => {
            let stop = Arc::new(AtomicBool::new(false));
            Some((stop.clone(), lease.keep(stop)?))
        }
        None => None,
    };
    Ok(LogicHandle {
        threads,
        outbox_stop,
        metrics,
        direct: direct.direct,
        lease,
    })
}
