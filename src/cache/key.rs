//! Cache keys: the normalised request target that drives both the cache and the origin ring.

use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use http::header::{ACCEPT_ENCODING, HeaderName};

/// The normalised `path?query` of an object, and the host when the host is part of the key
/// (when origins see the client's Host). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey {
    /// `host` followed by `path?query`.
    repr: Arc<str>,
    host_len: u32,
}

impl CacheKey {
    /// Builds the key from a request path and query: the path as received, the query
    /// without empty pairs. Keys name what is fetched from the origin, so they stay exact.
    pub fn new(path: &str, query: Option<&str>) -> CacheKey {
        CacheKey::build(None, path, query)
    }

    fn build(host: Option<&str>, path: &str, query: Option<&str>) -> CacheKey {
        let host = host.unwrap_or("");
        let mut s =
            String::with_capacity(host.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        s.push_str(host);
        s.push_str(if path.is_empty() { "/" } else { path });
        if let Some(q) = query {
            let mut first = true;
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                s.push(if first { '?' } else { '&' });
                s.push_str(pair);
                first = false;
            }
        }
        CacheKey {
            repr: s.into(),
            host_len: u32::try_from(host.len()).unwrap_or(0),
        }
    }

    /// The same target keyed under `host` (or under no host).
    pub fn with_host(&self, host: Option<&str>) -> CacheKey {
        if host == self.host() {
            return self.clone();
        }
        let (path, query) = match self.as_str().split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (self.as_str(), None),
        };
        CacheKey::build(host, path, query)
    }

    /// The request target `path?query`: what the origin is asked for and what places the key
    /// on the ring.
    pub fn as_str(&self) -> &str {
        &self.repr[self.host_len as usize..]
    }

    /// The host the key is for, when hosts are keyed.
    pub fn host(&self) -> Option<&str> {
        (self.host_len > 0).then(|| &self.repr[..self.host_len as usize])
    }

    /// The key of the plain playlist a request with LL-HLS delivery directives asks about;
    /// `None` when the key has none.
    pub fn without_directives(&self) -> Option<CacheKey> {
        let (path, query) = self.as_str().split_once('?')?;
        let rest = crate::llhls::strip_directives(query)?;
        Some(CacheKey::build(self.host(), path, rest.as_deref()))
    }

    /// The whole key, host included, as the disk tier stores it (with `host_len`).
    pub(crate) fn as_repr(&self) -> &str {
        &self.repr
    }

    pub(crate) fn host_len(&self) -> u32 {
        self.host_len
    }

    /// A key read back from storage; `None` when the parts cannot be one.
    pub(crate) fn from_stored(repr: &str, host_len: u32) -> Option<CacheKey> {
        repr.get(host_len as usize..)?;
        Some(CacheKey {
            repr: repr.into(),
            host_len,
        })
    }

    /// The path part (before `?`).
    pub fn path(&self) -> &str {
        let t = self.as_str();
        t.split_once('?').map_or(t, |(p, _)| p)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repr)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.repr)
    }
}

pub use crate::config::{KeyRule, QueryPolicy};

/// Cache-key normalisation: the longest matching prefix rule picks the query parameters;
/// they are sorted by name (stable), and CMCD is always dropped. LL-HLS delivery directives
/// are always kept: they select a different playlist.
#[derive(Debug, Clone, Default)]
pub struct KeyRules {
    rules: Vec<KeyRule>,
}

impl KeyRules {
    pub fn new(mut rules: Vec<KeyRule>) -> KeyRules {
        rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        KeyRules { rules }
    }

    pub fn key(&self, path: &str, query: Option<&str>) -> CacheKey {
        self.key_on(None, path, query)
    }

