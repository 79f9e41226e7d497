//! RFC 9111 for a shared cache: Cache-Control parsing, storability, freshness and age.
//!
//! Pure functions over headers and instants; the request path asks, this module decides.

use std::time::{Duration, SystemTime};

use http::header::{AGE, AUTHORIZATION, CACHE_CONTROL, DATE, ETAG, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use super::key::ContentKind;
use crate::config::CacheConfig;

/// RFC 9111 §1.2.2: delta-seconds that overflow are taken as 2^31.
const DELTA_MAX: u64 = 2_147_483_648;

/// Parsed `Cache-Control` (or a targeted field such as `CDN-Cache-Control`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub no_transform: bool,
    pub immutable: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    pub min_fresh: Option<u64>,
    /// `max-stale` with no value means any staleness.
    pub max_stale: Option<Option<u64>>,
    pub only_if_cached: bool,
    /// At least one directive was present.
    pub present: bool,
}

impl CacheControl {
    /// Parses every line of `name` in `headers`, combined as one list.
    pub fn from_headers(
        headers: &HeaderMap,
        name: impl http::header::AsHeaderName,
    ) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(name) {
            cc.parse_into(value.as_bytes());
        }
        cc
    }

    pub fn parse(value: &str) -> CacheControl {
        let mut cc = CacheControl::default();
        cc.parse_into(value.as_bytes());
        cc
    }

    fn parse_into(&mut self, value: &[u8]) {
        let text = String::from_utf8_lossy(value);
        for (name, arg) in split_directives(&text) {
            self.present = true;
            let delta = || arg.as_deref().map(parse_delta);
            match name.as_str() {
                "max-age" => merge_delta(&mut self.max_age, delta()),
                "s-maxage" => merge_delta(&mut self.s_maxage, delta()),
                "no-store" => self.no_store = true,
                // Qualified `no-cache="field"` is treated as unqualified: always revalidate.
                "no-cache" => self.no_cache = true,
                // Qualified `private="field"`: a shared cache must not store those fields; we
                // store nothing of such responses, which is the safe reading.
                "private" => self.private = true,
                "public" => self.public = true,
                "must-revalidate" => self.must_revalidate = true,
                "proxy-revalidate" => self.proxy_revalidate = true,
                "no-transform" => self.no_transform = true,
                "immutable" => self.immutable = true,
                "stale-while-revalidate" => merge_delta(&mut self.stale_while_revalidate, delta()),
                "stale-if-error" => merge_delta(&mut self.stale_if_error, delta()),
                "min-fresh" => merge_delta(&mut self.min_fresh, delta()),
                "max-stale" => {
                    self.max_stale = Some(arg.as_deref().map(parse_delta));
                }
                "only-if-cached" => self.only_if_cached = true,
                _ => {}
            }
        }
    }
}

/// Directive argument: digits, possibly quoted. Invalid values make the response stale (0).
fn parse_delta(s: &str) -> u64 {
    let s = s.trim().trim_matches('"');
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    s.parse::<u64>().unwrap_or(DELTA_MAX).min(DELTA_MAX)
}

/// RFC 9111 §4.2.1: with conflicting duplicates, consider the response stale.
fn merge_delta(slot: &mut Option<u64>, new: Option<u64>) {
    // A directive that needs a value but has none is invalid: stale.
    let new = new.unwrap_or(0);
    *slot = match *slot {
        None => Some(new),
        Some(old) if old == new => Some(old),
        Some(_) => Some(0),
    };
}

/// Splits a Cache-Control value into lower-cased names and optional (unquoted) arguments,
/// honouring commas inside quoted strings.
fn split_directives(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // Skip separators.
        while i < bytes.len() && (bytes[i] == b',' || bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b',' && bytes[i] != b'=' {
            i += 1;
        }
        let name = text[start..i].trim().to_ascii_lowercase();
        let mut arg = None;
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
                i += 1;
            }
            if i < bytes.len() && bytes[i] == b'"' {
                i += 1;
                let mut value = String::new();
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' && i + 1 < bytes.len() {
                        i += 1;
                    }
                    value.push(bytes[i] as char);
                    i += 1;
                }
                i += 1; // closing quote
                while i < bytes.len() && bytes[i] != b',' {
                    i += 1;
                }
                arg = Some(value);
            } else {
                let s = i;
                while i < bytes.len() && bytes[i] != b',' {
                    i += 1;
                }
                arg = Some(text[s..i].trim().to_owned());
            }
        }
        if !name.is_empty() {
            out.push((name, arg));
        }
    }
    out
}

