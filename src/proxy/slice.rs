//! Phase `slice`: large objects answered from fixed-size slices fetched with `Range`.
//!
//! Runs when `lookup` found no usable object (so hits never pay for it), for GET and HEAD of
//! a key this node owns, when the key is known to be sliced (its marker is stored), lies
//! under a `cache.slice.prefixes` entry, or is asked for with a single `Range` while nothing
//! is stored for it. Each slice is an ordinary slot of the
//! key, collapsed in the in-flight table like any fill and stored on either tier; a response
//! reads the slices it touches in order, one fetched ahead, streaming each as it arrives.
//! Every slice must carry the marker's version (validators and length): a slice of another
//! version is refetched; a version change found mid-response ends the body with an error —
//! a client never receives bytes of two versions.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::cache_status::CacheStatus;
use super::context::Ctx;
use super::headers::{stored_headers, with_origin_age};
use super::log::{CacheResult, Outcome};
use super::respond::{Answer, SlicedHead, respond, respond_sliced};
use crate::cache::conditional::{self, RangeRequest, RangeSpec};
use crate::cache::fill::{FillHead, FillReader, FillWriter, HeadOutcome, Joined, Lane};
use crate::cache::policy::{self, Exchange};
use crate::cache::slice::{self, Version};
use crate::cache::{Body, CacheKey, CachedObject, ContentKind};
use crate::error::EdgeError;
use crate::server::{BoxError, ResponseBody};
use crate::upstream::OriginRequest;

/// A slice to send: stored, or being fetched (its reader streams it as it arrives).
enum Source {
    Stored(Arc<CachedObject>),
    Filling(Arc<FillHead>, FillReader),
}

impl Source {
    fn headers(&self) -> &HeaderMap {
        match self {
            Source::Stored(o) => &o.headers,
            Source::Filling(h, _) => &h.headers,
        }
    }

    fn version(&self) -> Option<Version> {
        Version::of_slice(self.headers())
    }
}

/// What a slice fetch got.
enum Got {
    /// A part of the object (stored or arriving).
    Part(Source),
    /// The origin answered with something else — the whole object (it ignores ranges) or an
    /// error — streamed to this fill's readers and stored whole when it can be.
    Whole(Arc<FillHead>, FillReader),
}

/// Answers the request from slices when it is for a sliced object; `None` lets the ordinary
/// path answer (not sliced, or the origin does not answer ranges).
/// `fwd` is why lookup wants a fill: `uri-miss` (nothing stored), `miss` (hit-for-miss: an
/// oversized object, say), `vary-miss` or `stale`.
pub(super) async fn answer(
    ctx: &Ctx,
    parts: &http::request::Parts,
    key: &CacheKey,
    fwd: &str,
    out: &mut Outcome,
) -> Result<Option<Response<ResponseBody>>, EdgeError> {
    if !applies(ctx, parts, key, fwd).await {
        return Ok(None);
    }
    let size = ctx.rt.config.cache.slice.size;
    let specs = conditional::parse_range(&parts.headers);
    let now = Instant::now();
    let marker = ctx.proxy.store.find(&slice::marker_slot(key)).await;
    let known = marker
        .as_ref()
        .filter(|m| m.freshness.is_fresh(now))
        .and_then(|m| marker_version(m).map(|v| (m.clone(), v)));
    let (marker, version, first, hit) = match known {
        Some((m, v)) => (m, v, None, true),
        None => {
            let n = first_wanted(specs.as_deref()) / size;
            let src = match get_slice(ctx, parts, key, n, None).await? {
                None => return Ok(None),
                Some(Got::Part(src)) => src,
                Some(Got::Whole(head, reader)) => {
                    out.cache = CacheResult::Miss;
                    out.kind = head.kind;
                    out.origin = Some(head.origin.clone());
                    let answer = Answer::Filled {
                        head,
                        reader,
                        collapsed: false,
                        fwd: "uri-miss",
                    };
                    return respond(answer, parts, &ctx.rt.cache_name).map(Some);
                }
            };
            let Some(v) = src.version() else {
                return Ok(None);
            };
            if let Some(old) = marker.as_ref().and_then(marker_version)
                && old != v
            {
                crate::metrics::slice_version_change();
            }
            let m = store_marker(ctx, key, &src, &v).await;
            (m, v, Some((n, src)), false)
        }
    };
    out.kind = marker.kind;
    out.origin = Some(marker.origin.clone());
    let total = version.total;
    let range = match specs {
        Some(specs) if conditional::if_range_allows(&parts.headers, &marker.headers) => {
            conditional::resolve(&specs, total)
        }
        _ => RangeRequest::Full,
    };
    let (a, b, partial) = match range {
        RangeRequest::Single(a, b) => (a, b, true),
        RangeRequest::Unsatisfiable => (0, 0, true),
        // Several ranges of a sliced object are answered whole, as RFC 9110 allows.
        RangeRequest::Full | RangeRequest::Multi(_) => (0, total, false),
    };
    // A hit only when every slice the answer needs is stored; else RFC 9211's `partial`.
    let ttl = Some(marker.freshness.ttl_secs(now));
    let all_stored = hit
        && slice::touched(a, b, size)
            .all(|n| ctx.proxy.store.holds(&slice::slice_slot(key, size, n)));
    let status = if all_stored {
        CacheStatus::hit(marker.freshness.ttl_secs(now))
    } else {
        CacheStatus {
            fwd: Some(if hit { "partial" } else { "uri-miss" }),
            fwd_status: Some(206),
            stored: marker.freshness.lifetime > std::time::Duration::ZERO,
            ttl,
            ..CacheStatus::default()
        }
    };
    out.cache = if all_stored {
        CacheResult::Hit
    } else {
        CacheResult::Miss
    };
    let head = SlicedHead {
        obj: &marker,
        status: &status,
        total,
        span: (a, b),
        partial,
        satisfiable: !matches!(range, RangeRequest::Unsatisfiable),
        now,
    };
    let proceed = conditional::evaluate(
        &parts.method,
        &parts.headers,
        StatusCode::OK,
        &marker.headers,
    ) == conditional::Precondition::Proceed;
    let body = if parts.method == Method::HEAD || b <= a || !proceed || !head.satisfiable {
        None
    } else {
        Some(send_slices(ctx, parts, key, version, (a, b), first))
    };
    Ok(Some(respond_sliced(head, parts, body, &ctx.rt.cache_name)))
}

