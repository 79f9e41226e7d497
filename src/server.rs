//! Client connections: accept loop, connection limit, TLS handshake timeout, HTTP/1.1 and
//! HTTP/2 (by ALPN over TLS, by preface sniffing in the clear), idle close and graceful drain.
//!
//! Time limits, so no client holds a connection (or the memory behind it) by doing nothing:
//! the TLS handshake within `tls_handshake_timeout`; the first request head within
//! `header_read_timeout` of accept; no request for `idle_timeout` closes a connection; and a
//! response the client takes no byte of for `send_timeout` closes it too.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
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

use crate::accept::Acceptor;
use crate::config::ServerConfig;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What a request handler knows about its connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub tls: bool,
    /// "h1" or "h2".
    pub protocol: &'static str,
}

/// A request handler: never fails (errors become responses before they get here).
pub trait Handler: Clone + Send + Sync + 'static {
    /// What the handler learns of a response body as it goes out (the access log): the server
    /// wraps each body once, for this and for its own watch on the connection.
    type Watch: BodyWatch;

    fn call(
        &self,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> impl Future<Output = (Response<ResponseBody>, Self::Watch)> + Send + 'static;
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

/// The HTTP/1.1 + HTTP/2 connection builder every listener uses, with the edge's protocol
/// settings (timers, header read timeout, keep-alive, buffer, stream and window sizes). Public
/// so that the benchmarks' bare server (loadtest `bare`) serves with exactly these settings.
pub fn http_builder(limits: &ServerConfig) -> auto::Builder<TokioExecutor> {
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
}

impl Server {
    pub fn new(limits: &ServerConfig, shutdown: watch::Receiver<bool>) -> Arc<Server> {
        let make = || http_builder(limits);
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
        let mut acceptor = Acceptor::new(listener, "client", crate::metrics::accept_error);
        while let Some((stream, remote)) = acceptor.next(stopped(&mut shutdown)).await {
            let accepted = Instant::now();
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
            let server = self.clone();
            let tls = tls.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                server
                    .connection(stream, remote, accepted, tls, handler)
                    .await;
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
        remote: SocketAddr,
        accepted: Instant,
        tls: Option<TlsAcceptor>,
        handler: H,
    ) {
        match tls {
            None => {
                let info = Arc::new(ConnInfo {
                    remote,
                    tls: false,
                    protocol: "h1",
                });
                // Boxed, here and below: the task then holds only the state of the path
                // its connection takes, not the largest of all (a TLS handshake's state, an
                // HTTP/2 connection's), for as long as the connection lives.
                let serving =
                    Box::pin(self.drive(TokioIo::new(stream), &self.auto, info, accepted, handler));
                serving.await;
            }
            Some(acceptor) => {
                // The handshake's state and the stream it yields are gone (they belong to
                // `tls_handshake`) before the connection is served.
                let Some(serving) = self
                    .tls_handshake(stream, remote, accepted, acceptor, handler)
                    .await
                else {
                    return;
                };
                serving.await;
            }
        }
    }

    /// The TLS handshake (bounded by `tls_handshake_timeout`), then the connection's service,
    /// HTTP/2 or HTTP/1.1 by ALPN, boxed and not yet started; `None` when the handshake failed.
    async fn tls_handshake<H: Handler>(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        accepted: Instant,
        acceptor: TlsAcceptor,
        handler: H,
    ) -> Option<Pin<Box<impl Future<Output = ()> + Send + '_>>> {
        let handshake = Box::pin(tokio::time::timeout(
            self.limits.tls_handshake_timeout,
            acceptor.accept(stream),
        ));
        let stream = match handshake.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                crate::metrics::tls_handshake_error("failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                crate::metrics::tls_handshake_error("timeout");
                return None;
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
            remote,
            tls: true,
            protocol: if h2 { "h2" } else { "h1" },
        });
        let builder = if h2 { &self.h2 } else { &self.h1 };
        Some(Box::pin(self.drive(
            TokioIo::new(stream),
            builder,
            info,
            accepted,
            handler,
        )))
    }

    /// Serves one connection until it ends, closing it when idle, stalled or on shutdown.
    async fn drive<I, H>(
        &self,
        io: I,
        builder: &auto::Builder<TokioExecutor>,
        info: Arc<ConnInfo>,
        accepted: Instant,
        handler: H,
    ) where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        H: Handler,
    {
        let activity = Arc::new(Activity::new(accepted));
        let service = tracked_service(handler, info.clone(), activity.clone());
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let protocol = info.protocol;
        crate::metrics::client_connection(protocol, true);
        let mut shutdown = self.shutdown.clone();
        let limits = &self.limits;
        // How often bodies in flight are looked at for a stalled client.
        let stall_tick = (limits.send_timeout / 4).max(Duration::from_millis(25));
        let mut closing = false;
        loop {
            let watching = activity.sending_count.load(Ordering::Relaxed) > 0;
            let wake = activity.next_look(limits, stall_tick);
            tokio::select! {
                _ = activity.watch.notified() => {}
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(remote = %info.remote, error = %e, "connection ended with error");
                    }
                    break;
                }
                _ = stopped(&mut shutdown), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = tokio::time::sleep_until(wake), if !closing || watching => {
                    match activity.verdict(limits, watching, closing) {
                        Verdict::Stalled => {
                            tracing::debug!(remote = %info.remote, "client took no response bytes for send_timeout: closing");
                            crate::metrics::client_send_timeout();
                            break;
                        }
                        // Not a single request since accept: nothing to be graceful about.
                        Verdict::NeverAsked => break,
                        Verdict::Idle => {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        Verdict::Busy => {}
                    }
                }
            }
        }
        crate::metrics::client_connection(protocol, false);
    }
}

