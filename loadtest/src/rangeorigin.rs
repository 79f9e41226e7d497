//! The range origin: one large synthetic object at every path under `/big/`, each byte computed
//! from its offset (so a 1 GiB object takes no memory, and any range of it can be checked),
//! served whole or as a single byte range (`206`), with a count of the body bytes it sent, the
//! requests, and the bodies still being sent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use futures_util::stream;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Body chunks: the count of bytes sent is at most this much ahead of the socket.
const CHUNK: u64 = 64 << 10;
/// The object's validators (the slice module checks that every slice has the same ETag).
const ETAG: &str = "\"streamedge-bench-big-1\"";
const LAST_MODIFIED: &str = "Mon, 01 Jan 2024 00:00:00 GMT";

/// The object's 8-byte word number `index` (the same for every size and path).
fn word(index: u64) -> u64 {
    // splitmix64 of the word's index: every 8-byte word differs, misplaced bytes show.
    let mut z = index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `out` with the object's bytes from `offset` on.
pub fn fill(offset: u64, out: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < out.len() {
        let w = word(pos / 8).to_le_bytes();
        let from = (pos % 8) as usize;
        let n = (8 - from).min(out.len() - i);
        out[i..i + n].copy_from_slice(&w[from..from + n]);
        i += n;
        pos += n as u64;
    }
}

/// The object's bytes `offset .. offset + len`.
pub fn bytes_at(offset: u64, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    fill(offset, &mut v);
    v
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    body_bytes: AtomicU64,
    /// Bodies started and not yet finished or dropped.
    active: AtomicU64,
}

/// Decrements `active` when the body it travels with is done or dropped (client gone).
struct ActiveGuard(Arc<Counters>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running range origin on its own runtime thread; stopped on drop.
pub struct RangeOrigin {
    pub addr: SocketAddr,
    /// The object's size in bytes.
    pub size: u64,
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// A snapshot of the origin's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub body_bytes: u64,
    pub active: u64,
}

impl RangeOrigin {
    /// Starts the origin on 127.0.0.1 (a free port), serving an object of `size` bytes at
    /// every path under `/big/`.
    pub fn start(size: u64, threads: usize) -> anyhow::Result<RangeOrigin> {
        let counters: Arc<Counters> = Arc::default();
        let (addr_tx, addr_rx) = mpsc::channel::<Result<SocketAddr, String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("range-origin".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads.max(1))
                    .thread_name("range-origin-rt")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(format!("cannot build the origin runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::bind("127.0.0.1:0").await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = addr_tx.send(Err(format!("cannot bind the origin: {e}")));
                            return;
                        }
                    };
                    let addr = listener
                        .local_addr()
                        .map_err(|e| format!("origin socket has no address: {e}"));
                    let ok = addr.is_ok();
                    let _ = addr_tx.send(addr);
                    if ok {
                        serve(listener, size, c, stop_rx).await;
                    }
                });
            })
            .context("cannot start the range origin thread")?;
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| anyhow!("range origin did not start: {e}"))?
            .map_err(|e| anyhow!(e))?;
        Ok(RangeOrigin {
            addr,
            size,
            counters,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn counts(&self) -> Counts {
        Counts {
            requests: self.counters.requests.load(Ordering::Relaxed),
            body_bytes: self.counters.body_bytes.load(Ordering::Relaxed),
            active: self.counters.active.load(Ordering::Relaxed),
        }
    }

    /// Waits until no body is being sent and the counters have not moved for `quiet`, at
    /// most `limit`; the counts then, and whether it got quiet.
    pub async fn settle(&self, quiet: Duration, limit: Duration) -> (Counts, bool) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = self.counts();
        let mut since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.counts();
            if now != last {
                last = now;
                since = tokio::time::Instant::now();
            } else if now.active == 0 && since.elapsed() >= quiet {
                return (now, true);
            }
            if tokio::time::Instant::now() > deadline {
                return (now, false);
            }
        }
    }
}

impl Drop for RangeOrigin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: TcpListener,
    size: u64,
    counters: Arc<Counters>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("range origin: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let counters = counters.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, size, counters.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What a `Range` header asks of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// No (usable) range: the whole object.
    Whole,
    /// The bytes `first ..= last`.
    Range(u64, u64),
    /// A range that starts beyond the object.
    Unsatisfiable,
}

