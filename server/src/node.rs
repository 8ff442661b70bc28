//! The nodes, one per role, built from the same pieces:
//!
//! - [`Node`]: a complete single-node server, gateway, logic tier, admin
//!   port and business API in one process, joined by in-process queues: the gateway's
//!   workers send upcalls into the logic tier's bounded inbox
//!   ([`gateway::LocalUplink`]) and the logic tier sends downcalls into the
//!   workers' mailboxes ([`gateway::Mailboxes`]). `im-server` runs one;
//!   integration tests start one on port 0.
//! - [`GatewayNode`]: the gateway alone, its uplink carried to the logic
//!   tier by `link::gateway_end` (`im-gateway`).
//! - [`LogicNode`]: the logic tier alone (with the business API), gateways
//!   reaching it through `link::logic_end` (`im-logic serve`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use gateway::{GatewayHandle, LocalUplink, Mailboxes, Metrics, Uplink};
use logic::presence::GatewayAddrs;
use protocol::link::Downlink;
use runtime::config::Invalid;

use crate::config::Config;
use crate::link::handshake::GatewayInfo;
use crate::link::{gateway_end, logic_end};
use api::admin::{self, Readiness};
use api::{Api, HttpHandle, Sites};

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
    #[error("stopped while a standby")]
    Stopped,
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> NodeError {
    move |source| NodeError::Io { what, source }
}

/// The storage of `config`, ready to write: on MySQL, once this process
/// holds the writer's lease. Until then it is a standby, and waits (before
/// it opens any port, so gateways and clients find the active node).
fn writer_storage(config: &Config) -> Result<logic::Storage, NodeError> {
    let storage = logic::open_backend(&config.storage)?;
    if let Some(lease) = &storage.lease {
        log::info!(
            "taking the writer lease as {} ({} ms)",
            lease.holder(),
            lease.lease().as_millis()
        );
        if lease.wait_for(&crate::cli::stopping()).is_none() {
            return Err(NodeError::Stopped);
        }
        log::info!("this process holds the writer lease: active");
    }
    Ok(storage)
}

/// The logic tier of `config` on `storage`, started with its inbox and
/// downlink.
fn start_logic(
    config: &Config,
    storage: logic::Storage,
    link: logic::Link,
) -> Result<logic::LogicHandle, NodeError> {
    let auth =
        logic::Authenticator::from_config(&config.auth, Path::new(&config.storage.data_dir))?;
    Ok(logic::start(
        &config.logic,
        &config.redis,
        config.gateway.max_frame,
        auth,
        storage,
        link,
    )?)
}

/// The admin port, the API port and the queue consumer, each if
/// configured: the admin port serving `render` (with the API's and the
/// queue's metrics when they run) and `readiness`, the API and the queue
/// making their requests through `direct` (a node with a logic tier).
fn start_http(
    config: &Config,
    render: admin::Render,
    readiness: Readiness,
    direct: Option<logic::direct::Direct>,
) -> Result<Option<HttpHandle>, NodeError> {
    let api_addr = config.api.addr()?;
    let api = match direct {
        Some(direct) if api_addr.is_some() || config.queue.enabled() => {
            let data_dir = Path::new(&config.storage.data_dir);
            Some(Arc::new(Api::new(&config.api, direct, data_dir)?))
        }
        _ => None,
    };
    let queue = match &api {
        Some(api) if config.queue.enabled() => Some(Arc::new(api::queue::Queue {
            config: config.queue.clone(),
            api: api.clone(),
            metrics: Arc::default(),
        })),
        _ => None,
    };
    let api_metrics = api.as_ref().map(|api| api.metrics.clone());
    let queue_metrics = queue.as_ref().map(|queue| queue.metrics.clone());
    let render: admin::Render = Arc::new(move || {
        let mut out = render();
        if let Some(metrics) = &api_metrics {
            metrics.render(&mut out);
        }
        if let Some(metrics) = &queue_metrics {
            metrics.render(&mut out);
        }
        out
    });
    let sites = Sites {
        admin: config.admin.addr()?.map(|addr| (addr, render, readiness)),
        api: api_addr.zip(api),
        queue,
        threads: config.api.threads,
    };
    if sites.admin.is_none() && sites.api.is_none() && sites.queue.is_none() {
        return Ok(None);
    }
    Ok(Some(
        api::serve::start(sites).map_err(io("cannot open the admin or API port"))?,
    ))
}

/// The gateway's section, with a self-signed certificate made in the data
/// dir (and logged) when a TLS listener has none: for trying TLS out.
fn gateway_config(config: &Config) -> Result<gateway::GatewayConfig, NodeError> {
    let mut gateway = config.gateway.clone();
    if gateway.needs_tls() && gateway.tls.cert.is_empty() {
        let dir = Path::new(&config.storage.data_dir).join("tls");
        let (cert, key) = crate::tls::self_signed(&dir)
            .map_err(io("cannot make a self-signed TLS certificate"))?;
        gateway.tls.cert = cert.display().to_string();
        gateway.tls.key = key.display().to_string();
    }
    Ok(gateway)
}

