//! The `cluster` section: who this node is in the fleet, where the other nodes are found
//! (a static list, DNS, Kubernetes EndpointSlices), the shared secret that authenticates them,
//! and how long a forwarding node keeps its own copy. Raw form, typed form and validation.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::ConfigError;
use super::units::Dur;

/// The typed `cluster` section.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's identity on the ring: how the other nodes reach it (`http://host:port`).
    pub node: String,
    /// The name this node gives itself in `Cache-Status`.
    pub name: String,
    /// Members listed in the configuration (this node may be among them).
    pub peers: Vec<String>,
    /// Authenticates peer requests (the forwarding mark) and fleet-wide purges.
    pub secret: String,
    pub dns: Option<DnsDiscovery>,
    pub kubernetes: Option<KubernetesDiscovery>,
    /// Membership changes settle for this long before the ring is rebuilt.
    pub debounce: Duration,
    /// How long a forwarding node keeps its own copy of what a peer answered (0: none).
    pub secondary_ttl: Duration,
    /// Active probes of peers (0: passive health only).
    pub probe_interval: Duration,
}

/// Members from DNS: the A/AAAA records of `name` (with `port`), or its SRV records.
#[derive(Debug, Clone)]
pub struct DnsDiscovery {
    pub name: String,
    /// Port of A/AAAA members; SRV records carry their own.
    pub port: u16,
    /// Read SRV records instead of A/AAAA.
    pub srv: bool,
    pub scheme: String,
    /// The DNS server to ask (default: the system's, from /etc/resolv.conf).
    pub server: Option<SocketAddr>,
    pub interval: Duration,
}

/// Members from the EndpointSlices of a Kubernetes Service.
#[derive(Debug, Clone)]
pub struct KubernetesDiscovery {
    pub service: String,
    /// Default: the namespace the pod runs in.
    pub namespace: Option<String>,
    /// The EndpointSlice port by name (default: the first port).
    pub port_name: Option<String>,
    pub scheme: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    node: Spanned<String>,
    name: Option<Spanned<String>>,
    #[serde(default)]
    peers: Vec<Spanned<String>>,
    secret: Option<Spanned<String>>,
    dns: Option<Spanned<RawDns>>,
    kubernetes: Option<Spanned<RawKubernetes>>,
    #[serde(default = "default_debounce")]
    debounce: Dur,
    #[serde(default = "default_secondary_ttl")]
    secondary_ttl: Dur,
    #[serde(default = "default_probe_interval")]
    probe_interval: Dur,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    name: String,
    port: Option<Spanned<u16>>,
    #[serde(default)]
    srv: bool,
    #[serde(default = "http")]
    scheme: String,
    server: Option<SocketAddr>,
    #[serde(default = "default_dns_interval")]
    interval: Dur,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    service: String,
    namespace: Option<String>,
    port_name: Option<String>,
    #[serde(default = "http")]
    scheme: String,
}

fn default_debounce() -> Dur {
    Dur(Duration::from_secs(2))
}

fn default_secondary_ttl() -> Dur {
    Dur(Duration::from_secs(2))
}

fn default_probe_interval() -> Dur {
    Dur(Duration::from_secs(2))
}

fn default_dns_interval() -> Dur {
    Dur(Duration::from_secs(5))
}

fn http() -> String {
    "http".to_owned()
}

/// The one form of a member's identity: `scheme://host:port`, lower case, the port always
/// written (80 or 443 when the URL leaves it out), no path. Two nodes name a member alike
/// exactly when their forms are equal.
pub fn member_id(url: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(url.trim()).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!(
            "scheme must be http or https, not {:?}",
            u.scheme()
        ));
    }
    let host = u.host_str().ok_or_else(|| format!("{url:?} has no host"))?;
    if !(u.path().is_empty() || u.path() == "/") || u.query().is_some() || u.fragment().is_some() {
        return Err(format!(
            "{url:?}: a member is scheme://host:port, with no path"
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!("{url:?}: no credentials in a member URL"));
    }
    let port = u.port_or_known_default().unwrap_or(80);
    Ok(format!(
        "{}://{}:{port}",
        u.scheme(),
        host.to_ascii_lowercase()
    ))
}

/// `${NAME}` in `text` replaced by the environment variable NAME (a pod's IP or name in
/// Kubernetes). An unset variable is an error.
fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
        let name = &rest[start + 2..start + end];
        let value =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The secret must be long enough that guessing it is hopeless.
const MIN_SECRET_LEN: usize = 16;

