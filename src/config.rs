//! The YAML configuration: parsed into raw structs, then validated into typed `Config`.
//!
//! Every error names the file, line, column and the dotted field path. The YAML crate is
//! serde-saphyr (safe Rust, maintained); it stays behind `parse` so it can be swapped.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_saphyr::{Location, Spanned};

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
    pub compression: crate::compress::CompressConfig,
    pub prefetch: PrefetchConfig,
    pub key_rules: Vec<crate::cache::key::KeyRule>,
    pub signed_urls: Vec<crate::signing::SigningRule>,
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
}

/// An address block (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{s:?}: the prefix length must be 0-{max}")),
            },
        };
        Ok(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (width - prefix)
            }
        }
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix, 32)
                    == masked(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
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
    raw.validate(text)
}

/// serde-saphyr prefixes "line L column C: "; we print the position ourselves.
fn strip_location_prefix(message: &str) -> String {
    let mut m = message.trim();
    if let Some(idx) = m.rfind(" at line ")
        && m[idx..].contains("column")
    {
        m = &m[..idx];
    }
    if let Some(rest) = m.strip_prefix("line ")
        && let Some(idx) = rest.find(": ")
        && rest[..idx].contains("column")
    {
        return rest[idx + 2..].to_owned();
    }
    m.to_owned()
}

/// The dotted path of the YAML key on `line` (1-based), found from indentation:
/// e.g. `cache.max_size` or `origins[1].url`.
pub fn field_path_at(text: &str, line: u64) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(idx) = usize::try_from(line).ok().and_then(|l| l.checked_sub(1)) else {
        return String::new();
    };
    let Some(target) = lines.get(idx).and_then(|l| yaml_line(l)) else {
        return String::new();
    };
    // Parts are collected innermost first. `col` is the column of the element being located.
    let mut parts: Vec<String> = Vec::new();
    let mut col = match target {
        YamlLine {
            dash: Some(d), key, ..
        } => {
            if let Some(key) = key {
                parts.push(key.to_owned());
            }
            parts.push(format!("[{}]", list_index(&lines, idx, d)));
            d
        }
        YamlLine {
            key: Some(key),
            key_col,
            ..
        } => {
            parts.push(key.to_owned());
            key_col
        }
        _ => return String::new(),
    };
    for i in (0..idx).rev() {
        if col == 0 {
            break;
        }
        let Some(l) = yaml_line(lines[i]) else {
            continue;
        };
        if l.key.is_some() && l.key_col < col {
            parts.push(l.key.unwrap_or_default().to_owned());
            col = l.key_col;
        }
        if let Some(d) = l.dash
            && d < col
        {
            parts.push(format!("[{}]", list_index(&lines, i, d)));
            col = d;
        }
    }
    let mut out = String::new();
    for part in parts.iter().rev() {
        if !part.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(part);
    }
    out
}

/// One non-blank, non-comment line: where its list dash and its key (if any) stand.
struct YamlLine<'a> {
    dash: Option<usize>,
    key: Option<&'a str>,
    key_col: usize,
}

fn yaml_line(raw: &str) -> Option<YamlLine<'_>> {
    let trimmed = raw.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let indent = raw.len() - trimmed.len();
    let (dash, body, key_col) = match trimmed.strip_prefix('-') {
        Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
            let body = rest.trim_start();
            (Some(indent), body, raw.len() - body.len())
        }
        _ => (None, trimmed, indent),
    };
    Some(YamlLine {
        dash,
        key: yaml_key(body),
        key_col,
    })
}

fn yaml_key(body: &str) -> Option<&str> {
    let end = body.find(':')?;
    let key = body[..end].trim().trim_matches('"').trim_matches('\'');
    let after = &body[end + 1..];
    let valid = !key.is_empty()
        && (after.is_empty() || after.starts_with(' '))
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    valid.then_some(key)
}

