//! Signed URLs: `signing::verify` on arbitrary targets, and the token round trip.
//!
//! Input lines: the first is a request path, the second (if any) its query; `:now N` sets the
//! clock (unix s, default 1700000000), `:exp N` the expiry of the round-trip token. The
//! round trip signs a path derived from the first line with `make_token`, checks that it
//! verifies (in the query and as a path segment) and that every single-byte change of the
//! signed part `exp=…~acl=…` is refused.

#![cfg_attr(fuzzing, no_main)]

mod common;

use std::sync::LazyLock;

use streamedge::signing::{SigningRule, TokenError, make_token, verify};

const KEYS: [&[u8]; 2] = [b"fuzz-key-current", b"fuzz-key-previous"];

static RULES: LazyLock<[SigningRule; 2]> = LazyLock::new(|| {
    [
        SigningRule {
            prefix: "/secure/".into(),
            keys: KEYS.iter().map(|k| k.to_vec()).collect(),
            param: "token".into(),
            path_segment: true,
        },
        SigningRule {
            prefix: "/".into(),
            keys: vec![KEYS[0].to_vec()],
            param: "sig".into(),
            path_segment: false,
        },
    ]
});

/// Path characters that survive the query and path-segment encodings unchanged.
fn plain(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_'))
        .take(200)
        .collect()
}

/// A printable ASCII byte other than `b`, chosen by `seed`.
fn other_byte(b: u8, seed: u8) -> u8 {
    let c = b' ' + seed % 95;
    if c == b {
        if c == b'~' { b' ' } else { c + 1 }
    } else {
        c
    }
}

fn round_trip(data: &[u8], first_line: &str, exp: u64) {
    let rule = &RULES[0];
    let key = KEYS[data.len() % 2];
    let tail = plain(first_line);
    let path = format!("/secure/{}", tail.trim_start_matches('/'));
    let now = exp - 1;

    // Token in the query, exact path.
    let token = make_token(key, &path, exp);
    let ok = verify(rule, &path, Some(&format!("a=1&token={token}&b=2")), now)
        .unwrap_or_else(|e| panic!("fresh token for {path:?} refused: {e}"));
    assert_eq!(ok.path, path);
    assert_eq!(ok.query.as_deref(), Some("a=1&b=2"));
    assert_eq!(
        verify(rule, &path, Some(&format!("token={token}")), exp),
        Err(TokenError::Expired)
    );
    assert_eq!(
        verify(
            rule,
            &format!("{path}x"),
            Some(&format!("token={token}")),
            now
        ),
        Err(TokenError::OutOfScope)
    );
    let foreign = make_token(b"not-a-rule-key", &path, exp);
    assert_eq!(
        verify(rule, &path, Some(&format!("token={foreign}")), now),
        Err(TokenError::BadSignature)
    );

    // Token as a path segment, prefix scope; `/` in the acl written %2F.
    let scoped = make_token(key, "/secure/*", exp);
    let in_path = |t: &str| format!("/secure/token={}/{}", t.replace('/', "%2F"), tail);
    let ok = verify(rule, &in_path(&scoped), None, now)
        .unwrap_or_else(|e| panic!("fresh path token refused: {e}"));
    assert_eq!(ok.path, format!("/secure/{tail}"));

    // Any single-byte change of the signed part fails, in both places.
    let signed_len = token.rfind("~hmac=").expect("token has an hmac");
    for i in 0..signed_len {
        let mut t = token.clone().into_bytes();
        t[i] = other_byte(t[i], data.get(i).copied().unwrap_or(i as u8));
        let t = String::from_utf8(t).expect("ASCII");
        let r = verify(rule, &path, Some(&format!("token={t}")), now);
        assert!(r.is_err(), "changed byte {i}: {t:?} verified as {r:?}");
    }
    let signed_len = scoped.rfind("~hmac=").expect("token has an hmac");
    for i in 0..signed_len {
        let mut t = scoped.clone().into_bytes();
        t[i] = other_byte(t[i], data.get(i).copied().unwrap_or(i as u8));
        let t = String::from_utf8(t).expect("ASCII");
        let r = verify(rule, &in_path(&t), None, now);
        assert!(r.is_err(), "changed byte {i}: {t:?} verified as {r:?}");
    }
}

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

/// One input (also replayed from the corpus by `cargo test --test fuzz_corpus`).
pub fn run(data: &[u8]) {
    let input = common::decode(data);
    let now = input.number("now").unwrap_or(1_700_000_000);
    let mut lines = common::lines(data).filter(|l| !l.starts_with(b":"));
    let path = common::text(lines.next().unwrap_or(b"/"));
    let query = lines.next().map(common::text);

    for rule in RULES.iter() {
        let _ = verify(rule, &path, query.as_deref(), now);
        let _ = verify(rule, &path, None, now);
        let _ = verify(rule, "/secure/", Some(&String::from_utf8_lossy(data)), now);
    }

    let exp = input.number("exp").unwrap_or(4_102_444_800).max(1);
    round_trip(data, &path, exp);
}
