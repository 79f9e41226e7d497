//! RFC 9211 `Cache-Status`: the one builder of the header every response carries, e.g.
//! `streamedge; hit; ttl=86391` or `streamedge; fwd=uri-miss; fwd-status=200; stored; ttl=86400`.

use http::header::HeaderValue;
use tokio::time::Instant;

use crate::cache::fill::FillHead;
use crate::error::{EdgeError, ErrorSource};

/// The header's name, built once (a name given as text is checked again on every use).
pub const CACHE_STATUS: http::header::HeaderName =
    http::header::HeaderName::from_static("cache-status");

/// RFC 9211 `Cache-Status` of one response.
#[derive(Debug, Clone, Default)]
pub struct CacheStatus {
    pub hit: bool,
    pub fwd: Option<&'static str>,
    pub fwd_status: Option<u16>,
    pub stored: bool,
    pub collapsed: bool,
    pub ttl: Option<i64>,
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    pub fn hit(ttl: i64) -> CacheStatus {
        CacheStatus {
            hit: true,
            fwd: None,
            fwd_status: None,
            stored: false,
            collapsed: false,
            ttl: Some(ttl),
            detail: None,
        }
    }

    pub fn stale_while_revalidate(ttl: i64) -> CacheStatus {
        CacheStatus {
            detail: Some("stale-while-revalidate"),
            ..CacheStatus::hit(ttl)
        }
    }

    pub fn stale_on_error(ttl: i64, e: &EdgeError) -> CacheStatus {
        CacheStatus {
            hit: false,
            fwd: Some("stale"),
            fwd_status: Some(e.status().as_u16()),
            stored: false,
            collapsed: false,
            ttl: Some(ttl),
            detail: Some("stale-if-error"),
        }
    }

    /// The answer of a fill: from the store (the lookup race), revalidated (304), or
    /// forwarded for `fwd` (and stored or not).
    pub fn filled(
        head: &FillHead,
        collapsed: bool,
        fwd: &'static str,
        now: Instant,
    ) -> CacheStatus {
        if head.from_store {
            return CacheStatus::hit(head.freshness.map_or(0, |f| f.ttl_secs(now)));
        }
        CacheStatus {
            hit: false,
            fwd: Some(if head.revalidated { "stale" } else { fwd }),
            fwd_status: Some(if head.revalidated {
                304
            } else {
                head.status.as_u16()
            }),
            stored: head.freshness.is_some(),
            collapsed,
            ttl: head.freshness.map(|f| f.ttl_secs(now)),
            detail: None,
        }
    }

    /// An answer the edge made for an error: forwarded when the origin failed.
    pub fn error(e: &EdgeError) -> CacheStatus {
        CacheStatus {
            fwd: (e.source_class() == ErrorSource::Origin).then_some("miss"),
            detail: Some(e.cache_status_detail()),
            ..CacheStatus::default()
        }
    }

    /// A forwarded unsafe method (never cached).
    pub fn method() -> CacheStatus {
        CacheStatus {
            fwd: Some("method"),
            ..CacheStatus::default()
        }
    }

    /// The entry of this cache, named `cache` (`streamedge`, or the node's name in a fleet).
    pub fn value(&self, cache: &str) -> HeaderValue {
        // Written on the stack and copied once into the value (one allocation per response).
        let mut s = StackText::default();
        s.push_str(cache);
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(f) = self.fwd {
            s.push_str("; fwd=");
            s.push_str(f);
        }
        if let Some(st) = self.fwd_status {
            s.push_str("; fwd-status=");
            s.push_str(itoa::Buffer::new().format(st));
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(t) = self.ttl {
            s.push_str("; ttl=");
            s.push_str(itoa::Buffer::new().format(t));
        }
        if let Some(d) = self.detail {
            s.push_str("; detail=");
            s.push_str(d);
        }
        s.value()
            .unwrap_or_else(|| HeaderValue::from_static("streamedge"))
    }
}

/// A `Cache-Status` entry being written: on the stack while it fits (it always does for the
/// edge's own entries: a name of at most 63 bytes and the parameters), else on the heap.
struct StackText {
    buf: [u8; 192],
    len: usize,
    spilled: Option<String>,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            buf: [0; 192],
            len: 0,
            spilled: None,
        }
    }
}

