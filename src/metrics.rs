//! Every metric name in one place, the Prometheus recorder, and the functions that record.
//!
//! Labels are bounded: method, status class, cache result, media kind, origin name, protocol.
//! Never a path.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "streamedge_requests_total";
pub const RESPONSE_BYTES: &str = "streamedge_response_bytes_total";
pub const REQUEST_DURATION: &str = "streamedge_request_duration_seconds";
pub const TTFB: &str = "streamedge_time_to_first_byte_seconds";
pub const ORIGIN_REQUESTS: &str = "streamedge_origin_requests_total";
pub const ORIGIN_ERRORS: &str = "streamedge_origin_errors_total";
pub const ORIGIN_RETRIES: &str = "streamedge_origin_retries_total";
pub const ORIGIN_RESENDS: &str = "streamedge_origin_resends_total";
pub const ORIGIN_ALL_DOWN: &str = "streamedge_origin_all_down_requests_total";
pub const ORIGIN_FETCH_DURATION: &str = "streamedge_origin_fetch_duration_seconds";
pub const ORIGIN_UP: &str = "streamedge_origin_up";
pub const ORIGIN_CONNECTIONS: &str = "streamedge_origin_connections_total";
pub const HEALTH_PROBES: &str = "streamedge_origin_health_probes_total";
pub const COLLAPSED: &str = "streamedge_collapsed_requests_total";
pub const FILLS_IN_FLIGHT: &str = "streamedge_fills_in_flight";
pub const FILL_FAILURES: &str = "streamedge_fill_failures_total";
pub const FILL_BUFFERED: &str = "streamedge_fill_buffered_bytes";
pub const FILL_SHED: &str = "streamedge_fill_shed_total";
pub const CACHE_BYTES: &str = "streamedge_cache_bytes";
pub const CACHE_OBJECTS: &str = "streamedge_cache_objects";
pub const CACHE_EVICTIONS: &str = "streamedge_cache_evictions_total";
pub const CLIENT_CONNECTIONS_OPEN: &str = "streamedge_client_connections_open";
pub const CLIENT_CONNECTIONS: &str = "streamedge_client_connections_total";
pub const CLIENT_SEND_TIMEOUTS: &str = "streamedge_client_send_timeouts_total";
pub const ACCEPT_ERRORS: &str = "streamedge_accept_errors_total";
pub const TLS_HANDSHAKES: &str = "streamedge_tls_handshakes_total";
pub const TLS_HANDSHAKE_ERRORS: &str = "streamedge_tls_handshake_errors_total";
pub const PREFETCHES: &str = "streamedge_prefetches_total";
pub const COMPRESSED: &str = "streamedge_compressed_responses_total";
pub const CMCD_REQUESTS: &str = "streamedge_cmcd_requests_total";
pub const CMCD_STARVATION: &str = "streamedge_cmcd_buffer_starvation_total";
pub const PEER_REQUESTS: &str = "streamedge_peer_requests_total";
pub const PEER_ERRORS: &str = "streamedge_peer_errors_total";
pub const PEER_RETRIES: &str = "streamedge_peer_retries_total";
pub const PEER_RESENDS: &str = "streamedge_peer_resends_total";
pub const PEER_ALL_DOWN: &str = "streamedge_peer_all_down_requests_total";
pub const PEER_FETCH_DURATION: &str = "streamedge_peer_fetch_duration_seconds";
pub const PEER_UP: &str = "streamedge_peer_up";
pub const PEER_HEALTH_PROBES: &str = "streamedge_peer_health_probes_total";
pub const PEER_FALLBACKS: &str = "streamedge_peer_fallbacks_total";
pub const PEER_MARKS_REJECTED: &str = "streamedge_peer_marks_rejected_total";
pub const PEER_FORWARDED: &str = "streamedge_peer_forwarded_requests_total";
pub const PEER_SERVED: &str = "streamedge_peer_served_requests_total";
pub const CLUSTER_MEMBERS: &str = "streamedge_cluster_members";
pub const CLUSTER_OWNED_SHARE: &str = "streamedge_cluster_owned_share";
pub const DISK_ENABLED: &str = "streamedge_disk_enabled";
pub const DISK_INDEX_READY: &str = "streamedge_disk_index_ready";
pub const DISK_OBJECTS: &str = "streamedge_disk_objects";
pub const DISK_BYTES: &str = "streamedge_disk_bytes";
pub const DISK_HITS: &str = "streamedge_disk_hits_total";
pub const DISK_WRITES: &str = "streamedge_disk_writes_total";
pub const DISK_ERRORS: &str = "streamedge_disk_errors_total";
pub const DISK_CORRUPT: &str = "streamedge_disk_corrupt_total";
pub const DISK_EVICTIONS: &str = "streamedge_disk_evictions_total";
pub const DISK_PROMOTIONS: &str = "streamedge_disk_promotions_total";
pub const SLICE_FETCHES: &str = "streamedge_slice_fetches_total";
pub const SLICE_VERSION_CHANGES: &str = "streamedge_slice_version_changes_total";

