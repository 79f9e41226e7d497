//! The node's own live numbers for the status page: client responses, hits, bytes, time to
//! first byte and the most requested keys, with per-second rates over the last minute.
//!
//! The request path pays a few relaxed atomic increments on a shard of its own thread and one
//! uncontended lock of that shard's per-second key counts (no allocation for a key already
//! counted in that second). A one-second `tick` rolls the shards into a 60-slot window; readers
//! (`snapshot`) never touch the shards' locks. Independent of the Prometheus recorder, which is
//! process-wide: several edges in one process (tests) each have their own `Stats`.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Seconds of per-second history kept (rates, sparkline, top keys).
pub const HISTORY_SECS: usize = 60;
/// Seconds over which rates and TTFB percentiles are computed.
pub const WINDOW_SECS: usize = 10;
/// Distinct keys counted per second, over all shards; requests for further new keys in the
/// same second count in the totals but not in the top list.
pub const MAX_KEYS_PER_SEC: usize = 4096;
/// Bytes of a key kept for the top list: longer keys (a client's choice) are counted under
/// their first `MAX_KEY_BYTES` bytes, so the window's memory is bounded by bytes, not only by
/// the number of keys (4096 keys × 60 s × 256 B ≈ 63 MiB at most).
pub const MAX_KEY_BYTES: usize = 256;
/// Keys in the top list.
pub const TOP_KEYS: usize = 10;

/// TTFB histogram: values in microseconds, 8 sub-buckets per power of two (at most 1/8 =
/// 12.5 % wide), linear below 8 µs, everything from 2^26 µs (about 67 s) in the last bucket.
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
const MAX_EXP: u32 = 25;
const BUCKETS: usize = (MAX_EXP as usize - SUB_BITS as usize + 2) * SUB;

/// `key` cut to at most [`MAX_KEY_BYTES`] bytes, on a character boundary.
fn truncate_key(key: &str) -> &str {
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let mut end = MAX_KEY_BYTES;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

/// The bucket of a value in microseconds.
fn bucket_of(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros();
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (us >> (exp - SUB_BITS)) as usize & (SUB - 1);
    (exp - SUB_BITS + 1) as usize * SUB + sub
}

/// The range `[low, high)` of a bucket, in microseconds.
fn bucket_range(i: usize) -> (u64, u64) {
    if i < SUB {
        return (i as u64, i as u64 + 1);
    }
    let exp = (i / SUB) as u32 + SUB_BITS - 1;
    let width = 1u64 << (exp - SUB_BITS);
    let low = (SUB + i % SUB) as u64 * width;
    (low, low + width)
}

/// The `q` quantile (0..=1) of a histogram, in milliseconds (the middle of its bucket);
/// `None` when it is empty.
fn quantile_ms(hist: &[u64], q: f64) -> Option<f64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, &n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let (low, high) = bucket_range(i);
            return Some((low + high) as f64 / 2.0 / 1000.0);
        }
    }
    None
}

/// One thread's counters (a cache line of their own, so threads never share one).
#[repr(align(128))]
struct Shard {
    requests: AtomicU64,
    hits: AtomicU64,
    bytes: AtomicU64,
    ttfb: [AtomicU64; BUCKETS],
    keys: Mutex<KeyCounts>,
}

/// Requests per key in the current second.
#[derive(Default)]
struct KeyCounts {
    counts: HashMap<Box<str>, u64>,
    /// Requests whose key was not counted (the second's key budget was spent).
    dropped: u64,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            requests: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            ttfb: std::array::from_fn(|_| AtomicU64::new(0)),
            keys: Mutex::new(KeyCounts::default()),
        }
    }
}

/// Totals at one tick (cumulative).
#[derive(Clone, Copy, Default)]
struct Totals {
    requests: u64,
    hits: u64,
    bytes: u64,
}

