//! The object store, in two tiers: a byte-weighed LRU moka cache of complete, successful
//! responses in memory, and below it, when configured, the disk tier (`disk`).
//!
//! A slot holds an object, a `Vary` index (which request headers pick the variant), or a
//! hit-for-miss marker (the origin said this key is not shareable: skip collapsing for a
//! while). Freshness is decided by `policy` from stored instants; moka's expiry is a backstop.
//! A lookup asks memory, then disk; an object hit on disk often enough is copied to memory.
//! Stored objects are written through to disk when its policy takes them; purges reach both.

pub mod conditional;
pub(crate) mod disk;
pub(crate) mod fill;
pub mod key;
pub mod policy;
pub mod slice;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, StatusCode};
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use tokio::time::Instant;

pub use key::{CacheKey, ContentKind, StoreKey};
use policy::Freshness;

use crate::config::CacheConfig;

/// Per-entry bookkeeping weight, so many tiny objects still count.
const ENTRY_OVERHEAD: u64 = 256;

/// A stored body: in memory, or in a disk tier file (read a block at a time when sent).
#[derive(Debug, Clone)]
pub(crate) enum Body {
    Memory(Bytes),
    Disk(Arc<disk::DiskFile>),
}

impl Body {
    pub fn empty() -> Body {
        Body::Memory(Bytes::new())
    }

    pub fn len(&self) -> u64 {
        match self {
            Body::Memory(b) => b.len() as u64,
            Body::Disk(f) => f.len(),
        }
    }

    pub fn is_disk(&self) -> bool {
        matches!(self, Body::Disk(_))
    }

    /// The bytes, when they are in memory.
    pub fn in_memory(&self) -> Option<&Bytes> {
        match self {
            Body::Memory(b) => Some(b),
            Body::Disk(_) => None,
        }
    }
}

/// A stored response. Immutable: revalidation stores a new one sharing the same body.
#[derive(Debug, Clone)]
pub(crate) struct CachedObject {
    pub status: StatusCode,
    /// End-to-end headers as the origin sent them (minus hop-by-hop, Age, Content-Length).
    pub headers: HeaderMap,
    pub body: Body,
    pub kind: ContentKind,
    pub freshness: Freshness,
    /// Names from the response's `Vary`, if any.
    pub vary: Option<Arc<[HeaderName]>>,
    /// Which origin it came from.
    pub origin: Arc<str>,
    /// Compressed variants made by the edge (manifests and text), computed once at fill time.
    pub encodings: Option<Arc<Encodings>>,
    /// What a manifest said about itself.
    pub media: Option<MediaSummary>,
    /// The head of a whole-body answer from this object, made at its first such hit.
    pub hit_head: HitHead,
}

/// A response head made once per stored object and reused by every hit that answers with
/// the whole body (`proxy::respond`): a hit clones it and overwrites two values in place,
/// instead of cloning the stored headers and growing them by four. A copy of an object starts
/// without one (its headers or body may differ), so a head never outlives what it was made of.
#[derive(Debug, Default)]
pub(crate) struct HitHead(std::sync::OnceLock<HeaderMap>);

impl HitHead {
    pub fn get_or_init(&self, make: impl FnOnce() -> HeaderMap) -> &HeaderMap {
        self.0.get_or_init(make)
    }
}

impl Clone for HitHead {
    fn clone(&self) -> HitHead {
        HitHead::default()
    }
}

/// What a header map weighs in the cache: names, values and a bucket each.
fn header_bytes(h: &HeaderMap) -> usize {
    h.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum()
}

/// Brotli and gzip variants of one stored body.
#[derive(Debug, Default)]
pub(crate) struct Encodings {
    pub br: Option<Bytes>,
    pub gzip: Option<Bytes>,
}

impl Encodings {
    pub fn get(&self, e: crate::compress::Encoding) -> Option<&Bytes> {
        match e {
            crate::compress::Encoding::Brotli => self.br.as_ref(),
            crate::compress::Encoding::Gzip => self.gzip.as_ref(),
            crate::compress::Encoding::Identity => None,
        }
    }