/// Whether the slice path answers this request, which lookup could not answer.
async fn applies(ctx: &Ctx, parts: &http::request::Parts, key: &CacheKey, fwd: &str) -> bool {
    let only_if_cached =
        policy::CacheControl::from_headers(&parts.headers, header::CACHE_CONTROL).only_if_cached;
    if !matches!(parts.method, Method::GET | Method::HEAD)
        || !matches!(fwd, "uri-miss" | "miss")
        || only_if_cached
        || parts.headers.contains_key(header::AUTHORIZATION)
        || ctx.owner_peer(key).is_some()
        || ContentKind::from_path(key.path()) == ContentKind::Manifest
        || key.without_directives().is_some()
    {
        return false;
    }
    let cfg = &ctx.rt.config.cache.slice;
    if cfg
        .prefixes
        .iter()
        .any(|p| key.path().starts_with(p.as_str()))
    {
        return true;
    }
    let store = &ctx.proxy.store;
    if store.find(&slice::marker_slot(key)).await.is_some() {
        return true;
    }
    // A single range of an object not stored: fetch only the slices it touches.
    fwd == "uri-miss" && conditional::parse_range(&parts.headers).is_some_and(|s| s.len() == 1)
}

/// The first byte a request wants, as far as it can be known before the length is.
fn first_wanted(specs: Option<&[RangeSpec]>) -> u64 {
    match specs {
        Some([RangeSpec::FromTo(a, _)]) | Some([RangeSpec::From(a)]) => *a,
        _ => 0,
    }
}

fn marker_version(m: &Arc<CachedObject>) -> Option<Version> {
    let total = m
        .headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Version::of(&m.headers, total))
}

/// Stores the marker of a version (the object's head, its total length as
/// `Content-Length`, no body) and returns it. Not stored when the slice was not storable.
async fn store_marker(ctx: &Ctx, key: &CacheKey, src: &Source, v: &Version) -> Arc<CachedObject> {
    let (headers, freshness, origin, kind) = match src {
        Source::Stored(o) => (&o.headers, Some(o.freshness), o.origin.clone(), o.kind),
        Source::Filling(h, _) => (&h.headers, h.freshness, h.origin.clone(), h.kind),
    };
    let kept = freshness.unwrap_or_else(|| policy::Freshness::expired_now(Instant::now()));
    let marker = slice::marker(headers, v.total, kind, kept, origin);
    if freshness.is_some() {
        ctx.proxy
            .store
            .replace(slice::marker_slot(key), marker.clone())
            .await;
    }
    marker
}

