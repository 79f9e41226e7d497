//! The YAML configuration: parsed into raw structs (`raw`), then validated section by section
//! (`validate`) into the typed `Config` below.
//!
//! Every error names the file, line, column and the dotted field path (`position`). Sizes and
//! durations are written in human units (`units`). The YAML crate is serde-saphyr (safe Rust,
//! maintained); it stays behind `parse` so it can be swapped. The rule types a config carries
//! are defined here (`rules`), so this module imports nothing of the edge.

mod cluster;
mod position;
mod raw;
mod rules;
mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use cluster::{ClusterConfig, DnsDiscovery, KubernetesDiscovery, member_id};
use position::{field_path_at, strip_location_prefix};
pub use raw::DEFAULT_FORWARD_HEADERS;
use raw::RawConfig;
pub use rules::{CompressConfig, KeyRule, QueryPolicy, SigningRule};
pub use units::{IpNet, Size, parse_duration, parse_size};
use validate::ANSWER_CHANGING_HEADERS;

/// The whole validated configuration of one edge.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub tls: Option<TlsConfig>,
    pub admin: Option<AdminConfig>,
    pub server: ServerConfig,
    pub cache: CacheConfig,
    pub origins: Vec<OriginConfig>,
    pub fetch: FetchConfig,
    pub health_check: Option<HealthCheckConfig>,
    pub log: LogConfig,
    pub compression: CompressConfig,
    pub prefetch: PrefetchConfig,
    pub key_rules: Vec<KeyRule>,
    pub signed_urls: Vec<SigningRule>,
    /// The fleet this node is a member of (none: it serves alone).
    pub cluster: Option<ClusterConfig>,
}

#[derive(Debug, Clone)]
pub struct PrefetchConfig {
    pub enabled: bool,
    /// Newest segments (or parts) of a live playlist fetched ahead of the players.
    pub segments: usize,
    /// Prefetches in flight at once.
    pub concurrency: usize,
    /// Honour CMCD `nor` (next object request) from players.
    pub cmcd_nor: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Listen {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub enum TlsConfig {
    /// PEM certificate chain and private key, re-read on reload.
    Pem { cert: PathBuf, key: PathBuf },
    /// A certificate made at start for these names (demo and local testing only).
    SelfSigned { names: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer token required by state-changing admin calls (purge). None: those calls are refused.
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    pub h2_max_concurrent_streams: u32,
    /// Host names this edge answers for; empty means any.
    pub hosts: Vec<String>,
    /// Forward POST/PUT/PATCH/DELETE to the origin (uncached) and invalidate the target URI.
    pub forward_unsafe_methods: bool,
    /// Peers whose `X-Forwarded-For` / `Forwarded` are believed (load balancers in front).
    pub trusted_proxies: Vec<IpNet>,
    /// A response the client has taken no bytes of for this long closes the connection.
    pub send_timeout: Duration,
    /// How client connections are spread over the CPUs.
    pub runtime: RuntimeModel,
}

/// How client connections are spread over the CPUs (`server.runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeModel {
    /// One multi-threaded, work-stealing runtime: a busy connection's work may move to an idle
    /// CPU.
    WorkStealing,
    /// One single-threaded runtime per CPU, each accepting on its own `SO_REUSEPORT` copy of
    /// every client listener: the kernel spreads connections over the CPUs, and a connection
    /// stays on the CPU that accepted it (no cross-thread wake-ups or stealing).
    PerCore,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub max_size: u64,
    pub max_object_size: u64,
    pub ttl: KindTtls,
    pub hit_for_miss_ttl: Duration,
    pub max_waiters: usize,
    pub heuristic_fraction: f64,
    pub heuristic_max: Duration,
    pub stale_retention: Duration,
    /// Defaults when the origin's headers give no `stale-while-revalidate` / `stale-if-error`.
    pub stale_while_revalidate: KindDurations,
    pub stale_if_error: KindDurations,
    /// An edge-specific targeted field (RFC 9213), read before `CDN-Cache-Control`.
    pub targeted_header: Option<http::header::HeaderName>,
    /// Store responses that set cookies (default: never).
    pub store_set_cookie: bool,
    /// Bytes that fills in flight may hold (bodies buffered for readers and for storing).
    pub max_in_flight: u64,
    /// Let clients' `Cache-Control: no-cache` / `max-age=0` force revalidation.
    pub honor_client_no_cache: bool,
    /// The disk tier, when configured.
    pub disk: Option<DiskConfig>,
    /// How objects too large for one piece (or under a sliced prefix) are cached.
    pub slice: SliceConfig,
}

/// `cache.disk`: where and how much the disk tier keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: std::path::PathBuf,
    pub max_size: u64,
    /// Objects kept for less than this (fresh and stale windows) stay in memory only.
    pub min_ttl: Duration,
    /// Disk hits before a copy of the object goes to memory; 0: never.
    pub promote_after: u32,
    /// fsync each file before it is renamed into place (survives power loss, not only crashes).
    pub fsync: bool,
    /// Bytes waiting to be written; beyond this, writes are dropped (and counted).
    pub write_queue: u64,
}

/// `cache.slice`: slice size and the prefixes always sliced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceConfig {
    pub size: u64,
    pub prefixes: Vec<String>,
}

