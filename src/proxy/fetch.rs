//! Talking to origins on behalf of the request path: the detached fill task (fetch once,
//! publish the head, stream chunks to the readers, store only complete cacheable objects),
//! manifest handling (timing, encodings, prefetch) and forwarding of unsafe methods.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::headers::{origin_request_headers, stored_headers};
use super::respond::VIA;
use super::{Proxy, Runtime, reference_key};
use crate::cache::fill::{FillHead, FillWriter, Joined, Lease, Push};
use crate::cache::key::variant_of;
use crate::cache::policy::{self, Exchange, MediaTiming, Refusal};
use crate::cache::{CacheKey, CachedObject, ContentKind, Encodings, MediaSummary, StoreKey};
use crate::compress::{self, Encoding};
use crate::error::EdgeError;
use crate::media::{self, Format};
use crate::server::{BoxError, ResponseBody};
use crate::upstream::OriginRequest;

/// Manifests up to this size are read whole before their head is published, so their timing
/// and encodings are known to every reader (playlists and MPDs are small; bigger ones stream).
const MANIFEST_BUFFER_MAX: u64 = 4 << 20;

/// What the detached fill task needs to fetch and store one object.
pub struct FillJob {
    pub key: CacheKey,
    pub slot: StoreKey,
    pub kind: ContentKind,
    /// The leader's request headers (for `Vary` and storability).
    pub request_headers: HeaderMap,
    /// Headers to send to the origin.
    pub origin_headers: HeaderMap,
    pub stale: Option<Arc<CachedObject>>,
    /// A fill other requests may join (not a private fetch).
    pub shared: bool,
    pub first_byte_timeout: Duration,
    /// Started by prefetch, not by a client.
    pub prefetch: bool,
    /// A prefetch's concurrency slot, held until its fill ends.
    pub _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

fn varies_on(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
}

/// `Vary` names of a response; a body the origin encoded always varies on Accept-Encoding.
pub fn vary_names(headers: &mut HeaderMap) -> Option<Arc<[HeaderName]>> {
    let mut names: Vec<HeaderName> = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"));
    if encoded && !names.contains(&header::ACCEPT_ENCODING) {
        names.push(header::ACCEPT_ENCODING);
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    (!names.is_empty()).then(|| names.into())
}

/// `headers` with the origin's `Age`: `stored_headers` drops it (the edge sends its own), but
/// the current age of what is stored starts from it (RFC 9111 §4.2.3).
fn with_origin_age<'a>(headers: &'a HeaderMap, age: Option<&HeaderValue>) -> Cow<'a, HeaderMap> {
    match age {
        Some(age) => {
            let mut h = headers.clone();
            h.insert(header::AGE, age.clone());
            Cow::Owned(h)
        }
        None => Cow::Borrowed(headers),
    }
}

/// RFC 9111 §4.3.4: the stored headers updated with those of a 304.
pub fn merge_304(stored: &HeaderMap, fresh: &HeaderMap) -> HeaderMap {
    let fresh = stored_headers(fresh);
    let mut merged = stored.clone();
    for name in fresh.keys() {
        if *name == header::CONTENT_ENCODING || *name == header::CONTENT_TYPE {
            continue;
        }
        merged.remove(name);
        for v in fresh.get_all(name) {
            merged.append(name.clone(), v.clone());
        }
    }
    merged
}

pub fn head_from_object(obj: &CachedObject, from_store: bool, revalidated: bool) -> FillHead {
    FillHead {
        status: obj.status,
        headers: obj.headers.clone(),
        kind: obj.kind,
        content_length: Some(obj.body.len() as u64),
        shareable: true,
        freshness: Some(obj.freshness),
        initial_age: obj.freshness.age(Instant::now()),
        vary: None,
        origin: obj.origin.clone(),
        revalidated,
        from_store,
        encodings: obj.encodings.clone(),
    }
}

pub fn spawn_fill(proxy: Arc<Proxy>, rt: Arc<Runtime>, writer: FillWriter, job: FillJob) {
    crate::metrics::fill_started();
    tokio::spawn(async move {
        let prefetch = job.prefetch;
        let failure = run_fill(&proxy, &rt, writer, job).await;
        if prefetch {
            crate::metrics::prefetch(if failure.is_some() {
                "failed"
            } else {
                "fetched"
            });
        }
        crate::metrics::fill_ended(failure);
    });
}