/// Buckets for request-side latencies (seconds).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle (tests run many edges in
/// one process; they share it).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("buckets are non-empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    handle
                }
                // Another recorder is installed (embedding application): render what we own.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// How each metric is described in the exposition: name, type, unit, help.
const HELP: &[(&str, Type, Option<Unit>, &str)] = &[
    (
        REQUESTS,
        Type::Counter,
        None,
        "Client requests by method, status class and cache result.",
    ),
    (
        RESPONSE_BYTES,
        Type::Counter,
        Some(Unit::Bytes),
        "Body bytes sent to clients by media kind.",
    ),
    (
        REQUEST_DURATION,
        Type::Histogram,
        Some(Unit::Seconds),
        "Time from request to the last body byte.",
    ),
    (
        TTFB,
        Type::Histogram,
        Some(Unit::Seconds),
        "Time from request to the response head.",
    ),
    (
        ORIGIN_REQUESTS,
        Type::Counter,
        None,
        "Requests sent to each origin.",
    ),
    (
        ORIGIN_ERRORS,
        Type::Counter,
        None,
        "Origin requests that failed before a response head.",
    ),
    (
        ORIGIN_RETRIES,
        Type::Counter,
        None,
        "Origin attempts retried on the next origin.",
    ),
    (
        ORIGIN_FETCH_DURATION,
        Type::Histogram,
        Some(Unit::Seconds),
        "Origin fetch time, request to last byte.",
    ),
    (
        ORIGIN_UP,
        Type::Gauge,
        None,
        "1 when the origin is considered healthy.",
    ),
    (
        ORIGIN_RESENDS,
        Type::Counter,
        None,
        "Requests sent again on a new connection after a reused one failed before any response byte.",
    ),
    (
        ORIGIN_ALL_DOWN,
        Type::Counter,
        None,
        "Origin requests sent while every origin was out (passive: all tried anyway; active: trials).",
    ),
    (
        HEALTH_PROBES,
        Type::Counter,
        None,
        "Active health probes by result.",
    ),
    (
        COLLAPSED,
        Type::Counter,
        None,
        "Requests that joined another request's origin fetch.",
    ),
    (
        FILLS_IN_FLIGHT,
        Type::Gauge,
        None,
        "Origin fetches in flight that requests can join.",
    ),
    (
        FILL_FAILURES,
        Type::Counter,
        None,
        "Origin fetches that failed, by reason.",
    ),
    (
        FILL_BUFFERED,
        Type::Gauge,
        Some(Unit::Bytes),
        "Body bytes held in flight (fills for their readers and for storing, manifests read whole, request bodies): counted against cache.max_in_flight.",
    ),
    (
        FILL_SHED,
        Type::Counter,
        None,
        "Fills that gave up keeping their whole body (not stored) because cache.max_in_flight was exhausted.",
    ),
    (
        CACHE_BYTES,
        Type::Gauge,
        Some(Unit::Bytes),
        "Weighted size of the cache.",
    ),
    (CACHE_OBJECTS, Type::Gauge, None, "Entries in the cache."),
    (
        CACHE_EVICTIONS,
        Type::Counter,
        None,
        "Entries evicted for space or expiry.",
    ),
    (
        CLIENT_CONNECTIONS_OPEN,
        Type::Gauge,
        None,
        "Open client connections by protocol.",
    ),
    (
        CLIENT_CONNECTIONS,
        Type::Counter,
        None,
        "Accepted client connections by protocol.",
    ),
    (
        CLIENT_SEND_TIMEOUTS,
        Type::Counter,
        None,
        "Client connections closed because a response went untaken for server.send_timeout.",
    ),
    (
        ACCEPT_ERRORS,
        Type::Counter,
        None,
        "Failed accepts (e.g. out of file descriptors); the listener backs off.",
    ),
    (
        TLS_HANDSHAKES,
        Type::Counter,
        None,
        "Completed TLS handshakes by version and ALPN.",
    ),
    (
        TLS_HANDSHAKE_ERRORS,
        Type::Counter,
        None,
        "Failed or timed-out TLS handshakes.",
    ),
    (
        PREFETCHES,
        Type::Counter,
        None,
        "Prefetch decisions by result: fetched, already_cached, in_flight, skipped, failed.",
    ),
    (
        COMPRESSED,
        Type::Counter,
        None,
        "Responses sent with an encoding the edge made, by encoding.",
    ),
    (
        CMCD_REQUESTS,
        Type::Counter,
        None,
        "Requests that carried CMCD data, by object type.",
    ),
    (
        CMCD_STARVATION,
        Type::Counter,
        None,
        "Requests whose CMCD reported buffer starvation (bs).",
    ),
    (
        PEER_REQUESTS,
        Type::Counter,
        None,
        "Requests sent to each peer node (forwarded to the key's owner).",
    ),
    (
        PEER_ERRORS,
        Type::Counter,
        None,
        "Peer requests that failed before a response head.",
    ),
    (PEER_RETRIES, Type::Counter, None, "Peer attempts retried."),
    (
        PEER_RESENDS,
        Type::Counter,
        None,
        "Peer requests sent again on a new connection after a pooled one closed.",
    ),
    (
        PEER_ALL_DOWN,
        Type::Counter,
        None,
        "Peer requests sent while every peer was down.",
    ),
    (
        PEER_FETCH_DURATION,
        Type::Histogram,
        Some(Unit::Seconds),
        "Time from a peer request to the end of its body.",
    ),
    (
        PEER_UP,
        Type::Gauge,
        None,
        "Whether each peer is taking requests (1) or ejected (0).",
    ),
    (
        PEER_HEALTH_PROBES,
        Type::Counter,
        None,
        "Active peer probes by result.",
    ),
    (
        PEER_FALLBACKS,
        Type::Counter,
        None,
        "Requests whose owner peer failed before any byte, fetched from the origin instead.",
    ),
    (
        PEER_MARKS_REJECTED,
        Type::Counter,
        None,
        "Requests carrying a forwarding mark that did not verify (treated as client requests).",
    ),
    (
        PEER_FORWARDED,
        Type::Counter,
        None,
        "Client requests routed to the key's owner peer.",
    ),
    (
        PEER_SERVED,
        Type::Counter,
        None,
        "Requests forwarded by a peer and served by this node as the owner.",
    ),
    (
        CLUSTER_MEMBERS,
        Type::Gauge,
        None,
        "Members of the fleet in this node's view, itself included.",
    ),
    (
        CLUSTER_OWNED_SHARE,
        Type::Gauge,
        None,
        "The share of keys this node owns on the fleet's ring.",
    ),
    (
        DISK_ENABLED,
        Type::Gauge,
        None,
        "1 while the disk tier reads and writes; 0 once an I/O error or a full disk stopped it (or none is configured).",
    ),
    (
        DISK_INDEX_READY,
        Type::Gauge,
        None,
        "1 once the start-up scan of the disk tier has indexed every file.",
    ),
    (
        DISK_OBJECTS,
        Type::Gauge,
        None,
        "Files in the disk tier's index.",
    ),
    (
        DISK_BYTES,
        Type::Gauge,
        Some(Unit::Bytes),
        "Bytes of the disk tier's files.",
    ),
    (
        DISK_HITS,
        Type::Counter,
        None,
        "Lookups answered from the disk tier.",
    ),
    (
        DISK_WRITES,
        Type::Counter,
        None,
        "Offers to the disk tier by result: written, refused (admission filter), dropped (queue full or tier off), failed.",
    ),
    (
        DISK_ERRORS,
        Type::Counter,
        None,
        "Disk tier I/O errors by operation.",
    ),
    (
        DISK_CORRUPT,
        Type::Counter,
        None,
        "Disk tier files dropped as damaged (truncated, checksum mismatch, unreadable meta).",
    ),
    (
        DISK_EVICTIONS,
        Type::Counter,
        None,
        "Files the disk tier removed to stay within its size.",
    ),
    (
        DISK_PROMOTIONS,
        Type::Counter,
        None,
        "Disk objects copied to the memory tier after repeated hits.",
    ),
    (
        SLICE_FETCHES,
        Type::Counter,
        None,
        "Slices of large objects fetched with a Range request.",
    ),
    (
        SLICE_VERSION_CHANGES,
        Type::Counter,
        None,
        "Times a sliced object's validators changed between slices (stale slices dropped).",
    ),
];

