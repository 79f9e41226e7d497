//! The request path, phase by phase: admit → sign → key → cmcd → lookup → fill → respond → log.
//!
//! Every phase is a function whose doc says when it runs and what it does by default. The
//! handler is infallible: each error becomes a response in `respond::respond_error`, and every
//! request writes one access-log line and its metrics when its body ends (or is dropped).

mod fetch;
mod headers;
mod log;
mod respond;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::header;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::cache::fill::{FillTable, HeadOutcome, Joined};
use crate::cache::key::{KeyRules, variant_of};
use crate::cache::policy::CacheControl;
use crate::cache::{CacheKey, CachedObject, ContentKind, Lookup, Store, StoreKey};
use crate::cmcd::Cmcd;
use crate::config::{Config, HostHeader};
use crate::error::EdgeError;
use crate::media::Directives;
use crate::server::{ConnInfo, Handler, ResponseBody};
use crate::signing::TokenError;
use crate::target::Target;
use crate::upstream::Upstream;
use fetch::{FillJob, spawn_fill};
use headers::{ClientAddress, origin_request_headers};
pub use log::CacheResult;
use log::Outcome;
use respond::{CacheStatus, respond_error, respond_fill, respond_stored};

/// Everything a request reads that a config reload may replace.
pub struct Runtime {
    pub config: Arc<Config>,
    pub upstream: Arc<Upstream>,
    pub keys: KeyRules,
    /// Prefetches in flight at once.
    pub prefetch_slots: Arc<Semaphore>,
}

impl Runtime {
    pub fn new(config: Config) -> Result<Runtime, String> {
        let upstream = Arc::new(Upstream::new(&config)?);
        Ok(Runtime {
            keys: KeyRules::new(config.key_rules.clone()),
            prefetch_slots: Arc::new(Semaphore::new(config.prefetch.concurrency)),
            upstream,
            config: Arc::new(config),
        })
    }
}

/// The shared state of the request path: the cache, the in-flight table, the runtime.
pub struct Proxy {
    pub store: Store,
    pub fills: Arc<FillTable>,
    runtime: ArcSwap<Runtime>,
}

impl Proxy {
    pub fn new(runtime: Runtime) -> Proxy {
        Proxy {
            store: Store::new(&runtime.config.cache),
            fills: FillTable::new(runtime.config.cache.max_in_flight),
            runtime: ArcSwap::from_pointee(runtime),
        }
    }