/// The detached fill task. Returns a failure reason for metrics.
async fn run_fill(
    proxy: &Arc<Proxy>,
    rt: &Arc<Runtime>,
    mut writer: FillWriter,
    job: FillJob,
) -> Option<&'static str> {
    let cfg = &rt.config.cache;
    // Close the lookup race: a fill that completed between our lookup and our join has
    // already stored the object. A forced revalidation of a fresh object (a client's no-cache,
    // when honoured) asks for that very object again: it goes to the origin.
    if job.shared
        && let Some(obj) = proxy.store.get(&job.slot).await
        && obj.freshness.is_fresh(Instant::now())
        && job.stale.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &obj))
    {
        writer.set_head(head_from_object(&obj, true, false));
        writer.finish_with(obj.body.clone());
        return None;
    }

    let mut origin_headers = job.origin_headers.clone();
    if let Some(stale) = &job.stale {
        if let Some(etag) = stale.headers.get(header::ETAG) {
            origin_headers.insert(header::IF_NONE_MATCH, etag.clone());
        }
        if let Some(lm) = stale.headers.get(header::LAST_MODIFIED) {
            origin_headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
        }
    }
    let request = OriginRequest {
        key: job.key.clone(),
        method: Method::GET,
        headers: origin_headers,
        first_byte_timeout: job.first_byte_timeout,
        body: None,
        retry: true,
    };
    let mut resp = match rt.upstream.fetch(&request).await {
        Ok(r) => r,
        Err(e) => {
            let reason = e.cache_status_detail();
            tracing::debug!(key = %job.key, error = %e, "fill failed before headers");
            writer.fail(e);
            return Some(reason);
        }
    };
    let status = resp.response.status();
    let origin_name = resp.origin.name.clone();

    // A 304 is an answer to validators; the edge sent none (it never forwards a client's).
    let conditional = request.headers.contains_key(header::IF_NONE_MATCH)
        || request.headers.contains_key(header::IF_MODIFIED_SINCE);
    if status == StatusCode::NOT_MODIFIED && !conditional {
        resp.finished(false);
        writer.fail(EdgeError::OriginProtocol {
            origin: origin_name.to_string(),
            detail: "304 Not Modified to a request without validators".into(),
        });
        return Some("status");
    }

    // RFC 5861 §4: an origin's 500, 502, 503 or 504 is an error like an unreachable origin.
    // Where the stale copy allows it, the readers serve that (see `fill`) instead of the answer.
    if let Some(stale) = &job.stale
        && matches!(status.as_u16(), 500 | 502 | 503 | 504)
        && stale.freshness.may_serve_stale_on_error(Instant::now())
    {
        resp.finished(false);
        writer.fail(EdgeError::OriginStatus {
            origin: origin_name.to_string(),
            status,
        });
        return Some("status");
    }

    // Revalidation answered 304: refresh the stored object, answer from its body.
    if status == StatusCode::NOT_MODIFIED
        && let Some(stale) = &job.stale
    {
        let merged = merge_304(&stale.headers, resp.response.headers());
        let decision = policy::decide(
            &Exchange {
                request_headers: &job.request_headers,
                status: stale.status,
                headers: &with_origin_age(&merged, resp.response.headers().get(header::AGE)),
                kind: stale.kind,
                request_time: resp.request_time,
                response_time: resp.response_time,
                received_at: resp.received_at,
                media: stale.media.map(|m| media_timing(&m, None, cfg)),
            },
            cfg,
        );
        resp.finished(true);
        let obj = Arc::new(CachedObject {
            status: stale.status,
            headers: merged,
            body: stale.body.clone(),
            kind: stale.kind,
            freshness: decision.store.unwrap_or(stale.freshness),
            vary: stale.vary.clone(),
            origin: origin_name,
            encodings: stale.encodings.clone(),
            media: stale.media,
        });
        if decision.store.is_ok() {
            proxy.store.replace(job.slot.clone(), obj.clone()).await;
        }
        let mut head = head_from_object(&obj, false, true);
        head.shareable = decision
            .store
            .as_ref()
            .err()
            .is_none_or(|r| !r.forbids_sharing());
        writer.set_head(head);
        writer.finish_with(obj.body.clone());
        return None;
    }

    let mut headers = stored_headers(resp.response.headers());
    if cfg.store_set_cookie && job.shared {
        // Shared copies never carry one client's cookies.
        headers.remove(header::SET_COOKIE);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let kind = job.kind.refine(content_type.as_deref());
    let content_length = resp.response.content_length();
    let vary = vary_names(&mut headers);
    let (request_time, response_time, received_at) =
        (resp.request_time, resp.response_time, resp.received_at);
    let origin_age = resp.response.headers().get(header::AGE).cloned();
    let exchange = |headers: &HeaderMap, media: Option<MediaTiming>| {
        policy::decide(
            &Exchange {
                request_headers: &job.request_headers,
                status,
                headers: &with_origin_age(headers, origin_age.as_ref()),
                kind,
                request_time,
                response_time,
                received_at,
                media,
            },
            cfg,
        )
    };

    // Manifests: read the whole body first; their timing and encodings come from it. Other
    // text the edge compresses (JSON, XML, text/*) is read whole too when its length is known
    // and small, so its encodings are made once, with the stored object.
    let whole_text = kind == ContentKind::Other
        && status == StatusCode::OK
        && content_length.is_some_and(|l| {
            l <= MANIFEST_BUFFER_MAX
                && compress::compressible(&rt.config.compression, &headers, l as usize)
        });
    let whole_manifest = whole_text
        || (kind == ContentKind::Manifest
            && status == StatusCode::OK
            && content_length.is_none_or(|l| l <= MANIFEST_BUFFER_MAX));
    let mut manifest: Option<(Bytes, Option<media::ManifestInfo>)> = None;
    if whole_manifest {
        let mut buf = BytesMut::with_capacity(content_length.unwrap_or(8192) as usize);
        // Read whole before anyone sees a byte: counted in the in-flight budget.
        let mut lease = proxy.fills.budget().lease();
        let mut leased = 0;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    buf.extend_from_slice(&c);
                    let grown = buf.capacity().saturating_sub(leased);
                    leased += grown;
                    if !lease.grow(grown as u64) {
                        resp.finished(false);
                        writer.fail(EdgeError::Overloaded {
                            key: job.key.to_string(),
                        });
                        return Some("memory");
                    }
                    if buf.len() as u64 > MANIFEST_BUFFER_MAX {
                        resp.finished(false);
                        writer.fail(EdgeError::OriginProtocol {
                            origin: origin_name.to_string(),
                            detail: "manifest larger than 4 MiB".into(),
                        });
                        return Some("body");
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    resp.finished(false);
                    writer.fail(e);
                    return Some("body");
                }
            }
        }
        if let Some(expected) = content_length
            && expected != buf.len() as u64
        {
            resp.finished(false);
            writer.fail(short_body(&origin_name, buf.len() as u64, expected));
            return Some("short-body");
        }
        let body = buf.freeze();
        let info = media::parse(&body);
        manifest = Some((body, info));
    }
    let info = manifest.as_ref().and_then(|(_, i)| i.as_ref());
    let summary = info.map(|i| MediaSummary {
        live: i.live,
        target_duration: i.target_duration,
        part_target: i.part_target,
    });
    let decision = exchange(
        &headers,
        summary.as_ref().map(|s| media_timing(s, info, cfg)),
    );

    let refusal = decision.store.as_ref().err().copied();
    let shareable = refusal.is_none_or(|r| !r.forbids_sharing());
    let oversize = content_length.is_some_and(|l| l > proxy.store.max_object_size);
    let mut storable = decision.store.is_ok() && !oversize;
    if job.shared
        && matches!(
            refusal,
            Some(Refusal::NoStore | Refusal::Private | Refusal::SetCookie | Refusal::VaryStar)
        )
    {
        proxy
            .store
            .mark_hit_for_miss(&job.key, cfg.hit_for_miss_ttl)
            .await;
    }
    let encodings = match &manifest {
        Some((body, _))
            if (kind == ContentKind::Manifest || storable)
                && compress::compressible(&rt.config.compression, &headers, body.len()) =>
        {
            if !varies_on(&headers, &header::ACCEPT_ENCODING) {
                headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            }
            Some(Arc::new(encode_all(&rt.config.compression, body).await))
        }
        _ => None,
    };
    let initial_age = decision
        .store
        .as_ref()
        .map(|f| f.initial_age)
        .unwrap_or(Duration::ZERO);
    writer.set_head(FillHead {
        status,
        headers: headers.clone(),
        kind,
        content_length: manifest
            .as_ref()
            .map(|(b, _)| b.len() as u64)
            .or(content_length),
        shareable,
        freshness: decision.store.as_ref().ok().copied().filter(|_| storable),
        initial_age,
        vary: vary.clone().map(|n| {
            let v = variant_of(&job.request_headers, &n);
            (n, v)
        }),
        origin: origin_name.clone(),
        revalidated: false,
        from_store: false,
        encodings: encodings.clone(),
    });

    if let Some((body, info)) = manifest {
        resp.finished(true);
        if storable && let Ok(freshness) = decision.store {
            let obj = Arc::new(CachedObject {
                status,
                headers,
                body: body.clone(),
                kind,
                freshness,
                vary,
                origin: origin_name,
                encodings,
                media: summary,
            });
            // Directives on a playlist with ENDLIST are ignored: once one answer shows it, the
            // plain playlist is known, and `ll_hls` sends later directives there.
            if summary.is_some_and(|s| !s.live)
                && let Some(plain) = media::without_directives(&job.key)
            {
                proxy
                    .store
                    .insert(&plain, &job.request_headers, obj.clone())
                    .await;
            }
            proxy
                .store
                .insert(&job.key, &job.request_headers, obj)
                .await;
        }
        writer.finish_with(body);
        if let Some(info) = info
            && info.format == Format::HlsMedia
            && info.live
        {
            prefetch_from_playlist(proxy, rt, &job.key, &info);
        }
        return None;
    }

    if oversize {
        writer.stream_only();
        if job.shared {
            proxy
                .store
                .mark_hit_for_miss(&job.key, cfg.hit_for_miss_ttl)
                .await;
        }
    }

    // Body: stream every chunk to the readers as it arrives.
    let mut received: u64 = 0;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                received += chunk.len() as u64;
                if storable && received > proxy.store.max_object_size {
                    storable = false;
                    writer.stream_only();
                    if job.shared {
                        proxy
                            .store
                            .mark_hit_for_miss(&job.key, cfg.hit_for_miss_ttl)
                            .await;
                    }
                }
                if writer.push(chunk).await == Push::Stop {
                    resp.finished(false);
                    writer.fail(EdgeError::Internal("no readers left".into()));
                    return Some("abandoned");
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::info!(key = %job.key, origin = %origin_name, error = %e, received, "origin body failed");
                crate::metrics::origin_error(&origin_name, e.cache_status_detail());
                resp.finished(false);
                writer.fail(e);
                return Some("body");
            }
        }
    }
    if let Some(expected) = content_length
        && expected != received
    {
        resp.finished(false);
        writer.fail(short_body(&origin_name, received, expected));
        return Some("short-body");
    }
    resp.finished(true);
    if storable
        && !writer.is_streaming()
        && let Ok(freshness) = decision.store
    {
        let body = writer.body();
        let obj = Arc::new(CachedObject {
            status,
            headers,
            body: body.clone(),
            kind,
            freshness,
            vary,
            origin: origin_name,
            encodings: None,
            media: None,
        });
        proxy
            .store
            .insert(&job.key, &job.request_headers, obj)
            .await;
        // Readers still on their way read the stored copy; the fill's own chunks go.
        writer.finish_with(body);
        return None;
    }
    writer.finish();
    None
}