#[derive(Clone, Copy)]
enum Type {
    Counter,
    Gauge,
    Histogram,
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    for &(name, kind, unit, help) in HELP {
        match (kind, unit) {
            (Type::Counter, Some(u)) => describe_counter!(name, u, help),
            (Type::Counter, None) => describe_counter!(name, help),
            (Type::Gauge, Some(u)) => describe_gauge!(name, u, help),
            (Type::Gauge, None) => describe_gauge!(name, help),
            (Type::Histogram, Some(u)) => describe_histogram!(name, u, help),
            (Type::Histogram, None) => describe_histogram!(name, help),
        }
    }
}

pub fn render() -> String {
    install().render()
}

/// Periodic housekeeping: histogram upkeep and cache gauges. (The origin connection counters
/// are read at scrape time instead: [`origin_connections`].)
pub fn upkeep(cache_bytes: u64, cache_objects: u64) {
    install().run_upkeep();
    gauge!(CACHE_BYTES).set(cache_bytes as f64);
    gauge!(CACHE_OBJECTS).set(cache_objects as f64);
}

/// `streamedge_origin_connections_total` of one edge, in the exposition format, to append to
/// [`render`]. Read from the edge's own counters at scrape time rather than kept in the
/// process-wide recorder: always current, and right per edge when one process runs several
/// (the recorder's `absolute` keeps the largest value any edge set).
pub fn origin_connections(opened: u64, requests_sent: u64) -> String {
    let reused = requests_sent.saturating_sub(opened);
    format!(
        "# HELP {ORIGIN_CONNECTIONS} Origin requests by connection: new or reused.\n\
         # TYPE {ORIGIN_CONNECTIONS} counter\n\
         {ORIGIN_CONNECTIONS}{{state=\"new\"}} {opened}\n\
         {ORIGIN_CONNECTIONS}{{state=\"reused\"}} {reused}\n\n"
    )
}

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "other",
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const CACHE_RESULTS: [&str; 7] = [
    "hit",
    "miss",
    "collapsed",
    "stale",
    "pass",
    "synthetic",
    "other",
];
const KINDS: [&str; 4] = ["manifest", "segment", "other", "unknown"];

