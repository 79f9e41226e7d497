//! LL-HLS requests under `/ll/`: the LL playlist and parts of a live media playlist, blocking
//! playlist reloads held until the playlist has the part they ask for, and a part asked for
//! ahead of time (the preload hint) held until it is produced; every hold bounded.
//!
//! Holding is a phase of its own ([`Origin::hold`]) before the response is built, so the
//! response is the same code as for any other request once the time has come.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, Uri};
use http_body_util::Full;
use tokio::time::Instant;

use super::clock::{self, Micros};
use super::files::Entity;
use super::hls::{LowLatency, PartRef, Report};
use super::live::{HLS_TYPE, Partable};
use super::respond::plain;
use super::{Origin, paths};
use crate::llhls::Directives;

/// The longest any request is held, whatever the playlist's target duration says.
const MAX_HOLD: Duration = Duration::from_secs(30);

/// Holds are bounded by this many target durations (RFC 8216bis: three), then answered 503.
const HOLD_TARGETS: u32 = 3;

/// Freshness of a blocking reload's answer: what it was asked for is in it for good.
const DIRECTED_MAX_AGE: HeaderValue = HeaderValue::from_static("max-age=60");

/// What the response to a request that was held (or not) adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// Nothing: not held, or a part (which is cached like any segment).
    None,
    /// A blocking playlist reload.
    Directed,
}

impl Hold {
    pub(super) fn cache_control(self) -> Option<HeaderValue> {
        match self {
            Hold::None => None,
            Hold::Directed => Some(DIRECTED_MAX_AGE),
        }
    }
}

impl Origin {
    /// Phase `hold`: runs before the response for `/ll/` playlists and parts. A blocking
    /// reload waits until the playlist has what it asks for ([`Origin::hold_reload`]), a part
    /// until it is produced ([`Origin::hold_part`]). Everything else passes at once.
    pub(super) async fn hold(
        &self,
        method: &Method,
        uri: &Uri,
    ) -> Result<Hold, Response<Full<Bytes>>> {
        if method != Method::GET && method != Method::HEAD {
            return Ok(Hold::None);
        }
        let Ok((paths::View::LowLatency, key)) = paths::parse(uri.path()) else {
            return Ok(Hold::None);
        };
        if let Some(view) = self.ll_hls.get(&key) {
            return self.hold_reload(&view.live.source, uri.query()).await;
        }
        match self.part_of(&key) {
            Some((partable, _, p)) => self.hold_part(&partable.playlist, p).await,
            None => Ok(Hold::None),
        }
    }

    /// A playlist request with `_HLS_msn` (and `_HLS_part`) waits until the part (or the
    /// whole segment) is out; 400 for an msn more than two segments past the last complete
    /// one (RFC 8216bis 6.2.5.2), or `_HLS_part` alone. Without directives, no wait.
    async fn hold_reload(
        &self,
        ll: &LowLatency,
        query: Option<&str>,
    ) -> Result<Hold, Response<Full<Bytes>>> {
        let d = Directives::from_query(query);
        let Some(msn) = d.msn else {
            return match d.part {
                Some(_) => Err(refused(StatusCode::BAD_REQUEST, "bad request\n")),
                None => Ok(Hold::None),
            };
        };
        let last = ll
            .playlist
            .available(self.clock.elapsed())
            .saturating_sub(1);
        if msn > last.saturating_add(2) {
            return Err(refused(StatusCode::BAD_REQUEST, "bad request\n"));
        }
        let wanted = match d.part {
            None => ll.last_part_of(msn),
            Some(part) => ll.normalize(PartRef { msn, part }),
        };
        let at = ll.end_of(wanted).unwrap_or(Micros::MAX);
        match self.wait_until(at, ll.target_duration()).await {
            true => Ok(Hold::Directed),
            false => Err(refused(StatusCode::SERVICE_UNAVAILABLE, "not yet\n")),
        }
    }

