//! Cache keys: the normalised request target that drives both the cache and the origin ring.

use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use http::header::{ACCEPT_ENCODING, HeaderName};

/// The normalised `path?query` of an object. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(Arc<str>);

impl CacheKey {
    /// Builds the key from a request path and query: the path as received, the query
    /// without empty pairs. Keys name what is fetched from the origin, so they stay exact.
    pub fn new(path: &str, query: Option<&str>) -> CacheKey {
        let mut s = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
        s.push_str(if path.is_empty() { "/" } else { path });
        if let Some(q) = query {
            let mut first = true;
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                s.push(if first { '?' } else { '&' });
                s.push_str(pair);
                first = false;
            }
        }
        CacheKey(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path part (before `?`).
    pub fn path(&self) -> &str {
        self.0.split_once('?').map_or(&self.0, |(p, _)| p)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

/// A cache slot: an object's key plus, for responses with `Vary`, the request's values
/// of the varying headers.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct StoreKey {
    pub key: CacheKey,
    pub variant: Option<Arc<str>>,
}

impl StoreKey {
    pub fn base(key: CacheKey) -> StoreKey {
        StoreKey { key, variant: None }
    }
}

/// What an object is, for TTL defaults, compression and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentKind {
    /// HLS playlists and DASH MPDs.
    Manifest,
    /// Media segments, parts, init segments, subtitles: immutable once published.
    Segment,
    Other,
}

impl ContentKind {
    /// The kind a request path suggests, before the origin answers.
    pub fn from_path(path: &str) -> ContentKind {
        let file = path.rsplit('/').next().unwrap_or("");
        let ext = match file.rsplit_once('.') {
            Some((_, ext)) => ext,
            None => return ContentKind::Other,
        };
        let ext = ext.to_ascii_lowercase();
        match ext.as_str() {
            "m3u8" | "m3u" | "mpd" => ContentKind::Manifest,
            "ts" | "m4s" | "mp4" | "m4v" | "m4a" | "cmfv" | "cmfa" | "cmft" | "aac" | "ac3"
            | "ec3" | "mp3" | "vtt" | "webvtt" | "fmp4" | "webm" | "mkv" | "m2ts" | "mts"
            | "ttml" | "dfxp" | "key" => ContentKind::Segment,
            _ => ContentKind::Other,
        }
    }

    /// Refines the path's guess with the origin's `Content-Type`.
    pub fn refine(self, content_type: Option<&str>) -> ContentKind {
        let Some(ct) = content_type else { return self };
        let ct = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match ct.as_str() {
            "application/vnd.apple.mpegurl"
            | "application/x-mpegurl"
            | "audio/mpegurl"
            | "audio/x-mpegurl"
            | "application/dash+xml" => ContentKind::Manifest,
            "video/mp2t" | "video/iso.segment" | "audio/aac" | "text/vtt" => ContentKind::Segment,
            _ if self == ContentKind::Other
                && (ct.starts_with("video/") || ct.starts_with("audio/")) =>
            {
                ContentKind::Segment
            }
            _ => self,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ContentKind::Manifest => "manifest",
            ContentKind::Segment => "segment",
            ContentKind::Other => "other",
        }
    }
}

/// The normalised value of one varying request header: `Accept-Encoding` collapses to the
/// one encoding the edge would pick, others are trimmed and joined.
pub fn vary_value(headers: &HeaderMap, name: &HeaderName) -> String {
    if name == ACCEPT_ENCODING {
        return crate::compress::preferred_encoding(headers)
            .as_str()
            .to_owned();
    }
    let mut out = String::new();
    for v in headers.get_all(name) {
        if let Ok(s) = v.to_str() {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(s.trim());
        }
    }
    out
}

/// The variant string of a request for the given `Vary` header names.
pub fn variant_of(headers: &HeaderMap, names: &[HeaderName]) -> Arc<str> {
    let mut out = String::new();
    for name in names {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(name.as_str());
        out.push('=');
        out.push_str(&vary_value(headers, name));
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_drops_empty_query_pairs() {
        assert_eq!(CacheKey::new("/a/b.ts", None).as_str(), "/a/b.ts");
        assert_eq!(CacheKey::new("/a", Some("")).as_str(), "/a");
        assert_eq!(
            CacheKey::new("/a", Some("x=1&&y=2&")).as_str(),
            "/a?x=1&y=2"
        );
        assert_eq!(CacheKey::new("", None).as_str(), "/");
        assert_eq!(CacheKey::new("/p/q.m3u8", Some("a=1")).path(), "/p/q.m3u8");
    }

    #[test]
    fn kinds() {
        assert_eq!(
            ContentKind::from_path("/live/x.m3u8"),
            ContentKind::Manifest
        );
        assert_eq!(
            ContentKind::from_path("/v/manifest.MPD"),
            ContentKind::Manifest
        );
        assert_eq!(ContentKind::from_path("/v/seg_1.m4s"), ContentKind::Segment);
        assert_eq!(ContentKind::from_path("/v/seg.ts"), ContentKind::Segment);
        assert_eq!(ContentKind::from_path("/v/readme"), ContentKind::Other);
        assert_eq!(ContentKind::from_path("/v.d/readme"), ContentKind::Other);
        assert_eq!(
            ContentKind::Other.refine(Some("application/vnd.apple.mpegurl; charset=utf-8")),
            ContentKind::Manifest
        );
        assert_eq!(
            ContentKind::Other.refine(Some("video/mp4")),
            ContentKind::Segment
        );
        assert_eq!(
            ContentKind::Segment.refine(Some("text/html")),
            ContentKind::Segment
        );
    }
}
