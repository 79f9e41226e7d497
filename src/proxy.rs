//! The request path, phase by phase: admit → key → lookup → fill → respond → log.
//!
//! Every phase is a function whose doc says when it runs. The handler is infallible: each
//! error becomes a response in `respond_error`, and every request writes one access-log line
//! and its metrics when its body ends (or is dropped).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::cache::conditional::{self, Precondition, RangeRequest};
use crate::cache::fill::{FillHead, FillReader, FillTable, FillWriter, HeadOutcome, Joined, Push};
use crate::cache::key::variant_of;
use crate::cache::policy::{self, Exchange, Refusal};
use crate::cache::{CacheKey, CachedObject, ContentKind, Lookup, Store, StoreKey};
use crate::config::Config;
use crate::error::EdgeError;
use crate::server::{BoxError, ConnInfo, Handler, ResponseBody};
use crate::upstream::{OriginRequest, Upstream};

/// The shared state of the request path.
pub struct Proxy {
    pub config: Arc<Config>,
    pub store: Store,
    pub fills: Arc<FillTable>,
    pub upstream: Arc<Upstream>,
}

/// The hyper-facing handler.
#[derive(Clone)]
pub struct ProxyHandler(pub Arc<Proxy>);

impl Handler for ProxyHandler {
    fn call(
        &self,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static {
        let proxy = self.0.clone();
        async move { handle(proxy, req, conn).await }
    }
}

/// How a request was answered, for metrics, logs and `Cache-Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheResult {
    /// Fresh from the cache.
    Hit,
    /// Fetched from the origin by this request.
    Miss,
    /// Joined another request's origin fetch.
    Collapsed,
    /// A stale copy, revalidated with the origin (304) or served stale by policy.
    Stale,
    /// Not cacheable: went to the origin without collapsing.
    Pass,
    /// Answered by the edge itself (errors, refusals).
    Synthetic,
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Collapsed => "collapsed",
            CacheResult::Stale => "stale",
            CacheResult::Pass => "pass",
            CacheResult::Synthetic => "synthetic",
        }
    }
}

/// What the access log and metrics record about one request.
struct Outcome {
    method: Method,
    target: String,
    peer: std::net::SocketAddr,
    protocol: &'static str,
    started: Instant,
    cache: CacheResult,
    kind: ContentKind,
    origin: Option<Arc<str>>,
    error: Option<String>,
}

/// Runs every phase for one request; never fails.
pub async fn handle(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> Response<ResponseBody> {
    let (parts, _body) = req.into_parts();
    let mut out = Outcome {
        method: parts.method.clone(),
        target: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        peer: conn.peer,
        protocol: conn.protocol,
        started: Instant::now(),
        cache: CacheResult::Synthetic,
        kind: ContentKind::Other,
        origin: None,
        error: None,
    };
    let response = match serve(&proxy, &parts, &mut out).await {
        Ok(r) => r,
        Err(e) => respond_error(&e, &mut out),
    };
    log(response, out)
}

/// The phases in order.
async fn serve(
    proxy: &Arc<Proxy>,
    parts: &http::request::Parts,
    out: &mut Outcome,
) -> Result<Response<ResponseBody>, EdgeError> {
    admit(proxy, parts)?;
    let key = key(parts)?;
    out.kind = ContentKind::from_path(key.path());
    lookup(proxy, parts, key, out, 0).await
}

/// Phase `admit`: runs first. GET and HEAD for a served host pass; other methods get 405.
fn admit(proxy: &Proxy, parts: &http::request::Parts) -> Result<(), EdgeError> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return Err(EdgeError::MethodNotAllowed(parts.method.clone()));
    }
    let hosts = &proxy.config.server.hosts;
    if !hosts.is_empty() {
        let host = request_host(parts).unwrap_or_default();
        let name = host.rsplit_once(':').map_or(host.as_str(), |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host.as_str()
            }
        });
        if !hosts.iter().any(|h| h == name) {
            return Err(EdgeError::UnknownHost(host));
        }
    }
    Ok(())
}

fn request_host(parts: &http::request::Parts) -> Option<String> {
    parts
        .uri
        .authority()
        .map(|a| a.as_str().to_ascii_lowercase())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.to_ascii_lowercase())
        })
}

