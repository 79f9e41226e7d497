//! The in-flight table: one origin fetch per cache slot, its body fanned out to every
//! waiting request as the chunks arrive, and failures delivered as errors, never as a clean end.
//!
//! A `Fill` is a shared, append-only buffer. Its writer is a detached task that owns the origin
//! request; readers (the request that started it included) replay what is buffered and are
//! woken through a `watch` channel for each new chunk. A fill that turns out larger than the
//! object size limit switches to streaming mode: it leaves the table, refuses new readers, and
//! drops the chunks every reader has passed, pacing the origin to the slowest reader.

mod budget;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use budget::{Budget, Lease};
pub use reader::{FillReader, HeadOutcome};
pub use writer::{FillWriter, Push};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, StatusCode};
use tokio::sync::watch;

use super::key::{ContentKind, StoreKey};
use super::policy::Freshness;
use crate::error::EdgeError;

/// How far (in bytes) a fill may run ahead of the reader it is paced to: its fastest reader
/// while it keeps the whole body (to store it), its slowest once it streams.
const WINDOW: u64 = 1 << 20;

/// The same, while the in-flight budget is exhausted: fills whose readers keep up go on, the
/// others stop reading from their origin.
const TIGHT_WINDOW: u64 = 64 << 10;

/// The most one read hands out (a stored body a finished fill reads from is one chunk): a
/// frame at a time, so a client that stops reading is seen to stop.
const READ_MAX: usize = 256 << 10;

/// How often, at most, all fills are looked over for memory to give back.
const SHED_EVERY: Duration = Duration::from_millis(10);

/// How often a fill waiting for its readers or for memory looks again, in case no wake-up
/// came (a reader that went away while the fill was being shed, say).
const RECHECK: Duration = Duration::from_millis(100);

/// The response head of a fill, shared by all its readers.
#[derive(Debug)]
pub struct FillHead {
    pub status: StatusCode,
    /// End-to-end headers (no hop-by-hop, no Content-Length, no Age).
    pub headers: HeaderMap,
    pub kind: ContentKind,
    pub content_length: Option<u64>,
    /// False when the response must not be handed to requests other than the leader's.
    pub shareable: bool,
    /// Freshness if the object will be stored when complete.
    pub freshness: Option<Freshness>,
    /// Age of the response when it arrived (seconds, for the `Age` header).
    pub initial_age: Duration,
    /// `Vary` names and the leader's variant, when the response varies.
    pub vary: Option<(Arc<[HeaderName]>, Arc<str>)>,
    pub origin: Arc<str>,
    /// The origin status when the head was produced from a revalidation (304).
    pub revalidated: bool,
    /// Served from a stored object found when the fill started (closing the lookup race).
    pub from_store: bool,
    /// The edge's encodings of a complete manifest body, when it made them.
    pub encodings: Option<Arc<super::Encodings>>,
}

impl FillHead {
    /// The head of a stored object (found by the fill, or refreshed by a 304).
    pub fn from_object(obj: &super::CachedObject, from_store: bool, revalidated: bool) -> FillHead {
        FillHead {
            status: obj.status,
            headers: obj.headers.clone(),
            kind: obj.kind,
            content_length: Some(obj.body.len()),
            shareable: true,
            freshness: Some(obj.freshness),
            initial_age: obj.freshness.age(tokio::time::Instant::now()),
            vary: None,
            origin: obj.origin.clone(),
            revalidated,
            from_store,
            encodings: obj.encodings.clone(),
        }
    }
}

#[derive(Default)]
struct FillState {
    head: Option<Arc<FillHead>>,
    /// Buffered chunks with their byte offsets, contiguous and in order.
    chunks: Vec<(u64, Bytes)>,
    /// Bytes of `chunks` counted in the budget (a stored body the fill reads from is not: it
    /// is the cache's).
    held: u64,
    received: u64,
    end: Option<Result<(), EdgeError>>,
    /// Not keeping the whole body: chunks every reader has passed are dropped, new readers
    /// are refused, nothing is stored.
    streaming: bool,
    /// Given up for lack of memory before any reader came: the writer stops.
    abandoned: bool,
    /// Next byte offset of each live reader.
    positions: HashMap<u64, u64>,
    /// The largest of `positions` (kept as readers advance; recomputed when one leaves).
    fastest: u64,
    next_reader: u64,
    /// The writer is waiting for readers to advance.
    writer_waiting: bool,
}

impl FillState {
    fn offset_of_fastest(&self) -> Option<u64> {
        (!self.positions.is_empty()).then_some(self.fastest)
    }

