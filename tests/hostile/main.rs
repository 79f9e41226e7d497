//! Hostile traffic: every attack on the edge that we know of, over real sockets — ambiguous
//! paths against signed URLs, Host games, unkeyed headers, origin-health games, slow readers,
//! connection limits, request smuggling and HTTP/2 abuse — each asserting what the client gets
//! and what the origin saw.

#[path = "../common/mod.rs"]
mod common;

mod raw;
mod rawsrv;

mod connections;
mod h2;
mod headers;
mod health;
mod host;
mod memory;
mod smuggling;
mod target;
