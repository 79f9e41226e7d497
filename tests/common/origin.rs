//! The scriptable origin: an in-process HTTP/1.1 (or HTTPS) server that answers from a script,
//! counts what it receives per path and per connection, can delay, trickle, cut or hang an
//! answer, and can be killed and restarted on the same port.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use super::{BoxError, within};

/// What the origin answers to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// Wait this long before sending the response head.
    pub delay: Duration,
    /// Send the body in chunks of this many bytes, one every `Duration`.
    pub trickle: Option<(usize, Duration)>,
    /// Announce the full body but send only this many bytes, then abort the connection.
    pub cut: Option<usize>,
    /// Never send a response head.
    pub hang: bool,
    /// Chunked transfer coding instead of Content-Length.
    pub chunked: bool,
}

impl Reply {
    pub fn ok(body: impl Into<Bytes>) -> Reply {
        Reply {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            trickle: None,
            cut: None,
            hang: false,
            chunked: false,
        }
    }

    pub fn status(mut self, status: u16) -> Reply {
        self.status = StatusCode::from_u16(status).expect("valid status");
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            HeaderValue::from_str(value).expect("valid header value"),
        ));
        self
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    /// Spreads the body over about `total`: chunks of `chunk` bytes at even intervals.
    pub fn trickle_over(self, chunk: usize, total: Duration) -> Reply {
        let n = self.body.len().div_ceil(chunk).max(1) as u32;
        self.trickle(chunk, total / n)
    }

    pub fn trickle(mut self, chunk: usize, every: Duration) -> Reply {
        self.trickle = Some((chunk.max(1), every));
        self
    }

    pub fn cut(mut self, after: usize) -> Reply {
        self.cut = Some(after);
        self
    }

    pub fn hang(mut self) -> Reply {
        self.hang = true;
        self
    }

    pub fn chunked(mut self) -> Reply {
        self.chunked = true;
        self
    }
}

/// One request as the origin received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub version: Version,
    pub headers: HeaderMap,
    /// The request body as received (empty when there was none or it could not be read).
    pub body: Bytes,
}

type Script = Arc<dyn Fn(&http::request::Parts) -> Reply + Send + Sync>;

struct OriginState {
    script: Mutex<Script>,
    total: AtomicUsize,
    per_path: Mutex<HashMap<String, usize>>,
    seen: Mutex<Vec<Seen>>,
    /// TCP connections accepted.
    connections: AtomicUsize,
    /// The SNI name of every TLS handshake (`None`: the client sent none).
    sni: Mutex<Vec<Option<String>>>,
}

/// An in-process HTTP/1.1 origin on `127.0.0.1:0` that answers from a script and counts.
/// It can be killed (port closed, connections aborted) and restarted on the same port, and
/// can serve HTTPS with a certificate from a test CA.
pub struct TestOrigin {
    pub addr: SocketAddr,
    state: Arc<OriginState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestOrigin {
    pub async fn start(
        script: impl Fn(&http::request::Parts) -> Reply + Send + Sync + 'static,
    ) -> TestOrigin {
        TestOrigin::start_inner(None, Arc::new(script)).await
    }

    /// An HTTPS origin presenting `tls`'s certificate; its URL names `localhost`.
    pub async fn start_tls(
        tls: &OriginTls,
        script: impl Fn(&http::request::Parts) -> Reply + Send + Sync + 'static,
    ) -> TestOrigin {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        TestOrigin::start_inner(Some(acceptor), Arc::new(script)).await
    }

    async fn start_inner(tls: Option<tokio_rustls::TlsAcceptor>, script: Script) -> TestOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(OriginState {
            script: Mutex::new(script),
            total: AtomicUsize::new(0),
            per_path: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            sni: Mutex::new(Vec::new()),
        });
        let mut origin = TestOrigin {
            addr,
            state,
            tls,
            stop: None,
            task: None,
        };
        origin.serve(listener);
        origin
    }

