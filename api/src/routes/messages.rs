//! `POST /v1/messages`: one message, as a user or as the system account;
//! `POST /v1/messages/batch`: one message to up to 1,000 recipients.
//!
//! Each send is the client's SendReq, so dedup by `client_msg_id`, the
//! conversation's seq, durability before the answer, fan-out to online
//! devices and the offline hook are the client's. A batch sends one
//! SendReq per recipient, with the client_msg_id `<client_msg_id>:<to_uid>`
//! (so a retried batch is deduplicated recipient by recipient), all at
//! once, and answers each recipient's outcome in the order given.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use protocol::pb;
use serde::{Deserialize, Serialize};

use crate::Api;
use crate::error::ApiError;
use crate::extract::{JsonBody, uid};
use crate::keys::KeyId;

/// Most recipients of one batch.
pub const MAX_BATCH: usize = 1_000;

/// Longest batch client_msg_id: with `:` and a 20-digit uid it stays
/// within the protocol's 64 bytes.
const MAX_BATCH_ID: usize = 43;

/// The content of a message: `text` (UTF-8) or `content_base64` (any bytes).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    #[serde(default)]
    pub content_type: u32,
    #[serde(default, deserialize_with = "crate::extract::present")]
    pub text: Option<String>,
    #[serde(default, deserialize_with = "crate::extract::present")]
    pub content_base64: Option<String>,
}

impl Content {
    fn bytes(self) -> Result<(u32, Vec<u8>), ApiError> {
        let bytes = match (self.text, self.content_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(b64)) => STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| ApiError::invalid(format!("content_base64 is not base64: {e}")))?,
            _ => {
                return Err(ApiError::invalid(
                    "give the content as exactly one of text and content_base64",
                ));
            }
        };
        Ok((self.content_type, bytes))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The sender; absent: the configured system account.
    #[serde(default, deserialize_with = "crate::extract::present")]
    pub from_uid: Option<u64>,
    pub to_uid: u64,
    pub client_msg_id: String,
    #[serde(flatten)]
    pub content: Content,
}

#[derive(Debug, Serialize)]
pub struct Sent {
    pub msg_id: String,
    pub seq: u64,
    pub server_time_ms: u64,
    pub duplicate: bool,
}

impl SendRequest {
    /// The sender and the client's SendReq this request makes (also what
    /// a queued request makes: `queue/`).
    pub fn into_send(self, api: &Api) -> Result<(u64, pb::SendReq), ApiError> {
        let from = api.sender(self.from_uid)?;
        let (content_type, content) = self.content.bytes()?;
        Ok((
            from,
            pb::SendReq {
                to_uid: self.to_uid,
                client_msg_id: self.client_msg_id,
                content_type,
                content,
            },
        ))
    }
}

impl Api {
    /// The sender a send names, or the system account.
    fn sender(&self, from_uid: Option<u64>) -> Result<u64, ApiError> {
        match (from_uid, self.config.system_uid) {
            (Some(from), _) => uid(from, "from_uid"),
            (None, 0) => Err(ApiError::invalid(
                "from_uid is required: no system account is configured (api.system_uid)",
            )),
            (None, system) => Ok(system),
        }
    }
}

impl From<pb::SendResp> for Sent {
    fn from(resp: pb::SendResp) -> Sent {
        Sent {
            msg_id: resp.msg_id.to_string(),
            seq: resp.seq,
            server_time_ms: resp.server_time_ms,
            duplicate: resp.duplicate,
        }
    }
}

pub async fn send(
    State(api): State<Arc<Api>>,
    JsonBody(req): JsonBody<SendRequest>,
) -> Result<Json<Sent>, ApiError> {
    let (from, send) = req.into_send(&api)?;
    Ok(Json(api.call(from, send).await?.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    #[serde(default, deserialize_with = "crate::extract::present")]
    pub from_uid: Option<u64>,
    pub to_uids: Vec<u64>,
    pub client_msg_id: String,
    #[serde(flatten)]
    pub content: Content,
}

/// One recipient's outcome: `sent`, or `error`.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub to_uid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<Sent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<OutcomeError>,
}

#[derive(Debug, Serialize)]
pub struct OutcomeError {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct BatchResults {
    pub results: Vec<Outcome>,
}

pub async fn batch(
    State(api): State<Arc<Api>>,
    Extension(key): Extension<KeyId>,
    JsonBody(req): JsonBody<BatchRequest>,
) -> Result<Json<BatchResults>, ApiError> {
    let from = api.sender(req.from_uid)?;
    if req.to_uids.is_empty() || req.to_uids.len() > MAX_BATCH {
        return Err(ApiError::invalid(format!(
            "to_uids must name 1 to {MAX_BATCH} recipients"
        )));
    }
    for to_uid in &req.to_uids {
        uid(*to_uid, "to_uids")?;
    }
    let mut seen = std::collections::HashSet::with_capacity(req.to_uids.len());
    if let Some(twice) = req.to_uids.iter().find(|uid| !seen.insert(**uid)) {
        return Err(ApiError::invalid(format!("to_uids names {twice} twice")));
    }
    if req.client_msg_id.is_empty() || req.client_msg_id.len() > MAX_BATCH_ID {
        return Err(ApiError::invalid(format!(
            "a batch's client_msg_id must be 1 to {MAX_BATCH_ID} bytes (each recipient's adds \":<to_uid>\")"
        )));
    }
    let (content_type, content) = req.content.bytes()?;
    // The middleware took one request's worth; the other recipients too.
    api.admit_more(key, req.to_uids.len() as u32 - 1)?;
    // Every recipient's send goes into the tier before any answer is
    // awaited: they commit together.
    let asked: Vec<_> = req
        .to_uids
        .iter()
        .map(|&to_uid| {
            let send = pb::SendReq {
                to_uid,
                client_msg_id: format!("{}:{to_uid}", req.client_msg_id),
                content_type,
                content: content.clone(),
            };
            (to_uid, api.start(from, send))
        })
        .collect();
    let mut results = Vec::with_capacity(asked.len());
    for (to_uid, asked) in asked {
        results.push(match asked.response::<pb::SendReq>().await {
            Ok(resp) => Outcome {
                to_uid,
                sent: Some(resp.into()),
                error: None,
            },
            Err(e) => Outcome {
                to_uid,
                sent: None,
                error: Some(OutcomeError {
                    code: e.code.as_str_name(),
                    message: e.message,
                }),
            },
        });
    }
    Ok(Json(BatchResults { results }))
}
