//! streamedge: an HTTP caching edge node for HLS and DASH video.
//!
//! Players fetch manifests and segments over HTTPS (rustls, HTTP/1.1 and HTTP/2). The edge
//! answers from memory when it can; on a miss it fetches each object **once** from an origin
//! fleet, however many players asked, and streams the bytes to all of them as they arrive.
//!
//! A request goes through the phases of [`proxy`]:
//!
//! ```text
//! client ─TLS─▶ server ─▶ proxy::handle
//!                           admit    GET/HEAD for a served host, else 4xx
//!                           key      normalised path + query → CacheKey, media kind
//!                           lookup   fresh → respond | stale → revalidate / serve stale | miss
//!                           fill     join the in-flight fetch for the slot or lead a new one;
//!                                    the leader's detached task asks the ring's origin, and
//!                                    body chunks reach every waiter as they arrive
//!                           respond  Age, Cache-Status (RFC 9211), preconditions, Range
//!                           log      access line + metrics when the body ends
//! ```
//!
//! Modules: [`config`] (YAML → validated types), [`server`] (connections), [`tls`],
//! [`proxy`] (the phases), [`cache`] (store, policy, in-flight table), [`upstream`] (origins,
//! ring, health), [`compress`], [`metrics`], [`admin`], [`origin`] (the synthetic origin).

mod accept;
mod admin;
pub mod cache;
pub mod cmcd;
mod compress;
pub mod config;
mod error;
pub mod llhls;
pub mod logging;
pub mod media;
mod metrics;
pub mod origin;
mod percent;
mod proxy;
mod run;
mod server;
pub mod signing;
pub mod syntax;
pub mod target;
pub mod tls;
pub mod upstream;

pub use run::{Addrs, Listeners, StartError, run, run_with_reload};