    /// Runs the accept loop on `listener` until `shutdown`.
    fn serve(&mut self, listener: TcpListener) {
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let state = self.state.clone();
        let tls = self.tls.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        state.connections.fetch_add(1, Ordering::SeqCst);
                        conns.spawn(connection(stream, state.clone(), tls.clone()));
                    }
                    // Reap finished connections so the set does not grow.
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            conns.shutdown().await;
        });
        self.stop = Some(stop_tx);
        self.task = Some(task);
    }

    /// An origin that answers every request with the same reply.
    pub async fn fixed(reply: Reply) -> TestOrigin {
        TestOrigin::start(move |_| reply.clone()).await
    }

    /// `http://127.0.0.1:port`, or `https://localhost:port` for an HTTPS origin (the name its
    /// certificate is for; the edge resolves it to loopback).
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("http://{}", self.addr),
            Some(_) => format!("https://localhost:{}", self.addr.port()),
        }
    }

    /// Replaces the script for the requests that follow.
    pub fn set_script(
        &self,
        script: impl Fn(&http::request::Parts) -> Reply + Send + Sync + 'static,
    ) {
        *self.state.script.lock().unwrap() = Arc::new(script);
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.state.total.load(Ordering::SeqCst)
    }

    /// Requests received for one path (without the query).
    pub fn count_path(&self, path: &str) -> usize {
        self.state
            .per_path
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// The SNI name of every completed TLS handshake, in order.
    pub fn sni(&self) -> Vec<Option<String>> {
        self.state.sni.lock().unwrap().clone()
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn last_request(&self) -> Seen {
        self.requests()
            .pop()
            .expect("the origin received a request")
    }

    /// Waits (bounded) until the origin has received `n` requests.
    pub async fn wait_for_count(&self, n: usize) {
        within(10, &format!("origin to receive {n} requests"), async {
            while self.count() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    /// Stops accepting and aborts every open connection (hung answers included).
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    /// Like a crashed origin process: the port is closed and every open connection aborted.
    /// The counters and the script stay, for `restart`.
    pub async fn kill(&mut self) {
        self.shutdown().await;
    }

    /// Listens again on the same port after `kill`.
    pub async fn restart(&mut self) {
        assert!(self.task.is_none(), "restart of a running origin");
        let listener = within(5, "origin port to be free again", async {
            loop {
                match TcpListener::bind(self.addr).await {
                    Ok(l) => break l,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await;
        self.serve(listener);
    }

    async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            within(10, "origin to stop", task)
                .await
                .expect("origin task");
        }
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        // A test that panicked before `stop`: do not leave the accept loop behind.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves one origin connection (after a TLS handshake for an HTTPS origin).
async fn connection(
    stream: tokio::net::TcpStream,
    state: Arc<OriginState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let service_state = state.clone();
    let service = hyper::service::service_fn(move |req| {
        let state = service_state.clone();
        async move { Ok::<_, Infallible>(answer(&state, req).await) }
    });
    let http = hyper::server::conn::http1::Builder::new();
    match tls {
        None => {
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        }
        Some(acceptor) => {
            let handshake = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream));
            let Ok(Ok(stream)) = handshake.await else {
                return;
            };
            let sni = stream.get_ref().1.server_name().map(str::to_owned);
            state.sni.lock().unwrap().push(sni);
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        }
    }
}

/// A test CA and a certificate it signed for `localhost`, for HTTPS origins.
pub struct OriginTls {
    /// The CA certificate (PEM), for `fetch.ca_file`.
    pub ca_pem: String,
    config: Arc<rustls::ServerConfig>,
}

impl OriginTls {
    pub fn localhost() -> OriginTls {
        streamedge::tls::install_provider();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "streamedge test origin CA");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca, ca_key);

        let mut leaf =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        leaf.use_authority_key_identifier_extension = true;
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf_cert = leaf
            .signed_by(&leaf_key, &issuer)
            .expect("leaf certificate");

        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf_cert.der().clone()], key)
            .expect("origin TLS config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        OriginTls {
            ca_pem: ca_cert.pem(),
            config: Arc::new(config),
        }
    }
}

async fn answer(state: &OriginState, req: http::Request<Incoming>) -> http::Response<ScriptBody> {
    let (parts, body) = req.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    state.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        version: parts.version,
        headers: parts.headers.clone(),
        body,
    });
    *state.per_path.lock().unwrap().entry(path).or_insert(0) += 1;
    state.total.fetch_add(1, Ordering::SeqCst);

    let script = state.script.lock().unwrap().clone();
    let reply = script(&parts);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if reply.hang {
        // Aborted with the connection when the origin stops (or the client goes away).
        std::future::pending::<()>().await;
    }
    let full_len = reply.body.len();
    let sent = match reply.cut {
        Some(k) => reply.body.slice(..k.min(full_len)),
        None => reply.body.clone(),
    };
    let (chunk, every) = reply.trickle.unwrap_or((usize::MAX, Duration::ZERO));
    let body = ScriptBody {
        data: sent,
        pos: 0,
        chunk,
        every,
        sleep: None,
        fail: reply.cut.is_some(),
        fail_armed: false,
    };
    let mut resp = http::Response::new(body);
    *resp.status_mut() = reply.status;
    let h = resp.headers_mut();
    for (n, v) in &reply.headers {
        h.append(n.clone(), v.clone());
    }
    let bodiless = reply.status == StatusCode::NO_CONTENT
        || reply.status == StatusCode::NOT_MODIFIED
        || reply.status.is_informational();
    if !reply.chunked && !bodiless && !h.contains_key(http::header::CONTENT_LENGTH) {
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(full_len));
    }
    resp
}

/// An origin response body: chunks paced by a timer, optionally ending in an error (which
/// makes hyper abort the connection mid-body).
struct ScriptBody {
    data: Bytes,
    pos: usize,
    chunk: usize,
    every: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    fail: bool,
    fail_armed: bool,
}

impl Body for ScriptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(s) = this.sleep.as_mut() {
            ready!(s.as_mut().poll(cx));
            this.sleep = None;
        }
        if this.pos < this.data.len() {
            let n = this.chunk.min(this.data.len() - this.pos);
            let frame = this.data.slice(this.pos..this.pos + n);
            this.pos += n;
            if !this.every.is_zero() && this.pos < this.data.len() {
                this.sleep = Some(Box::pin(tokio::time::sleep(this.every)));
            }
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if this.fail {
            if !this.fail_armed {
                // Let hyper flush what was sent before the connection is aborted.
                this.fail_armed = true;
                this.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_millis(100))));
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.fail = false;
            return Poll::Ready(Some(Err("test origin cut the body".into())));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.data.len() && !self.fail
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A port on loopback with nothing listening.
pub async fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}