    fn len(&self) -> u64 {
        self.br.as_ref().map_or(0, |b| b.len() as u64)
            + self.gzip.as_ref().map_or(0, |b| b.len() as u64)
    }
}

/// The timing facts of a stored manifest, for LL-HLS requests against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MediaSummary {
    pub live: bool,
    pub target_duration: Option<Duration>,
    pub part_target: Option<Duration>,
}

impl CachedObject {
    pub fn has_validator(&self) -> bool {
        policy::has_validator(&self.headers)
    }

    fn weight(&self, key: &StoreKey) -> u64 {
        // The hit head, made later, is counted as a second copy of the headers plus the
        // four values it adds.
        let headers = 2 * header_bytes(&self.headers) + 4 * 64;
        ENTRY_OVERHEAD
            + key.key.as_str().len() as u64
            + key.variant.as_ref().map_or(0, |v| v.len() as u64)
            + headers as u64
            + self.body.in_memory().map_or(0, |b| b.len() as u64)
            + self.encodings.as_ref().map_or(0, |e| e.len())
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Slot {
    Object(Arc<CachedObject>),
    Vary(Arc<[HeaderName]>),
    HitForMiss { until: Instant },
}

/// What a lookup found for a request.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A stored object (fresh or not: the caller asks `policy`).
    Found(StoreKey, Arc<CachedObject>),
    /// Nothing stored; `bool` is true when a `Vary` index exists but not this variant.
    Missing(StoreKey, bool),
    /// The key is marked uncacheable: fetch without collapsing.
    HitForMiss(StoreKey),
}

struct SlotExpiry {
    stale_retention: Duration,
}

#[allow(clippy::disallowed_types)] // moka's `Expiry` signature takes `std::time::Instant`
impl moka::Expiry<StoreKey, Slot> for SlotExpiry {
    fn expire_after_create(
        &self,
        _key: &StoreKey,
        value: &Slot,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(self.retention(value))
    }

    fn expire_after_update(
        &self,
        _key: &StoreKey,
        value: &Slot,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.retention(value))
    }
}

impl SlotExpiry {
    fn retention(&self, value: &Slot) -> Duration {
        // Backstop only; policy decides freshness from the stored instants. A small slack keeps
        // an object long enough to be revalidated or served stale within its windows.
        let slack = Duration::from_secs(1);
        match value {
            Slot::Object(o) => {
                o.freshness
                    .retention(o.has_validator(), self.stale_retention)
                    + slack
            }
            Slot::Vary(_) => Duration::from_secs(24 * 3600),
            Slot::HitForMiss { until } => until.saturating_duration_since(Instant::now()) + slack,
        }
    }
}

/// The cache of complete objects.
#[derive(Clone)]
pub(crate) struct Store {
    cache: Cache<StoreKey, Slot>,
    disk: Option<disk::Disk>,
    stale_retention: Duration,
    pub max_object_size: u64,
    /// Bytes inserted since moka last ran its maintenance (where evictions happen).
    unsettled: Arc<std::sync::atomic::AtomicU64>,
    /// How far inserts may run ahead of eviction before maintenance runs inline.
    settle_every: u64,
}

impl Store {
    pub fn new(cfg: &CacheConfig) -> Store {
        let cache = Cache::builder()
            .max_capacity(cfg.max_size)
            .weigher(|k: &StoreKey, v: &Slot| {
                let w = match v {
                    Slot::Object(o) => o.weight(k),
                    _ => ENTRY_OVERHEAD + k.key.as_str().len() as u64,
                };
                u32::try_from(w).unwrap_or(u32::MAX)
            })
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(SlotExpiry {
                stale_retention: cfg.stale_retention,
            })
            .support_invalidation_closures()
            .eviction_listener(|_k, _v, cause| {
                if cause.was_evicted() {
                    crate::metrics::cache_eviction(cause);
                }
            })
            .build();
        if cfg.disk.is_none() {
            crate::metrics::disk_state(false, false);
        }
        Store {
            cache,
            disk: cfg.disk.as_ref().map(disk::Disk::open),
            stale_retention: cfg.stale_retention,
            max_object_size: cfg.max_object_size,
            unsettled: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            settle_every: (cfg.max_size / 64).clamp(256 << 10, 8 << 20),
        }
    }

