//! `GET` and `PUT /v1/users/{uid}/profile`: a user's nickname and avatar,
//! the client's ProfileReq and SetProfileReq asked as that user. A uid that
//! never set a profile reads as an empty one (uids are the business's; the
//! server keeps no user table).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use protocol::pb;
use serde::{Deserialize, Serialize};

use crate::Api;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, uid};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileView {
    #[serde(default)]
    pub nickname: String,
    #[serde(default)]
    pub avatar_url: String,
}

pub async fn get(
    State(api): State<Arc<Api>>,
    PathParams(user): PathParams<u64>,
) -> Result<Json<ProfileView>, ApiError> {
    let user = uid(user, "uid")?;
    let req = pb::ProfileReq { uids: vec![user] };
    let resp = api.call(user, req).await?;
    let profile = resp
        .profiles
        .into_iter()
        .find(|p| p.uid == user)
        .unwrap_or_default();
    Ok(Json(ProfileView {
        nickname: profile.nickname,
        avatar_url: profile.avatar_url,
    }))
}

pub async fn set(
    State(api): State<Arc<Api>>,
    PathParams(user): PathParams<u64>,
    JsonBody(profile): JsonBody<ProfileView>,
) -> Result<Json<ProfileView>, ApiError> {
    let user = uid(user, "uid")?;
    let req = pb::SetProfileReq {
        nickname: profile.nickname.clone(),
        avatar_url: profile.avatar_url.clone(),
    };
    api.call(user, req).await?;
    Ok(Json(profile))
}
