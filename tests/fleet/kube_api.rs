//! A stand-in for the Kubernetes API server, which these machines cannot run: just enough of
//! the list and watch protocol for `discovery.k8s.io/v1` EndpointSlices in one namespace, as
//! kube-runtime's watcher uses it — a List with a resourceVersion (labelSelector honoured,
//! `limit` ignored: one page), then `?watch=true&resourceVersion=N` answered with the events
//! after N as newline-delimited JSON, held open for the next ones; a watch from a version it
//! no longer has is answered with a 410 Gone event, as the real server does after its event
//! window has passed. Requests need the bearer token of the kubeconfig. Every request is
//! recorded.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::common::within;

/// The token the kubeconfig carries and the API requires.
pub const TOKEN: &str = "fleet-test-token";

const LABEL: &str = "kubernetes.io/service-name";

type Body = BoxBody<Bytes, Infallible>;

/// One endpoint of a slice, as JSON: an address and its `ready` condition (`None`: no
/// `conditions` at all, which the API says means ready).
pub fn endpoint(address: &str, ready: Option<bool>) -> String {
    match ready {
        Some(ready) => format!(
            r#"{{"addresses":["{address}"],"conditions":{{"ready":{ready},"serving":{ready},"terminating":false}}}}"#
        ),
        None => format!(r#"{{"addresses":["{address}"]}}"#),
    }
}

struct Slice {
    service: String,
    /// The object as JSON, its resourceVersion included.
    json: String,
}

struct Event {
    version: u64,
    service: String,
    line: String,
}

struct State {
    namespace: String,
    version: u64,
    slices: BTreeMap<String, Slice>,
    /// Events since `since`, oldest first.
    history: Vec<Event>,
    since: u64,
    /// Open watches: the Service they select (None: all) and where their events go.
    watches: Vec<(Option<String>, mpsc::UnboundedSender<Bytes>)>,
    requests: Vec<String>,
}

impl State {
    fn record(&mut self, kind: &str, name: &str, service: &str, json: String) {
        let line = format!(r#"{{"type":"{kind}","object":{json}}}"#) + "\n";
        self.watches.retain(|(selector, tx)| {
            selector.as_deref().is_some_and(|s| s != service)
                || tx.send(Bytes::from(line.clone())).is_ok()
        });
        self.history.push(Event {
            version: self.version,
            service: service.to_owned(),
            line,
        });
        if kind == "DELETED" {
            self.slices.remove(name);
        } else {
            let slice = Slice {
                service: service.to_owned(),
                json,
            };
            self.slices.insert(name.to_owned(), slice);
        }
    }
}

/// The fake API server on 127.0.0.1.
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeApi {
    pub async fn start(namespace: &str) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut api = FakeApi {
            state: Arc::new(Mutex::new(State {
                namespace: namespace.to_owned(),
                version: 100,
                slices: BTreeMap::new(),
                history: Vec::new(),
                since: 100,
                watches: Vec::new(),
                requests: Vec::new(),
            })),
            addr: listener.local_addr().expect("addr"),
            stop: None,
            task: None,
        };
        api.serve(listener);
        api
    }

    /// A kubeconfig that points at this server over plain HTTP, with its namespace as the
    /// context's.
    pub fn kubeconfig(&self) -> String {
        let ns = &self.state.lock().unwrap().namespace;
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {ns}\n\
             current-context: fake\nusers:\n- name: fake\n  user:\n    token: {TOKEN}\n",
            self.addr
        )
    }

    /// Adds or replaces the EndpointSlice `name` of `service`: these endpoints, and the ports
    /// `metrics` (9090) and then `http` (`port`).
    pub fn apply(&self, name: &str, service: &str, endpoints: &[String], port: u16) {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        let json = format!(
            r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{{"name":"{name}","namespace":"{ns}","resourceVersion":"{v}","labels":{{"{LABEL}":"{service}"}}}},"addressType":"IPv4","endpoints":[{eps}],"ports":[{{"name":"metrics","port":9090,"protocol":"TCP"}},{{"name":"http","port":{port},"protocol":"TCP"}}]}}"#,
            ns = s.namespace,
            v = s.version,
            eps = endpoints.join(","),
        );
        let kind = if s.slices.contains_key(name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.record(kind, name, service, json);
    }

    /// Deletes the EndpointSlice `name`.
    pub fn delete(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        let slice = s.slices.get(name).expect("a slice to delete");
        let service = slice.service.clone();
        let old = slice.json.clone();
        s.version += 1;
        // A deleted object carries the version of its deletion.
        let at = old.find(r#""resourceVersion":""#).expect("version") + 19;
        let end = at + old[at..].find('"').expect("version end");
        let json = format!("{}{}{}", &old[..at], s.version, &old[end..]);
        s.record("DELETED", name, &service, json);
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Like an API server going away: the port closes and every open watch is cut.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            within(10, "the fake API to stop", task)
                .await
                .expect("fake API task");
        }
        self.state.lock().unwrap().watches.clear();
    }

    /// Serves again on the same port, with the same slices but none of the past events: a
    /// watch from before now is answered 410 Gone, so the client has to list again.
    pub async fn restart(&mut self) {
        assert!(self.task.is_none(), "restart of a running fake API");
        {
            let mut s = self.state.lock().unwrap();
            s.history.clear();
            s.since = s.version;
        }
        let addr = self.addr;
        let listener = within(5, "the fake API's port to be free again", async move {
            loop {
                match TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await;
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let state = self.state.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        conns.spawn(connection(stream, state.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            // Watches never end by themselves: cut them.
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        });
        self.stop = Some(stop_tx);
        self.task = Some(task);
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn connection(stream: tokio::net::TcpStream, state: Arc<Mutex<State>>) {
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(answer(&state, &req)) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn answer(
    state: &Mutex<State>,
    req: &hyper::Request<hyper::body::Incoming>,
) -> http::Response<Body> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut s = state.lock().unwrap();
    s.requests.push(format!("{} {target}", req.method()));
    let authorized = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == format!("Bearer {TOKEN}").as_bytes());
    if !authorized {
        return status(401, "Unauthorized", "no valid bearer token");
    }
    let collection = format!(
        "/apis/discovery.k8s.io/v1/namespaces/{}/endpointslices",
        s.namespace
    );
    if req.method() != http::Method::GET || req.uri().path() != collection {
        return status(404, "NotFound", "the fake API serves EndpointSlices only");
    }
    let url = reqwest::Url::parse(&format!("http://api{target}")).expect("request target");
    let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    let selector = match query.get("labelSelector") {
        None => None,
        Some(sel) => match sel.strip_prefix(&format!("{LABEL}=")) {
            Some(service) => Some(service.to_owned()),
            None => return status(400, "BadRequest", "unsupported label selector"),
        },
    };
    let selected = |service: &str| selector.as_deref().is_none_or(|s| s == service);
    if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
        let from = query
            .get("resourceVersion")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        return watch(&mut s, selector.clone(), from);
    }
    let items: Vec<&str> = s
        .slices
        .values()
        .filter(|slice| selected(&slice.service))
        .map(|slice| slice.json.as_str())
        .collect();
    let list = format!(
        r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSliceList","metadata":{{"resourceVersion":"{}"}},"items":[{}]}}"#,
        s.version,
        items.join(",")
    );
    json(200, list)
}

/// A watch from version `from`: the events after it, then each new one as it happens.
fn watch(s: &mut State, selector: Option<String>, from: u64) -> http::Response<Body> {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    if from < s.since {
        let gone = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version","reason":"Expired","code":410}}"#;
        let _ = tx.send(Bytes::from(format!("{gone}\n")));
        drop(tx);
    } else {
        for e in s.history.iter().filter(|e| e.version > from) {
            if selector.as_deref().is_none_or(|sel| sel == e.service) {
                let _ = tx.send(Bytes::from(e.line.clone()));
            }
        }
        s.watches.push((selector, tx));
    }
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(line)), rx))
    });
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(StreamBody::new(events).boxed())
        .expect("watch response")
}

fn json(code: u16, body: String) -> http::Response<Body> {
    http::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("response")
}

fn status(code: u16, reason: &str, message: &str) -> http::Response<Body> {
    json(
        code,
        format!(
            r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"{message}","reason":"{reason}","code":{code}}}"#
        ),
    )
}