fn method_index(method: &http::Method) -> usize {
    match *method {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::POST => 2,
        http::Method::PUT => 3,
        http::Method::DELETE => 4,
        http::Method::OPTIONS => 5,
        http::Method::PATCH => 6,
        _ => 7,
    }
}

fn status_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

fn index_of(table: &[&str], value: &str) -> usize {
    table
        .iter()
        .position(|v| *v == value)
        .unwrap_or(table.len() - 1)
}

// Handles for the per-request series, made once: `counter!` with labels builds a key and
// looks it up in the registry on every call, which the hit path should not pay.
static REQUEST_COUNTERS: [[[OnceLock<metrics::Counter>; 7]; 5]; 8] =
    [const { [const { [const { OnceLock::new() }; 7] }; 5] }; 8];
static BYTE_COUNTERS: [OnceLock<metrics::Counter>; 4] = [const { OnceLock::new() }; 4];
static DURATIONS: [OnceLock<metrics::Histogram>; 7] = [const { OnceLock::new() }; 7];
static FIRST_BYTES: [OnceLock<metrics::Histogram>; 7] = [const { OnceLock::new() }; 7];

pub fn request_done(
    method: &http::Method,
    status: u16,
    cache: &'static str,
    kind: &'static str,
    bytes: u64,
    duration: Duration,
) {
    let (m, s, c) = (
        method_index(method),
        status_index(status),
        index_of(&CACHE_RESULTS, cache),
    );
    REQUEST_COUNTERS[m][s][c]
        .get_or_init(|| {
            counter!(REQUESTS, "method" => METHODS[m], "status" => STATUS_CLASSES[s], "cache" => CACHE_RESULTS[c])
        })
        .increment(1);
    let k = index_of(&KINDS, kind);
    BYTE_COUNTERS[k]
        .get_or_init(|| counter!(RESPONSE_BYTES, "kind" => KINDS[k]))
        .increment(bytes);
    DURATIONS[c]
        .get_or_init(|| histogram!(REQUEST_DURATION, "cache" => CACHE_RESULTS[c]))
        .record(duration.as_secs_f64());
}