/// The single range of a request's `Range` over an object of `size` bytes, read by the
/// edge's own parser (several ranges, or an invalid one, are answered whole: RFC 9110 lets a
/// server ignore Range).
pub fn parse_range(headers: &http::HeaderMap, size: u64) -> Asked {
    use streamedge::cache::conditional::{RangeRequest, parse_range, resolve};
    match parse_range(headers).map(|specs| resolve(&specs, size)) {
        Some(RangeRequest::Single(a, b)) => Asked::Range(a, b - 1),
        Some(RangeRequest::Unsatisfiable) => Asked::Unsatisfiable,
        _ => Asked::Whole,
    }
}

async fn respond(
    req: Request<Incoming>,
    size: u64,
    counters: Arc<Counters>,
) -> Result<Response<Body>, Infallible> {
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let mut r = Response::builder()
        .header(header::CACHE_CONTROL, "max-age=3600")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, ETAG)
        .header(header::LAST_MODIFIED, LAST_MODIFIED)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if !req.uri().path().starts_with("/big/") {
        let body = Full::new(Bytes::from_static(b"not found\n")).boxed_unsync();
        let mut nf = Response::new(body);
        *nf.status_mut() = StatusCode::NOT_FOUND;
        return Ok(nf);
    }
    let range = parse_range(req.headers(), size);
    let (first, last) = match range {
        Asked::Unsatisfiable => {
            let r = r
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .header(header::CONTENT_LENGTH, 0)
                .body(Empty::new().boxed_unsync());
            return Ok(r.unwrap_or_else(|_| Response::new(Empty::new().boxed_unsync())));
        }
        Asked::Range(first, last) => {
            r = r.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {first}-{last}/{size}"),
            );
            (first, last + 1)
        }
        Asked::Whole => {
            r = r.status(StatusCode::OK);
            (0, size)
        }
    };
    r = r.header(header::CONTENT_LENGTH, last - first);
    let body = if req.method() == Method::HEAD {
        Empty::new().boxed_unsync()
    } else {
        body(first, last, counters)
    };
    Ok(r.body(body)
        .unwrap_or_else(|_| Response::new(Empty::new().boxed_unsync())))
}

/// The bytes `from .. to`, made and counted chunk by chunk as the connection takes them.
fn body(from: u64, to: u64, counters: Arc<Counters>) -> Body {
    counters.active.fetch_add(1, Ordering::Relaxed);
    let guard = ActiveGuard(counters.clone());
    let frames = stream::unfold((from, guard), move |(pos, guard)| {
        let counters = counters.clone();
        async move {
            if pos >= to {
                return None;
            }
            let n = CHUNK.min(to - pos);
            let mut buf = vec![0u8; n as usize];
            fill(pos, &mut buf);
            counters.body_bytes.fetch_add(n, Ordering::Relaxed);
            let frame: Result<Frame<Bytes>, Infallible> = Ok(Frame::data(Bytes::from(buf)));
            Some((frame, (pos + n, guard)))
        }
    });
    BodyExt::boxed_unsync(StreamBody::new(frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_depend_on_the_offset_only() {
        let whole = bytes_at(0, 100);
        assert_eq!(bytes_at(13, 50), whole[13..63].to_vec());
        assert_ne!(whole[0..8], whole[8..16]);
    }

    fn parse_range(value: &str, size: u64) -> Asked {
        let mut h = http::HeaderMap::new();
        h.insert(header::RANGE, value.parse().unwrap());
        super::parse_range(&h, size)
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Asked::Range(0, 99));
        assert_eq!(parse_range("bytes=900-", 1000), Asked::Range(900, 999));
        assert_eq!(parse_range("bytes=900-5000", 1000), Asked::Range(900, 999));
        assert_eq!(parse_range("bytes=-100", 1000), Asked::Range(900, 999));
        assert_eq!(parse_range("bytes=-0", 1000), Asked::Unsatisfiable);
        assert_eq!(parse_range("bytes=1000-", 1000), Asked::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Asked::Whole);
        assert_eq!(parse_range("items=0-1", 1000), Asked::Whole);
        assert_eq!(parse_range("bytes=5-1", 1000), Asked::Whole);
    }
}
