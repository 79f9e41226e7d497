//! A fill task's job (what to fetch and for whom) and how it can end.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use tokio::sync::OwnedSemaphorePermit;

use crate::cache::{CacheKey, CachedObject, ContentKind, StoreKey};
use crate::error::EdgeError;
use crate::upstream::Origin;

/// What the detached fill task needs to fetch and store one object.
pub struct FillJob {
    pub key: CacheKey,
    pub slot: StoreKey,
    pub kind: ContentKind,
    /// The leader's request headers (for `Vary` and storability).
    pub request_headers: HeaderMap,
    /// Headers to send to the origin.
    pub origin_headers: HeaderMap,
    /// The stored object being revalidated, if any.
    pub stale: Option<Arc<CachedObject>>,
    /// A fill other requests may join (not a private fetch).
    pub shared: bool,
    pub first_byte_timeout: Duration,
    /// A prefetch's concurrency slot, held until its fill ends (`None`: a client's fetch).
    pub prefetch: Option<OwnedSemaphorePermit>,
    /// The peer that owns the key, to ask before the origin (`None`: the origin).
    pub owner: Option<Arc<Origin>>,
}

impl FillJob {
    /// A shared fetch of `key` into `slot`, for a request with `request_headers`.
    pub fn new(
        key: CacheKey,
        slot: StoreKey,
        request_headers: HeaderMap,
        origin_headers: HeaderMap,
        first_byte_timeout: Duration,
    ) -> FillJob {
        FillJob {
            kind: ContentKind::from_path(key.path()),
            key,
            slot,
            request_headers,
            origin_headers,
            stale: None,
            shared: true,
            first_byte_timeout,
            prefetch: None,
            owner: None,
        }
    }

    /// Revalidates `stale` (conditional on its validators).
    pub fn revalidating(mut self, stale: Option<Arc<CachedObject>>) -> FillJob {
        self.stale = stale;
        self
    }

    /// A fetch for one request alone: no one joins it.
    pub fn private(mut self, private: bool) -> FillJob {
        self.shared = !private;
        self
    }

    /// Asks `owner`, a peer, before the origin.
    pub fn asking(mut self, owner: Option<Arc<Origin>>) -> FillJob {
        self.owner = owner;
        self
    }
}

/// Why a fill ended without its object, for metrics (`streamedge_fill_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillFailure {
    /// No usable answer from any origin (its `Cache-Status` detail).
    Origin(&'static str),
    /// An answer the readers cannot use (a 304 to nothing, a 5xx a stale copy stands in for).
    Status,
    /// The body broke off or stalled.
    Body,
    /// The body ended before its announced length.
    ShortBody,
    /// The in-flight memory budget could not hold a manifest read whole.
    Memory,
    /// No reader left for a fill that streams, or given up for memory with none waiting.
    Abandoned,
}

impl FillFailure {
    pub fn label(self) -> &'static str {
        match self {
            FillFailure::Origin(detail) => detail,
            FillFailure::Status => "status",
            FillFailure::Body => "body",
            FillFailure::ShortBody => "short-body",
            FillFailure::Memory => "memory",
            FillFailure::Abandoned => "abandoned",
        }
    }
}

/// A failed step: the error the readers get, and the reason for metrics.
pub(super) struct Failed {
    pub(super) error: EdgeError,
    pub(super) failure: FillFailure,
}

impl Failed {
    pub(super) fn new(error: EdgeError, failure: FillFailure) -> Failed {
        Failed { error, failure }
    }
}

/// How a fill that did not fail ends: readers read what was pushed, or `body` (a stored
/// object's, so its chunks need not be kept).
pub(super) enum Ending {
    Finish,
    FinishWith(Bytes),
}
