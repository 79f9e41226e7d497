//! Phase `respond`: the one place responses are built — from stored objects and from fills
//! (`Age`, `Via`, RFC 9211 `Cache-Status`, client preconditions, `Range`, the edge's own
//! encodings) — and the one mapping from errors to error responses.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::time::Instant;

use super::body::{Chain, empty, full, stored};
use super::cache_status::{CACHE_STATUS, CacheStatus, after_upstream};
use super::headers::VIA;
use super::log::{CacheResult, Outcome};
use crate::cache::conditional::{self, Precondition, RangeRequest};
use crate::cache::fill::{FillHead, FillReader};
use crate::cache::{CachedObject, Encodings};
use crate::compress::{Encoding, preferred_encoding};
use crate::error::EdgeError;
use crate::server::{BoxError, ResponseBody};

/// What answers a request, as lookup and fill found it.
pub enum Answer {
    /// A stored object: a hit, stale while revalidating, or stale instead of a failed origin.
    Stored {
        obj: Arc<CachedObject>,
        status: CacheStatus,
        now: Instant,
    },
    /// The head of an origin fetch and this request's reader of its body.
    Filled {
        head: Arc<FillHead>,
        reader: FillReader,
        collapsed: bool,
        /// RFC 9211 `fwd` reason.
        fwd: &'static str,
    },
}

/// The response to an answer.
/// `cache` names this node in `Cache-Status`.
pub fn respond(
    answer: Answer,
    parts: &http::request::Parts,
    cache: &str,
) -> Result<Response<ResponseBody>, EdgeError> {
    match answer {
        Answer::Stored { obj, status, now } => {
            let extra = extra_headers(obj.freshness.age(now), &status, cache, &obj.headers);
            respond_stored(&obj, parts, extra)
        }
        Answer::Filled {
            head,
            reader,
            collapsed,
            fwd,
        } => respond_fill(&head, reader, parts, collapsed, fwd, cache),
    }
}

fn age_value(age: Duration) -> HeaderValue {
    HeaderValue::from(age.as_secs())
}

/// Sets the edge's own response headers (Age, Cache-Status, Via). `Via` is appended: it
/// lists every hop the response went through (RFC 9110 §7.6.3), the origin's included.
fn set_extra(h: &mut HeaderMap, extra: &[(HeaderName, HeaderValue)]) {
    for (n, v) in extra {
        if *n == header::VIA {
            h.append(n.clone(), v.clone());
        } else {
            h.insert(n.clone(), v.clone());
        }
    }
}

/// Age, Cache-Status (after the entries of caches upstream, in `stored`) and Via.
fn extra_headers(
    age: Duration,
    status: &CacheStatus,
    cache: &str,
    stored: &HeaderMap,
) -> [(HeaderName, HeaderValue); 3] {
    [
        (header::AGE, age_value(age)),
        (CACHE_STATUS, after_upstream(stored, status.value(cache))),
        (header::VIA, HeaderValue::from_static(VIA)),
    ]
}

/// The head of a whole-body answer from `obj`, made at its first such hit: the stored
/// headers with `Age` and `Cache-Status` (placeholders each hit overwrites in place, in
/// `extra_headers`' order), this hop's `Via` after the origin's, and `Content-Length`.
fn hit_head(obj: &CachedObject) -> &HeaderMap {
    obj.hit_head.get_or_init(|| {
        let mut h = obj.headers.clone();
        h.insert(header::AGE, HeaderValue::from_static("0"));
        h.insert(CACHE_STATUS, HeaderValue::from_static(""));
        h.append(header::VIA, HeaderValue::from_static(VIA));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(obj.body.len()));
        h
    })
}

/// Headers a 304 carries (RFC 9110 §15.4.5).
fn not_modified(
    headers: &HeaderMap,
    extra: &[(HeaderName, HeaderValue)],
) -> Response<ResponseBody> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    let h = resp.headers_mut();
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::LAST_MODIFIED,
    ] {
        for v in headers.get_all(&name) {
            h.append(name.clone(), v.clone());
        }
    }
    set_extra(h, extra);
    resp
}

/// The encoded body to send, if the client prefers an encoding the edge made for this object.
/// Ranges are served from the identity bytes.
fn pick_encoding(
    parts: &http::request::Parts,
    encodings: Option<&Encodings>,
) -> Option<(Encoding, Bytes)> {
    let encodings = encodings?;
    if parts.headers.contains_key(header::RANGE) {
        return None;
    }
    let want = preferred_encoding(&parts.headers);
    encodings.get(want).map(|b| (want, b.clone()))
}

/// Rewrites headers for an encoded representation: its coding and length, and a weak ETag
/// (the bytes differ from the identity representation's).
fn encoded_headers(h: &mut HeaderMap, encoding: Encoding, len: usize) {
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(encoding.as_str()),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(etag) = h.get(header::ETAG).and_then(|v| v.to_str().ok())
        && etag.starts_with('"')
        && let Ok(weak) = HeaderValue::from_str(&format!("W/{etag}"))
    {
        h.insert(header::ETAG, weak);
    }
    crate::metrics::compressed(encoding.as_str());
}