/// Slice `n`: stored with the expected version, or fetched (collapsed with other requests
/// for it). `None` when the origin did not answer with a part (it ignores ranges, or
/// answered an error): the ordinary path then answers.
async fn get_slice(
    ctx: &Ctx,
    parts: &http::request::Parts,
    key: &CacheKey,
    n: u64,
    expect: Option<&Version>,
) -> Result<Option<Got>, EdgeError> {
    let size = ctx.rt.config.cache.slice.size;
    let slot = slice::slice_slot(key, size, n);
    let now = Instant::now();
    if let Some(obj) = ctx.proxy.store.find(&slot).await {
        let v = Version::of_slice(&obj.headers);
        let exact = slice::is_slice(&obj.headers, n, size)
            && slice::content_range(&obj.headers).is_some_and(|(a, b, _)| obj.body.len() == b - a);
        let usable = exact
            && match expect {
                Some(e) => v.as_ref() == Some(e),
                None => v.is_some() && obj.freshness.is_fresh(now),
            };
        if usable {
            return Ok(Some(Got::Part(Source::Stored(obj))));
        }
    }
    let max = ctx.rt.config.cache.max_waiters;
    let mut reader = match ctx.proxy.fills.join_in(&slot, Lane::Origin, max)? {
        Joined::Leader(reader, writer) => {
            let headers = ctx.origin_headers(parts, false);
            tokio::spawn(fetch_slice(ctx.clone(), key.clone(), n, headers, writer));
            reader
        }
        Joined::Follower(reader) => reader,
    };
    let head = match reader.head().await? {
        HeadOutcome::Ready(h) => h,
        HeadOutcome::NotShared => return Ok(None),
    };
    if head.status != StatusCode::PARTIAL_CONTENT {
        return Ok(Some(Got::Whole(head, reader)));
    }
    if !slice::is_slice(&head.headers, n, size) {
        return Err(EdgeError::OriginProtocol {
            origin: head.origin.to_string(),
            detail: format!("{key}: a part that is not slice {n}"),
        });
    }
    let src = Source::Filling(head, reader);
    if let Some(e) = expect
        && src.version().as_ref() != Some(e)
    {
        crate::metrics::slice_version_change();
        // The marker and the slices of the old version go: the next request learns the new
        // version and fetches its slices again.
        ctx.proxy.store.drop_slices(key).await;
        return Err(version_changed(key));
    }
    Ok(Some(Got::Part(src)))
}

fn version_changed(key: &CacheKey) -> EdgeError {
    EdgeError::OriginProtocol {
        origin: String::new(),
        detail: format!("{key} changed between slices"),
    }
}

