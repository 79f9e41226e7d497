//! The canonical request target (`streamedge::target`): paths, queries and hosts from clients.
//!
//! Input lines (see `common`): bare lines are request targets (`path[?query]`), each also tried
//! as a Host value; `> host: value` lines are Host values.

#![cfg_attr(fuzzing, no_main)]

mod common;

use streamedge::target::{Target, canonical_host, canonical_path, canonical_query, host_name};

fn check_path(raw: &str) {
    let Ok(path) = canonical_path(raw) else {
        return;
    };
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
    assert!(!path.contains("//"), "{raw:?} -> {path:?}: empty segment");
    assert!(!path.contains(['\\', ';', '?', '#']), "{raw:?} -> {path:?}");
    assert!(path.is_ascii(), "{raw:?} -> {path:?}");
    for seg in path.split('/') {
        assert!(
            seg != "." && seg != "..",
            "{raw:?} -> {path:?}: dot segment"
        );
    }
    // Every escape is upper-case hex and stands for a byte that must stay escaped.
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = &path[i + 1..i + 3];
            assert!(
                hex.bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)),
                "{raw:?} -> {path:?}: escape {hex}"
            );
            let v = u8::from_str_radix(hex, 16).unwrap();
            assert!(v >= 0x20 && v != 0x7f && v != b'\\', "{raw:?} -> {path:?}");
            assert!(
                !v.is_ascii_alphanumeric() && !b"-._~".contains(&v),
                "{raw:?} -> {path:?}: {hex} should be decoded"
            );
            i += 3;
        } else {
            i += 1;
        }
    }
    assert_eq!(
        canonical_path(&path).as_deref(),
        Ok(path.as_str()),
        "not idempotent"
    );
}

fn check_query(raw: &str) {
    let q = canonical_query(raw);
    assert!(q.is_ascii(), "{raw:?} -> {q:?}");
    assert!(
        !q.contains(['#', ' ', '"', '<', '>', '\'']),
        "{raw:?} -> {q:?}"
    );
    assert_eq!(canonical_query(&q), q, "not idempotent");
}

fn check_host(raw: &[u8]) {
    for port in [80, 443] {
        let Ok(host) = canonical_host(raw, port) else {
            continue;
        };
        assert!(!host.is_empty());
        assert_eq!(host, host.to_ascii_lowercase());
        assert!(!host_name(&host).ends_with('.'), "{host:?}");
        assert!(!host.contains(['/', '@', '\\', ' ', '%']), "{host:?}");
        assert_eq!(
            canonical_host(host.as_bytes(), port).as_deref(),
            Ok(host.as_str())
        );
    }
}

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

/// One input (also replayed from the corpus by `cargo test --test fuzz_corpus`).
pub fn run(data: &[u8]) {
    let input = common::decode(data);
    for line in &input.bare {
        let text = common::text(line);
        let (path, query) = match text.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (text.as_ref(), None),
        };
        check_path(path);
        if let Some(q) = query {
            check_query(q);
        }
        if let Ok(t) = Target::from_reference(None, &text)
            && t.check_no_encoded_slash().is_ok()
        {
            assert!(!t.path.contains("%2F"));
            let again = Target::from_reference(None, &t.to_string()).expect("canonical again");
            assert_eq!(again, t, "{text:?}");
        }
        check_host(line);
    }
    for v in input.request.get_all(http::header::HOST) {
        check_host(v.as_bytes());
    }
}