/// A response from a stored object: preconditions, Range (single and multipart), encodings, HEAD.
fn respond_stored(
    obj: &CachedObject,
    parts: &http::request::Parts,
    extra: [(HeaderName, HeaderValue); 3],
) -> Result<Response<ResponseBody>, EdgeError> {
    match conditional::evaluate(&parts.method, &parts.headers, obj.status, &obj.headers) {
        Precondition::NotModified => return Ok(not_modified(&obj.headers, &extra)),
        Precondition::Failed => return Ok(precondition_failed(&extra)),
        Precondition::Proceed => {}
    }
    let head_only = parts.method == Method::HEAD;
    if let Some((encoding, bytes)) = pick_encoding(parts, obj.encodings.as_deref()) {
        let mut headers = obj.headers.clone();
        set_extra(&mut headers, &extra);
        encoded_headers(&mut headers, encoding, bytes.len());
        let mut resp = Response::new(if head_only { empty() } else { full(bytes) });
        *resp.status_mut() = obj.status;
        *resp.headers_mut() = headers;
        return Ok(resp);
    }
    let len = obj.body.len();
    let (status, (a, b), headers) = match ranged(parts, obj.status, &obj.headers, Some(len)) {
        RangeRequest::Full => {
            let mut headers = hit_head(obj).clone();
            let [(_, age), (_, cache_status), _] = extra;
            headers.insert(header::AGE, age);
            headers.insert(CACHE_STATUS, cache_status);
            (obj.status, (0, len), headers)
        }
        RangeRequest::Single(a, b) => {
            let mut headers = obj.headers.clone();
            set_extra(&mut headers, &extra);
            headers.insert(header::CONTENT_RANGE, content_range(a, b, len));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(b - a));
            (StatusCode::PARTIAL_CONTENT, (a, b), headers)
        }
        RangeRequest::Multi(ranges) => {
            let (ctype, parts) = multipart(&obj.headers, &obj.body, &ranges);
            let body = Chain::new(parts);
            let mut headers = obj.headers.clone();
            set_extra(&mut headers, &extra);
            headers.insert(header::CONTENT_TYPE, ctype);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.remaining()));
            let mut resp = Response::new(if head_only {
                empty()
            } else {
                body.boxed_unsync()
            });
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            *resp.headers_mut() = headers;
            return Ok(resp);
        }
        RangeRequest::Unsatisfiable => return Ok(unsatisfiable(len, &extra)),
    };
    let mut resp = Response::new(if head_only {
        empty()
    } else {
        stored(&obj.body, a, b)
    });
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// The head of a response from slices (see `slice`): the marker's stored head, the span.
pub struct SlicedHead<'a> {
    pub obj: &'a CachedObject,
    pub status: &'a CacheStatus,
    pub total: u64,
    pub span: (u64, u64),
    pub partial: bool,
    pub satisfiable: bool,
    pub now: Instant,
}

