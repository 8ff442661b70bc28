//! What a receiver checks: each request carries `X-IM-Timestamp` (Unix
//! seconds when it was sent) and `X-IM-Signature: v1=<hex>`, the
//! HMAC-SHA256 under `logic.webhook.secret` of `"<timestamp>.<body>"`.
//! A receiver recomputes it over the raw body, compares in constant time,
//! and refuses timestamps outside its window (docs/webhook.md): a forgery
//! fails the first check, a replayed request the second.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const TIMESTAMP_HEADER: &str = "X-IM-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-IM-Signature";
/// The msg_id: the same on every retry of one notification.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// The `X-IM-Signature` value of `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex(&mac.finalize().into_bytes()))
}

/// Whether `signature` is `body`'s at `timestamp` (what a receiver in Rust
/// runs; the tests' receiver uses it).
pub fn verify(secret: &[u8], timestamp: u64, body: &[u8], signature: &str) -> bool {
    let Some(digest) = signature.strip_prefix("v1=").and_then(unhex) else {
        return false;
    };
    let mut mac = mac(secret);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_changed_byte_does_not() {
        let body = br#"{"msg_id":"1"}"#;
        let signature = sign(b"key", 1_700_000_000, body);
        assert!(verify(b"key", 1_700_000_000, body, &signature));
        assert!(!verify(b"key", 1_700_000_001, body, &signature));
        assert!(!verify(b"other", 1_700_000_000, body, &signature));
        assert!(!verify(
            b"key",
            1_700_000_000,
            br#"{"msg_id":"2"}"#,
            &signature
        ));
        assert!(!verify(b"key", 1_700_000_000, body, "v1=zz"));
        assert!(!verify(b"key", 1_700_000_000, body, "v0=00"));
    }

    /// The same digest as docs/webhook.md's Python receiver computes:
    /// `hmac.new(b"Jefe", b"0.x", "sha256").hexdigest()`.
    #[test]
    fn the_digest_is_hmac_sha256_of_timestamp_dot_body() {
        assert_eq!(
            sign(b"Jefe", 0, b"x"),
            "v1=6d15f8f565f81ca17757f8569ccb192a1f1e1b2695979a6115221439a5eb67cb"
        );
    }
}