    /// Part `p` of LL playlist `playlist`: at once if it is out, after a wait if it is the
    /// next part (the preload hint) or the one after, else 404.
    async fn hold_part(&self, playlist: &str, p: PartRef) -> Result<Hold, Response<Full<Bytes>>> {
        let ll = &self.ll_hls[playlist].live.source;
        let Some(at) = ll.end_of(p) else {
            return Ok(Hold::None);
        };
        let now = self.clock.elapsed();
        if at <= now {
            return Ok(Hold::None);
        }
        let hint = ll
            .newest(now)
            .map_or(PartRef { msn: 0, part: 0 }, |n| ll.next(n));
        if p != hint && p != ll.next(hint) {
            return Err(refused(StatusCode::NOT_FOUND, "not found\n"));
        }
        match self.wait_until(at, ll.target_duration()).await {
            true => Ok(Hold::None),
            false => Err(refused(StatusCode::SERVICE_UNAVAILABLE, "not yet\n")),
        }
    }

    /// Waits until the live clock reaches `at`, or for [`HOLD_TARGETS`] × `target` but never
    /// longer than [`MAX_HOLD`] (a `--dir` playlist may state any target duration); whether it
    /// got there.
    pub(super) async fn wait_until(&self, at: Micros, target: Micros) -> bool {
        let hold = Duration::from_micros(target)
            .saturating_mul(HOLD_TARGETS)
            .min(MAX_HOLD);
        let deadline = Instant::now() + hold;
        loop {
            let now = self.clock.elapsed();
            if now >= at {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            tokio::time::sleep(Duration::from_micros(at - now).min(left)).await;
        }
    }

    /// What `/ll/<key>` serves: an LL playlist's current rendering, a part, or what `/live/`
    /// serves under the same key.
    pub(super) fn low_latency(&self, key: &str) -> Option<Entity> {
        let elapsed = self.clock.elapsed();
        if let Some(view) = self.ll_hls.get(key) {
            let ll = &view.live.source;
            return Some(view.live.get(ll.newest(elapsed), |ll| {
                let reports: Vec<Report> = view
                    .siblings
                    .iter()
                    .filter_map(|(uri, sibling)| {
                        let last = self.ll_hls.get(sibling)?.live.source.newest(elapsed)?;
                        Some(Report {
                            uri: uri.clone(),
                            last,
                        })
                    })
                    .collect();
                let date = |us: Micros| clock::format_utc(self.clock.wall(us));
                let w = ll.live(elapsed, self.window, date, &reports);
                Entity::new(Bytes::from(w.body), HLS_TYPE, self.clock.wall(w.changed_at))
            }));
        }
        if let Some((partable, loops, p)) = self.part_of(key) {
            let &loop_len = self.looped.get(&partable.segment)?;
            let segment = self.retimed(&partable.segment, loops, loop_len)?;
            let parts = partable.parts(&segment, loops)?;
            return parts.get(usize::try_from(p.part).ok()?).cloned();
        }
        self.live(key)
    }

    /// The segment, loop and part that `key` (`hls/loop-3/seg-0-003.p2.m4s`) names.
    fn part_of(&self, key: &str) -> Option<(&Partable, u64, PartRef)> {
        let (file, loops) = paths::split_loop(key)?;
        let (stem, part, ext) = paths::split_part(&file)?;
        let partable = self.partable.get(&(stem.to_owned(), ext.to_owned()))?;
        let ll = &self.ll_hls.get(&partable.playlist)?.live.source;
        let msn = loops
            .checked_mul(ll.playlist.segment_count())?
            .checked_add(partable.index as u64)?;
        (part < ll.parts_in(msn)).then_some((partable, loops, PartRef { msn, part }))
    }
}

/// An error answer to an LL-HLS request that no cache should keep: the same request may be
/// answered differently a moment later.
fn refused(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = plain(status, text);
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}
