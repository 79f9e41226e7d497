//! HLS playlists and DASH MPDs: `media::parse` on arbitrary bytes, the lifetimes a manifest
//! earns, URI resolution of what it lists, ISO 8601 durations, LL-HLS delivery directives.

#![cfg_attr(fuzzing, no_main)]

use std::time::Duration;

use streamedge::llhls::Directives;
use streamedge::media::{self, Format};
use streamedge::syntax;

const BASE: &str = "/live/channel1/720p/index.m3u8";

fn resolve_checked(base: &str, uri: &str) {
    if let Some(r) = media::resolve(base, uri) {
        if base.starts_with('/') || uri.starts_with('/') {
            assert!(r.starts_with('/'), "resolve({base:?}, {uri:?}) = {r:?}");
        }
        assert!(r.ends_with(uri), "resolve({base:?}, {uri:?}) = {r:?}");
    }
}

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

/// One input (also replayed from the corpus by `cargo test --test fuzz_corpus`).
pub fn run(data: &[u8]) {
    if let Some(info) = media::parse(data) {
        let vod = Duration::from_secs(3600);
        let live_default = Duration::from_secs(1);
        let lifetime = info.lifetime(vod, live_default);
        let _ = info.lifetime(Duration::ZERO, Duration::ZERO);
        let _ = info.lifetime(Duration::MAX, Duration::MAX);
        let cap = info.max_age_cap();
        match info.format {
            Format::Unknown | Format::HlsMultivariant => assert_eq!(lifetime, None),
            _ if !info.live => {
                assert_eq!(lifetime, Some(vod));
                assert_eq!(cap, None);
            }
            _ => assert!(lifetime.is_some()),
        }
        for (_, uri) in &info.segments {
            resolve_checked(BASE, uri);
        }
        for uri in info.parts.iter().chain(&info.preload_hint) {
            resolve_checked(BASE, uri);
        }
        for w in info.segments.windows(2) {
            // Consecutive; numbering stops (saturates) at u64::MAX instead of wrapping.
            assert_eq!(
                w[0].0.saturating_add(1),
                w[1].0,
                "media sequence numbers not consecutive"
            );
        }
    }

    let text = String::from_utf8_lossy(data);
    let _ = Directives::from_query(Some(&text));
    let mut lines = text.lines();
    let base = lines.next().unwrap_or("");
    for line in text.lines() {
        if let Some(d) = syntax::iso8601_duration(line) {
            assert!(d <= Duration::from_secs(1_000_000_000), "{line:?} → {d:?}");
        }
        let d = Directives::from_query(Some(line));
        assert!(!d.is_blocking() || d.any());
        let _ = syntax::hls_attr(line, "URI");
        let _ = syntax::hls_attr(line, "PART-TARGET");
        resolve_checked(base, line);
        resolve_checked(BASE, line);
    }
}
