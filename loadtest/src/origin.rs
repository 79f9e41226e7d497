//! The trickling origin: one generated object at any path under `/herd/`, headers after a fixed
//! latency, the body spread over a fixed time, and a request counter per path. The comparison
//! adds more prefixes with their own behaviour and a table of fixed files (`Content`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Chunk spacing of a trickled body: one chunk every this long (about 50 per second).
const TRICKLE_TICK: Duration = Duration::from_millis(20);
/// Chunk size of a body sent at full speed.
const FULL_SPEED_CHUNK: usize = 256 << 10;

/// How the origin answers.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Time between the request and the response head.
    pub latency: Duration,
    /// Time between the first and the last body chunk (zero: full speed).
    pub body_time: Duration,
}

/// A generated object served at every path under a prefix.
#[derive(Debug, Clone)]
pub struct Route {
    /// Path prefix, e.g. `/herd/`.
    pub prefix: String,
    pub object: Bytes,
    pub behaviour: Behaviour,
}

/// Everything the origin serves: fixed files at their exact paths (at full speed, no latency)
/// and generated objects under prefixes. Every answer carries `Cache-Control: max-age=3600`.
#[derive(Debug, Clone, Default)]
pub struct Content {
    /// Path → (body, Content-Type).
    pub files: HashMap<String, (Bytes, &'static str)>,
    pub routes: Vec<Route>,
}

#[derive(Default)]
struct Counter {
    per_path: Mutex<HashMap<String, u64>>,
    total: AtomicU64,
}

type Counts = Arc<Counter>;
type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A running origin on its own runtime thread; stopped on drop.
pub struct Origin {
    pub addr: SocketAddr,
    counts: Counts,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Origin {
    /// Starts an origin on 127.0.0.1 (a free port) serving `object` with `behaviour` at
    /// every path under `/herd/`.
    pub fn start(object: Bytes, behaviour: Behaviour, threads: usize) -> anyhow::Result<Origin> {
        let content = Content {
            files: HashMap::new(),
            routes: vec![Route {
                prefix: "/herd/".into(),
                object,
                behaviour,
            }],
        };
        Origin::start_content(content, threads)
    }

    /// Starts an origin on 127.0.0.1 (a free port) serving `content`.
    pub fn start_content(content: Content, threads: usize) -> anyhow::Result<Origin> {
        let content = Arc::new(content);
        let counts: Counts = Arc::default();
        let (addr_tx, addr_rx) = mpsc::channel::<Result<SocketAddr, String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread_counts = counts.clone();
        let thread = std::thread::Builder::new()
            .name("origin".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("origin-rt")
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
                        serve(listener, content, thread_counts, stop_rx).await;
                    }
                });
                // Dropping the runtime here ends every connection task still running.
            })
            .context("cannot start the origin thread")?;
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| anyhow!("origin did not start: {e}"))?
            .map_err(|e| anyhow!(e))?;
        Ok(Origin {
            addr,
            counts,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Requests received so far for `path`.
    pub fn requests(&self, path: &str) -> u64 {
        let counts = self
            .counts
            .per_path
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        counts.get(path).copied().unwrap_or(0)
    }

    /// Requests received so far, all paths.
    pub fn total_requests(&self) -> u64 {
        self.counts.total.load(Ordering::Relaxed)
    }
}

impl Drop for Origin {
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
    content: Arc<Content>,
    counts: Counts,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    eprintln!("origin: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let content = content.clone();
        let counts = counts.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, content.clone(), counts.clone()));
            // Clients that go away mid-body are expected (timeouts); nothing to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    content: Arc<Content>,
    counts: Counts,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    counts.total.fetch_add(1, Ordering::Relaxed);
    {
        let mut per_path = counts.per_path.lock().unwrap_or_else(|p| p.into_inner());
        *per_path.entry(path.clone()).or_insert(0) += 1;
    }
    let (body, len, content_type) = if let Some((file, content_type)) = content.files.get(&path) {
        let body = Full::new(file.clone()).boxed_unsync();
        (body, file.len(), *content_type)
    } else if let Some(route) = content.routes.iter().find(|r| path.starts_with(&r.prefix)) {
        tokio::time::sleep(route.behaviour.latency).await;
        let body = trickle(route.object.clone(), route.behaviour.body_time);
        (body, route.object.len(), "application/octet-stream")
    } else {
        let mut not_found =
            Response::new(Full::new(Bytes::from_static(b"not found\n")).boxed_unsync());
        *not_found.status_mut() = StatusCode::NOT_FOUND;
        return Ok(not_found);
    };
    let mut response = Response::new(body);
    *response.headers_mut() = headers(len, content_type);
    Ok(response)
}

/// The headers of every 200 the origin sends (hyper adds `Date`): also what the bare server
/// stores with each fixed file.
pub fn headers(len: usize, content_type: &'static str) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(3);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    h
}

/// The body as chunks: the first right away, the last `body_time` later, evenly spaced.
fn trickle(object: Bytes, body_time: Duration) -> Body {
    let len = object.len();
    let chunks = if body_time.is_zero() {
        len.div_ceil(FULL_SPEED_CHUNK).max(1)
    } else {
        ((body_time.as_millis() / TRICKLE_TICK.as_millis()) as usize + 1).clamp(1, len.max(1))
    };
    let start = Instant::now();
    let frames = stream::unfold(0usize, move |i| {
        let object = object.clone();
        async move {
            if i == chunks {
                return None;
            }
            if !body_time.is_zero() && chunks > 1 {
                let at = body_time.mul_f64(i as f64 / (chunks - 1) as f64);
                tokio::time::sleep_until(start + at).await;
            }
            let from = len * i / chunks;
            let to = len * (i + 1) / chunks;
            let frame: Result<Frame<Bytes>, Infallible> = Ok(Frame::data(object.slice(from..to)));
            Some((frame, i + 1))
        }
    });
    BodyExt::boxed_unsync(StreamBody::new(frames))
}
