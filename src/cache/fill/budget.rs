//! The in-flight memory budget (`cache.max_in_flight`) every fill and lease counts against.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Memory for bodies in flight, shared by every fill (`cache.max_in_flight`): the chunks fills
/// hold for their readers and for storing, plus leases (manifests read whole, request bodies).
pub struct Budget {
    limit: u64,
    used: AtomicU64,
    pub(super) freed: Notify,
}

impl Budget {
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicU64::new(0),
            freed: Notify::new(),
        })
    }

    pub(super) fn add(&self, n: u64) {
        self.used.fetch_add(n, Ordering::Relaxed);
        crate::metrics::fill_buffered(n as f64);
    }

    pub(super) fn release(&self, n: u64) {
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
