//! Origins: one pooled HTTP client, ring-ordered origin choice with health and failover, and
//! fetches bounded by connect, first-byte and idle timeouts.

pub mod health;
pub mod ring;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use tokio::time::Instant;

use crate::cache::CacheKey;
use crate::config::{Config, FetchConfig, HealthCheckConfig, HostHeader};
use crate::error::{EdgeError, TimeoutPhase};
use health::Health;
use ring::OriginRing;

/// One configured origin.
pub struct Origin {
    pub name: Arc<str>,
    pub base: reqwest::Url,
    /// `host[:port]` of the base URL, for the Host header.
    pub authority: HeaderValue,
    pub health: Health,
}

impl Origin {
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
pub struct OriginRequest {
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
pub struct OriginResponse {
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
        crate::metrics::origin_fetch_done(&self.origin.name, ok, self.started.elapsed());
    }
}

/// The origin fleet.
pub struct Upstream {
    client: reqwest::Client,
    origins: Vec<Arc<Origin>>,
    ring: OriginRing,
    fetch: FetchConfig,
    health_check: Option<HealthCheckConfig>,
    connections: Arc<AtomicU64>,
    /// Fetches and health probes sent: with `connections`, the new / reused split.
    requests: Arc<AtomicU64>,
}

impl Upstream {
    pub fn new(config: &Config) -> Result<Upstream, String> {
        let fetch = config.fetch.clone();
        let connections = Arc::new(AtomicU64::new(0));
        let mut builder = reqwest::Client::builder()
            .connect_timeout(fetch.connect_timeout)
            .pool_idle_timeout(fetch.pool_idle_timeout)
            .pool_max_idle_per_host(fetch.pool_max_idle_per_host)
            .tcp_nodelay(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .connector_layer(CountConnections(connections.clone()));
        if let Some(ca) = &fetch.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| format!("fetch.ca_file {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("fetch.ca_file {}: {e}", ca.display()))?;
            if certs.is_empty() {
                return Err(format!("fetch.ca_file {}: no certificates", ca.display()));
            }
            builder = builder.tls_certs_only(certs);
        }
        let client = builder
            .build()
            .map_err(|e| format!("origin client: {}", error_chain(&e)))?;

        let (rise, fall, active) = match &config.health_check {
            Some(h) => (h.rise, h.fall, true),
            None => (1, fetch.passive_fall, false),
        };
        let origins: Vec<Arc<Origin>> = config
            .origins
            .iter()
            .map(|o| {
                let authority = match o.url.port() {
                    Some(p) => format!("{}:{p}", o.url.host_str().unwrap_or_default()),
                    None => o.url.host_str().unwrap_or_default().to_owned(),
                };
                Arc::new(Origin {
                    name: o.name.as_str().into(),
                    base: o.url.clone(),
                    authority: HeaderValue::from_str(&authority)
                        .unwrap_or(HeaderValue::from_static("localhost")),
                    health: Health::new(&o.name, rise, fall, active, fetch.passive_cooldown),
                })
            })
            .collect();
        let ring = OriginRing::new(config.origins.iter().map(|o| (o.name.as_str(), o.weight)));
        Ok(Upstream {
            client,
            origins,
            ring,
            fetch,
            health_check: config.health_check.clone(),
            connections,
            requests: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn origins(&self) -> &[Arc<Origin>] {
        &self.origins
    }

    /// New TCP connections opened to origins so far.
    pub fn connections_opened(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests sent to origins so far, health probes included (they share the pool).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn any_up(&self) -> bool {
        self.origins.iter().any(|o| o.health.is_up())
    }

    /// The name of the origin that owns a key (for logs and tests).
    pub fn owner(&self, key: &CacheKey) -> Option<&str> {
        self.ring
            .owner(key.as_str())
            .map(|i| &*self.origins[i].name)
    }

    /// Sends the request to the owner of its key, failing over in ring order to healthy origins
    /// while nothing has been received, within `max_attempts`.
    pub async fn fetch(&self, req: &OriginRequest) -> Result<OriginResponse, EdgeError> {
        let mut attempts = 0;
        let mut last_err: Option<EdgeError> = None;
        let mut tried_any = false;
        let candidates: Vec<usize> = self.ring.candidates(req.key.as_str()).collect();
        for (pos, &i) in candidates.iter().enumerate() {
            if attempts >= self.fetch.max_attempts {
                break;
            }
            let origin = &self.origins[i];
            // Held until this attempt ends: a cool-down trial that ends without a verdict
            // (cancelled with its request) is handed back.
            let Some(_admitted) = origin.health.admit() else {
                continue;
            };
            tried_any = true;
            attempts += 1;
            let more_left = req.retry
                && attempts < self.fetch.max_attempts
                && candidates[pos + 1..]
                    .iter()
                    .any(|&j| self.origins[j].health.could_admit());
            match self.fetch_from(origin, req).await {
                Ok(resp) => {
                    let status = resp.response.status().as_u16();
                    if self.fetch.retry_statuses.contains(&status) {
                        origin.health.failure("status");
                        resp.finished(false);
                        if more_left {
                            tracing::debug!(origin = %origin.name, status, key = %req.key, "retrying on next origin");
                            crate::metrics::origin_retry(&origin.name);
                            continue;
                        }
                    } else {
                        origin.health.success(false);
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    crate::metrics::origin_error(&origin.name, e.cache_status_detail());
                    if e.is_retryable() {
                        origin.health.failure(e.cache_status_detail());
                    }
                    let retry = e.is_retryable() && more_left;
                    tracing::debug!(origin = %origin.name, error = %e, retry, "origin fetch failed");
                    if !retry {
                        return Err(e);
                    }
                    crate::metrics::origin_retry(&origin.name);
                    last_err = Some(e);
                }
            }
        }
        Err(match last_err {
            Some(e) if tried_any => e,
            _ => EdgeError::NoHealthyOrigin {
                key: req.key.to_string(),
            },
        })
    }

    async fn fetch_from(
        &self,
        origin: &Arc<Origin>,
        req: &OriginRequest,
    ) -> Result<OriginResponse, EdgeError> {
        let url = origin.url_for(&req.key)?;
        let mut headers = req.headers.clone();
        // The client's (canonical) host is in the key exactly when origins see it.
        let client_host = match self.fetch.host_header {
            HostHeader::Client => req.key.host().and_then(|h| HeaderValue::from_str(h).ok()),
            HostHeader::Origin => None,
        };
        let host = client_host.unwrap_or_else(|| origin.authority.clone());
        headers.insert(header::HOST, host);
        let mut builder = self
            .client
            .request(req.method.clone(), url)
            .headers(headers);
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let request = builder
            .build()
            .map_err(|e| EdgeError::Internal(format!("building origin request: {e}")))?;
        crate::metrics::origin_request(&origin.name);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let request_time = SystemTime::now();
        let started = Instant::now();
        let name = || origin.name.to_string();
        let response = match tokio::time::timeout(
            req.first_byte_timeout,
            self.client.execute(request),
        )
        .await
        {
            Err(_) => {
                return Err(EdgeError::OriginTimeout {
                    origin: name(),
                    phase: TimeoutPhase::FirstByte,
                    after: req.first_byte_timeout,
                });
            }
            Ok(Err(e)) if e.is_timeout() && e.is_connect() => {
                return Err(EdgeError::OriginTimeout {
                    origin: name(),
                    phase: TimeoutPhase::Connect,
                    after: self.fetch.connect_timeout,
                });
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Err(EdgeError::OriginTimeout {
                    origin: name(),
                    phase: TimeoutPhase::FirstByte,
                    after: req.first_byte_timeout,
                });
            }
            Ok(Err(e)) => {
                return Err(EdgeError::OriginUnreachable {
                    origin: name(),
                    detail: error_chain(&e),
                });
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
    crate::metrics::health_probe(&origin.name, outcome.is_ok());
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

/// The error and its causes on one line (reqwest's top-level message alone says little).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// Whether a status is a final response we pass on.
pub fn is_final(status: StatusCode) -> bool {
    !status.is_informational()
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
