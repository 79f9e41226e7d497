//! What the origin answered, as the edge keeps it, and what the fill does with it: read a
//! manifest whole, decide storability and sharing, make the edge's encodings.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use super::job::{Failed, FillFailure, FillJob};
use crate::cache::fill::FillHead;
use crate::cache::key::variant_of;
use crate::cache::policy::{self, Decision, Exchange, MediaTiming, Refusal};
use crate::cache::{CachedObject, ContentKind, Encodings, MediaSummary};
use crate::compress::{self, Encoding};
use crate::error::EdgeError;
use crate::media::{self, ManifestInfo};
use crate::metrics::Side;
use crate::proxy::context::{Proxy, Runtime};
use crate::proxy::headers::{stored_headers, varies_on, vary_names, with_origin_age};
use crate::upstream::OriginResponse;

/// Manifests up to this size are read whole before their head is published, so their timing
/// and encodings are known to every reader (playlists and MPDs are small; bigger ones stream).
const MANIFEST_BUFFER_MAX: u64 = 4 << 20;

/// The origin's answer as the edge keeps it.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    /// As stored: hop-by-hop and framing removed (and shared copies without Set-Cookie).
    pub(super) headers: HeaderMap,
    pub(super) kind: ContentKind,
    pub(super) content_length: Option<u64>,
    pub(super) vary: Option<Arc<[HeaderName]>>,
    pub(super) origin: Arc<str>,
    pub(super) origin_age: Option<HeaderValue>,
    pub(super) request_time: std::time::SystemTime,
    pub(super) response_time: std::time::SystemTime,
    pub(super) received_at: Instant,
    /// From a peer: how long this node may keep its own copy (`cluster.secondary_ttl`).
    pub(super) secondary_ttl: Option<std::time::Duration>,
}

impl Answer {
    pub(super) fn of(rt: &Runtime, job: &FillJob, resp: &OriginResponse) -> Answer {
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
            secondary_ttl: (resp.origin.side == Side::Peer)
                .then(|| rt.cluster.as_ref().map(|c| c.secondary_ttl()))
                .flatten(),
        }
    }

    /// Manifests are read whole first: their timing and encodings come from the body. Other
    /// text the edge compresses (JSON, XML, text/*) is read whole too when its length is known
    /// and small, so its encodings are made once, with the stored object.
    pub(super) fn read_whole(&self, rt: &Runtime) -> bool {
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
    pub(super) fn decision(
        &self,
        job: &FillJob,
        cfg: &crate::config::CacheConfig,
        media: Option<MediaTiming>,
    ) -> Decision {
        let mut decision = policy::decide(
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
        );
        if let (Some(ttl), Ok(f)) = (self.secondary_ttl, &mut decision.store) {
            // A forwarding node's copy is short-lived, fresh or stale: the owner keeps the
            // object, the fleet holds one long-lived copy of it.
            if ttl.is_zero() {
                decision.store = Err(policy::Refusal::NoFreshness);
            } else {
                f.limit_age(f.initial_age + ttl);
            }
        }
        decision
    }
}

/// A body read whole before anyone saw a byte, and what it says about itself.
pub(super) struct Manifest {
    pub(super) body: Bytes,
    pub(super) info: Option<ManifestInfo>,
}

/// Reads a manifest (or small text) whole, counted in the in-flight budget.
pub(super) async fn read_whole(
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
pub(super) fn check_length(answer: &Answer, received: u64) -> Result<(), Failed> {
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
pub(super) struct Plan {
    pub(super) decision: Decision,
    pub(super) storable: bool,
    pub(super) shareable: bool,
    pub(super) oversize: bool,
    pub(super) summary: Option<MediaSummary>,
    pub(super) encodings: Option<Arc<Encodings>>,
}

impl Plan {
    /// The response head every reader answers with.
    pub(super) fn head(&self, job: &FillJob, answer: &Answer) -> FillHead {
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
    pub(super) fn object(&self, answer: Answer, body: Bytes) -> Option<Arc<CachedObject>> {
        let freshness = *self.decision.store.as_ref().ok()?;
        self.storable.then(|| {
            Arc::new(CachedObject {
                hit_head: Default::default(),
                status: answer.status,
                headers: answer.headers,
                body: crate::cache::Body::Memory(body),
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
pub(super) async fn decide(
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

/// A manifest's own timing: live HLS half a (part) target duration, live DASH half the update
/// period, VOD the long manifest TTL; live ones are never served older than one target.
pub(super) fn media_timing(
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
pub(super) async fn encode_all(cfg: &compress::CompressConfig, body: &Bytes) -> Encodings {
    let br = compress::encode(cfg, body, Encoding::Brotli).await.ok();
    let gzip = compress::encode(cfg, body, Encoding::Gzip).await.ok();
    let keep = |b: Option<Bytes>| b.filter(|b| b.len() < body.len());
    Encodings {
        br: keep(br),
        gzip: keep(gzip),
    }
}