/// What the ticker keeps: totals at each tick, TTFB histograms at the last ticks, key counts
/// of each second and their sum over the window.
struct Window {
    /// Totals at the last `HISTORY_SECS + 1` ticks, oldest first (starts with zeros).
    totals: VecDeque<Totals>,
    /// Cumulative TTFB histograms at the last `WINDOW_SECS + 1` ticks, oldest first.
    ttfb: VecDeque<Box<[u64]>>,
    /// Key counts of each of the last `HISTORY_SECS` seconds, oldest first.
    seconds: VecDeque<Second>,
    /// The sum of `seconds`.
    keys: HashMap<Arc<str>, u64>,
    dropped: u64,
    /// Emptied maps swapped into the shards at the next tick (their capacity is kept).
    spares: Vec<HashMap<Box<str>, u64>>,
}

/// One second's key counts, and its requests whose key was not counted.
struct Second {
    keys: Vec<(Arc<str>, u64)>,
    dropped: u64,
}

/// The live numbers of one edge.
pub struct Stats {
    started: Instant,
    shards: Box<[Shard]>,
    /// Distinct keys one shard counts per second.
    keys_per_shard: usize,
    window: Mutex<Window>,
}

/// A shard index per thread, handed out in turn (the same for every `Stats`).
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn thread_index() -> usize {
    THREAD.with(|t| {
        let mut i = t.get();
        if i == usize::MAX {
            i = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
            t.set(i);
        }
        i
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new()
    }
}

impl Stats {
    /// Shards for twice the available cores (worker and blocking threads get their own).
    pub fn new() -> Stats {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let n = (cores * 2).next_power_of_two().clamp(2, 64);
        Stats {
            started: Instant::now(),
            shards: (0..n).map(|_| Shard::new()).collect(),
            keys_per_shard: (MAX_KEYS_PER_SEC / n).max(64),
            window: Mutex::new(Window {
                totals: VecDeque::from([Totals::default()]),
                ttfb: VecDeque::from([vec![0; BUCKETS].into_boxed_slice()]),
                seconds: VecDeque::new(),
                keys: HashMap::new(),
                dropped: 0,
                spares: (0..n).map(|_| HashMap::new()).collect(),
            }),
        }
    }

    fn shard(&self) -> &Shard {
        &self.shards[thread_index() & (self.shards.len() - 1)]
    }

    /// A response head went to a client: whether it was a cache hit, its time to first byte,
    /// and the cache key it was for (none for requests refused before they had one).
    pub fn response(&self, hit: bool, ttfb: Duration, key: Option<&str>) {
        let shard = self.shard();
        shard.requests.fetch_add(1, Ordering::Relaxed);
        if hit {
            shard.hits.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(ttfb.as_micros()).unwrap_or(u64::MAX);
        shard.ttfb[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        if let Some(key) = key {
            let key = truncate_key(key);
            let mut keys = lock(&shard.keys);
            if let Some(n) = keys.counts.get_mut(key) {
                *n += 1;
            } else if keys.counts.len() < self.keys_per_shard {
                keys.counts.insert(key.into(), 1);
            } else {
                keys.dropped += 1;
            }
        }
    }

    /// Body bytes handed to a client.
    pub fn sent(&self, bytes: u64) {
        self.shard().bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in self.shards.iter() {
            t.requests += s.requests.load(Ordering::Relaxed);
            t.hits += s.hits.load(Ordering::Relaxed);
            t.bytes += s.bytes.load(Ordering::Relaxed);
        }
        t
    }

    fn ttfb_histogram(&self) -> Box<[u64]> {
        let mut h = vec![0; BUCKETS].into_boxed_slice();
        for s in self.shards.iter() {
            for (sum, n) in h.iter_mut().zip(&s.ttfb) {
                *sum += n.load(Ordering::Relaxed);
            }
        }
        h
    }

    /// Closes the current second: totals, TTFB and key counts go into the window.
    pub fn tick(&self) {
        let totals = self.totals();
        let ttfb = self.ttfb_histogram();
        let mut w = lock(&self.window);
        let w = &mut *w;
        push_bounded(&mut w.totals, totals, HISTORY_SECS + 1);
        push_bounded(&mut w.ttfb, ttfb, WINDOW_SECS + 1);
        let mut second: HashMap<Box<str>, u64> = HashMap::new();
        let mut dropped = 0;
        for (shard, spare) in self.shards.iter().zip(w.spares.iter_mut()) {
            {
                let mut keys = lock(&shard.keys);
                std::mem::swap(&mut keys.counts, spare);
                dropped += std::mem::take(&mut keys.dropped);
            }
            for (k, n) in spare.drain() {
                *second.entry(k).or_insert(0) += n;
            }
        }
        let mut slot = Vec::with_capacity(second.len());
        for (k, n) in second {
            let key = match w.keys.get_key_value(&*k) {
                Some((key, _)) => key.clone(),
                None => Arc::from(k),
            };
            *w.keys.entry(key.clone()).or_insert(0) += n;
            slot.push((key, n));
        }
        w.dropped += dropped;
        w.seconds.push_back(Second {
            keys: slot,
            dropped,
        });
        if w.seconds.len() > HISTORY_SECS
            && let Some(old) = w.seconds.pop_front()
        {
            w.dropped -= old.dropped;
            for (k, n) in old.keys {
                if let Some(sum) = w.keys.get_mut(&k) {
                    *sum -= n;
                    if *sum == 0 {
                        w.keys.remove(&k);
                    }
                }
            }
        }
    }

    /// The numbers now: totals and TTFB include the current second, rates and the top list
    /// are of whole seconds (the last `WINDOW_SECS` and `HISTORY_SECS`).
    pub fn snapshot(&self) -> Snapshot {
        // Read under the lock: a tick pushes what it read before taking it, so the current
        // counts are never behind the window's last.
        let w = lock(&self.window);
        let totals = self.totals();
        let ttfb_now = self.ttfb_histogram();
        let last = w.totals.back().copied().unwrap_or_default();
        let span = (w.totals.len() - 1).min(WINDOW_SECS);
        let first = w.totals[w.totals.len() - 1 - span];
        let per_s = |a: u64, b: u64| {
            if span == 0 {
                0.0
            } else {
                a.saturating_sub(b) as f64 / span as f64
            }
        };
        let mut history = vec![0; HISTORY_SECS + 1 - w.totals.len()];
        history.extend(
            w.totals
                .iter()
                .zip(w.totals.iter().skip(1))
                .map(|(a, b)| b.requests.saturating_sub(a.requests)),
        );
        let oldest = w.ttfb.front().map_or(&[][..], |h| &h[..]);
        let recent: Vec<u64> = ttfb_now
            .iter()
            .zip(oldest.iter().chain(std::iter::repeat(&0)))
            .map(|(now, then)| now.saturating_sub(*then))
            .collect();
        Snapshot {
            uptime: self.started.elapsed(),
            requests: totals.requests,
            hits: totals.hits,
            bytes: totals.bytes,
            requests_per_s: per_s(last.requests, first.requests),
            bytes_per_s: per_s(last.bytes, first.bytes),
            ttfb_samples: recent.iter().sum(),
            ttfb_ms: [0.5, 0.9, 0.99].map(|q| quantile_ms(&recent, q)),
            top: top_keys(&w.keys),
            top_dropped: w.dropped,
            history,
        }
    }
}

/// The `TOP_KEYS` most counted keys, most first (ties by key), without sorting them all.
fn top_keys(keys: &HashMap<Arc<str>, u64>) -> Vec<(Arc<str>, u64)> {
    let order =
        |a: &(&Arc<str>, u64), b: &(&Arc<str>, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0));
    let mut all: Vec<(&Arc<str>, u64)> = keys.iter().map(|(k, n)| (k, *n)).collect();
    if all.len() > TOP_KEYS {
        all.select_nth_unstable_by(TOP_KEYS - 1, order);
        all.truncate(TOP_KEYS);
    }
    all.sort_unstable_by(order);
    all.into_iter().map(|(k, n)| (k.clone(), n)).collect()
}

fn push_bounded<T>(ring: &mut VecDeque<T>, value: T, max: usize) {
    ring.push_back(value);
    while ring.len() > max {
        ring.pop_front();
    }
}

/// The numbers of `Stats::snapshot`.
#[derive(Debug)]
pub struct Snapshot {
    pub uptime: Duration,
    pub requests: u64,
    pub hits: u64,
    pub bytes: u64,
    /// Mean over the last `WINDOW_SECS` whole seconds (fewer just after start).
    pub requests_per_s: f64,
    pub bytes_per_s: f64,
    /// TTFB samples and their p50, p90, p99 over the last `WINDOW_SECS` and the current second.
    pub ttfb_samples: u64,
    pub ttfb_ms: [Option<f64>; 3],
    /// The most requested keys over the last `HISTORY_SECS` whole seconds, most first.
    pub top: Vec<(Arc<str>, u64)>,
    /// Requests of those seconds whose key was not counted (too many distinct keys).
    pub top_dropped: u64,
    /// Requests in each of the last `HISTORY_SECS` whole seconds, oldest first (zeros before
    /// the start).
    pub history: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_contain_their_values() {
        for i in 0..BUCKETS - 1 {
            assert_eq!(bucket_range(i).1, bucket_range(i + 1).0, "bucket {i}");
        }
        for us in (0..100_000).chain([1 << 20, (1 << 26) - 1]) {
            let (low, high) = bucket_range(bucket_of(us));
            assert!(low <= us && us < high, "{us} in [{low}, {high})");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_of(1 << 26), BUCKETS - 1);
    }

    #[test]
    fn percentiles_within_a_bucket_width() {
        let stats = Stats::new();
        // 1..=1000 ms: p50 = 500, p90 = 900, p99 = 990.
        for ms in 1..=1000 {
            stats.response(false, Duration::from_millis(ms), None);
        }
        let snap = stats.snapshot();
        assert_eq!(snap.ttfb_samples, 1000);
        for (got, want) in snap.ttfb_ms.iter().zip([500.0, 900.0, 990.0]) {
            let got = got.expect("samples");
            assert!((got - want).abs() / want < 0.07, "{got} vs {want}");
        }
        assert_eq!(quantile_ms(&[0; BUCKETS], 0.5), None);
        // One sample: every percentile is it.
        let one = Stats::new();
        one.response(true, Duration::from_micros(3), None);
        assert_eq!(one.snapshot().ttfb_ms, [Some(0.0035); 3]);
    }

    #[test]
    fn percentiles_forget_samples_older_than_the_window() {
        let stats = Stats::new();
        stats.response(false, Duration::from_secs(5), None);
        for _ in 0..WINDOW_SECS {
            stats.tick();
        }
        assert_eq!(stats.snapshot().ttfb_samples, 1, "still in the window");
        stats.tick();
        assert_eq!(stats.snapshot().ttfb_samples, 0);
        assert_eq!(stats.snapshot().ttfb_ms, [None; 3]);
        stats.response(false, Duration::from_millis(2), None);
        let p50 = stats.snapshot().ttfb_ms[0].unwrap();
        assert!((1.8..2.2).contains(&p50), "{p50}");
    }

    #[test]
    fn rates_and_history() {
        let stats = Stats::new();
        assert_eq!(stats.snapshot().requests_per_s, 0.0);
        for _ in 0..20 {
            stats.response(true, Duration::ZERO, None);
            stats.sent(100);
        }
        stats.tick();
        let s = stats.snapshot();
        assert_eq!((s.requests, s.hits, s.bytes), (20, 20, 2000));
        assert_eq!(s.requests_per_s, 20.0);
        assert_eq!(s.bytes_per_s, 2000.0);
        assert_eq!(s.history.len(), HISTORY_SECS);
        assert_eq!(s.history[HISTORY_SECS - 1], 20);
        stats.tick();
        let s = stats.snapshot();
        assert_eq!(s.requests_per_s, 10.0, "20 over 2 s");
        assert_eq!(&s.history[HISTORY_SECS - 2..], &[20, 0]);
        for _ in 0..WINDOW_SECS {
            stats.tick();
        }
        assert_eq!(stats.snapshot().requests_per_s, 0.0);
        assert_eq!(stats.snapshot().history.len(), HISTORY_SECS);
    }

    #[test]
    fn long_keys_are_counted_under_their_first_bytes() {
        let stats = Stats::new();
        let long = format!("/{}é{}", "a".repeat(MAX_KEY_BYTES - 2), "b".repeat(10_000));
        stats.response(true, Duration::ZERO, Some(&long));
        stats.response(true, Duration::ZERO, Some(&format!("{long}c")));
        stats.tick();
        let top = stats.snapshot().top;
        assert_eq!(top.len(), 1, "one key: both share their first bytes");
        assert_eq!(top[0].1, 2);
        // Cut before the two-byte character that would straddle the limit.
        assert_eq!(top[0].0.len(), MAX_KEY_BYTES - 1);
        assert!(long.starts_with(&*top[0].0));
    }

    #[test]
    fn top_keys_roll_over_after_the_history() {
        let stats = Stats::new();
        for _ in 0..3 {
            stats.response(true, Duration::ZERO, Some("/a.ts"));
        }
        stats.response(false, Duration::ZERO, Some("/b.ts"));
        assert!(stats.snapshot().top.is_empty(), "only whole seconds");
        stats.tick();
        stats.response(true, Duration::ZERO, Some("/b.ts"));
        stats.tick();
        let top = stats.snapshot().top;
        let top: Vec<(&str, u64)> = top.iter().map(|(k, n)| (&**k, *n)).collect();
        assert_eq!(top, [("/a.ts", 3), ("/b.ts", 2)]);
        // The first second leaves the window after HISTORY_SECS more ticks.
        for _ in 0..HISTORY_SECS - 1 {
            stats.tick();
        }
        let top = stats.snapshot().top;
        let top: Vec<(&str, u64)> = top.iter().map(|(k, n)| (&**k, *n)).collect();
        assert_eq!(top, [("/b.ts", 1)]);
        stats.tick();
        assert!(stats.snapshot().top.is_empty());
        assert!(lock(&stats.window).keys.is_empty(), "no zero counts kept");
    }

    #[test]
    fn top_keys_are_the_most_counted() {
        let keys: HashMap<Arc<str>, u64> = (0..100u64)
            .map(|i| (Arc::from(format!("/k{i:02}")), i % 50))
            .collect();
        let top = top_keys(&keys);
        let top: Vec<(&str, u64)> = top.iter().map(|(k, n)| (&**k, *n)).collect();
        assert_eq!(
            top,
            [
                ("/k49", 49),
                ("/k99", 49),
                ("/k48", 48),
                ("/k98", 48),
                ("/k47", 47),
                ("/k97", 47),
                ("/k46", 46),
                ("/k96", 46),
                ("/k45", 45),
                ("/k95", 45),
            ]
        );
    }

    #[test]
    fn new_keys_beyond_the_budget_are_dropped_but_counted() {
        let stats = Stats::new();
        let budget = stats.keys_per_shard;
        for i in 0..budget + 10 {
            stats.response(false, Duration::ZERO, Some(&format!("/k{i}")));
        }
        // Keys already counted this second still count.
        stats.response(false, Duration::ZERO, Some("/k0"));
        stats.tick();
        let s = stats.snapshot();
        assert_eq!(s.requests, budget as u64 + 11);
        assert_eq!(s.top_dropped, 10);
        assert_eq!(s.top[0], (Arc::from("/k0"), 2));
        assert_eq!(lock(&stats.window).keys.len(), budget);
    }
}
