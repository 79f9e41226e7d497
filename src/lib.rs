//! streamedge: an HTTP caching edge node for HLS and DASH video.
//!
//! Players fetch manifests and segments over HTTPS (rustls, HTTP/1.1 and HTTP/2). The edge
//! answers from memory, or from its disk tier, when it can; on a miss it fetches each object **once** from an origin
//! fleet, however many players asked, and streams the bytes to all of them as they arrive.
//!
//! A request goes through the phases of `proxy`, in this order (`proxy::serve` reads as this
//! table of contents):
//!
//! ```text
//! client ─TLS─▶ server ─▶ proxy
//!                 peer     a fleet peer's forwarding mark checked (then served here, never
//!                          forwarded again); a peer's probe or purge answered
//!                 target   one canonical form of host, path and query; bad ones get a 4xx
//!                 admit    GET/HEAD for a served host (others forwarded, or 405)
//!                 sign     signed-URL token check
//!                 key      cache key and media kind
//!                 CMCD     what the player reports; the next object to prefetch
//!                 LL-HLS   blocking playlist reloads wait for the asked-for part
//!                 lookup   memory, then disk: fresh → answer | stale → revalidate or serve
//!                          stale | miss
//!                 slice    a miss of a large object (or a range on a miss): slices by Range
//!                 fill     join the in-flight fetch for the slot or lead a new one; a detached
//!                          task asks the key's owner in the fleet (another node), or the
//!                          ring's origin, and every waiter streams the bytes
//!                 respond  encode (Brotli/gzip), Age, Cache-Status, preconditions, Range
//!                 log      access line + metrics when the body ends
//! ```
//!
//! # Layout
//!
//! ```text
//! main.rs               the CLI: run, check, origin, demo
//! run.rs                running one edge: listeners, admin, probes, reloads, graceful stop
//! config/               YAML → validated Config, every error with its field, line and column
//!   raw.rs              the configuration as written: serde structs and defaults
//!   units.rs            sizes and durations in human units
//!   position.rs         YAML positions of fields, for error messages
//!   rules.rs            cache-key, signed-URL and compression rule types
//!   validate.rs         one validation function per section
//!   cluster.rs          the cluster section: raw, typed, validated
//! accept.rs             the accept loop (back-off on errors, stop at shutdown)
//! server.rs             client connections: limits, TLS handshake, HTTP/1.1 + HTTP/2, watchdog
//! tls.rs                certificates, ALPN, the reloadable resolver
//! target.rs             the canonical request target
//! proxy/                the request path (mod.rs: serve, the table of contents)
//!   context.rs          the state a request reads: proxy, runtime, per-request context
//!   admit.rs            target, admit, sign, key, CMCD, LL-HLS
//!   lookup.rs           what the store can answer
//!   slice.rs            large objects answered from slices fetched by Range
//!   peer.rs             requests from peers: the mark checked, probes, fleet purges
//!   purge.rs            purges, for the admin API and peers
//!   fill.rs             joining or leading the in-flight fetch of a slot
//!   spawn.rs            starting fill tasks: misses, revalidations, prefetches
//!   task/               the detached fill task, in named steps
//!     job.rs            what to fetch, for whom, and how a task can end
//!     plan.rs           what the origin answered and what the fill does with it
//!   forward.rs          unsafe methods and OPTIONS, forwarded uncached
//!   headers.rs          headers to origins (allow-list, forwarding chain) and to clients
//!   respond.rs          the one place responses are built
//!   cache_status.rs     the one Cache-Status (RFC 9211) builder
//!   body.rs             response bodies made by the edge
//!   log.rs              access log line and request metrics
//! cache/                the store: a memory tier (moka) over an optional disk tier
//!   key.rs              cache keys and key rules
//!   policy/             RFC 9111: Cache-Control, storability, freshness, age
//!   conditional.rs      preconditions (RFC 9110 §13) and ranges (§14)
//!   fill/               the in-flight table: one fetch per slot, fanned out to every reader
//!     budget.rs         the in-flight memory budget
//!     writer.rs         the writing end: chunks, pacing, store on completion
//!     reader.rs         one request's view of a fill
//!   disk/               the disk tier: files, an index of hashes, recovery at start
//!     format.rs         the file layout and its checksums
//!     index.rs          the in-memory index: CLOCK eviction, doorkeeper admission
//!     file.rs           a stored file opened: checked block reads, streamed bodies
//!     rules.rs          purges by target or prefix, kept and logged for the files
//!   slice.rs            slices of large objects: slots, spans, versions
//! cluster/              the fleet: members, the owner of a key, forwarding to it
//!   mark.rs             the forwarding mark (HMAC) between nodes
//!   dns.rs              members from DNS (A/AAAA or SRV)
//!   kubernetes.rs       members from a Service's EndpointSlices (feature `kubernetes`)
//! upstream/             the origin client: ring-ordered choice with failover
//!   ring.rs             the consistent-hash ring
//!   health.rs           active probes and passive ejection
//! media.rs              what HLS and DASH manifests say (liveness, timing, next objects)
//! llhls.rs              LL-HLS delivery directives (_HLS_msn, _HLS_part, _HLS_skip)
//! syntax.rs             HLS attribute lists and ISO 8601 durations (edge and origin)
//! percent.rs            percent-decoding, lenient (edge) and strict (origin)
//! cmcd.rs               Common Media Client Data
//! compress.rs           Accept-Encoding negotiation, Brotli and gzip
//! signing.rs            signed-URL tokens
//! error.rs              the request path's error type and its status mapping
//! metrics.rs            every metric name, the recorder
//! stats.rs              the node's live numbers for the status page (rates, TTFB, top keys)
//! logging.rs            log setup, non-blocking access lines
//! admin/                the admin listener: metrics, health, readiness, purge
//!   status.rs           the live status page and its JSON
//! origin/               the synthetic origin (`streamedge origin`) and the bundled demo media
//!   setup.rs            the file table and live views, built at start
//!   respond.rs          requests to responses (200, 206, 304, 416)
//!   live.rs             live renderings and retimed segments
//!   files.rs            the served files and their validators
//!   paths.rs            request paths: view and file key
//!   clock.rs            the live clock and its text formats
//!   hls/                HLS playlists: parsing, the live sliding window
//!   dash/               DASH MPDs: xml.rs, template.rs, render.rs
//!   mp4.rs              fragmented MP4 decode times, shifted per loop
//!   media.rs            the embedded demo media
//! ```

mod accept;
mod admin;
pub mod cache;
mod cluster;
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
mod stats;
pub mod syntax;
pub mod target;
pub mod tls;
pub mod upstream;

pub use run::{Addrs, Listeners, StartError, per_core, run, run_with_reload};
pub use server::{http_builder, raise_nofile_limit};

/// Objects of 256 KiB and more (segments) get their own mappings, returned to the system as
/// soon as they are evicted. glibc's default raises this threshold after the first large free,
/// after which evicted segments leave holes in the heap and the resident size drifts far above
/// the configured cache size. `MALLOC_MMAP_THRESHOLD_` in the environment still wins. Call it
/// first thing in `main`, before any thread starts (the binary and the benchmarks' bare server).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        }
    }
}
