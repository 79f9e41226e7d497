//! HLS and DASH awareness: what a manifest says about liveness, timing, LL-HLS and what comes
//! next. Lenient by design: anything that does not parse is simply "unknown" and cached by its
//! headers alone.

use std::time::Duration;

use crate::syntax::{hls_attr, iso8601_duration};

/// What a playlist or MPD tells the cache.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ManifestInfo {
    pub format: Format,
    /// True for live (HLS without ENDLIST, EVENT; DASH `type="dynamic"`).
    pub live: bool,
    /// HLS `EXT-X-TARGETDURATION`.
    pub target_duration: Option<Duration>,
    /// LL-HLS `PART-TARGET` of `EXT-X-PART-INF`.
    pub part_target: Option<Duration>,
    /// DASH `minimumUpdatePeriod`.
    pub minimum_update_period: Option<Duration>,
    /// HLS `EXT-X-MEDIA-SEQUENCE`.
    pub media_sequence: u64,
    /// Media segment URIs in order, with their media sequence numbers.
    pub segments: Vec<(u64, String)>,
    /// LL-HLS part URIs of the segments being produced, in order.
    pub parts: Vec<String>,
    /// LL-HLS `EXT-X-PRELOAD-HINT:TYPE=PART` URI.
    pub preload_hint: Option<String>,
    /// `EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES`.
    pub can_block_reload: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Unknown,
    HlsMedia,
    HlsMultivariant,
    Dash,
}

impl ManifestInfo {
    /// Freshness a manifest earns by itself when the origin gave none: live HLS at most half a
    /// target duration (half the part target for LL-HLS), live DASH half its update period (or
    /// `live_default`), VOD the long manifest TTL.
    pub fn lifetime(&self, vod: Duration, live_default: Duration) -> Option<Duration> {
        match self.format {
            Format::Unknown => None,
            Format::HlsMultivariant => None,
            Format::HlsMedia if self.live => Some(
                self.part_target
                    .or(self.target_duration)
                    .map_or(live_default, |t| t / 2),
            ),
            Format::Dash if self.live => Some(
                self.minimum_update_period
                    .filter(|p| !p.is_zero())
                    .map_or(live_default, |p| p / 2),
            ),
            _ => Some(vod),
        }
    }

    /// The oldest a live manifest may ever be served (stale or not): one target duration.
    pub fn max_age_cap(&self) -> Option<Duration> {
        if !self.live {
            return None;
        }
        match self.format {
            Format::HlsMedia => self.target_duration,
            Format::Dash => self.minimum_update_period.filter(|p| !p.is_zero()),
            _ => None,
        }
    }
}

/// Parses an HLS playlist or a DASH MPD; `None` when the bytes are neither.
pub fn parse(body: &[u8]) -> Option<ManifestInfo> {
    let text = std::str::from_utf8(body).ok()?;
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with("#EXTM3U") {
        Some(parse_hls(trimmed))
    } else if trimmed.starts_with('<') && trimmed.contains("<MPD") {
        Some(parse_mpd(trimmed))
    } else {
        None
    }
}

fn secs(s: &str) -> Option<Duration> {
    let v: f64 = s.trim().parse().ok()?;
    (0.0..1e7).contains(&v).then(|| Duration::from_secs_f64(v))
}

