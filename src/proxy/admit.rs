//! The front phases of the request path: the canonical target, admission, signed URLs, the
//! cache key, CMCD and LL-HLS directives — everything decided before the cache is asked.

use std::time::{Duration, SystemTime};

use http::Method;
use http::header;

use super::context::{Ctx, Runtime};
use super::log::Outcome;
use crate::cache::{CacheKey, Lookup};
use crate::cmcd::Cmcd;
use crate::config::HostHeader;
use crate::error::EdgeError;
use crate::llhls::{self, Directives, Playlist};
use crate::server::ConnInfo;
use crate::signing::TokenError;
use crate::target::Target;

/// Phase `target`: runs first. The request's host, path and query in their one canonical form
/// (see [`crate::target`]): malformed or ambiguous targets and hosts get 400, a host not in
/// `server.hosts` (when set) gets 421 — unless a peer forwarded the request (it admitted the
/// client's host itself).
pub(super) fn target(
    ctx: &Ctx,
    parts: &http::request::Parts,
    conn: &ConnInfo,
) -> Result<Target, EdgeError> {
    let target = Target::from_request(parts, conn.tls).map_err(bad_target)?;
    let hosts = &ctx.rt.config.server.hosts;
    if !hosts.is_empty() && ctx.from_peer.is_none() {
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
pub(super) fn admit(ctx: &Ctx, parts: &http::request::Parts) -> Result<bool, EdgeError> {
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
/// and origin request). Then an escaped `/` left anywhere in the path gets 400. A request a
/// peer forwarded was checked there, and carries the key without its token.
pub(super) fn sign(ctx: &Ctx, target: &mut Target) -> Result<(), EdgeError> {
    let checked = if ctx.from_peer.is_some() {
        Ok(())
    } else {
        check_signature(&ctx.rt, target)
    };
    match checked {
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
pub(super) fn key(rt: &Runtime, target: &Target) -> CacheKey {
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
pub(super) fn reference_key(rt: &Runtime, host: Option<&str>, reference: &str) -> Option<CacheKey> {
    let mut target = Target::from_reference(host, reference).ok()?;
    match check_signature(rt, &mut target) {
        Ok(()) | Err(TokenError::Missing) => {}
        Err(_) => return None,
    }
    target.check_no_encoded_slash().ok()?;
    Some(key(rt, &target))
}

/// Phase `cmcd`: runs after the key is known. Common Media Client Data goes to the access log
/// and metrics; returns the key of a `nor` (next object request) to prefetch when
/// `prefetch.cmcd_nor` is on.
pub(super) fn cmcd(
    ctx: &Ctx,
    parts: &http::request::Parts,
    target: &Target,
    out: &mut Outcome,
) -> Option<CacheKey> {
    let c = Cmcd::from_request(parts.uri.query(), &parts.headers);
    if c.is_empty() {
        return None;
    }
    crate::metrics::cmcd(c.object_type.as_deref(), c.starved);
    let cfg = &ctx.rt.config.prefetch;
    let next = match &c.next_object {
        Some(nor) if cfg.enabled && cfg.cmcd_nor => {
            crate::media::resolve(&target.path, &crate::percent::decode(nor))
                .and_then(|reference| reference_key(&ctx.rt, target.host.as_deref(), &reference))
        }
        _ => None,
    };
    out.cmcd = Some(c);
    next
}

/// The LL-HLS delivery directives in a key's query, if it has any: the requests phase
/// `ll_hls` runs for.
pub(super) fn ll_directives(key: &CacheKey) -> Option<Directives> {
    let (_, query) = key.as_str().split_once('?')?;
    let directives = Directives::from_query(Some(query));
    directives.any().then_some(directives)
}

/// Phase `ll_hls`: runs before lookup for requests with LL-HLS delivery directives (found by
/// [`ll_directives`]). On an ended playlist (ENDLIST) the directives are ignored (the plain
/// playlist is served); a blocking reload (`_HLS_msn`) may wait for the origin longer than
/// three target durations.
pub(super) async fn ll_hls(
    ctx: &Ctx,
    parts: &http::request::Parts,
    key: CacheKey,
    directives: Directives,
) -> (CacheKey, Duration) {
    let base = ctx.rt.config.fetch.first_byte_timeout;
    let Some(plain) = key.without_directives() else {
        return (key, base);
    };
    let playlist = match ctx.proxy.store.lookup(&plain, &parts.headers).await {
        Lookup::Found(_, obj) => match obj.media {
            Some(m) if !m.live => Playlist::Ended,
            Some(m) => Playlist::Live(m.target_duration),
            None => Playlist::Unknown,
        },
        _ => Playlist::Unknown,
    };
    match llhls::plan(directives, playlist, base) {
        None => (plain, base),
        Some(timeout) => (key, timeout),
    }
}
