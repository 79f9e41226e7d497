//! Cache-Control parsing and the storage decision (RFC 9111) on arbitrary response headers.
//!
//! Input lines (see `common`): `cache-control: ...` and other response headers, `> name: value`
//! request headers, bare lines parsed as Cache-Control values, and the controls `:status N`,
//! `:path /x.m3u8` (content kind), `:media N` (body-derived lifetime, s), `:now N` (unix s of
//! the response), `:delay N` (s between request and response).

#![cfg_attr(fuzzing, no_main)]

mod common;

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use streamedge::cache::key::ContentKind;
use streamedge::cache::policy::{self, CacheControl, Exchange};
use streamedge::config::CacheConfig;

static CONFIG: LazyLock<CacheConfig> = LazyLock::new(|| {
    streamedge::config::parse(
        "listen:\n  http: \"127.0.0.1:8080\"\norigins:\n  - url: \"http://127.0.0.1:9000\"\n",
    )
    .expect("the minimal config parses")
    .cache
});

/// RFC 9111 §1.2.2: delta-seconds cap.
const DELTA_MAX: u64 = 1 << 31;

fn check_deltas(cc: &CacheControl) {
    for d in [
        cc.max_age,
        cc.s_maxage,
        cc.stale_while_revalidate,
        cc.stale_if_error,
        cc.min_fresh,
        cc.max_stale.flatten(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(d <= DELTA_MAX, "delta {d} above 2^31");
    }
}

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

/// One input (also replayed from the corpus by `cargo test --test fuzz_corpus`).
pub fn run(data: &[u8]) {
    let whole = CacheControl::parse(&String::from_utf8_lossy(data));
    check_deltas(&whole);

    let input = common::decode(data);
    for line in &input.bare {
        check_deltas(&CacheControl::parse(&common::text(line)));
    }

    let cc = CacheControl::from_headers(&input.response, CACHE_CONTROL);
    check_deltas(&cc);
    let values: Vec<_> = input.response.get_all(CACHE_CONTROL).iter().collect();
    if let [one] = values[..] {
        // One field line: the same as parsing its text.
        assert_eq!(cc, CacheControl::parse(&common::text(one.as_bytes())));
    }
    let targeted = CacheControl::from_headers(&input.response, "cdn-cache-control");
    check_deltas(&targeted);
    check_deltas(&CacheControl::from_headers(&input.request, CACHE_CONTROL));
    // The field that applies with the default config (RFC 9213: CDN-Cache-Control first).
    let effective = if targeted.present { targeted } else { cc };
    let _ = policy::has_validator(&input.response);

    // The exchange around these headers.
    let status = input
        .number("status")
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let kind = match input.control("path").next() {
        Some(p) => ContentKind::from_path(&common::text(p)).refine(
            input
                .response
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        ),
        None => ContentKind::Other,
    };
    let _ = kind.as_str();
    // Bounded so that the harness itself cannot overflow SystemTime or Instant.
    let now_secs = input.number("now").unwrap_or(1_700_000_000) % (1 << 40);
    let response_time = SystemTime::UNIX_EPOCH + Duration::from_secs(now_secs);
    let delay = Duration::from_secs(input.number("delay").unwrap_or(0) % (1 << 32));
    let request_time = response_time
        .checked_sub(delay)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let media = input.number("media").map(|s| policy::MediaTiming {
        lifetime: Some(Duration::from_secs(s % (1 << 32))),
        cap: input
            .number("cap")
            .map(|c| Duration::from_secs(c % (1 << 32))),
    });
    let received_at = tokio::time::Instant::now();

    let decision = policy::decide(
        &Exchange {
            request_headers: &input.request,
            status,
            headers: &input.response,
            kind,
            request_time,
            response_time,
            received_at,
            media,
        },
        &CONFIG,
    );
    let request_cc = CacheControl::from_headers(&input.request, CACHE_CONTROL);
    match decision.store {
        Ok(f) => {
            assert!(!effective.no_store && !request_cc.no_store && !effective.private);
            assert_eq!(f.stored_at, received_at);
            assert_eq!(
                f.is_fresh(received_at),
                !f.no_cache && f.lifetime > f.initial_age
            );
            for later in [
                Duration::ZERO,
                Duration::from_secs(1),
                f.lifetime,
                f.lifetime + f.stale_while_revalidate + f.stale_if_error,
                Duration::from_secs(DELTA_MAX * 4),
            ] {
                let t = received_at + later;
                let _ = (f.age(t), f.is_fresh(t), f.ttl_secs(t), f.staleness(t));
                let _ = f.may_serve_stale_while_revalidate(t);
                let _ = f.may_serve_stale_on_error(t);
            }
            let _ = f.retention(true, CONFIG.stale_retention);
            let _ = f.retention(false, CONFIG.stale_retention);
        }
        Err(refusal) => {
            let _ = (refusal.as_str(), refusal.forbids_sharing());
        }
    }
}
