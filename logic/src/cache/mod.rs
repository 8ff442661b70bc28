//! Redis beside the store: presence, unread counters, conversation lists
//! and profiles, as caches in front of storage.
//!
//! Redis never holds the only copy of anything. Every entry here is a copy
//! of committed rows, and a missing entry is rebuilt from storage. The
//! rules that keep the copies right:
//!
//! - **One writer.** Cache entries change only on the thread that answers
//!   durable batches (`answers.rs`: the flush thread behind the journal, the
//!   group-commit thread on MySQL): after each batch it applies the batch's
//!   row changes (`apply`) before anyone is answered, and it alone rebuilds
//!   a missing entry (`rebuild`), from its own read of storage between two
//!   batches. Updates and rebuilds are therefore in commit order, and a
//!   rebuild can never race an update. A reader that misses answers from
//!   storage and asks that thread to rebuild.
//! - **Updates only touch entries that exist** (a Lua script checks), so a
//!   partial entry is never started by an update.
//! - **Profiles are written through**: the writer SETs the new profile
//!   after its commit; readers fill misses with SET NX, which cannot
//!   overwrite a newer profile.
//! - **A breaker** (`breaker.rs`): on the first failed call Redis is left
//!   alone and everything is served from storage. Updates skipped while it
//!   is open would leave stale entries, so the keeper flushes every cache
//!   entry before it closes the breaker again; entries then rebuild on
//!   demand. The same flush runs at start, covering a crash between a
//!   commit and its cache update.
//!
//! Keys (`{uid}` is a Redis Cluster hash tag, so one user's keys share a slot):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<prefix>unread:{uid}` | hash | peer uid → unread count, for every conversation with unread messages, plus the marker field `0` |
//! | `<prefix>convs:{uid}` | sorted set | peer uid scored by the conversation's last msg_id, plus the marker member `0` scored with the list's floor (0: the whole list) |
//! | `<prefix>profile:{uid}` | string | the encoded `Profile` (empty fields if never set) |
//! | `<prefix>online:{uid}` | hash | device_id → JSON presence entry (see `keeper.rs`) |

pub mod breaker;
pub mod keeper;
pub mod link;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use prost::Message as _;
use protocol::pb;

use crate::metrics::{Counter, LogicMetrics};
use crate::store::{ReadStore, StoreResult};
use link::{RedisLink, Shared};

pub fn unread_key(prefix: &str, uid: u64) -> String {
    format!("{prefix}unread:{{{uid}}}")
}

pub fn convs_key(prefix: &str, uid: u64) -> String {
    format!("{prefix}convs:{{{uid}}}")
}

pub fn profile_key(prefix: &str, uid: u64) -> String {
    format!("{prefix}profile:{{{uid}}}")
}

pub fn online_key(prefix: &str, uid: u64) -> String {
    format!("{prefix}online:{{{uid}}}")
}

/// The marker in a user's unread hash and conversation set: it makes an
/// entry with nothing in it still an entry (a hit, not a miss).
const MARKER: &str = "0";

/// One conversation row a commit changed, as the caches see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowChange {
    pub owner: u64,
    pub peer: u64,
    pub unread_before: u64,
    pub unread: u64,
    pub hidden: bool,
    pub last_msg_id: u64,
}

/// A page of a cached conversation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPage {
    /// Peers, latest conversation first.
    pub peers: Vec<u64>,
    /// The set holds the owner's whole list below the asked bound: fewer
    /// peers than asked means there are no more.
    pub exhaustive: bool,
}

/// A thread's view of the caches: a no-op when Redis is not configured.
pub struct Cache {
    link: Option<RedisLink>,
    /// Where readers ask the writer to rebuild a user's entries.
    rebuilds: Option<Sender<u64>>,
}

impl Cache {
    pub fn disabled() -> Cache {
        Cache {
            link: None,
            rebuilds: None,
        }
    }

    pub fn new(shared: Arc<Shared>, rebuilds: Option<Sender<u64>>) -> Cache {
        Cache {
            link: Some(RedisLink::new(shared)),
            rebuilds,
        }
    }