    /// Finds the slot for a request: the object, the variant it needs, or a hit-for-miss mark
    /// — in memory, then on disk.
    pub async fn lookup(&self, key: &CacheKey, request_headers: &HeaderMap) -> Lookup {
        let base = StoreKey::base(key.clone());
        match self.slot(&base).await {
            None => Lookup::Missing(base, false),
            Some(Slot::Object(o)) => Lookup::Found(base, o),
            Some(Slot::HitForMiss { until }) if until > Instant::now() => Lookup::HitForMiss(base),
            Some(Slot::HitForMiss { .. }) => Lookup::Missing(base, false),
            Some(Slot::Vary(names)) => {
                let variant = StoreKey {
                    key: key.clone(),
                    variant: Some(key::variant_of(request_headers, &names)),
                };
                match self.slot(&variant).await {
                    Some(Slot::Object(o)) => Lookup::Found(variant, o),
                    _ => Lookup::Missing(variant, true),
                }
            }
        }
    }

    /// A slot from memory, else from disk (a future of its own: a memory hit's stays small).
    async fn slot(&self, slot: &StoreKey) -> Option<Slot> {
        match self.cache.get(slot).await {
            Some(found) => Some(found),
            None if self.disk.is_none() => None,
            None => Box::pin(self.on_disk(slot)).await,
        }
    }

    /// A slot from the disk tier. A `Vary` index goes back to memory at once; an object once
    /// it has been hit `promote_after` times (a copy read beside the hit that promotes it).
    async fn on_disk(&self, slot: &StoreKey) -> Option<Slot> {
        let disk = self.disk.as_ref()?;
        match disk.lookup(slot).await? {
            disk::DiskFound::Vary(names) => {
                self.cache
                    .insert(slot.clone(), Slot::Vary(names.clone()))
                    .await;
                Some(Slot::Vary(names))
            }
            disk::DiskFound::Object(obj, promote) => {
                let promote = promote && obj.body.len() <= self.max_object_size;
                let obj = Arc::new(*obj);
                if promote && let Body::Disk(file) = &obj.body {
                    // This hit streams from the file; a copy goes to memory beside it.
                    crate::metrics::disk_promotion();
                    let (store, file, slot, obj) =
                        (self.clone(), file.clone(), slot.clone(), obj.clone());
                    tokio::spawn(async move { store.promote(slot, &obj, &file).await });
                }
                Some(Slot::Object(obj))
            }
        }
    }

    /// Copies a disk object to the memory tier (read off the runtime's threads) — unless the
    /// slot changed meanwhile: purged (its file left the index) or stored anew in memory.
    async fn promote(&self, slot: StoreKey, obj: &CachedObject, file: &Arc<disk::DiskFile>) {
        let Some(disk) = &self.disk else { return };
        let Some(bytes) = disk.read_all(file).await else {
            return;
        };
        if !disk.holds(&slot) {
            return;
        }
        let copy = Arc::new(CachedObject {
            body: Body::Memory(bytes),
            ..obj.clone()
        });
        let size = copy.body.len();
        let entry = self
            .cache
            .entry(slot)
            .or_insert_with(async move { Slot::Object(copy) })
            .await;
        if entry.is_fresh() {
            self.settle(size).await;
        }
    }

    /// A stored body in memory: as it is, or read from its disk file (off the runtime's
    /// threads). `None` when the file turned out damaged or unreadable.
    pub async fn body_bytes(&self, body: &Body) -> Option<Bytes> {
        match body {
            Body::Memory(b) => Some(b.clone()),
            Body::Disk(f) => self.disk.as_ref()?.read_all(f).await,
        }
    }

    /// Waits (at most `limit`) until what was offered to the disk is written: shutdown.
    pub async fn flush(&self, limit: Duration) {
        if let Some(d) = &self.disk {
            d.flush(limit).await;
        }
    }

    /// The object at exactly this slot, in memory or on disk.
    pub async fn find(&self, slot: &StoreKey) -> Option<Arc<CachedObject>> {
        match self.slot(slot).await {
            Some(Slot::Object(o)) => Some(o),
            _ => None,
        }
    }

