//! Origins: one pooled HTTP client, ring-ordered origin choice with health and failover, and
//! fetches bounded by connect, first-byte and idle timeouts.

pub(crate) mod health;
pub mod ring;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Method;
use http::header::{self, HeaderMap, HeaderValue};
use tokio::time::Instant;

use crate::cache::CacheKey;
use crate::config::{Config, FetchConfig, HealthCheckConfig, HostHeader};
use crate::error::{EdgeError, TimeoutPhase};
use crate::metrics::Side;
use health::{Health, Transition};
use ring::OriginRing;

/// One configured origin, or a peer node of the fleet (an upstream like an origin, with the
/// same health, timeouts and resends).
pub(crate) struct Origin {
    pub name: Arc<str>,
    pub base: reqwest::Url,
    /// `host[:port]` of the base URL, for the Host header.
    pub authority: HeaderValue,
    pub health: Health,
    pub side: Side,
}

impl Origin {
    fn new(side: Side, name: &str, base: reqwest::Url, health: Health) -> Origin {
        let authority = match base.port() {
            Some(p) => format!("{}:{p}", base.host_str().unwrap_or_default()),
            None => base.host_str().unwrap_or_default().to_owned(),
        };
        Origin {
            name: name.into(),
            authority: HeaderValue::from_str(&authority)
                .unwrap_or(HeaderValue::from_static("localhost")),
            base,
            health,
            side,
        }
    }

    /// A peer node, named by its member identity (`scheme://host:port`). Without active
    /// probes, a fallen peer gets a trial request after `cooldown`.
    pub fn peer(id: &str, fall: u32, cooldown: Duration, probes: bool) -> Origin {
        let base = reqwest::Url::parse(id).unwrap_or_else(|_| {
            reqwest::Url::parse("http://invalid.invalid").expect("a valid URL")
        });
        let health = Health::new(Side::Peer, id, 1, fall, probes, cooldown);
        Origin::new(Side::Peer, id, base, health)
    }

    /// The request target (path and query) a key is asked for, as it goes on the wire.
    pub fn target_for(&self, key: &CacheKey) -> Result<String, EdgeError> {
        let url = self.url_for(key)?;
        Ok(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        })
    }

    /// The origin URL of a cache key: the base URL's path prefix joined with the key.
    fn url_for(&self, key: &CacheKey) -> Result<reqwest::Url, EdgeError> {
        let prefix = self.base.path().trim_end_matches('/');
        let mut s = String::with_capacity(self.base.as_str().len() + key.as_str().len());
        s.push_str(self.base.scheme());
        s.push_str("://");
        s.push_str(self.base.host_str().unwrap_or_default());
        if let Some(port) = self.base.port() {
            s.push(':');
            s.push_str(&port.to_string());
        }
        s.push_str(prefix);
        s.push_str(key.as_str());
        reqwest::Url::parse(&s).map_err(|e| EdgeError::BadRequest(format!("bad target: {e}")))
    }
}

/// A request to send to the origin that owns a key.
pub(crate) struct OriginRequest {
    pub key: CacheKey,
    pub method: Method,
    /// End-to-end request headers to forward (already filtered).
    pub headers: HeaderMap,
    /// How long to wait for the response head.
    pub first_byte_timeout: Duration,
    /// A request body (forwarded unsafe methods).
    pub body: Option<Bytes>,
    /// Whether another origin may be tried after a failure (not for non-idempotent methods).
    pub retry: bool,
}

/// An origin response whose head has arrived.
pub(crate) struct OriginResponse {
    pub origin: Arc<Origin>,
    pub response: reqwest::Response,
    pub request_time: SystemTime,
    pub response_time: SystemTime,
    pub received_at: Instant,
    pub idle_timeout: Duration,
    started: Instant,
}

impl OriginResponse {
    /// The next body chunk, bounded by the idle timeout. `Ok(None)` at the end of the body.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, EdgeError> {
        match tokio::time::timeout(self.idle_timeout, self.response.chunk()).await {
            Err(_) => Err(EdgeError::OriginTimeout {
                origin: self.origin.name.to_string(),
                phase: TimeoutPhase::Idle,
                after: self.idle_timeout,
            }),
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(EdgeError::OriginProtocol {
                origin: self.origin.name.to_string(),
                detail: error_chain(&e),
            }),
        }
    }

    /// Records the end of the exchange for health and metrics.
    pub fn finished(&self, ok: bool) {
        crate::metrics::origin_fetch_done(
            self.origin.side,
            &self.origin.name,
            ok,
            self.started.elapsed(),
        );
    }
}

