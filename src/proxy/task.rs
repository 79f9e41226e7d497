//! The detached fill task: fetch an object once from its origin, publish the response head to
//! every reader, stream the body to them as it arrives, and store it only when it is complete
//! and cacheable. Each step is a function; the task is their sequence in [`steps`].

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::context::{Proxy, Runtime};
use super::headers::{merge_304, stored_headers, varies_on, vary_names, with_origin_age};
use crate::cache::fill::{FillHead, FillWriter, Push};
use crate::cache::key::variant_of;
use crate::cache::policy::{self, Decision, Exchange, MediaTiming, Refusal};
use crate::cache::{CacheKey, CachedObject, ContentKind, Encodings, MediaSummary, StoreKey};
use crate::compress::{self, Encoding};
use crate::error::EdgeError;
use crate::media::{self, Format, ManifestInfo};
use crate::upstream::{OriginRequest, OriginResponse};

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
    /// The stored object being revalidated, if any.
    pub stale: Option<Arc<CachedObject>>,
    /// A fill other requests may join (not a private fetch).
    pub shared: bool,
    pub first_byte_timeout: Duration,
    /// A prefetch's concurrency slot, held until its fill ends (`None`: a client's fetch).
    pub prefetch: Option<OwnedSemaphorePermit>,
}

impl FillJob {
    /// A shared fetch of `key` into `slot`, for a request with `request_headers`.
    pub fn new(
        key: CacheKey,
        slot: StoreKey,
        request_headers: HeaderMap,
        origin_headers: HeaderMap,
        first_byte_timeout: Duration,
    ) -> FillJob {
        FillJob {
            kind: ContentKind::from_path(key.path()),
            key,
            slot,
            request_headers,
            origin_headers,
            stale: None,
            shared: true,
            first_byte_timeout,
            prefetch: None,
        }
    }

    /// Revalidates `stale` (conditional on its validators).
    pub fn revalidating(mut self, stale: Option<Arc<CachedObject>>) -> FillJob {
        self.stale = stale;
        self
    }

    /// A fetch for one request alone: no one joins it.
    pub fn private(mut self, private: bool) -> FillJob {
        self.shared = !private;
        self
    }
}

/// Why a fill ended without its object, for metrics (`streamedge_fill_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillFailure {
    /// No usable answer from any origin (its `Cache-Status` detail).
    Origin(&'static str),
    /// An answer the readers cannot use (a 304 to nothing, a 5xx a stale copy stands in for).
    Status,
    /// The body broke off or stalled.
    Body,
    /// The body ended before its announced length.
    ShortBody,
    /// The in-flight memory budget could not hold a manifest read whole.
    Memory,
    /// No reader left for a fill that streams, or given up for memory with none waiting.
    Abandoned,
}

impl FillFailure {
    pub fn label(self) -> &'static str {
        match self {
            FillFailure::Origin(detail) => detail,
            FillFailure::Status => "status",
            FillFailure::Body => "body",
            FillFailure::ShortBody => "short-body",
            FillFailure::Memory => "memory",
            FillFailure::Abandoned => "abandoned",
        }
    }
}

/// A failed step: the error the readers get, and the reason for metrics.
struct Failed {
    error: EdgeError,
    failure: FillFailure,
}

impl Failed {
    fn new(error: EdgeError, failure: FillFailure) -> Failed {
        Failed { error, failure }
    }
}

/// How a fill that did not fail ends: readers read what was pushed, or `body` (a stored
/// object's, so its chunks need not be kept).
enum Ending {
    Finish,
    FinishWith(Bytes),
}

/// How a fill task ended: why it failed, if it did, and a live media playlist it read (whose
/// newest segments are worth prefetching).
pub struct Ran {
    pub failure: Option<FillFailure>,
    pub live_playlist: Option<ManifestInfo>,
}

/// Runs the fill task to its end, which `writer` announces to the readers.
pub async fn run(
    proxy: &Arc<Proxy>,
    rt: &Arc<Runtime>,
    mut writer: FillWriter,
    job: &FillJob,
) -> Ran {
    let mut live_playlist = None;
    let failure = match steps(proxy, rt, &mut writer, job, &mut live_playlist).await {
        Ok(Ending::Finish) => {
            writer.finish();
            None
        }
        Ok(Ending::FinishWith(body)) => {
            writer.finish_with(body);
            None
        }
        Err(Failed { error, failure }) => {
            writer.fail(error);
            Some(failure)
        }
    };
    Ran {
        failure,
        live_playlist,
    }
}