    /// Whether a slot is stored in either tier, without reading anything.
    pub fn holds(&self, slot: &StoreKey) -> bool {
        self.cache.contains_key(slot) || self.disk.as_ref().is_some_and(|d| d.holds(slot))
    }

    /// Drops every slice of a key and its marker, on both tiers (its version changed).
    pub async fn drop_slices(&self, key: &CacheKey) {
        let k = key.clone();
        let _ = self
            .cache
            .invalidate_entries_if(move |sk, _| sk.key == k && sk.variant.is_some());
        if let Some(d) = &self.disk {
            d.purge_key(key, false).await;
        }
    }

    /// The stored object at exactly this slot, if any.
    pub async fn get(&self, slot: &StoreKey) -> Option<Arc<CachedObject>> {
        match self.cache.get(slot).await {
            Some(Slot::Object(o)) => Some(o),
            _ => None,
        }
    }

    /// Stores a complete object for the request that fetched it, under its `Vary` variant.
    pub async fn insert(
        &self,
        key: &CacheKey,
        request_headers: &HeaderMap,
        obj: Arc<CachedObject>,
    ) {
        let base = StoreKey::base(key.clone());
        let size = obj.body.len() + obj.encodings.as_ref().map_or(0, |e| e.len());
        match obj.vary.clone() {
            None => {
                self.offer(&base, disk::Offer::Object(&obj));
                self.cache.insert(base, Slot::Object(obj)).await;
            }
            Some(names) => {
                let variant = StoreKey {
                    key: key.clone(),
                    variant: Some(key::variant_of(request_headers, &names)),
                };
                let same_index = matches!(
                    self.cache.get(&base).await,
                    Some(Slot::Vary(existing)) if existing == names
                );
                if !same_index {
                    self.offer(&base, disk::Offer::Vary(&names));
                    self.cache.insert(base, Slot::Vary(names)).await;
                }
                self.offer(&variant, disk::Offer::Object(&obj));
                self.cache.insert(variant, Slot::Object(obj)).await;
            }
        }
        self.settle(size).await;
    }

    /// moka enforces its capacity in batches, which lets a burst of large inserts overshoot the
    /// configured size by many objects; once enough bytes went in, evict now.
    async fn settle(&self, inserted: u64) {
        use std::sync::atomic::Ordering;
        let total = self.unsettled.fetch_add(inserted, Ordering::Relaxed) + inserted;
        if total >= self.settle_every {
            self.unsettled.store(0, Ordering::Relaxed);
            self.cache.run_pending_tasks().await;
        }
    }

    fn offer(&self, slot: &StoreKey, offer: disk::Offer<'_>) {
        if let Some(d) = &self.disk {
            d.offer(slot, offer, self.stale_retention);
        }
    }

    /// Replaces the object at a known slot (after revalidation), in the tier its body is in,
    /// and on disk when the policy takes it.
    pub async fn replace(&self, slot: StoreKey, obj: Arc<CachedObject>) {
        self.offer(&slot, disk::Offer::Object(&obj));
        if obj.body.is_disk() {
            self.cache.invalidate(&slot).await;
        } else {
            self.cache.insert(slot, Slot::Object(obj)).await;
        }
    }

    /// Marks a key as not worth collapsing for `ttl`, unless a stored object exists.
    pub async fn mark_hit_for_miss(&self, key: &CacheKey, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let base = StoreKey::base(key.clone());
        if matches!(self.cache.get(&base).await, Some(Slot::Object(_))) {
            self.cache.invalidate(&base).await;
        }
        if let Some(d) = &self.disk {
            d.remove(&base);
        }
        self.cache
            .insert(
                base,
                Slot::HitForMiss {
                    until: Instant::now() + ttl,
                },
            )
            .await;
    }