fn parse_hls(text: &str) -> ManifestInfo {
    let mut info = ManifestInfo {
        format: Format::HlsMedia,
        ..Default::default()
    };
    let mut endlist = false;
    let mut vod = false;
    let mut saw_media = false;
    let mut saw_variant = false;
    let mut msn_next: Option<u64> = None;
    let mut parts_of_current: Vec<String> = Vec::new();
    let mut expect_uri = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(tag) = line.strip_prefix('#') {
            let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
            match name {
                "EXT-X-TARGETDURATION" => {
                    info.target_duration = secs(value);
                    saw_media = true;
                }
                "EXT-X-MEDIA-SEQUENCE" => {
                    info.media_sequence = value.trim().parse().unwrap_or(0);
                }
                "EXT-X-ENDLIST" => endlist = true,
                "EXT-X-PLAYLIST-TYPE" => vod = value.trim() == "VOD",
                "EXT-X-PART-INF" => {
                    info.part_target = hls_attr(value, "PART-TARGET").and_then(secs)
                }
                "EXT-X-SERVER-CONTROL" => {
                    info.can_block_reload = hls_attr(value, "CAN-BLOCK-RELOAD") == Some("YES");
                }
                "EXTINF" => {
                    saw_media = true;
                    expect_uri = true;
                }
                "EXT-X-PART" => {
                    if let Some(uri) = hls_attr(value, "URI") {
                        parts_of_current.push(uri.to_owned());
                    }
                }
                "EXT-X-PRELOAD-HINT" if hls_attr(value, "TYPE") == Some("PART") => {
                    info.preload_hint = hls_attr(value, "URI").map(str::to_owned);
                }
                "EXT-X-STREAM-INF" => {
                    saw_variant = true;
                    expect_uri = false;
                }
                _ => {}
            }
            continue;
        }
        if expect_uri {
            let msn = msn_next.unwrap_or(info.media_sequence);
            info.segments.push((msn, line.to_owned()));
            msn_next = Some(msn.saturating_add(1));
            expect_uri = false;
            // Parts listed before a full segment URI belong to it; only the trailing parts
            // (of the segment still being produced) matter for prefetch.
            parts_of_current.clear();
        }
    }
    info.parts = parts_of_current;
    if saw_variant && !saw_media {
        info.format = Format::HlsMultivariant;
    }
    info.live = info.format == Format::HlsMedia && !endlist && !vod;
    info
}

/// Value of an XML attribute on the `<MPD` element (no full XML parse: MPDs can be large and
/// the root element's attributes are all we need).
fn mpd_attr<'a>(root: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(pos) = root[from..].find(name) {
        let at = from + pos;
        let before_ok = at == 0 || root.as_bytes()[at - 1].is_ascii_whitespace();
        let rest = root[at + name.len()..].trim_start();
        if before_ok && let Some(rest) = rest.strip_prefix('=') {
            let rest = rest.trim_start();
            let quote = rest.chars().next()?;
            if quote == '"' || quote == '\'' {
                let body = &rest[1..];
                let end = body.find(quote)?;
                return Some(&body[..end]);
            }
        }
        from = at + name.len();
    }
    None
}

fn parse_mpd(text: &str) -> ManifestInfo {
    let mut info = ManifestInfo {
        format: Format::Dash,
        ..Default::default()
    };
    let Some(start) = text.find("<MPD") else {
        return info;
    };
    let root = &text[start..];
    let root = &root[..root.find('>').unwrap_or(root.len())];
    info.live = mpd_attr(root, "type") == Some("dynamic");
    info.minimum_update_period = mpd_attr(root, "minimumUpdatePeriod").and_then(iso8601_duration);
    info
}