/// Statuses that may be cached heuristically (RFC 9110 §15.1).
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Statuses a cache understands well enough to store with explicit freshness.
fn understood(status: StatusCode) -> bool {
    let s = status.as_u16();
    (200..600).contains(&s) && s != 206 && s != 304
}

/// Parses an HTTP-date; invalid dates are `None`.
pub fn http_date(headers: &HeaderMap, name: http::header::HeaderName) -> Option<SystemTime> {
    let v = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(v.trim()).ok()
}

/// Why a response may not be stored or shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoStore,
    Private,
    SetCookie,
    VaryStar,
    Authorization,
    Status,
    NoFreshness,
}

impl Refusal {
    /// Whether the response must not be handed to other clients' requests either.
    pub fn forbids_sharing(self) -> bool {
        matches!(
            self,
            Refusal::NoStore
                | Refusal::Private
                | Refusal::SetCookie
                | Refusal::VaryStar
                | Refusal::Authorization
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoStore => "no-store",
            Refusal::Private => "private",
            Refusal::SetCookie => "set-cookie",
            Refusal::VaryStar => "vary-star",
            Refusal::Authorization => "authorization",
            Refusal::Status => "status",
            Refusal::NoFreshness => "no-freshness",
        }
    }
}

/// Freshness of a stored response, with the instants needed for RFC 9111 §4.2.3 ages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// When the response was received (tokio clock, so tests can pause time).
    pub stored_at: Instant,
    /// `corrected_initial_age` at `stored_at`.
    pub initial_age: Duration,
    pub lifetime: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// must-revalidate / proxy-revalidate / s-maxage: never serve stale.
    pub must_revalidate: bool,
    /// no-cache: revalidate before every use.
    pub no_cache: bool,
    /// Never serve older than this (live manifests: one target duration), except in place of
    /// a failed origin within `stale_if_error`.
    pub max_age: Option<Duration>,
}

impl Freshness {
    /// Stale from the start, with no stale windows: an object kept only for its head.
    pub fn expired_now(now: Instant) -> Freshness {
        Freshness {
            stored_at: now,
            initial_age: Duration::ZERO,
            lifetime: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            must_revalidate: false,
            no_cache: false,
            max_age: None,
        }
    }

    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored_at)
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        !self.no_cache && self.lifetime > self.age(now)
    }

    /// Seconds of freshness left; negative once stale (RFC 9211 `ttl`): a response stale by
    /// any part of a second says at least -1, never 0.
    pub fn ttl_secs(&self, now: Instant) -> i64 {
        let age = self.age(now);
        if self.lifetime > age {
            self.lifetime.as_secs() as i64 - age.as_secs() as i64
        } else {
            let stale = age - self.lifetime;
            let secs = stale
                .as_secs()
                .saturating_add(u64::from(stale.subsec_nanos() > 0))
                .max(1);
            -i64::try_from(secs).unwrap_or(i64::MAX)
        }
    }

    /// How long past its freshness the object is.
    pub fn staleness(&self, now: Instant) -> Duration {
        self.age(now).saturating_sub(self.lifetime)
    }

    /// Whether the object is young enough to be served at all (live manifest cap).
    pub fn within_cap(&self, now: Instant) -> bool {
        self.max_age.is_none_or(|cap| self.age(now) <= cap)
    }

    pub fn may_serve_stale_while_revalidate(&self, now: Instant) -> bool {
        self.within_cap(now)
            && !self.must_revalidate
            && !self.no_cache
            && self.staleness(now) <= self.stale_while_revalidate
            && self.stale_while_revalidate > Duration::ZERO
    }

    /// Stale in place of a failed origin (RFC 5861 §4), within `stale-if-error`. The live
    /// manifest cap does not apply here: while the origin fails, the newest playlist the edge
    /// has is still the best answer, and a player that reloads it sees it unchanged and waits,
    /// where an error would make it give up.
    pub fn may_serve_stale_on_error(&self, now: Instant) -> bool {
        !self.must_revalidate
            && self.stale_if_error > Duration::ZERO
            && self.staleness(now) <= self.stale_if_error
    }

    /// Whether this stale copy may answer instead of an origin failure (RFC 5861 §4): within
    /// its `stale-if-error` window, or — when no origin is usable at all (`no_origin`) — as
    /// long as it does not require revalidation and is within its cap.
    pub fn may_answer_for_failed_origin(&self, now: Instant, no_origin: bool) -> bool {
        self.may_serve_stale_on_error(now)
            || (no_origin && !self.must_revalidate && self.within_cap(now))
    }

    /// Never served older than `until` (age), not even in place of a failed origin: a
    /// forwarding node's short-lived copy.
    pub fn limit_age(&mut self, until: Duration) {
        self.lifetime = self.lifetime.min(until);
        self.stale_if_error = self.stale_if_error.min(until.saturating_sub(self.lifetime));
        self.max_age = Some(self.max_age.map_or(until, |cap| cap.min(until)));
    }

    /// How long the cache should keep the object at all (a backstop for moka): never past
    /// the age it may no longer be served at (`max_age`, plus `stale_if_error` for a copy in
    /// place of a failed origin).
    pub fn retention(&self, has_validator: bool, stale_retention: Duration) -> Duration {
        let remaining = self.lifetime.saturating_sub(self.initial_age);
        let stale = self
            .stale_while_revalidate
            .max(self.stale_if_error)
            .max(if has_validator {
                stale_retention
            } else {
                Duration::ZERO
            });
        let keep = remaining + stale;
        // Capped (live manifests): kept as long as it may still be served, fresh within its cap
        // or in place of a failed origin.
        self.max_age.map_or(keep, |cap| {
            let last = cap.max(self.lifetime.saturating_add(self.stale_if_error));
            keep.min(last.saturating_sub(self.initial_age))
        })
    }
}