/// Reads the TLS certificate again, saying how that went.
fn reload_tls(gateway: &GatewayHandle) {
    match gateway.reload_tls() {
        Ok(()) => log::info!("TLS certificate reloaded"),
        Err(e) => log::error!("TLS certificate not reloaded (the old one stays): {e}"),
    }
}

/// Stops a gateway (it kicks and flushes its sessions, and its threads
/// end), then the HTTP ports (whose API requests the logic tier, still
/// running, answers).
fn stop_gateway(gateway: GatewayHandle, http: Option<HttpHandle>) {
    gateway.shutdown();
    gateway.join();
    stop_http(http);
}

fn stop_http(http: Option<HttpHandle>) {
    if let Some(http) = http {
        http.stop();
    }
}

/// A gateway's part of the metrics page.
fn gateway_page(metrics: &Metrics, uplink: &dyn Uplink, mailboxes: &Mailboxes) -> String {
    let mut queues = vec![("uplink".to_owned(), uplink.depth())];
    for (worker, depth) in mailboxes.depths().into_iter().enumerate() {
        queues.push((format!("downlink_worker_{worker}"), depth));
    }
    metrics.render(&queues)
}

/// The client address a gateway tells: `redis.advertise`, else where it listens.
pub fn advertised(config: &Config, listening: SocketAddr) -> String {
    match config.redis.advertise.as_str() {
        "" => listening.to_string(),
        addr => addr.to_owned(),
    }
}

pub struct Node {
    gateway: GatewayHandle,
    logic: logic::LogicHandle,
    http: Option<HttpHandle>,
    metrics: Arc<Metrics>,
}

impl Node {
    pub fn start(config: &Config) -> Result<Node, NodeError> {
        config.validate()?;
        let storage = writer_storage(config)?;
        let metrics = Arc::new(Metrics::default());
        let (up_tx, bell, inbox) = logic::Inbox::bounded(config.logic.queue_capacity);
        let uplink: Arc<dyn Uplink> = Arc::new(LocalUplink::new(up_tx, bell));
        let gateway = gateway::start(&gateway_config(config)?, uplink.clone(), &metrics)?;
        let mailboxes = gateway.downlink();
        let gateways = Arc::new(GatewayAddrs::default());
        gateways.set(
            gateway.id(),
            logic::presence::GatewayAddr {
                client_addr: advertised(config, gateway.local_addr()),
                epoch_ms: runtime::clock::unix_ms(),
            },
        );
        let link = logic::Link {
            inbox,
            downlink: Arc::new(mailboxes.clone()),
            addrs: gateways,
        };
        let logic = start_logic(config, storage, link)?;
        let (page, logic_metrics) = (metrics.clone(), logic.metrics());
        let http = start_http(
            config,
            Arc::new(move || {
                let mut out = gateway_page(&page, uplink.as_ref(), &mailboxes);
                logic_metrics.render(&mut out);
                out
            }),
            Readiness::Storage(logic.direct()),
            Some(logic.direct()),
        )?;
        Ok(Node {
            gateway,
            logic,
            http,
            metrics,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.gateway.local_addr()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(HttpHandle::admin_addr)
    }

    /// Where TLS clients connect, if configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.gateway.tls_addr()
    }

    /// Where WebSocket clients connect, if configured.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.gateway.ws_addr()
    }

    /// SIGHUP: the TLS certificate and key read again.
    pub fn reload_tls(&self) {
        reload_tls(&self.gateway)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Where the business API listens, if configured.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(HttpHandle::api_addr)
    }

    /// Graceful stop: the gateway kicks and flushes its sessions, the HTTP
    /// ports close, then the logic tier finishes what it was handed.
    pub fn shutdown(self) {
        // The admin page holds the last handle on the upcall queue; closing
        // it lets the logic thread see the queue end.
        stop_gateway(self.gateway, self.http);
        self.logic.join();
        log::info!("node stopped");
    }
}

/// `im-gateway`: the connection tier, linked to `im-logic serve`.
pub struct GatewayNode {
    gateway: GatewayHandle,
    link: gateway_end::LinkHandle,
    http: Option<HttpHandle>,
}

