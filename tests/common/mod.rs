//! Test harness: a real edge on loopback ports, scriptable in-process origins that count what
//! they receive, and clients (HTTPS h2/h1 trusting a generated certificate, plain HTTP).
//!
//! Everything a test starts it stops: origins abort their connection tasks on `stop`, edges
//! drain and end their `run` task on `stop`, and every wait is bounded by a timeout.

#![allow(dead_code)]

pub mod process;
#[allow(unused_imports)]
pub use process::EdgeProcess;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bounds a wait; panics with `what` when it takes longer than `secs` seconds.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s: {what}"),
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a shifted, truncated or mixed-up body
/// never compares equal by accident.
pub fn payload(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

// ---------------------------------------------------------------------------------------------
// The scriptable origin.

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

// ---------------------------------------------------------------------------------------------
// The edge.

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "streamedge-{tag}-{}-{}-{nanos}",
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The admin token of every `TestEdge` (purge).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123";

/// A running edge: HTTP, HTTPS and admin listeners on loopback port 0.
pub struct TestEdge {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    cert_der: Vec<u8>,
    _dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), streamedge::StartError>>>,
}

impl TestEdge {
    /// An edge in front of one origin, with defaults.
    pub async fn start(origin: &TestOrigin) -> TestEdge {
        TestEdge::start_with(&[origin.url()], "").await
    }

    /// An edge in front of `origins` (base URLs); `extra` is appended YAML with whole top-level
    /// sections such as `cache:` or `fetch:`.
    pub async fn start_with(origins: &[String], extra: &str) -> TestEdge {
        let mut section = String::new();
        for o in origins {
            section.push_str(&format!("  - url: \"{o}\"\n"));
        }
        TestEdge::start_origins_yaml(&section, extra).await
    }

    /// An edge in front of named, weighted origins: `(name, base URL, weight)`.
    pub async fn start_fleet(origins: &[(&str, String, u32)], extra: &str) -> TestEdge {
        let mut section = String::new();
        for (name, url, weight) in origins {
            section.push_str(&format!(
                "  - url: \"{url}\"\n    name: \"{name}\"\n    weight: {weight}\n"
            ));
        }
        TestEdge::start_origins_yaml(&section, extra).await
    }

    /// `origins` is the body of the `origins:` list, in YAML.
    async fn start_origins_yaml(origins: &str, extra: &str) -> TestEdge {
        streamedge::tls::install_provider();
        let dir = TempDir::new("edge");
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("generate certificate");
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, generated.cert.pem()).expect("write cert");
        std::fs::write(&key_path, generated.signing_key.serialize_pem()).expect("write key");
        let cert_der = generated.cert.der().to_vec();

        let mut yaml = format!(
            "listen:\n  http: \"127.0.0.1:0\"\n  https: \"127.0.0.1:0\"\n\
             tls:\n  cert: \"{}\"\n  key: \"{}\"\n\
             admin:\n  listen: \"127.0.0.1:0\"\n  token: \"{ADMIN_TOKEN}\"\n\
             origins:\n",
            cert_path.display(),
            key_path.display()
        );
        yaml.push_str(origins);
        yaml.push_str(extra);
        let config = match streamedge::config::parse(&yaml) {
            Ok(c) => c,
            Err(e) => panic!("test config does not parse: {e}\n{yaml}"),
        };
        let listeners = streamedge::Listeners::bind(&config)
            .await
            .expect("bind edge listeners");
        let addrs = listeners.addrs();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(streamedge::run(listeners, config, async move {
            let _ = stop_rx.await;
        }));
        TestEdge {
            http: addrs.http.expect("http listener"),
            https: addrs.https.expect("https listener"),
            admin: addrs.admin.expect("admin listener"),
            cert_der,
            _dir: dir,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https.port())
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The edge's self-signed certificate (DER), for clients built by hand (raw TLS, `h2`).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The edge's certificate as a PEM file, for clients outside the process (`ffmpeg -ca_file`).
    pub fn cert_pem_path(&self) -> PathBuf {
        self._dir.path().join("cert.pem")
    }

    fn tls_client(&self) -> reqwest::ClientBuilder {
        streamedge::tls::install_provider();
        let cert = reqwest::Certificate::from_der(&self.cert_der).expect("certificate");
        base_client()
            .tls_certs_only([cert])
            .resolve("localhost", self.https)
    }

    /// HTTPS, HTTP/2 or HTTP/1.1 by ALPN (the server picks h2).
    pub fn https_client(&self) -> reqwest::Client {
        self.tls_client().build().expect("https client")
    }

    /// HTTPS offering only h2 in ALPN, so concurrent requests share one connection.
    pub fn h2_client(&self) -> reqwest::Client {
        self.tls_client()
            .http2_prior_knowledge()
            .build()
            .expect("h2 client")
    }

    /// HTTPS forced to HTTP/1.1.
    pub fn https_h1_client(&self) -> reqwest::Client {
        self.tls_client().http1_only().build().expect("h1 client")
    }

    /// Plain HTTP/1.1 (for the `http_url`s and the admin listener).
    pub fn http_client(&self) -> reqwest::Client {
        streamedge::tls::install_provider();
        base_client().http1_only().build().expect("http client")
    }

    /// `POST /purge?{query}` on the admin listener, with the admin token.
    pub async fn purge(&self, query: &str) -> Resp {
        send(
            self.http_client()
                .post(self.admin_url(&format!("/purge?{query}")))
                .bearer_auth(ADMIN_TOKEN),
        )
        .await
    }

    /// `/metrics` of the admin listener.
    pub async fn metrics(&self) -> String {
        let r = get(&self.http_client(), &self.admin_url("/metrics")).await;
        assert_eq!(r.status, StatusCode::OK);
        String::from_utf8(r.body.to_vec()).expect("metrics are text")
    }

    /// `streamedge_origin_up` of one origin (by name), if the edge reports it.
    pub async fn origin_up(&self, name: &str) -> Option<f64> {
        let text = self.metrics().await;
        let label = format!("origin=\"{name}\"");
        text.lines()
            .filter(|l| l.starts_with("streamedge_origin_up{") && l.contains(&label))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Waits (bounded) until `/metrics` reports the origin up (`true`) or down.
    pub async fn wait_origin_up(&self, name: &str, up: bool, secs: u64) {
        let want = if up { 1.0 } else { 0.0 };
        within(
            secs,
            &format!("origin {name} to be reported up={up}"),
            async {
                while self.origin_up(name).await != Some(want) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        )
        .await;
    }

    /// Signals shutdown without waiting (the edge drains requests in flight).
    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits (bounded) for `run` to return.
    pub async fn stop(mut self) {
        self.begin_stop();
        if let Some(task) = self.task.take() {
            within(40, "edge to stop", task)
                .await
                .expect("edge task")
                .expect("edge run");
        }
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn base_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
}

// ---------------------------------------------------------------------------------------------
// Requests and assertions.

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

/// A port on loopback with nothing listening.
pub async fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
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
