//! Hostile clients: attacks the edge withstands, each asserted over real sockets.

#[path = "../common/mod.rs"]
mod common;

mod h2;
mod smuggling;
