//! The status page: `GET /status` (one self-contained HTML file, no external assets) and
//! `GET /status.json`, the node's live numbers it polls every second.

use std::sync::OnceLock;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::text;
use crate::proxy::Proxy;
use crate::server::ResponseBody;
use crate::stats::{HISTORY_SECS, WINDOW_SECS};
use crate::upstream::Origin;

const PAGE: &str = include_str!("status.html");

/// `/status.json`; README.md documents every field.
#[derive(Serialize)]
struct Status {
    version: &'static str,
    uptime_s: u64,
    requests_total: u64,
    hits_total: u64,
    bytes_total: u64,
    hit_ratio: f64,
    window_s: usize,
    requests_per_s: f64,
    bytes_per_s: f64,
    ttfb_ms: Ttfb,
    fills_in_flight: usize,
    origins: Vec<Upstream>,
    node: Option<String>,
    peers: Vec<Upstream>,
    cache: Cache,
    top_window_s: usize,
    top: Vec<Top>,
    top_dropped: u64,
    history: Vec<u64>,
}

#[derive(Serialize)]
struct Ttfb {
    p50: Option<f64>,
    p90: Option<f64>,
    p99: Option<f64>,
    samples: u64,
}

#[derive(Serialize)]
struct Upstream {
    name: String,
    address: String,
    healthy: bool,
}

#[derive(Serialize)]
struct Cache {
    memory: Tier,
    disk: Option<DiskTier>,
}

#[derive(Serialize)]
struct Tier {
    bytes: u64,
    max_bytes: u64,
    objects: u64,
}

#[derive(Serialize)]
struct DiskTier {
    enabled: bool,
    ready: bool,
    bytes: u64,
    max_bytes: u64,
    objects: u64,
}

#[derive(Serialize)]
struct Top {
    key: String,
    requests: u64,
}

fn upstream(o: &Origin) -> Upstream {
    // Credentials in an origin URL stay off the page.
    let mut url = o.base.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Upstream {
        name: o.name.to_string(),
        address: url.to_string(),
        healthy: o.health.is_up(),
    }
}

fn status(proxy: &Proxy) -> Status {
    let s = proxy.stats.snapshot();
    let rt = proxy.runtime();
    let [p50, p90, p99] = s.ttfb_ms;
    Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: s.uptime.as_secs(),
        requests_total: s.requests,
        hits_total: s.hits,
        bytes_total: s.bytes,
        hit_ratio: if s.requests == 0 {
            0.0
        } else {
            s.hits as f64 / s.requests as f64
        },
        window_s: WINDOW_SECS,
        requests_per_s: s.requests_per_s,
        bytes_per_s: s.bytes_per_s,
        ttfb_ms: Ttfb {
            p50,
            p90,
            p99,
            samples: s.ttfb_samples,
        },
        fills_in_flight: proxy.fills.len(),
        origins: rt.upstream.origins().iter().map(|o| upstream(o)).collect(),
        node: rt.cluster.as_ref().map(|c| c.node().to_owned()),
        peers: rt
            .cluster
            .as_ref()
            .map(|c| c.view().peers().map(|p| upstream(p)).collect())
            .unwrap_or_default(),
        cache: Cache {
            memory: Tier {
                bytes: proxy.store.weighted_size(),
                max_bytes: proxy.store.max_size(),
                objects: proxy.store.entry_count(),
            },
            disk: proxy.store.disk_usage().map(|d| DiskTier {
                enabled: d.enabled,
                ready: d.ready,
                bytes: d.bytes,
                max_bytes: d.max_bytes,
                objects: d.objects,
            }),
        },
        top_window_s: HISTORY_SECS,
        top: s
            .top
            .iter()
            .map(|(key, n)| Top {
                key: key.to_string(),
                requests: *n,
            })
            .collect(),
        top_dropped: s.top_dropped,
        history: s.history,
    }
}

/// `GET /status.json`.
pub(super) fn json(proxy: &Proxy) -> Response<ResponseBody> {
    let body = serde_json::to_vec(&status(proxy)).unwrap_or_default();
    let mut r = text(StatusCode::OK, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `GET /status`: the page, with a Content-Security-Policy that allows nothing but its own
/// inline script and style (by hash) and fetches from this listener.
pub(super) fn page() -> Response<ResponseBody> {
    let mut r = text(StatusCode::OK, PAGE);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, csp().clone());
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn csp() -> &'static HeaderValue {
    static CSP: OnceLock<HeaderValue> = OnceLock::new();
    CSP.get_or_init(|| {
        let script = hash_of(inline(PAGE, "script"));
        let style = hash_of(inline(PAGE, "style"));
        let policy = format!(
            "default-src 'none'; script-src '{script}'; style-src '{style}'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        );
        HeaderValue::from_str(&policy).expect("a policy of ASCII text")
    })
}

/// The text of the page's one `<tag>` element (what a browser hashes for the CSP).
fn inline<'a>(page: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = page.find(&open).map_or(0, |i| i + open.len());
    let end = page[start..].find(&close).map_or(start, |i| start + i);
    &page[start..end]
}

fn hash_of(text: &str) -> String {
    format!("sha256-{}", base64(&Sha256::digest(text.as_bytes())))
}

/// Standard base64 with padding (what CSP hashes are written in).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn the_page_has_one_script_and_one_style_and_nothing_external() {
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        assert!(inline(PAGE, "script").contains("status.json"));
        assert!(!inline(PAGE, "style").is_empty());
        // Inline style attributes would need 'unsafe-inline'.
        assert!(!PAGE.contains(" style="));
        for external in ["http://", "https://", "src=\"//", "href=\"//"] {
            assert!(!PAGE.contains(external), "{external}");
        }
    }
}
