//! What live requests are answered from: a live playlist or MPD's latest rendering, kept until
//! its window moves, and segments retimed to the loop they are asked for, a few copies kept.
//! `respond` picks which one a request wants.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

use super::clock::Micros;
use super::files::Entity;
use super::mp4;

pub(super) const HLS_TYPE: &str = "application/vnd.apple.mpegurl";
pub(super) const DASH_TYPE: &str = "application/dash+xml";

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

    /// `file` as loop `loops` of content `loop_len` long, from the recent copies when one
    /// was made already.
    pub(super) fn retimed(&self, file: &Entity, loops: u64, loop_len: Micros) -> Entity {
        let id = (loops, loop_len);
        {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, e)) = recent.iter().find(|(k, _)| *k == id) {
                return e.clone();
            }
        }
        let e = file.with_body(Bytes::from(mp4::shift(
            &file.body,
            &self.sites,
            loops,
            loop_len,
        )));
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if !recent.iter().any(|(k, _)| *k == id) {
            if recent.len() == RETIMED_COPIES {
                recent.pop_front();
            }
            recent.push_back((id, e.clone()));
        }
        e
    }
}
