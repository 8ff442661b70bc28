//! The HTTP runtime: one tokio runtime on threads of its own serving the
//! admin port and the API port, and consuming the queue, stopped
//! gracefully with the node.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::sync::watch;

use crate::Api;
use crate::admin::{self, Readiness, Render};

/// What a node serves over HTTP.
pub struct Sites {
    /// The admin port: its address, the metrics page, the readiness check.
    pub admin: Option<(SocketAddr, Render, Readiness)>,
    /// The API port and its state.
    pub api: Option<(SocketAddr, Arc<Api>)>,
    /// The queue consumer.
    pub queue: Option<Arc<crate::queue::Queue>>,
    /// Threads of the runtime.
    pub threads: usize,
}

pub struct HttpHandle {
    admin: Option<SocketAddr>,
    api: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    thread: JoinHandle<()>,
}

/// How long a stop waits for requests in progress.
const GRACE: Duration = Duration::from_secs(5);

/// Binds the ports (so a taken port fails the start), then serves them on
/// the runtime's threads.
pub fn start(sites: Sites) -> io::Result<HttpHandle> {
    let mut served: Vec<(TcpListener, Router)> = Vec::new();
    let (mut admin_addr, mut api_addr) = (None, None);
    if let Some((addr, render, readiness)) = sites.admin {
        let listener = TcpListener::bind(addr)?;
        admin_addr = Some(listener.local_addr()?);
        served.push((listener, admin::router(render, readiness)));
    }
    if let Some((addr, api)) = sites.api {
        let listener = TcpListener::bind(addr)?;
        api_addr = Some(listener.local_addr()?);
        served.push((listener, crate::routes::router(api)));
    }
    for (listener, _) in &served {
        listener.set_nonblocking(true)?;
    }
    let runtime = match sites.threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
    }
    .thread_name("im-http")
    .enable_io()
    .enable_time()
    .build()?;
    let (stop, stopped) = watch::channel(false);
    let queue = sites.queue;
    let thread = thread::Builder::new()
        .name("im-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut servers = Vec::new();
                for (listener, router) in served {
                    // Answers go out at once, not held for the client's
                    // ACK of the segment before (Nagle).
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l.tap_io(|tcp| {
                            let _ = tcp.set_nodelay(true);
                        }),
                        Err(e) => {
                            log::error!("http: cannot serve a listener: {e}");
                            continue;
                        }
                    };
                    let mut stopped = stopped.clone();
                    servers.push(tokio::spawn(async move {
                        let shutdown = async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        };
                        if let Err(e) = axum::serve(listener, router)
                            .with_graceful_shutdown(shutdown)
                            .await
                        {
                            log::error!("http: {e}");
                        }
                    }));
                }
                if let Some(queue) = queue {
                    servers.push(tokio::spawn(queue.run(stopped.clone())));
                }
                let mut stopped = stopped;
                let _ = stopped.wait_for(|s| *s).await;
                let all = async {
                    for server in servers {
                        let _ = server.await;
                    }
                };
                if tokio::time::timeout(GRACE, all).await.is_err() {
                    log::warn!("http: requests still running after {GRACE:?}; stopping anyway");
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;
    if let Some(addr) = admin_addr {
        log::info!("admin port on http://{addr}/metrics");
    }
    if let Some(addr) = api_addr {
        log::info!("API on http://{addr}/v1/ (document: /v1/openapi.json)");
    }
    Ok(HttpHandle {
        admin: admin_addr,
        api: api_addr,
        stop,
        thread,
    })
}

impl HttpHandle {
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api
    }

    /// Stops accepting, lets requests in progress finish (a few seconds at
    /// most), then ends the runtime.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        if self.thread.join().is_err() {
            log::error!("the HTTP thread panicked");
        }
    }
}
