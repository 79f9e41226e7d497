//! `config::parse` on arbitrary text (lossy UTF-8). A config that validates must also be usable:
//! its cache settings drive `policy::decide`, its key rules and signing rules run on a request.

#![cfg_attr(fuzzing, no_main)]

use std::time::{Duration, SystemTime};

use http::header::{HeaderValue, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};
use streamedge::cache::key::{ContentKind, KeyRules};
use streamedge::cache::policy::{self, Exchange};

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

/// One input (also replayed from the corpus by `cargo test --test fuzz_corpus`).
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(config) = streamedge::config::parse(&text) else {
        return;
    };

    // Validation must rule out settings that make the request path panic, e.g. a heuristic
    // fraction that `Duration::mul_f64` cannot take.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut response = HeaderMap::new();
    response.insert(
        LAST_MODIFIED,
        HeaderValue::from_static("Thu, 01 Jan 1970 00:00:01 GMT"),
    );
    for (status, kind) in [
        (StatusCode::OK, ContentKind::Other),
        (StatusCode::OK, ContentKind::Manifest),
        (StatusCode::OK, ContentKind::Segment),
        (StatusCode::NOT_FOUND, ContentKind::Segment),
        (StatusCode::MOVED_PERMANENTLY, ContentKind::Other),
    ] {
        let decision = policy::decide(
            &Exchange {
                request_headers: &HeaderMap::new(),
                status,
                headers: &response,
                kind,
                request_time: now,
                response_time: now,
                received_at: tokio::time::Instant::now(),
                media: None,
            },
            &config.cache,
        );
        if let Ok(f) = decision.store {
            let _ = f.retention(true, config.cache.stale_retention);
        }
    }

    let rules = KeyRules::new(config.key_rules.clone());
    let _ = rules.key("/live/a/index.m3u8", Some("b=1&a=2&CMCD=bl%3D1&_HLS_msn=3"));
    for rule in &config.signed_urls {
        let _ = streamedge::signing::verify(rule, &rule.prefix, Some("token=x"), 0);
    }
}