/// The fill of one slice: a `Range` request to the ring's origin, its 206 streamed to the
/// readers and stored when whole; any other answer is handed to the readers as `whole`.
async fn fetch_slice(ctx: Ctx, key: CacheKey, n: u64, headers: HeaderMap, writer: FillWriter) {
    let rt = &ctx.rt;
    let size = rt.config.cache.slice.size;
    let mut headers = headers;
    headers.insert(header::RANGE, slice::request_range(n, size));
    let request = OriginRequest {
        key: key.clone(),
        method: Method::GET,
        headers,
        first_byte_timeout: rt.config.fetch.first_byte_timeout,
        body: None,
        retry: true,
    };
    crate::metrics::slice_fetch();
    let mut resp = match rt.upstream.fetch(&request).await {
        Ok(r) => r,
        Err(e) => return writer.fail(e),
    };
    let status = resp.response.status();
    let headers = stored_headers(resp.response.headers());
    let kind = ContentKind::from_path(key.path()).refine(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    if status != StatusCode::PARTIAL_CONTENT {
        return whole(&ctx, &key, resp, headers, kind, writer).await;
    }
    let Some(length) = slice::content_range(&headers)
        .filter(|_| slice::is_slice(&headers, n, size))
        .map(|(a, b, _)| b - a)
    else {
        resp.finished(false);
        let origin = resp.origin.name.to_string();
        let detail = format!("{key}: asked for slice {n}, got a 206 for another range");
        return writer.fail(EdgeError::OriginProtocol { origin, detail });
    };
    // A slice is as fresh as the object would be.
    let freshness = decided(&ctx, &resp, &headers, kind, StatusCode::OK);
    writer.set_head(fill_head(
        &resp,
        status,
        &headers,
        kind,
        Some(length),
        freshness,
    ));
    let mut writer = writer;
    if let Err(e) = pump(&mut resp, &mut writer, Some(length)).await {
        return writer.fail(e);
    }
    match freshness {
        Some(freshness) if !writer.is_streaming() => {
            let body = writer.body();
            let obj = stored(&resp, status, headers, &body, kind, freshness);
            let slot = slice::slice_slot(&key, size, n);
            ctx.proxy.store.replace(slot, obj).await;
            writer.leave_table();
            writer.finish_with(body);
        }
        _ => writer.finish(),
    }
}

/// The origin answered a slice request with something other than a part: its answer goes to
/// the readers as it arrives (they serve their range from it), and is stored whole under the
/// key when storable — the origin ignores ranges, so the object is cached as one piece.
async fn whole(
    ctx: &Ctx,
    key: &CacheKey,
    mut resp: crate::upstream::OriginResponse,
    mut headers: HeaderMap,
    kind: ContentKind,
    mut writer: FillWriter,
) {
    let status = resp.response.status();
    let vary = super::headers::vary_names(&mut headers);
    let length = resp.response.content_length();
    let fits = length.is_some_and(|l| l <= ctx.rt.config.cache.max_object_size);
    // Only a whole object is kept: an error answered to one client's range (a 416, say)
    // must not become what every plain request gets.
    let freshness = decided(ctx, &resp, &headers, kind, status)
        .filter(|_| status == StatusCode::OK && fits && vary.is_none());
    writer.set_head(fill_head(&resp, status, &headers, kind, length, freshness));
    if freshness.is_none() {
        writer.stream_only();
    }
    if let Err(e) = pump(&mut resp, &mut writer, length).await {
        return writer.fail(e);
    }
    match freshness {
        Some(freshness) if !writer.is_streaming() => {
            let body = writer.body();
            let obj = stored(&resp, status, headers, &body, kind, freshness);
            ctx.proxy.store.insert(key, &HeaderMap::new(), obj).await;
            writer.leave_table();
            writer.finish_with(body);
        }
        _ => writer.finish(),
    }
}

/// RFC 9111 freshness of an answer to a slice request, judged as `status`; `None` when it
/// must not be stored.
fn decided(
    ctx: &Ctx,
    resp: &crate::upstream::OriginResponse,
    headers: &HeaderMap,
    kind: ContentKind,
    status: StatusCode,
) -> Option<policy::Freshness> {
    policy::decide(
        &Exchange {
            request_headers: &HeaderMap::new(),
            status,
            headers: &with_origin_age(headers, resp.response.headers().get(header::AGE)),
            kind,
            request_time: resp.request_time,
            response_time: resp.response_time,
            received_at: resp.received_at,
            media: None,
        },
        &ctx.rt.config.cache,
    )
    .store
    .ok()
}

/// The head a slice fill's readers answer with.
fn fill_head(
    resp: &crate::upstream::OriginResponse,
    status: StatusCode,
    headers: &HeaderMap,
    kind: ContentKind,
    content_length: Option<u64>,
    freshness: Option<policy::Freshness>,
) -> FillHead {
    FillHead {
        status,
        headers: headers.clone(),
        kind,
        content_length,
        shareable: true,
        freshness,
        initial_age: freshness.map_or(std::time::Duration::ZERO, |f| f.initial_age),
        vary: None,
        origin: resp.origin.name.clone(),
        revalidated: false,
        from_store: false,
        encodings: None,
    }
}

/// Streams the origin's body to the fill's readers; an error when it breaks off, is not the
/// announced length, or nobody reads it any more.
async fn pump(
    resp: &mut crate::upstream::OriginResponse,
    writer: &mut FillWriter,
    length: Option<u64>,
) -> Result<(), EdgeError> {
    let mut received = 0u64;
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                resp.finished(false);
                return Err(e);
            }
        };
        received += chunk.len() as u64;
        if length.is_some_and(|l| received > l) {
            break;
        }
        if writer.push(chunk).await == crate::cache::fill::Push::Stop {
            resp.finished(true);
            return Err(EdgeError::Internal("no readers left".into()));
        }
    }
    let whole = length.is_none_or(|l| l == received);
    resp.finished(whole);
    if whole {
        return Ok(());
    }
    let origin = resp.origin.name.to_string();
    let detail = format!("{received} body bytes where {length:?} were announced");
    Err(EdgeError::OriginProtocol { origin, detail })
}

/// The stored object of a complete answer.
fn stored(
    resp: &crate::upstream::OriginResponse,
    status: StatusCode,
    headers: HeaderMap,
    body: &Bytes,
    kind: ContentKind,
    freshness: policy::Freshness,
) -> Arc<CachedObject> {
    Arc::new(CachedObject {
        hit_head: Default::default(),
        status,
        headers,
        body: Body::Memory(body.clone()),
        kind,
        freshness,
        vary: None,
        origin: resp.origin.name.clone(),
        encodings: None,
        media: None,
    })
}

