//! One thread's connection to Redis, behind the shared breaker.
//!
//! Every thread that uses Redis (the writer, each reader, the keeper) has
//! its own connection: a slow call blocks only its caller, and a failed one
//! is dropped and reconnected on the next use. Calls are plain
//! request/response with the configured timeouts, so a hung Redis costs
//! the one caller that found out, once, before the breaker opens.

use std::sync::Arc;
use std::time::Duration;

use redis::{Connection, RedisResult};

use crate::cache::breaker::Breaker;
use crate::config::RedisConfig;
use crate::metrics::{Counter, Gauge, LogicMetrics};

/// Applies one user's changes to their cached unread hash (KEYS[1]) and
/// conversation set (KEYS[2]), each only if that key is cached: a missing
/// key is rebuilt whole from storage by the writer, never started from a
/// partial update. ARGV holds (op, field, value) triples.
const APPLY_SCRIPT: &str = r"
local unread = redis.call('EXISTS', KEYS[1]) == 1
local convs = redis.call('EXISTS', KEYS[2]) == 1
for i = 1, #ARGV, 3 do
  local op, field, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if unread and op == 'incr' then redis.call('HINCRBY', KEYS[1], field, value)
  elseif unread and op == 'set' then redis.call('HSET', KEYS[1], field, value)
  elseif unread and op == 'hdel' then redis.call('HDEL', KEYS[1], field)
  elseif convs and op == 'zadd' then redis.call('ZADD', KEYS[2], value, field)
  elseif convs and op == 'zrem' then redis.call('ZREM', KEYS[2], field)
  end
end
return 0
";

/// What every thread's link shares.
#[derive(Debug)]
pub struct Shared {
    pub breaker: Breaker,
    pub metrics: Arc<LogicMetrics>,
    pub config: RedisConfig,
    client: redis::Client,
}

impl Shared {
    pub fn new(config: &RedisConfig, metrics: Arc<LogicMetrics>) -> RedisResult<Shared> {
        Ok(Shared {
            breaker: Breaker::new_open(),
            metrics,
            config: config.clone(),
            client: redis::Client::open(config.url.as_str())?,
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    /// A call failed: count it, and open the breaker if it was closed.
    fn failed(&self, e: &redis::RedisError) {
        self.metrics.add(Counter::RedisErrors, 1);
        if self.breaker.trip() {
            self.metrics.add(Counter::RedisBreakerTrips, 1);
            self.metrics.set(Gauge::RedisUp, 0);
            log::warn!(
                "redis failed ({e}); serving from storage without it, next try in {} ms",
                self.config.breaker_open_ms
            );
        }
    }
}

struct Connected {
    conn: Connection,
    /// The breaker's epoch when this connection was made.
    epoch: u64,
    /// The SHA1 of APPLY_SCRIPT as this server knows it.
    apply_sha: String,
}

pub struct RedisLink {
    shared: Arc<Shared>,
    conn: Option<Connected>,
}

/// A call's access to the connection.
pub struct Call<'a> {
    pub conn: &'a mut Connection,
    /// For `EVALSHA` of the apply script.
    pub apply_sha: &'a str,
}

impl RedisLink {
    pub fn new(shared: Arc<Shared>) -> RedisLink {
        RedisLink { shared, conn: None }
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Runs `f` if the breaker is closed. `None`: Redis is not in use right
    /// now (the breaker is open, or this call failed and opened it).
    pub fn call<T>(&mut self, f: impl FnOnce(Call<'_>) -> RedisResult<T>) -> Option<T> {
        if !self.shared.breaker.is_closed() {
            return None;
        }
        match self.call_anyway(f) {
            Ok(value) => Some(value),
            Err(e) => {
                self.shared.failed(&e);
                None
            }
        }
    }

    /// Runs `f` whatever the breaker says (the keeper's probe and flush).
    /// A failure drops the connection but leaves the breaker alone.
    pub fn call_anyway<T>(&mut self, f: impl FnOnce(Call<'_>) -> RedisResult<T>) -> RedisResult<T> {
        let epoch = self.shared.breaker.epoch();
        let connected = match &mut self.conn {
            Some(connected) if connected.epoch == epoch => connected,
            _ => self.conn.insert(self.connect(epoch)?),
        };
        let result = f(Call {
            conn: &mut connected.conn,
            apply_sha: &connected.apply_sha,
        });
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn connect(&self, epoch: u64) -> RedisResult<Connected> {
        let timeout = self.shared.timeout();
        let mut conn = self.shared.client.get_connection_with_timeout(timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        let apply_sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(APPLY_SCRIPT)
            .query(&mut conn)?;
        Ok(Connected {
            conn,
            epoch,
            apply_sha,
        })
    }
}