/// The fill task, step by step.
async fn steps(
    proxy: &Arc<Proxy>,
    rt: &Arc<Runtime>,
    writer: &mut FillWriter,
    job: &FillJob,
    live_playlist: &mut Option<ManifestInfo>,
) -> Result<Ending, Failed> {
    if let Some(obj) = stored_meanwhile(proxy, job).await {
        writer.set_head(FillHead::from_object(&obj, true, false));
        return Ok(Ending::FinishWith(obj.body.clone()));
    }
    let (mut resp, conditional) = fetch(rt, job).await?;
    let result = answered(
        proxy,
        rt,
        writer,
        job,
        &mut resp,
        conditional,
        live_playlist,
    )
    .await;
    resp.finished(result.is_ok());
    result
}

/// What to do with the origin's answer.
async fn answered(
    proxy: &Arc<Proxy>,
    rt: &Arc<Runtime>,
    writer: &mut FillWriter,
    job: &FillJob,
    resp: &mut OriginResponse,
    conditional: bool,
    live_playlist: &mut Option<ManifestInfo>,
) -> Result<Ending, Failed> {
    check_status(job, resp, conditional)?;
    if let Some(stale) = &job.stale
        && resp.response.status() == StatusCode::NOT_MODIFIED
    {
        return Ok(refresh(proxy, rt, writer, job, resp, stale).await);
    }
    let mut answer = Answer::of(rt, job, resp);
    let manifest = if answer.read_whole(rt) {
        Some(read_whole(proxy, job, resp, &answer).await?)
    } else {
        None
    };
    let plan = decide(proxy, rt, job, &mut answer, manifest.as_ref()).await;
    writer.set_head(plan.head(job, &answer));
    match manifest {
        Some(m) => {
            if let Some(info) = &m.info
                && info.format == Format::HlsMedia
                && info.live
            {
                *live_playlist = Some(info.clone());
            }
            Ok(store_manifest(proxy, job, answer, plan, m).await)
        }
        None => stream_body(proxy, rt, writer, job, resp, answer, plan).await,
    }
}

/// Closes the lookup race: a fill that completed between the lookup and the join has already
/// stored the object. A forced revalidation of a fresh object (a client's no-cache, when
/// honoured) asks for that very object again: it goes to the origin.
async fn stored_meanwhile(proxy: &Proxy, job: &FillJob) -> Option<Arc<CachedObject>> {
    if !job.shared {
        return None;
    }
    let obj = proxy.store.get(&job.slot).await?;
    (obj.freshness.is_fresh(Instant::now())
        && job.stale.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &obj)))
    .then_some(obj)
}

/// Sends the request (conditional on the stale copy's validators) to the ring's origin;
/// returns the response head and whether the request carried validators.
async fn fetch(rt: &Runtime, job: &FillJob) -> Result<(OriginResponse, bool), Failed> {
    let mut headers = job.origin_headers.clone();
    if let Some(stale) = &job.stale {
        if let Some(etag) = stale.headers.get(header::ETAG) {
            headers.insert(header::IF_NONE_MATCH, etag.clone());
        }
        if let Some(lm) = stale.headers.get(header::LAST_MODIFIED) {
            headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
        }
    }
    let conditional = headers.contains_key(header::IF_NONE_MATCH)
        || headers.contains_key(header::IF_MODIFIED_SINCE);
    let request = OriginRequest {
        key: job.key.clone(),
        method: Method::GET,
        headers,
        first_byte_timeout: job.first_byte_timeout,
        body: None,
        retry: true,
    };
    match rt.upstream.fetch(&request).await {
        Ok(resp) => Ok((resp, conditional)),
        Err(e) => {
            tracing::debug!(key = %job.key, error = %e, "fill failed before headers");
            let failure = FillFailure::Origin(e.cache_status_detail());
            Err(Failed::new(e, failure))
        }
    }
}

/// Statuses the readers cannot use as they are: a 304 to a request without validators (the
/// edge never forwards a client's), and — RFC 5861 §4 — an origin's 500, 502, 503 or 504 when
/// the stale copy may stand in for it (the readers then serve that, see `fill`).
fn check_status(job: &FillJob, resp: &OriginResponse, conditional: bool) -> Result<(), Failed> {
    let status = resp.response.status();
    let origin = resp.origin.name.to_string();
    if status == StatusCode::NOT_MODIFIED && !conditional {
        let detail = "304 Not Modified to a request without validators".into();
        return Err(Failed::new(
            EdgeError::OriginProtocol { origin, detail },
            FillFailure::Status,
        ));
    }
    if let Some(stale) = &job.stale
        && matches!(status.as_u16(), 500 | 502 | 503 | 504)
        && stale
            .freshness
            .may_answer_for_failed_origin(Instant::now(), false)
    {
        return Err(Failed::new(
            EdgeError::OriginStatus { origin, status },
            FillFailure::Status,
        ));
    }
    Ok(())
}