/// The connection's service: hands each request to `handler` and wraps the response body so
/// the connection knows it is busy and can see a client that stops reading.
fn tracked_service<H: Handler>(
    handler: H,
    conn: Arc<ConnInfo>,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<ResponseBody>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        let activity = activity.clone();
        let mut info = conn.clone();
        if req.version() == http::Version::HTTP_2 && info.protocol != "h2" {
            // Cleartext HTTP/2 (prior knowledge) detected by the auto builder.
            Arc::make_mut(&mut info).protocol = "h2";
        }
        activity.begin();
        async move {
            let (resp, watch) = handler.call(req, info).await;
            Ok::<_, Infallible>(resp.map(|b| {
                let sending = activity.track(&b);
                let guard = Some(ActivityGuard(activity));
                Watched::boxed(b, (Tracked { guard, sending }, watch))
            }))
        }
    })
}

/// What the watchdog found when it looked at a connection.
enum Verdict {
    /// A response went untaken for `send_timeout`.
    Stalled,
    /// No request since accept, for `header_read_timeout`.
    NeverAsked,
    /// No request in flight for `idle_timeout`.
    Idle,
    Busy,
}

/// Raises the soft limit on open files (RLIMIT_NOFILE) to the hard limit and returns how many
/// client connections fit under it: `wanted`, or less (with a warning) so that accept never
/// fails for lack of descriptors while origins, listeners and files still get theirs.
pub fn fit_connection_limit(wanted: usize) -> usize {
    let Some(limit) = raise_nofile_limit() else {
        return wanted;
    };
    let reserve = (512 + limit / 16).min(limit / 2);
    let usable = usize::try_from(limit - reserve)
        .unwrap_or(usize::MAX)
        .max(1);
    if wanted > usable {
        tracing::warn!(
            max_connections = wanted,
            file_descriptors = limit,
            using = usable,
            "server.max_connections is above what the open-file limit allows; lowered to fit"
        );
        return usable;
    }
    wanted
}

/// Raises this process's soft limit on open files (RLIMIT_NOFILE) to its hard limit (children
/// inherit it) and returns the soft limit then in force; `None` if it cannot be read. Public
/// so that the benchmarks raise theirs the way the edge does.
pub fn raise_nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Some(if lim.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX / 2
    } else {
        lim.rlim_cur
    })
}

/// What is going on on one connection: requests in flight, when it was last busy, and the
/// response bodies whose client might stall.
struct Activity {
    opened: Instant,
    /// Requests begun on the connection.
    requests: AtomicU64,
    active: AtomicUsize,
    /// When the connection was last busy (ms since it opened).
    last: AtomicU64,
    /// Bodies being sent that are large enough to matter: each holds when it began waiting for
    /// the client to take more (ms since the connection opened, plus one; 0 = not waiting).
    sending: Mutex<Vec<Weak<AtomicU64>>>,
    sending_count: AtomicUsize,
    /// A body is to be watched for a stalled client.
    watch: tokio::sync::Notify,
}

/// Bodies up to this size are handed to the socket whole; a client that does not read them
/// holds no memory of ours.
const WATCH_BODIES_ABOVE: u64 = 64 << 10;

impl Activity {
    fn new(opened: Instant) -> Activity {
        Activity {
            opened,
            requests: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            sending: Mutex::new(Vec::new()),
            sending_count: AtomicUsize::new(0),
            watch: tokio::sync::Notify::new(),
        }
    }

