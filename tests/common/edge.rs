//! The edge under test: `streamedge::run` in this process with HTTP, HTTPS (a generated
//! certificate) and admin (with a token) listeners on loopback port 0, configured by a typed
//! `Config` through `EdgeBuilder`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use streamedge::config::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::client::base_client;
use super::{Resp, TestOrigin, get, send, within};

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

/// One edit of the typed config, applied after parsing.
type ConfigEdit<'a> = Box<dyn FnOnce(&mut Config) + Send + 'a>;

/// An edge configuration being put together: the harness's listeners and origins, then
/// optional YAML sections, then edits of the typed `Config`, in the order they were given.
///
/// ```ignore
/// let edge = TestEdge::builder(&[origin.url()])
///     .config(|c| c.cache.max_in_flight = 32 << 20)
///     .start()
///     .await;
/// ```
#[must_use = "an edge builder does nothing until `start`"]
pub struct EdgeBuilder<'a> {
    /// The body of the `origins:` list, in YAML.
    origins: String,
    /// Whole top-level YAML sections, parsed (and validated) with the rest.
    yaml: String,
    edits: Vec<ConfigEdit<'a>>,
}

impl<'a> EdgeBuilder<'a> {
    /// Appends whole top-level YAML sections such as `cache:` or `fetch:`; for settings that are
    /// clearer as YAML (lists of rules) or that need the config's own validation.
    pub fn yaml(mut self, extra: &str) -> Self {
        self.yaml.push_str(extra);
        self
    }

    /// Edits the parsed config before the edge starts (after the YAML, in call order). The
    /// edit bypasses validation: keep values the YAML would accept.
    pub fn config(mut self, edit: impl FnOnce(&mut Config) + Send + 'a) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    /// Starts the edge and returns once its listeners are bound.
    pub async fn start(self) -> TestEdge {
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
        yaml.push_str(&self.origins);
        yaml.push_str(&self.yaml);
        let mut config = match streamedge::config::parse(&yaml) {
            Ok(c) => c,
            Err(e) => panic!("test config does not parse: {e}\n{yaml}"),
        };
        for edit in self.edits {
            edit(&mut config);
        }
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
}

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
    /// An edge in front of `origins` (base URLs), to be configured and started.
    pub fn builder<'a>(origins: &[String]) -> EdgeBuilder<'a> {
        let mut section = String::new();
        for o in origins {
            section.push_str(&format!("  - url: \"{o}\"\n"));
        }
        EdgeBuilder {
            origins: section,
            yaml: String::new(),
            edits: Vec::new(),
        }
    }

    /// An edge in front of named, weighted origins: `(name, base URL, weight)`.
    pub fn fleet_builder<'a>(origins: &[(&str, String, u32)]) -> EdgeBuilder<'a> {
        let mut section = String::new();
        for (name, url, weight) in origins {
            section.push_str(&format!(
                "  - url: \"{url}\"\n    name: \"{name}\"\n    weight: {weight}\n"
            ));
        }
        EdgeBuilder {
            origins: section,
            yaml: String::new(),
            edits: Vec::new(),
        }
    }

    /// An edge in front of one origin, with defaults.
    pub async fn start(origin: &TestOrigin) -> TestEdge {
        TestEdge::builder(&[origin.url()]).start().await
    }

    /// An edge in front of `origins` (base URLs); `extra` is appended YAML with whole top-level
    /// sections such as `cache:` or `fetch:`.
    pub async fn start_with(origins: &[String], extra: &str) -> TestEdge {
        TestEdge::builder(origins).yaml(extra).start().await
    }

    /// An edge in front of named, weighted origins: `(name, base URL, weight)`, and `extra` YAML.
    pub async fn start_fleet(origins: &[(&str, String, u32)], extra: &str) -> TestEdge {
        TestEdge::fleet_builder(origins).yaml(extra).start().await
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
        self.purge_as(query, Some(ADMIN_TOKEN)).await
    }

    /// `POST /purge?{query}` on the admin listener with `token` as the bearer (or none).
    pub async fn purge_as(&self, query: &str, token: Option<&str>) -> Resp {
        let mut req = self
            .http_client()
            .post(self.admin_url(&format!("/purge?{query}")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        send(req).await
    }

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
