//! The admin listener: `/metrics`, `/healthz`, `/readyz`, the live status page (`/status`,
//! `/status.json`) and the token-protected purge API.

mod status;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::proxy::Proxy;
use crate::server::{ConnInfo, Handler, ResponseBody};

#[derive(Clone)]
pub struct AdminHandler {
    pub proxy: Arc<Proxy>,
    /// Set once every listener is accepting.
    pub listening: Arc<AtomicBool>,
}

impl Handler for AdminHandler {
    type Watch = ();

    fn call(
        &self,
        req: Request<Incoming>,
        _conn: Arc<ConnInfo>,
    ) -> impl Future<Output = (Response<ResponseBody>, ())> + Send + 'static {
        let this = self.clone();
        async move { (this.route(req).await, ()) }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let body: Bytes = body.into();
    let mut r = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl AdminHandler {
    async fn route(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let path = req.uri().path().to_owned();
        match (req.method(), path.as_str()) {
            (&Method::GET | &Method::HEAD, "/metrics") => {
                let mut body = crate::metrics::render();
                let upstream = &self.proxy.runtime().upstream;
                body.push_str(&crate::metrics::origin_connections(
                    upstream.connections_opened(),
                    upstream.requests_sent(),
                ));
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET | &Method::HEAD, "/readyz") => {
                let listening = self.listening.load(Ordering::Relaxed);
                let origin = self.proxy.runtime().upstream.any_up();
                if listening && origin {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "not ready: listeners {}, healthy origin {}\n",
                            if listening { "up" } else { "starting" },
                            if origin { "yes" } else { "none" }
                        ),
                    )
                }
            }
            (&Method::GET | &Method::HEAD, "/status") => status::page(),
            (&Method::GET | &Method::HEAD, "/status.json") => status::json(&self.proxy),
            (&Method::POST, "/purge") => self.purge(&req).await,
            (_, "/metrics" | "/healthz" | "/readyz" | "/status" | "/status.json" | "/purge") => {
                let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                let allow = if path == "/purge" {
                    "POST"
                } else {
                    "GET, HEAD"
                };
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                r
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// `POST /purge?path=/x` (one object), `?prefix=/live/` (every key under it), and
    /// `&soft=1` (mark stale so it revalidates instead of removing). Bearer token required.
    async fn purge(&self, req: &Request<Incoming>) -> Response<ResponseBody> {
        let runtime = self.proxy.runtime();
        let Some(token) = runtime
            .config
            .admin
            .as_ref()
            .and_then(|a| a.token.as_deref())
        else {
            return text(
                StatusCode::FORBIDDEN,
                "purge is disabled: set admin.token\n",
            );
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let query = req.uri().query().unwrap_or("");
        let n = match crate::proxy::purge(&self.proxy, query).await {
            Ok(n) => n,
            Err(m) => return text(StatusCode::BAD_REQUEST, format!("{m}\n")),
        };
        let Some(cluster) = &runtime.cluster else {
            return text(StatusCode::OK, format!("purged {n}\n"));
        };
        // Fleet-wide: the owner of a key may be any node, and forwarders keep copies too.
        let peers = cluster.view().peers().count();
        let failed = crate::cluster::purge_peers(cluster, &runtime.upstream.client(), query).await;
        if failed.is_empty() {
            text(
                StatusCode::OK,
                format!("purged {n}\npeers confirmed: {peers} of {peers}\n"),
            )
        } else {
            text(
                StatusCode::BAD_GATEWAY,
                format!(
                    "purged {n}\npeers confirmed: {} of {peers}; not confirmed:\n{}\n",
                    peers - failed.len(),
                    failed.join("\n")
                ),
            )
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