    /// Removes a key and all its variants. Returns whether anything was stored.
    pub async fn purge(&self, key: &CacheKey) -> bool {
        let base = StoreKey::base(key.clone());
        let existed = self.cache.get(&base).await.is_some();
        self.cache.invalidate(&base).await;
        let k = key.clone();
        let _ = self
            .cache
            .invalidate_entries_if(move |sk, _| sk.key == k && sk.variant.is_some());
        let on_disk = match &self.disk {
            Some(d) => d.purge_key(key, false).await,
            None => 0,
        };
        existed || on_disk > 0
    }

    /// Removes a target under every host it is stored for (hosts are keyed when origins see the
    /// client's Host), with all its variants. Returns how many keys were stored.
    pub async fn purge_all_hosts(&self, key: &CacheKey) -> usize {
        if let Some(d) = &self.disk {
            d.purge_key(&key.with_host(None), false).await;
            d.purge_matching(disk::Pattern::Target(key.as_str()), false)
                .await;
        }
        let target = key.as_str().to_owned();
        let n = self
            .cache
            .iter()
            .filter(|(k, _)| k.variant.is_none() && k.key.as_str() == target)
            .count();
        let _ = self
            .cache
            .invalidate_entries_if(move |sk, _| sk.key.as_str() == target);
        n
    }

    /// Removes every key that starts with `prefix`. Returns how many keys matched.
    pub async fn purge_prefix(&self, prefix: &str) -> usize {
        if let Some(d) = &self.disk {
            d.purge_matching(disk::Pattern::Prefix(prefix), false).await;
        }
        let n = self
            .cache
            .iter()
            .filter(|(k, _)| k.key.as_str().starts_with(prefix))
            .count();
        let p = prefix.to_owned();
        let _ = self
            .cache
            .invalidate_entries_if(move |sk, _| sk.key.as_str().starts_with(&p));
        n
    }

    /// Marks every stored variant of a key stale so the next request revalidates it.
    /// A key without a host marks the target stale under every host.
    pub async fn soft_purge(&self, key: &CacheKey) -> usize {
        if let Some(d) = &self.disk {
            match key.host() {
                None => {
                    d.purge_key(key, true).await;
                    d.purge_matching(disk::Pattern::Target(key.as_str()), true)
                        .await;
                }
                Some(_) => {
                    d.purge_key(key, true).await;
                }
            }
        }
        self.soft_purge_where(|k| {
            k.as_str() == key.as_str() && (key.host().is_none() || k.host() == key.host())
        })
        .await
    }

    /// Marks every object under a path prefix stale.
    pub async fn soft_purge_prefix(&self, prefix: &str) -> usize {
        if let Some(d) = &self.disk {
            d.purge_matching(disk::Pattern::Prefix(prefix), true).await;
        }
        self.soft_purge_where(|k| k.as_str().starts_with(prefix))
            .await
    }

    async fn soft_purge_where(&self, matches: impl Fn(&CacheKey) -> bool) -> usize {
        let mut n = 0;
        let slots: Vec<(Arc<StoreKey>, Slot)> =
            self.cache.iter().filter(|(k, _)| matches(&k.key)).collect();
        for (slot, value) in slots {
            if let Slot::Object(o) = value {
                self.cache
                    .insert((*slot).clone(), Slot::Object(Arc::new(o.expired())))
                    .await;
                n += 1;
            }
        }
        n
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// The memory tier's capacity in bytes.
    pub fn max_size(&self) -> u64 {
        self.cache.policy().max_capacity().unwrap_or(0)
    }

    /// The disk tier's state and size, when one is configured.
    pub fn disk_usage(&self) -> Option<disk::DiskUsage> {
        self.disk.as_ref().map(disk::Disk::usage)
    }

    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }
}

impl CachedObject {
    /// A copy that is already stale and has no stale-serving windows (soft purge).
    pub fn expired(&self) -> CachedObject {
        let mut freshness = self.freshness;
        freshness.lifetime = Duration::ZERO;
        freshness.stale_while_revalidate = Duration::ZERO;
        freshness.stale_if_error = Duration::ZERO;
        CachedObject {
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
            kind: self.kind,
            freshness,
            vary: self.vary.clone(),
            origin: self.origin.clone(),
            encodings: self.encodings.clone(),
            media: self.media,
            hit_head: HitHead::default(),
        }
    }
}

#[cfg(test)]
mod tests;
