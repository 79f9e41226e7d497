//! The request path, phase by phase: target → admit → sign → key → CMCD → LL-HLS → lookup →
//! fill → respond → log. `serve` below is the table of contents.
//!
//! Every phase is a function whose doc says when it runs and what it does by default. The
//! handler is infallible: each error becomes a response in `respond::respond_error`, and every
//! request writes one access-log line and its metrics when its body ends (or is dropped).

mod admit;
mod body;
mod cache_status;
mod fill;
mod forward;
mod headers;
mod log;
mod lookup;
mod prefetch;
mod respond;
mod task;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use crate::cache::fill::FillTable;
use crate::cache::key::KeyRules;
use crate::cache::{CacheKey, ContentKind, Store};
use crate::config::Config;
use crate::error::EdgeError;
use crate::server::{ConnInfo, Handler, ResponseBody};
use crate::upstream::Upstream;
use fill::Filled;
use headers::{ClientAddress, origin_request_headers};
pub use log::CacheResult;
use log::Outcome;
use lookup::Found;
use respond::{Answer, respond, respond_error};

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
    let mut target = admit::target(ctx, parts, conn)?;
    let forward = admit::admit(ctx, parts)?;
    admit::sign(ctx, &mut target)?;
    let key = admit::key(&ctx.rt, &target);
    out.kind = ContentKind::from_path(&target.path);
    admit::cmcd(ctx, parts, &target, out);
    if forward {
        out.cache = CacheResult::Pass;
        let headers = ctx.origin_headers(parts, true);
        return forward::forward_unsafe(&ctx.proxy, &ctx.rt, parts, headers, body, key).await;
    }
    let (key, first_byte_timeout) = admit::ll_hls(ctx, parts, key).await;
    let answer = answer(ctx, parts, &key, first_byte_timeout, out).await?;
    respond(answer, parts)
}

/// Phases `lookup` and `fill`: what answers the request. A fill is made when the store cannot
/// answer; once more when its answer was for the leader only (a fetch of this request's own),
/// or was another `Vary` variant (a lookup of this request's own).
async fn answer(
    ctx: &Ctx,
    parts: &http::request::Parts,
    key: &CacheKey,
    first_byte_timeout: Duration,
    out: &mut Outcome,
) -> Result<Answer, EdgeError> {
    let mut found = lookup::lookup(ctx, parts, key, first_byte_timeout, out).await?;
    for again in [true, false] {
        let req = match found {
            Found::Answer(answer) => return Ok(answer),
            Found::Fill(req) => req,
        };
        found = match fill::fill(ctx, parts, req, out).await? {
            Filled::Answer(answer) => return Ok(answer),
            Filled::NotShared(own) if again => Found::Fill(own),
            Filled::NotShared(_) => {
                return Err(EdgeError::Internal("unshareable answer twice".into()));
            }
            Filled::OtherVariant(answer) if !again => return Ok(answer),
            Filled::OtherVariant(_) => {
                lookup::lookup(ctx, parts, key, first_byte_timeout, out).await?
            }
        };
    }
    Err(EdgeError::Internal("no answer after a second fill".into()))
}