pub fn first_byte(cache: &'static str, after: Duration) {
    let c = index_of(&CACHE_RESULTS, cache);
    FIRST_BYTES[c]
        .get_or_init(|| histogram!(TTFB, "cache" => CACHE_RESULTS[c]))
        .record(after.as_secs_f64());
}

/// Which kind of upstream an exchange was with: an origin, or a peer node of the fleet. Each
/// has its own metric names (`streamedge_origin_*`, `streamedge_peer_*`), labelled by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Origin,
    Peer,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Origin => "origin",
            Side::Peer => "peer",
        }
    }

    fn pick(self, origin: &'static str, peer: &'static str) -> &'static str {
        match self {
            Side::Origin => origin,
            Side::Peer => peer,
        }
    }
}

pub fn origin_request(side: Side, name: &str) {
    counter!(side.pick(ORIGIN_REQUESTS, PEER_REQUESTS), side.label() => name.to_owned())
        .increment(1);
}

pub fn origin_error(side: Side, name: &str, error: &'static str) {
    counter!(side.pick(ORIGIN_ERRORS, PEER_ERRORS), side.label() => name.to_owned(), "error" => error)
        .increment(1);
}

pub fn origin_retry(side: Side, name: &str) {
    counter!(side.pick(ORIGIN_RETRIES, PEER_RETRIES), side.label() => name.to_owned()).increment(1);
}

pub fn origin_resend(side: Side, name: &str) {
    counter!(side.pick(ORIGIN_RESENDS, PEER_RESENDS), side.label() => name.to_owned()).increment(1);
}

pub fn origin_all_down(side: Side, name: &str) {
    counter!(side.pick(ORIGIN_ALL_DOWN, PEER_ALL_DOWN), side.label() => name.to_owned())
        .increment(1);
}

pub fn origin_fetch_done(side: Side, name: &str, ok: bool, took: Duration) {
    histogram!(
        side.pick(ORIGIN_FETCH_DURATION, PEER_FETCH_DURATION),
        side.label() => name.to_owned(),
        "result" => if ok { "ok" } else { "error" }
    )
    .record(took.as_secs_f64());
}

pub fn origin_up(side: Side, name: &str, up: bool) {
    gauge!(side.pick(ORIGIN_UP, PEER_UP), side.label() => name.to_owned()).set(if up {
        1.0
    } else {
        0.0
    });
}

pub fn health_probe(side: Side, name: &str, ok: bool) {
    counter!(
        side.pick(HEALTH_PROBES, PEER_HEALTH_PROBES),
        side.label() => name.to_owned(),
        "result" => if ok { "ok" } else { "fail" }
    )
    .increment(1);
}

/// A peer failed before any byte, and the request went to the origin itself.
pub fn peer_fallback(peer: &str) {
    counter!(PEER_FALLBACKS, "peer" => peer.to_owned()).increment(1);
}

/// A request carried a forwarding mark that did not verify (forged, stale or wrong secret).
pub fn peer_mark_rejected() {
    counter!(PEER_MARKS_REJECTED).increment(1);
}

/// A client request routed to its owner peer.
pub fn peer_forwarded() {
    counter!(PEER_FORWARDED).increment(1);
}

/// A request a peer forwarded here, served by this node as the owner.
pub fn peer_served() {
    counter!(PEER_SERVED).increment(1);
}

pub fn cluster_members(members: usize, owned_share: f64) {
    gauge!(CLUSTER_MEMBERS).set(members as f64);
    gauge!(CLUSTER_OWNED_SHARE).set(owned_share);
}