    /// The current runtime; a request keeps the one it started with.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Swaps in a new runtime (config reload); requests in flight finish on the old one.
    pub fn replace_runtime(&self, runtime: Runtime) -> Arc<Runtime> {
        self.runtime.swap(Arc::new(runtime))
    }
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

/// One request's view of the edge: the proxy and the runtime it started with.
#[derive(Clone)]
struct Ctx {
    proxy: Arc<Proxy>,
    rt: Arc<Runtime>,
    /// The address the request came from (a proxy's, when one is in front).
    peer: std::net::IpAddr,
}

impl Ctx {
    /// Headers for an origin fetch on behalf of this request.
    fn origin_headers(&self, parts: &http::request::Parts, private: bool) -> http::HeaderMap {
        let address = ClientAddress::new(
            &parts.headers,
            self.peer,
            &self.rt.config.server.trusted_proxies,
        );
        origin_request_headers(
            &parts.headers,
            private,
            &self.rt.config.fetch,
            Some(&address),
        )
    }
}

/// Runs every phase for one request; never fails.
pub async fn handle(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> Response<ResponseBody> {
    let (parts, body) = req.into_parts();
    let mut out = Outcome::new(&parts, &conn);
    let ctx = Ctx {
        rt: proxy.runtime(),
        proxy,
        peer: conn.peer.ip(),
    };
    let response = match serve(&ctx, &parts, &conn, body, &mut out).await {
        Ok(r) => r,
        Err(e) => respond_error(&e, &mut out),
    };
    log::log(response, out)
}

/// The phases in order.
async fn serve(
    ctx: &Ctx,
    parts: &http::request::Parts,
    conn: &ConnInfo,
    body: Incoming,
    out: &mut Outcome,
) -> Result<Response<ResponseBody>, EdgeError> {
    let mut target = target(ctx, parts, conn)?;
    let forward = admit(ctx, parts)?;
    sign(ctx, &mut target)?;
    let key = key(&ctx.rt, &target);
    out.kind = ContentKind::from_path(&target.path);
    cmcd(ctx, parts, &target, out);
    if forward {
        out.cache = CacheResult::Pass;
        let headers = ctx.origin_headers(parts, true);
        return fetch::forward_unsafe(&ctx.proxy, &ctx.rt, parts, headers, body, key).await;
    }
    let (key, first_byte_timeout) = ll_hls(ctx, parts, key).await;
    lookup(ctx, parts, key, first_byte_timeout, out, 0).await
}

/// Phase `target`: runs first. The request's host, path and query in their one canonical form
/// (see [`crate::target`]): malformed or ambiguous targets and hosts get 400, a host not in
/// `server.hosts` (when set) gets 421.
fn target(ctx: &Ctx, parts: &http::request::Parts, conn: &ConnInfo) -> Result<Target, EdgeError> {
    let target = Target::from_request(parts, conn.tls).map_err(bad_target)?;
    let hosts = &ctx.rt.config.server.hosts;
    if !hosts.is_empty() {
        let name = target.host_name().unwrap_or_default();
        if !hosts.iter().any(|h| h == name) {
            return Err(EdgeError::UnknownHost(
                target.host.clone().unwrap_or_default(),
            ));
        }
    }
    Ok(target)
}

fn bad_target(e: crate::target::TargetError) -> EdgeError {
    EdgeError::BadRequest(e.to_string())
}

/// Phase `admit`: runs after `target`. A transfer coding other than `chunked` gets 501. GET
/// and HEAD pass. OPTIONS (CORS preflight) and, when
/// `server.forward_unsafe_methods` is set, POST/PUT/PATCH/DELETE are forwarded uncached
/// (returns `true`); others get 405.
fn admit(ctx: &Ctx, parts: &http::request::Parts) -> Result<bool, EdgeError> {
    // RFC 9112 §6.1: hyper decodes a final `chunked` only; a coding before it (`gzip, chunked`)
    // would reach the origin still coded, as a plain body.
    let mut codings = parts
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    if let Some(first) = codings.next()
        && (!first.eq_ignore_ascii_case(b"chunked") || codings.next().is_some())
    {
        return Err(EdgeError::NotImplemented(
            "a transfer coding other than chunked".into(),
        ));
    }
    match parts.method {
        Method::GET | Method::HEAD => Ok(false),
        Method::OPTIONS => Ok(true),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
            if ctx.rt.config.server.forward_unsafe_methods =>
        {
            Ok(true)
        }
        _ => Err(EdgeError::MethodNotAllowed {
            method: parts.method.clone(),
            allow: if ctx.rt.config.server.forward_unsafe_methods {
                "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"
            } else {
                "GET, HEAD, OPTIONS"
            },
        }),
    }
}

/// Phase `sign`: runs after `admit`. Under a `signed_urls` prefix (matched on the canonical
/// path), a missing, bad or expired token gets 403; the token is removed from what follows (key
/// and origin request). Then an escaped `/` left anywhere in the path gets 400.
fn sign(ctx: &Ctx, target: &mut Target) -> Result<(), EdgeError> {
    match check_signature(&ctx.rt, target) {
        Ok(()) => target.check_no_encoded_slash().map_err(bad_target),
        Err(e) => Err(EdgeError::Forbidden(e.to_string())),
    }
}

/// Verifies and removes the token of a target under a signed prefix.
fn check_signature(rt: &Runtime, target: &mut Target) -> Result<(), TokenError> {
    let Some(rule) = rt
        .config
        .signed_urls
        .iter()
        .filter(|r| target.path.starts_with(&r.prefix))
        .max_by_key(|r| r.prefix.len())
    else {
        return Ok(());
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let v = crate::signing::verify(rule, &target.path, target.query.as_deref(), now)?;
    target.path = v.path;
    target.query = v.query;
    Ok(())
}

/// Phase `key`: the cache key of a canonical target: the key rules pick the query parameters;
/// the host is part of the key when origins see the client's Host (`fetch.host_header: client`).
fn key(rt: &Runtime, target: &Target) -> CacheKey {
    let host = match rt.config.fetch.host_header {
        HostHeader::Client => target.host.as_deref(),
        HostHeader::Origin => None,
    };
    rt.keys.key_on(host, &target.path, target.query.as_deref())
}

/// The key of an origin-relative reference found by the edge itself (a playlist entry, a CMCD
/// `nor`, a `Location`), for the host of the request it came with: the same canonical form and
/// key as a client's request for it would get. A token it carries is checked and removed; a
/// reference without one may still be fetched (it comes from the origin, not from a client).
pub(crate) fn reference_key(rt: &Runtime, host: Option<&str>, reference: &str) -> Option<CacheKey> {
    let mut target = Target::from_reference(host, reference).ok()?;
    match check_signature(rt, &mut target) {
        Ok(()) | Err(TokenError::Missing) => {}
        Err(_) => return None,
    }
    target.check_no_encoded_slash().ok()?;
    Some(key(rt, &target))
}

/// Phase `cmcd`: runs after the key is known. Common Media Client Data goes to the access log
/// and metrics; a `nor` (next object request) is prefetched when `prefetch.cmcd_nor` is on.
fn cmcd(ctx: &Ctx, parts: &http::request::Parts, target: &Target, out: &mut Outcome) {
    let c = Cmcd::from_request(parts.uri.query(), &parts.headers);
    if c.is_empty() {
        return;
    }
    crate::metrics::cmcd(&c);
    let prefetch = &ctx.rt.config.prefetch;
    if prefetch.enabled
        && prefetch.cmcd_nor
        && let Some(nor) = &c.next_object
        && let Some(reference) = crate::media::resolve(&target.path, &crate::percent::decode(nor))
        && let Some(key) = reference_key(&ctx.rt, target.host.as_deref(), &reference)
    {
        fetch::prefetch(&ctx.proxy, &ctx.rt, key);
    }
    out.cmcd = Some(c);
}

/// Phase `ll_hls`: runs before lookup for requests with LL-HLS delivery directives. On a VOD
/// playlist (ENDLIST) the directives are ignored (the plain playlist is served); a blocking
/// reload (`_HLS_msn`) may wait for the origin longer than three target durations.
async fn ll_hls(ctx: &Ctx, parts: &http::request::Parts, key: CacheKey) -> (CacheKey, Duration) {
    let base = ctx.rt.config.fetch.first_byte_timeout;
    let Some((_, query)) = key.as_str().split_once('?') else {
        return (key, base);
    };
    let directives = Directives::from_query(Some(query));
    if !directives.any() {
        return (key, base);
    }
    let Some(plain) = crate::media::without_directives(&key) else {
        return (key, base);
    };
    let summary = match ctx.proxy.store.lookup(&plain, &parts.headers).await {
        Lookup::Found(_, obj) => obj.media,
        _ => None,
    };
    match summary {
        Some(m) if !m.live => (plain, base),
        Some(m) if directives.is_blocking() => {
            let hold = m
                .target_duration
                .map_or(Duration::from_secs(30), |t| t * 3 + Duration::from_secs(1));
            (key, base.max(hold))
        }
        _ if directives.is_blocking() => (key, base.max(Duration::from_secs(30))),
        _ => (key, base),
    }
}

/// What the client's own Cache-Control asks of the cache.
struct ClientDirectives {
    /// Revalidate even a fresh object (no-cache / max-age=0, when honoured).
    revalidate: bool,
    /// Answer only from the cache (RFC 9111 §5.2.1.7), else 504.
    only_if_cached: bool,
}

fn client_directives(ctx: &Ctx, parts: &http::request::Parts) -> ClientDirectives {
    let cc = CacheControl::from_headers(&parts.headers, header::CACHE_CONTROL);
    let pragma_no_cache = !cc.present
        && parts.headers.get_all(header::PRAGMA).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("no-cache"))
        });
    ClientDirectives {
        revalidate: ctx.rt.config.cache.honor_client_no_cache
            && (cc.no_cache || cc.max_age == Some(0) || pragma_no_cache),
        only_if_cached: cc.only_if_cached,
    }
}

