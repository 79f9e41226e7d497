//! What the benchmarks (`compare`, `herd`, `hostile`, `fleet`, `disk` in `src/bin/`) share: the origin they load
//! from, the clients and crowds that measure, the caches under test as processes (streamedge,
//! nginx, Varnish) or in-process (streamedge), and the numbers and tables of the reports.
//!
//! # Layout
//!
//! - `admin`: streamedge's `/metrics`, read and summed
//! - `client`: one hand-written HTTP/1.1 GET per connection, the first body byte timed exactly
//! - `crowd`: a crowd of clients released at once (the herd), and the objects they fetch
//! - `diskutil`: the page cache dropped, the filesystem of a directory, what a directory holds
//! - `origin`: the trickling origin, with fixed files and per-prefix behaviour
//! - `rangeorigin`: a large synthetic object served whole or by byte ranges, body bytes counted
//! - `edge`: streamedge in-process, through the library API
//! - `edgeproc`: streamedge as a child process (the release binary)
//! - `fleet`: three streamedge processes on 127.0.0.2-.4, as one fleet or independent
//! - `loadgen`: a load generator run (bounded, killed on drop), wrk's `RESULT` line
//! - `nginx`, `varnish`: the other caches as child processes, with their configs
//! - `process`: free ports, signals, process groups, memory and CPU of a process tree
//! - `report`: percentiles and medians, the machine description, tables, a small JSON writer
//! - `setup`: the streamedge binary (built if needed), versions, the temporary directory, the
//!   demo rendition of the player mix

pub mod admin;
pub mod client;
pub mod crowd;
pub mod diskutil;
pub mod edge;
pub mod edgeproc;
pub mod fleet;
pub mod loadgen;
pub mod nginx;
pub mod origin;
pub mod process;
pub mod rangeorigin;
pub mod report;
pub mod setup;
pub mod varnish;
