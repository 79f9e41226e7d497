//! Test harness, by role: `origin` (scriptable, counting origins), `edge` (a real edge on
//! loopback ports, configured through a typed `Config`), `client` (requests and the assertions
//! made on them), `process` (the `streamedge` binary as a process of its own) and `ranged` (a
//! Range-capable origin of large synthetic objects, for slices).
//!
//! Everything a test starts it stops: origins abort their connection tasks on `stop`, edges
//! drain and end their `run` task on `stop`, and every wait is bounded by a timeout.

// Each test binary uses its own part of the harness.
#![allow(dead_code)]

pub mod client;
pub mod edge;
pub mod origin;
pub mod process;
pub mod ranged;

pub use client::*;
pub use edge::*;
pub use origin::*;
#[allow(unused_imports)] // only the suites that run the binary use it
pub use process::EdgeProcess;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bounds a wait; panics with `what` when it takes longer than `secs` seconds.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a shifted, truncated or mixed-up body
/// never compares equal by accident.
pub fn payload(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}