/// Why the origin client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("fetch.ca_file {}: {source}", path.display())]
    ReadCa {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("fetch.ca_file {}: {source}", path.display())]
    ParseCa {
        path: std::path::PathBuf,
        source: reqwest::Error,
    },
    #[error("fetch.ca_file {}: no certificates", .0.display())]
    NoCa(std::path::PathBuf),
    #[error("origin client: {}", error_chain(.0))]
    Client(#[source] reqwest::Error),
}

/// How an origin exchange failed, for health and for a resend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// No connection could be made (refused, connect or TLS timeout, TLS error): the origin
    /// itself is unwell. Counts toward ejection.
    Connect,
    /// The connection closed or was reset before any response byte. On a pooled connection
    /// this is usually the origin closing it while idle, just as the request went out (the
    /// keep-alive race): sent again once on a new connection. Not held against the origin even
    /// then: an origin may close on one URL on purpose (nginx's `return 444`).
    Closed,
    /// The answer was malformed, or late: the problem of this URL, not of the origin.
    Answer,
}

/// The origin fleet.
pub(crate) struct Upstream {
    client: reqwest::Client,
    /// Same settings without a connection pool: every request on a new connection (resends).
    fresh: reqwest::Client,
    origins: Vec<Arc<Origin>>,
    ring: OriginRing,
    fetch: FetchConfig,
    health_check: Option<HealthCheckConfig>,
    connections: Arc<AtomicU64>,
    /// Fetches and health probes sent: with `connections`, the new / reused split.
    requests: Arc<AtomicU64>,
}

