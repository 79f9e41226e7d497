//! Phase `lookup`: what the store can answer for a request — a fresh object, a stale one to
//! serve while revalidating in the background — or what must be filled instead.

use std::sync::Arc;
use std::time::Duration;

use http::header;
use tokio::time::Instant;

use super::cache_status::CacheStatus;
use super::context::Ctx;
use super::fill::{FillRequest, Mode};
use super::log::{CacheResult, Outcome};
use super::respond::Answer;
use super::spawn::spawn_fill;
use super::task::FillJob;
use crate::cache::fill::{Joined, Lane};
use crate::cache::policy::CacheControl;
use crate::cache::{CacheKey, CachedObject, Lookup, StoreKey};
use crate::error::EdgeError;

/// What the lookup found: an answer, or a fill to make.
pub(super) enum Found {
    Answer(Answer),
    Fill(FillRequest),
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
/// revalidated through a fill (or served while revalidating when its headers allow); a
/// missing one is filled. Hit-for-miss keys and requests with credentials skip collapsing.
pub(super) async fn lookup(
    ctx: &Ctx,
    parts: &http::request::Parts,
    key: &CacheKey,
    first_byte_timeout: Duration,
    out: &mut Outcome,
) -> Result<Found, EdgeError> {
    let now = Instant::now();
    let client = client_directives(ctx, parts);
    let shared_mode = if parts.headers.contains_key(header::AUTHORIZATION) {
        Mode::Private
    } else {
        Mode::Collapse
    };
    let fill = |slot, stale, mode, fwd| {
        Found::Fill(FillRequest {
            key: key.clone(),
            slot,
            stale,
            mode,
            fwd,
            first_byte_timeout,
        })
    };
    let found = ctx.proxy.store.lookup(key, &parts.headers).await;
    if let Lookup::Found(_, obj) = &found {
        out.kind = obj.kind;
        out.origin = Some(obj.origin.clone());
        if obj.freshness.is_fresh(now) && !client.revalidate {
            out.cache = CacheResult::Hit;
            let mut status = CacheStatus::hit(obj.freshness.ttl_secs(now));
            if obj.body.is_disk() {
                status.detail = Some("disk");
            }
            let obj = obj.clone();
            return Ok(Found::Answer(Answer::Stored { obj, status, now }));
        }
    }
    if client.only_if_cached {
        return Err(EdgeError::NotCached);
    }
    Ok(match found {
        Lookup::Found(slot, obj) => {
            if !client.revalidate && obj.freshness.may_serve_stale_while_revalidate(now) {
                revalidate_in_background(ctx, parts, key, &slot, obj.clone());
                out.cache = CacheResult::Stale;
                let status = CacheStatus::stale_while_revalidate(obj.freshness.ttl_secs(now));
                return Ok(Found::Answer(Answer::Stored { obj, status, now }));
            }
            fill(slot, Some(obj), shared_mode, "stale")
        }
        Lookup::Missing(slot, vary_miss) => {
            let fwd = if vary_miss { "vary-miss" } else { "uri-miss" };
            fill(slot, None, shared_mode, fwd)
        }
        Lookup::HitForMiss(slot) => fill(slot, None, Mode::Private, "miss"),
    })
}

/// Starts a background revalidation (stale-while-revalidate) unless one is in flight.
fn revalidate_in_background(
    ctx: &Ctx,
    parts: &http::request::Parts,
    key: &CacheKey,
    slot: &StoreKey,
    stale: Arc<CachedObject>,
) {
    let owner = ctx.owner_peer(key);
    let lane = Lane::asking_peer(owner.is_some());
    if let Ok(Joined::Leader(reader, writer)) = ctx.proxy.fills.join_in(slot, lane, usize::MAX) {
        drop(reader);
        let mut job = FillJob::new(
            key.clone(),
            slot.clone(),
            parts.headers.clone(),
            ctx.origin_headers(parts, false),
            ctx.rt.config.fetch.first_byte_timeout,
        );
        job.kind = stale.kind;
        let job = job.revalidating(Some(stale)).asking(owner);
        spawn_fill(ctx.proxy.clone(), ctx.rt.clone(), writer, job);
    }
}