/// Phase `key`: the normalised path and query. Dot segments are resolved so `/a/../b` and
/// `/b` share one object; paths that climb above the root are refused.
fn key(parts: &http::request::Parts) -> Result<CacheKey, EdgeError> {
    let path = parts.uri.path();
    if !path.starts_with('/') {
        return Err(EdgeError::BadRequest(
            "request target must be a path".into(),
        ));
    }
    let path = remove_dot_segments(path)
        .ok_or_else(|| EdgeError::BadRequest("path climbs above the root".into()))?;
    Ok(CacheKey::new(&path, parts.uri.query()))
}

/// RFC 3986 §5.2.4 on an absolute path; `None` if it would climb above `/`.
fn remove_dot_segments(path: &str) -> Option<String> {
    if !path.contains("/.") {
        return Some(path.to_owned());
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop()?;
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    Some(format!("/{}", out.join("/")))
}

/// Phase `lookup`: runs after `key`. A fresh object is answered at once; a stale one is
/// revalidated through the fill (or served while revalidating when its headers allow);
/// a missing one is filled. Hit-for-miss keys and requests with credentials skip collapsing.
async fn lookup(
    proxy: &Arc<Proxy>,
    parts: &http::request::Parts,
    key: CacheKey,
    out: &mut Outcome,
    depth: u8,
) -> Result<Response<ResponseBody>, EdgeError> {
    let now = Instant::now();
    let private = parts.headers.contains_key(header::AUTHORIZATION);
    match proxy.store.lookup(&key, &parts.headers).await {
        Lookup::Found(slot, obj) => {
            out.kind = obj.kind;
            out.origin = Some(obj.origin.clone());
            if obj.freshness.is_fresh(now) {
                out.cache = CacheResult::Hit;
                let status = CacheStatus::hit(obj.freshness.ttl_secs(now));
                return respond_stored(&obj, parts, status, now);
            }
            if obj.freshness.may_serve_stale_while_revalidate(now) {
                revalidate_in_background(proxy, parts, &key, &slot, obj.clone());
                out.cache = CacheResult::Stale;
                let status = CacheStatus::stale_while_revalidate(obj.freshness.ttl_secs(now));
                return respond_stored(&obj, parts, status, now);
            }
            let mode = if private {
                Mode::Private
            } else {
                Mode::Collapse
            };
            fill(
                proxy,
                parts,
                key,
                slot,
                Some(obj),
                mode,
                "stale",
                out,
                depth,
            )
            .await
        }
        Lookup::Missing(slot, vary_miss) => {
            let mode = if private {
                Mode::Private
            } else {
                Mode::Collapse
            };
            let fwd = if vary_miss { "vary-miss" } else { "uri-miss" };
            fill(proxy, parts, key, slot, None, mode, fwd, out, depth).await
        }
        Lookup::HitForMiss(slot) => {
            fill(
                proxy,
                parts,
                key,
                slot,
                None,
                Mode::Private,
                "miss",
                out,
                depth,
            )
            .await
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Join or lead the shared fill for the slot.
    Collapse,
    /// A fetch of this request's own (hit-for-miss, credentials, unshareable answer).
    Private,
}

/// What the detached fill task needs to fetch and store one object.
struct FillJob {
    key: CacheKey,
    slot: StoreKey,
    kind: ContentKind,
    /// The leader's request headers (for `Vary` and storability).
    request_headers: HeaderMap,
    /// Headers to send to the origin.
    origin_headers: HeaderMap,
    client_host: Option<HeaderValue>,
    stale: Option<Arc<CachedObject>>,
    shared: bool,
}

/// Phase `fill`: runs on a miss or a stale object. Joins the in-flight fetch for the slot or
/// starts one (a detached task), then answers from the fill's head and streamed body.
#[allow(clippy::too_many_arguments)]
async fn fill(
    proxy: &Arc<Proxy>,
    parts: &http::request::Parts,
    key: CacheKey,
    slot: StoreKey,
    stale: Option<Arc<CachedObject>>,
    mode: Mode,
    fwd: &'static str,
    out: &mut Outcome,
    depth: u8,
) -> Result<Response<ResponseBody>, EdgeError> {
    let job = || FillJob {
        key: key.clone(),
        slot: slot.clone(),
        kind: ContentKind::from_path(key.path()),
        request_headers: parts.headers.clone(),
        origin_headers: origin_request_headers(&parts.headers, mode == Mode::Private),
        client_host: parts.headers.get(header::HOST).cloned(),
        stale: stale.clone(),
        shared: mode == Mode::Collapse,
    };
    let (mut reader, collapsed) = match mode {
        Mode::Collapse => match proxy.fills.join(&slot, proxy.config.cache.max_waiters)? {
            Joined::Leader(reader, writer) => {
                spawn_fill(proxy.clone(), writer, job());
                (reader, false)
            }
            Joined::Follower(reader) => {
                crate::metrics::collapsed();
                (reader, true)
            }
        },
        Mode::Private => {
            let (reader, writer) = FillTable::private(&slot);
            spawn_fill(proxy.clone(), writer, job());
            (reader, false)
        }
    };
    out.cache = match (mode, collapsed) {
        (Mode::Private, _) => CacheResult::Pass,
        (_, true) => CacheResult::Collapsed,
        _ => CacheResult::Miss,
    };
    let head = match reader.head().await {
        Ok(HeadOutcome::Ready(head)) => head,
        Ok(HeadOutcome::NotShared) if depth == 0 => {
            // The origin's answer was for the leader only: ask for our own.
            drop(reader);
            return Box::pin(fill(
                proxy,
                parts,
                key,
                slot,
                stale,
                Mode::Private,
                fwd,
                out,
                depth + 1,
            ))
            .await;
        }
        Ok(HeadOutcome::NotShared) => {
            return Err(EdgeError::Internal("unshareable answer twice".into()));
        }
        Err(e) => {
            // stale-if-error, and any stale copy when no origin is usable at all.
            if let Some(obj) = &stale {
                let now = Instant::now();
                let no_origin = matches!(e, EdgeError::NoHealthyOrigin { .. });
                if obj.freshness.may_serve_stale_on_error(now)
                    || (no_origin && !obj.freshness.must_revalidate)
                {
                    out.cache = CacheResult::Stale;
                    out.error = Some(e.to_string());
                    let status = CacheStatus::stale_on_error(obj.freshness.ttl_secs(now), &e);
                    return respond_stored(obj, parts, status, now);
                }
            }
            return Err(e);
        }
    };
    out.origin = Some(head.origin.clone());
    out.kind = head.kind;
    if collapsed
        && let Some((names, leader_variant)) = &head.vary
        && variant_of(&parts.headers, names) != *leader_variant
        && depth == 0
    {
        // Another variant than ours: look up (and fill) our own variant.
        drop(reader);
        return Box::pin(lookup(proxy, parts, key, out, depth + 1)).await;
    }
    if head.from_store {
        out.cache = CacheResult::Hit;
    } else if head.revalidated {
        out.cache = CacheResult::Stale;
    }
    respond_fill(&head, reader, parts, collapsed, fwd)
}

/// Starts a background revalidation (stale-while-revalidate) unless one is in flight.
fn revalidate_in_background(
    proxy: &Arc<Proxy>,
    parts: &http::request::Parts,
    key: &CacheKey,
    slot: &StoreKey,
    stale: Arc<CachedObject>,
) {
    if let Ok(Joined::Leader(reader, writer)) = proxy.fills.join(slot, usize::MAX) {
        drop(reader);
        let job = FillJob {
            key: key.clone(),
            slot: slot.clone(),
            kind: stale.kind,
            request_headers: parts.headers.clone(),
            origin_headers: origin_request_headers(&parts.headers, false),
            client_host: parts.headers.get(header::HOST).cloned(),
            stale: Some(stale),
            shared: true,
        };
        spawn_fill(proxy.clone(), writer, job);
    }
}

/// Request headers forwarded to the origin: end-to-end only, without the client's
/// preconditions, range and cache directives (a fill fetches the whole, current object), with
/// `Accept-Encoding` reduced to the one coding the variant stands for. Credentials and cookies
/// go only with fetches that are not shared.
fn origin_request_headers(client: &HeaderMap, private: bool) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(client.len());
    let connection_listed = connection_tokens(client);
    for (name, value) in client {
        if is_hop_by_hop(name)
            || connection_listed.iter().any(|n| n == name.as_str())
            || matches!(
                *name,
                header::HOST
                    | header::RANGE
                    | header::IF_RANGE
                    | header::IF_MATCH
                    | header::IF_NONE_MATCH
                    | header::IF_MODIFIED_SINCE
                    | header::IF_UNMODIFIED_SINCE
                    | header::CACHE_CONTROL
                    | header::PRAGMA
                    | header::CONTENT_LENGTH
                    | header::EXPECT
                    | header::ACCEPT_ENCODING
                    | header::VIA
            )
        {
            continue;
        }
        if !private && (name == header::AUTHORIZATION || name == header::COOKIE) {
            continue;
        }
        h.append(name.clone(), value.clone());
    }
    let coding = crate::compress::preferred_encoding(client);
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static(coding.as_str()),
    );
    h.append(header::VIA, HeaderValue::from_static(VIA));
    h
}

const VIA: &str = "1.1 streamedge";

fn connection_tokens(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}

/// The origin's response headers as stored: hop-by-hop, framing and Age removed.
fn stored_headers(origin: &HeaderMap) -> HeaderMap {
    let listed = connection_tokens(origin);
    let mut h = HeaderMap::with_capacity(origin.len() + 1);
    for (name, value) in origin {
        if is_hop_by_hop(name)
            || listed.iter().any(|n| n == name.as_str())
            || *name == header::CONTENT_LENGTH
            || *name == header::AGE
        {
            continue;
        }
        h.append(name.clone(), value.clone());
    }
    if !h.contains_key(header::DATE) {
        // RFC 9110 §6.6.1: a recipient with a clock adds Date when it caches or forwards.
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
            h.insert(header::DATE, v);
        }
    }
    h
}

