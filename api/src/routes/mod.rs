//! The business API's routes, one file per resource. Every route but the
//! OpenAPI document needs an API key (`crate::authenticate`).

mod conversations;
pub mod messages;
mod presence;
mod profiles;
mod tokens;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use protocol::ErrorCode;

use crate::error::ApiError;
use crate::metrics::ApiMetrics;
use crate::{Api, authenticate, measure};

/// The OpenAPI 3 document of these routes, kept beside them.
pub const OPENAPI: &str = include_str!("../../openapi.json");

pub fn router(api: Arc<Api>) -> Router {
    let keyed = Router::new()
        .route("/v1/messages", post(messages::send))
        .route("/v1/messages/batch", post(messages::batch))
        .route("/v1/tokens", post(tokens::mint))
        .route("/v1/presence", get(presence::presence))
        .route("/v1/users/{uid}/kick", post(presence::kick))
        .route("/v1/users/{uid}/revoke", post(tokens::revoke))
        .route("/v1/users/{uid}/conversations", get(conversations::list))
        .route(
            "/v1/users/{uid}/conversations/{peer_uid}/messages",
            get(conversations::history),
        )
        .route(
            "/v1/users/{uid}/profile",
            get(profiles::get).put(profiles::set),
        )
        .route_layer(from_fn_with_state(api.clone(), authenticate));
    let metrics = api.metrics.clone();
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .merge(keyed)
        .route_layer(from_fn_with_state(api.clone(), measure))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(move || not_found(metrics.clone()))
        .with_state(api)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn not_found(metrics: Arc<ApiMetrics>) -> ApiError {
    metrics.answered(ApiMetrics::route(None), 404, std::time::Duration::ZERO);
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> impl IntoResponse {
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(serde_json::json!({
            "code": ErrorCode::InvalidArgument.as_str_name(),
            "message": "method not allowed on this route",
        })),
    )
}
