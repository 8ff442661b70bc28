//! `POST /v1/tokens`: a login token for a user, for the business backend
//! to hand to its app (the token the native protocol's LoginReq carries);
//! `POST /v1/users/{uid}/revoke`: that user's tokens issued until now (or
//! until `before_ms`) stop logging in and the user's sessions close (a
//! stolen phone, a password change): the client's RevokeTokensReq, asked
//! as the user.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use protocol::pb;
use serde::{Deserialize, Serialize};

use crate::Api;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, uid};

/// Longest token life: a year.
const MAX_TTL_SECS: u64 = 365 * 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub uid: u64,
    pub ttl_secs: u64,
}

#[derive(Debug, Serialize)]
pub struct Token {
    pub uid: u64,
    pub token: String,
    pub expires_at_unix: u64,
}

pub async fn mint(
    State(api): State<Arc<Api>>,
    JsonBody(req): JsonBody<TokenRequest>,
) -> Result<Json<Token>, ApiError> {
    let uid = uid(req.uid, "uid")?;
    if req.ttl_secs == 0 || req.ttl_secs > MAX_TTL_SECS {
        return Err(ApiError::invalid(format!(
            "ttl_secs must be 1 to {MAX_TTL_SECS}"
        )));
    }
    let expires_at_unix = runtime::clock::unix_secs() + req.ttl_secs;
    Ok(Json(Token {
        uid,
        token: api.direct().mint_token(uid, expires_at_unix),
        expires_at_unix,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Unix ms; absent: now.
    #[serde(default)]
    pub before_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct Revoked {
    pub uid: u64,
    pub before_ms: u64,
    /// Sessions closed.
    pub kicked: u32,
}

pub async fn revoke(
    State(api): State<Arc<Api>>,
    PathParams(user): PathParams<u64>,
    JsonBody(req): JsonBody<RevokeRequest>,
) -> Result<Json<Revoked>, ApiError> {
    let user = uid(user, "uid")?;
    let ask = pb::RevokeTokensReq {
        before_ms: req.before_ms,
    };
    let resp = api.call(user, ask).await?;
    Ok(Json(Revoked {
        uid: user,
        before_ms: resp.before_ms,
        kicked: resp.kicked,
    }))
}
