//! Phase `log`: one access-log line and the request's metrics, written when its body ends,
//! fails or is dropped (so bytes and duration are what the client really got).

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Response, header};
use http_body::Body;
use tokio::time::Instant;

use super::context::Proxy;
use crate::cache::{CacheKey, ContentKind};
use crate::cmcd::Cmcd;
use crate::server::{BodyWatch, BoxError, ConnInfo, ResponseBody};

/// How a request was answered, for metrics, logs and `Cache-Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheResult {
    /// Fresh from the cache.
    Hit,
    /// Fetched from the origin by this request.
    Miss,
    /// Joined another request's origin fetch.
    Collapsed,
    /// A stale copy: revalidated with the origin (304) or served stale by policy.
    Stale,
    /// Not cacheable: went to the origin without collapsing.
    Pass,
    /// Answered by the edge itself (errors, refusals).
    Synthetic,
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Collapsed => "collapsed",
            CacheResult::Stale => "stale",
            CacheResult::Pass => "pass",
            CacheResult::Synthetic => "synthetic",
        }
    }
}

/// What the access log and metrics record about one request.
pub struct Outcome {
    pub method: Method,
    /// The request target as received (the URI's bytes are shared, not copied).
    pub target: http::Uri,
    pub remote: std::net::SocketAddr,
    pub protocol: &'static str,
    pub started: Instant,
    pub cache: CacheResult,
    pub kind: ContentKind,
    pub origin: Option<Arc<str>>,
    pub error: Option<String>,
    pub cmcd: Option<Cmcd>,
    /// The cache key, once the request has one (for the status page's top keys).
    pub key: Option<CacheKey>,
    ttfb: Duration,
}

impl Outcome {
    pub fn new(parts: &http::request::Parts, conn: &ConnInfo) -> Outcome {
        Outcome {
            method: parts.method.clone(),
            target: parts.uri.clone(),
            remote: conn.remote,
            protocol: conn.protocol,
            started: Instant::now(),
            cache: CacheResult::Synthetic,
            kind: ContentKind::Other,
            origin: None,
            error: None,
            cmcd: None,
            key: None,
            ttfb: Duration::ZERO,
        }
    }
}

/// The watch that writes the access line and metrics when the body ends (the server wraps the
/// body with it); with no body, the line is written now. The status page's numbers count the
/// response now (its head is out) and its body bytes as they go.
pub fn log(
    response: Response<ResponseBody>,
    mut out: Outcome,
    proxy: Arc<Proxy>,
) -> (Response<ResponseBody>, Option<Logged>) {
    let status = response.status().as_u16();
    out.ttfb = out.started.elapsed();
    crate::metrics::first_byte(out.cache.as_str(), out.ttfb);
    proxy.stats.response(
        out.cache == CacheResult::Hit,
        out.ttfb,
        out.key.as_ref().map(CacheKey::as_repr),
    );
    if out.method == Method::HEAD || response.body().is_end_stream() {
        emit(&out, status, 0, None);
        return (response, None);
    }
    let expected = response.body().size_hint().exact().or_else(|| {
        response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    });
    let log = Some((out, status));
    let logged = Logged {
        bytes: 0,
        expected,
        log,
        proxy,
    };
    (response, Some(logged))
}

fn emit(out: &Outcome, status: u16, bytes: u64, body_error: Option<&str>) {
    let duration = out.started.elapsed();
    crate::metrics::request_done(
        &out.method,
        status,
        out.cache.as_str(),
        out.kind.as_str(),
        bytes,
        duration,
    );
    let error = body_error.or(out.error.as_deref()).unwrap_or("");
    let cmcd = out.cmcd.as_ref();
    tracing::info!(
        target: "streamedge::access",
        client = %out.remote,
        proto = out.protocol,
        method = %out.method,
        path = out.target.path_and_query().map_or("/", |p| p.as_str()),
        status,
        cache = out.cache.as_str(),
        kind = out.kind.as_str(),
        bytes,
        ms = duration.as_secs_f64() * 1000.0,
        ttfb_ms = out.ttfb.as_secs_f64() * 1000.0,
        origin = out.origin.as_deref().unwrap_or("-"),
        cmcd_sid = cmcd.and_then(|c| c.session.as_deref()).unwrap_or(""),
        cmcd_bl = cmcd.and_then(|c| c.buffer_ms),
        cmcd_mtp = cmcd.and_then(|c| c.throughput_kbps),
        cmcd_bs = cmcd.is_some_and(|c| c.starved),
        error,
    );
}

/// Counts body bytes and writes the access line when the body ends, fails or is dropped.
pub struct Logged {
    bytes: u64,
    /// The body's known length: hyper may drop a body as soon as it has sent that many bytes.
    expected: Option<u64>,
    log: Option<(Outcome, u16)>,
    proxy: Arc<Proxy>,
}

impl BodyWatch for Logged {
    fn sent(&mut self, data: Option<usize>) {
        if let Some(n) = data {
            self.bytes += n as u64;
            self.proxy.stats.sent(n as u64);
        }
    }

    fn ended(&mut self, error: Option<&BoxError>) {
        if let Some((out, status)) = self.log.take() {
            let error = error.map(ToString::to_string);
            emit(&out, status, self.bytes, error.as_deref());
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some((out, status)) = self.log.take() {
            let complete = self.expected.is_some_and(|e| self.bytes >= e);
            emit(
                &out,
                status,
                self.bytes,
                (!complete).then_some("client went away"),
            );
        }
    }
}
