//! Profiles: SetProfileReq writes the caller's nickname and avatar
//! (`WriteOp::SetProfile`, answered once durable); ProfileReq reads up to
//! 100 users' profiles, from the Redis cache where it has them.

use protocol::{Body, ErrorCode, pb};

use crate::pages::{Keep, fit};
use crate::pipeline::{Pipeline, Ticket};
use crate::reader::ReadError;
use crate::requests::{ReadQuery, Reading};
use crate::sequencer::WriteOp;

/// The contract's limits: nickname in characters, avatar_url in bytes,
/// uids per ProfileReq.
const MAX_NICKNAME_CHARS: usize = 64;
const MAX_AVATAR_URL: usize = 512;
const MAX_PROFILE_UIDS: usize = 100;

impl Pipeline {
    pub(crate) fn set_profile(&mut self, ticket: Ticket, req: pb::SetProfileReq) {
        if req.nickname.chars().count() > MAX_NICKNAME_CHARS {
            return self.fail(
                &ticket,
                ErrorCode::InvalidArgument,
                "nickname is over 64 characters",
            );
        }
        if req.avatar_url.len() > MAX_AVATAR_URL {
            return self.fail(
                &ticket,
                ErrorCode::InvalidArgument,
                "avatar_url is over 512 bytes",
            );
        }
        let op = WriteOp::SetProfile {
            uid: ticket.uid,
            nickname: req.nickname,
            avatar_url: req.avatar_url,
        };
        self.write(ticket, op)
    }

    pub(crate) fn profile_set(&mut self, ticket: Ticket) {
        self.reply(&ticket, pb::SetProfileResp {}.into())
    }

    pub(crate) fn profiles(&mut self, ticket: Ticket, req: pb::ProfileReq) {
        if req.uids.len() > MAX_PROFILE_UIDS {
            return self.fail(
                &ticket,
                ErrorCode::InvalidArgument,
                "at most 100 uids per profile_req",
            );
        }
        self.read(ticket, ReadQuery::Profiles(req))
    }
}

/// On a reader thread.
pub fn answer(reading: Reading<'_>, req: &pb::ProfileReq) -> Result<Body, ReadError> {
    let Reading {
        store,
        cache,
        max_frame,
        ..
    } = reading;
    let (mut found, missing) = cache.profiles(&req.uids);
    if !missing.is_empty() {
        let stored = store.profiles(&missing)?;
        // Uids never set are cached as empty profiles too.
        let filled: Vec<pb::Profile> = missing
            .iter()
            .map(|uid| profile_or_empty(&stored, *uid))
            .collect();
        cache.fill_profiles(&filled);
        found.extend(filled);
    }
    let mut profiles: Vec<pb::Profile> = req
        .uids
        .iter()
        .map(|uid| profile_or_empty(&found, *uid))
        .collect();
    // 100 profiles at their largest exceed a 64 KiB frame; the rest are left
    // out and the client asks again for the uids it did not get.
    fit(&mut profiles, max_frame, Keep::Front);
    Ok(pb::ProfileResp { profiles }.into())
}

/// `uid`'s profile among `found`, or an empty one (a uid that never set one).
fn profile_or_empty(found: &[pb::Profile], uid: u64) -> pb::Profile {
    found
        .iter()
        .find(|p| p.uid == uid)
        .cloned()
        .unwrap_or(pb::Profile {
            uid,
            ..Default::default()
        })
}
