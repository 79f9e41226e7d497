//! The configuration as written: serde structs with the defaults, unknown keys rejected, and
//! the YAML position of every value a check may need to point at.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::AccessLogFormat;
use super::units::{Dur, Size};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) listen: Option<Spanned<RawListen>>,
    pub(super) tls: Option<Spanned<RawTls>>,
    pub(super) admin: Option<RawAdmin>,
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) cache: RawCache,
    pub(super) origins: Spanned<Vec<Spanned<RawOrigin>>>,
    #[serde(default)]
    pub(super) fetch: RawFetch,
    pub(super) health_check: Option<RawHealthCheck>,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) compression: RawCompression,
    #[serde(default)]
    pub(super) prefetch: RawPrefetch,
    #[serde(default)]
    pub(super) cache_key: Vec<Spanned<RawKeyRule>>,
    #[serde(default)]
    pub(super) signed_urls: Vec<Spanned<RawSigning>>,
    pub(super) cluster: Option<Spanned<super::cluster::RawCluster>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCompression {
    pub(super) enabled: bool,
    pub(super) brotli_quality: Spanned<u32>,
    pub(super) gzip_level: Spanned<u32>,
    pub(super) min_size: Size,
}

impl Default for RawCompression {
    fn default() -> Self {
        RawCompression {
            enabled: true,
            brotli_quality: unknown_location(4),
            gzip_level: unknown_location(6),
            min_size: Size(512),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPrefetch {
    pub(super) enabled: bool,
    pub(super) segments: Spanned<usize>,
    pub(super) concurrency: Spanned<usize>,
    pub(super) cmcd_nor: bool,
}

impl Default for RawPrefetch {
    fn default() -> Self {
        RawPrefetch {
            enabled: true,
            segments: unknown_location(2),
            concurrency: unknown_location(4),
            cmcd_nor: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeyRule {
    pub(super) prefix: String,
    pub(super) query_allow: Option<Vec<String>>,
    pub(super) query_deny: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigning {
    pub(super) prefix: String,
    pub(super) keys: Vec<String>,
    #[serde(default = "token_param")]
    pub(super) param: String,
    #[serde(default)]
    pub(super) path_segment: bool,
}

fn token_param() -> String {
    "token".to_owned()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub(super) http: Option<SocketAddr>,
    pub(super) https: Option<SocketAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    #[serde(default)]
    pub(super) self_signed: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: SocketAddr,
    pub(super) token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub(super) tls_handshake_timeout: Dur,
    pub(super) header_read_timeout: Dur,
    pub(super) idle_timeout: Dur,
    pub(super) drain_timeout: Dur,
    pub(super) max_connections: Spanned<usize>,
    pub(super) h2_max_concurrent_streams: Spanned<u32>,
    pub(super) hosts: Vec<String>,
    pub(super) forward_unsafe_methods: bool,
    pub(super) trusted_proxies: Spanned<Vec<String>>,
    pub(super) send_timeout: Dur,
    pub(super) runtime: RawRuntime,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawRuntime {
    WorkStealing,
    PerCore,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            tls_handshake_timeout: Dur(Duration::from_secs(10)),
            header_read_timeout: Dur(Duration::from_secs(30)),
            idle_timeout: Dur(Duration::from_secs(75)),
            drain_timeout: Dur(Duration::from_secs(30)),
            max_connections: unknown_location(50_000),
            h2_max_concurrent_streams: unknown_location(256),
            hosts: Vec::new(),
            forward_unsafe_methods: false,
            trusted_proxies: unknown_location(Vec::new()),
            send_timeout: Dur(Duration::from_secs(60)),
            runtime: RawRuntime::PerCore,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCache {
    pub(super) max_size: Spanned<Size>,
    pub(super) max_object_size: Spanned<Size>,
    pub(super) ttl: RawTtls,
    pub(super) hit_for_miss_ttl: Dur,
    pub(super) max_waiters: Spanned<usize>,
    pub(super) heuristic_fraction: Spanned<f64>,
    pub(super) heuristic_max: Dur,
    pub(super) stale_retention: Dur,
    pub(super) stale_while_revalidate: RawKindDurations,
    pub(super) stale_if_error: RawKindDurations,
    pub(super) targeted_header: Option<Spanned<String>>,
    pub(super) store_set_cookie: bool,
    pub(super) honor_client_no_cache: bool,
    pub(super) max_in_flight: Spanned<Size>,
    pub(super) disk: Option<RawDisk>,
    pub(super) slice: RawSlice,
}

/// `cache.disk`: the disk tier under the memory tier.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDisk {
    pub(super) path: Spanned<PathBuf>,
    pub(super) max_size: Spanned<Size>,
    #[serde(default = "disk_min_ttl")]
    pub(super) min_ttl: Dur,
    #[serde(default = "disk_promote_after")]
    pub(super) promote_after: Spanned<u32>,
    #[serde(default)]
    pub(super) fsync: bool,
    #[serde(default = "disk_write_queue")]
    pub(super) write_queue: Spanned<Size>,
}

fn disk_min_ttl() -> Dur {
    Dur(Duration::from_secs(30))
}

fn disk_promote_after() -> Spanned<u32> {
    unknown_location(2)
}

fn disk_write_queue() -> Spanned<Size> {
    unknown_location(Size(256 << 20))
}

/// `cache.slice`: large objects cached as fixed-size slices fetched by Range.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSlice {
    pub(super) size: Spanned<Size>,
    pub(super) prefixes: Vec<Spanned<String>>,
}

impl Default for RawSlice {
    fn default() -> Self {
        RawSlice {
            size: unknown_location(Size(4 << 20)),
            prefixes: Vec::new(),
        }
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKindDurations {
    #[serde(default = "zero")]
    pub(super) manifest: Dur,
    #[serde(default = "zero")]
    pub(super) segment: Dur,
    #[serde(default = "zero")]
    pub(super) other: Dur,
}

pub(super) fn zero() -> Dur {
    Dur(Duration::ZERO)
}

impl RawKindDurations {
    pub(super) fn typed(self) -> super::KindDurations {
        super::KindDurations {
            manifest: self.manifest.0,
            segment: self.segment.0,
            other: self.other.0,
        }
    }
}

pub(super) fn unknown_location<T>(value: T) -> Spanned<T> {
    Spanned::new(value, Location::UNKNOWN, Location::UNKNOWN)
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            max_size: unknown_location(Size(1 << 30)),
            max_object_size: unknown_location(Size(64 << 20)),
            ttl: RawTtls::default(),
            hit_for_miss_ttl: Dur(Duration::from_secs(10)),
            max_waiters: unknown_location(100_000),
            heuristic_fraction: unknown_location(0.1),
            heuristic_max: Dur(Duration::from_secs(24 * 3600)),
            stale_retention: Dur(Duration::from_secs(600)),
            stale_while_revalidate: RawKindDurations {
                manifest: zero(),
                segment: zero(),
                other: zero(),
            },
            stale_if_error: RawKindDurations {
                manifest: Dur(Duration::from_secs(10)),
                segment: Dur(Duration::from_secs(3600)),
                other: zero(),
            },
            targeted_header: Some(unknown_location("streamedge-cache-control".to_owned())),
            store_set_cookie: false,
            honor_client_no_cache: false,
            max_in_flight: unknown_location(Size(256 << 20)),
            disk: None,
            slice: RawSlice::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTtls {
    pub(super) manifest: Dur,
    pub(super) vod_manifest: Dur,
    pub(super) segment: Dur,
    pub(super) other: Dur,
    pub(super) negative: Dur,
}

impl Default for RawTtls {
    fn default() -> Self {
        RawTtls {
            manifest: Dur(Duration::from_secs(2)),
            vod_manifest: Dur(Duration::from_secs(600)),
            segment: Dur(Duration::from_secs(24 * 3600)),
            other: Dur(Duration::ZERO),
            negative: Dur(Duration::from_secs(5)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOrigin {
    pub(super) url: Spanned<String>,
    pub(super) name: Option<String>,
    #[serde(default = "one")]
    pub(super) weight: Spanned<u32>,
}

fn one() -> Spanned<u32> {
    unknown_location(1)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawFetch {
    pub(super) connect_timeout: Dur,
    pub(super) first_byte_timeout: Dur,
    pub(super) idle_timeout: Dur,
    pub(super) max_attempts: Spanned<u32>,
    pub(super) retry_statuses: Spanned<Vec<u16>>,
    pub(super) passive_statuses: Spanned<Vec<u16>>,
    pub(super) host_header: RawHostHeader,
    pub(super) forward_headers: Spanned<Vec<String>>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) pool_idle_timeout: Dur,
    pub(super) pool_max_idle_per_host: usize,
    pub(super) passive_fall: Spanned<u32>,
    pub(super) passive_cooldown: Dur,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawHostHeader {
    Origin,
    Client,
}

impl Default for RawFetch {
    fn default() -> Self {
        RawFetch {
            connect_timeout: Dur(Duration::from_secs(2)),
            first_byte_timeout: Dur(Duration::from_secs(10)),
            idle_timeout: Dur(Duration::from_secs(10)),
            max_attempts: unknown_location(2),
            retry_statuses: unknown_location(vec![502, 503, 504]),
            passive_statuses: unknown_location(Vec::new()),
            host_header: RawHostHeader::Origin,
            forward_headers: unknown_location(
                DEFAULT_FORWARD_HEADERS
                    .iter()
                    .map(|h| h.to_string())
                    .collect(),
            ),
            ca_file: None,
            pool_idle_timeout: Dur(Duration::from_secs(90)),
            pool_max_idle_per_host: 256,
            passive_fall: unknown_location(3),
            passive_cooldown: Dur(Duration::from_secs(10)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHealthCheck {
    pub(super) path: Spanned<String>,
    pub(super) interval: Spanned<Dur>,
    pub(super) timeout: Dur,
    pub(super) expect_status: Spanned<Vec<u16>>,
    pub(super) rise: Spanned<u32>,
    pub(super) fall: Spanned<u32>,
}

impl Default for RawHealthCheck {
    fn default() -> Self {
        RawHealthCheck {
            path: unknown_location("/".to_owned()),
            interval: unknown_location(Dur(Duration::from_secs(5))),
            timeout: Dur(Duration::from_secs(2)),
            expect_status: unknown_location(vec![200]),
            rise: unknown_location(2),
            fall: unknown_location(3),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub(super) level: Spanned<String>,
    pub(super) access: AccessLogFormat,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: unknown_location("info".to_owned()),
            access: AccessLogFormat::Text,
        }
    }
}

/// Client request headers sent to origins unless `fetch.forward_headers` says otherwise: content
/// negotiation, CORS and tracing. Everything else a client sends stays at the edge.
pub const DEFAULT_FORWARD_HEADERS: &[&str] = &[
    "accept",
    "accept-language",
    "origin",
    "referer",
    "user-agent",
    "traceparent",
    "tracestate",
    "x-request-id",
];
