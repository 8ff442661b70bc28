//! The admin endpoints, for operators and orchestrators: `GET /metrics`
//! (Prometheus text format), `GET /healthz` (the process answers) and
//! `GET /readyz` (it can serve: 503 with the reason when not).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use logic::direct::Direct;
use protocol::pb;

use crate::asking;

/// Renders the metrics page on demand.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// What `/readyz` checks.
#[derive(Clone)]
pub enum Readiness {
    /// Storage answers a read through the logic tier (a node with one).
    Storage(Direct),
    /// A check of the node's own (a gateway: its link to the logic tier).
    Check(Arc<dyn Fn() -> Result<(), String> + Send + Sync>),
}

/// The uids the storage probe reads between: no business uses them.
const PROBE_UID: u64 = u64::MAX;
const PROBE_PEER: u64 = u64::MAX - 1;

/// How long the storage probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Readiness {
    async fn check(&self) -> Result<(), String> {
        match self {
            Readiness::Check(check) => check(),
            Readiness::Storage(direct) => probe_storage(direct).await,
        }
    }
}

/// Reads one page of an empty conversation through a reader thread:
/// the storage answered, or why not.
async fn probe_storage(direct: &Direct) -> Result<(), String> {
    let req = pb::HistoryReq {
        peer_uid: PROBE_PEER,
        after_seq: 0,
        before_seq: 0,
        limit: 1,
    };
    asking::start(direct, PROBE_UID, req.into(), PROBE_TIMEOUT)
        .response::<pb::HistoryReq>()
        .await
        .map(|_| ())
        .map_err(|e| format!("storage: {}", e.message))
}

struct Admin {
    render: Render,
    readiness: Readiness,
}

pub fn router(render: Render, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Arc::new(Admin { render, readiness }))
}

async fn metrics(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        (admin.render)(),
    )
}

async fn ready(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    match admin.readiness.check().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}
