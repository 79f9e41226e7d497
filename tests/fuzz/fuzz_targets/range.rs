//! Range (RFC 9110 §14) parsing and resolution, preconditions (§13) and If-Range.
//!
//! Input lines (see `common`): `> range: bytes=...`, `> if-range: ...`, `> if-none-match: ...`
//! and other request headers, `etag: ...` / `last-modified: ...` response headers, bare lines
//! (each also tried as a Range value), and controls `:len N` (representation lengths to resolve
//! against), `:status N`, `:method M`.

#![cfg_attr(fuzzing, no_main)]

mod common;

use http::header::RANGE;
use http::{HeaderMap, Method, StatusCode};
use streamedge::cache::conditional::{
    self, RangeRequest, RangeSpec, evaluate, if_range_allows, parse_range,
};

/// One spec on its own: the range it selects in `[0, len)`, if satisfiable.
fn single(spec: RangeSpec, len: u64) -> Option<(u64, u64)> {
    match conditional::resolve(&[spec], len) {
        RangeRequest::Single(a, b) => Some((a, b)),
        RangeRequest::Unsatisfiable => None,
        other => panic!("one spec resolved to {other:?}"),
    }
}

fn check(specs: &[RangeSpec], len: u64) {
    let resolved = conditional::resolve(specs, len);
    let ranges: Vec<(u64, u64)> = match &resolved {
        RangeRequest::Full => panic!("resolve never answers Full"),
        RangeRequest::Unsatisfiable => Vec::new(),
        RangeRequest::Single(a, b) => vec![(*a, *b)],
        RangeRequest::Multi(r) => {
            assert!(r.len() >= 2, "Multi with {} ranges", r.len());
            r.clone()
        }
    };
    for &(a, b) in &ranges {
        assert!(a < b, "empty range [{a}, {b}) for len {len}");
        assert!(b <= len, "range [{a}, {b}) past len {len}");
    }
    if let RangeRequest::Multi(r) = &resolved {
        for w in r.windows(2) {
            assert!(
                w[0].1 < w[1].0,
                "ranges {:?} overlap or touch, not coalesced",
                w
            );
        }
    }
    // Every satisfiable spec is covered, and nothing else is.
    let mut any = false;
    for &s in specs {
        if let Some((a, b)) = single(s, len) {
            any = true;
            assert!(
                ranges.iter().any(|&(x, y)| x <= a && b <= y),
                "{s:?} → [{a}, {b}) not covered by {resolved:?}"
            );
        }
    }
    assert_eq!(
        any,
        !ranges.is_empty(),
        "{specs:?} with len {len} → {resolved:?}"
    );
}

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

/// One input (also replayed from the corpus by `cargo test --test fuzz_corpus`).
pub fn run(data: &[u8]) {
    let input = common::decode(data);

    let mut lens: Vec<u64> = input.control("len").filter_map(common::number).collect();
    lens.extend([0, 1, 2, 100, data.len() as u64, u64::MAX - 1, u64::MAX]);

    let mut maps = vec![input.request.clone()];
    maps.extend(input.bare.iter().map(|line| common::map_of(RANGE, [*line])));
    for request in &maps {
        if let Some(specs) = parse_range(request) {
            assert!(!specs.is_empty() && specs.len() <= 32);
            for s in &specs {
                if let RangeSpec::FromTo(a, b) = *s {
                    assert!(a <= b, "{s:?}");
                }
            }
            for &len in &lens {
                check(&specs, len);
            }
        }
    }

    let status = input
        .number("status")
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut methods = vec![Method::GET, Method::HEAD, Method::POST];
    methods.extend(
        input
            .control("method")
            .filter_map(|m| Method::from_bytes(m).ok()),
    );
    for m in &methods {
        let _ = evaluate(m, &input.request, status, &input.response);
        let _ = evaluate(m, &input.response, status, &input.request);
    }
    let _ = if_range_allows(&input.request, &input.response);
    let _ = if_range_allows(&input.request, &HeaderMap::new());
}