pub fn collapsed() {
    counter!(COLLAPSED).increment(1);
}

static FILL_BUFFERED_GAUGE: OnceLock<metrics::Gauge> = OnceLock::new();

/// Bytes entering (positive) or leaving (negative) fill buffers.
pub fn fill_buffered(delta: f64) {
    FILL_BUFFERED_GAUGE
        .get_or_init(|| gauge!(FILL_BUFFERED))
        .increment(delta);
}

pub fn fill_shed() {
    counter!(FILL_SHED).increment(1);
}

pub fn fill_started() {
    gauge!(FILLS_IN_FLIGHT).increment(1.0);
}

pub fn fill_ended(failure: Option<&'static str>) {
    gauge!(FILLS_IN_FLIGHT).decrement(1.0);
    if let Some(reason) = failure {
        counter!(FILL_FAILURES, "reason" => reason).increment(1);
    }
}

pub fn cache_eviction(cause: moka::notification::RemovalCause) {
    let cause = match cause {
        moka::notification::RemovalCause::Expired => "expired",
        moka::notification::RemovalCause::Size => "size",
        _ => "other",
    };
    counter!(CACHE_EVICTIONS, "cause" => cause).increment(1);
}

pub fn disk_state(enabled: bool, index_ready: bool) {
    gauge!(DISK_ENABLED).set(f64::from(u8::from(enabled)));
    gauge!(DISK_INDEX_READY).set(f64::from(u8::from(index_ready)));
}

pub fn disk_usage(objects: u64, bytes: u64) {
    gauge!(DISK_OBJECTS).set(objects as f64);
    gauge!(DISK_BYTES).set(bytes as f64);
}

pub fn disk_hit() {
    counter!(DISK_HITS).increment(1);
}

pub fn disk_write(result: &'static str) {
    counter!(DISK_WRITES, "result" => result).increment(1);
}

pub fn disk_error(op: &'static str) {
    counter!(DISK_ERRORS, "op" => op).increment(1);
}

pub fn disk_corrupt() {
    counter!(DISK_CORRUPT).increment(1);
}

pub fn disk_evictions(n: u64) {
    counter!(DISK_EVICTIONS).increment(n);
}

pub fn disk_promotion() {
    counter!(DISK_PROMOTIONS).increment(1);
}

pub fn slice_fetch() {
    counter!(SLICE_FETCHES).increment(1);
}

pub fn slice_version_change() {
    counter!(SLICE_VERSION_CHANGES).increment(1);
}

pub fn client_connection(protocol: &'static str, open: bool) {
    if open {
        counter!(CLIENT_CONNECTIONS, "protocol" => protocol).increment(1);
        gauge!(CLIENT_CONNECTIONS_OPEN, "protocol" => protocol).increment(1.0);
    } else {
        gauge!(CLIENT_CONNECTIONS_OPEN, "protocol" => protocol).decrement(1.0);
    }
}

pub fn client_send_timeout() {
    counter!(CLIENT_SEND_TIMEOUTS).increment(1);
}

pub fn accept_error() {
    counter!(ACCEPT_ERRORS).increment(1);
}

pub fn tls_handshake(version: &'static str, alpn: &'static str) {
    counter!(TLS_HANDSHAKES, "version" => version, "alpn" => alpn).increment(1);
}

pub fn tls_handshake_error(reason: &'static str) {
    counter!(TLS_HANDSHAKE_ERRORS, "reason" => reason).increment(1);
}

pub fn prefetch(result: &'static str) {
    counter!(PREFETCHES, "result" => result).increment(1);
}

pub fn compressed(encoding: &'static str) {
    counter!(COMPRESSED, "encoding" => encoding).increment(1);
}

/// A request that carried CMCD: its object type (`ot`) and whether the player was starved.
pub fn cmcd(object_type: Option<&str>, starved: bool) {
    let ot = match object_type {
        Some("m") => "manifest",
        Some("a" | "v" | "av") => "media",
        Some("i") => "init",
        Some("c" | "tt") => "text",
        Some(_) => "other",
        None => "unknown",
    };
    counter!(CMCD_REQUESTS, "object" => ot).increment(1);
    if starved {
        counter!(CMCD_STARVATION, "object" => ot).increment(1);
    }
}
