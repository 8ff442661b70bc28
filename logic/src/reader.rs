//! Reader threads: the reads (history, sync, conversations, profiles; each
//! in its file under `requests/`), answered from committed data on
//! connections of their own, so that reads never wait behind the writer's
//! commits and the pipeline never waits on a read.
//!
//! A read issued after a SendResp sees that message: SendResp is sent only
//! after the commit. Each request reads one snapshot. This file is the
//! thread, the snapshot and the retry, and the paging helpers the reads share.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::Receiver;
use protocol::body::error_frame;
use protocol::link::{Downcall, Downlink, SessionId};
use protocol::{Body, ErrorCode, Frame, FrameCodec, pb};

use crate::cache::Cache;
use crate::pages::{Keep, fit};
use crate::requests::{self, ReadQuery, Reading};
use crate::store::{ConvRow, Pair, ReadStore, StoreError, StoreResult};

/// Ids and seqs are stored below 2^63; client-supplied bounds are clamped.
pub const MAX_STORED: u64 = i64::MAX as u64;

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
                        let frame = match answer(store.as_mut(), &mut cache, &job, max_frame) {
                            Ok(body) => Frame {
                                req_id: job.req_id,
                                body: Some(body),
                            },
                            Err(ReadError::Invalid(message)) => {
                                error_frame(job.req_id, ErrorCode::InvalidArgument, message)
                            }
                            Err(ReadError::Store(e)) => {
                                log::warn!("read failed: {e}");
                                let (code, message) = e.wire_error();
                                error_frame(job.req_id, code, message)
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

/// Why a read was not answered.
pub enum ReadError {
    /// The request asks for something the contract refuses: INVALID_ARGUMENT.
    Invalid(&'static str),
    Store(StoreError),
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        ReadError::Store(e)
    }
}

/// Answers one job from one snapshot, and the caches where they can answer.
fn answer(
    store: &mut dyn ReadStore,
    cache: &mut Cache,
    job: &ReadJob,
    max_frame: usize,
) -> Result<Body, ReadError> {
    // Reads change nothing, so a storage error gets one more try: the store
    // has replaced a connection that died (a database restart) by then.
    let mut retried = false;
    loop {
        let body = store
            .begin_snapshot()
            .map_err(ReadError::from)
            .and_then(|()| {
                let reading = Reading {
                    store: &mut *store,
                    cache: &mut *cache,
                    uid: job.uid,
                    max_frame,
                };
                let body = requests::answer(reading, &job.query);
                store.end_snapshot();
                body
            });
        match body {
            Err(ReadError::Store(StoreError::Unavailable(e))) if !retried => {
                log::debug!("read failed ({e}), trying once more");
                retried = true;
            }
            other => return other,
        }
    }
}

/// A requested page size: 0 means `default`, anything above `max` is `max`.
pub fn page_limit(requested: u32, default: u32, max: u32) -> usize {
    let limit = match requested {
        0 => default,
        n => n.min(max),
    };
    limit as usize
}

/// Rows fetched with `limit + 1`, as a page: the conversations that fit in
/// one frame, the rows they came from, and whether more exist.
pub fn conversation_page(
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
