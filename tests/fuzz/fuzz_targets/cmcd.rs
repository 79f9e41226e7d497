//! CMCD (CTA-5004) from the query or the `CMCD-*` headers.
//!
//! Input lines (see `common`): bare lines are query strings (each tried on its own, and the
//! first also with the headers), `cmcd-request: ...` etc. are request headers.

#![cfg_attr(fuzzing, no_main)]

mod common;

use http::HeaderMap;
use streamedge::cmcd::Cmcd;

fn check(c: &Cmcd) {
    assert!(c.session.as_ref().is_none_or(|s| s.len() <= 64));
    assert!(c.object_type.as_ref().is_none_or(|s| s.len() <= 4));
    assert!(c.next_object.as_ref().is_none_or(|s| s.len() <= 1024));
    let _ = c.is_empty();
}

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

/// One input (also replayed from the corpus by `cargo test --test fuzz_corpus`).
pub fn run(data: &[u8]) {
    let input = common::decode(data);
    let mut headers = input.response.clone();
    for (name, value) in &input.request {
        headers.append(name, value.clone());
    }
    let empty = HeaderMap::new();

    let whole = String::from_utf8_lossy(data);
    check(&Cmcd::from_request(Some(&whole), &empty));
    check(&Cmcd::from_request(None, &headers));
    let query = input.bare.first().map(|q| common::text(q));
    check(&Cmcd::from_request(query.as_deref(), &headers));
    for line in &input.bare {
        check(&Cmcd::from_request(Some(&common::text(line)), &empty));
    }
}
