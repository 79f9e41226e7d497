//! A Range-capable origin for large objects: each body is computed from its seed and the byte
//! offset (so a 1 GiB object costs no memory), with `ETag`, `Last-Modified`, single `Range`,
//! `If-Range` and conditional requests; it counts requests and body bytes per path and can
//! switch an object to a new version after some requests, or make it vanish (404).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::error_chain;

/// One version of a synthetic object: its bytes follow from `seed`.
#[derive(Clone, Debug)]
pub struct Version {
    pub seed: u64,
    pub len: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub cache_control: String,
}

impl Version {
    /// `len` bytes from `seed`, with a strong ETag and a Last-Modified of its own, fresh for an
    /// hour.
    pub fn new(seed: u64, len: u64) -> Version {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000 + seed);
        Version {
            seed,
            len,
            etag: Some(format!("\"v{seed}-{len}\"")),
            last_modified: Some(httpdate::fmt_http_date(t)),
            cache_control: "max-age=3600".to_owned(),
        }
    }

    /// `len` bytes of this version from `offset`.
    pub fn bytes(&self, offset: u64, len: u64) -> Vec<u8> {
        synthetic(self.seed, offset, len)
    }

    /// Whether `bytes` are this version's at `offset`.
    pub fn matches(&self, offset: u64, bytes: &[u8]) -> bool {
        synthetic_eq(self.seed, offset, bytes)
    }
}

/// Bodies are made of blocks of this many bytes (a prime, so blocks never line up with slices):
/// block `k` of the body seeded with `seed` is that seed's base block rotated by an amount
/// that depends on `k`. Any shift, any block from another offset or another seed, compares
/// unequal, and making or checking bytes is a copy or a `memcmp` even in a debug build.
const BLOCK: u64 = 65_521;

fn mix(mut x: u64) -> u64 {
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 32)
}

/// The base block of `seed` (made once per seed).
fn base(seed: u64) -> Arc<[u8]> {
    static BASES: OnceLock<Mutex<HashMap<u64, Arc<[u8]>>>> = OnceLock::new();
    let mut bases = BASES.get_or_init(Default::default).lock().unwrap();
    bases
        .entry(seed)
        .or_insert_with(|| {
            let mut v = Vec::with_capacity(BLOCK as usize + 8);
            let mut w = 0u64;
            while (v.len() as u64) < BLOCK {
                v.extend_from_slice(
                    &mix(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ w).to_le_bytes(),
                );
                w += 1;
            }
            v.truncate(BLOCK as usize);
            v.into()
        })
        .clone()
}

/// Walks the `len` bytes from `offset` of the body seeded with `seed` as consecutive pieces of
/// its base block.
fn pieces(seed: u64, offset: u64, len: u64, mut f: impl FnMut(&[u8]) -> bool) -> bool {
    let base = base(seed);
    let end = offset + len;
    let mut p = offset;
    while p < end {
        let (k, j) = (p / BLOCK, p % BLOCK);
        let rot = mix(seed ^ k.wrapping_mul(0xD6E8_FEB8_6659_FD93)) % BLOCK;
        let from = ((j + rot) % BLOCK) as usize;
        // Up to the end of the block, the end of the base block (wrap) or the end asked for.
        let n = (BLOCK - j).min(BLOCK - from as u64).min(end - p) as usize;
        if !f(&base[from..from + n]) {
            return false;
        }
        p += n as u64;
    }
    true
}

/// `len` bytes of the body seeded with `seed`, from `offset`.
pub fn synthetic(seed: u64, offset: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len as usize);
    pieces(seed, offset, len, |piece| {
        out.extend_from_slice(piece);
        true
    });
    out
}

/// Whether `bytes` are the body seeded with `seed` at `offset`.
pub fn synthetic_eq(seed: u64, offset: u64, bytes: &[u8]) -> bool {
    let mut at = 0;
    pieces(seed, offset, bytes.len() as u64, |piece| {
        let same = bytes[at..at + piece.len()] == *piece;
        at += piece.len();
        same
    })
}

/// What one request for a path looked like.
#[derive(Clone, Debug)]
pub struct RangedSeen {
    pub method: Method,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub status: StatusCode,
}

#[derive(Default)]
struct Entry {
    current: Option<Version>,
    /// After this many requests for the path in all, serve this version.
    next: Option<(usize, Version)>,
    seen: Vec<RangedSeen>,
    /// Body bytes handed to the connection for this path.
    sent: Arc<AtomicU64>,
}

#[derive(Default)]
struct State {
    objects: Mutex<HashMap<String, Entry>>,
    sent: Arc<AtomicU64>,
}

