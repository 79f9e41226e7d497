//! Signed URLs: HMAC-SHA256 tokens with an expiry and an access scope, per path prefix.
//!
//! Token text (as in Akamai-style edge auth): `exp=<unix seconds>~acl=<path or prefix*>~hmac=<hex>`
//! where the HMAC covers `exp=…~acl=…`. It travels as a query parameter (default `token`) or
//! as one path segment right after the protected prefix (`/secure/token=exp=…~acl=…~hmac=…/a.m3u8`),
//! so relative segment URLs in a playlist inherit it. Two keys may be valid at once (rotation).
//! The token never reaches the cache key or the origin: `verify` returns the path without it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub use crate::config::SigningRule;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("token does not cover this path")]
    OutOfScope,
    #[error("bad token signature")]
    BadSignature,
}

/// A request target after the token was checked and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub path: String,
    pub query: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn mac(key: &[u8], message: &str) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(message.as_bytes());
    m
}

/// Makes a token for `acl` (a path, or a prefix ending in `*`) valid until `expires` (unix s).
/// In a path segment, the `/` of the acl must be written `%2F`.
pub fn make_token(key: &[u8], acl: &str, expires: u64) -> String {
    let signed = format!("exp={expires}~acl={acl}");
    let sig = mac(key, &signed).finalize().into_bytes();
    format!("{signed}~hmac={}", hex(&sig))
}

/// Checks a token against the request path and the current time.
pub fn check_token(
    rule: &SigningRule,
    token: &str,
    path: &str,
    now_unix: u64,
) -> Result<(), TokenError> {
    let token = crate::percent::decode(token);
    let (signed, sig_hex) = token.rsplit_once("~hmac=").ok_or(TokenError::Malformed)?;
    let mut exp = None;
    let mut acl = None;
    for field in signed.split('~') {
        match field.split_once('=') {
            Some(("exp", v)) => exp = v.parse::<u64>().ok(),
            Some(("acl", v)) => acl = Some(v),
            _ => return Err(TokenError::Malformed),
        }
    }
    let (Some(exp), Some(acl)) = (exp, acl) else {
        return Err(TokenError::Malformed);
    };
    let sig = unhex(sig_hex).ok_or(TokenError::Malformed)?;
    // Signature first: an attacker learns nothing about expiry or scope of forged tokens.
    let valid = rule
        .keys
        .iter()
        .any(|k| mac(k, signed).verify_slice(&sig).is_ok());
    if !valid {
        return Err(TokenError::BadSignature);
    }
    if exp <= now_unix {
        return Err(TokenError::Expired);
    }
    let in_scope = match acl.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == acl,
    };
    if !in_scope {
        return Err(TokenError::OutOfScope);
    }
    Ok(())
}

/// Verifies a request under `rule`, returning its path and query without the token.
pub fn verify(
    rule: &SigningRule,
    path: &str,
    query: Option<&str>,
    now_unix: u64,
) -> Result<Verified, TokenError> {
    // Token in the query.
    let mut token = None;
    let mut kept: Vec<&str> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        if name == rule.param && token.is_none() {
            token = Some(pair.split_once('=').map_or("", |(_, v)| v).to_owned());
        } else {
            kept.push(pair);
        }
    }
    let query_left = (!kept.is_empty()).then(|| kept.join("&"));
    if let Some(t) = token {
        check_token(rule, &t, path, now_unix)?;
        return Ok(Verified {
            path: path.to_owned(),
            query: query_left,
        });
    }
    // Token as the first segment after the prefix.
    if rule.path_segment
        && let Some(rest) = path.strip_prefix(rule.prefix.trim_end_matches('/'))
        && let Some(rest) = rest.strip_prefix('/')
    {
        let (segment, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let marker = format!("{}=", rule.param);
        if let Some(t) = segment.strip_prefix(&marker) {
            let clean = format!("{}/{tail}", rule.prefix.trim_end_matches('/'));
            check_token(rule, t, &clean, now_unix)?;
            return Ok(Verified {
                path: clean,
                query: query_left,
            });
        }
    }
    Err(TokenError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> SigningRule {
        SigningRule {
            prefix: "/secure/".into(),
            keys: vec![b"new-key".to_vec(), b"old-key".to_vec()],
            param: "token".into(),
            path_segment: true,
        }
    }

    #[test]
    fn valid_query_token_is_removed() {
        let t = make_token(b"new-key", "/secure/live/*", 2_000);
        let v = verify(
            &rule(),
            "/secure/live/a.ts",
            Some(&format!("x=1&token={t}")),
            1_000,
        )
        .unwrap();
        assert_eq!(v.path, "/secure/live/a.ts");
        assert_eq!(v.query.as_deref(), Some("x=1"));
    }

    #[test]
    fn rotation_accepts_both_keys() {
        let t = make_token(b"old-key", "/secure/live/a.ts", 2_000);
        assert!(
            verify(
                &rule(),
                "/secure/live/a.ts",
                Some(&format!("token={t}")),
                1_000
            )
            .is_ok()
        );
        let t = make_token(b"retired", "/secure/live/a.ts", 2_000);
        assert_eq!(
            verify(
                &rule(),
                "/secure/live/a.ts",
                Some(&format!("token={t}")),
                1_000
            ),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn expired_tampered_missing_and_out_of_scope() {
        let t = make_token(b"new-key", "/secure/live/*", 2_000);
        let q = format!("token={t}");
        assert_eq!(
            verify(&rule(), "/secure/live/a.ts", Some(&q), 2_000),
            Err(TokenError::Expired)
        );
        let tampered = q.replace("exp=2000", "exp=9000");
        assert_eq!(
            verify(&rule(), "/secure/live/a.ts", Some(&tampered), 1_000),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&rule(), "/secure/vod/a.ts", Some(&q), 1_000),
            Err(TokenError::OutOfScope)
        );
        assert_eq!(
            verify(&rule(), "/secure/live/a.ts", None, 1_000),
            Err(TokenError::Missing)
        );
        assert_eq!(
            verify(&rule(), "/secure/live/a.ts", Some("token=garbage"), 1_000),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn path_segment_token_is_inherited_and_stripped() {
        let t = make_token(b"new-key", "/secure/live/*", 2_000);
        let in_path = t.replace('/', "%2F");
        let v = verify(
            &rule(),
            &format!("/secure/token={in_path}/live/seg_1.m4s"),
            None,
            1_000,
        )
        .unwrap();
        assert_eq!(v.path, "/secure/live/seg_1.m4s");
        assert_eq!(v.query, None);
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