impl Upstream {
    pub fn new(config: &Config) -> Result<Upstream, UpstreamError> {
        let fetch = config.fetch.clone();
        let connections = Arc::new(AtomicU64::new(0));
        let ca = match &fetch.ca_file {
            None => None,
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|source| UpstreamError::ReadCa {
                    path: ca.clone(),
                    source,
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                    UpstreamError::ParseCa {
                        path: ca.clone(),
                        source,
                    }
                })?;
                if certs.is_empty() {
                    return Err(UpstreamError::NoCa(ca.clone()));
                }
                Some(certs)
            }
        };
        let build = |idle_per_host: usize| {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(fetch.connect_timeout)
                .pool_idle_timeout(fetch.pool_idle_timeout)
                .pool_max_idle_per_host(idle_per_host)
                .tcp_nodelay(true)
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .retry(reqwest::retry::never())
                .connector_layer(CountConnections(connections.clone()));
            if let Some(certs) = &ca {
                builder = builder.tls_certs_only(certs.clone());
            }
            builder.build().map_err(UpstreamError::Client)
        };
        let client = build(fetch.pool_max_idle_per_host)?;
        let fresh = build(0)?;

        let (rise, fall, active) = match &config.health_check {
            Some(h) => (h.rise, h.fall, true),
            None => (1, fetch.passive_fall, false),
        };
        let origins: Vec<Arc<Origin>> = config
            .origins
            .iter()
            .map(|o| {
                let health = Health::new(
                    Side::Origin,
                    &o.name,
                    rise,
                    fall,
                    active,
                    fetch.passive_cooldown,
                );
                Arc::new(Origin::new(Side::Origin, &o.name, o.url.clone(), health))
            })
            .collect();
        let ring = OriginRing::new(config.origins.iter().map(|o| (o.name.as_str(), o.weight)));
        Ok(Upstream {
            client,
            fresh,
            origins,
            ring,
            fetch,
            health_check: config.health_check.clone(),
            connections,
            requests: Arc::new(AtomicU64::new(0)),
        })
    }

    /// New TCP connections opened to origins so far.
    pub fn connections_opened(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests sent to origins so far, health probes included (they share the pool).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The pooled client, for requests of the fleet's own (peer probes, purges).
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// Sends the request to a peer, the owner of its key: once, twice when a pooled
    /// connection closed first; never to another node. The caller goes to the origin when
    /// this fails.
    pub async fn fetch_peer(
        &self,
        peer: &Arc<Origin>,
        req: &OriginRequest,
    ) -> Result<OriginResponse, EdgeError> {
        let Some(_admitted) = peer.health.admit() else {
            return Err(EdgeError::NoHealthyOrigin {
                key: req.key.to_string(),
            });
        };
        let resp = self.attempt(peer, req).await;
        match &resp {
            Ok(_) => peer.health.success(false),
            Err(e) => {
                crate::metrics::origin_error(peer.side, &peer.name, e.cache_status_detail());
                Transition::None
            }
        };
        resp
    }

    /// The configured origins, in configuration order.
    pub fn origins(&self) -> &[Arc<Origin>] {
        &self.origins
    }

    pub fn any_up(&self) -> bool {
        self.origins.iter().any(|o| o.health.is_up())
    }

    /// Sends the request to the owner of its key, failing over in ring order to healthy origins
    /// while nothing has been received, within `max_attempts`. When health admits no origin at
    /// all, they are tried anyway (see [`health`]).
    pub async fn fetch(&self, req: &OriginRequest) -> Result<OriginResponse, EdgeError> {
        let candidates: Vec<usize> = self.ring.candidates(req.key.as_str()).collect();
        let mut attempts = 0;
        let mut last_err: Option<EdgeError> = None;
        for all_down in [false, true] {
            if all_down && attempts > 0 {
                break;
            }
            for (pos, &i) in candidates.iter().enumerate() {
                if attempts >= self.fetch.max_attempts {
                    break;
                }
                let origin = &self.origins[i];
                // Held until this attempt ends: a cool-down trial that ends without a verdict
                // (cancelled with its request) is handed back.
                let _admitted = if all_down {
                    if !origin.health.admit_anyway() {
                        continue;
                    }
                    crate::metrics::origin_all_down(origin.side, &origin.name);
                    None
                } else {
                    match origin.health.admit() {
                        Some(a) => Some(a),
                        None => continue,
                    }
                };
                attempts += 1;
                let more_left = req.retry
                    && attempts < self.fetch.max_attempts
                    && candidates[pos + 1..].iter().any(|&j| {
                        let h = &self.origins[j].health;
                        if all_down {
                            h.could_admit_anyway()
                        } else {
                            h.could_admit()
                        }
                    });
                match self.attempt(origin, req).await {
                    Ok(resp) => {
                        let status = resp.response.status().as_u16();
                        if self.fetch.passive_statuses.contains(&status) {
                            origin.health.failure("status");
                        } else {
                            origin.health.success(false);
                        }
                        if self.fetch.retry_statuses.contains(&status) {
                            resp.finished(false);
                            if more_left {
                                tracing::debug!(origin = %origin.name, status, key = %req.key, "retrying on next origin");
                                crate::metrics::origin_retry(origin.side, &origin.name);
                                continue;
                            }
                        }
                        return Ok(resp);
                    }
                    Err(e) => {
                        crate::metrics::origin_error(
                            origin.side,
                            &origin.name,
                            e.cache_status_detail(),
                        );
                        let retry = e.is_retryable() && more_left;
                        tracing::debug!(origin = %origin.name, error = %e, retry, "origin fetch failed");
                        if !retry {
                            return Err(e);
                        }
                        crate::metrics::origin_retry(origin.side, &origin.name);
                        last_err = Some(e);
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| EdgeError::NoHealthyOrigin {
            key: req.key.to_string(),
        }))
    }

    /// One origin, once — twice when a pooled connection closed before the answer began: the
    /// second time on a new connection (safe methods only). Health hears only of what says the
    /// origin itself is unwell: a connection that could not be made.
    async fn attempt(
        &self,
        origin: &Arc<Origin>,
        req: &OriginRequest,
    ) -> Result<OriginResponse, EdgeError> {
        let (e, failure) = match self.fetch_from(&self.client, origin, req).await {
            Ok(r) => return Ok(r),
            Err(f) => f,
        };
        let (e, failure) = if failure == Failure::Closed && req.method.is_safe() {
            tracing::debug!(origin = %origin.name, error = %e, key = %req.key, "sending again on a new connection");
            crate::metrics::origin_resend(origin.side, &origin.name);
            match self.fetch_from(&self.fresh, origin, req).await {
                Ok(r) => return Ok(r),
                Err(f) => f,
            }
        } else {
            (e, failure)
        };
        if failure == Failure::Connect {
            origin.health.failure(e.cache_status_detail());
        }
        Err(e)
    }

    async fn fetch_from(
        &self,
        client: &reqwest::Client,
        origin: &Arc<Origin>,
        req: &OriginRequest,
    ) -> Result<OriginResponse, (EdgeError, Failure)> {
        let url = origin.url_for(&req.key).map_err(|e| (e, Failure::Answer))?;
        let mut headers = req.headers.clone();
        // The client's (canonical) host is in the key exactly when origins see it.
        let client_host = match self.fetch.host_header {
            HostHeader::Client => req.key.host().and_then(|h| HeaderValue::from_str(h).ok()),
            HostHeader::Origin => None,
        };
        let host = client_host.unwrap_or_else(|| origin.authority.clone());
        headers.insert(header::HOST, host);
        let mut builder = client.request(req.method.clone(), url).headers(headers);
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let request = builder.build().map_err(|e| {
            (
                EdgeError::Internal(format!("building origin request: {e}")),
                Failure::Answer,
            )
        })?;
        crate::metrics::origin_request(origin.side, &origin.name);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let request_time = SystemTime::now();
        let started = Instant::now();
        let name = || origin.name.to_string();
        let first_byte = |after| EdgeError::OriginTimeout {
            origin: name(),
            phase: TimeoutPhase::FirstByte,
            after,
        };
        let response =
            match tokio::time::timeout(req.first_byte_timeout, client.execute(request)).await {
                Err(_) => return Err((first_byte(req.first_byte_timeout), Failure::Answer)),
                Ok(Err(e)) if e.is_timeout() && e.is_connect() => {
                    return Err((
                        EdgeError::OriginTimeout {
                            origin: name(),
                            phase: TimeoutPhase::Connect,
                            after: self.fetch.connect_timeout,
                        },
                        Failure::Connect,
                    ));
                }
                Ok(Err(e)) if e.is_timeout() => {
                    return Err((first_byte(req.first_byte_timeout), Failure::Answer));
                }
                Ok(Err(e)) => {
                    let failure = classify(&e);
                    let detail = error_chain(&e);
                    let err = match failure {
                        Failure::Answer => EdgeError::OriginProtocol {
                            origin: name(),
                            detail,
                        },
                        _ => EdgeError::OriginUnreachable {
                            origin: name(),
                            detail,
                        },
                    };
                    return Err((err, failure));
                }
                Ok(Ok(r)) => r,
            };
        Ok(OriginResponse {
            origin: origin.clone(),
            response,
            request_time,
            response_time: SystemTime::now(),
            received_at: Instant::now(),
            idle_timeout: self.fetch.idle_timeout,
            started,
        })
    }

    /// Runs the active health probes until the returned handles are aborted.
    pub fn spawn_probes(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(hc) = self.health_check.clone() else {
            return Vec::new();
        };
        self.origins
            .iter()
            .map(|origin| {
                let origin = origin.clone();
                let client = self.client.clone();
                let requests = self.requests.clone();
                let hc = hc.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(hc.interval);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        requests.fetch_add(1, Ordering::Relaxed);
                        probe(&client, &origin, &hc).await;
                    }
                })
            })
            .collect()
    }
}