fn short_body(origin: &str, received: u64, expected: u64) -> EdgeError {
    EdgeError::OriginProtocol {
        origin: origin.to_owned(),
        detail: format!("short body: {received} of {expected} bytes"),
    }
}

/// A manifest's own timing: live HLS half a (part) target duration, live DASH half the update
/// period, VOD the long manifest TTL; live ones are never served older than one target.
fn media_timing(
    summary: &MediaSummary,
    info: Option<&media::ManifestInfo>,
    cfg: &crate::config::CacheConfig,
) -> MediaTiming {
    match info {
        Some(i) => MediaTiming {
            lifetime: i.lifetime(cfg.ttl.vod_manifest, cfg.ttl.manifest),
            cap: i.max_age_cap(),
        },
        None if summary.live => MediaTiming {
            lifetime: summary
                .part_target
                .or(summary.target_duration)
                .map(|t| t / 2),
            cap: summary.target_duration,
        },
        None => MediaTiming {
            lifetime: Some(cfg.ttl.vod_manifest),
            cap: None,
        },
    }
}

async fn encode_all(cfg: &compress::CompressConfig, body: &Bytes) -> Encodings {
    let br = compress::encode(cfg, body, Encoding::Brotli).await.ok();
    let gzip = compress::encode(cfg, body, Encoding::Gzip).await.ok();
    // An encoding that does not shrink the body is not worth sending.
    let keep = |b: Option<Bytes>| b.filter(|b| b.len() < body.len());
    Encodings {
        br: keep(br),
        gzip: keep(gzip),
    }
}