    fn begin(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn last_busy(&self) -> Instant {
        self.opened + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    /// When the watchdog should look next. While requests are in flight, every half idle
    /// time: the first look after the last one ended sets the exact deadline (no wake-up per
    /// request is needed); while a body is watched, every `stall_tick`.
    fn next_look(&self, limits: &ServerConfig, stall_tick: Duration) -> Instant {
        let idle_at = if self.active.load(Ordering::Relaxed) > 0 {
            Instant::now() + (limits.idle_timeout / 2).max(Duration::from_millis(100))
        } else if self.requests.load(Ordering::Relaxed) == 0 {
            self.opened + limits.header_read_timeout
        } else {
            self.last_busy() + limits.idle_timeout
        };
        if self.sending_count.load(Ordering::Relaxed) > 0 {
            idle_at.min(Instant::now() + stall_tick)
        } else {
            idle_at
        }
    }

    fn verdict(&self, limits: &ServerConfig, watching: bool, closing: bool) -> Verdict {
        if watching && self.stalled(limits.send_timeout) {
            return Verdict::Stalled;
        }
        let now = Instant::now();
        if closing || self.active.load(Ordering::Relaxed) > 0 {
            Verdict::Busy
        } else if self.requests.load(Ordering::Relaxed) == 0 {
            if now >= self.opened + limits.header_read_timeout {
                Verdict::NeverAsked
            } else {
                Verdict::Busy
            }
        } else if self.last_busy() + limits.idle_timeout <= now {
            Verdict::Idle
        } else {
            Verdict::Busy
        }
    }

    /// Starts watching a response body for a client that stops taking it.
    fn track(&self, body: &ResponseBody) -> Option<Arc<AtomicU64>> {
        if body.is_end_stream()
            || body
                .size_hint()
                .exact()
                .is_some_and(|n| n <= WATCH_BODIES_ABOVE)
        {
            return None;
        }
        let slot = Arc::new(AtomicU64::new(0));
        let mut list = self.sending.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&slot));
        self.sending_count.store(list.len(), Ordering::Relaxed);
        drop(list);
        // The watchdog may be asleep until the request ends: have it watch this body.
        self.watch.notify_one();
        Some(slot)
    }

    /// Whether a body has waited for its client longer than `limit`.
    fn stalled(&self, limit: Duration) -> bool {
        let now = self.now_ms();
        let limit = limit.as_millis() as u64;
        let mut list = self.sending.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| w.strong_count() > 0);
        self.sending_count.store(list.len(), Ordering::Relaxed);
        list.iter().filter_map(Weak::upgrade).any(|slot| {
            let since = slot.load(Ordering::Relaxed);
            since > 0 && now.saturating_sub(since - 1) > limit
        })
    }
}

struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let ms = self.0.now_ms();
        self.0.last.store(ms, Ordering::Relaxed);
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a wrapper learns of a response body as it is sent.
pub trait BodyWatch: Send + Unpin + 'static {
    /// The connection asks for more (it has room for it).
    fn polled(&mut self) {}
    /// A frame went out; `data` is its length for a data frame.
    fn sent(&mut self, _data: Option<usize>) {}
    /// The body ended: cleanly, or with this error.
    fn ended(&mut self, _error: Option<&BoxError>) {}
}

/// Nothing to learn.
impl BodyWatch for () {}

/// A watch that may be absent (a response that needs none).
impl<W: BodyWatch> BodyWatch for Option<W> {
    fn polled(&mut self) {
        if let Some(w) = self {
            w.polled();
        }
    }

    fn sent(&mut self, data: Option<usize>) {
        if let Some(w) = self {
            w.sent(data);
        }
    }

    fn ended(&mut self, error: Option<&BoxError>) {
        if let Some(w) = self {
            w.ended(error);
        }
    }
}

/// Two watches of one body, in order: one wrapper (one allocation, one indirection per frame)
/// instead of a body wrapped twice.
impl<A: BodyWatch, B: BodyWatch> BodyWatch for (A, B) {
    fn polled(&mut self) {
        self.0.polled();
        self.1.polled();
    }

    fn sent(&mut self, data: Option<usize>) {
        self.0.sent(data);
        self.1.sent(data);
    }

    fn ended(&mut self, error: Option<&BoxError>) {
        self.0.ended(error);
        self.1.ended(error);
    }
}

/// A response body observed by a [`BodyWatch`].
pub struct Watched<W> {
    inner: ResponseBody,
    watch: W,
}

impl<W: BodyWatch> Watched<W> {
    pub fn boxed(inner: ResponseBody, watch: W) -> ResponseBody {
        UnsyncBoxBody::new(Watched { inner, watch })
    }
}

