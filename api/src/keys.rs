//! API keys: who may call the API, and how fast.
//!
//! A key is presented as `Authorization: Bearer <secret>`. The server keeps
//! only each secret's SHA-256 and compares the presented one's digest with
//! every key's in constant time (digests of equal length, no early exit),
//! so neither the comparison's time nor a length tells how close a guess
//! came. Each key has its own token bucket.

use std::time::Instant;

use parking_lot::Mutex;
use runtime::config::Invalid;
use runtime::rate::TokenBucket;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ApiConfig;

/// Shortest secret accepted: a key is a password no one types.
const MIN_SECRET: usize = 16;

struct Key {
    /// Labels this key in metrics and logs; never the secret.
    name: String,
    digest: [u8; 32],
    bucket: Mutex<TokenBucket>,
}

pub struct ApiKeys {
    keys: Vec<Key>,
    rate: u32,
    burst: u32,
    epoch: Instant,
}

/// Which key a request presented (its index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyId(usize);

impl ApiKeys {
    /// The config's keys, `IM_API_KEYS`'s (already applied to the config)
    /// and the keys file's.
    pub fn load(config: &ApiConfig) -> Result<ApiKeys, Invalid> {
        let mut entries: Vec<(&'static str, String)> = config
            .keys
            .iter()
            .map(|k| ("api.keys", k.clone()))
            .collect();
        if !config.keys_file.is_empty() {
            let text = std::fs::read_to_string(&config.keys_file).map_err(|e| {
                Invalid::new(
                    "api.keys_file",
                    format!("cannot read {}: {e}", config.keys_file),
                )
            })?;
            entries.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(|line| ("api.keys_file", line.to_owned())),
            );
        }
        let mut keys: Vec<Key> = Vec::with_capacity(entries.len());
        for (position, (field, entry)) in entries.into_iter().enumerate() {
            let (name, secret) = match entry.split_once(':') {
                Some((name, secret)) => (name.to_owned(), secret),
                None => (format!("key{position}"), entry.as_str()),
            };
            if secret.len() < MIN_SECRET {
                return Err(Invalid::new(
                    field,
                    format!("key {name:?}: the secret must be at least {MIN_SECRET} bytes"),
                ));
            }
            let name_ok = !name.is_empty()
                && name.len() <= 32
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok {
                return Err(Invalid::new(
                    field,
                    format!("key name {name:?}: 1 to 32 of A-Z a-z 0-9 - _"),
                ));
            }
            if keys.iter().any(|k| k.name == name) {
                return Err(Invalid::new(field, format!("two keys are named {name:?}")));
            }
            keys.push(Key {
                name,
                digest: Sha256::digest(secret.as_bytes()).into(),
                bucket: Mutex::new(TokenBucket::full(config.burst, 0)),
            });
        }
        Ok(ApiKeys {
            keys,
            rate: config.requests_per_sec,
            burst: config.burst,
            epoch: Instant::now(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key whose secret `presented` is, if any.
    pub fn find(&self, presented: &str) -> Option<KeyId> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (index, key) in self.keys.iter().enumerate() {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(KeyId(index));
            }
        }
        found
    }

    pub fn name(&self, key: KeyId) -> &str {
        &self.keys[key.0].name
    }

    /// Takes `n` requests' worth from the key's bucket, all or none.
    pub fn admit(&self, key: KeyId, n: u32) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.keys[key.0]
            .bucket
            .lock()
            .take_all_or_none(now, n, self.rate, self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(keys: &[&str]) -> ApiConfig {
        ApiConfig {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            requests_per_sec: 1,
            burst: 2,
            ..ApiConfig::default()
        }
    }

    #[test]
    fn finds_the_key_by_its_secret_and_names_it() {
        let keys =
            ApiKeys::load(&config(&["billing:0123456789abcdef", "fedcba9876543210"])).unwrap();
        let billing = keys.find("0123456789abcdef").unwrap();
        assert_eq!(keys.name(billing), "billing");
        assert_eq!(keys.name(keys.find("fedcba9876543210").unwrap()), "key1");
        assert_eq!(keys.find("0123456789abcdeF"), None);
        assert_eq!(keys.find(""), None);
    }

    #[test]
    fn short_secrets_bad_names_and_twins_are_refused() {
        assert!(ApiKeys::load(&config(&["a:short"])).is_err());
        assert!(ApiKeys::load(&config(&["bad name:0123456789abcdef"])).is_err());
        assert!(ApiKeys::load(&config(&["a:0123456789abcdef", "a:0123456789abcdeg"])).is_err());
    }

    #[test]
    fn each_key_has_its_own_bucket() {
        let keys = ApiKeys::load(&config(&["a:0123456789abcdef", "b:0123456789abcdeg"])).unwrap();
        let (a, b) = (
            keys.find("0123456789abcdef").unwrap(),
            keys.find("0123456789abcdeg").unwrap(),
        );
        assert!(keys.admit(a, 2));
        assert!(!keys.admit(a, 1));
        assert!(keys.admit(b, 1));
        assert!(
            !keys.admit(b, 5),
            "a batch beyond the burst is refused whole"
        );
    }
}