    /// `key`, for `host` when hosts are keyed.
    pub fn key_on(&self, host: Option<&str>, path: &str, query: Option<&str>) -> CacheKey {
        let policy = self
            .rules
            .iter()
            .find(|r| path.starts_with(&r.prefix))
            .map_or(&QueryPolicy::All, |r| &r.query);
        let Some(q) = query.filter(|q| !q.is_empty()) else {
            return CacheKey::build(host, path, None);
        };
        let mut pairs: Vec<&str> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let name = p.split_once('=').map_or(*p, |(k, _)| k);
                if crate::cmcd::is_cmcd_param(name) {
                    return false;
                }
                if crate::llhls::is_directive(name) {
                    return true;
                }
                match policy {
                    QueryPolicy::All => true,
                    QueryPolicy::Allow(names) => names.iter().any(|n| n == name),
                    QueryPolicy::Deny(names) => !names.iter().any(|n| n == name),
                }
            })
            .collect();
        pairs.sort_by(|a, b| {
            let ka = a.split_once('=').map_or(*a, |(k, _)| k);
            let kb = b.split_once('=').map_or(*b, |(k, _)| k);
            ka.cmp(kb)
        });
        let joined = pairs.join("&");
        CacheKey::build(host, path, (!joined.is_empty()).then_some(joined.as_str()))
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
        // The extension: after the last dot of the last segment, at most 8 bytes, so only the
        // path's last 9 bytes are looked at (every request's path goes through here).
        let b = path.as_bytes();
        let tail = &b[b.len().saturating_sub(9)..];
        let Some(dot) = tail.iter().rposition(|&c| c == b'.' || c == b'/') else {
            return ContentKind::Other;
        };
        if tail[dot] == b'/' {
            return ContentKind::Other;
        }
        let ext = &tail[dot + 1..];
        let mut lower = [0u8; 8];
        let lower = &mut lower[..ext.len()];
        lower.copy_from_slice(ext);
        lower.make_ascii_lowercase();
        match &*lower {
            b"m3u8" | b"m3u" | b"mpd" => ContentKind::Manifest,
            b"ts" | b"m4s" | b"mp4" | b"m4v" | b"m4a" | b"cmfv" | b"cmfa" | b"cmft" | b"aac"
            | b"ac3" | b"ec3" | b"mp3" | b"vtt" | b"webvtt" | b"fmp4" | b"webm" | b"mkv"
            | b"m2ts" | b"mts" | b"ttml" | b"dfxp" | b"key" => ContentKind::Segment,
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
    fn hosts_are_part_of_the_key_but_not_of_the_target() {
        let plain = CacheKey::new("/a.ts", Some("x=1"));
        let good = plain.with_host(Some("good.example"));
        let evil = plain.with_host(Some("evil.example"));
        assert_ne!(good, evil);
        assert_ne!(good, plain);
        assert_eq!(good.as_str(), "/a.ts?x=1");
        assert_eq!(good.path(), "/a.ts");
        assert_eq!(good.host(), Some("good.example"));
        assert_eq!(plain.host(), None);
        assert_eq!(good.with_host(None), plain);
        assert_eq!(good.to_string(), "good.example/a.ts?x=1");
    }

    #[test]
    fn plain_playlist_key() {
        let k = CacheKey::new("/l/a.m3u8", Some("_HLS_msn=3&b=1&_HLS_part=0"));
        assert_eq!(k.without_directives().unwrap().as_str(), "/l/a.m3u8?b=1");
        let k = CacheKey::new("/l/a.m3u8", Some("_HLS_msn=3")).with_host(Some("h"));
        let plain = k.without_directives().unwrap();
        assert_eq!((plain.as_str(), plain.host()), ("/l/a.m3u8", Some("h")));
        assert_eq!(
            CacheKey::new("/l/a.m3u8", Some("b=1")).without_directives(),
            None
        );
        assert_eq!(CacheKey::new("/l/a.m3u8", None).without_directives(), None);
    }

    #[test]
    fn rules_pick_sort_and_drop() {
        let rules = KeyRules::new(vec![
            KeyRule {
                prefix: "/live/".into(),
                query: QueryPolicy::Allow(vec!["bitrate".into()]),
            },
            KeyRule {
                prefix: "/live/special/".into(),
                query: QueryPolicy::All,
            },
            KeyRule {
                prefix: "/vod/".into(),
                query: QueryPolicy::Deny(vec!["session".into()]),
            },
        ]);
        assert_eq!(
            rules
                .key(
                    "/live/a.m3u8",
                    Some("session=9&bitrate=3&_HLS_msn=5&CMCD=bl%3D1")
                )
                .as_str(),
            "/live/a.m3u8?_HLS_msn=5&bitrate=3"
        );
        assert_eq!(
            rules.key("/live/special/a.ts", Some("z=1&a=2")).as_str(),
            "/live/special/a.ts?a=2&z=1"
        );
        assert_eq!(
            rules.key("/vod/a.ts", Some("session=9&b=2&a=1")).as_str(),
            "/vod/a.ts?a=1&b=2"
        );
        assert_eq!(rules.key("/other", Some("CMCD=x")).as_str(), "/other");
        assert_eq!(rules.key("/other", None).as_str(), "/other");
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
        // The extension is at most 8 bytes, of the last segment, after its last dot.
        assert_eq!(ContentKind::from_path("/s/a.WebVTT"), ContentKind::Segment);
        assert_eq!(ContentKind::from_path("/s/a.b.m4s"), ContentKind::Segment);
        assert_eq!(ContentKind::from_path("/x.m3u8/seg"), ContentKind::Other);
        assert_eq!(ContentKind::from_path("/x.m3u8/"), ContentKind::Other);
        assert_eq!(ContentKind::from_path("/a/b."), ContentKind::Other);
        assert_eq!(ContentKind::from_path("/a/b.m3u8x"), ContentKind::Other);
        assert_eq!(ContentKind::from_path("/a/b.abcdefghm"), ContentKind::Other);
        assert_eq!(ContentKind::from_path(".m3u8"), ContentKind::Manifest);
        assert_eq!(ContentKind::from_path("/é.ts"), ContentKind::Segment);
        assert_eq!(ContentKind::from_path("/a.tsé"), ContentKind::Other);
        assert_eq!(ContentKind::from_path(""), ContentKind::Other);
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