    /// Whether a reader that was at `offset` may have been holding the oldest chunk (only
    /// then can trimming free anything).
    fn holds_oldest(&self, offset: u64) -> bool {
        self.chunks
            .first()
            .is_some_and(|(at, c)| offset < at + c.len() as u64)
    }

    /// Drops the chunks every reader has passed; returns the bytes released from the budget.
    fn trim(&mut self) -> u64 {
        let Some(min) = self.positions.values().min().copied() else {
            return 0;
        };
        let n = self
            .chunks
            .iter()
            .take_while(|(at, c)| at + c.len() as u64 <= min)
            .count();
        if n == 0 {
            return 0;
        }
        let freed: u64 = self.chunks.drain(..n).map(|(_, c)| c.len() as u64).sum();
        let counted = freed.min(self.held);
        self.held -= counted;
        counted
    }

    /// The bytes from `offset` on, up to the end of the chunk that holds it.
    fn read_at(&self, offset: u64) -> Result<Option<Bytes>, EdgeError> {
        let i = self
            .chunks
            .partition_point(|(at, c)| at + c.len() as u64 <= offset);
        match self.chunks.get(i) {
            Some((at, c)) if *at <= offset => {
                let start = (offset - at) as usize;
                let end = c.len().min(start + READ_MAX);
                Ok(Some(c.slice(start..end)))
            }
            Some(_) => Err(EdgeError::Internal(
                "reader fell behind a streaming fill".into(),
            )),
            None => Ok(None),
        }
    }
}

/// One in-flight origin fetch and its buffered body.
/// Where a fill fetches from. In a fleet the two are kept apart: a request a peer forwarded
/// joins only fills that go to the origin, never one that waits on a peer — two nodes that
/// disagree on a key's owner would otherwise each wait on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    Origin,
    /// The key's owner, another node of the fleet.
    Peer,
}

impl Lane {
    /// The lane of a fill that asks a peer (`true`) or the origin.
    pub fn asking_peer(peer: bool) -> Lane {
        if peer { Lane::Peer } else { Lane::Origin }
    }
}

pub struct Fill {
    pub slot: StoreKey,
    lane: Lane,
    id: u64,
    table: Weak<FillTable>,
    budget: Arc<Budget>,
    state: Mutex<FillState>,
    /// Bumped on every change readers care about.
    tx: watch::Sender<u64>,
    /// Bumped when a reader advances or leaves while the writer waits, or the fill is shed.
    progress: watch::Sender<u64>,
    /// Requests that joined (the leader included), for metrics and the waiter bound.
    joined: AtomicUsize,
}