/// The storage decision for one origin response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `Err` when the response must not be stored.
    pub store: Result<Freshness, Refusal>,
}

/// The facts of one exchange the decision needs besides the response headers.
pub struct Exchange<'a> {
    pub request_headers: &'a HeaderMap,
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
    pub kind: ContentKind,
    /// When the origin request was sent and the response received (wall clock).
    pub request_time: SystemTime,
    pub response_time: SystemTime,
    /// The tokio instant matching `response_time`.
    pub received_at: Instant,
    /// What the body (a manifest) says about its own timing, if anything.
    pub media: Option<MediaTiming>,
}

/// Timing a manifest gives itself: a lifetime when the origin says nothing, and for live
/// manifests a hard cap on the age at which it may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MediaTiming {
    pub lifetime: Option<Duration>,
    pub cap: Option<Duration>,
}

/// The field that targets this cache (RFC 9213): the edge-specific one if configured and
/// present, else `CDN-Cache-Control`, else `Cache-Control`. `true` when a targeted field won.
pub fn effective_cache_control(
    headers: &HeaderMap,
    edge_header: Option<&http::header::HeaderName>,
) -> (CacheControl, bool) {
    if let Some(name) = edge_header {
        let own = CacheControl::from_headers(headers, name);
        if own.present {
            return (own, true);
        }
    }
    let targeted = CacheControl::from_headers(headers, "cdn-cache-control");
    if targeted.present {
        (targeted, true)
    } else {
        (CacheControl::from_headers(headers, CACHE_CONTROL), false)
    }
}

pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(ETAG) || headers.contains_key(LAST_MODIFIED)
}

/// Decides whether and for how long a response may be stored (RFC 9111 §3, §4.2).
pub fn decide(x: &Exchange<'_>, cfg: &CacheConfig) -> Decision {
    Decision {
        store: decide_inner(x, cfg),
    }
}

fn decide_inner(x: &Exchange<'_>, cfg: &CacheConfig) -> Result<Freshness, Refusal> {
    let (cc, targeted) = effective_cache_control(x.headers, cfg.targeted_header.as_ref());
    storable(x, &cc, cfg)?;
    let date = http_date(x.headers, DATE);
    let explicit = explicit_lifetime(x, &cc, targeted, date);
    let lifetime = explicit.unwrap_or_else(|| default_lifetime(x, cfg, date));
    if lifetime.is_zero() && !(has_validator(x.headers) && (explicit.is_some() || cc.no_cache)) {
        return Err(Refusal::NoFreshness);
    }
    // A live manifest is never served older than one target duration, whatever its headers
    // (except in place of a failed origin, within stale-if-error).
    let cap = x.media.and_then(|m| m.cap);
    let default_stale = |d: &crate::config::KindDurations| match x.kind {
        ContentKind::Manifest => d.manifest,
        ContentKind::Segment => d.segment,
        ContentKind::Other => d.other,
    };
    Ok(Freshness {
        stored_at: x.received_at,
        initial_age: initial_age(x, date),
        lifetime: cap.map_or(lifetime, |c| lifetime.min(c)),
        stale_while_revalidate: cc.stale_while_revalidate.map_or(
            default_stale(&cfg.stale_while_revalidate),
            Duration::from_secs,
        ),
        // A live manifest may stand in for a failing origin past its cap, but not longer than
        // the configured manifest window, whatever the origin's headers say (a generic
        // `stale-if-error=86400` must not bring back a day-old live playlist).
        stale_if_error: cc
            .stale_if_error
            .map_or(default_stale(&cfg.stale_if_error), Duration::from_secs)
            .min(if cap.is_some() {
                cfg.stale_if_error.manifest
            } else {
                Duration::MAX
            }),
        must_revalidate: cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some(),
        no_cache: cc.no_cache,
        max_age: cap,
    })
}

