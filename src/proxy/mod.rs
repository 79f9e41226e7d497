//! The request path, phase by phase: (a peer's mark) → target → (a peer's probe or purge) →
//! admit → sign → key → CMCD → LL-HLS → lookup → fill (from the key's owner in the fleet or
//! the origin) → respond → log. `serve` below is the table of contents; each phase lives in a
//! module of its own, and the state they share in `context`.
//!
//! Every phase is a function whose doc says when it runs and what it does by default. The
//! handler is infallible: each error becomes a response in `respond::respond_error`, and every
//! request writes one access-log line and its metrics when its body ends (or is dropped).

mod admit;
mod body;
mod cache_status;
mod context;
mod fill;
mod forward;
mod headers;
mod log;
mod lookup;
mod peer;
mod purge;
mod respond;
mod slice;
mod spawn;
mod task;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::cache::{CacheKey, ContentKind};
use crate::error::EdgeError;
use crate::server::{ConnInfo, Handler, ResponseBody};
use context::Ctx;
pub use context::{Proxy, Runtime};
use fill::Filled;
pub use log::CacheResult;
use log::Outcome;
use lookup::Found;
pub(crate) use purge::purge;
use respond::{Answer, respond, respond_error};

/// The hyper-facing handler.
#[derive(Clone)]
pub struct ProxyHandler(pub Arc<Proxy>);

impl Handler for ProxyHandler {
    type Watch = Option<log::Logged>;

    fn call(
        &self,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> impl Future<Output = (Response<ResponseBody>, Option<log::Logged>)> + Send + 'static {
        handle(self.0.clone(), req, conn)
    }
}

/// Runs every phase for one request; never fails. The access log's watch of the body comes
/// with the response (none when the response has no body: its line is written already).
pub async fn handle(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> (Response<ResponseBody>, Option<log::Logged>) {
    let (parts, body) = req.into_parts();
    let mut out = Outcome::new(&parts, &conn);
    let rt = proxy.runtime();
    let ctx = Ctx {
        from_peer: peer::from_peer(&rt, &parts),
        rt,
        proxy,
        client_ip: conn.remote.ip(),
    };
    let response = match serve(&ctx, &parts, &conn, body, &mut out).await {
        Ok(r) => r,
        Err(e) => respond_error(&e, &ctx.rt.cache_name, &mut out),
    };
    log::log(response, out, ctx.proxy)
}

/// The phases in order. What only some requests need (the peer endpoints, forwarding,
/// LL-HLS lookups, fills, slices) runs in futures of its own on the heap: the future of a hit
/// holds only the hit's state, and hyper moves it by value (into its slot, into each poll).
async fn serve(
    ctx: &Ctx,
    parts: &http::request::Parts,
    conn: &ConnInfo,
    body: Incoming,
    out: &mut Outcome,
) -> Result<Response<ResponseBody>, EdgeError> {
    let mut target = admit::target(ctx, parts, conn)?;
    if ctx.from_peer.is_some() {
        if let Some(response) = Box::pin(peer::endpoint(ctx, parts)).await {
            return Ok(response);
        }
        crate::metrics::peer_served();
    }
    let forward = admit::admit(ctx, parts)?;
    admit::sign(ctx, &mut target)?;
    let key = admit::key(&ctx.rt, &target);
    out.key = Some(key.clone());
    out.kind = ContentKind::from_path(&target.path);
    if let Some(next) = admit::cmcd(ctx, parts, &target, out) {
        spawn::prefetch(&ctx.proxy, &ctx.rt, next);
    }
    if forward {
        out.cache = CacheResult::Pass;
        let headers = ctx.origin_headers(parts, true);
        let forward = forward::forward_unsafe(&ctx.proxy, &ctx.rt, parts, headers, body, key);
        return Box::pin(forward).await;
    }
    let (key, first_byte_timeout) = match admit::ll_directives(&key) {
        None => (key, ctx.rt.config.fetch.first_byte_timeout),
        Some(directives) => Box::pin(admit::ll_hls(ctx, parts, key, directives)).await,
    };
    let answer = match lookup::lookup(ctx, parts, &key, first_byte_timeout, out).await? {
        Found::Answer(answer) => answer,
        Found::Fill(req) => {
            let fwd = req.fwd;
            if let Some(response) = Box::pin(slice::answer(ctx, parts, &key, fwd, out)).await? {
                return Ok(response);
            }
            let found = Found::Fill(req);
            Box::pin(answer(ctx, parts, &key, first_byte_timeout, found, out)).await?
        }
    };
    respond(answer, parts, &ctx.rt.cache_name)
}

/// Phase `fill` after `lookup` (and `slice`, which answers misses of sliced objects): what
/// answers the request. A fill is made when the store cannot answer; once more when its
/// answer was for the leader only (a fetch of this request's own), or was another `Vary`
/// variant (a lookup of this request's own).
async fn answer(
    ctx: &Ctx,
    parts: &http::request::Parts,
    key: &CacheKey,
    first_byte_timeout: Duration,
    found: Found,
    out: &mut Outcome,
) -> Result<Answer, EdgeError> {
    let mut found = found;
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