/// Prefetches the newest segments (LL-HLS: parts and the preload hint) of a live playlist.
fn prefetch_from_playlist(
    proxy: &Arc<Proxy>,
    rt: &Arc<Runtime>,
    playlist: &CacheKey,
    info: &media::ManifestInfo,
) {
    let cfg = &rt.config.prefetch;
    if !cfg.enabled {
        return;
    }
    let mut candidates: Vec<&str> = if info.preload_hint.is_some() || !info.parts.is_empty() {
        info.parts
            .iter()
            .map(String::as_str)
            .chain(info.preload_hint.as_deref())
            .collect()
    } else {
        info.segments.iter().map(|(_, u)| u.as_str()).collect()
    };
    let skip = candidates.len().saturating_sub(cfg.segments);
    candidates.drain(..skip);
    for uri in candidates {
        if let Some(reference) = media::resolve(playlist.path(), uri)
            && let Some(key) = reference_key(rt, playlist.host(), &reference)
        {
            prefetch(proxy, rt, key);
        }
    }
}

/// Starts a fill for `key` unless it is cached or in flight, within the prefetch concurrency
/// bound.
pub fn prefetch(proxy: &Arc<Proxy>, rt: &Arc<Runtime>, key: CacheKey) {
    let slot = StoreKey::base(key.clone());
    let proxy = proxy.clone();
    let rt = rt.clone();
    tokio::spawn(async move {
        if let Some(obj) = proxy.store.get(&slot).await
            && obj.freshness.is_fresh(Instant::now())
        {
            crate::metrics::prefetch("already_cached");
            return;
        }
        let Ok(permit) = rt.prefetch_slots.clone().try_acquire_owned() else {
            crate::metrics::prefetch("skipped");
            return;
        };
        match proxy.fills.join(&slot, rt.config.cache.max_waiters) {
            Ok(Joined::Leader(reader, writer)) => {
                drop(reader);
                let job = FillJob {
                    kind: ContentKind::from_path(key.path()),
                    key,
                    slot,
                    request_headers: HeaderMap::new(),
                    origin_headers: origin_request_headers(
                        &HeaderMap::new(),
                        false,
                        &rt.config.fetch,
                        None,
                    ),
                    stale: None,
                    shared: true,
                    first_byte_timeout: rt.config.fetch.first_byte_timeout,
                    prefetch: true,
                    _permit: Some(permit),
                };
                spawn_fill(proxy.clone(), rt.clone(), writer, job);
            }
            Ok(Joined::Follower(_)) => crate::metrics::prefetch("in_flight"),
            Err(_) => crate::metrics::prefetch("skipped"),
        }
    });
}