/// Resolves a URI from a manifest against the manifest's path (origin-relative only:
/// absolute URLs to other hosts are not ours to prefetch).
pub fn resolve(base_path: &str, uri: &str) -> Option<String> {
    if uri.contains("://") || uri.starts_with("//") {
        return None;
    }
    if uri.starts_with('/') {
        return Some(uri.to_owned());
    }
    let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
    let mut out = String::with_capacity(dir.len() + uri.len());
    out.push_str(if dir.is_empty() { "/" } else { dir });
    out.push_str(uri);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:100\n\
#EXTINF:4.0,\nseg100.ts\n#EXTINF:4.0,\nseg101.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:4.0,\nseg102.ts\n";

    const LLHLS: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.0\n\
#EXT-X-PART-INF:PART-TARGET=1.0\n#EXT-X-MEDIA-SEQUENCE:10\n#EXTINF:4.0,\nfileSequence10.mp4\n\
#EXT-X-PART:DURATION=1.0,URI=\"filePart11.0.mp4\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=1.0,URI=\"filePart11.1.mp4\"\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"filePart11.2.mp4\"\n";

    #[test]
    fn live_hls() {
        let i = parse(LIVE.as_bytes()).unwrap();
        assert_eq!(i.format, Format::HlsMedia);
        assert!(i.live);
        assert_eq!(i.target_duration, Some(Duration::from_secs(4)));
        assert_eq!(i.media_sequence, 100);
        assert_eq!(i.segments.len(), 3);
        assert_eq!(i.segments[2], (102, "seg102.ts".to_owned()));
        let vod = Duration::from_secs(3600);
        assert_eq!(
            i.lifetime(vod, Duration::from_secs(1)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(i.max_age_cap(), Some(Duration::from_secs(4)));
    }

    #[test]
    fn vod_and_event_hls() {
        let vod = format!("{LIVE}#EXT-X-ENDLIST\n");
        let i = parse(vod.as_bytes()).unwrap();
        assert!(!i.live);
        assert_eq!(
            i.lifetime(Duration::from_secs(600), Duration::from_secs(1)),
            Some(Duration::from_secs(600))
        );
        assert_eq!(i.max_age_cap(), None);
        let typed = LIVE.replace("#EXT-X-VERSION:6", "#EXT-X-PLAYLIST-TYPE:VOD");
        assert!(!parse(typed.as_bytes()).unwrap().live);
        let event = LIVE.replace("#EXT-X-VERSION:6", "#EXT-X-PLAYLIST-TYPE:EVENT");
        assert!(parse(event.as_bytes()).unwrap().live);
    }

    #[test]
    fn ll_hls() {
        let i = parse(LLHLS.as_bytes()).unwrap();
        assert!(i.can_block_reload);
        assert_eq!(i.part_target, Some(Duration::from_secs(1)));
        assert_eq!(i.parts, vec!["filePart11.0.mp4", "filePart11.1.mp4"]);
        assert_eq!(i.preload_hint.as_deref(), Some("filePart11.2.mp4"));
        assert_eq!(
            i.lifetime(Duration::from_secs(600), Duration::from_secs(1)),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn multivariant() {
        let m = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\nlow/index.m3u8\n";
        let i = parse(m.as_bytes()).unwrap();
        assert_eq!(i.format, Format::HlsMultivariant);
        assert!(!i.live);
        assert_eq!(
            i.lifetime(Duration::from_secs(600), Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn dash() {
        let d = r#"<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" minimumUpdatePeriod="PT2S" availabilityStartTime="2026-01-01T00:00:00Z"><Period/></MPD>"#;
        let i = parse(d.as_bytes()).unwrap();
        assert_eq!(i.format, Format::Dash);
        assert!(i.live);
        assert_eq!(i.minimum_update_period, Some(Duration::from_secs(2)));
        assert_eq!(
            i.lifetime(Duration::from_secs(600), Duration::from_secs(2)),
            Some(Duration::from_secs(1))
        );
        let s = r#"<MPD type="static" mediaPresentationDuration="PT12S"></MPD>"#;
        let i = parse(s.as_bytes()).unwrap();
        assert!(!i.live);
        assert_eq!(
            i.lifetime(Duration::from_secs(600), Duration::from_secs(2)),
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn media_sequence_at_the_top_does_not_overflow() {
        let i = parse(b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:18446744073709551615\n#EXTINF:4,\na.ts\n#EXTINF:4,\nb.ts\n").unwrap();
        assert_eq!(i.segments.len(), 2);
    }

    #[test]
    fn garbage_is_unknown_not_a_panic() {
        assert!(parse(b"\xff\xfe").is_none());
        assert!(parse(b"hello").is_none());
        let odd =
            parse(b"#EXTM3U\n#EXT-X-TARGETDURATION:abc\n#EXTINF\n#EXT-X-PART:URI=\"x").unwrap();
        assert_eq!(odd.target_duration, None);
        assert!(parse(b"<MPD type=").is_some());
    }

    #[test]
    fn resolution() {
        assert_eq!(
            resolve("/live/a/index.m3u8", "seg1.ts").as_deref(),
            Some("/live/a/seg1.ts")
        );
        assert_eq!(
            resolve("/live/a/index.m3u8", "/x/seg1.ts").as_deref(),
            Some("/x/seg1.ts")
        );
        assert_eq!(resolve("/live/a/index.m3u8", "https://cdn/x.ts"), None);
        assert_eq!(
            resolve("/live/a/index.m3u8", "../b/seg.ts").as_deref(),
            Some("/live/a/../b/seg.ts")
        );
        assert_eq!(
            hls_attr("TYPE=PART,URI=\"a,b.mp4\"", "URI"),
            Some("a,b.mp4")
        );
    }
}
