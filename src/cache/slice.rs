//! Large objects cached as fixed-size slices: the arithmetic and the identity of a version.
//!
//! A sliced object is stored as ordinary slots of its key: a marker (`slices`: the object's
//! head, its validators and total length, no body) and one slot per slice
//! (`slice:<size>:<n>`: the origin's 206 for exactly that byte range). Slots of a key are its
//! variants, so purging the key
//! removes every slice on both tiers. All slices served together must carry the marker's
//! version — same `ETag`, `Last-Modified` and total length — or they are fetched again.

use http::header::{self, HeaderMap, HeaderValue};

use std::sync::Arc;

use super::policy::Freshness;
use super::{Body, CacheKey, CachedObject, ContentKind, StoreKey};

/// The marker slot of a sliced key.
pub fn marker_slot(key: &CacheKey) -> StoreKey {
    StoreKey {
        key: key.clone(),
        variant: Some("slices".into()),
    }
}

/// The slot of slice `n` of `size` bytes (a slice size changed by the config never finds
/// the slices of another).
pub fn slice_slot(key: &CacheKey, size: u64, n: u64) -> StoreKey {
    StoreKey {
        key: key.clone(),
        variant: Some(format!("slice:{size}:{n}").into()),
    }
}

/// Whether a slice's head says it is exactly slice `n` of `size` bytes of its object.
pub fn is_slice(headers: &HeaderMap, n: u64, size: u64) -> bool {
    content_range(headers).is_some_and(|(a, b, total)| (a, b) == span(n, size, total) && a < b)
}

/// The marker of a sliced object: the object's head as a 200 of `total` bytes (the
/// `Content-Length` it is answered with), without a body. `headers` may be a slice's: its
/// `Content-Range` goes.
pub(crate) fn marker(
    headers: &HeaderMap,
    total: u64,
    kind: ContentKind,
    freshness: Freshness,
    origin: Arc<str>,
) -> Arc<CachedObject> {
    let mut headers = headers.clone();
    headers.remove(header::CONTENT_RANGE);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    Arc::new(CachedObject {
        hit_head: Default::default(),
        status: http::StatusCode::OK,
        headers,
        body: Body::empty(),
        kind,
        freshness,
        vary: None,
        origin,
        encodings: None,
        media: None,
    })
}

/// What every slice of one version of an object shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub etag: Option<HeaderValue>,
    pub last_modified: Option<HeaderValue>,
    pub total: u64,
}

impl Version {
    pub fn of(headers: &HeaderMap, total: u64) -> Version {
        Version {
            etag: headers.get(header::ETAG).cloned(),
            last_modified: headers.get(header::LAST_MODIFIED).cloned(),
            total,
        }
    }

    /// The version a slice's 206 head names (its `Content-Range` gives the total).
    pub fn of_slice(headers: &HeaderMap) -> Option<Version> {
        let (_, _, total) = content_range(headers)?;
        Some(Version::of(headers, total))
    }
}

/// `Content-Range: bytes a-b/total` as `(a, b + 1, total)`; `None` unless complete and sane.
pub fn content_range(headers: &HeaderMap) -> Option<(u64, u64, u64)> {
    let v = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let (a, b, total) = (
        a.trim().parse::<u64>().ok()?,
        b.trim().parse::<u64>().ok()?,
        total.trim().parse::<u64>().ok()?,
    );
    (a <= b && b < total).then_some((a, b + 1, total))
}

/// Byte range `[start, end)` of slice `n` of an object of `total` bytes.
pub fn span(n: u64, size: u64, total: u64) -> (u64, u64) {
    let start = n.saturating_mul(size).min(total);
    (start, start.saturating_add(size).min(total))
}

/// The slices bytes `[a, b)` touch.
pub fn touched(a: u64, b: u64, size: u64) -> std::ops::Range<u64> {
    if b <= a {
        return 0..0;
    }
    a / size..(b - 1) / size + 1
}

/// The `Range` header asking for slice `n` (its end is clamped by the origin).
pub fn request_range(n: u64, size: u64) -> HeaderValue {
    let start = n.saturating_mul(size);
    let last = start.saturating_add(size.max(1) - 1);
    HeaderValue::from_str(&format!("bytes={start}-{last}"))
        .unwrap_or(HeaderValue::from_static("bytes=0-0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_exactly_the_bytes_asked() {
        assert_eq!(touched(0, 1, 4), 0..1);
        assert_eq!(touched(3, 5, 4), 0..2);
        assert_eq!(touched(4, 8, 4), 1..2);
        assert_eq!(touched(5, 5, 4), 0..0);
        assert_eq!(span(2, 4, 10), (8, 10));
        assert_eq!(span(3, 4, 10), (10, 10));
        assert_eq!(request_range(2, 4), "bytes=8-11");
        assert_eq!(
            request_range(u64::MAX / 3, 5),
            format!("bytes={}-{}", u64::MAX, u64::MAX).as_str()
        );
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, "bytes 4-7/10".parse().unwrap());
        assert!(is_slice(&h, 1, 4));
        assert!(!is_slice(&h, 0, 4) && !is_slice(&h, 1, 8));
        h.insert(header::CONTENT_RANGE, "bytes 4-5/10".parse().unwrap());
        assert!(!is_slice(&h, 1, 4), "a short part is not the slice");
    }

    #[test]
    fn content_range_is_parsed_strictly() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, "bytes 4-7/10".parse().unwrap());
        assert_eq!(content_range(&h), Some((4, 8, 10)));
        for bad in [
            "bytes 4-7/*",
            "bytes */10",
            "bytes 7-4/10",
            "bytes 4-10/10",
            "items 1-2/3",
        ] {
            h.insert(header::CONTENT_RANGE, bad.parse().unwrap());
            assert_eq!(content_range(&h), None, "{bad}");
        }
    }

    #[test]
    fn a_version_changes_with_any_validator_or_the_length() {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, "\"a\"".parse().unwrap());
        let v = Version::of(&h, 100);
        assert_eq!(v, Version::of(&h, 100));
        assert_ne!(v, Version::of(&h, 101));
        h.insert(header::ETAG, "\"b\"".parse().unwrap());
        assert_ne!(v, Version::of(&h, 100));
    }
}