/// Validates the `cluster` section; `err` points an error at a position.
pub(super) fn validate(
    raw: Spanned<RawCluster>,
    err: impl Fn(serde_saphyr::Location, &str, String) -> ConfigError,
) -> Result<ClusterConfig, ConfigError> {
    let section_at = raw.referenced;
    let raw = raw.value;
    let node_at = raw.node.referenced;
    let node = expand_env(&raw.node.value)
        .and_then(|n| member_id(&n))
        .map_err(|m| err(node_at, "cluster.node", m))?;
    let mut peers = Vec::new();
    for (i, p) in raw.peers.iter().enumerate() {
        let id = member_id(&p.value)
            .map_err(|m| err(p.referenced, &format!("cluster.peers[{i}]"), m))?;
        if !peers.contains(&id) {
            peers.push(id);
        }
    }
    let secret = match raw.secret {
        Some(s) if s.value.len() >= MIN_SECRET_LEN => s.value,
        Some(s) => {
            return Err(err(
                s.referenced,
                "cluster.secret",
                format!("must be at least {MIN_SECRET_LEN} characters"),
            ));
        }
        None => {
            // Missing, so it has no line of its own: the section's first line, named.
            let mut e = err(
                section_at,
                "cluster",
                "a cluster needs a shared secret (cluster.secret) to authenticate peer requests"
                    .into(),
            );
            e.field = "cluster.secret".into();
            return Err(e);
        }
    };
    let dns = raw.dns.map(|d| dns(d, &err)).transpose()?;
    let kubernetes = raw.kubernetes.map(|k| kubernetes(k, &err)).transpose()?;
    let name = match raw.name {
        Some(n) => {
            let name = expand_env(&n.value).map_err(|m| err(n.referenced, "cluster.name", m))?;
            if !is_sf_token(&name) {
                return Err(err(
                    n.referenced,
                    "cluster.name",
                    format!(
                        "{name:?} is not a token (a letter, then letters, digits or !#$%&'*+-.^_`|~:/)"
                    ),
                ));
            }
            name
        }
        None => format!("streamedge/{}", node.split("://").nth(1).unwrap_or(&node)),
    };
    Ok(ClusterConfig {
        node,
        name,
        peers,
        secret,
        dns,
        kubernetes,
        debounce: raw.debounce.0,
        secondary_ttl: raw.secondary_ttl.0,
        probe_interval: raw.probe_interval.0,
    })
}

/// An error about `field` of a section at `at` (the section's first line when the field has
/// no line of its own), naming the field.
fn named(
    err: &impl Fn(serde_saphyr::Location, &str, String) -> ConfigError,
    at: serde_saphyr::Location,
    field: &str,
    message: &str,
) -> ConfigError {
    let mut e = err(at, field, message.to_owned());
    e.field = field.to_owned();
    e
}

fn dns(
    d: Spanned<RawDns>,
    err: &impl Fn(serde_saphyr::Location, &str, String) -> ConfigError,
) -> Result<DnsDiscovery, ConfigError> {
    let at = d.referenced;
    let d = d.value;
    scheme(&d.scheme).map_err(|m| named(err, at, "cluster.dns.scheme", &m))?;
    if d.name.trim().is_empty() {
        return Err(named(err, at, "cluster.dns.name", "a DNS name is required"));
    }
    let port = match (&d.port, d.srv) {
        (Some(p), false) if p.value > 0 => p.value,
        (None, true) => 0,
        (Some(p), true) => {
            let m = "SRV records carry the port: leave port out";
            return Err(named(err, p.referenced, "cluster.dns.port", m));
        }
        (p, false) => {
            let m = "the members' port is required (1-65535)";
            let at = p.as_ref().map_or(at, |p| p.referenced);
            return Err(named(err, at, "cluster.dns.port", m));
        }
    };
    if d.interval.0 < Duration::from_millis(100) {
        return Err(named(
            err,
            at,
            "cluster.dns.interval",
            "must be at least 100ms",
        ));
    }
    Ok(DnsDiscovery {
        name: d.name.trim().trim_end_matches('.').to_owned(),
        port,
        srv: d.srv,
        scheme: d.scheme,
        server: d.server,
        interval: d.interval.0,
    })
}

fn kubernetes(
    k: Spanned<RawKubernetes>,
    err: &impl Fn(serde_saphyr::Location, &str, String) -> ConfigError,
) -> Result<KubernetesDiscovery, ConfigError> {
    let at = k.referenced;
    let k = k.value;
    scheme(&k.scheme).map_err(|m| named(err, at, "cluster.kubernetes.scheme", &m))?;
    if k.service.trim().is_empty() {
        let m = "a Service name is required";
        return Err(named(err, at, "cluster.kubernetes.service", m));
    }
    if !cfg!(feature = "kubernetes") {
        let m = "this build has no Kubernetes discovery: build with --features kubernetes";
        return Err(named(err, at, "cluster.kubernetes", m));
    }
    Ok(KubernetesDiscovery {
        service: k.service,
        namespace: k.namespace,
        port_name: k.port_name,
        scheme: k.scheme,
    })
}

fn scheme(s: &str) -> Result<(), String> {
    match s {
        "http" | "https" => Ok(()),
        other => Err(format!("must be http or https, not {other:?}")),
    }
}

/// RFC 8941 sf-token: a letter or `*`, then tchar, `:` or `/`.
fn is_sf_token(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '*')
        && chars.all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_have_one_form() {
        assert_eq!(
            member_id("http://127.0.0.2:8080").unwrap(),
            "http://127.0.0.2:8080"
        );
        assert_eq!(
            member_id("HTTP://Edge-A.example/").unwrap(),
            "http://edge-a.example:80"
        );
        assert_eq!(member_id("https://[::1]").unwrap(), "https://[::1]:443");
        assert!(member_id("http://a/x").is_err());
        assert!(member_id("ftp://a").is_err());
        assert!(member_id("http://u:p@a:1").is_err());
    }

    #[test]
    fn tokens() {
        assert!(is_sf_token("streamedge/127.0.0.2:8080"));
        assert!(is_sf_token("edge-a"));
        assert!(!is_sf_token("1edge"));
        assert!(!is_sf_token("edge a"));
    }

    #[test]
    fn env_expansion() {
        let path = std::env::var("PATH").expect("PATH is set");
        assert_eq!(expand_env("a${PATH}b").unwrap(), format!("a{path}b"));
        assert!(expand_env("http://${STREAMEDGE_TEST_UNSET_VAR}:1").is_err());
        assert!(expand_env("http://${oops").is_err());
    }
}
