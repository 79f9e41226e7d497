//! Validation, one function per section: raw values become the typed `Config`, and every
//! value out of range is an error that names its field and position (nothing is clamped).

use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::raw::*;
use super::units::IpNet;
use super::{
    AdminConfig, CacheConfig, CompressConfig, Config, ConfigError, DiskConfig, FetchConfig,
    HealthCheckConfig, HostHeader, KeyRule, KindTtls, Listen, LogConfig, OriginConfig,
    PrefetchConfig, QueryPolicy, RuntimeModel, ServerConfig, SigningRule, SliceConfig, TlsConfig,
    field_path_at,
};

/// Errors pointing into the text being validated.
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
        let found = if line > 0 {
            field_path_at(self.text, line)
        } else {
            String::new()
        };
        ConfigError {
            file: None,
            line,
            column,
            field: if found.is_empty() {
                field.to_owned()
            } else {
                found
            },
            message: message.into(),
        }
    }

    /// `value` unless it is below `min`.
    fn at_least<T: PartialOrd + Copy + std::fmt::Display>(
        &self,
        v: &Spanned<T>,
        min: T,
        field: &str,
    ) -> Result<T, ConfigError> {
        if v.value < min {
            return Err(self.err(v.referenced, field, format!("must be at least {min}")));
        }
        Ok(v.value)
    }

    /// Statuses that must all be server errors.
    fn server_errors(&self, list: &Spanned<Vec<u16>>, field: &str) -> Result<(), ConfigError> {
        match list.value.iter().find(|s| !(500..=599).contains(*s)) {
            Some(bad) => {
                Err(self.err(list.referenced, field, format!("{bad} is not a 5xx status")))
            }
            None => Ok(()),
        }
    }
}

/// The typed configuration of raw values, or the first error.
pub(super) fn validate(raw: RawConfig, text: &str) -> Result<Config, ConfigError> {
    let v = Validator { text };
    let (listen, listen_at) = listen(&v, raw.listen)?;
    let tls = tls(&v, raw.tls)?;
    if listen.https.is_some() && tls.is_none() {
        return Err(v.err(
            listen_at,
            "listen.https",
            "an HTTPS listener needs a tls section with cert and key",
        ));
    }
    Ok(Config {
        listen,
        tls,
        admin: raw.admin.map(|a| AdminConfig {
            listen: a.listen,
            token: a.token.filter(|t| !t.is_empty()),
        }),
        server: server(&v, raw.server)?,
        cache: cache(&v, raw.cache)?,
        origins: origins(&v, raw.origins)?,
        fetch: fetch(&v, raw.fetch)?,
        health_check: raw.health_check.map(|h| health_check(&v, h)).transpose()?,
        log: log(&v, raw.log)?,
        compression: compression(&v, raw.compression)?,
        prefetch: prefetch(&v, raw.prefetch)?,
        key_rules: key_rules(&v, raw.cache_key)?,
        signed_urls: signed_urls(&v, raw.signed_urls)?,
        cluster: raw
            .cluster
            .map(|c| super::cluster::validate(c, |at, field, m| v.err(at, field, m)))
            .transpose()?,
    })
}

fn listen(
    v: &Validator,
    raw: Option<Spanned<RawListen>>,
) -> Result<(Listen, Location), ConfigError> {
    let (listen, at) = match raw {
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
            at,
            "listen",
            "no listener: set listen.http and/or listen.https",
        ));
    }
    Ok((listen, at))
}

fn tls(v: &Validator, raw: Option<Spanned<RawTls>>) -> Result<Option<TlsConfig>, ConfigError> {
    let Some(t) = raw else {
        return Ok(None);
    };
    let at = t.referenced;
    let t = t.value;
    let tls = match (t.cert, t.key, t.self_signed) {
        (Some(cert), Some(key), None) => TlsConfig::Pem { cert, key },
        (None, None, Some(names)) if !names.is_empty() => TlsConfig::SelfSigned { names },
        (None, None, Some(_)) => {
            return Err(v.err(at, "tls.self_signed", "needs at least one name"));
        }
        (Some(_), None, _) => {
            return Err(v.err(at, "tls.key", "tls.cert is set but tls.key is missing"));
        }
        (None, Some(_), _) => {
            return Err(v.err(at, "tls.cert", "tls.key is set but tls.cert is missing"));
        }
        (Some(_), Some(_), Some(_)) => {
            return Err(v.err(
                at,
                "tls",
                "set either cert and key or self_signed, not both",
            ));
        }
        (None, None, None) => return Err(v.err(at, "tls", "set cert and key (PEM files)")),
    };
    Ok(Some(tls))
}

