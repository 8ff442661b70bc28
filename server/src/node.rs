//! A complete single-node server: gateway, logic tier and admin port in one
//! process, joined by in-process queues. `im-server` runs one; integration
//! tests start one on port 0.
//!
//! The in-process link: the gateway's workers send upcalls into the logic
//! tier's bounded inbox ([`gateway::LocalUplink`]) and the logic tier sends
//! downcalls into the workers' mailboxes ([`gateway::Mailboxes`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use gateway::{GatewayHandle, LocalUplink, Mailboxes, Metrics, Uplink};
use protocol::link::Downlink;
use runtime::config::Invalid;

use crate::admin::{self, AdminHandle};
use crate::config::Config;

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] Invalid),
    #[error(transparent)]
    Auth(#[from] logic::auth::AuthError),
    #[error(transparent)]
    Gateway(#[from] gateway::StartError),
    #[error(transparent)]
    Logic(#[from] logic::StartError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

pub struct Node {
    gateway: GatewayHandle,
    logic: logic::LogicHandle,
    admin: Option<AdminHandle>,
    metrics: Arc<Metrics>,
}

impl Node {
    pub fn start(config: &Config) -> Result<Node, NodeError> {
        config.validate()?;
        let auth =
            logic::Authenticator::from_config(&config.auth, Path::new(&config.storage.data_dir))?;
        let backend = logic::open_backend(&config.storage)?;
        let metrics = Arc::new(Metrics::default());
        let (up_tx, bell, inbox) = logic::Inbox::bounded(config.logic.queue_capacity);
        let uplink: Arc<dyn Uplink> = Arc::new(LocalUplink::new(up_tx, bell));
        let gateway = gateway::start(&config.gateway, uplink.clone(), &metrics)?;
        let mailboxes = gateway.downlink();
        let downlink: Arc<dyn Downlink> = Arc::new(mailboxes.clone());
        let mut redis = config.redis.clone();
        if redis.advertise.is_empty() {
            redis.advertise = gateway.local_addr().to_string();
        }
        let logic = logic::start(
            &config.logic,
            &redis,
            config.gateway.max_frame,
            auth,
            backend,
            inbox,
            downlink,
        )?;
        let admin = match config.admin.addr()? {
            None => None,
            Some(addr) => {
                let render = render_metrics(metrics.clone(), logic.metrics(), uplink, mailboxes);
                Some(admin::start(addr, render).map_err(|source| NodeError::Io {
                    what: "cannot open the admin port",
                    source,
                })?)
            }
        };
        Ok(Node {
            gateway,
            logic,
            admin,
            metrics,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.gateway.local_addr()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminHandle::local_addr)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Graceful stop: the gateway kicks and flushes its sessions, then the
    /// logic tier finishes what it was handed, then the admin port closes.
    pub fn shutdown(self) {
        self.gateway.shutdown();
        self.gateway.join();
        // The admin page holds the last handle on the upcall queue; closing
        // it lets the logic thread see the queue end.
        if let Some(admin) = self.admin {
            admin.stop();
        }
        self.logic.join();
        log::info!("node stopped");
    }
}

fn render_metrics(
    metrics: Arc<Metrics>,
    logic: Arc<logic::metrics::LogicMetrics>,
    uplink: Arc<dyn Uplink>,
    mailboxes: Mailboxes,
) -> admin::Render {
    Arc::new(move || {
        let mut queues = vec![("uplink".to_owned(), uplink.depth())];
        for (worker, depth) in mailboxes.depths().into_iter().enumerate() {
            queues.push((format!("downlink_worker_{worker}"), depth));
        }
        let mut page = metrics.render(&queues);
        logic.render(&mut page);
        page
    })
}
