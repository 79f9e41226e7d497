//! The in-flight table: one origin fetch per cache slot, its body fanned out to every
//! waiting request as the chunks arrive, and failures delivered as errors, never as a clean end.
//!
//! A `Fill` is a shared, append-only buffer. Its writer is a detached task that owns the origin
//! request; readers (the request that started it included) replay what is buffered and are
//! woken through a `watch` channel for each new chunk. A fill that turns out larger than the
//! object size limit switches to streaming mode: it leaves the table, refuses new readers, and
//! drops the chunks every reader has passed, pacing the origin to the slowest reader.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::HeaderName;
use http::{HeaderMap, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::sync::{Notify, watch};

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
            content_length: Some(obj.body.len() as u64),
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

/// Memory for bodies in flight, shared by every fill (`cache.max_in_flight`): the chunks fills
/// hold for their readers and for storing, plus leases (manifests read whole, request bodies).
pub struct Budget {
    limit: u64,
    used: AtomicU64,
    freed: Notify,
}

impl Budget {
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicU64::new(0),
            freed: Notify::new(),
        })
    }

    fn add(&self, n: u64) {
        self.used.fetch_add(n, Ordering::Relaxed);
        crate::metrics::fill_buffered(n as f64);
    }

    fn release(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.used.fetch_sub(n, Ordering::Relaxed);
        crate::metrics::fill_buffered(-(n as f64));
        self.freed.notify_waiters();
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn over(&self) -> bool {
        self.used() > self.limit
    }

    /// A claim on the budget that grows as bytes are read and is given back when dropped.
    pub fn lease(self: &Arc<Self>) -> Lease {
        Lease {
            budget: self.clone(),
            held: 0,
        }
    }
}

/// Bytes held outside a fill (a manifest read whole, a request body), counted in the budget.
pub struct Lease {
    budget: Arc<Budget>,
    held: u64,
}