fn server(v: &Validator, s: RawServer) -> Result<ServerConfig, ConfigError> {
    let trusted_proxies = s
        .trusted_proxies
        .value
        .iter()
        .map(|p| IpNet::parse(p))
        .collect::<Result<_, _>>()
        .map_err(|e| v.err(s.trusted_proxies.referenced, "server.trusted_proxies", e))?;
    Ok(ServerConfig {
        tls_handshake_timeout: s.tls_handshake_timeout.0,
        header_read_timeout: s.header_read_timeout.0,
        idle_timeout: s.idle_timeout.0,
        drain_timeout: s.drain_timeout.0,
        max_connections: v.at_least(&s.max_connections, 1, "server.max_connections")?,
        h2_max_concurrent_streams: v.at_least(
            &s.h2_max_concurrent_streams,
            1,
            "server.h2_max_concurrent_streams",
        )?,
        hosts: s.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        forward_unsafe_methods: s.forward_unsafe_methods,
        trusted_proxies,
        send_timeout: s.send_timeout.0,
        runtime: match s.runtime {
            RawRuntime::WorkStealing => RuntimeModel::WorkStealing,
            RawRuntime::PerCore => RuntimeModel::PerCore,
        },
    })
}

fn cache(v: &Validator, c: RawCache) -> Result<CacheConfig, ConfigError> {
    let (size, object) = (c.max_size.value, c.max_object_size.value);
    if object.0 > size.0 {
        return Err(v.err(
            c.max_object_size.referenced,
            "cache.max_object_size",
            format!("{object} is larger than cache.max_size ({size})"),
        ));
    }
    if object.0 > u64::from(u32::MAX) {
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
    if c.max_in_flight.value.0 < object.0.min(16 << 20) {
        return Err(v.err(
            c.max_in_flight.referenced,
            "cache.max_in_flight",
            format!(
                "{} is too small: give at least cache.max_object_size or 16MiB",
                c.max_in_flight.value
            ),
        ));
    }
    Ok(CacheConfig {
        max_size: size.0,
        max_object_size: object.0,
        stale_while_revalidate: c.stale_while_revalidate.typed(),
        stale_if_error: c.stale_if_error.typed(),
        targeted_header: targeted_header(v, c.targeted_header)?,
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
        max_waiters: v.at_least(&c.max_waiters, 1, "cache.max_waiters")?,
        heuristic_fraction: c.heuristic_fraction.value,
        heuristic_max: c.heuristic_max.0,
        stale_retention: c.stale_retention.0,
        disk: c.disk.map(|d| disk(v, d)).transpose()?,
        slice: slice(v, c.slice, object.0)?,
    })
}

fn disk(v: &Validator, d: RawDisk) -> Result<DiskConfig, ConfigError> {
    let path = d.path.value;
    if path.as_os_str().is_empty() || !path.is_absolute() {
        return Err(v.err(
            d.path.referenced,
            "cache.disk.path",
            "must be an absolute path",
        ));
    }
    if d.max_size.value.0 < 1 << 20 {
        return Err(v.err(
            d.max_size.referenced,
            "cache.disk.max_size",
            format!("{} is too small: give at least 1MiB", d.max_size.value),
        ));
    }
    Ok(DiskConfig {
        path,
        max_size: d.max_size.value.0,
        min_ttl: d.min_ttl.0,
        promote_after: promote_after(v, &d.promote_after)?,
        fsync: d.fsync,
        write_queue: d.write_queue.value.0,
    })
}

fn promote_after(v: &Validator, p: &Spanned<u32>) -> Result<u32, ConfigError> {
    if p.value > 255 {
        return Err(v.err(
            p.referenced,
            "cache.disk.promote_after",
            "must be between 0 (never) and 255",
        ));
    }
    Ok(p.value)
}

fn slice(v: &Validator, s: RawSlice, max_object_size: u64) -> Result<SliceConfig, ConfigError> {
    if s.size.value.0 < 64 << 10 {
        return Err(v.err(
            s.size.referenced,
            "cache.slice.size",
            format!("{} is too small: give at least 64KiB", s.size.value),
        ));
    }
    // A slice is one stored object: never larger than the largest one.
    let size = s.size.value.0.min(max_object_size.max(64 << 10));
    let mut prefixes = Vec::new();
    for (i, p) in s.prefixes.into_iter().enumerate() {
        if !p.value.starts_with('/') {
            return Err(v.err(
                p.referenced,
                &format!("cache.slice.prefixes[{i}]"),
                "must start with /",
            ));
        }
        prefixes.push(p.value);
    }
    Ok(SliceConfig { size, prefixes })
}

fn targeted_header(
    v: &Validator,
    raw: Option<Spanned<String>>,
) -> Result<Option<http::header::HeaderName>, ConfigError> {
    match raw {
        None => Ok(None),
        Some(h) if h.value.is_empty() => Ok(None),
        Some(h) => http::header::HeaderName::from_bytes(h.value.to_ascii_lowercase().as_bytes())
            .map(Some)
            .map_err(|_| {
                v.err(
                    h.referenced,
                    "cache.targeted_header",
                    format!("{:?} is not a valid header name", h.value),
                )
            }),
    }
}

fn origins(
    v: &Validator,
    raw: Spanned<Vec<Spanned<RawOrigin>>>,
) -> Result<Vec<OriginConfig>, ConfigError> {
    if raw.value.is_empty() {
        return Err(v.err(raw.referenced, "origins", "at least one origin is required"));
    }
    let mut origins: Vec<OriginConfig> = Vec::new();
    for (i, o) in raw.value.into_iter().enumerate() {
        let at = o.value.url.referenced;
        let o = origin(v, i, o.value)?;
        if origins.iter().any(|x| x.name == o.name) {
            return Err(v.err(
                at,
                &format!("origins[{i}].name"),
                format!("duplicate origin name {:?} (set distinct names)", o.name),
            ));
        }
        origins.push(o);
    }
    Ok(origins)
}

fn origin(v: &Validator, i: usize, o: RawOrigin) -> Result<OriginConfig, ConfigError> {
    let field = format!("origins[{i}].url");
    let bad = |message: String| v.err(o.url.referenced, &field, message);
    let url = reqwest::Url::parse(&o.url.value)
        .map_err(|e| bad(format!("invalid URL {:?}: {e}", o.url.value)))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad(format!(
            "scheme must be http or https, not {:?}",
            url.scheme()
        )));
    }
    if url.host_str().is_none() {
        return Err(bad("the URL has no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("an origin URL takes no query or fragment".into()));
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
    Ok(OriginConfig {
        name,
        url,
        weight: o.weight.value,
    })
}

fn fetch(v: &Validator, f: RawFetch) -> Result<FetchConfig, ConfigError> {
    v.at_least(&f.max_attempts, 1, "fetch.max_attempts")?;
    v.server_errors(&f.retry_statuses, "fetch.retry_statuses")?;
    v.server_errors(&f.passive_statuses, "fetch.passive_statuses")?;
    let forward_headers = forward_headers(&f.forward_headers.value)
        .map_err(|e| v.err(f.forward_headers.referenced, "fetch.forward_headers", e))?;
    Ok(FetchConfig {
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
        passive_fall: v.at_least(&f.passive_fall, 1, "fetch.passive_fall")?,
        passive_cooldown: f.passive_cooldown.0,
    })
}

/// The shortest probe interval: probes faster than this would be a load of their own.
const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(10);

fn health_check(v: &Validator, h: RawHealthCheck) -> Result<HealthCheckConfig, ConfigError> {
    if !h.path.value.starts_with('/') {
        return Err(v.err(h.path.referenced, "health_check.path", "must start with /"));
    }
    if h.interval.value.0 < MIN_PROBE_INTERVAL {
        return Err(v.err(
            h.interval.referenced,
            "health_check.interval",
            "must be at least 10ms",
        ));
    }
    let statuses = &h.expect_status;
    if statuses.value.is_empty() || statuses.value.iter().any(|s| !(100..=599).contains(s)) {
        return Err(v.err(
            statuses.referenced,
            "health_check.expect_status",
            "give one or more HTTP statuses (100-599)",
        ));
    }
    Ok(HealthCheckConfig {
        interval: h.interval.value.0,
        timeout: h.timeout.0,
        rise: v.at_least(&h.rise, 1, "health_check.rise")?,
        fall: v.at_least(&h.fall, 1, "health_check.fall")?,
        expect_status: h.expect_status.value,
        path: h.path.value,
    })
}

fn log(v: &Validator, l: RawLog) -> Result<LogConfig, ConfigError> {
    if !is_level_spec(&l.level.value) {
        return Err(v.err(
            l.level.referenced,
            "log.level",
            format!(
                "{:?} is not a level (error, warn, info, debug, trace, off) or a list like \
                 \"info,streamedge=debug\"",
                l.level.value
            ),
        ));
    }
    Ok(LogConfig {
        level: l.level.value,
        access: l.access,
    })
}

/// `info`, or a list of levels per target like `warn,streamedge=debug` (what the log filter
/// reads; a bare word that is not a level would silently name a target).
fn is_level_spec(spec: &str) -> bool {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let level = |l: &str| LEVELS.iter().any(|x| x.eq_ignore_ascii_case(l.trim()));
    !spec.trim().is_empty()
        && spec.split(',').all(|part| match part.split_once('=') {
            Some((target, l)) => !target.trim().is_empty() && level(l),
            None => level(part),
        })
}

fn compression(v: &Validator, z: RawCompression) -> Result<CompressConfig, ConfigError> {
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
    Ok(CompressConfig {
        enabled: z.enabled,
        brotli_quality: z.brotli_quality.value,
        gzip_level: z.gzip_level.value,
        min_size: z.min_size.0,
    })
}

/// The most segments (or parts) prefetched from one playlist.
const MAX_PREFETCH_SEGMENTS: usize = 16;

fn prefetch(v: &Validator, p: RawPrefetch) -> Result<PrefetchConfig, ConfigError> {
    if p.segments.value > MAX_PREFETCH_SEGMENTS {
        return Err(v.err(
            p.segments.referenced,
            "prefetch.segments",
            format!("must be at most {MAX_PREFETCH_SEGMENTS} (0 turns prefetch off)"),
        ));
    }
    Ok(PrefetchConfig {
        enabled: p.enabled && p.segments.value > 0,
        segments: p.segments.value,
        concurrency: v.at_least(&p.concurrency, 1, "prefetch.concurrency")?,
        cmcd_nor: p.cmcd_nor,
    })
}

fn key_rules(v: &Validator, raw: Vec<Spanned<RawKeyRule>>) -> Result<Vec<KeyRule>, ConfigError> {
    let mut rules = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let at = r.referenced;
        let r = r.value;
        if !r.prefix.starts_with('/') {
            return Err(v.err(at, &format!("cache_key[{i}].prefix"), "must start with /"));
        }
        let query = match (r.query_allow, r.query_deny) {
            (Some(a), None) => QueryPolicy::Allow(a),
            (None, Some(d)) => QueryPolicy::Deny(d),
            (None, None) => QueryPolicy::All,
            (Some(_), Some(_)) => {
                return Err(v.err(
                    at,
                    &format!("cache_key[{i}]"),
                    "set query_allow or query_deny, not both",
                ));
            }
        };
        rules.push(KeyRule {
            prefix: r.prefix,
            query,
        });
    }
    Ok(rules)
}

fn signed_urls(
    v: &Validator,
    raw: Vec<Spanned<RawSigning>>,
) -> Result<Vec<SigningRule>, ConfigError> {
    let mut rules = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let at = r.referenced;
        let r = r.value;
        let field = |name: &str| format!("signed_urls[{i}].{name}");
        if !r.prefix.starts_with('/') {
            return Err(v.err(at, &field("prefix"), "must start with /"));
        }
        if r.keys.is_empty() || r.keys.len() > 4 {
            return Err(v.err(
                at,
                &field("keys"),
                "give one to four keys (two during a rotation)",
            ));
        }
        if let Some(short) = r.keys.iter().find(|k| k.len() < 16) {
            return Err(v.err(
                at,
                &field("keys"),
                format!(
                    "a key of {} characters is too short (at least 16)",
                    short.len()
                ),
            ));
        }
        if r.param.is_empty() || r.param.contains(['&', '=', '/']) {
            return Err(v.err(at, &field("param"), "not a valid parameter name"));
        }
        rules.push(SigningRule {
            prefix: r.prefix,
            keys: r.keys.into_iter().map(String::into_bytes).collect(),
            param: r.param,
            path_segment: r.path_segment,
        });
    }
    Ok(rules)
}

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
pub(super) const ANSWER_CHANGING_HEADERS: &[&str] = &[
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