    fn prefix(&self) -> &str {
        self.link
            .as_ref()
            .map_or("", |l| l.shared().config.key_prefix.as_str())
    }

    fn metrics(&self) -> Option<&LogicMetrics> {
        self.link.as_ref().map(|l| &*l.shared().metrics)
    }

    fn count(&self, counter: Counter) {
        if let Some(metrics) = self.metrics() {
            metrics.add(counter, 1);
        }
    }

    /// A miss on `owner`'s entries: ask the writer to rebuild them. A full
    /// queue drops the request; the next miss asks again.
    fn missed(&self, owner: u64) {
        self.count(Counter::CacheMisses);
        if let Some(rebuilds) = &self.rebuilds {
            if let Err(TrySendError::Full(_)) = rebuilds.try_send(owner) {
                log::debug!("cache rebuild queue full; uid {owner} will ask again");
            }
        }
    }

    /// The owner's total unread count, if cached.
    pub fn total_unread(&mut self, owner: u64) -> Option<u64> {
        let key = unread_key(self.prefix(), owner);
        let counts: Vec<i64> = self
            .link
            .as_mut()?
            .call(|c| redis::cmd("HVALS").arg(&key).query(c.conn))?;
        if counts.is_empty() {
            self.missed(owner);
            return None;
        }
        self.count(Counter::CacheHits);
        Some(counts.iter().map(|n| (*n).max(0) as u64).sum())
    }

    /// Up to `count` peers of the owner's conversations with last msg_id
    /// below `below`, latest first, if the cache can answer.
    pub fn peers_by_recency(&mut self, owner: u64, below: u64, count: usize) -> Option<CachedPage> {
        let key = convs_key(self.prefix(), owner);
        // Scores are msg_ids as doubles, a little coarser than the ids:
        // the range is inclusive and the caller filters by the exact ids.
        let found: Vec<(String, f64)> = self.link.as_mut()?.call(|c| {
            redis::cmd("ZREVRANGEBYSCORE")
                .arg(&key)
                .arg(below as f64)
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(count + 1)
                .query(c.conn)
        })?;
        let exists = !found.is_empty() || {
            let exists: Option<bool> = self
                .link
                .as_mut()?
                .call(|c| redis::cmd("EXISTS").arg(&key).query(c.conn));
            exists?
        };
        if !exists {
            self.missed(owner);
            return None;
        }
        let mut peers = Vec::with_capacity(found.len());
        let mut floor = None;
        for (member, score) in found {
            if member == MARKER {
                floor = Some(score);
                break;
            }
            match member.parse() {
                Ok(peer) => peers.push(peer),
                Err(_) => log::warn!("cache key {key} holds a stray member {member:?}"),
            }
        }
        let page = match floor {
            // Reached the end of what is cached: all of it, or only a window.
            Some(floor) if floor <= 0.0 => CachedPage {
                peers,
                exhaustive: true,
            },
            Some(_) if peers.len() < count => {
                // Older conversations than the cached window: storage answers.
                self.count(Counter::CacheMisses);
                return None;
            }
            _ => CachedPage {
                peers,
                exhaustive: false,
            },
        };
        self.count(Counter::CacheHits);
        Some(page)
    }

    /// The cached profiles among `uids`, and the uids not cached.
    pub fn profiles(&mut self, uids: &[u64]) -> (Vec<pb::Profile>, Vec<u64>) {
        if uids.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let keys: Vec<String> = uids
            .iter()
            .map(|uid| profile_key(self.prefix(), *uid))
            .collect();
        let Some(values) = self.link.as_mut().and_then(|link| {
            link.call(|c| {
                redis::cmd("MGET")
                    .arg(&keys)
                    .query::<Vec<Option<Vec<u8>>>>(c.conn)
            })
        }) else {
            return (Vec::new(), uids.to_vec());
        };
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for (uid, value) in uids.iter().zip(values) {
            match value.map(|bytes| pb::Profile::decode(bytes.as_slice())) {
                Some(Ok(profile)) if profile.uid == *uid => found.push(profile),
                _ => missing.push(*uid),
            }
        }
        if let Some(metrics) = self.metrics() {
            metrics.add(Counter::CacheHits, found.len() as u64);
            metrics.add(Counter::CacheMisses, missing.len() as u64);
        }
        (found, missing)
    }