/// `Vary` names of a response; a body the origin encoded always varies on Accept-Encoding.
fn vary_names(headers: &mut HeaderMap) -> Option<Arc<[HeaderName]>> {
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

fn spawn_fill(proxy: Arc<Proxy>, writer: FillWriter, job: FillJob) {
    crate::metrics::fill_started();
    tokio::spawn(async move {
        let failure = run_fill(&proxy, writer, job).await;
        crate::metrics::fill_ended(failure);
    });
}

/// The detached fill task: fetch once, publish the head, stream chunks to the readers, and
/// store the object only when it is complete and cacheable. Returns a failure reason.
async fn run_fill(proxy: &Proxy, mut writer: FillWriter, job: FillJob) -> Option<&'static str> {
    let cfg = &proxy.config.cache;
    // Close the lookup race: a fill that completed between our lookup and our join has
    // already stored the object.
    if job.shared
        && let Some(obj) = proxy.store.get(&job.slot).await
        && obj.freshness.is_fresh(Instant::now())
    {
        writer.set_head(head_from_object(&obj, true, false));
        writer.push(obj.body.clone()).await;
        writer.finish();
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
        client_host: job.client_host.clone(),
        first_byte_timeout: proxy.config.fetch.first_byte_timeout,
    };
    let mut resp = match proxy.upstream.fetch(&request).await {
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

    // Revalidation answered 304: refresh the stored object, answer from its body.
    if status == StatusCode::NOT_MODIFIED
        && let Some(stale) = &job.stale
    {
        let merged = merge_304(&stale.headers, resp.response.headers());
        let decision = policy::decide(
            &Exchange {
                request_headers: &job.request_headers,
                status: stale.status,
                headers: &merged,
                kind: stale.kind,
                request_time: resp.request_time,
                response_time: resp.response_time,
                received_at: resp.received_at,
                media_lifetime: None,
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
        writer.push(obj.body.clone()).await;
        writer.finish();
        return None;
    }

    let mut headers = stored_headers(resp.response.headers());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let kind = job.kind.refine(content_type.as_deref());
    let vary = vary_names(&mut headers);
    let decision = policy::decide(
        &Exchange {
            request_headers: &job.request_headers,
            status,
            headers: &headers,
            kind,
            request_time: resp.request_time,
            response_time: resp.response_time,
            received_at: resp.received_at,
            media_lifetime: None,
        },
        cfg,
    );
    let content_length = resp.response.content_length();
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
    let initial_age = decision
        .store
        .as_ref()
        .map(|f| f.initial_age)
        .unwrap_or(Duration::ZERO);
    writer.set_head(FillHead {
        status,
        headers: headers.clone(),
        kind,
        content_length,
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
    });
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
                if writer.push(chunk).await == Push::NoReaders {
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
        writer.fail(EdgeError::OriginProtocol {
            origin: origin_name.to_string(),
            detail: format!("short body: {received} of {expected} bytes"),
        });
        return Some("short-body");
    }
    resp.finished(true);
    if storable
        && !writer.is_streaming()
        && let Ok(freshness) = decision.store
    {
        let obj = Arc::new(CachedObject {
            status,
            headers,
            body: writer.body(),
            kind,
            freshness,
            vary,
            origin: origin_name,
        });
        proxy
            .store
            .insert(&job.key, &job.request_headers, obj)
            .await;
    }
    writer.finish();
    None
}

/// RFC 9111 §4.3.4: the stored headers updated with those of a 304.
fn merge_304(stored: &HeaderMap, fresh: &HeaderMap) -> HeaderMap {
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

fn head_from_object(obj: &CachedObject, from_store: bool, revalidated: bool) -> FillHead {
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
    }
}

/// RFC 9211 `Cache-Status` of one response.
struct CacheStatus {
    hit: bool,
    fwd: Option<&'static str>,
    fwd_status: Option<u16>,
    stored: bool,
    collapsed: bool,
    ttl: Option<i64>,
    detail: Option<&'static str>,
}

impl CacheStatus {
    fn hit(ttl: i64) -> CacheStatus {
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

    fn stale_while_revalidate(ttl: i64) -> CacheStatus {
        CacheStatus {
            detail: Some("stale-while-revalidate"),
            ..CacheStatus::hit(ttl)
        }
    }

    fn stale_on_error(ttl: i64, e: &EdgeError) -> CacheStatus {
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

    fn value(&self) -> HeaderValue {
        let mut s = String::with_capacity(64);
        s.push_str("streamedge");
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(f) = self.fwd {
            s.push_str("; fwd=");
            s.push_str(f);
        }
        if let Some(st) = self.fwd_status {
            s.push_str("; fwd-status=");
            s.push_str(&st.to_string());
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(t) = self.ttl {
            s.push_str("; ttl=");
            s.push_str(&t.to_string());
        }
        if let Some(d) = self.detail {
            s.push_str("; detail=");
            s.push_str(d);
        }
        HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("streamedge"))
    }
}

fn empty() -> ResponseBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn full(b: Bytes) -> ResponseBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
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

/// Phase `respond` for a stored object: preconditions, Range (single and multipart), HEAD.
fn respond_stored(
    obj: &CachedObject,
    parts: &http::request::Parts,
    status: CacheStatus,
    now: Instant,
) -> Result<Response<ResponseBody>, EdgeError> {
    let age = age_value(obj.freshness.age(now));
    let cache_status = status.value();
    let extra = [
        (header::AGE, age.clone()),
        (
            HeaderName::from_static("cache-status"),
            cache_status.clone(),
        ),
        (header::VIA, HeaderValue::from_static(VIA)),
    ];
    match conditional::evaluate(&parts.method, &parts.headers, obj.status, &obj.headers) {
        Precondition::NotModified => return Ok(not_modified(&obj.headers, &extra)),
        Precondition::Failed => return Err(EdgeError::PreconditionFailed),
        Precondition::Proceed => {}
    }
    let len = obj.body.len() as u64;
    let range = ranged(parts, obj.status, &obj.headers, Some(len));
    let mut headers = obj.headers.clone();
    set_extra(&mut headers, &extra);
    let (status, body) = match range {
        RangeRequest::Full => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            (obj.status, obj.body.clone())
        }
        RangeRequest::Single(a, b) => {
            headers.insert(header::CONTENT_RANGE, content_range(a, b, len));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(b - a));
            (
                StatusCode::PARTIAL_CONTENT,
                obj.body.slice(a as usize..b as usize),
            )
        }
        RangeRequest::Multi(ranges) => {
            let (ctype, body) = multipart(&obj.headers, &obj.body, &ranges);
            headers.insert(header::CONTENT_TYPE, ctype);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            (StatusCode::PARTIAL_CONTENT, body)
        }
        RangeRequest::Unsatisfiable => return Ok(unsatisfiable(len, &extra)),
    };
    let body = if parts.method == Method::HEAD {
        empty()
    } else {
        full(body)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
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

fn multipart(headers: &HeaderMap, body: &Bytes, ranges: &[(u64, u64)]) -> (HeaderValue, Bytes) {
    let boundary = format!(
        "streamedge-{:016x}",
        body.len() as u64 ^ 0x5ee0_d6e5_7a1b_c3d2
    );
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let len = body.len() as u64;
    let mut out = bytes::BytesMut::new();
    for &(a, b) in ranges {
        out.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: bytes {a}-{}/{len}\r\n\r\n",
                b - 1
            )
            .as_bytes(),
        );
        out.extend_from_slice(&body[a as usize..b as usize]);
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let value = HeaderValue::from_str(&format!("multipart/byteranges; boundary={boundary}"))
        .unwrap_or(HeaderValue::from_static("multipart/byteranges"));
    (value, out.freeze())
}

/// Phase `respond` for a fill: the shared head plus this request's view of the body.
/// Multiple ranges on a fill are answered with the whole object (200), as RFC 9110 allows.
fn respond_fill(
    head: &FillHead,
    reader: FillReader,
    parts: &http::request::Parts,
    collapsed: bool,
    fwd: &'static str,
) -> Result<Response<ResponseBody>, EdgeError> {
    let status_header = if head.from_store {
        CacheStatus::hit(head.freshness.map_or(0, |f| f.ttl_secs(Instant::now())))
    } else {
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
            ttl: head.freshness.map(|f| f.ttl_secs(Instant::now())),
            detail: None,
        }
    };
    let age = if head.from_store || head.revalidated {
        head.freshness
            .map_or(head.initial_age, |f| f.age(Instant::now()))
    } else {
        head.initial_age
    };
    let extra = [
        (header::AGE, age_value(age)),
        (
            HeaderName::from_static("cache-status"),
            status_header.value(),
        ),
        (header::VIA, HeaderValue::from_static(VIA)),
    ];
    match conditional::evaluate(&parts.method, &parts.headers, head.status, &head.headers) {
        Precondition::NotModified => return Ok(not_modified(&head.headers, &extra)),
        Precondition::Failed => return Err(EdgeError::PreconditionFailed),
        Precondition::Proceed => {}
    }
    let range = match ranged(parts, head.status, &head.headers, head.content_length) {
        RangeRequest::Multi(_) => RangeRequest::Full,
        r => r,
    };
    let mut resp = Response::new(empty());
    *resp.status_mut() = head.status;
    *resp.headers_mut() = head.headers.clone();
    let h = resp.headers_mut();
    set_extra(h, &extra);
    let body_range = match range {
        RangeRequest::Full => {
            if let Some(len) = head.content_length {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            }
            None
        }
        RangeRequest::Single(a, b) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_RANGE,
                content_range(a, b, head.content_length.unwrap_or(b)),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(b - a));
            Some((a, b))
        }
        RangeRequest::Unsatisfiable => {
            return Ok(unsatisfiable(head.content_length.unwrap_or(0), &extra));
        }
        RangeRequest::Multi(_) => None,
    };
    let no_body = parts.method == Method::HEAD
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED;
    if !no_body {
        *resp.body_mut() = UnsyncBoxBody::new(
            reader
                .into_body(body_range)
                .map_err(|e| Box::new(e) as BoxError),
        );
    }
    Ok(resp)
}

/// Phase `respond` for errors: the one mapping from error to status, a generic body.
fn respond_error(e: &EdgeError, out: &mut Outcome) -> Response<ResponseBody> {
    out.error = Some(e.to_string());
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
    let detail = e.cache_status_detail();
    if e.source_class() == crate::error::ErrorSource::Origin
        && let Ok(v) = HeaderValue::from_str(&format!("streamedge; fwd=miss; detail={detail}"))
    {
        h.insert(HeaderName::from_static("cache-status"), v);
    }
    match e {
        EdgeError::MethodNotAllowed(_) => {
            h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        EdgeError::RangeNotSatisfiable { length } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{length}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        EdgeError::NoHealthyOrigin { .. } | EdgeError::Overloaded { .. } => {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    if e.source_class() == crate::error::ErrorSource::Client {
        out.cache = CacheResult::Synthetic;
    }
    resp
}

/// Phase `log`: wraps the body so the access line and metrics are written when it ends.
fn log(mut response: Response<ResponseBody>, out: Outcome) -> Response<ResponseBody> {
    let status = response.status().as_u16();
    crate::metrics::first_byte(out.cache.as_str(), out.started.elapsed());
    if out.method == Method::HEAD || response.body().is_end_stream() {
        emit(&out, status, 0, None);
        return response;
    }
    let expected = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = std::mem::replace(response.body_mut(), empty());
    *response.body_mut() = UnsyncBoxBody::new(LoggedBody {
        inner: body,
        bytes: 0,
        expected,
        log: Some((out, status)),
    });
    response
}

fn emit(out: &Outcome, status: u16, bytes: u64, body_error: Option<&str>) {
    let duration = out.started.elapsed();
    crate::metrics::request_done(
        &out.method,
        status,
        out.cache.as_str(),
        out.kind.as_str(),
        bytes,
        duration,
    );
    let error = body_error.or(out.error.as_deref()).unwrap_or("");
    tracing::info!(
        target: "streamedge::access",
        client = %out.peer,
        proto = out.protocol,
        method = %out.method,
        path = %out.target,
        status,
        cache = out.cache.as_str(),
        kind = out.kind.as_str(),
        bytes,
        ms = duration.as_secs_f64() * 1000.0,
        origin = out.origin.as_deref().unwrap_or("-"),
        error,
    );
}

/// Counts body bytes and writes the access line when the body ends, fails or is dropped.
struct LoggedBody {
    inner: ResponseBody,
    bytes: u64,
    /// The declared length: hyper may drop a body as soon as it has sent that many bytes.
    expected: Option<u64>,
    log: Option<(Outcome, u16)>,
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some((out, status)) = self.log.take() {
                    emit(&out, status, self.bytes, Some(&e.to_string()));
                }
            }
            Poll::Ready(None) => {
                if let Some((out, status)) = self.log.take() {
                    emit(&out, status, self.bytes, None);
                }
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some((out, status)) = self.log.take() {
            let complete = self.expected.is_some_and(|e| self.bytes >= e);
            emit(
                &out,
                status,
                self.bytes,
                (!complete).then_some("client went away"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments() {
        assert_eq!(remove_dot_segments("/a/b").as_deref(), Some("/a/b"));
        assert_eq!(remove_dot_segments("/a/../b").as_deref(), Some("/b"));
        assert_eq!(remove_dot_segments("/a/./b/").as_deref(), Some("/a/b/"));
        assert_eq!(remove_dot_segments("/a/b/..").as_deref(), Some("/a/"));
        assert_eq!(remove_dot_segments("/../etc/passwd"), None);
        assert_eq!(
            remove_dot_segments("/a/.hidden").as_deref(),
            Some("/a/.hidden")
        );
    }

    #[test]
    fn origin_headers_are_end_to_end_only() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-foo"),
        );
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("x-bar", HeaderValue::from_static("2"));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\""));
        h.insert(header::COOKIE, HeaderValue::from_static("s=1"));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, br"),
        );
        let o = origin_request_headers(&h, false);
        assert!(o.get("x-foo").is_none());
        assert!(o.get(header::CONNECTION).is_none());
        assert_eq!(o.get("x-bar").unwrap(), "2");
        assert!(o.get(header::RANGE).is_none());
        assert!(o.get(header::IF_NONE_MATCH).is_none());
        assert!(o.get(header::COOKIE).is_none());
        assert_eq!(o.get(header::ACCEPT_ENCODING).unwrap(), "br");
        assert_eq!(o.get(header::VIA).unwrap(), VIA);
        assert_eq!(
            origin_request_headers(&h, true)
                .get(header::COOKIE)
                .unwrap(),
            "s=1"
        );
    }

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
    }
}