/// Freshness used when the origin gives none, by media kind.
#[derive(Debug, Clone)]
pub struct KindTtls {
    pub manifest: Duration,
    pub vod_manifest: Duration,
    pub segment: Duration,
    pub other: Duration,
    pub negative: Duration,
}

/// A duration per media kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindDurations {
    pub manifest: Duration,
    pub segment: Duration,
    pub other: Duration,
}

#[derive(Debug, Clone)]
pub struct OriginConfig {
    pub name: String,
    pub url: reqwest::Url,
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostHeader {
    /// The origin's own authority from its URL.
    Origin,
    /// The Host the client sent.
    Client,
}

#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_attempts: u32,
    pub retry_statuses: Vec<u16>,
    /// Origin statuses that count toward passive ejection (none by default: a status is the
    /// answer for one URL, which any client can pick).
    pub passive_statuses: Vec<u16>,
    pub host_header: HostHeader,
    /// Client request headers sent on to origins (an allow-list; lower case).
    pub forward_headers: Vec<http::header::HeaderName>,
    pub ca_file: Option<PathBuf>,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Without active health checks: failures in a row that eject an origin.
    pub passive_fall: u32,
    /// Without active health checks: how long an ejected origin rests before a trial request.
    pub passive_cooldown: Duration,
}

#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub expect_status: Vec<u16>,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub access: AccessLogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    Text,
    Json,
    Off,
}

/// A configuration error, pointing at the file, line and column and naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub line: u64,
    pub column: u64,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
        }
        if self.line > 0 {
            write!(f, "{}:{}: ", self.line, self.column)?;
        } else if self.file.is_some() {
            write!(f, " ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: Some(path.to_owned()),
        line: 0,
        column: 0,
        field: String::new(),
        message: format!("cannot read config: {e}"),
    })?;
    parse(&text).map_err(|mut e| {
        e.file = Some(path.to_owned());
        e
    })
}

/// Parses and validates YAML text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let mut options = serde_saphyr::RenderOptions::default();
        options.snippets = serde_saphyr::SnippetMode::Off;
        let message = e.render_with_options(options);
        ConfigError {
            file: None,
            line,
            column,
            field: field_path_at(text, line),
            message: strip_location_prefix(&message),
        }
    })?;
    validate::validate(raw, text)
}

impl Config {
    /// Settings that are valid but risky, for the log at start and reload and for `check`.
    pub fn warnings(&self) -> Vec<String> {
        self.fetch
            .forward_headers
            .iter()
            .filter(|h| ANSWER_CHANGING_HEADERS.contains(&h.as_str()))
            .map(|h| {
                format!(
                    "fetch.forward_headers: {h} is forwarded to origins but is not part of the \
                     cache key: unless every origin answer that depends on it says `Vary: {h}`, \
                     one client can poison the cache for everyone"
                )
            })
            .collect()
    }
}

impl Config {
    /// The demo: plain HTTP and self-signed HTTPS on loopback, in front of the given origin.
    pub fn demo(origin: SocketAddr) -> Config {
        let yaml = format!(
            "listen:\n  http: \"127.0.0.1:8080\"\n  https: \"127.0.0.1:8443\"\n\
             tls:\n  self_signed: [localhost, 127.0.0.1]\n\
             admin:\n  listen: \"127.0.0.1:9090\"\n\
             cache:\n  max_size: 256MiB\n  max_object_size: 32MiB\n\
             origins:\n  - url: \"http://{origin}\"\n    name: demo-origin\n"
        );
        parse(&yaml).expect("the built-in demo config is valid")
    }
}