/// The origin: `127.0.0.1:0`, HTTP/1.1; `/healthz` answers 200, unknown paths 404.
pub struct RangedOrigin {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl RangedOrigin {
    pub async fn start() -> RangedOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(State::default());
        let serving = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        conns.spawn(connection(stream, serving.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        RangedOrigin { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `version` at `path` from now on.
    pub fn put(&self, path: &str, version: Version) {
        let mut objects = self.state.objects.lock().unwrap();
        let e = objects.entry(path.to_owned()).or_default();
        e.current = Some(version);
        e.next = None;
    }

    /// Serves `version` at `path` once `after` requests for it have been answered in all
    /// (counting those already answered).
    pub fn switch_after(&self, path: &str, after: usize, version: Version) {
        let mut objects = self.state.objects.lock().unwrap();
        objects.entry(path.to_owned()).or_default().next = Some((after, version));
    }

    /// `path` answers 404 from now on.
    pub fn remove(&self, path: &str) {
        let mut objects = self.state.objects.lock().unwrap();
        let e = objects.entry(path.to_owned()).or_default();
        e.current = None;
        e.next = None;
    }

    /// Every request for `path`, in order.
    pub fn seen(&self, path: &str) -> Vec<RangedSeen> {
        let objects = self.state.objects.lock().unwrap();
        objects
            .get(path)
            .map(|e| e.seen.clone())
            .unwrap_or_default()
    }

    pub fn count_path(&self, path: &str) -> usize {
        self.seen(path).len()
    }

    /// Body bytes sent for `path` (handed to the connection; what the edge read is at most
    /// that).
    pub fn bytes_sent(&self, path: &str) -> u64 {
        let objects = self.state.objects.lock().unwrap();
        objects
            .get(path)
            .map_or(0, |e| e.sent.load(Ordering::SeqCst))
    }

    /// Body bytes sent for every path.
    pub fn total_bytes_sent(&self) -> u64 {
        self.state.sent.load(Ordering::SeqCst)
    }

    /// Stops accepting and aborts every connection.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for RangedOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connection(stream: tokio::net::TcpStream, state: Arc<State>) {
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(answer(&state, &req)) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn header_str(req: &http::Request<Incoming>, name: header::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The single range asked for, read by the edge's own parser: `Ok(None)` when there is none
/// (or several, or an invalid one: the whole body), `Err(())` when it cannot be satisfied.
fn parse_range(headers: &http::HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ()> {
    use streamedge::cache::conditional::{RangeRequest, parse_range, resolve};
    match parse_range(headers).map(|specs| resolve(&specs, len)) {
        Some(RangeRequest::Single(a, b)) => Ok(Some((a, b - 1))),
        Some(RangeRequest::Unsatisfiable) => Err(()),
        _ => Ok(None),
    }
}

fn answer(state: &State, req: &http::Request<Incoming>) -> http::Response<SynthBody> {
    let path = req.uri().path().to_owned();
    let range = header_str(req, header::RANGE);
    let if_range = header_str(req, header::IF_RANGE);
    let mut objects = state.objects.lock().unwrap();
    if path == "/healthz" && !objects.contains_key(&path) {
        return empty(StatusCode::OK);
    }
    let Some(entry) = objects.get_mut(&path) else {
        return empty(StatusCode::NOT_FOUND);
    };
    if let Some((after, _)) = &entry.next
        && entry.seen.len() >= *after
    {
        entry.current = entry.next.take().map(|(_, v)| v);
    }
    let resp = match entry.current.clone() {
        None => empty(StatusCode::NOT_FOUND),
        Some(v) => respond(req, &v, if_range.as_deref(), entry, state),
    };
    entry.seen.push(RangedSeen {
        method: req.method().clone(),
        range,
        if_range,
        status: resp.status(),
    });
    resp
}

fn respond(
    req: &http::Request<Incoming>,
    v: &Version,
    if_range: Option<&str>,
    entry: &Entry,
    state: &State,
) -> http::Response<SynthBody> {
    let mut head = http::Response::builder()
        .header(header::CACHE_CONTROL, v.cache_control.as_str())
        .header(header::CONTENT_TYPE, "video/mp4")
        .header(header::ACCEPT_RANGES, "bytes");
    if let Some(e) = &v.etag {
        head = head.header(header::ETAG, e.as_str());
    }
    if let Some(lm) = &v.last_modified {
        head = head.header(header::LAST_MODIFIED, lm.as_str());
    }
    let inm = header_str(req, header::IF_NONE_MATCH);
    let ims = header_str(req, header::IF_MODIFIED_SINCE);
    let not_modified = match (&inm, &v.etag) {
        (Some(inm), Some(etag)) => inm.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag.trim_start_matches("W/")
        }),
        (Some(_), None) => false,
        (None, _) => ims.is_some() && ims == v.last_modified,
    };
    if not_modified {
        return head
            .status(StatusCode::NOT_MODIFIED)
            .body(SynthBody::empty())
            .expect("response");
    }
    // If-Range with a validator that is no longer current: the whole body.
    let range_applies = if_range
        .is_none_or(|ir| v.etag.as_deref() == Some(ir) || v.last_modified.as_deref() == Some(ir));
    let range = if range_applies {
        parse_range(req.headers(), v.len)
    } else {
        Ok(None)
    };
    let (status, start, end) = match range {
        Err(()) => {
            return head
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{}", v.len))
                .body(SynthBody::empty())
                .expect("response");
        }
        Ok(Some((a, b))) => {
            head = head.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{}", v.len));
            (StatusCode::PARTIAL_CONTENT, a, b + 1)
        }
        Ok(None) => (StatusCode::OK, 0, v.len),
    };
    head = head.header(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    let body = if req.method() == Method::HEAD {
        SynthBody::empty()
    } else {
        SynthBody {
            seed: v.seed,
            pos: start,
            end,
            counters: vec![entry.sent.clone(), state.sent.clone()],
        }
    };
    head.status(status).body(body).expect("response")
}

fn empty(status: StatusCode) -> http::Response<SynthBody> {
    http::Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, "0")
        .body(SynthBody::empty())
        .expect("response")
}

/// A synthetic body computed 64 KiB at a time as the connection takes it.
struct SynthBody {
    seed: u64,
    pos: u64,
    end: u64,
    counters: Vec<Arc<AtomicU64>>,
}

impl SynthBody {
    fn empty() -> SynthBody {
        SynthBody {
            seed: 0,
            pos: 0,
            end: 0,
            counters: Vec::new(),
        }
    }
}

impl Body for SynthBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        let n = (64 << 10).min(this.end - this.pos);
        let chunk = synthetic(this.seed, this.pos, n);
        this.pos += n;
        for c in &this.counters {
            c.fetch_add(n, Ordering::SeqCst);
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end - self.pos)
    }
}

/// How a streamed body compared with the versions it may be.
#[derive(Debug)]
pub struct Checked {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    /// Where the body starts in the object (from Content-Range; 0 for a 200).
    pub offset: u64,
    pub len: u64,
    /// The indexes (into the versions given) whose bytes equal every byte received.
    pub matching: Vec<usize>,
    /// The body read failed (cut connection, edge abort).
    pub error: Option<String>,
    /// The length of each version given.
    lens: Vec<u64>,
}

impl Checked {
    /// How long the body says it is: the Content-Range's range, else Content-Length.
    fn announced(&self) -> Option<u64> {
        let header = |name| self.headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(cr) = header(header::CONTENT_RANGE) {
            let (a, b) = cr
                .strip_prefix("bytes ")?
                .split('/')
                .next()?
                .split_once('-')?;
            return Some(b.parse::<u64>().ok()? + 1 - a.parse::<u64>().ok()?);
        }
        header(header::CONTENT_LENGTH)?.parse().ok()
    }

    /// A complete body (no error, all the bytes announced, or the whole object when nothing
    /// was announced) equal to version `i` over its range.
    pub fn complete_as(&self, i: usize) -> bool {
        let want = self
            .announced()
            .unwrap_or(self.lens[i].saturating_sub(self.offset));
        self.error.is_none()
            && self.status.is_success()
            && self.matching.contains(&i)
            && self.len == want
    }

    /// Never a mix: every byte received is from one of the versions, and the body is either
    /// complete or ends in an error (never a clean short end); a 5xx answer is an error too.
    pub fn assert_one_version(&self, what: &str) {
        if self.status.is_server_error() {
            return; // an error answer instead of a body: allowed
        }
        assert!(
            !self.matching.is_empty(),
            "{what}: {} the body ({} bytes from {}) mixes versions or is wrong; error {:?}",
            self.status,
            self.len,
            self.offset,
            self.error
        );
        if self.error.is_none() {
            assert!(
                self.matching.iter().any(|&i| self.complete_as(i)),
                "{what}: clean end after {} bytes from {}, not all of it ({:?} announced)",
                self.len,
                self.offset,
                self.announced()
            );
        }
    }
}

/// Sends `req` and compares the body, as it arrives, with each of `versions` at the offset the
/// response says (Content-Range, or 0).
pub async fn check_versions(req: reqwest::RequestBuilder, versions: &[&Version]) -> Checked {
    let mut resp = req.send().await.expect("request sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let offset = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes ")?.split('-').next()?.parse().ok())
        .unwrap_or(0);
    let mut matching: Vec<usize> = if status.is_success() {
        (0..versions.len()).collect()
    } else {
        Vec::new()
    };
    let mut len = 0u64;
    let mut error = None;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                let at = offset + len;
                let n = c.len() as u64;
                matching.retain(|&i| at + n <= versions[i].len && versions[i].matches(at, &c));
                len += n;
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(error_chain(&e));
                break;
            }
        }
    }
    Checked {
        status,
        headers,
        offset,
        len,
        matching,
        error,
        lens: versions.iter().map(|v| v.len).collect(),
    }
}
