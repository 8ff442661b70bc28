//! The HTTP side of a node, on a small tokio runtime of its own (never on
//! the gateway's event loops):
//!
//! - the business API ([`routes`]): JSON over HTTP for business backends,
//!   authenticated by API keys ([`keys`]), documented by `openapi.json`
//!   (served at `/v1/openapi.json`). Every request that a client could
//!   make too (send, history, conversations, profiles) goes into the logic
//!   tier through `logic::direct`, the path a client's request takes, so
//!   it has the same validation, dedup, durability and fan-out;
//! - the admin endpoints ([`admin`]): `/metrics`, `/healthz`, `/readyz`;
//! - system messages from NATS JetStream ([`queue`]), the API's send
//!   request read from a queue instead of a socket.
//!
//! [`serve`] runs them all on the runtime, the ports their sections give.

pub mod admin;
pub mod asking;
pub mod config;
pub mod error;
pub mod extract;
pub mod keys;
pub mod metrics;
pub mod queue;
pub mod routes;
pub mod serve;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use logic::direct::Direct;
use protocol::ErrorCode;
use runtime::config::Invalid;

pub use config::ApiConfig;
pub use error::ApiError;
pub use serve::{HttpHandle, Sites};

use crate::asking::Asked;
use crate::keys::{ApiKeys, KeyId};
use crate::metrics::ApiMetrics;

/// The API's state, shared by every request.
pub struct Api {
    pub config: ApiConfig,
    keys: ApiKeys,
    direct: Direct,
    pub metrics: Arc<ApiMetrics>,
}

impl Api {
    /// The API of `config`. With no key configured (`api.keys`,
    /// `IM_API_KEYS`, `api.keys_file`), one is generated in
    /// `<data_dir>/api.key` (readable by its owner only) and used, so the
    /// quickstart's API is usable and still closed.
    pub fn new(config: &ApiConfig, direct: Direct, data_dir: &Path) -> Result<Api, Invalid> {
        config.check_settings()?;
        let mut keys = ApiKeys::load(config)?;
        if !config.keys_file.is_empty() {
            runtime::config::warn_if_exposed(Path::new(&config.keys_file), "the API keys file");
        }
        if keys.is_empty() {
            let path = data_dir.join("api.key");
            let key = logic::auth::secret_file(&path, "API key")
                .map_err(|e| Invalid::new("api.keys", e.to_string()))?;
            let generated = ApiConfig {
                keys: vec![format!("generated:{key}")],
                ..config.clone()
            };
            keys = ApiKeys::load(&generated)?;
        }
        Ok(Api {
            config: config.clone(),
            keys,
            direct,
            metrics: Arc::default(),
        })
    }

    /// Makes `request` as `uid` through the logic tier and waits for its
    /// response; an error frame becomes an [`ApiError`].
    pub async fn call<R: protocol::Request>(
        &self,
        uid: u64,
        request: R,
    ) -> Result<R::Response, ApiError> {
        self.start(uid, request).response::<R>().await
    }

    /// Makes `request` as `uid` now; its answer is awaited later, so many
    /// requests can be in the tier at once.
    pub fn start(&self, uid: u64, request: impl protocol::Request) -> Asked<'_> {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        asking::start(&self.direct, uid, request.into(), timeout)
    }

    pub fn direct(&self) -> &Direct {
        &self.direct
    }

    /// Takes `n` more requests' worth of the key's rate (a batch's
    /// recipients beyond the first).
    pub fn admit_more(&self, key: KeyId, n: u32) -> Result<(), ApiError> {
        if n == 0 || self.keys.admit(key, n) {
            return Ok(());
        }
        self.metrics.rate_limited();
        Err(ApiError::new(
            ErrorCode::RateLimited,
            "over this key's rate, retry later",
        ))
    }
}

/// Middleware on every API route: the key and its rate. The key found is
/// left in the request's extensions for handlers that need it.
pub async fn authenticate(State(api): State<Arc<Api>>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(key) = presented.and_then(|p| api.keys.find(p)) else {
        api.metrics.unauthorized();
        let mut response = ApiError::new(
            ErrorCode::AuthFailed,
            "a configured API key is required: Authorization: Bearer <key>",
        )
        .into_response();
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return response;
    };
    if !api.keys.admit(key, 1) {
        api.metrics.rate_limited();
        log::debug!("API key {} over its rate", api.keys.name(key));
        return ApiError::new(ErrorCode::RateLimited, "over this key's rate, retry later")
            .into_response();
    }
    req.extensions_mut().insert(key);
    next.run(req).await
}

/// Middleware around everything: each response counted and timed by route.
pub async fn measure(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let route = ApiMetrics::route(
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let started = Instant::now();
    let response = next.run(req).await;
    api.metrics
        .answered(route, response.status().as_u16(), started.elapsed());
    response
}