impl StackText {
    fn push_str(&mut self, text: &str) {
        if let Some(s) = &mut self.spilled {
            s.push_str(text);
            return;
        }
        let end = self.len + text.len();
        match self.buf.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(text.as_bytes());
                self.len = end;
            }
            None => {
                let mut s = String::with_capacity(end);
                s.push_str(std::str::from_utf8(&self.buf[..self.len]).unwrap_or(""));
                s.push_str(text);
                self.spilled = Some(s);
            }
        }
    }

    fn value(&self) -> Option<HeaderValue> {
        let bytes = match &self.spilled {
            Some(s) => s.as_bytes(),
            None => &self.buf[..self.len],
        };
        HeaderValue::from_bytes(bytes).ok()
    }
}

/// The `Cache-Status` of a response that passed caches upstream too (a peer that owns the
/// key, a shield tier): their entries as they sent them, then this cache's — RFC 9211 lists
/// the cache nearest the origin first.
pub fn after_upstream(upstream: &http::HeaderMap, ours: HeaderValue) -> HeaderValue {
    let mut theirs = upstream
        .get_all(CACHE_STATUS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .peekable();
    if theirs.peek().is_none() {
        return ours;
    }
    let mut s: Vec<&str> = theirs.collect();
    let ours_text = ours.to_str().unwrap_or("").to_owned();
    s.push(&ours_text);
    HeaderValue::from_str(&s.join(", ")).unwrap_or(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_longer_than_the_stack_buffer_is_whole() {
        let name = "n".repeat(250);
        let e = EdgeError::NoHealthyOrigin { key: "/a".into() };
        let v = CacheStatus::stale_on_error(-4, &e).value(&name);
        assert!(v.to_str().unwrap().starts_with(&name));
        assert!(
            v.to_str()
                .unwrap()
                .ends_with("; fwd=stale; fwd-status=503; ttl=-4; detail=stale-if-error"),
            "{v:?}"
        );
        assert_eq!(
            CacheStatus::hit(i64::MIN).value("x"),
            format!("x; hit; ttl={}", i64::MIN).as_str()
        );
    }

    #[test]
    fn values() {
        assert_eq!(
            CacheStatus::hit(5).value("streamedge"),
            "streamedge; hit; ttl=5"
        );
        assert_eq!(
            CacheStatus::method().value("streamedge/127.0.0.2:8080"),
            "streamedge/127.0.0.2:8080; fwd=method"
        );
        assert_eq!(
            CacheStatus::error(&EdgeError::NotCached).value("streamedge"),
            "streamedge; detail=not-cached"
        );
        let e = EdgeError::NoHealthyOrigin { key: "/a".into() };
        assert_eq!(
            CacheStatus::error(&e).value("streamedge"),
            "streamedge; fwd=miss; detail=no-healthy-origin"
        );
        assert_eq!(
            CacheStatus::stale_on_error(-4, &e).value("streamedge"),
            "streamedge; fwd=stale; fwd-status=503; ttl=-4; detail=stale-if-error"
        );
    }

    #[test]
    fn entries_of_upstream_caches_come_first() {
        let ours = CacheStatus::hit(3).value("edge-a");
        assert_eq!(after_upstream(&http::HeaderMap::new(), ours.clone()), ours);
        let mut up = http::HeaderMap::new();
        up.append(
            "cache-status",
            HeaderValue::from_static("origin-cache; hit"),
        );
        up.append(
            "cache-status",
            HeaderValue::from_static("edge-b; fwd=uri-miss; stored"),
        );
        assert_eq!(
            after_upstream(&up, ours),
            "origin-cache; hit, edge-b; fwd=uri-miss; stored, edge-a; hit; ttl=3"
        );
    }
}