/// RFC 9111 §3 (and the edge's own rules): whether the response may be stored at all.
fn storable(x: &Exchange<'_>, cc: &CacheControl, cfg: &CacheConfig) -> Result<(), Refusal> {
    let request_cc = CacheControl::from_headers(x.request_headers, CACHE_CONTROL);
    if cc.no_store || request_cc.no_store {
        return Err(Refusal::NoStore);
    }
    if cc.private {
        return Err(Refusal::Private);
    }
    if x.headers.contains_key(http::header::SET_COOKIE) && !cfg.store_set_cookie {
        return Err(Refusal::SetCookie);
    }
    if x.headers.get_all(http::header::VARY).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|p| p.trim() == "*"))
    }) {
        return Err(Refusal::VaryStar);
    }
    if x.request_headers.contains_key(AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err(Refusal::Authorization);
    }
    if !understood(x.status) {
        return Err(Refusal::Status);
    }
    Ok(())
}

/// RFC 9111 §4.2.1: `s-maxage`, `max-age`, or `Expires` (not when a targeted field decided).
fn explicit_lifetime(
    x: &Exchange<'_>,
    cc: &CacheControl,
    targeted: bool,
    date: Option<SystemTime>,
) -> Option<Duration> {
    if let Some(s) = cc.s_maxage {
        Some(Duration::from_secs(s))
    } else if let Some(m) = cc.max_age {
        Some(Duration::from_secs(m))
    } else if !targeted && x.headers.contains_key(EXPIRES) {
        // An invalid Expires (e.g. "0") means already expired.
        let expires = http_date(x.headers, EXPIRES);
        let base = date.unwrap_or(x.response_time);
        Some(
            expires
                .and_then(|e| e.duration_since(base).ok())
                .unwrap_or(Duration::ZERO),
        )
    } else {
        None
    }
}

/// The lifetime without explicit freshness: negative TTL for 404/410, the media kind's (or
/// the manifest's own timing) for media, heuristic freshness from Last-Modified (RFC 9111
/// §4.2.2), the `other` TTL, or nothing.
fn default_lifetime(x: &Exchange<'_>, cfg: &CacheConfig, date: Option<SystemTime>) -> Duration {
    let status = x.status.as_u16();
    if matches!(status, 404 | 410) {
        cfg.ttl.negative
    } else if matches!(status, 200 | 203) && x.kind != ContentKind::Other {
        x.media.and_then(|m| m.lifetime).unwrap_or(match x.kind {
            ContentKind::Manifest => cfg.ttl.manifest,
            _ => cfg.ttl.segment,
        })
    } else if let (true, Some(lm)) = (
        heuristically_cacheable(x.status) && x.status != StatusCode::PARTIAL_CONTENT,
        http_date(x.headers, LAST_MODIFIED),
    ) {
        let base = date.unwrap_or(x.response_time);
        let since = base.duration_since(lm).unwrap_or(Duration::ZERO);
        since.mul_f64(cfg.heuristic_fraction).min(cfg.heuristic_max)
    } else if matches!(status, 200 | 203) {
        cfg.ttl.other
    } else {
        Duration::ZERO
    }
}

/// RFC 9111 §4.2.3: the age of the response when it was received.
fn initial_age(x: &Exchange<'_>, date: Option<SystemTime>) -> Duration {
    let age_value = x
        .headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .map(parse_delta)
        .unwrap_or(0);
    // `Date` has whole seconds: compare at that resolution, or the sub-second part of our
    // clock counts as age and eats up to a second of a one-second manifest's lifetime.
    let apparent_age = date
        .and_then(|d| x.response_time.duration_since(d).ok())
        .map_or(Duration::ZERO, |a| Duration::from_secs(a.as_secs()));
    let response_delay = x
        .response_time
        .duration_since(x.request_time)
        .unwrap_or(Duration::ZERO);
    apparent_age.max(Duration::from_secs(age_value) + response_delay)
}

#[cfg(test)]
mod tests;
