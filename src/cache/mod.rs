//! The object store: a byte-weighed LRU moka cache of complete, successful responses.
//!
//! A slot holds an object, a `Vary` index (which request headers pick the variant), or a
//! hit-for-miss marker (the origin said this key is not shareable: skip collapsing for a
//! while). Freshness is decided by `policy` from stored instants; moka's expiry is a backstop.

pub mod conditional;
pub(crate) mod fill;
pub mod key;
pub mod policy;

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

/// A stored response. Immutable: revalidation stores a new one sharing the same body.
#[derive(Debug, Clone)]
pub(crate) struct CachedObject {
    pub status: StatusCode,
    /// End-to-end headers as the origin sent them (minus hop-by-hop, Age, Content-Length).
    pub headers: HeaderMap,
    pub body: Bytes,
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
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        ENTRY_OVERHEAD
            + key.key.as_str().len() as u64
            + key.variant.as_ref().map_or(0, |v| v.len() as u64)
            + headers as u64
            + self.body.len() as u64
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
        Store {
            cache,
            max_object_size: cfg.max_object_size,
            unsettled: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            settle_every: (cfg.max_size / 64).clamp(256 << 10, 8 << 20),
        }
    }

    /// Finds the slot for a request: the object, the variant it needs, or a hit-for-miss mark.
    pub async fn lookup(&self, key: &CacheKey, request_headers: &HeaderMap) -> Lookup {
        let base = StoreKey::base(key.clone());
        match self.cache.get(&base).await {
            None => Lookup::Missing(base, false),
            Some(Slot::Object(o)) => Lookup::Found(base, o),
            Some(Slot::HitForMiss { until }) if until > Instant::now() => Lookup::HitForMiss(base),
            Some(Slot::HitForMiss { .. }) => Lookup::Missing(base, false),
            Some(Slot::Vary(names)) => {
                let variant = StoreKey {
                    key: key.clone(),
                    variant: Some(key::variant_of(request_headers, &names)),
                };
                match self.cache.get(&variant).await {
                    Some(Slot::Object(o)) => Lookup::Found(variant, o),
                    _ => Lookup::Missing(variant, true),
                }
            }
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
        let size = obj.body.len() as u64 + obj.encodings.as_ref().map_or(0, |e| e.len());
        match obj.vary.clone() {
            None => self.cache.insert(base, Slot::Object(obj)).await,
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
                    self.cache.insert(base, Slot::Vary(names)).await;
                }
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

    /// Replaces the object at a known slot (after revalidation).
    pub async fn replace(&self, slot: StoreKey, obj: Arc<CachedObject>) {
        self.cache.insert(slot, Slot::Object(obj)).await;
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
        existed
    }

    /// Removes a target under every host it is stored for (hosts are keyed when origins see the
    /// client's Host), with all its variants. Returns how many keys were stored.
    pub fn purge_all_hosts(&self, key: &CacheKey) -> usize {
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
    pub fn purge_prefix(&self, prefix: &str) -> usize {
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
        self.soft_purge_where(|k| {
            k.as_str() == key.as_str() && (key.host().is_none() || k.host() == key.host())
        })
        .await
    }

    /// Marks every object under a path prefix stale.
    pub async fn soft_purge_prefix(&self, prefix: &str) -> usize {
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
        }
    }
}

#[cfg(test)]
mod tests;