/// The response body: the slices over `[a, b)` in order, each fetched (one ahead) or read
/// from the store, produced by a task into a small channel.
fn send_slices(
    ctx: &Ctx,
    parts: &http::request::Parts,
    key: &CacheKey,
    version: Version,
    (a, b): (u64, u64),
    first: Option<(u64, Source)>,
) -> ResponseBody {
    let (tx, rx) = mpsc::channel::<Result<Bytes, BoxError>>(4);
    let ctx = ctx.clone();
    let key = key.clone();
    let parts = parts_for_slices(parts);
    tokio::spawn(async move {
        let size = ctx.rt.config.cache.slice.size;
        let mut first = first;
        let mut ahead: Option<tokio::task::JoinHandle<Result<Option<Got>, EdgeError>>> = None;
        for n in slice::touched(a, b, size) {
            let src = match first.take() {
                Some((m, src)) if m == n => Ok(Some(Got::Part(src))),
                _ => match ahead.take() {
                    Some(h) => h
                        .await
                        .unwrap_or_else(|e| Err(EdgeError::Internal(e.to_string()))),
                    None => get_slice(&ctx, &parts, &key, n, Some(&version)).await,
                },
            };
            if n + 1 < slice::touched(a, b, size).end {
                let (c, p, k, v) = (ctx.clone(), parts.clone(), key.clone(), version.clone());
                ahead = Some(tokio::spawn(async move {
                    get_slice(&c, &p, &k, n + 1, Some(&v)).await
                }));
            }
            let src = match src {
                Ok(Some(Got::Part(s))) if s.version().as_ref() == Some(&version) => s,
                Ok(Some(Got::Whole(head, _))) => {
                    // A whole object: the origin stopped answering ranges, and the key leaves
                    // the slice path. An error (a 503, say) ends this answer only.
                    if head.status == StatusCode::OK {
                        ctx.proxy.store.drop_slices(&key).await;
                    }
                    let e = EdgeError::OriginStatus {
                        origin: head.origin.to_string(),
                        status: head.status,
                    };
                    let _ = tx.send(Err(Box::new(e))).await;
                    return;
                }
                Ok(_) => {
                    let _ = tx.send(Err(Box::new(version_changed(&key)))).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(Box::new(e))).await;
                    return;
                }
            };
            let (s0, s1) = slice::span(n, size, version.total);
            let from = a.max(s0) - s0;
            let to = b.min(s1).saturating_sub(s0);
            if !send_part(src, from, to, &tx).await {
                return;
            }
        }
    });
    SliceBody {
        rx,
        remaining: b - a,
    }
    .boxed_unsync()
}

/// What a slice fetch needs of the client's request: its headers (for the origin request).
fn parts_for_slices(parts: &http::request::Parts) -> http::request::Parts {
    let (mut p, ()) = http::Request::new(()).into_parts();
    p.method = Method::GET;
    p.uri = parts.uri.clone();
    p.version = parts.version;
    p.headers = parts.headers.clone();
    p.headers.remove(header::RANGE);
    p.headers.remove(header::IF_RANGE);
    p
}

/// Sends bytes `[from, to)` of one slice; false once the client is gone or the slice failed.
async fn send_part(
    src: Source,
    from: u64,
    to: u64,
    tx: &mpsc::Sender<Result<Bytes, BoxError>>,
) -> bool {
    match src {
        Source::Stored(obj) => {
            let mut body = super::body::stored(&obj.body, from, to);
            while let Some(frame) = body.frame().await {
                let item = frame.map(|f| f.into_data().unwrap_or_default());
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return false;
                }
            }
            true
        }
        Source::Filling(_, mut reader) => {
            let mut pos = 0u64;
            while pos < to {
                let chunk = match reader.next_chunk().await {
                    Some(Ok(c)) => c,
                    Some(Err(e)) => {
                        let _ = tx.send(Err(Box::new(e))).await;
                        return false;
                    }
                    None => {
                        let e = EdgeError::Internal("a slice ended early".into());
                        let _ = tx.send(Err(Box::new(e))).await;
                        return false;
                    }
                };
                let (start, end) = (pos, pos + chunk.len() as u64);
                pos = end;
                let (x, y) = (from.max(start), to.min(end));
                if x < y
                    && tx
                        .send(Ok(chunk.slice((x - start) as usize..(y - start) as usize)))
                        .await
                        .is_err()
                {
                    return false;
                }
            }
            true
        }
    }
}

/// The receiving end of `send_slices`, with its exact length.
struct SliceBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
    remaining: u64,
}

impl http_body::Body for SliceBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.remaining = self.remaining.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(http_body::Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                let e = EdgeError::Internal("sliced body ended early".into());
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}