/// A response from slices: preconditions on the marker's head, 416, or 200/206 with the
/// body the slices make.
pub fn respond_sliced(
    h: SlicedHead<'_>,
    parts: &http::request::Parts,
    body: Option<ResponseBody>,
    cache: &str,
) -> Response<ResponseBody> {
    let extra = extra_headers(h.obj.freshness.age(h.now), h.status, cache, &h.obj.headers);
    match conditional::evaluate(
        &parts.method,
        &parts.headers,
        StatusCode::OK,
        &h.obj.headers,
    ) {
        Precondition::NotModified => return not_modified(&h.obj.headers, &extra),
        Precondition::Failed => return precondition_failed(&extra),
        Precondition::Proceed => {}
    }
    if !h.satisfiable {
        return unsatisfiable(h.total, &extra);
    }
    let mut headers = h.obj.headers.clone();
    set_extra(&mut headers, &extra);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let (a, b) = h.span;
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(b - a));
    let status = if h.partial {
        headers.insert(header::CONTENT_RANGE, content_range(a, b, h.total));
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut resp = Response::new(body.unwrap_or_else(empty));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

fn content_range(a: u64, b: u64, len: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes {a}-{}/{len}", b - 1))
        .unwrap_or(HeaderValue::from_static("bytes */0"))
}

fn unsatisfiable(len: u64, extra: &[(HeaderName, HeaderValue)]) -> Response<ResponseBody> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
        h.insert(header::CONTENT_RANGE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    set_extra(h, extra);
    resp
}

/// Which range applies: only to 200 responses of known length whose If-Range holds.
fn ranged(
    parts: &http::request::Parts,
    status: StatusCode,
    headers: &HeaderMap,
    len: Option<u64>,
) -> RangeRequest {
    let (Some(len), true) = (len, status == StatusCode::OK) else {
        return RangeRequest::Full;
    };
    match conditional::parse_range(&parts.headers) {
        Some(specs) if conditional::if_range_allows(&parts.headers, headers) => {
            conditional::resolve(&specs, len)
        }
        _ => RangeRequest::Full,
    }
}

/// A `multipart/byteranges` body as parts: boundaries, and ranges of the stored body (slices
/// of memory, or reads of its disk file).
fn multipart(
    headers: &HeaderMap,
    body: &crate::cache::Body,
    ranges: &[(u64, u64)],
) -> (HeaderValue, Vec<ResponseBody>) {
    let boundary = format!("streamedge-{:016x}", body.len() ^ 0x5ee0_d6e5_7a1b_c3d2);
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let len = body.len();
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    for &(a, b) in ranges {
        parts.push(full(Bytes::from(format!(
            "\r\n--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: bytes {a}-{}/{len}\r\n\r\n",
            b - 1
        ))));
        parts.push(stored(body, a, b));
    }
    parts.push(full(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    let value = HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
        .unwrap_or(HeaderValue::from_static("multipart/byteranges"));
    (value, parts)
}

/// A response from a fill: the shared head plus this request's view of the body. Multiple
/// ranges on a fill are answered with the whole object (200), as RFC 9110 allows.
fn respond_fill(
    head: &FillHead,
    reader: FillReader,
    parts: &http::request::Parts,
    collapsed: bool,
    fwd: &'static str,
    cache: &str,
) -> Result<Response<ResponseBody>, EdgeError> {
    let now = Instant::now();
    let status = CacheStatus::filled(head, collapsed, fwd, now);
    let age = if head.from_store || head.revalidated {
        head.freshness.map_or(head.initial_age, |f| f.age(now))
    } else {
        head.initial_age
    };
    let extra = extra_headers(age, &status, cache, &head.headers);
    match conditional::evaluate(&parts.method, &parts.headers, head.status, &head.headers) {
        Precondition::NotModified => return Ok(not_modified(&head.headers, &extra)),
        Precondition::Failed => return Ok(precondition_failed(&extra)),
        Precondition::Proceed => {}
    }
    let head_only = parts.method == Method::HEAD;
    let mut headers = head.headers.clone();
    set_extra(&mut headers, &extra);
    if let Some((encoding, bytes)) = pick_encoding(parts, head.encodings.as_deref()) {
        // Encoded fills are complete manifests: answer from the encoded bytes at once.
        drop(reader);
        encoded_headers(&mut headers, encoding, bytes.len());
        let mut resp = Response::new(if head_only { empty() } else { full(bytes) });
        *resp.status_mut() = head.status;
        *resp.headers_mut() = headers;
        return Ok(resp);
    }
    let range = match ranged(parts, head.status, &head.headers, head.content_length) {
        RangeRequest::Multi(_) => RangeRequest::Full,
        r => r,
    };
    let mut status_code = head.status;
    let body_range = match range {
        RangeRequest::Full => {
            if let Some(len) = head.content_length {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            }
            None
        }
        RangeRequest::Single(a, b) => {
            status_code = StatusCode::PARTIAL_CONTENT;
            headers.insert(
                header::CONTENT_RANGE,
                content_range(a, b, head.content_length.unwrap_or(b)),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(b - a));
            Some((a, b))
        }
        RangeRequest::Unsatisfiable => {
            return Ok(unsatisfiable(head.content_length.unwrap_or(0), &extra));
        }
        RangeRequest::Multi(_) => None,
    };
    let no_body = head_only
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED;
    let body = if no_body {
        empty()
    } else {
        UnsyncBoxBody::new(
            reader
                .into_body(body_range)
                .map_err(|e| Box::new(e) as BoxError),
        )
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status_code;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// A 412 for a stored or filled response: its Age and Cache-Status, the generic body.
fn precondition_failed(extra: &[(HeaderName, HeaderValue)]) -> Response<ResponseBody> {
    let mut resp = error_response(&EdgeError::PreconditionFailed);
    set_extra(resp.headers_mut(), extra);
    resp
}

/// The one mapping from error to response: status from the error, a generic body readable
/// cross-origin, and the `Age` and `Cache-Status` every response carries.
pub fn respond_error(e: &EdgeError, cache: &str, out: &mut Outcome) -> Response<ResponseBody> {
    out.error = Some(e.to_string());
    let mut resp = error_response(e);
    let h = resp.headers_mut();
    h.insert(header::AGE, HeaderValue::from(0));
    h.insert(CACHE_STATUS, CacheStatus::error(e).value(cache));
    if e.source_class() == crate::error::ErrorSource::Client {
        out.cache = CacheResult::Synthetic;
    }
    resp
}

fn error_response(e: &EdgeError) -> Response<ResponseBody> {
    let status = e.status();
    let body = Bytes::from(format!("{}\n", e.public_message()));
    let mut resp = Response::new(full(body.clone()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A browser player on another origin sees an edge-made error only with this: without it the
    // browser reports a network failure and the player cannot tell a 503 from a lost
    // connection. The body is the generic message; nothing the client may not see.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    match e {
        EdgeError::MethodNotAllowed { allow, .. } => {
            h.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        EdgeError::NoHealthyOrigin { .. } | EdgeError::Overloaded { .. } => {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    resp
}
