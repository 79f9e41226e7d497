//! What live requests are answered from: a live playlist or MPD's latest rendering, kept until
//! its window moves, and segments retimed to the loop they are asked for (and split into
//! LL-HLS parts), a few copies kept.
//! `respond` picks which one a request wants.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::clock::Micros;
use super::files::Entity;
use super::{hls, mp4};

pub(super) const HLS_TYPE: &str = "application/vnd.apple.mpegurl";
pub(super) const DASH_TYPE: &str = "application/dash+xml";

/// Retimed copies (and split ones) kept per segment: a live window spans at most two loops,
/// and a couple more cover players lagging behind.
const RETIMED_COPIES: usize = 4;

/// The length LL-HLS parts are cut to (by decode time; a part holds the samples that start
/// in its half second).
pub(super) const PART_LENGTH: Micros = 500_000;

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

/// The latest few values made for some keys, oldest dropped first.
struct Recent<K, V> {
    entries: Mutex<VecDeque<(K, V)>>,
}

impl<K: PartialEq + Copy, V: Clone> Recent<K, V> {
    fn new() -> Self {
        Recent {
            entries: Mutex::new(VecDeque::with_capacity(RETIMED_COPIES)),
        }
    }

    /// The value for `key`: a kept one, or one `make` makes (outside the lock; concurrent
    /// misses make the same value), then kept.
    fn get<E>(&self, key: K, make: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        {
            let recent = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, v)) = recent.iter().find(|(k, _)| *k == key) {
                return Ok(v.clone());
            }
        }
        let v = make()?;
        let mut recent = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !recent.iter().any(|(k, _)| *k == key) {
            if recent.len() == RETIMED_COPIES {
                recent.pop_front();
            }
            recent.push_back((key, v.clone()));
        }
        Ok(v)
    }
}

/// A segment whose decode times can be shifted, and its latest few retimed copies.
pub(super) struct Retimable {
    sites: Vec<mp4::Site>,
    /// Keyed by (loops, loop length).
    recent: Recent<(u64, Micros), Entity>,
}

impl Retimable {
    pub(super) fn new(sites: Vec<mp4::Site>) -> Retimable {
        Retimable {
            sites,
            recent: Recent::new(),
        }
    }

    /// `file` as loop `loops` of content `loop_len` long, from the recent copies when one
    /// was made already.
    pub(super) fn retimed(&self, file: &Entity, loops: u64, loop_len: Micros) -> Entity {
        let Ok(e) = self.recent.get((loops, loop_len), || {
            Ok::<_, Infallible>(file.with_body(Bytes::from(mp4::shift(
                &file.body,
                &self.sites,
                loops,
                loop_len,
            ))))
        });
        e
    }
}

/// A segment of an LL-HLS playlist: where it is, how to split it, and the parts of its latest
/// few loops.
pub(super) struct Partable {
    /// The LL playlist's key, and the segment's index in one loop of it.
    pub(super) playlist: String,
    pub(super) index: usize,
    /// The segment's own key (`hls/seg-0-003.m4s`).
    pub(super) segment: String,
    tracks: mp4::Tracks,
    /// Keyed by loop.
    recent: Recent<u64, Arc<Vec<Entity>>>,
}

impl Partable {
    pub(super) fn new(
        playlist: String,
        index: usize,
        segment: String,
        tracks: mp4::Tracks,
    ) -> Partable {
        Partable {
            playlist,
            index,
            segment,
            tracks,
            recent: Recent::new(),
        }
    }

    /// The parts of `segment` (loop `loops` of this one): each an entity of its own, with its
    /// own strong validator. `None` if it cannot be split.
    pub(super) fn parts(&self, segment: &Entity, loops: u64) -> Option<Arc<Vec<Entity>>> {
        self.recent
            .get(loops, || {
                let split = mp4::split(&segment.body, &self.tracks, PART_LENGTH).ok_or(())?;
                let parts = split
                    .parts
                    .into_iter()
                    .map(|p| segment.with_body(Bytes::from(p)))
                    .collect();
                Ok::<_, ()>(Arc::new(parts))
            })
            .ok()
    }
}

/// The LL-HLS view of a live media playlist: its latest rendering, keyed by the newest part,
/// and the sibling renditions it reports on.
pub(super) struct LowLatencyView {
    pub(super) live: Live<hls::LowLatency, Option<hls::PartRef>>,
    /// (URI relative to this playlist, key) of the other LL playlists of the stream.
    pub(super) siblings: Vec<(String, String)>,
}

impl LowLatencyView {
    pub(super) fn new(ll: hls::LowLatency) -> LowLatencyView {
        LowLatencyView {
            live: Live::new(ll),
            siblings: Vec::new(),
        }
    }
}