impl GatewayNode {
    pub fn start(config: &Config) -> Result<GatewayNode, NodeError> {
        config.validate()?;
        let secret = config.link.required_secret()?.to_vec();
        let logic = config.link.logic_addrs()?;
        if logic.is_empty() {
            return Err(Invalid::new(
                "link.logic",
                "is empty: give the logic tier's link address (--logic ADDR)",
            )
            .into());
        }
        let metrics = Metrics::default();
        let (linked, upcalls, doorbell) =
            gateway_end::LinkedUplink::new(config.link.queue_capacity);
        let linked = Arc::new(linked);
        let uplink: Arc<dyn Uplink> = linked.clone();
        let gateway = gateway::start(&gateway_config(config)?, uplink.clone(), &metrics)?;
        let mailboxes = gateway.downlink();
        let settings = gateway_end::Settings {
            logic,
            secret,
            info: GatewayInfo {
                gateway: gateway.id(),
                epoch_ms: runtime::clock::unix_ms(),
                client_addr: advertised(config, gateway.local_addr()),
            },
            heartbeat: std::time::Duration::from_secs(config.link.heartbeat_secs),
            dead_after_secs: config.link.dead_after_secs,
            reconnect_max: std::time::Duration::from_millis(config.link.reconnect_max_ms),
            keep_sessions: std::time::Duration::from_secs(config.link.keep_sessions_secs),
        };
        let link = gateway_end::start(settings, &linked, upcalls, doorbell, mailboxes.clone())
            .map_err(io("cannot start the link"))?;
        let http = start_http(
            config,
            Arc::new(move || gateway_page(&metrics, uplink.as_ref(), &mailboxes)),
            Readiness::Check(Arc::new(link.readiness())),
            None,
        )?;
        Ok(GatewayNode {
            gateway,
            link,
            http,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.gateway.local_addr()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(HttpHandle::admin_addr)
    }

    /// SIGHUP: the TLS certificate and key read again.
    pub fn reload_tls(&self) {
        reload_tls(&self.gateway)
    }

    /// Whether the link to the logic tier is up now.
    pub fn linked(&self) -> bool {
        self.link.is_up()
    }

    /// Graceful stop: the sessions are kicked and their `Closed` sent up
    /// the link, then the link closes.
    pub fn shutdown(self) {
        stop_gateway(self.gateway, self.http);
        self.link.stop();
        log::info!("gateway stopped");
    }
}

/// `im-logic serve`: the logic tier, serving gateways over the link.
pub struct LogicNode {
    logic: logic::LogicHandle,
    link: logic_end::LinkServer,
    http: Option<HttpHandle>,
}

impl LogicNode {
    pub fn start(config: &Config) -> Result<LogicNode, NodeError> {
        config.validate()?;
        let storage = writer_storage(config)?;
        let settings = logic_end::Settings {
            secret: config.link.required_secret()?.to_vec(),
            heartbeat: std::time::Duration::from_secs(config.link.heartbeat_secs),
            dead_after_secs: config.link.dead_after_secs,
            queue_capacity: config.link.queue_capacity,
            writer: storage.lease.as_ref().map(|lease| lease.fence()),
        };
        let listen = runtime::config::socket_addr("link.listen", &config.link.listen)?;
        let (up_tx, bell, inbox) = logic::Inbox::bounded(config.logic.queue_capacity);
        let addrs = Arc::new(GatewayAddrs::default());
        let link = logic_end::start(listen, settings, up_tx, bell, addrs.clone())
            .map_err(io("cannot listen for gateways (link.listen)"))?;
        let gateways = link.gateways();
        let downlink: Arc<dyn Downlink> = gateways.clone();
        let logic = start_logic(
            config,
            storage,
            logic::Link {
                inbox,
                downlink,
                addrs,
            },
        )?;
        let logic_metrics = logic.metrics();
        let http = start_http(
            config,
            Arc::new(move || {
                let mut out = String::new();
                logic_metrics.render(&mut out);
                link_page(&gateways, &mut out);
                out
            }),
            Readiness::Storage(logic.direct()),
            Some(logic.direct()),
        )?;
        Ok(LogicNode { logic, link, http })
    }

    /// Where gateways connect.
    pub fn link_addr(&self) -> SocketAddr {
        self.link.local_addr()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(HttpHandle::admin_addr)
    }

    /// Where the business API listens, if configured.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(HttpHandle::api_addr)
    }

    /// Graceful stop: every link closes, the HTTP ports close, then the
    /// logic tier finishes what it was handed.
    pub fn shutdown(self) {
        self.link.stop();
        stop_http(self.http);
        self.logic.join();
        log::info!("logic node stopped");
    }
}

/// The link's part of a logic node's metrics page.
fn link_page(gateways: &logic_end::Gateways, out: &mut String) {
    use runtime::metrics::{Kind, write_family};
    write_family(
        out,
        "im_link_gateways",
        "Gateways linked to this logic node.",
        Kind::Gauge,
        "",
        &[(None, gateways.count() as i64)],
    );
    let depths: Vec<(String, i64)> = gateways
        .depths()
        .into_iter()
        .map(|(id, depth)| (format!("{id:08x}"), depth as i64))
        .collect();
    let depths: Vec<(Option<&str>, i64)> = depths
        .iter()
        .map(|(id, depth)| (Some(id.as_str()), *depth))
        .collect();
    write_family(
        out,
        "im_link_downcalls_queued",
        "Downcalls waiting for a gateway's link.",
        Kind::Gauge,
        "gateway",
        &depths,
    );
}
