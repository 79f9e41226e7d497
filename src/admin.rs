//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and the token-protected purge API.

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
    fn call(
        &self,
        req: Request<Incoming>,
        _conn: Arc<ConnInfo>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static {
        let this = self.clone();
        async move { this.route(req).await }
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
            (&Method::POST, "/purge") => self.purge(&req).await,
            (_, "/metrics" | "/healthz" | "/readyz" | "/purge") => {
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
        let mut path = None;
        let mut prefix = None;
        let mut host = None;
        let mut soft = false;
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = crate::percent::decode_form(v);
            match k {
                "path" | "url" => path = Some(v),
                "prefix" => prefix = Some(v),
                "host" => host = Some(v),
                "soft" => soft = v == "1" || v == "true",
                _ => {}
            }
        }
        let host = match host.map(|h| crate::target::canonical_host(h.as_bytes(), 0)) {
            None => None,
            Some(Ok(h)) => Some(h),
            Some(Err(e)) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
        match (path, prefix) {
            (Some(p), None) => {
                // The canonical form a client's request for it has, so the key matches.
                let target = match crate::target::Target::from_reference(None, &p) {
                    Ok(t) => t,
                    Err(e) => return text(StatusCode::BAD_REQUEST, format!("path: {e}\n")),
                };
                let key =
                    runtime
                        .keys
                        .key_on(host.as_deref(), &target.path, target.query.as_deref());
                let n = match (soft, host.is_some()) {
                    (true, _) => self.proxy.store.soft_purge(&key).await,
                    (false, true) => usize::from(self.proxy.store.purge(&key).await),
                    (false, false) => self.proxy.store.purge_all_hosts(&key),
                };
                tracing::info!(key = %key, soft, found = n, "purge");
                text(StatusCode::OK, format!("purged {n}\n"))
            }
            (None, Some(prefix)) if prefix.starts_with('/') => {
                let n = if soft {
                    self.proxy.store.soft_purge_prefix(&prefix).await
                } else {
                    self.proxy.store.purge_prefix(&prefix)
                };
                tracing::info!(prefix, soft, found = n, "purge by prefix");
                text(StatusCode::OK, format!("purged {n}\n"))
            }
            _ => text(
                StatusCode::BAD_REQUEST,
                "give exactly one of path=/... or prefix=/... (and optionally host=... and soft=1)\n",
            ),
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