/// Which item of the list the `- ` at line `at` (indent `indent`) is.
fn list_index(lines: &[&str], at: usize, indent: usize) -> usize {
    let mut n = 0;
    for raw in lines[..at].iter().rev() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let ind = raw.len() - trimmed.len();
        if ind < indent {
            break;
        }
        if ind == indent {
            if trimmed.starts_with("- ") || trimmed == "-" {
                n += 1;
            } else {
                break;
            }
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// Raw (as written) configuration.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: Option<Spanned<RawListen>>,
    tls: Option<Spanned<RawTls>>,
    admin: Option<RawAdmin>,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    cache: RawCache,
    origins: Spanned<Vec<Spanned<RawOrigin>>>,
    #[serde(default)]
    fetch: RawFetch,
    health_check: Option<RawHealthCheck>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    compression: RawCompression,
    #[serde(default)]
    prefetch: RawPrefetch,
    #[serde(default)]
    cache_key: Vec<Spanned<RawKeyRule>>,
    #[serde(default)]
    signed_urls: Vec<Spanned<RawSigning>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCompression {
    enabled: bool,
    brotli_quality: Spanned<u32>,
    gzip_level: Spanned<u32>,
    min_size: Size,
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
struct RawPrefetch {
    enabled: bool,
    segments: usize,
    concurrency: usize,
    cmcd_nor: bool,
}

impl Default for RawPrefetch {
    fn default() -> Self {
        RawPrefetch {
            enabled: true,
            segments: 2,
            concurrency: 4,
            cmcd_nor: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyRule {
    prefix: String,
    query_allow: Option<Vec<String>>,
    query_deny: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    prefix: String,
    keys: Vec<String>,
    #[serde(default = "token_param")]
    param: String,
    #[serde(default)]
    path_segment: bool,
}

fn token_param() -> String {
    "token".to_owned()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawListen {
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    self_signed: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: SocketAddr,
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    tls_handshake_timeout: Dur,
    header_read_timeout: Dur,
    idle_timeout: Dur,
    drain_timeout: Dur,
    max_connections: usize,
    h2_max_concurrent_streams: u32,
    hosts: Vec<String>,
    forward_unsafe_methods: bool,
    trusted_proxies: Spanned<Vec<String>>,
    send_timeout: Dur,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            tls_handshake_timeout: Dur(Duration::from_secs(10)),
            header_read_timeout: Dur(Duration::from_secs(30)),
            idle_timeout: Dur(Duration::from_secs(75)),
            drain_timeout: Dur(Duration::from_secs(30)),
            max_connections: 50_000,
            h2_max_concurrent_streams: 256,
            hosts: Vec::new(),
            forward_unsafe_methods: false,
            trusted_proxies: unknown_location(Vec::new()),
            send_timeout: Dur(Duration::from_secs(60)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCache {
    max_size: Spanned<Size>,
    max_object_size: Spanned<Size>,
    ttl: RawTtls,
    hit_for_miss_ttl: Dur,
    max_waiters: usize,
    heuristic_fraction: Spanned<f64>,
    heuristic_max: Dur,
    stale_retention: Dur,
    stale_while_revalidate: RawKindDurations,
    stale_if_error: RawKindDurations,
    targeted_header: Option<Spanned<String>>,
    store_set_cookie: bool,
    honor_client_no_cache: bool,
    max_in_flight: Spanned<Size>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawKindDurations {
    #[serde(default = "zero")]
    manifest: Dur,
    #[serde(default = "zero")]
    segment: Dur,
    #[serde(default = "zero")]
    other: Dur,
}

fn zero() -> Dur {
    Dur(Duration::ZERO)
}

impl RawKindDurations {
    fn typed(self) -> KindDurations {
        KindDurations {
            manifest: self.manifest.0,
            segment: self.segment.0,
            other: self.other.0,
        }
    }
}

fn unknown_location<T>(value: T) -> Spanned<T> {
    Spanned::new(value, Location::UNKNOWN, Location::UNKNOWN)
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            max_size: unknown_location(Size(1 << 30)),
            max_object_size: unknown_location(Size(64 << 20)),
            ttl: RawTtls::default(),
            hit_for_miss_ttl: Dur(Duration::from_secs(10)),
            max_waiters: 100_000,
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
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTtls {
    manifest: Dur,
    vod_manifest: Dur,
    segment: Dur,
    other: Dur,
    negative: Dur,
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
struct RawOrigin {
    url: Spanned<String>,
    name: Option<String>,
    #[serde(default = "one")]
    weight: Spanned<u32>,
}

fn one() -> Spanned<u32> {
    unknown_location(1)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawFetch {
    connect_timeout: Dur,
    first_byte_timeout: Dur,
    idle_timeout: Dur,
    max_attempts: Spanned<u32>,
    retry_statuses: Spanned<Vec<u16>>,
    passive_statuses: Spanned<Vec<u16>>,
    host_header: RawHostHeader,
    forward_headers: Spanned<Vec<String>>,
    ca_file: Option<PathBuf>,
    pool_idle_timeout: Dur,
    pool_max_idle_per_host: usize,
    passive_fall: u32,
    passive_cooldown: Dur,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawHostHeader {
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
            passive_fall: 3,
            passive_cooldown: Dur(Duration::from_secs(10)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHealthCheck {
    path: Spanned<String>,
    interval: Dur,
    timeout: Dur,
    expect_status: Vec<u16>,
    rise: Spanned<u32>,
    fall: Spanned<u32>,
}

impl Default for RawHealthCheck {
    fn default() -> Self {
        RawHealthCheck {
            path: unknown_location("/".to_owned()),
            interval: Dur(Duration::from_secs(5)),
            timeout: Dur(Duration::from_secs(2)),
            expect_status: vec![200],
            rise: unknown_location(2),
            fall: unknown_location(3),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: String,
    access: AccessLogFormat,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".to_owned(),
            access: AccessLogFormat::Text,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.

struct Validator<'a> {
    text: &'a str,
}

impl Validator<'_> {
    fn err(&self, at: Location, field: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = if at == Location::UNKNOWN {
            (0, 0)
        } else {
            (at.line(), at.column())
        };
        let field = if line > 0 {
            let found = field_path_at(self.text, line);
            if found.is_empty() {
                field.to_owned()
            } else {
                found
            }
        } else {
            field.to_owned()
        };
        ConfigError {
            file: None,
            line,
            column,
            field,
            message: message.into(),
        }
    }
}

impl RawConfig {
    fn validate(self, text: &str) -> Result<Config, ConfigError> {
        let v = Validator { text };

        let (listen, listen_at) = match self.listen {
            Some(l) => (
                Listen {
                    http: l.value.http,
                    https: l.value.https,
                },
                l.referenced,
            ),
            None => (Listen::default(), Location::UNKNOWN),
        };
        if listen.http.is_none() && listen.https.is_none() {
            return Err(v.err(
                listen_at,
                "listen",
                "no listener: set listen.http and/or listen.https",
            ));
        }

        let tls = match self.tls {
            None => None,
            Some(t) => {
                let at = t.referenced;
                let t = t.value;
                match (t.cert, t.key, t.self_signed) {
                    (Some(cert), Some(key), None) => Some(TlsConfig::Pem { cert, key }),
                    (None, None, Some(names)) if !names.is_empty() => {
                        Some(TlsConfig::SelfSigned { names })
                    }
                    (None, None, Some(_)) => {
                        return Err(v.err(at, "tls.self_signed", "needs at least one name"));
                    }
                    (Some(_), None, _) => {
                        return Err(v.err(at, "tls.key", "tls.cert is set but tls.key is missing"));
                    }
                    (None, Some(_), _) => {
                        return Err(v.err(
                            at,
                            "tls.cert",
                            "tls.key is set but tls.cert is missing",
                        ));
                    }
                    (Some(_), Some(_), Some(_)) => {
                        return Err(v.err(
                            at,
                            "tls",
                            "set either cert and key or self_signed, not both",
                        ));
                    }
                    (None, None, None) => {
                        return Err(v.err(at, "tls", "set cert and key (PEM files)"));
                    }
                }
            }
        };
        if listen.https.is_some() && tls.is_none() {
            return Err(v.err(
                listen_at,
                "listen.https",
                "an HTTPS listener needs a tls section with cert and key",
            ));
        }

        let admin = self.admin.map(|a| AdminConfig {
            listen: a.listen,
            token: a.token.filter(|t| !t.is_empty()),
        });

        let s = self.server;
        if s.max_connections == 0 {
            return Err(v.err(
                Location::UNKNOWN,
                "server.max_connections",
                "must be at least 1",
            ));
        }
        let server = ServerConfig {
            tls_handshake_timeout: s.tls_handshake_timeout.0,
            header_read_timeout: s.header_read_timeout.0,
            idle_timeout: s.idle_timeout.0,
            drain_timeout: s.drain_timeout.0,
            max_connections: s.max_connections,
            h2_max_concurrent_streams: s.h2_max_concurrent_streams.max(1),
            hosts: s
                .hosts
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            forward_unsafe_methods: s.forward_unsafe_methods,
            trusted_proxies: s
                .trusted_proxies
                .value
                .iter()
                .map(|p| IpNet::parse(p))
                .collect::<Result<_, _>>()
                .map_err(|e| v.err(s.trusted_proxies.referenced, "server.trusted_proxies", e))?,
            send_timeout: s.send_timeout.0,
        };

        let c = self.cache;
        if c.max_object_size.value.0 > c.max_size.value.0 {
            return Err(v.err(
                c.max_object_size.referenced,
                "cache.max_object_size",
                format!(
                    "{} is larger than cache.max_size ({})",
                    c.max_object_size.value, c.max_size.value
                ),
            ));
        }
        if c.max_object_size.value.0 > u64::from(u32::MAX) {
            return Err(v.err(
                c.max_object_size.referenced,
                "cache.max_object_size",
                "must be below 4GiB",
            ));
        }
        if !(0.0..=1.0).contains(&c.heuristic_fraction.value) {
            return Err(v.err(
                c.heuristic_fraction.referenced,
                "cache.heuristic_fraction",
                "must be between 0 and 1",
            ));
        }
        let targeted_header = match c.targeted_header {
            None => None,
            Some(h) if h.value.is_empty() => None,
            Some(h) => Some(
                http::header::HeaderName::from_bytes(h.value.to_ascii_lowercase().as_bytes())
                    .map_err(|_| {
                        v.err(
                            h.referenced,
                            "cache.targeted_header",
                            format!("{:?} is not a valid header name", h.value),
                        )
                    })?,
            ),
        };
        if c.max_in_flight.value.0 < c.max_object_size.value.0.min(16 << 20) {
            return Err(v.err(
                c.max_in_flight.referenced,
                "cache.max_in_flight",
                format!(
                    "{} is too small: give at least cache.max_object_size or 16MiB",
                    c.max_in_flight.value
                ),
            ));
        }
        let cache = CacheConfig {
            max_size: c.max_size.value.0,
            max_object_size: c.max_object_size.value.0,
            stale_while_revalidate: c.stale_while_revalidate.typed(),
            stale_if_error: c.stale_if_error.typed(),
            targeted_header,
            store_set_cookie: c.store_set_cookie,
            honor_client_no_cache: c.honor_client_no_cache,
            max_in_flight: c.max_in_flight.value.0,
            ttl: KindTtls {
                manifest: c.ttl.manifest.0,
                vod_manifest: c.ttl.vod_manifest.0,
                segment: c.ttl.segment.0,
                other: c.ttl.other.0,
                negative: c.ttl.negative.0,
            },
            hit_for_miss_ttl: c.hit_for_miss_ttl.0,
            max_waiters: c.max_waiters.max(1),
            heuristic_fraction: c.heuristic_fraction.value,
            heuristic_max: c.heuristic_max.0,
            stale_retention: c.stale_retention.0,
        };

        if self.origins.value.is_empty() {
            return Err(v.err(
                self.origins.referenced,
                "origins",
                "at least one origin is required",
            ));
        }
        let mut origins = Vec::new();
        for (i, o) in self.origins.value.into_iter().enumerate() {
            let o = o.value;
            let url = reqwest::Url::parse(&o.url.value).map_err(|e| {
                v.err(
                    o.url.referenced,
                    &format!("origins[{i}].url"),
                    format!("invalid URL {:?}: {e}", o.url.value),
                )
            })?;
            if url.scheme() != "http" && url.scheme() != "https" {
                return Err(v.err(
                    o.url.referenced,
                    &format!("origins[{i}].url"),
                    format!("scheme must be http or https, not {:?}", url.scheme()),
                ));
            }
            if url.host_str().is_none() {
                return Err(v.err(
                    o.url.referenced,
                    &format!("origins[{i}].url"),
                    "the URL has no host",
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(v.err(
                    o.url.referenced,
                    &format!("origins[{i}].url"),
                    "an origin URL takes no query or fragment",
                ));
            }
            if o.weight.value == 0 || o.weight.value > 100 {
                return Err(v.err(
                    o.weight.referenced,
                    &format!("origins[{i}].weight"),
                    "must be between 1 and 100",
                ));
            }
            let name = o.name.unwrap_or_else(|| {
                let host = url.host_str().unwrap_or("origin");
                match url.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host.to_owned(),
                }
            });
            if origins.iter().any(|x: &OriginConfig| x.name == name) {
                return Err(v.err(
                    o.url.referenced,
                    &format!("origins[{i}].name"),
                    format!("duplicate origin name {name:?} (set distinct names)"),
                ));
            }
            origins.push(OriginConfig {
                name,
                url,
                weight: o.weight.value,
            });
        }

        let f = self.fetch;
        if f.max_attempts.value == 0 {
            return Err(v.err(
                f.max_attempts.referenced,
                "fetch.max_attempts",
                "must be at least 1",
            ));
        }
        for (list, field) in [
            (&f.retry_statuses, "fetch.retry_statuses"),
            (&f.passive_statuses, "fetch.passive_statuses"),
        ] {
            if let Some(bad) = list.value.iter().find(|s| !(500..=599).contains(*s)) {
                return Err(v.err(list.referenced, field, format!("{bad} is not a 5xx status")));
            }
        }
        let forward_headers = forward_headers(&f.forward_headers.value)
            .map_err(|e| v.err(f.forward_headers.referenced, "fetch.forward_headers", e))?;
        let fetch = FetchConfig {
            connect_timeout: f.connect_timeout.0,
            first_byte_timeout: f.first_byte_timeout.0,
            idle_timeout: f.idle_timeout.0,
            max_attempts: f.max_attempts.value,
            retry_statuses: f.retry_statuses.value,
            passive_statuses: f.passive_statuses.value,
            forward_headers,
            host_header: match f.host_header {
                RawHostHeader::Origin => HostHeader::Origin,
                RawHostHeader::Client => HostHeader::Client,
            },
            ca_file: f.ca_file,
            pool_idle_timeout: f.pool_idle_timeout.0,
            pool_max_idle_per_host: f.pool_max_idle_per_host,
            passive_fall: f.passive_fall.max(1),
            passive_cooldown: f.passive_cooldown.0,
        };

        let health_check = match self.health_check {
            None => None,
            Some(h) => {
                if !h.path.value.starts_with('/') {
                    return Err(v.err(h.path.referenced, "health_check.path", "must start with /"));
                }
                if h.rise.value == 0 {
                    return Err(v.err(
                        h.rise.referenced,
                        "health_check.rise",
                        "must be at least 1",
                    ));
                }
                if h.fall.value == 0 {
                    return Err(v.err(
                        h.fall.referenced,
                        "health_check.fall",
                        "must be at least 1",
                    ));
                }
                Some(HealthCheckConfig {
                    path: h.path.value,
                    interval: h.interval.0.max(Duration::from_millis(10)),
                    timeout: h.timeout.0,
                    expect_status: if h.expect_status.is_empty() {
                        vec![200]
                    } else {
                        h.expect_status
                    },
                    rise: h.rise.value,
                    fall: h.fall.value,
                })
            }
        };

        let log = LogConfig {
            level: self.log.level,
            access: self.log.access,
        };

        let z = self.compression;
        if z.brotli_quality.value > 11 {
            return Err(v.err(
                z.brotli_quality.referenced,
                "compression.brotli_quality",
                "must be between 0 and 11",
            ));
        }
        if !(1..=9).contains(&z.gzip_level.value) {
            return Err(v.err(
                z.gzip_level.referenced,
                "compression.gzip_level",
                "must be between 1 and 9",
            ));
        }
        let compression = crate::compress::CompressConfig {
            enabled: z.enabled,
            brotli_quality: z.brotli_quality.value,
            gzip_level: z.gzip_level.value,
            min_size: z.min_size.0,
        };

        let p = self.prefetch;
        let prefetch = PrefetchConfig {
            enabled: p.enabled && p.segments > 0,
            segments: p.segments.min(16),
            concurrency: p.concurrency.max(1),
            cmcd_nor: p.cmcd_nor,
        };

        let mut key_rules = Vec::new();
        for (i, r) in self.cache_key.into_iter().enumerate() {
            let at = r.referenced;
            let r = r.value;
            if !r.prefix.starts_with('/') {
                return Err(v.err(at, &format!("cache_key[{i}].prefix"), "must start with /"));
            }
            let query = match (r.query_allow, r.query_deny) {
                (Some(a), None) => crate::cache::key::QueryPolicy::Allow(a),
                (None, Some(d)) => crate::cache::key::QueryPolicy::Deny(d),
                (None, None) => crate::cache::key::QueryPolicy::All,
                (Some(_), Some(_)) => {
                    return Err(v.err(
                        at,
                        &format!("cache_key[{i}]"),
                        "set query_allow or query_deny, not both",
                    ));
                }
            };
            key_rules.push(crate::cache::key::KeyRule {
                prefix: r.prefix,
                query,
            });
        }

        let mut signed_urls = Vec::new();
        for (i, r) in self.signed_urls.into_iter().enumerate() {
            let at = r.referenced;
            let r = r.value;
            if !r.prefix.starts_with('/') {
                return Err(v.err(at, &format!("signed_urls[{i}].prefix"), "must start with /"));
            }
            if r.keys.is_empty() || r.keys.len() > 4 {
                return Err(v.err(
                    at,
                    &format!("signed_urls[{i}].keys"),
                    "give one to four keys (two during a rotation)",
                ));
            }
            if let Some(short) = r.keys.iter().find(|k| k.len() < 16) {
                return Err(v.err(
                    at,
                    &format!("signed_urls[{i}].keys"),
                    format!(
                        "a key of {} characters is too short (at least 16)",
                        short.len()
                    ),
                ));
            }
            if r.param.is_empty() || r.param.contains(['&', '=', '/']) {
                return Err(v.err(
                    at,
                    &format!("signed_urls[{i}].param"),
                    "not a valid parameter name",
                ));
            }
            signed_urls.push(crate::signing::SigningRule {
                prefix: r.prefix,
                keys: r.keys.into_iter().map(String::into_bytes).collect(),
                param: r.param,
                path_segment: r.path_segment,
            });
        }

        Ok(Config {
            listen,
            tls,
            admin,
            server,
            cache,
            origins,
            fetch,
            health_check,
            log,
            compression,
            prefetch,
            key_rules,
            signed_urls,
        })
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

/// Headers the edge writes itself or strips on purpose; they cannot be forwarded by name.
const MANAGED_HEADERS: &[&str] = &[
    "host",
    "accept-encoding",
    "via",
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "cache-control",
    "pragma",
    "content-length",
    "transfer-encoding",
    "expect",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "authorization",
    "cookie",
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
];

/// Headers known to change what origins answer (URL rewriting, scheme and host detection,
/// method overrides). Forwarding one is allowed, with a warning: the origin must `Vary` on it.
const ANSWER_CHANGING_HEADERS: &[&str] = &[
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-original-url",
    "x-original-uri",
    "x-original-host",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-host",
    "x-url-scheme",
    "front-end-https",
];

fn forward_headers(names: &[String]) -> Result<Vec<http::header::HeaderName>, String> {
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let name = http::header::HeaderName::from_bytes(n.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("{n:?} is not a valid header name"))?;
        if MANAGED_HEADERS.contains(&name.as_str()) {
            return Err(format!(
                "{n:?} is managed by the edge (see conf/edge.yaml: credentials go only with \
                 fetches that are not shared; client addresses follow server.trusted_proxies)"
            ));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
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

// ---------------------------------------------------------------------------------------------
// Human units.

/// A byte size written as `512KiB`, `64MiB`, `1GiB`, `1.5GB` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, mult) in UNITS {
            if self.0 >= mult && self.0.is_multiple_of(mult) {
                return write!(f, "{}{name}", self.0 / mult);
            }
        }
        write!(f, "{}B", self.0)
    }
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let unit = unit.trim();
    if num.is_empty() {
        return Err(format!(
            "invalid size {s:?}: expected a number and a unit, e.g. 64MiB or 1GiB"
        ));
    }
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB)"
            ));
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected a number and a unit, e.g. 64MiB"))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("invalid size {s:?}: out of range"));
    }
    Ok(bytes as u64)
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 64MiB or 1GiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written as `250ms`, `10s`, `5m`, `2h`, `1d` or `0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("invalid duration {s:?}: missing unit (ms, s, m, h, d)"))?;
    let (num, unit) = s.split_at(split);
    let secs_per: f64 = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => {
            return Err(format!(
                "invalid duration {s:?}: unknown unit {other:?} (use ms, s, m, h, d)"
            ));
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 10s or 500ms"))?;
    Duration::try_from_secs_f64(value * secs_per)
        .map_err(|_| format!("invalid duration {s:?}: out of range"))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 10s or 500ms")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                if v == 0 {
                    Ok(Dur(Duration::ZERO))
                } else {
                    Err(E::custom(format!(
                        "invalid duration {v}: missing unit (e.g. {v}s or {v}ms)"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::custom("a duration cannot be negative")),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "listen:\n  http: \"127.0.0.1:8080\"\norigins:\n  - url: \"http://127.0.0.1:9000\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.listen.http, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.cache.max_size, 1 << 30);
        assert_eq!(c.cache.max_object_size, 64 << 20);
        assert_eq!(c.origins.len(), 1);
        assert_eq!(c.origins[0].name, "127.0.0.1:9000");
        assert_eq!(c.origins[0].weight, 1);
        assert!(c.admin.is_none());
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10 fortnights").is_err());
        assert_eq!(Size(1 << 30).to_string(), "1GiB");
        assert_eq!(Size(1000).to_string(), "1000B");
    }

    #[test]
    fn unknown_key_names_field_line_and_column() {
        let y = "listen:\n  http: \"127.0.0.1:8080\"\ncache:\n  max_size: 1GiB\n  max_sise: 2GiB\norigins:\n  - url: \"http://127.0.0.1:9000\"\n";
        let e = parse(y).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert_eq!(e.field, "cache.max_sise", "{e}");
        assert!(e.message.contains("max_sise"), "{e}");
        assert!(e.to_string().starts_with("5:3: cache.max_sise:"), "{e}");
    }

    #[test]
    fn bad_size_names_field() {
        let y = "listen:\n  http: \"127.0.0.1:8080\"\ncache:\n  max_size: lots\norigins:\n  - url: \"http://127.0.0.1:9000\"\n";
        let e = parse(y).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "cache.max_size"), "{e}");
        assert!(e.message.contains("lots"), "{e}");
    }

    #[test]
    fn bad_origin_url_names_list_item() {
        let y = "listen:\n  http: \"127.0.0.1:8080\"\norigins:\n  - url: \"http://127.0.0.1:9000\"\n  - url: \"ftp://x\"\n    weight: 2\n";
        let e = parse(y).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert_eq!(e.field, "origins[1].url", "{e}");
        assert!(e.message.contains("http or https"), "{e}");
        let y = "listen:\n  http: \"127.0.0.1:8080\"\norigins:\n  - url: \"http://127.0.0.1:9000\"\n    weight: 0\n";
        let e = parse(y).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (5, "origins[0].weight"), "{e}");
    }

    #[test]
    fn https_needs_tls() {
        let y =
            "listen:\n  https: \"127.0.0.1:8443\"\norigins:\n  - url: \"http://127.0.0.1:9000\"\n";
        let e = parse(y).unwrap_err();
        assert_eq!(e.field, "listen.https");
        assert!(e.line > 0);
    }

    #[test]
    fn bad_socket_address_and_type_errors_are_located() {
        let y = "listen:\n  http: \"localhost:80\"\norigins:\n  - url: \"http://127.0.0.1:9000\"\n";
        let e = parse(y).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "listen.http"), "{e}");
        let y = "listen:\n  http: \"127.0.0.1:8080\"\nfetch:\n  max_attempts: many\norigins:\n  - url: \"http://127.0.0.1:9000\"\n";
        let e = parse(y).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "fetch.max_attempts"), "{e}");
    }

    #[test]
    fn object_size_must_fit_cache() {
        let y = "listen:\n  http: \"127.0.0.1:8080\"\ncache:\n  max_size: 1MiB\n  max_object_size: 2MiB\norigins:\n  - url: \"http://127.0.0.1:9000\"\n";
        let e = parse(y).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_str()),
            (5, "cache.max_object_size"),
            "{e}"
        );
    }

    #[test]
    fn field_path_from_indentation() {
        let y = "a:\n  b:\n    c: 1\n  d:\n    - x: 1\n      y: 2\n    - x: 3\n";
        assert_eq!(field_path_at(y, 3), "a.b.c");
        assert_eq!(field_path_at(y, 5), "a.d[0].x");
        assert_eq!(field_path_at(y, 6), "a.d[0].y");
        assert_eq!(field_path_at(y, 7), "a.d[1].x");
        assert_eq!(field_path_at(y, 99), "");
    }

    /// The documented example must stay valid and mention every section.
    #[test]
    fn documented_example_parses() {
        let text = include_str!("../conf/edge.yaml");
        let c = parse(text).unwrap_or_else(|e| panic!("conf/edge.yaml: {e}"));
        assert_eq!(c.origins.len(), 2);
        assert_eq!(c.origins[1].weight, 2);
        assert!(matches!(c.tls, Some(TlsConfig::Pem { .. })));
        assert_eq!(
            c.admin.as_ref().and_then(|a| a.token.as_deref()),
            Some("change-me")
        );
        assert!(c.health_check.is_some());
        assert_eq!(c.cache.ttl.segment, Duration::from_secs(86400));
        for key in [
            "listen:",
            "tls:",
            "admin:",
            "server:",
            "cache:",
            "origins:",
            "fetch:",
            "health_check:",
            "log:",
            "self_signed",
            "ca_file",
            "passive_cooldown",
        ] {
            assert!(text.contains(key), "conf/edge.yaml does not document {key}");
        }
    }

    /// Every key the parser accepts is documented in conf/edge.yaml: the parser's own list of
    /// expected fields (from an unknown-field error) is checked against the file, per section.
    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../conf/edge.yaml");
        let base = "listen:\n  http: \"127.0.0.1:1\"\norigins:\n  - url: \"http://127.0.0.1:2\"\n";
        let probes = [
            format!("{base}zz_bogus: 1\n"),
            "listen:\n  http: \"127.0.0.1:1\"\n  zz_bogus: 1\norigins:\n  - url: \"http://127.0.0.1:2\"\n".to_owned(),
            format!("{base}tls:\n  zz_bogus: 1\n"),
            format!("{base}admin:\n  listen: \"127.0.0.1:3\"\n  zz_bogus: 1\n"),
            format!("{base}server:\n  zz_bogus: 1\n"),
            format!("{base}cache:\n  zz_bogus: 1\n"),
            format!("{base}cache:\n  ttl:\n    zz_bogus: 1\n"),
            "listen:\n  http: \"127.0.0.1:1\"\norigins:\n  - url: \"http://127.0.0.1:2\"\n    zz_bogus: 1\n".to_owned(),
            format!("{base}fetch:\n  zz_bogus: 1\n"),
            format!("{base}health_check:\n  zz_bogus: 1\n"),
            format!("{base}log:\n  zz_bogus: 1\n"),
            format!("{base}compression:\n  zz_bogus: 1\n"),
            format!("{base}prefetch:\n  zz_bogus: 1\n"),
            format!("{base}cache_key:\n  - prefix: /\n    zz_bogus: 1\n"),
            format!("{base}signed_urls:\n  - prefix: /\n    zz_bogus: 1\n"),
            format!("{base}cache:\n  stale_if_error:\n    zz_bogus: 1\n"),
        ];
        for yaml in probes {
            let e = parse(&yaml).unwrap_err();
            let list = e
                .message
                .split("expected one of")
                .nth(1)
                .unwrap_or_else(|| panic!("no field list in {e}"));
            let list = list.split(" at line").next().unwrap_or(list);
            for field in list.split(',') {
                let field = field.trim().trim_matches('`');
                assert!(
                    doc.contains(&format!("{field}:")) || doc.contains(&format!("`{field}:")),
                    "conf/edge.yaml does not document `{field}` ({})",
                    e.field
                );
            }
        }
    }

    #[test]
    fn docker_config_parses() {
        let c = parse(include_str!("../conf/docker.yaml")).unwrap();
        assert_eq!(c.listen.http, Some("0.0.0.0:8080".parse().unwrap()));
    }

    #[test]
    fn demo_config_is_valid() {
        let c = Config::demo("127.0.0.1:9000".parse().unwrap());
        assert!(matches!(c.tls, Some(TlsConfig::SelfSigned { .. })));
        assert!(c.admin.is_some());
    }
}