async fn probe(client: &reqwest::Client, origin: &Origin, hc: &HealthCheckConfig) {
    let mut url = origin.base.clone();
    let prefix = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{prefix}{}", hc.path));
    let result = tokio::time::timeout(
        hc.timeout,
        client
            .get(url)
            .header(header::HOST, origin.authority.clone())
            .header(header::USER_AGENT, "streamedge-health")
            .send(),
    )
    .await;
    let outcome = match result {
        Err(_) => Err("timeout".to_owned()),
        Ok(Err(e)) => Err(error_chain(&e)),
        Ok(Ok(r)) if hc.expect_status.contains(&r.status().as_u16()) => Ok(()),
        Ok(Ok(r)) => Err(format!("status {}", r.status().as_u16())),
    };
    crate::metrics::health_probe(origin.side, &origin.name, outcome.is_ok());
    match outcome {
        Ok(()) => {
            origin.health.success(true);
        }
        Err(reason) => {
            tracing::debug!(origin = %origin.name, reason, "health probe failed");
            origin.health.failure("probe");
        }
    }
}

/// What a failed exchange says: about the connection, the origin, or the answer.
fn classify(e: &reqwest::Error) -> Failure {
    if e.is_connect() {
        return Failure::Connect;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = src {
        if let Some(h) = cause.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_too_large() || h.is_parse_status() || h.is_user() {
                return Failure::Answer;
            }
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return Failure::Closed;
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return Failure::Closed;
        }
        src = cause.source();
    }
    Failure::Answer
}

/// The error and its causes on one line (reqwest's top-level message alone says little).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// Counts new origin connections: every call of the connector opens one.
#[derive(Clone)]
struct CountConnections(Arc<AtomicU64>);

impl<S> tower_layer::Layer<S> for CountConnections {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            count: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct Counted<S> {
    inner: S,
    count: Arc<AtomicU64>,
}

impl<S, R> tower_service::Service<R> for Counted<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.inner.call(req)
    }
}