/// A revalidation answered 304: the stored object with the 304's headers merged in (RFC 9111
/// §4.3.4), stored again when still storable, and answered from its body.
async fn refresh(
    proxy: &Proxy,
    rt: &Runtime,
    writer: &FillWriter,
    job: &FillJob,
    resp: &OriginResponse,
    stale: &Arc<CachedObject>,
) -> Ending {
    let cfg = &rt.config.cache;
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
    let obj = Arc::new(CachedObject {
        headers: merged,
        freshness: decision.store.unwrap_or(stale.freshness),
        origin: resp.origin.name.clone(),
        ..CachedObject::clone(stale)
    });
    if decision.store.is_ok() {
        proxy.store.replace(job.slot.clone(), obj.clone()).await;
    }
    let mut head = FillHead::from_object(&obj, false, true);
    head.shareable = decision
        .store
        .as_ref()
        .err()
        .is_none_or(|r| !r.forbids_sharing());
    writer.set_head(head);
    Ending::FinishWith(obj.body.clone())
}

/// The origin's answer as the edge keeps it.
struct Answer {
    status: StatusCode,
    /// As stored: hop-by-hop and framing removed (and shared copies without Set-Cookie).
    headers: HeaderMap,
    kind: ContentKind,
    content_length: Option<u64>,
    vary: Option<Arc<[HeaderName]>>,
    origin: Arc<str>,
    origin_age: Option<HeaderValue>,
    request_time: std::time::SystemTime,
    response_time: std::time::SystemTime,
    received_at: Instant,
}

impl Answer {
    fn of(rt: &Runtime, job: &FillJob, resp: &OriginResponse) -> Answer {
        let mut headers = stored_headers(resp.response.headers());
        if rt.config.cache.store_set_cookie && job.shared {
            // Shared copies never carry one client's cookies.
            headers.remove(header::SET_COOKIE);
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let kind = job.kind.refine(content_type);
        let vary = vary_names(&mut headers);
        Answer {
            status: resp.response.status(),
            kind,
            content_length: resp.response.content_length(),
            vary,
            headers,
            origin: resp.origin.name.clone(),
            origin_age: resp.response.headers().get(header::AGE).cloned(),
            request_time: resp.request_time,
            response_time: resp.response_time,
            received_at: resp.received_at,
        }
    }

    /// Manifests are read whole first: their timing and encodings come from the body. Other
    /// text the edge compresses (JSON, XML, text/*) is read whole too when its length is known
    /// and small, so its encodings are made once, with the stored object.
    fn read_whole(&self, rt: &Runtime) -> bool {
        if self.status != StatusCode::OK {
            return false;
        }
        let small = |l: u64| l <= MANIFEST_BUFFER_MAX;
        match self.kind {
            ContentKind::Manifest => self.content_length.is_none_or(small),
            ContentKind::Other => self.content_length.is_some_and(|l| {
                small(l)
                    && compress::compressible(&rt.config.compression, &self.headers, l as usize)
            }),
            ContentKind::Segment => false,
        }
    }

    /// RFC 9111 storability and freshness of this answer.
    fn decision(
        &self,
        job: &FillJob,
        cfg: &crate::config::CacheConfig,
        media: Option<MediaTiming>,
    ) -> Decision {
        policy::decide(
            &Exchange {
                request_headers: &job.request_headers,
                status: self.status,
                headers: &with_origin_age(&self.headers, self.origin_age.as_ref()),
                kind: self.kind,
                request_time: self.request_time,
                response_time: self.response_time,
                received_at: self.received_at,
                media,
            },
            cfg,
        )
    }
}

/// A body read whole before anyone saw a byte, and what it says about itself.
struct Manifest {
    body: Bytes,
    info: Option<ManifestInfo>,
}

/// Reads a manifest (or small text) whole, counted in the in-flight budget.
async fn read_whole(
    proxy: &Proxy,
    job: &FillJob,
    resp: &mut OriginResponse,
    answer: &Answer,
) -> Result<Manifest, Failed> {
    let mut buf = BytesMut::with_capacity(answer.content_length.unwrap_or(8192) as usize);
    let mut lease = proxy.fills.budget().lease();
    let mut leased = 0;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                buf.extend_from_slice(&c);
                let grown = buf.capacity().saturating_sub(leased);
                leased += grown;
                if !lease.grow(grown as u64) {
                    let error = EdgeError::Overloaded {
                        key: job.key.to_string(),
                    };
                    return Err(Failed::new(error, FillFailure::Memory));
                }
                if buf.len() as u64 > MANIFEST_BUFFER_MAX {
                    let error = EdgeError::OriginProtocol {
                        origin: answer.origin.to_string(),
                        detail: "manifest larger than 4 MiB".into(),
                    };
                    return Err(Failed::new(error, FillFailure::Body));
                }
            }
            Ok(None) => break,
            Err(e) => return Err(Failed::new(e, FillFailure::Body)),
        }
    }
    check_length(answer, buf.len() as u64)?;
    let body = buf.freeze();
    let info = media::parse(&body);
    Ok(Manifest { body, info })
}

