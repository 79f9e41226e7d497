//! Live requests: a live playlist or MPD rendered for the current moment and kept until its
//! window moves, and segments retimed to the loop they are asked for, kept while it is live.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

use super::clock::{self, Micros};
use super::files::Entity;
use super::{Origin, mp4, paths};

pub(super) const HLS_TYPE: &str = "application/vnd.apple.mpegurl";
const DASH_TYPE: &str = "application/dash+xml";

/// Retimed copies kept per segment: a live window spans at most two loops,
/// and a couple more cover players lagging behind.
const RETIMED_COPIES: usize = 4;

/// A live view and its latest rendering, keyed by what makes it change.
pub(super) struct Live<T, K> {
    pub(super) source: T,
    latest: Mutex<Option<(K, Entity)>>,
}

impl<T, K: PartialEq + Copy> Live<T, K> {
    pub(super) fn new(source: T) -> Self {
        Live {
            source,
            latest: Mutex::new(None),
        }
    }

    /// The rendering for `key`: the cached one while the key is the same, else a fresh one.
    pub(super) fn get(&self, key: K, render: impl FnOnce(&T) -> Entity) -> Entity {
        // A panic elsewhere cannot leave a half-written cache entry (the
        // Option is replaced whole), so a poisoned lock is still usable.
        if let Some((k, e)) = &*self.latest.lock().unwrap_or_else(|e| e.into_inner())
            && *k == key
        {
            return e.clone();
        }
        // Rendered outside the lock; concurrent misses render the same text.
        let fresh = render(&self.source);
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, fresh.clone()));
        fresh
    }
}

/// A segment whose decode times can be shifted, and its latest few retimed copies.
pub(super) struct Retimable {
    sites: Vec<mp4::Site>,
    /// ((loops, loop length), segment) for the latest few loops served.
    recent: Mutex<VecDeque<((u64, Micros), Entity)>>,
}

impl Retimable {
    pub(super) fn new(sites: Vec<mp4::Site>) -> Retimable {
        Retimable {
            sites,
            recent: Mutex::new(VecDeque::with_capacity(RETIMED_COPIES)),
        }
    }
}

impl Origin {
    /// What `/live/<key>` serves: the current rendering of a live playlist or MPD, or a file,
    /// a segment of a loop directory or a `$Number$` past the first loop, retimed to its loop
    /// where the view shifts timestamps.
    pub(super) fn live(&self, key: &str) -> Option<Entity> {
        let elapsed = self.clock.elapsed();
        let date = |us: Micros| clock::format_utc(self.clock.wall(us));
        if let Some(live) = self.live_hls.get(key) {
            return Some(live.get(live.source.available(elapsed), |p| {
                let w = p.live(elapsed, self.window, date);
                Entity::new(Bytes::from(w.body), HLS_TYPE, self.clock.wall(w.changed_at))
            }));
        }
        if let Some(live) = self.live_dash.get(key) {
            return Some(live.get(live.source.loops(elapsed, self.window), |m| {
                let l = m.live(elapsed, self.window, &self.epoch_text, date);
                Entity::new(
                    Bytes::from(l.body),
                    DASH_TYPE,
                    self.clock.wall(l.published_at),
                )
            }));
        }
        if key.to_ascii_lowercase().ends_with(".mpd") {
            // An MPD that cannot loop (dynamic, multi-Period…) has no live
            // form; serving it static under /live would mislead.
            return None;
        }
        if let Some(e) = self.files.get(key) {
            return Some(e.clone());
        }
        if let Some((file, loops)) = paths::split_loop(key)
            && let Some(&loop_len) = self.looped.get(&file)
        {
            return self.retimed(&file, loops, loop_len);
        }
        let (alias, shift) = self
            .numbered
            .iter()
            .find(|(a, _)| a.resolve(key).is_some())?;
        let (file, loops) = alias.resolve(key)?;
        match shift {
            Some(loop_len) => self.retimed(&file, loops, *loop_len),
            None => self.files.get(&file).cloned(),
        }
    }

    /// Segment `key` as loop `loops` of content `loop_len` long.
    fn retimed(&self, key: &str, loops: u64, loop_len: Micros) -> Option<Entity> {
        let file = self.files.get(key)?;
        let r = self.retimable.get(key)?;
        if loops == 0 {
            return Some(file.clone());
        }
        let id = (loops, loop_len);
        {
            let recent = r.recent.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, e)) = recent.iter().find(|(k, _)| *k == id) {
                return Some(e.clone());
            }
        }
        let e = file.with_body(Bytes::from(mp4::shift(
            &file.body, &r.sites, loops, loop_len,
        )));
        let mut recent = r.recent.lock().unwrap_or_else(|e| e.into_inner());
        if !recent.iter().any(|(k, _)| *k == id) {
            if recent.len() == RETIMED_COPIES {
                recent.pop_front();
            }
            recent.push_back((id, e.clone()));
        }
        Some(e)
    }
}