impl Fill {
    fn lock(&self) -> MutexGuard<'_, FillState> {
        // A poisoned lock only means a panic elsewhere; the state itself stays consistent
        // because every update is a single assignment or push.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut FillState)) {
        f(&mut self.lock());
        self.tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn poke_writer(&self) {
        self.progress.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A new reader positioned at the first byte. `None` once the fill streams without storing.
    fn reader(self: &Arc<Self>, leader: bool) -> Option<FillReader> {
        let id = {
            let mut st = self.lock();
            if st.streaming && !leader {
                return None;
            }
            let id = st.next_reader;
            st.next_reader += 1;
            st.positions.insert(id, 0);
            id
        };
        self.joined.fetch_add(1, Ordering::Relaxed);
        Some(FillReader {
            fill: self.clone(),
            rx: self.tx.subscribe(),
            offset: 0,
            id,
            leader,
        })
    }

    pub fn joined(&self) -> usize {
        self.joined.load(Ordering::Relaxed)
    }

    /// Bytes this fill holds in the budget.
    fn held(&self) -> u64 {
        self.lock().held
    }

    /// Gives memory back under pressure: a fill that keeps its whole body to store it stops
    /// doing so (its readers stream on; it is not stored), or is given up when no reader is
    /// waiting for it. Returns whether anything changed.
    fn shed(&self) -> bool {
        let freed = {
            let mut st = self.lock();
            if st.end.is_some() || st.streaming || st.abandoned {
                return false;
            }
            if st.positions.is_empty() {
                st.abandoned = true;
                0
            } else {
                st.streaming = true;
                st.trim()
            }
        };
        if let Some(table) = self.table.upgrade() {
            table.remove(self);
        }
        self.budget.release(freed);
        crate::metrics::fill_shed();
        self.poke_writer();
        true
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        let held = self.lock().held;
        self.budget.release(held);
        if let Some(table) = self.table.upgrade() {
            table.live().remove(&self.id);
        }
    }
}

/// The in-flight table: slot → the fill every request for that slot reads from, and the
/// memory budget all fills share.
pub struct FillTable {
    map: Mutex<HashMap<(StoreKey, Lane), Arc<Fill>>>,
    /// Every live fill, shared or private, for shedding under memory pressure.
    live: Mutex<HashMap<u64, Weak<Fill>>>,
    next_id: AtomicU64,
    budget: Arc<Budget>,
    /// When fills were last looked over for shedding (ms since `created`).
    last_shed: AtomicU64,
    created: tokio::time::Instant,
}

/// How a request got its reader.
pub enum Joined {
    /// This request created the fill and must start its writer.
    Leader(FillReader, FillWriter),
    /// Another request's fill was already in flight.
    Follower(FillReader),
}

impl FillTable {
    /// A table whose fills together hold at most about `max_in_flight` bytes.
    pub fn new(max_in_flight: u64) -> Arc<FillTable> {
        Arc::new(FillTable {
            map: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            budget: Budget::new(max_in_flight),
            last_shed: AtomicU64::new(0),
            created: tokio::time::Instant::now(),
        })
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(StoreKey, Lane), Arc<Fill>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> MutexGuard<'_, HashMap<u64, Weak<Fill>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_fill(self: &Arc<Self>, slot: StoreKey, lane: Lane) -> Arc<Fill> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let fill = Arc::new(Fill {
            slot,
            lane,
            id,
            table: Arc::downgrade(self),
            budget: self.budget.clone(),
            state: Mutex::new(FillState::default()),
            tx: watch::Sender::new(0),
            progress: watch::Sender::new(0),
            joined: AtomicUsize::new(0),
        });
        self.live().insert(id, Arc::downgrade(&fill));
        fill
    }

    /// Joins the fill for `slot` that fetches from the origin, or creates it.
    #[cfg(test)]
    pub fn join(
        self: &Arc<Self>,
        slot: &StoreKey,
        max_waiters: usize,
    ) -> Result<Joined, EdgeError> {
        self.join_in(slot, Lane::Origin, max_waiters)
    }

    /// Joins the fill for `slot` in `lane`, or creates it. Atomic with respect to other
    /// requests for the same slot and lane: exactly one becomes the leader.
    pub fn join_in(
        self: &Arc<Self>,
        slot: &StoreKey,
        lane: Lane,
        max_waiters: usize,
    ) -> Result<Joined, EdgeError> {
        let mut map = self.lock();
        let entry = (slot.clone(), lane);
        if let Some(fill) = map.get(&entry) {
            if fill.joined() >= max_waiters {
                return Err(EdgeError::Overloaded {
                    key: slot.key.to_string(),
                });
            }
            if let Some(reader) = fill.reader(false) {
                return Ok(Joined::Follower(reader));
            }
            // Streaming-only fills leave the table before refusing readers; be defensive.
            map.remove(&entry);
        }
        let fill = self.new_fill(slot.clone(), lane);
        map.insert(entry, fill.clone());
        drop(map);
        let reader = fill.reader(true).expect("a new fill accepts its leader");
        let writer = FillWriter {
            fill,
            in_table: true,
            finished: false,
        };
        Ok(Joined::Leader(reader, writer))
    }

    /// A fill outside the table, for requests that must not be collapsed.
    pub fn private(self: &Arc<Self>, slot: &StoreKey) -> (FillReader, FillWriter) {
        let fill = self.new_fill(slot.clone(), Lane::Origin);
        let reader = fill.reader(true).expect("a new fill accepts its leader");
        (
            reader,
            FillWriter {
                fill,
                in_table: false,
                finished: false,
            },
        )
    }

    fn remove(&self, fill: &Fill) {
        let mut map = self.lock();
        let entry = (fill.slot.clone(), fill.lane);
        if map
            .get(&entry)
            .is_some_and(|f| std::ptr::eq(Arc::as_ptr(f), fill))
        {
            map.remove(&entry);
        }
    }

    /// Over budget: fills that keep whole bodies give them up, largest first, until the budget
    /// holds again (fills that already stream hold at most a window each and wait instead).
    fn shed(&self) {
        // At most one look over every fill per SHED_EVERY, however many writers push.
        let now = self.created.elapsed().as_millis() as u64 + 1;
        let last = self.last_shed.load(Ordering::Relaxed);
        if now < last + SHED_EVERY.as_millis() as u64
            || self
                .last_shed
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let mut fills: Vec<(u64, Arc<Fill>)> = self
            .live()
            .values()
            .filter_map(Weak::upgrade)
            .map(|f| (f.held(), f))
            .collect();
        fills.sort_by_key(|(held, _)| std::cmp::Reverse(*held));
        for (_, fill) in fills {
            if !self.budget.over() {
                break;
            }
            fill.shed();
        }
    }

    /// Fills in flight: the table's size.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
