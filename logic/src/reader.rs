//! Reader threads: History, Sync, Conversations and Profiles, answered from
//! committed data on connections of their own, so that reads never wait
//! behind the writer's commits and the pipeline never waits on a read.
//!
//! A read issued after a SendResp sees that message: SendResp is sent only
//! after the commit. Each request reads one snapshot.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::Receiver;
use protocol::body::error_frame;
use protocol::link::{Downcall, Downlink, SessionId};
use protocol::{Body, ErrorCode, Frame, FrameCodec, pb};

use crate::cache::Cache;
use crate::pages::{Keep, fit};
use crate::store::{ConvRow, Pair, ReadStore, StoreError, StoreResult};

/// Ids and seqs are stored below 2^63; client-supplied bounds are clamped.
const MAX_STORED: u64 = i64::MAX as u64;

pub enum ReadQuery {
    History(pb::HistoryReq),
    Sync(pb::SyncReq),
    Conversations(pb::ConversationsReq),
    Profiles(pb::ProfileReq),
}

pub struct ReadJob {
    pub session: SessionId,
    pub req_id: u64,
    pub uid: u64,
    pub query: ReadQuery,
}

/// Starts one reader thread per (store, cache), sharing one job queue.
pub fn spawn(
    stores: Vec<(Box<dyn ReadStore>, Cache)>,
    jobs: Receiver<ReadJob>,
    downlink: Arc<dyn Downlink>,
    max_frame: usize,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::new();
    for (n, (mut store, mut cache)) in stores.into_iter().enumerate() {
        let jobs = jobs.clone();
        let downlink = downlink.clone();
        let codec = FrameCodec::new(max_frame);
        threads.push(
            thread::Builder::new()
                .name(format!("im-store-reader-{n}"))
                .spawn(move || {
                    for job in jobs {
                        let frame = match answer(
                            store.as_mut(),
                            &mut cache,
                            job.uid,
                            &job.query,
                            max_frame,
                        ) {
                            Ok(body) => Frame {
                                req_id: job.req_id,
                                body: Some(body),
                            },
                            Err(ReadError::Invalid(message)) => {
                                error_frame(job.req_id, ErrorCode::InvalidArgument, message)
                            }
                            Err(ReadError::Store(e)) => {
                                log::warn!("read failed: {e}");
                                error_frame(
                                    job.req_id,
                                    ErrorCode::Unavailable,
                                    "storage unavailable, retry later",
                                )
                            }
                        };
                        match codec.encode_to_bytes(&frame) {
                            Ok(frame) => {
                                downlink.send(Downcall::Frame {
                                    session: job.session,
                                    frame,
                                });
                                downlink.flush();
                            }
                            Err(e) => log::error!("cannot encode a read response: {e}"),
                        }
                    }
                })?,
        );
    }
    Ok(threads)
}

pub enum ReadError {
    Invalid(&'static str),
    Store(StoreError),
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        ReadError::Store(e)
    }
}

/// Answers one query for `uid` from one snapshot, and the caches where
/// they can answer.
pub fn answer(
    store: &mut dyn ReadStore,
    cache: &mut Cache,
    uid: u64,
    query: &ReadQuery,
    max_frame: usize,
) -> Result<Body, ReadError> {
    // Reads change nothing, so a storage error gets one more try: the store
    // has replaced a connection that died (a database restart) by then.
    match answer_once(store, cache, uid, query, max_frame) {
        Err(ReadError::Store(StoreError::Unavailable(e))) => {
            log::debug!("read failed ({e}), trying once more");
            answer_once(store, cache, uid, query, max_frame)
        }
        other => other,
    }
}

fn answer_once(
    store: &mut dyn ReadStore,
    cache: &mut Cache,
    uid: u64,
    query: &ReadQuery,
    max_frame: usize,
) -> Result<Body, ReadError> {
    store.begin_snapshot()?;
    let body = match query {
        ReadQuery::History(req) => history(store, uid, *req, max_frame),
        ReadQuery::Sync(req) => sync(store, uid, *req, max_frame),
        ReadQuery::Conversations(req) => conversations(store, cache, uid, req.clone(), max_frame),
        ReadQuery::Profiles(req) => profiles(store, cache, req.clone(), max_frame),
    };
    store.end_snapshot();
    body
}

