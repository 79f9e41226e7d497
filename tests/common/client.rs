//! Clients and what tests assert with: complete and streamed responses, the edge's
//! `Cache-Status` parsed, Prometheus sums, medians, and waiting for a peer to close.

use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderMap;
use http::{StatusCode, Version};

use super::within;

/// Plain reqwest settings of every test client: no proxy, no redirects, a bounded wait.
pub(super) fn base_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
}

/// A complete response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: Version,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn cache_status(&self) -> CacheStatus {
        CacheStatus::of(&self.headers)
    }
}

/// Sends a request and reads the whole body (bounded); panics on transport errors.
pub async fn send(req: reqwest::RequestBuilder) -> Resp {
    within(30, "request", async {
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let version = resp.version();
        let body = resp.bytes().await.expect("complete body");
        Resp {
            status,
            headers,
            body,
            version,
        }
    })
    .await
}

pub async fn get(client: &reqwest::Client, url: &str) -> Resp {
    send(client.get(url)).await
}

pub async fn head(client: &reqwest::Client, url: &str) -> Resp {
    send(client.head(url)).await
}

/// How a client's body read went, chunk by chunk.
#[derive(Debug)]
pub struct Streamed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub version: Version,
    /// From sending the request to the first body chunk.
    pub first_chunk: Option<Duration>,
    pub total: Duration,
    pub len: usize,
    /// Every byte equal to the expected body at its offset (and not longer): compared as the
    /// chunks arrive (memcmp), which proves bodies identical without holding them.
    pub matches: bool,
    /// The body read failed (origin cut, edge abort).
    pub error: Option<String>,
}

impl Streamed {
    pub fn cache_status(&self) -> CacheStatus {
        CacheStatus::of(&self.headers)
    }

    /// A complete body identical to `expected`.
    pub fn complete(&self, expected: &[u8]) -> bool {
        self.error.is_none() && self.matches && self.len == expected.len()
    }
}

/// Sends a request and streams the body, comparing it to `expected` as it arrives.
pub async fn stream(req: reqwest::RequestBuilder, expected: Bytes) -> Streamed {
    let started = tokio::time::Instant::now();
    let mut resp = req.send().await.expect("request sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let version = resp.version();
    let mut first_chunk = None;
    let mut len = 0usize;
    let mut matches = true;
    let mut error = None;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if first_chunk.is_none() {
                    first_chunk = Some(started.elapsed());
                }
                let end = len + c.len();
                if end > expected.len() || expected[len..end] != c[..] {
                    matches = false;
                }
                len = end;
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(error_chain(&e));
                break;
            }
        }
    }
    Streamed {
        status,
        headers,
        version,
        first_chunk,
        total: started.elapsed(),
        len,
        matches,
        error,
    }
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// A parsed RFC 9211 `Cache-Status` entry of the edge.
#[derive(Debug, Default, Clone)]
pub struct CacheStatus {
    pub raw: String,
    pub hit: bool,
    pub fwd: Option<String>,
    pub fwd_status: Option<u16>,
    pub stored: bool,
    pub collapsed: bool,
    pub ttl: Option<i64>,
    pub detail: Option<String>,
}

impl CacheStatus {
    /// Parses the header; panics when it is missing or not the edge's.
    pub fn of(headers: &HeaderMap) -> CacheStatus {
        let raw = headers
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no Cache-Status in {headers:?}"))
            .to_owned();
        let mut parts = raw.split(';').map(str::trim);
        assert_eq!(parts.next(), Some("streamedge"), "Cache-Status {raw:?}");
        let mut cs = CacheStatus {
            raw: raw.clone(),
            ..CacheStatus::default()
        };
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match k {
                "hit" => cs.hit = true,
                "fwd" => cs.fwd = Some(v.to_owned()),
                "fwd-status" => cs.fwd_status = v.parse().ok(),
                "stored" => cs.stored = true,
                "collapsed" => cs.collapsed = true,
                "ttl" => cs.ttl = v.parse().ok(),
                "detail" => cs.detail = Some(v.to_owned()),
                _ => {}
            }
        }
        cs
    }

    pub fn is_miss(&self) -> bool {
        !self.hit && self.fwd.is_some()
    }
}

/// The value of a counter or gauge in Prometheus text, summed over the series whose labels
/// contain every `label_parts` (e.g. `cache="collapsed"`).
pub fn metric_sum(text: &str, name: &str, label_parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| label_parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The median of some durations.
pub fn median(mut v: Vec<Duration>) -> Duration {
    assert!(!v.is_empty());
    v.sort();
    v[v.len() / 2]
}

/// Reads until the peer closes the connection (bounded by `secs`); returns how long that took.
pub async fn closed_within(mut stream: impl tokio::io::AsyncRead + Unpin, secs: u64) -> Duration {
    use tokio::io::AsyncReadExt;
    let t = tokio::time::Instant::now();
    let mut buf = [0u8; 4096];
    within(secs, "the peer to close the connection", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    t.elapsed()
}
