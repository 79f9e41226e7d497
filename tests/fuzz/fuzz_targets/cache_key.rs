//! Cache keys: `CacheKey::new` and `KeyRules::key` on arbitrary paths and queries.
//!
//! Input lines: pairs of lines, a path then a query (a lone last line is a path without query).

#![cfg_attr(fuzzing, no_main)]

mod common;

use std::sync::LazyLock;

use streamedge::cache::key::{CacheKey, KeyRule, KeyRules, QueryPolicy};

static RULES: LazyLock<[KeyRules; 2]> = LazyLock::new(|| {
    [
        KeyRules::new(vec![
            KeyRule {
                prefix: "/live/".into(),
                query: QueryPolicy::Allow(vec!["bitrate".into(), "lang".into()]),
            },
            KeyRule {
                prefix: "/live/special/".into(),
                query: QueryPolicy::All,
            },
            KeyRule {
                prefix: "/vod/".into(),
                query: QueryPolicy::Deny(vec!["session".into(), "token".into()]),
            },
            KeyRule {
                prefix: "".into(),
                query: QueryPolicy::Deny(vec!["utm_source".into()]),
            },
        ]),
        KeyRules::default(),
    ]
});

fn name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(k, _)| k)
}

/// The query of a key made for `path`.
fn query_of<'k>(key: &'k CacheKey, path: &str) -> Option<&'k str> {
    let p = if path.is_empty() { "/" } else { path };
    let rest = key
        .as_str()
        .strip_prefix(p)
        .unwrap_or_else(|| panic!("key {key:?} does not start with {p:?}"));
    if rest.is_empty() {
        return None;
    }
    Some(
        rest.strip_prefix('?')
            .unwrap_or_else(|| panic!("key {key:?}: {rest:?} after the path")),
    )
}

fn check(path: &str, query: Option<&str>) {
    let plain = CacheKey::new(path, query);
    let q = query_of(&plain, path);
    if let Some(q) = q {
        assert!(q.split('&').all(|p| !p.is_empty()), "{plain:?}");
    }
    if !path.contains('?') {
        let p = if path.is_empty() { "/" } else { path };
        assert_eq!(plain.path(), p);
    }
    let _ = plain.to_string();

    for rules in RULES.iter() {
        let key = rules.key(path, query);
        let kq = query_of(&key, path);
        let pairs: Vec<&str> = kq.map_or(Vec::new(), |q| q.split('&').collect());
        assert!(pairs.iter().all(|p| !p.is_empty()), "{key:?}");
        assert!(
            pairs.iter().all(|p| name(p) != "CMCD"),
            "{key:?} keeps CMCD"
        );
        assert!(
            pairs.windows(2).all(|w| name(w[0]) <= name(w[1])),
            "{key:?} not sorted"
        );
        // LL-HLS directives are always kept.
        for p in query.unwrap_or("").split('&') {
            if streamedge::llhls::is_directive(name(p)) {
                assert!(pairs.contains(&p), "{key:?} dropped {p:?}");
            }
        }
        // Normalising a key again changes nothing.
        assert_eq!(rules.key(path, kq), key, "not idempotent");
    }
}

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

/// One input (also replayed from the corpus by `cargo test --test fuzz_corpus`).
pub fn run(data: &[u8]) {
    let lines: Vec<_> = common::lines(data).map(common::text).collect();
    for pair in lines.chunks(2) {
        match pair {
            [path, query] => {
                check(path, Some(query));
                check(path, None);
            }
            [path] => check(path, None),
            _ => unreachable!(),
        }
    }
    let whole = String::from_utf8_lossy(data);
    check("/live/a.m3u8", Some(&whole));
    check(&whole, None);
}