/// Forwards an unsafe method (POST, PUT, PATCH, DELETE) to the origin that owns the target,
/// uncached and without retries, and invalidates the target URI (and the `Location` /
/// `Content-Location` it names) when the origin accepts it (RFC 9111 §4.4).
pub async fn forward_unsafe(
    proxy: &Arc<Proxy>,
    rt: &Arc<Runtime>,
    parts: &http::request::Parts,
    mut headers: HeaderMap,
    body: Incoming,
    key: CacheKey,
) -> Result<Response<ResponseBody>, EdgeError> {
    // Held until the origin has the body: counted in the in-flight budget.
    let mut lease = proxy.fills.budget().lease();
    let body = read_request_body(body, rt, &mut lease, &key).await?;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    let request = OriginRequest {
        key: key.clone(),
        method: parts.method.clone(),
        headers,
        first_byte_timeout: rt.config.fetch.first_byte_timeout,
        body: Some(body),
        retry: false,
    };
    let resp = rt.upstream.fetch(&request).await?;
    let status = resp.response.status();
    let mut headers = stored_headers(resp.response.headers());
    if status.is_success() || status.is_redirection() {
        proxy.store.purge(&key).await;
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(target) = headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(same_origin_path)
                && let Some(key) = reference_key(rt, key.host(), &target)
            {
                proxy.store.purge(&key).await;
            }
        }
    }
    headers.append(header::VIA, HeaderValue::from_static(VIA));
    if let Some(len) = resp.response.content_length() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    headers.insert(
        HeaderName::from_static("cache-status"),
        HeaderValue::from_static("streamedge; fwd=method"),
    );
    let stream = futures_util::stream::unfold(Some(resp), |state| async move {
        let mut resp = state?;
        match resp.chunk().await {
            Ok(Some(c)) => Some((Ok(Frame::data(c)), Some(resp))),
            Ok(None) => {
                resp.finished(true);
                None
            }
            Err(e) => {
                resp.finished(false);
                Some((Err(Box::new(e) as BoxError), None))
            }
        }
    });
    let mut response = Response::new(UnsyncBoxBody::new(StreamBody::new(stream)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// A client's request body, whole: at most `cache.max_object_size`, within the in-flight
/// budget, and with no pause longer than `server.header_read_timeout` between its parts.
async fn read_request_body(
    mut body: Incoming,
    rt: &Runtime,
    lease: &mut Lease,
    key: &CacheKey,
) -> Result<Bytes, EdgeError> {
    let limit = rt.config.cache.max_object_size;
    let pause = rt.config.server.header_read_timeout;
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(pause, body.frame()).await {
            Err(_) => return Err(EdgeError::BadRequest("the request body stalled".into())),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => {
                return Err(EdgeError::BadRequest(format!(
                    "reading the request body: {e}"
                )));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if (buf.len() + data.len()) as u64 > limit {
            return Err(EdgeError::PayloadTooLarge { limit });
        }
        if !lease.grow(data.len() as u64) {
            return Err(EdgeError::Overloaded {
                key: key.to_string(),
            });
        }
        buf.extend_from_slice(&data);
    }
}

/// A Location value as a path on this edge: absolute paths as they are; absolute URLs are not
/// resolved (their host may be anyone's).
fn same_origin_path(location: &str) -> Option<String> {
    location
        .starts_with('/')
        .then(|| location.to_owned())
        .filter(|l| !l.starts_with("//"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_304_keeps_body_headers() {
        let mut stored = HeaderMap::new();
        stored.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
        stored.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
        stored.insert(header::ETAG, HeaderValue::from_static("\"1\""));
        let mut fresh = HeaderMap::new();
        fresh.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        fresh.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        fresh.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let m = merge_304(&stored, &fresh);
        assert_eq!(m.get(header::CACHE_CONTROL).unwrap(), "max-age=60");
        assert_eq!(m.get(header::CONTENT_TYPE).unwrap(), "video/mp2t");
        assert_eq!(m.get(header::ETAG).unwrap(), "\"1\"");
        assert!(m.get(header::CONTENT_LENGTH).is_none());
    }

    #[test]
    fn encoded_bodies_vary_on_accept_encoding() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let names = vary_names(&mut h).unwrap();
        assert_eq!(&*names, &[header::ACCEPT_ENCODING]);
        assert_eq!(h.get(header::VARY).unwrap(), "Accept-Encoding");
        let mut plain = HeaderMap::new();
        assert!(vary_names(&mut plain).is_none());
        assert!(varies_on(&h, &header::ACCEPT_ENCODING));
    }

    #[test]
    fn locations() {
        assert_eq!(same_origin_path("/a/b").as_deref(), Some("/a/b"));
        assert_eq!(same_origin_path("//evil/a"), None);
        assert_eq!(same_origin_path("https://x/a"), None);
    }
}
