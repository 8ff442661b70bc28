//! The API's metrics: requests by route and status, their latency by
//! route, refused keys and rate-limited requests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use runtime::metrics::{Histogram, Kind, write_family, write_histograms};

/// The routes, as their templates; requests that match none count as "other".
pub const ROUTES: &[&str] = &[
    "/v1/messages",
    "/v1/messages/batch",
    "/v1/tokens",
    "/v1/presence",
    "/v1/users/{uid}/kick",
    "/v1/users/{uid}/revoke",
    "/v1/users/{uid}/conversations",
    "/v1/users/{uid}/conversations/{peer_uid}/messages",
    "/v1/users/{uid}/profile",
    "/v1/openapi.json",
    "other",
];

#[derive(Debug)]
pub struct ApiMetrics {
    latency: Vec<Histogram>,
    /// Responses by (route index, status).
    responses: Mutex<BTreeMap<(usize, u16), i64>>,
    unauthorized: AtomicI64,
    rate_limited: AtomicI64,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            latency: ROUTES.iter().map(|_| Histogram::latency()).collect(),
            responses: Mutex::default(),
            unauthorized: AtomicI64::new(0),
            rate_limited: AtomicI64::new(0),
        }
    }
}

impl ApiMetrics {
    /// The index of a matched route template (`None`: no route matched).
    pub fn route(template: Option<&str>) -> usize {
        template
            .and_then(|t| ROUTES.iter().position(|r| *r == t))
            .unwrap_or(ROUTES.len() - 1)
    }

    pub fn answered(&self, route: usize, status: u16, took: Duration) {
        self.latency[route].observe(took);
        *self.responses.lock().entry((route, status)).or_default() += 1;
    }

    pub fn unauthorized(&self) {
        self.unauthorized.fetch_add(1, Relaxed);
    }

    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        let latency: Vec<(Option<&str>, &Histogram)> = ROUTES
            .iter()
            .zip(&self.latency)
            .map(|(route, h)| (Some(*route), h))
            .collect();
        write_histograms(
            out,
            "im_api_request_duration_seconds",
            "API requests from arrival to response, by route template.",
            "route",
            &latency,
        );
        let responses = self.responses.lock().clone();
        let _ = std::fmt::Write::write_str(
            out,
            "# HELP im_api_responses_total API responses by route template and HTTP status.\n\
             # TYPE im_api_responses_total counter\n",
        );
        for ((route, status), count) in responses {
            let _ = std::fmt::Write::write_fmt(
                out,
                format_args!(
                    "im_api_responses_total{{route=\"{}\",status=\"{status}\"}} {count}\n",
                    ROUTES[route]
                ),
            );
        }
        write_family(
            out,
            "im_api_unauthorized_total",
            "API requests refused 401: no key, or a key that is not configured.",
            Kind::Counter,
            "",
            &[(None, self.unauthorized.load(Relaxed))],
        );
        write_family(
            out,
            "im_api_rate_limited_total",
            "API requests refused 429: over their key's rate.",
            Kind::Counter,
            "",
            &[(None, self.rate_limited.load(Relaxed))],
        );
    }
}
