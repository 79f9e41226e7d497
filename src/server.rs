//! Client connections: accept loop, connection limit, TLS handshake timeout, HTTP/1.1 and
//! HTTP/2 (by ALPN over TLS, by preface sniffing in the clear), idle close and graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What a request handler knows about its connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// "h1" or "h2".
    pub protocol: &'static str,
}

/// A request handler: never fails (errors become responses before they get here).
pub trait Handler: Clone + Send + Sync + 'static {
    fn call(
        &self,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static;
}

/// Listener-independent state: limits, builders and the shutdown signal.
pub struct Server {
    limits: ServerConfig,
    connections: Arc<Semaphore>,
    auto: auto::Builder<TokioExecutor>,
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
    shutdown: watch::Receiver<bool>,
}

impl Server {
    pub fn new(limits: &ServerConfig, shutdown: watch::Receiver<bool>) -> Arc<Server> {
        let make = || {
            let mut b = auto::Builder::new(TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(true)
                .max_buf_size(256 * 1024);
            b.http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.h2_max_concurrent_streams)
                .keep_alive_interval(Some(Duration::from_secs(20)))
                .keep_alive_timeout(Duration::from_secs(20))
                .initial_stream_window_size(1 << 20)
                .initial_connection_window_size(4 << 20)
                .max_send_buf_size(1 << 20);
            b
        };
        Arc::new(Server {
            limits: limits.clone(),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            auto: make(),
            h1: make().http1_only(),
            h2: make().http2_only(),
            shutdown,
        })
    }

    /// Accepts connections until shutdown is signalled; connections then drain on their own.
    pub async fn serve<H: Handler>(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        handler: H,
    ) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped(&mut shutdown) => return,
            };
            // The permit is taken after accept: the listeners share the limit, and one idle
            // in accept must not hold a permit (with a limit below the number of listeners,
            // a listener would never accept). At the limit this loop waits here, so the
            // connections beyond it wait in the backlog.
            let permit = tokio::select! {
                p = self.connections.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = stopped(&mut shutdown) => return,
            };
            let _ = stream.set_nodelay(true);
            let server = self.clone();
            let tls = tls.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                server.connection(stream, peer, tls, handler).await;
                drop(permit);
            });
        }
    }

    /// Waits until every connection has closed, at most `drain`.
    pub async fn drained(&self, drain: Duration) -> bool {
        let all = u32::try_from(self.limits.max_connections).unwrap_or(u32::MAX);
        tokio::time::timeout(drain, self.connections.acquire_many(all))
            .await
            .is_ok()
    }

    async fn connection<H: Handler>(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        handler: H,
    ) {
        match tls {
            None => {
                let info = Arc::new(ConnInfo {
                    peer,
                    tls: false,
                    protocol: "h1",
                });
                self.drive(TokioIo::new(stream), &self.auto, info, handler)
                    .await;
            }
            Some(acceptor) => {
                let accepted = tokio::time::timeout(
                    self.limits.tls_handshake_timeout,
                    acceptor.accept(stream),
                )
                .await;
                let stream = match accepted {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        crate::metrics::tls_handshake_error("failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        crate::metrics::tls_handshake_error("timeout");
                        return;
                    }
                };
                let (_, session) = stream.get_ref();
                let h2 = session.alpn_protocol() == Some(b"h2");
                crate::metrics::tls_handshake(
                    crate::tls::version_label(session.protocol_version()),
                    if h2 {
                        "h2"
                    } else if session.alpn_protocol().is_some() {
                        "http/1.1"
                    } else {
                        "none"
                    },
                );
                let info = Arc::new(ConnInfo {
                    peer,
                    tls: true,
                    protocol: if h2 { "h2" } else { "h1" },
                });
                let builder = if h2 { &self.h2 } else { &self.h1 };
                self.drive(TokioIo::new(stream), builder, info, handler)
                    .await;
            }
        }
    }

    /// Serves one connection until it ends, closing it when idle or on shutdown.
    async fn drive<I, H>(
        &self,
        io: I,
        builder: &auto::Builder<TokioExecutor>,
        info: Arc<ConnInfo>,
        handler: H,
    ) where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        H: Handler,
    {
        let activity = Arc::new(Activity::default());
        let started = Instant::now();
        let service = {
            let activity = activity.clone();
            let info_cell = info.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                let activity = activity.clone();
                let mut info = info_cell.clone();
                if req.version() == http::Version::HTTP_2 && info.protocol != "h2" {
                    // Cleartext HTTP/2 (prior knowledge) detected by the auto builder.
                    Arc::make_mut(&mut info).protocol = "h2";
                }
                activity.begin();
                async move {
                    let resp = handler.call(req, info).await;
                    Ok::<_, Infallible>(resp.map(|b| {
                        UnsyncBoxBody::new(TrackedBody {
                            inner: b,
                            guard: Some(ActivityGuard(activity, started)),
                        })
                    }))
                }
            })
        };
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let protocol = info.protocol;
        crate::metrics::client_connection(protocol, true);
        let mut shutdown = self.shutdown.clone();
        let idle = self.limits.idle_timeout;
        let mut closing = false;
        loop {
            let deadline =
                started + Duration::from_millis(activity.last.load(Ordering::Relaxed)) + idle;
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(peer = %info.peer, error = %e, "connection ended with error");
                    }
                    break;
                }
                _ = stopped(&mut shutdown), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = tokio::time::sleep_until(deadline), if !closing => {
                    let last = started + Duration::from_millis(activity.last.load(Ordering::Relaxed));
                    if activity.active.load(Ordering::Relaxed) == 0 && last + idle <= Instant::now() {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
        crate::metrics::client_connection(protocol, false);
    }
}

/// Requests in flight on a connection and when it was last busy (ms since it opened).
#[derive(Default)]
struct Activity {
    active: AtomicUsize,
    last: AtomicU64,
}

impl Activity {
    fn begin(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }
}

struct ActivityGuard(Arc<Activity>, Instant);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let ms = self.1.elapsed().as_millis() as u64;
        self.0.last.store(ms, Ordering::Relaxed);
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that marks the connection busy until it is finished or dropped.
struct TrackedBody {
    inner: ResponseBody,
    guard: Option<ActivityGuard>,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.guard = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Resolves once shutdown has been signalled.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