/// A body that ended before its announced length is an error, never a clean end.
fn check_length(answer: &Answer, received: u64) -> Result<(), Failed> {
    match answer.content_length {
        Some(expected) if expected != received => Err(Failed::new(
            EdgeError::OriginProtocol {
                origin: answer.origin.to_string(),
                detail: format!("short body: {received} of {expected} bytes"),
            },
            FillFailure::ShortBody,
        )),
        _ => Ok(()),
    }
}

/// What the fill does with the answer: whether it is stored, whether it may be shared, and
/// the edge's encodings of a body read whole.
struct Plan {
    decision: Decision,
    storable: bool,
    shareable: bool,
    oversize: bool,
    summary: Option<MediaSummary>,
    encodings: Option<Arc<Encodings>>,
}

impl Plan {
    /// The response head every reader answers with.
    fn head(&self, job: &FillJob, answer: &Answer) -> FillHead {
        FillHead {
            status: answer.status,
            headers: answer.headers.clone(),
            kind: answer.kind,
            content_length: answer.content_length,
            shareable: self.shareable,
            freshness: self
                .decision
                .store
                .as_ref()
                .ok()
                .copied()
                .filter(|_| self.storable),
            initial_age: self
                .decision
                .store
                .as_ref()
                .map_or(Duration::ZERO, |f| f.initial_age),
            vary: answer.vary.clone().map(|n| {
                let v = variant_of(&job.request_headers, &n);
                (n, v)
            }),
            origin: answer.origin.clone(),
            revalidated: false,
            from_store: false,
            encodings: self.encodings.clone(),
        }
    }

    /// The object to store, if the answer is storable.
    fn object(&self, answer: Answer, body: Bytes) -> Option<Arc<CachedObject>> {
        let freshness = *self.decision.store.as_ref().ok()?;
        self.storable.then(|| {
            Arc::new(CachedObject {
                status: answer.status,
                headers: answer.headers,
                body,
                kind: answer.kind,
                freshness,
                vary: answer.vary,
                origin: answer.origin,
                encodings: self.encodings.clone(),
                media: self.summary,
            })
        })
    }
}

/// Decides storability and sharing; marks keys whose answers must not be shared as
/// hit-for-miss; makes the encodings of a manifest (announcing `Vary: Accept-Encoding`).
async fn decide(
    proxy: &Proxy,
    rt: &Runtime,
    job: &FillJob,
    answer: &mut Answer,
    manifest: Option<&Manifest>,
) -> Plan {
    let cfg = &rt.config.cache;
    let info = manifest.and_then(|m| m.info.as_ref());
    let summary = info.map(|i| MediaSummary {
        live: i.live,
        target_duration: i.target_duration,
        part_target: i.part_target,
    });
    let decision = answer.decision(
        job,
        cfg,
        summary.as_ref().map(|s| media_timing(s, info, cfg)),
    );
    let refusal = decision.store.as_ref().err().copied();
    let oversize = answer
        .content_length
        .is_some_and(|l| l > proxy.store.max_object_size);
    let storable = decision.store.is_ok() && !oversize;
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
    let encodings = match manifest {
        Some(m)
            if (answer.kind == ContentKind::Manifest || storable)
                && compress::compressible(
                    &rt.config.compression,
                    &answer.headers,
                    m.body.len(),
                ) =>
        {
            if !varies_on(&answer.headers, &header::ACCEPT_ENCODING) {
                answer
                    .headers
                    .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            }
            Some(Arc::new(encode_all(&rt.config.compression, &m.body).await))
        }
        _ => None,
    };
    if let Some(m) = manifest {
        answer.content_length = Some(m.body.len() as u64);
    }
    Plan {
        shareable: refusal.is_none_or(|r| !r.forbids_sharing()),
        decision,
        storable,
        oversize,
        summary,
        encodings,
    }
}