impl Lease {
    /// Counts `n` more bytes; `false` when the budget is exhausted (the caller gives up).
    pub fn grow(&mut self, n: u64) -> bool {
        self.budget.add(n);
        self.held += n;
        !self.budget.over()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.budget.release(self.held);
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
pub struct Fill {
    pub slot: StoreKey,
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
    map: Mutex<HashMap<StoreKey, Arc<Fill>>>,
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

    fn lock(&self) -> MutexGuard<'_, HashMap<StoreKey, Arc<Fill>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> MutexGuard<'_, HashMap<u64, Weak<Fill>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_fill(self: &Arc<Self>, slot: StoreKey) -> Arc<Fill> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let fill = Arc::new(Fill {
            slot,
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

    /// Joins the fill for `slot`, or creates it. Atomic with respect to other requests for
    /// the same slot: exactly one becomes the leader.
    pub fn join(
        self: &Arc<Self>,
        slot: &StoreKey,
        max_waiters: usize,
    ) -> Result<Joined, EdgeError> {
        let mut map = self.lock();
        if let Some(fill) = map.get(slot) {
            if fill.joined() >= max_waiters {
                return Err(EdgeError::Overloaded {
                    key: slot.key.to_string(),
                });
            }
            if let Some(reader) = fill.reader(false) {
                return Ok(Joined::Follower(reader));
            }
            // Streaming-only fills leave the table before refusing readers; be defensive.
            map.remove(slot);
        }
        let fill = self.new_fill(slot.clone());
        map.insert(slot.clone(), fill.clone());
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
        let fill = self.new_fill(slot.clone());
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
        if map
            .get(&fill.slot)
            .is_some_and(|f| std::ptr::eq(Arc::as_ptr(f), fill))
        {
            map.remove(&fill.slot);
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

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the writer learns from pushing a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Continue,
    /// The fill streams and has no readers left, or it was given up for lack of memory before
    /// anyone read it: stop fetching.
    Stop,
}

/// The writing end of a fill, owned by the detached task that talks to the origin.
/// Dropping it without `finish` fails the fill, so readers never hang.
pub struct FillWriter {
    fill: Arc<Fill>,
    in_table: bool,
    finished: bool,
}

impl FillWriter {
    pub fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    pub fn set_head(&self, head: FillHead) {
        let head = Arc::new(head);
        self.fill.update(|st| st.head = Some(head));
    }

    fn leave_table(&mut self) {
        if std::mem::take(&mut self.in_table)
            && let Some(table) = self.fill.table.upgrade()
        {
            table.remove(&self.fill);
        }
    }

    /// Stops accepting new readers and stops buffering the whole body (object too large to
    /// store). Readers already joined keep streaming.
    pub fn stream_only(&mut self) {
        self.leave_table();
        let freed = {
            let mut st = self.fill.lock();
            st.streaming = true;
            st.trim()
        };
        self.fill.budget.release(freed);
        self.fill.tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Whether the fill gave up keeping the whole body (too large, or shed for memory).
    pub fn is_streaming(&self) -> bool {
        self.fill.lock().streaming
    }

    /// Appends a chunk and wakes the readers, then waits while the fill is too far ahead of
    /// the reader it is paced to, or memory is short and its readers do not keep up.
    pub async fn push(&self, chunk: Bytes) -> Push {
        if chunk.is_empty() {
            return Push::Continue;
        }
        let len = chunk.len() as u64;
        {
            let mut st = self.fill.lock();
            if st.abandoned {
                return Push::Stop;
            }
            let at = st.received;
            st.chunks.push((at, chunk));
            st.received += len;
            st.held += len;
        }
        self.fill.budget.add(len);
        self.fill.tx.send_modify(|v| *v = v.wrapping_add(1));
        self.settle().await
    }

    async fn settle(&self) -> Push {
        let budget = &self.fill.budget;
        let mut progress = self.fill.progress.subscribe();
        loop {
            progress.borrow_and_update();
            let over = budget.over();
            if over && let Some(table) = self.fill.table.upgrade() {
                table.shed();
            }
            let freed;
            {
                let mut st = self.fill.lock();
                if st.abandoned {
                    return Push::Stop;
                }
                freed = if st.streaming { st.trim() } else { 0 };
                let paced_to = if st.streaming {
                    match st.positions.values().min() {
                        Some(&min) => Some(min),
                        None => return Push::Stop,
                    }
                } else {
                    st.offset_of_fastest()
                };
                let window = if budget.over() { TIGHT_WINDOW } else { WINDOW };
                let lag = paced_to.map_or(0, |at| st.received.saturating_sub(at));
                if lag <= window {
                    st.writer_waiting = false;
                    drop(st);
                    budget.release(freed);
                    return Push::Continue;
                }
                st.writer_waiting = true;
            }
            budget.release(freed);
            let freed_elsewhere = budget.freed.notified();
            tokio::select! {
                r = progress.changed() => if r.is_err() { return Push::Stop },
                _ = freed_elsewhere => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// Ends the fill successfully. Store the object in the cache *before* calling this, so a
    /// request that no longer finds the fill finds the object.
    pub fn finish(mut self) {
        self.end(Ok(()));
    }

    /// Ends the fill with `body` as its whole content: a stored object's body (shared with the
    /// cache, so not counted again), read from by every reader at its own offset. What the
    /// fill buffered itself is given back.
    pub fn finish_with(mut self, body: Bytes) {
        let freed = {
            let mut st = self.fill.lock();
            st.received = body.len() as u64;
            st.chunks = vec![(0, body)];
            std::mem::take(&mut st.held)
        };
        self.fill.budget.release(freed);
        self.end(Ok(()));
    }

    /// The whole body, for storing (only meaningful when not streaming).
    pub fn body(&self) -> Bytes {
        let st = self.fill.lock();
        match st.chunks.len() {
            0 => Bytes::new(),
            1 => st.chunks[0].1.clone(),
            _ => {
                let mut buf = bytes::BytesMut::with_capacity(st.received as usize);
                for (_, c) in &st.chunks {
                    buf.extend_from_slice(c);
                }
                buf.freeze()
            }
        }
    }

    /// The whole body when `last` is its final chunk, not pushed yet.
    pub fn body_with(&self, last: &Bytes) -> Bytes {
        let st = self.fill.lock();
        if st.chunks.is_empty() {
            return last.clone();
        }
        let mut buf = bytes::BytesMut::with_capacity(st.received as usize + last.len());
        for (_, c) in &st.chunks {
            buf.extend_from_slice(c);
        }
        buf.extend_from_slice(last);
        buf.freeze()
    }

    /// Ends the fill with an error: readers without a head get it as their answer, readers
    /// mid-body see their body fail.
    pub fn fail(mut self, err: EdgeError) {
        self.end(Err(err));
    }

    fn end(&mut self, result: Result<(), EdgeError>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.leave_table();
        // Once ended no reader can join: what every reader has passed can go.
        self.fill.update(|st| st.end = Some(result));
        let freed = self.fill.lock().trim();
        self.fill.budget.release(freed);
    }
}

impl Drop for FillWriter {
    fn drop(&mut self) {
        self.end(Err(EdgeError::Internal(
            "origin fetch ended unexpectedly".into(),
        )));
    }
}

/// One request's view of a fill.
pub struct FillReader {
    fill: Arc<Fill>,
    rx: watch::Receiver<u64>,
    /// Next byte to read.
    offset: u64,
    id: u64,
    leader: bool,
}

/// What a reader gets once the fill has a head.
pub enum HeadOutcome {
    Ready(Arc<FillHead>),
    /// The response may not be shared with this request: fetch on its own.
    NotShared,
}

impl FillReader {
    pub fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    /// Waits for the response head (or the fill's failure). Never polls: woken by the writer.
    pub async fn head(&mut self) -> Result<HeadOutcome, EdgeError> {
        loop {
            self.rx.borrow_and_update();
            {
                let st = self.fill.lock();
                if let Some(head) = &st.head {
                    if !head.shareable && !self.leader {
                        return Ok(HeadOutcome::NotShared);
                    }
                    return Ok(HeadOutcome::Ready(head.clone()));
                }
                if let Some(Err(e)) = &st.end {
                    return Err(e.clone());
                }
                if let Some(Ok(())) = &st.end {
                    return Err(EdgeError::Internal("fill ended without a response".into()));
                }
            }
            if self.rx.changed().await.is_err() {
                return Err(EdgeError::Internal("fill went away".into()));
            }
        }
    }

    /// The next chunk: `None` at a clean end, `Err` when the origin failed mid-body.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, EdgeError>> {
        loop {
            self.rx.borrow_and_update();
            if let Some(item) = self.poll_state() {
                return item;
            }
            if self.rx.changed().await.is_err() {
                return Some(Err(EdgeError::Internal("fill went away".into())));
            }
        }
    }

    /// The buffered bytes from this reader's offset to the end of their chunk.
    fn poll_state(&mut self) -> Option<Option<Result<Bytes, EdgeError>>> {
        let mut st = self.fill.lock();
        match st.read_at(self.offset) {
            Err(e) => Some(Some(Err(e))),
            Ok(Some(chunk)) => {
                let was = self.offset;
                self.offset += chunk.len() as u64;
                st.positions.insert(self.id, self.offset);
                st.fastest = st.fastest.max(self.offset);
                // Streaming or ended: what every reader has now passed can go.
                let freed = if (st.streaming || st.end.is_some()) && st.holds_oldest(was) {
                    st.trim()
                } else {
                    0
                };
                let poke = st.writer_waiting;
                drop(st);
                self.fill.budget.release(freed);
                if poke {
                    self.fill.poke_writer();
                }
                Some(Some(Ok(chunk)))
            }
            Ok(None) => match &st.end {
                Some(Ok(())) => Some(None),
                Some(Err(e)) => Some(Some(Err(e.clone()))),
                None => None,
            },
        }
    }

    /// The body of this reader as an HTTP body, optionally restricted to `[start, end)`.
    pub fn into_body(self, range: Option<(u64, u64)>) -> FillBody {
        FillBody {
            state: BodyState::Idle(Box::new(self)),
            skip: range.map_or(0, |r| r.0),
            remaining: range.map(|r| r.1 - r.0),
        }
    }
}

impl Drop for FillReader {
    fn drop(&mut self) {
        let (freed, poke) = {
            let mut st = self.fill.lock();
            st.positions.remove(&self.id);
            if self.offset >= st.fastest {
                st.fastest = st.positions.values().max().copied().unwrap_or(0);
            }
            let freed = if (st.streaming || st.end.is_some()) && st.holds_oldest(self.offset) {
                st.trim()
            } else {
                0
            };
            (freed, st.writer_waiting || st.streaming)
        };
        self.fill.budget.release(freed);
        self.fill.joined.fetch_sub(1, Ordering::Relaxed);
        if poke {
            self.fill.poke_writer();
        }
    }
}

/// The error a client body ends with when the origin failed mid-response.
#[derive(Debug, thiserror::Error)]
#[error("origin response broke off: {0}")]
pub struct BodyError(pub EdgeError);

type NextChunk = BoxFuture<'static, (Box<FillReader>, Option<Result<Bytes, EdgeError>>)>;

enum BodyState {
    Idle(Box<FillReader>),
    Waiting(NextChunk),
    Done,
}

/// A response body reading from a fill.
pub struct FillBody {
    state: BodyState,
    skip: u64,
    remaining: Option<u64>,
}

impl FillBody {
    /// Applies the byte range to a chunk; `None` when the chunk is entirely skipped.
    fn clip(&mut self, mut chunk: Bytes) -> Option<Bytes> {
        if self.skip > 0 {
            let n = self.skip.min(chunk.len() as u64);
            self.skip -= n;
            chunk = chunk.slice(n as usize..);
        }
        if let Some(rem) = self.remaining.as_mut() {
            if (chunk.len() as u64) > *rem {
                chunk.truncate(*rem as usize);
            }
            *rem -= chunk.len() as u64;
        }
        (!chunk.is_empty()).then_some(chunk)
    }
}

impl http_body::Body for FillBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            if self.remaining == Some(0) {
                self.state = BodyState::Done;
                return Poll::Ready(None);
            }
            match std::mem::replace(&mut self.state, BodyState::Done) {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Idle(mut reader) => {
                    // Fast path: data already buffered needs no future.
                    if let Some(item) = reader.poll_state() {
                        self.state = BodyState::Idle(reader);
                        match item {
                            None => {
                                self.state = BodyState::Done;
                                return Poll::Ready(None);
                            }
                            Some(Err(e)) => {
                                self.state = BodyState::Done;
                                return Poll::Ready(Some(Err(BodyError(e))));
                            }
                            Some(Ok(chunk)) => match self.clip(chunk) {
                                Some(c) => return Poll::Ready(Some(Ok(Frame::data(c)))),
                                None => continue,
                            },
                        }
                    }
                    self.state = BodyState::Waiting(Box::pin(async move {
                        let item = reader.next_chunk().await;
                        (reader, item)
                    }));
                }
                BodyState::Waiting(mut fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.state = BodyState::Waiting(fut);
                        return Poll::Pending;
                    }
                    Poll::Ready((reader, item)) => match item {
                        None => return Poll::Ready(None),
                        Some(Err(e)) => return Poll::Ready(Some(Err(BodyError(e)))),
                        Some(Ok(chunk)) => {
                            self.state = BodyState::Idle(reader);
                            if let Some(c) = self.clip(chunk) {
                                return Poll::Ready(Some(Ok(Frame::data(c))));
                            }
                        }
                    },
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done) || self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::CacheKey;
    use http_body_util::BodyExt;

    fn slot(s: &str) -> StoreKey {
        StoreKey::base(CacheKey::new(s, None))
    }

    fn head(shareable: bool) -> FillHead {
        FillHead {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            kind: ContentKind::Segment,
            content_length: None,
            shareable,
            freshness: None,
            initial_age: Duration::ZERO,
            vary: None,
            origin: "o".into(),
            revalidated: false,
            from_store: false,
            encodings: None,
        }
    }

    #[tokio::test]
    async fn one_leader_then_followers_replay_and_stream() {
        let table = FillTable::new(1 << 30);
        let s = slot("/a.ts");
        let Ok(Joined::Leader(mut leader, writer)) = table.join(&s, 10) else {
            panic!("first join leads")
        };
        let Ok(Joined::Follower(mut early)) = table.join(&s, 10) else {
            panic!("second join follows")
        };
        writer.set_head(head(true));
        assert!(matches!(leader.head().await, Ok(HeadOutcome::Ready(_))));
        assert!(matches!(early.head().await, Ok(HeadOutcome::Ready(_))));
        writer.push(Bytes::from_static(b"hello ")).await;
        let Ok(Joined::Follower(late)) = table.join(&s, 10) else {
            panic!("late join follows")
        };
        assert_eq!(early.next_chunk().await.unwrap().unwrap(), "hello ");
        writer.push(Bytes::from_static(b"world")).await;
        writer.finish();
        assert!(table.is_empty(), "finished fills leave the table");
        for r in [leader, early, late] {
            let body = r.into_body(None).collect().await.unwrap().to_bytes();
            assert!(body.ends_with(b"world"));
        }
    }

    #[tokio::test]
    async fn failure_is_an_error_not_an_end() {
        let table = FillTable::new(1 << 30);
        let s = slot("/b.ts");
        let Ok(Joined::Leader(reader, writer)) = table.join(&s, 10) else {
            panic!()
        };
        writer.set_head(head(true));
        writer.push(Bytes::from_static(b"half")).await;
        writer.fail(EdgeError::OriginProtocol {
            origin: "o".into(),
            detail: "cut".into(),
        });
        let err = reader.into_body(None).collect().await;
        assert!(err.is_err());
        assert!(table.is_empty());
    }

    #[tokio::test]
    async fn dropped_writer_fails_waiters() {
        let table = FillTable::new(1 << 30);
        let s = slot("/c.ts");
        let Ok(Joined::Leader(mut reader, writer)) = table.join(&s, 10) else {
            panic!()
        };
        drop(writer);
        assert!(reader.head().await.is_err());
    }

    #[tokio::test]
    async fn unshareable_heads_send_followers_away() {
        let table = FillTable::new(1 << 30);
        let s = slot("/d");
        let Ok(Joined::Leader(mut leader, writer)) = table.join(&s, 10) else {
            panic!()
        };
        let Ok(Joined::Follower(mut f)) = table.join(&s, 10) else {
            panic!()
        };
        writer.set_head(head(false));
        assert!(matches!(leader.head().await, Ok(HeadOutcome::Ready(_))));
        assert!(matches!(f.head().await, Ok(HeadOutcome::NotShared)));
    }

    #[tokio::test]
    async fn waiter_bound() {
        let table = FillTable::new(1 << 30);
        let s = slot("/e");
        let Ok(Joined::Leader(_l, _w)) = table.join(&s, 2) else {
            panic!()
        };
        let Ok(Joined::Follower(_f)) = table.join(&s, 2) else {
            panic!()
        };
        assert!(matches!(
            table.join(&s, 2),
            Err(EdgeError::Overloaded { .. })
        ));
    }

    #[tokio::test]
    async fn streaming_mode_trims_and_refuses_joiners() {
        let table = FillTable::new(1 << 30);
        let s = slot("/big");
        let Ok(Joined::Leader(mut reader, mut writer)) = table.join(&s, 10) else {
            panic!()
        };
        writer.set_head(head(true));
        writer.stream_only();
        assert!(table.is_empty());
        // A new request for the same slot gets its own fill.
        assert!(matches!(table.join(&s, 10), Ok(Joined::Leader(..))));
        assert_eq!(
            writer.push(Bytes::from(vec![1u8; 1000])).await,
            Push::Continue
        );
        assert_eq!(reader.next_chunk().await.unwrap().unwrap().len(), 1000);
        assert_eq!(
            writer.push(Bytes::from(vec![2u8; 10])).await,
            Push::Continue
        );
        assert_eq!(
            writer.fill().lock().chunks.len(),
            1,
            "read chunks are dropped"
        );
        drop(reader);
        assert_eq!(writer.push(Bytes::from(vec![3u8; 10])).await, Push::Stop);
    }

    #[tokio::test]
    async fn range_slices_across_chunks() {
        let table = FillTable::new(1 << 30);
        let s = slot("/r");
        let Ok(Joined::Leader(reader, writer)) = table.join(&s, 10) else {
            panic!()
        };
        writer.set_head(head(true));
        for part in ["abc", "def", "ghi"] {
            writer.push(Bytes::from(part)).await;
        }
        writer.finish();
        let body = reader
            .into_body(Some((2, 7)))
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"cdefg");
    }

    fn chunk(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[tokio::test]
    async fn a_fill_runs_a_window_ahead_of_its_fastest_reader_and_no_further() {
        let table = FillTable::new(1 << 30);
        let Ok(Joined::Leader(mut slow, writer)) = table.join(&slot("/p"), 10) else {
            panic!()
        };
        writer.set_head(head(true));
        let mut pushed = 0;
        loop {
            let push = writer.push(chunk(64 << 10));
            match tokio::time::timeout(Duration::from_millis(50), push).await {
                Ok(Push::Continue) => pushed += 64 << 10,
                Ok(Push::Stop) => panic!("stopped"),
                Err(_) => break,
            }
            assert!(pushed <= 2 * WINDOW, "never paced");
        }
        assert!(pushed >= WINDOW - (64 << 10), "paced early: {pushed}");
        // A reader that reads lets it go on.
        let Ok(Joined::Follower(mut fast)) = table.join(&slot("/p"), 10) else {
            panic!()
        };
        while let Some(Ok(_)) = tokio::time::timeout(Duration::from_millis(20), fast.next_chunk())
            .await
            .ok()
            .flatten()
        {}
        let push = writer.push(chunk(64 << 10));
        assert_eq!(
            tokio::time::timeout(Duration::from_millis(500), push).await,
            Ok(Push::Continue)
        );
        assert!(slow.next_chunk().await.is_some());
    }

    #[tokio::test]
    async fn over_budget_whole_bodies_are_given_up_and_unread_fills_abandoned() {
        let table = FillTable::new(2 << 20);
        tokio::time::sleep(SHED_EVERY).await;
        // A fill with a reader that does not read, keeping its body to store it.
        let Ok(Joined::Leader(_stalled, kept)) = table.join(&slot("/kept"), 10) else {
            panic!()
        };
        kept.set_head(head(true));
        for _ in 0..8 {
            let _ =
                tokio::time::timeout(Duration::from_millis(20), kept.push(chunk(128 << 10))).await;
        }
        // A fill nobody reads (its leader left), filling for the cache.
        let Ok(Joined::Leader(leader, unread)) = table.join(&slot("/unread"), 10) else {
            panic!()
        };
        drop(leader);
        unread.set_head(head(true));
        let mut stopped = false;
        for _ in 0..64 {
            tokio::time::sleep(SHED_EVERY).await;
            let push = unread.push(chunk(128 << 10));
            if tokio::time::timeout(Duration::from_millis(200), push).await == Ok(Push::Stop) {
                stopped = true;
                break;
            }
        }
        assert!(stopped, "an unread fill over budget is given up");
        drop(unread);
        assert!(
            table.budget().used() <= 2 << 20,
            "{}",
            table.budget().used()
        );
        drop(kept);
    }

    #[tokio::test]
    async fn a_shed_fill_streams_on_without_what_its_readers_passed() {
        let table = FillTable::new(1 << 30);
        let Ok(Joined::Leader(mut reader, writer)) = table.join(&slot("/shed"), 10) else {
            panic!()
        };
        writer.set_head(head(true));
        writer.push(chunk(1000)).await;
        writer.push(chunk(1000)).await;
        assert_eq!(reader.next_chunk().await.unwrap().unwrap().len(), 1000);
        assert!(writer.fill().shed());
        assert!(writer.is_streaming());
        assert!(
            table.is_empty(),
            "no one joins a fill that will not be stored"
        );
        assert_eq!(writer.fill().held(), 1000, "the chunk read is gone");
        assert_eq!(table.budget().used(), 1000);
        assert_eq!(reader.next_chunk().await.unwrap().unwrap().len(), 1000);
        drop(reader);
        assert_eq!(writer.push(chunk(1)).await, Push::Stop, "no reader left");
    }
}
