//! `GET /v1/presence?uids=1,2,3`: who of up to 100 users is online, on
//! which devices, since when, through which gateway;
//! `POST /v1/users/{uid}/kick`: close one device of a user, or all of
//! them, with a Kick frame carrying the reason.
//!
//! Both are answered by the logic tier's pipeline from the presence it
//! owns (`logic::direct`): what this logic node knows.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use protocol::pb::Platform;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::Api;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, QueryParams, decimal, uid};

/// Most uids one presence query names.
const MAX_UIDS: usize = 100;

/// Longest kick reason, in bytes.
const MAX_REASON: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceQuery {
    /// Comma-separated uids.
    pub uids: String,
}

#[derive(Debug, Serialize)]
pub struct DeviceView {
    pub device_id: String,
    pub platform: &'static str,
    pub since_ms: u64,
    /// The gateway's id, in hex.
    pub gateway: String,
    /// Where that gateway's clients connect (empty if it never said).
    pub gateway_addr: String,
}

#[derive(Debug, Serialize)]
pub struct UserView {
    pub uid: u64,
    pub online: bool,
    pub devices: Vec<DeviceView>,
}

#[derive(Debug, Serialize)]
pub struct PresenceView {
    pub users: Vec<UserView>,
}

fn parse_uids(list: &str) -> Result<Vec<u64>, ApiError> {
    let uids = list
        .split(',')
        .map(|part| match part.starts_with('0') {
            true => Err(ApiError::invalid(format!("uids: {part:?} is not a uid"))),
            false => decimal(part, "uids"),
        })
        .collect::<Result<Vec<u64>, ApiError>>()?;
    if uids.len() > MAX_UIDS {
        return Err(ApiError::invalid(format!("at most {MAX_UIDS} uids")));
    }
    Ok(uids)
}

pub async fn presence(
    State(api): State<Arc<Api>>,
    QueryParams(query): QueryParams<PresenceQuery>,
) -> Result<Json<PresenceView>, ApiError> {
    let uids = parse_uids(&query.uids)?;
    let (tx, rx) = oneshot::channel();
    api.direct().presence(
        uids,
        Box::new(move |users| {
            let _ = tx.send(users);
        }),
    )?;
    let users = rx.await.map_err(|_| logic::direct::Unanswered::Stopped)?;
    let users = users
        .into_iter()
        .map(|user| UserView {
            uid: user.uid,
            online: !user.devices.is_empty(),
            devices: user
                .devices
                .into_iter()
                .map(|d| DeviceView {
                    platform: Platform::try_from(d.platform)
                        .unwrap_or(Platform::Unspecified)
                        .as_str_name(),
                    since_ms: d.login_ms,
                    gateway: format!("{:08x}", d.session.gateway),
                    gateway_addr: api.direct().gateway(d.session.gateway).client_addr,
                    device_id: d.device_id,
                })
                .collect(),
        })
        .collect();
    Ok(Json(PresenceView { users }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KickRequest {
    /// The device to close; absent: every device of the user.
    #[serde(default, deserialize_with = "crate::extract::present")]
    pub device_id: Option<String>,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct Kicked {
    pub kicked: usize,
}

pub async fn kick(
    State(api): State<Arc<Api>>,
    PathParams(user): PathParams<u64>,
    JsonBody(req): JsonBody<KickRequest>,
) -> Result<Json<Kicked>, ApiError> {
    let user = uid(user, "uid")?;
    if req.reason.len() > MAX_REASON {
        return Err(ApiError::invalid(format!(
            "reason is over {MAX_REASON} bytes"
        )));
    }
    let (tx, rx) = oneshot::channel();
    api.direct().kick(
        user,
        req.device_id,
        req.reason,
        Box::new(move |kicked| {
            let _ = tx.send(kicked);
        }),
    )?;
    let kicked = rx.await.map_err(|_| logic::direct::Unanswered::Stopped)?;
    Ok(Json(Kicked { kicked }))
}