/// A manifest read whole: stored (and, once it shows ENDLIST, under its plain key too, so
/// later LL-HLS directives go there), and its readers answered.
async fn store_manifest(
    proxy: &Proxy,
    job: &FillJob,
    answer: Answer,
    plan: Plan,
    manifest: Manifest,
) -> Ending {
    if let Some(obj) = plan.object(answer, manifest.body.clone()) {
        if plan.summary.is_some_and(|s| !s.live)
            && let Some(plain) = job.key.without_directives()
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
    Ending::FinishWith(manifest.body)
}

/// Streams every chunk to the readers as it arrives; stores the whole body when it is
/// complete and still storable. An object that proves larger than the size limit streams on
/// without being kept, and its key goes hit-for-miss.
async fn stream_body(
    proxy: &Proxy,
    rt: &Runtime,
    writer: &mut FillWriter,
    job: &FillJob,
    resp: &mut OriginResponse,
    answer: Answer,
    plan: Plan,
) -> Result<Ending, Failed> {
    let mut storable = plan.storable;
    if plan.oversize {
        too_large(proxy, rt, writer, job).await;
    }
    let mut received: u64 = 0;
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                tracing::info!(key = %job.key, origin = %answer.origin, error = %e, received, "origin body failed");
                crate::metrics::origin_error(&answer.origin, e.cache_status_detail());
                return Err(Failed::new(e, FillFailure::Body));
            }
        };
        received += chunk.len() as u64;
        if storable && received > proxy.store.max_object_size {
            storable = false;
            too_large(proxy, rt, writer, job).await;
        }
        if answer.content_length == Some(received) && storable && !writer.is_streaming() {
            // Stored before its last bytes go out: a client that has them all (and asks again
            // at once) finds the object.
            let body = writer.body_with(&chunk);
            let ending = store(proxy, job, &plan, answer, body).await;
            let _ = writer.push(chunk).await;
            return Ok(ending);
        }
        if writer.push(chunk).await == Push::Stop {
            let error = EdgeError::Internal("no readers left".into());
            return Err(Failed::new(error, FillFailure::Abandoned));
        }
    }
    check_length(&answer, received)?;
    if !storable || writer.is_streaming() {
        return Ok(Ending::Finish);
    }
    let body = writer.body();
    Ok(store(proxy, job, &plan, answer, body).await)
}

/// Stores a complete body when the plan allows; readers still on their way then read the
/// stored copy and the fill's own chunks go.
async fn store(proxy: &Proxy, job: &FillJob, plan: &Plan, answer: Answer, body: Bytes) -> Ending {
    let Some(obj) = plan.object(answer, body.clone()) else {
        return Ending::Finish;
    };
    proxy
        .store
        .insert(&job.key, &job.request_headers, obj)
        .await;
    Ending::FinishWith(body)
}

/// An object over the size limit: the fill streams without keeping it, and requests for the
/// key go straight to the origin for a while instead of queueing behind each other.
async fn too_large(proxy: &Proxy, rt: &Runtime, writer: &mut FillWriter, job: &FillJob) {
    writer.stream_only();
    if job.shared {
        let ttl = rt.config.cache.hit_for_miss_ttl;
        proxy.store.mark_hit_for_miss(&job.key, ttl).await;
    }
}

/// A manifest's own timing: live HLS half a (part) target duration, live DASH half the update
/// period, VOD the long manifest TTL; live ones are never served older than one target.
fn media_timing(
    summary: &MediaSummary,
    info: Option<&ManifestInfo>,
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

/// Brotli and gzip variants of a body, each kept only if it is smaller.
async fn encode_all(cfg: &compress::CompressConfig, body: &Bytes) -> Encodings {
    let br = compress::encode(cfg, body, Encoding::Brotli).await.ok();
    let gzip = compress::encode(cfg, body, Encoding::Gzip).await.ok();
    let keep = |b: Option<Bytes>| b.filter(|b| b.len() < body.len());
    Encodings {
        br: keep(br),
        gzip: keep(gzip),
    }
}