    /// Caches profiles read from storage, unless a newer one got there first.
    pub fn fill_profiles(&mut self, profiles: &[pb::Profile]) {
        self.set_profiles(profiles, true);
    }

    fn set_profiles(&mut self, profiles: &[pb::Profile], only_if_missing: bool) {
        if profiles.is_empty() {
            return;
        }
        let prefix = self.prefix().to_owned();
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let ttl = link.shared().config.cache_ttl_secs;
        let mut pipe = redis::pipe();
        for profile in profiles {
            let cmd = pipe
                .cmd("SET")
                .arg(profile_key(&prefix, profile.uid))
                .arg(profile.encode_to_vec())
                .arg("EX")
                .arg(ttl);
            if only_if_missing {
                cmd.arg("NX");
            }
            cmd.ignore();
        }
        link.call(|c| pipe.query::<()>(c.conn));
    }

    /// The writer, after a commit: the batch's row changes and new profiles.
    pub fn apply(&mut self, changes: &[RowChange], profiles: &[pb::Profile]) {
        self.set_profiles(profiles, false);
        if changes.is_empty() {
            return;
        }
        let prefix = self.prefix().to_owned();
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let mut by_owner: BTreeMap<u64, Vec<&RowChange>> = BTreeMap::new();
        for change in changes {
            by_owner.entry(change.owner).or_default().push(change);
        }
        link.call(|c| {
            let mut pipe = redis::pipe();
            for (owner, changes) in &by_owner {
                let cmd = pipe
                    .cmd("EVALSHA")
                    .arg(c.apply_sha)
                    .arg(2)
                    .arg(unread_key(&prefix, *owner))
                    .arg(convs_key(&prefix, *owner));
                for change in changes {
                    let peer = change.peer;
                    if change.unread > change.unread_before {
                        cmd.arg("incr")
                            .arg(peer)
                            .arg(change.unread - change.unread_before);
                    } else if change.unread < change.unread_before {
                        match change.unread {
                            0 => cmd.arg("hdel").arg(peer).arg(0),
                            n => cmd.arg("set").arg(peer).arg(n),
                        };
                    }
                    if change.hidden {
                        cmd.arg("zrem").arg(peer).arg(0);
                    } else {
                        cmd.arg("zadd").arg(peer).arg(change.last_msg_id as f64);
                    }
                }
                cmd.ignore();
            }
            pipe.query::<()>(c.conn)
        });
    }

    /// The writer, between commits: rebuilds the owner's unread hash and
    /// conversation set from storage, unless both are cached. True if both
    /// are cached afterwards.
    pub fn rebuild(&mut self, owner: u64, store: &mut dyn ReadStore) -> StoreResult<bool> {
        let prefix = self.prefix().to_owned();
        let Some(link) = self.link.as_mut() else {
            return Ok(false);
        };
        let (unread_key, convs_key) = (unread_key(&prefix, owner), convs_key(&prefix, owner));
        let cached: Option<u32> = link.call(|c| {
            redis::cmd("EXISTS")
                .arg(&unread_key)
                .arg(&convs_key)
                .query(c.conn)
        });
        match cached {
            Some(0 | 1) => {}
            Some(_) => return Ok(true),
            None => return Ok(false), // Redis is not in use
        }
        let cap = link.shared().config.cached_conversations;
        let ttl = link.shared().config.cache_ttl_secs;
        store.begin_snapshot()?;
        let read = store.unread_by_peer(owner).and_then(|unread| {
            Ok((
                unread,
                store.visible_by_recency(owner, i64::MAX as u64, cap + 1)?,
            ))
        });
        store.end_snapshot();
        let (unread, mut rows) = read?;
        let floor = if rows.len() > cap {
            rows.truncate(cap);
            rows.last().map_or(0, |row| row.last_msg_id)
        } else {
            0
        };
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&unread_key)
            .ignore()
            .del(&convs_key)
            .ignore();
        let hash = pipe.cmd("HSET").arg(&unread_key).arg(MARKER).arg(0);
        for (peer, count) in &unread {
            hash.arg(*peer).arg(*count);
        }
        hash.ignore();
        let set = pipe
            .cmd("ZADD")
            .arg(&convs_key)
            .arg(floor as f64)
            .arg(MARKER);
        for row in &rows {
            set.arg(row.last_msg_id as f64).arg(row.peer);
        }
        set.ignore();
        pipe.expire(&unread_key, ttl as i64)
            .ignore()
            .expire(&convs_key, ttl as i64)
            .ignore();
        let built = link.call(|c| pipe.query::<()>(c.conn)).is_some();
        if built {
            link.shared().metrics.add(Counter::CacheRebuilds, 1);
        }
        Ok(built)
    }

    /// The breaker's epoch: it moves each time Redis comes back into use
    /// (after a flush). `None` without Redis.
    fn epoch(&self) -> Option<u64> {
        self.link.as_ref().map(|l| l.shared().breaker.epoch())
    }

    fn ttl(&self) -> Duration {
        self.link.as_ref().map_or(Duration::ZERO, |l| {
            Duration::from_secs(l.shared().config.cache_ttl_secs)
        })
    }
}

