//! HTTP caching conformance over real sockets (RFC 9111, 9110 §13–14, 9211, 9213, 5861): origins
//! script their headers, tests assert what the client sees, what the origin received and how
//! often, and the edge's `Cache-Status`.
//!
//! Paths without a media extension are `other` content (no default TTL), so the origin's headers
//! alone decide; `.ts` paths are segments and `.m3u8` manifests. Freshness in tests is 1 s and
//! the sleeps that let it run out are 1.1–1.3 s.

#[path = "../common/mod.rs"]
mod common;

mod bench;

mod client_directives;
mod directives;
mod every_response;
mod freshness;
mod heuristics;
mod parsing;
mod preconditions;
mod purge;
mod ranges;
mod revalidation;
mod stale;
mod vary;