fn history(
    store: &mut dyn ReadStore,
    uid: u64,
    req: pb::HistoryReq,
    max_frame: usize,
) -> Result<Body, ReadError> {
    let limit = page_limit(req.limit, 50, 200);
    if req.peer_uid == uid {
        return Ok(pb::HistoryResp {
            messages: vec![],
            more: false,
        }
        .into());
    }
    let pair = Pair::of(uid, req.peer_uid);
    // What the caller deleted stays hidden from the caller.
    let hidden_up_to = store
        .conversation(uid, req.peer_uid)?
        .map_or(0, |row| row.deleted_up_to);
    let (mut messages, mut more) = if req.after_seq > 0 {
        let after = req.after_seq.min(MAX_STORED).max(hidden_up_to);
        let mut page = store.messages_after(pair, after, limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    } else {
        let below = if req.before_seq > 0 {
            req.before_seq.min(MAX_STORED)
        } else {
            MAX_STORED
        };
        let mut page = store.messages_before(pair, below, hidden_up_to, limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        page.reverse();
        (page, more)
    };
    let keep = if req.after_seq > 0 {
        Keep::Front
    } else {
        Keep::Back
    };
    more |= fit(&mut messages, max_frame, keep) > 0;
    Ok(pb::HistoryResp { messages, more }.into())
}

/// A requested page size: 0 means `default`, anything above `max` is `max`.
fn page_limit(requested: u32, default: u32, max: u32) -> usize {
    let limit = match requested {
        0 => default,
        n => n.min(max),
    };
    limit as usize
}

/// Rows fetched with `limit + 1`, as a page: the conversations that fit in
/// one frame, the rows they came from, and whether more exist.
fn conversation_page(
    store: &mut dyn ReadStore,
    mut rows: Vec<ConvRow>,
    limit: usize,
    max_frame: usize,
) -> StoreResult<(Vec<pb::Conversation>, Vec<ConvRow>, bool)> {
    let mut more = rows.len() > limit;
    rows.truncate(limit);
    let mut conversations = rows
        .iter()
        .map(|row| conversation(store, row))
        .collect::<StoreResult<Vec<_>>>()?;
    more |= fit(&mut conversations, max_frame, Keep::Front) > 0;
    rows.truncate(conversations.len());
    Ok((conversations, rows, more))
}

/// The wire form of a row, with its last message unless the owner deleted it.
fn conversation(store: &mut dyn ReadStore, row: &ConvRow) -> StoreResult<pb::Conversation> {
    let last = if row.last_seq > row.deleted_up_to {
        store.message(Pair::of(row.owner, row.peer), row.last_seq)?
    } else {
        None
    };
    Ok(row.to_wire(last))
}

fn sync(
    store: &mut dyn ReadStore,
    uid: u64,
    req: pb::SyncReq,
    max_frame: usize,
) -> Result<Body, ReadError> {
    let limit = page_limit(req.limit, 100, 500);
    let rows = store.changed_since(uid, req.cursor.min(MAX_STORED), limit + 1)?;
    let (conversations, rows, more) = conversation_page(store, rows, limit, max_frame)?;
    let cursor = rows.last().map_or(req.cursor, |row| row.version);
    Ok(pb::SyncResp {
        conversations,
        cursor,
        more,
    }
    .into())
}

fn conversations(
    store: &mut dyn ReadStore,
    cache: &mut Cache,
    uid: u64,
    req: pb::ConversationsReq,
    max_frame: usize,
) -> Result<Body, ReadError> {
    let limit = page_limit(req.limit, 50, 200);
    let below = match req.cursor.len() {
        0 => MAX_STORED,
        8 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&req.cursor);
            u64::from_be_bytes(bytes).min(MAX_STORED)
        }
        _ => return Err(ReadError::Invalid("cursor is not one this server gave out")),
    };
    let rows = match cached_by_recency(store, cache, uid, below, limit)? {
        Some(rows) => rows,
        None => store.visible_by_recency(uid, below, limit + 1)?,
    };
    let (conversations, rows, more) = conversation_page(store, rows, limit, max_frame)?;
    let next_cursor = match rows.last() {
        Some(row) if more => row.last_msg_id.to_be_bytes().to_vec(),
        _ => Vec::new(),
    };
    let total_unread = match cache.total_unread(uid) {
        Some(total) => total,
        None => store.total_unread(uid)?,
    };
    Ok(pb::ConversationsResp {
        conversations,
        total_unread,
        next_cursor,
    }
    .into())
}

/// The page `visible_by_recency(uid, below, limit + 1)` would give, from
/// the cached list and a primary-key read of its rows; `None` if the cache
/// cannot say.
fn cached_by_recency(
    store: &mut dyn ReadStore,
    cache: &mut Cache,
    uid: u64,
    below: u64,
    limit: usize,
) -> StoreResult<Option<Vec<ConvRow>>> {
    // A few extra peers cover members the coarser scores let through.
    let Some(page) = cache.peers_by_recency(uid, below, limit + 1 + 8) else {
        return Ok(None);
    };
    let mut rows = store.conversations_with(uid, &page.peers)?;
    rows.retain(|row| !row.hidden && row.last_msg_id < below);
    rows.sort_unstable_by_key(|row| std::cmp::Reverse(row.last_msg_id));
    if rows.len() > limit || page.exhaustive {
        rows.truncate(limit + 1);
        Ok(Some(rows))
    } else {
        Ok(None)
    }
}

fn profiles(
    store: &mut dyn ReadStore,
    cache: &mut Cache,
    req: pb::ProfileReq,
    max_frame: usize,
) -> Result<Body, ReadError> {
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
