//! Login tokens: `<uid>.<expires_unix_secs>.<issued_unix_ms>.<sig>`, where
//! `sig` is the base64url (no padding) HMAC-SHA256 of
//! `"<uid>.<expires_unix_secs>.<issued_unix_ms>"` under the deployment's
//! secret. The issue time lets a user's tokens issued before a moment be
//! revoked (a stolen phone). Tokens of the first format,
//! `<uid>.<expires_unix_secs>.<sig>`, still verify, as issued at 0: any
//! revocation of their uid covers them.
//!
//! Any service holding the secret can mint tokens (an account service, the
//! `im-server token` command, the load tester); the logic tier verifies them
//! with no lookup. The signature check is constant-time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused. All of them are `AUTH_FAILED` on the wire; the
/// variants exist for the server's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not <uid>.<expires>.<issued>.<sig>")]
    Malformed,
    #[error("token was issued for another uid")]
    WrongUid,
    #[error("token expired")]
    Expired,
    #[error("token signature does not match")]
    BadSignature,
}

fn mac(secret: &[u8], claims: &str) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(claims.as_bytes());
    mac
}

/// Mints a token for `uid` valid until `expires_unix_secs` (exclusive),
/// issued now.
pub fn mint(secret: &[u8], uid: u64, expires_unix_secs: u64) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    mint_at(secret, uid, expires_unix_secs, now_ms)
}

/// Mints a token for `uid` valid until `expires_unix_secs`, issued at `issued_unix_ms`.
pub fn mint_at(secret: &[u8], uid: u64, expires_unix_secs: u64, issued_unix_ms: u64) -> String {
    let claims = format!("{uid}.{expires_unix_secs}.{issued_unix_ms}");
    let sig = URL_SAFE_NO_PAD.encode(mac(secret, &claims).finalize().into_bytes());
    format!("{claims}.{sig}")
}

/// When a token that verified was issued (Unix ms); 0 for a token of the
/// first format, which says nothing of it.
pub fn issued_ms(token: &str) -> u64 {
    let mut parts = token.split('.');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some(_), Some(_), Some(issued), Some(_), None) => parse_decimal(issued).unwrap_or(0),
        _ => 0,
    }
}

/// Checks `token` for a login as `uid` at `now_unix_secs`.
pub fn verify(secret: &[u8], token: &str, uid: u64, now_unix_secs: u64) -> Result<(), TokenError> {
    let (claims, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let mut fields = claims.split('.');
    let (token_uid, expires) = match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(uid), Some(expires), None, None) => (uid, expires),
        (Some(uid), Some(expires), Some(issued), None) => {
            parse_decimal(issued)?;
            (uid, expires)
        }
        _ => return Err(TokenError::Malformed),
    };
    let token_uid: u64 = parse_decimal(token_uid)?;
    let expires: u64 = parse_decimal(expires)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    // Verify the signature first so that nothing about an unsigned token
    // (its uid, its expiry) is reported back differently from a forged one.
    mac(secret, claims)
        .verify_slice(&sig)
        .map_err(|_| TokenError::BadSignature)?;
    if token_uid != uid {
        return Err(TokenError::WrongUid);
    }
    if now_unix_secs >= expires {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// Plain ASCII digits only: `u64::from_str` also takes a leading `+`, which
/// would let two spellings of one claim carry one signature.
fn parse_decimal(s: &str) -> Result<u64, TokenError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    s.parse().map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";

    #[test]
    fn minted_token_verifies_until_it_expires() {
        let token = mint(SECRET, 42, 1_000);
        assert_eq!(verify(SECRET, &token, 42, 999), Ok(()));
        assert_eq!(verify(SECRET, &token, 42, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn token_is_bound_to_uid_and_secret() {
        let token = mint(SECRET, 42, 1_000);
        assert_eq!(verify(SECRET, &token, 43, 1), Err(TokenError::WrongUid));
        assert_eq!(
            verify(b"other", &token, 42, 1),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampered_or_garbled_tokens_are_refused() {
        let token = mint(SECRET, 42, 1_000);
        let longer = token.replacen(".1000.", ".9000.", 1);
        assert_eq!(
            verify(SECRET, &longer, 42, 1),
            Err(TokenError::BadSignature)
        );
        let plus = token.replacen("42.", "+42.", 1);
        assert_eq!(verify(SECRET, &plus, 42, 1), Err(TokenError::Malformed));
        for bad in ["", "42", "42.1000", "x.1000.sig", "42.1000.!!!", "42..sig"] {
            assert_eq!(
                verify(SECRET, bad, 42, 1),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn tokens_carry_their_issue_time_and_the_first_format_still_verifies() {
        let token = mint_at(SECRET, 42, 100, 1_700_000_000_123);
        assert_eq!(verify(SECRET, &token, 42, 1), Ok(()));
        assert_eq!(issued_ms(&token), 1_700_000_000_123);
        // The first format: <uid>.<expires>.<sig>, issued at 0.
        let claims = "42.100";
        let sig = URL_SAFE_NO_PAD.encode(mac(SECRET, claims).finalize().into_bytes());
        let old = format!("{claims}.{sig}");
        assert_eq!(verify(SECRET, &old, 42, 1), Ok(()));
        assert_eq!(issued_ms(&old), 0);
        // The issue time is signed: changing it breaks the signature.
        let forged = token.replacen("1700000000123", "1800000000123", 1);
        assert_eq!(
            verify(SECRET, &forged, 42, 1),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(SECRET, "42.100.1.2.x", 42, 1),
            Err(TokenError::Malformed)
        );
    }
}