/// The writer's side of the caches: its cache, the read connection it
/// rebuilds from, the readers' rebuild requests, and which users have
/// entries.
pub struct CacheWriter {
    cache: Cache,
    store: Box<dyn ReadStore>,
    pub(crate) requests: Receiver<u64>,
    /// Users whose entries this writer built, and when. Only the writer
    /// builds entries, so a user not here has none, and their changes need
    /// no Redis call. Forgotten at expiry and whenever Redis was flushed.
    built: HashMap<u64, Instant>,
    /// The breaker epoch `built` is valid for.
    epoch: Option<u64>,
    last_sweep: Instant,
}

impl CacheWriter {
    /// Most rebuilds between two commits, so a flushed cache does not stall sends.
    const REBUILDS_PER_BATCH: usize = 32;

    pub fn new(cache: Cache, store: Box<dyn ReadStore>, requests: Receiver<u64>) -> CacheWriter {
        CacheWriter {
            epoch: cache.epoch(),
            cache,
            store,
            requests,
            built: HashMap::new(),
            last_sweep: Instant::now(),
        }
    }

    /// After a commit: the changes of users with entries, and every new profile.
    pub fn apply(&mut self, changes: &[RowChange], profiles: &[pb::Profile]) {
        self.forget_stale();
        let cached: Vec<RowChange> = changes
            .iter()
            .filter(|c| self.built.contains_key(&c.owner))
            .copied()
            .collect();
        self.cache.apply(&cached, profiles);
    }

    /// Rebuilds what readers asked for, up to a bounded number.
    pub fn rebuild_requested(&mut self, first: Option<u64>) {
        self.forget_stale();
        let mut owners: Vec<u64> = first.into_iter().collect();
        owners.extend(
            self.requests
                .try_iter()
                .take(Self::REBUILDS_PER_BATCH - owners.len()),
        );
        owners.sort_unstable();
        owners.dedup();
        for owner in owners {
            match self.cache.rebuild(owner, self.store.as_mut()) {
                Ok(true) => {
                    self.built.insert(owner, Instant::now());
                }
                Ok(false) => {}
                Err(e) => log::warn!("cannot rebuild the cache of uid {owner}: {e}"),
            }
        }
    }

    /// Forgets everything after a flush, and entries past their expiry.
    fn forget_stale(&mut self) {
        let epoch = self.cache.epoch();
        if epoch != self.epoch {
            self.built.clear();
            self.epoch = epoch;
        }
        let ttl = self.cache.ttl();
        if self.last_sweep.elapsed() >= Duration::from_secs(60).min(ttl) {
            self.last_sweep = Instant::now();
            self.built.retain(|_, at| at.elapsed() < ttl);
        }
    }
}