/// Phase `lookup`: runs after `key`. A fresh object is answered at once; a stale one is
/// revalidated through the fill (or served while revalidating when its headers allow); a
/// missing one is filled. Hit-for-miss keys and requests with credentials skip collapsing.
async fn lookup(
    ctx: &Ctx,
    parts: &http::request::Parts,
    key: CacheKey,
    first_byte_timeout: Duration,
    out: &mut Outcome,
    depth: u8,
) -> Result<Response<ResponseBody>, EdgeError> {
    let now = Instant::now();
    let client = client_directives(ctx, parts);
    let private = parts.headers.contains_key(header::AUTHORIZATION);
    let shared_mode = if private {
        Mode::Private
    } else {
        Mode::Collapse
    };
    let fill_req = |slot, stale, mode, fwd| FillRequest {
        key: key.clone(),
        slot,
        stale,
        mode,
        fwd,
        first_byte_timeout,
    };
    match ctx.proxy.store.lookup(&key, &parts.headers).await {
        Lookup::Found(slot, obj) => {
            out.kind = obj.kind;
            out.origin = Some(obj.origin.clone());
            if obj.freshness.is_fresh(now) && !client.revalidate {
                out.cache = CacheResult::Hit;
                let status = CacheStatus::hit(obj.freshness.ttl_secs(now));
                return respond_stored(&obj, parts, status, now);
            }
            if client.only_if_cached {
                return Err(EdgeError::NotCached);
            }
            if !client.revalidate && obj.freshness.may_serve_stale_while_revalidate(now) {
                revalidate_in_background(ctx, parts, &key, &slot, obj.clone());
                out.cache = CacheResult::Stale;
                let status = CacheStatus::stale_while_revalidate(obj.freshness.ttl_secs(now));
                return respond_stored(&obj, parts, status, now);
            }
            let req = fill_req(slot, Some(obj), shared_mode, "stale");
            fill(ctx, parts, req, out, depth).await
        }
        Lookup::Missing(slot, vary_miss) => {
            if client.only_if_cached {
                return Err(EdgeError::NotCached);
            }
            let fwd = if vary_miss { "vary-miss" } else { "uri-miss" };
            fill(
                ctx,
                parts,
                fill_req(slot, None, shared_mode, fwd),
                out,
                depth,
            )
            .await
        }
        Lookup::HitForMiss(slot) => {
            if client.only_if_cached {
                return Err(EdgeError::NotCached);
            }
            fill(
                ctx,
                parts,
                fill_req(slot, None, Mode::Private, "miss"),
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

/// What `fill` is asked to do.
struct FillRequest {
    key: CacheKey,
    slot: StoreKey,
    stale: Option<Arc<CachedObject>>,
    mode: Mode,
    /// RFC 9211 `fwd` reason if this request ends up forwarded.
    fwd: &'static str,
    first_byte_timeout: Duration,
}

/// Phase `fill`: runs on a miss or a stale object. Joins the in-flight fetch for the slot or
/// starts one (a detached task), then answers from the fill's head and streamed body. When
/// the origin fails, a stale copy is served if `stale-if-error` allows it, or if no origin is
/// usable at all and the object does not require revalidation.
async fn fill(
    ctx: &Ctx,
    parts: &http::request::Parts,
    req: FillRequest,
    out: &mut Outcome,
    depth: u8,
) -> Result<Response<ResponseBody>, EdgeError> {
    let job = || FillJob {
        key: req.key.clone(),
        slot: req.slot.clone(),
        kind: ContentKind::from_path(req.key.path()),
        request_headers: parts.headers.clone(),
        origin_headers: ctx.origin_headers(parts, req.mode == Mode::Private),
        stale: req.stale.clone(),
        shared: req.mode == Mode::Collapse,
        first_byte_timeout: req.first_byte_timeout,
        prefetch: false,
        _permit: None,
    };
    let (mut reader, collapsed) = match req.mode {
        Mode::Collapse => match ctx
            .proxy
            .fills
            .join(&req.slot, ctx.rt.config.cache.max_waiters)?
        {
            Joined::Leader(reader, writer) => {
                spawn_fill(ctx.proxy.clone(), ctx.rt.clone(), writer, job());
                (reader, false)
            }
            Joined::Follower(reader) => {
                crate::metrics::collapsed();
                (reader, true)
            }
        },
        Mode::Private => {
            let (reader, writer) = ctx.proxy.fills.private(&req.slot);
            spawn_fill(ctx.proxy.clone(), ctx.rt.clone(), writer, job());
            (reader, false)
        }
    };
    out.cache = match (req.mode, collapsed) {
        (Mode::Private, _) => CacheResult::Pass,
        (_, true) => CacheResult::Collapsed,
        _ => CacheResult::Miss,
    };
    let head = match reader.head().await {
        Ok(HeadOutcome::Ready(head)) => head,
        Ok(HeadOutcome::NotShared) if depth == 0 => {
            // The origin's answer was for the leader only: ask for our own.
            drop(reader);
            let own = FillRequest {
                mode: Mode::Private,
                ..req
            };
            return Box::pin(fill(ctx, parts, own, out, depth + 1)).await;
        }
        Ok(HeadOutcome::NotShared) => {
            return Err(EdgeError::Internal("unshareable answer twice".into()));
        }
        Err(e) => {
            if let Some(obj) = &req.stale {
                let now = Instant::now();
                let no_origin = matches!(e, EdgeError::NoHealthyOrigin { .. });
                if obj.freshness.may_serve_stale_on_error(now)
                    || (no_origin
                        && !obj.freshness.must_revalidate
                        && obj.freshness.within_cap(now))
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
        return Box::pin(lookup(
            ctx,
            parts,
            req.key,
            req.first_byte_timeout,
            out,
            depth + 1,
        ))
        .await;
    }
    if head.from_store {
        out.cache = CacheResult::Hit;
    } else if head.revalidated {
        out.cache = CacheResult::Stale;
    }
    respond_fill(&head, reader, parts, collapsed, req.fwd)
}

/// Starts a background revalidation (stale-while-revalidate) unless one is in flight.
fn revalidate_in_background(
    ctx: &Ctx,
    parts: &http::request::Parts,
    key: &CacheKey,
    slot: &StoreKey,
    stale: Arc<CachedObject>,
) {
    if let Ok(Joined::Leader(reader, writer)) = ctx.proxy.fills.join(slot, usize::MAX) {
        drop(reader);
        let job = FillJob {
            key: key.clone(),
            slot: slot.clone(),
            kind: stale.kind,
            request_headers: parts.headers.clone(),
            origin_headers: ctx.origin_headers(parts, false),
            stale: Some(stale),
            shared: true,
            first_byte_timeout: ctx.rt.config.fetch.first_byte_timeout,
            prefetch: false,
            _permit: None,
        };
        spawn_fill(ctx.proxy.clone(), ctx.rt.clone(), writer, job);
    }
}
