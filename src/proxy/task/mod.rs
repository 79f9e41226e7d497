//! The detached fill task: fetch an object once from its origin, publish the response head to
//! every reader, stream the body to them as it arrives, and store it only when it is complete
//! and cacheable. Each step is a function; the task is their sequence in [`steps`].

mod job;
mod plan;

use std::sync::Arc;

use bytes::Bytes;
use http::header;
use http::{Method, StatusCode};
use tokio::time::Instant;

use job::{Ending, Failed};
pub use job::{FillFailure, FillJob};
use plan::{Answer, Manifest, Plan, check_length, decide, media_timing, read_whole};

use super::context::{Proxy, Runtime};
use super::headers::{merge_304, with_origin_age};
use crate::cache::CachedObject;
use crate::cache::fill::{FillHead, FillWriter, Push};
use crate::cache::policy::{self, Exchange};
use crate::cluster::mark;
use crate::error::EdgeError;
use crate::media::{Format, ManifestInfo};
use crate::upstream::{OriginRequest, OriginResponse};

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
    if let Some(obj) = stored_meanwhile(proxy, job).await
        && let Some(body) = obj.body.in_memory()
    {
        writer.set_head(FillHead::from_object(&obj, true, false));
        return Ok(Ending::FinishWith(body.clone()));
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
        return refresh(proxy, rt, writer, job, resp, stale).await;
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
    let mut request = OriginRequest {
        key: job.key.clone(),
        method: Method::GET,
        headers,
        first_byte_timeout: job.first_byte_timeout,
        body: None,
        retry: true,
    };
    if let Some(resp) = from_owner(rt, job, &mut request).await {
        return Ok((resp, conditional));
    }
    match rt.upstream.fetch(&request).await {
        Ok(resp) => Ok((resp, conditional)),
        Err(e) => {
            tracing::debug!(key = %job.key, error = %e, "fill failed before headers");
            let failure = FillFailure::Origin(e.cache_status_detail());
            Err(Failed::new(e, failure))
        }
    }
}

/// In a fleet, a key another node owns is asked of that node (marked, so it never forwards
/// it again) instead of the origin. When the owner fails before any byte, `None`: the fill
/// goes to the origin itself.
async fn from_owner(
    rt: &Runtime,
    job: &FillJob,
    request: &mut OriginRequest,
) -> Option<OriginResponse> {
    let owner = job.owner.as_ref()?;
    let cluster = rt.cluster.as_ref()?;
    let target = owner.target_for(&job.key).ok()?;
    let mark = cluster.marker().mark(cluster.node(), &Method::GET, &target);
    request.headers.insert(mark::HEADER, mark);
    crate::metrics::peer_forwarded();
    let answer = rt.upstream.fetch_peer(owner, request).await;
    request.headers.remove(mark::HEADER);
    match answer {
        Ok(resp) => Some(resp),
        Err(e) => {
            tracing::info!(key = %job.key, peer = %owner.name, error = %e, "owner peer failed; asking the origin");
            crate::metrics::peer_fallback(&owner.name);
            None
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
) -> Result<Ending, Failed> {
    // A stale copy on disk is read for the readers first: a damaged file fails the fill
    // before any reader has a head.
    let Some(body) = proxy.store.body_bytes(&stale.body).await else {
        let error = EdgeError::Internal("the stored copy could not be read".into());
        return Err(Failed::new(error, FillFailure::Body));
    };
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
    Ok(Ending::FinishWith(body))
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
        mark_sliced(proxy, job, &answer, &plan).await;
    }
    let mut received: u64 = 0;
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                tracing::info!(key = %job.key, origin = %answer.origin, error = %e, received, "origin body failed");
                crate::metrics::origin_error(
                    resp.origin.side,
                    &answer.origin,
                    e.cache_status_detail(),
                );
                return Err(Failed::new(e, FillFailure::Body));
            }
        };
        received += chunk.len() as u64;
        if storable && received > proxy.store.max_object_size {
            storable = false;
            too_large(proxy, rt, writer, job).await;
        }
        if answer.content_length == Some(received) {
            // The last bytes: a client that has them all may ask again at once. It must find
            // the stored object, or start a fetch of its own — not join this one.
            let ending = if storable && !writer.is_streaming() {
                let body = writer.body_with(&chunk);
                store(proxy, job, &plan, answer, body).await
            } else {
                Ending::Finish
            };
            writer.leave_table();
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

/// An object over the size limit, of known length, from an origin that takes ranges
/// (`Accept-Ranges: bytes`): later requests for it are answered from slices (see
/// `proxy::slice`), starting from this head.
async fn mark_sliced(proxy: &Proxy, job: &FillJob, answer: &Answer, plan: &Plan) {
    let (Some(total), Ok(freshness)) = (answer.content_length, &plan.decision.store) else {
        return;
    };
    let ranges = answer
        .headers
        .get(header::ACCEPT_RANGES)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("bytes"));
    if !job.shared
        || !ranges
        || answer.status != StatusCode::OK
        || answer.vary.is_some()
        || answer.kind == crate::cache::ContentKind::Manifest
        || job.key.without_directives().is_some()
    {
        return;
    }
    use crate::cache::slice;
    let marker = slice::marker(
        &answer.headers,
        total,
        answer.kind,
        *freshness,
        answer.origin.clone(),
    );
    proxy
        .store
        .replace(slice::marker_slot(&job.key), marker)
        .await;
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