impl<W: BodyWatch> Body for Watched<W> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.watch.polled();
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map(Bytes::len);
                self.watch.sent(len);
            }
            Poll::Ready(Some(Err(e))) => self.watch.ended(Some(e)),
            Poll::Ready(None) => self.watch.ended(None),
            Poll::Pending => {}
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

/// Marks the connection busy until the body is finished or dropped, and notes when it has
/// handed out data the client has not come back for.
struct Tracked {
    guard: Option<ActivityGuard>,
    sending: Option<Arc<AtomicU64>>,
}

impl BodyWatch for Tracked {
    fn polled(&mut self) {
        if let Some(s) = &self.sending {
            s.store(0, Ordering::Relaxed);
        }
    }

    fn sent(&mut self, _data: Option<usize>) {
        // Until the next poll, the client has data to take.
        if let (Some(s), Some(g)) = (&self.sending, &self.guard) {
            s.store(g.0.now_ms() + 1, Ordering::Relaxed);
        }
    }

    fn ended(&mut self, _error: Option<&BoxError>) {
        self.guard = None;
        self.sending = None;
    }
}

/// Resolves once shutdown has been signalled.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    //! The watchdog's rules on a paused clock: what it decides depends only on time and on the
    //! requests begun and ended, not on sockets.
    use super::*;
    use http_body_util::BodyExt;

    const STALL_TICK: Duration = Duration::from_millis(250);

    fn limits() -> ServerConfig {
        let mut s = crate::config::parse(
            "listen:\n  http: \"127.0.0.1:1\"\norigins:\n  - url: \"http://127.0.0.1:2\"\n",
        )
        .unwrap()
        .server;
        s.header_read_timeout = Duration::from_secs(10);
        s.idle_timeout = Duration::from_secs(60);
        s.send_timeout = Duration::from_secs(30);
        s
    }

    fn request(a: &Arc<Activity>) -> ActivityGuard {
        a.begin();
        ActivityGuard(a.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_asks_is_closed_after_the_header_timeout() {
        let l = limits();
        let a = Activity::new(Instant::now());
        assert_eq!(
            a.next_look(&l, STALL_TICK),
            a.opened + l.header_read_timeout
        );
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(matches!(a.verdict(&l, false, false), Verdict::Busy));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(matches!(a.verdict(&l, false, false), Verdict::NeverAsked));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_counts_from_the_end_of_the_last_request() {
        let l = limits();
        let a = Arc::new(Activity::new(Instant::now()));
        let r = request(&a);
        // A request in flight keeps the connection however long it takes.
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(matches!(a.verdict(&l, false, false), Verdict::Busy));
        assert_eq!(
            a.next_look(&l, STALL_TICK),
            Instant::now() + l.idle_timeout / 2
        );
        drop(r);
        let ended = Instant::now();
        assert_eq!(a.next_look(&l, STALL_TICK), ended + l.idle_timeout);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(matches!(a.verdict(&l, false, false), Verdict::Busy));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(a.verdict(&l, false, false), Verdict::Idle));
        // Closing (shutdown drain) waits for hyper, never for the idle rule.
        assert!(matches!(a.verdict(&l, false, true), Verdict::Busy));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_the_client_does_not_take_stalls_after_the_send_timeout() {
        let l = limits();
        let a = Arc::new(Activity::new(Instant::now()));
        let _r = request(&a);
        let body: ResponseBody = http_body_util::Full::new(Bytes::from(vec![0u8; 1 << 20]))
            .map_err(|never| match never {})
            .boxed_unsync();
        let slot = a.track(&body).expect("a 1 MiB body is watched");
        assert_eq!(
            a.next_look(&l, STALL_TICK),
            Instant::now() + STALL_TICK,
            "a watched body is looked at every tick"
        );
        // The body starts waiting for the client now.
        tokio::time::advance(Duration::from_secs(1)).await;
        slot.store(a.now_ms() + 1, Ordering::Relaxed);
        tokio::time::advance(l.send_timeout).await;
        assert!(matches!(a.verdict(&l, true, false), Verdict::Busy));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(matches!(a.verdict(&l, true, false), Verdict::Stalled));
        // The client took bytes: no longer waiting.
        slot.store(0, Ordering::Relaxed);
        assert!(matches!(a.verdict(&l, true, false), Verdict::Busy));
        drop(slot);
        assert!(!a.stalled(l.send_timeout), "a finished body is forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn small_bodies_are_not_watched() {
        let a = Activity::new(Instant::now());
        let body: ResponseBody = http_body_util::Full::new(Bytes::from_static(b"#EXTM3U\n"))
            .map_err(|never| match never {})
            .boxed_unsync();
        assert!(a.track(&body).is_none());
    }
}
