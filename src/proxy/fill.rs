//! Phase `fill`: join the in-flight fetch for a slot or lead a new one (a detached task), then
//! wait for its head. When the origin fails, a stale copy answers where that is allowed.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::cache_status::CacheStatus;
use super::context::Ctx;
use super::log::{CacheResult, Outcome};
use super::respond::Answer;
use super::spawn::spawn_fill;
use super::task::FillJob;
use crate::cache::fill::{HeadOutcome, Joined, Lane};
use crate::cache::key::variant_of;
use crate::cache::{CacheKey, CachedObject, StoreKey};
use crate::error::EdgeError;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    /// Join or lead the shared fill for the slot.
    Collapse,
    /// A fetch of this request's own (hit-for-miss, credentials, unshareable answer).
    Private,
}

/// What `fill` is asked to do.
pub(super) struct FillRequest {
    pub key: CacheKey,
    pub slot: StoreKey,
    pub stale: Option<Arc<CachedObject>>,
    pub mode: Mode,
    /// RFC 9211 `fwd` reason if this request ends up forwarded.
    pub fwd: &'static str,
    pub first_byte_timeout: Duration,
}

/// What a fill gave this request.
pub(super) enum Filled {
    Answer(Answer),
    /// The origin's answer was for the leader only: this request needs its own fetch.
    NotShared(FillRequest),
    /// The leader's answer varies, and this request is another variant: look up its own
    /// (the leader's answer is kept for when that cannot be done again).
    OtherVariant(Answer),
}

/// Phase `fill`: runs on a miss or a stale object. Joins the in-flight fetch for the slot or
/// starts one, then answers from the fill's head and streamed body. When the origin fails, a
/// stale copy is served if `stale-if-error` allows it, or if no origin is usable at all and
/// the object does not require revalidation.
pub(super) async fn fill(
    ctx: &Ctx,
    parts: &http::request::Parts,
    req: FillRequest,
    out: &mut Outcome,
) -> Result<Filled, EdgeError> {
    let (mut reader, collapsed) = join(ctx, parts, &req)?;
    out.cache = match (req.mode, collapsed) {
        (Mode::Private, _) => CacheResult::Pass,
        (_, true) => CacheResult::Collapsed,
        _ => CacheResult::Miss,
    };
    let head = match reader.head().await {
        Ok(HeadOutcome::Ready(head)) => head,
        Ok(HeadOutcome::NotShared) => {
            let own = FillRequest {
                mode: Mode::Private,
                ..req
            };
            return Ok(Filled::NotShared(own));
        }
        Err(e) => return stale_instead(&req, e, out).map(Filled::Answer),
    };
    out.origin = Some(head.origin.clone());
    out.kind = head.kind;
    let other_variant = collapsed
        && head
            .vary
            .as_ref()
            .is_some_and(|(names, leader)| variant_of(&parts.headers, names) != *leader);
    if head.from_store {
        out.cache = CacheResult::Hit;
    } else if head.revalidated {
        out.cache = CacheResult::Stale;
    }
    let answer = Answer::Filled {
        head,
        reader,
        collapsed,
        fwd: req.fwd,
    };
    Ok(if other_variant {
        Filled::OtherVariant(answer)
    } else {
        Filled::Answer(answer)
    })
}

/// This request's reader: of the shared fill for the slot (led or joined), or of a fill of
/// its own. Returns whether it joined another request's fill.
fn join(
    ctx: &Ctx,
    parts: &http::request::Parts,
    req: &FillRequest,
) -> Result<(crate::cache::fill::FillReader, bool), EdgeError> {
    let owner = ctx.owner_peer(&req.key);
    let job = || {
        FillJob::new(
            req.key.clone(),
            req.slot.clone(),
            parts.headers.clone(),
            ctx.origin_headers(parts, req.mode == Mode::Private),
            req.first_byte_timeout,
        )
        .revalidating(req.stale.clone())
        .private(req.mode == Mode::Private)
        .asking(owner.clone())
    };
    let spawn = |writer| spawn_fill(ctx.proxy.clone(), ctx.rt.clone(), writer, job());
    Ok(match req.mode {
        Mode::Collapse => match ctx.proxy.fills.join_in(
            &req.slot,
            Lane::asking_peer(owner.is_some()),
            ctx.rt.config.cache.max_waiters,
        )? {
            Joined::Leader(reader, writer) => {
                spawn(writer);
                (reader, false)
            }
            Joined::Follower(reader) => {
                crate::metrics::collapsed();
                (reader, true)
            }
        },
        Mode::Private => {
            let (reader, writer) = ctx.proxy.fills.private(&req.slot);
            spawn(writer);
            (reader, false)
        }
    })
}

/// The stale copy instead of an origin failure, where its freshness allows it; else the error.
fn stale_instead(req: &FillRequest, e: EdgeError, out: &mut Outcome) -> Result<Answer, EdgeError> {
    let now = Instant::now();
    let Some(obj) = &req.stale else {
        return Err(e);
    };
    let no_origin = matches!(e, EdgeError::NoHealthyOrigin { .. });
    if !obj.freshness.may_answer_for_failed_origin(now, no_origin) {
        return Err(e);
    }
    out.cache = CacheResult::Stale;
    out.error = Some(e.to_string());
    let status = CacheStatus::stale_on_error(obj.freshness.ttl_secs(now), &e);
    Ok(Answer::Stored {
        obj: obj.clone(),
        status,
        now,
    })
}
