//! What every conformance test uses: an origin, an edge in front of it and a client (`Bench`),
//! origin scripts that validate, and the assertions on `Cache-Status`.

use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use streamedge::config::Config;
use tokio::task::JoinSet;

use super::common::*;

/// A time long enough for a one-second freshness to run out.
pub(crate) const PAST_ONE_SECOND: Duration = Duration::from_millis(1200);

/// An origin, an edge in front of it and a plain HTTP/1.1 client.
pub(crate) struct Bench {
    pub(crate) origin: TestOrigin,
    pub(crate) edge: TestEdge,
    pub(crate) client: reqwest::Client,
}

impl Bench {
    /// An edge with the default config.
    pub(crate) async fn new(
        script: impl Fn(&http::request::Parts) -> Reply + Send + Sync + 'static,
    ) -> Bench {
        Bench::with(script, |_| {}).await
    }

    /// An edge whose config is edited by `edit` first.
    pub(crate) async fn with(
        script: impl Fn(&http::request::Parts) -> Reply + Send + Sync + 'static,
        edit: impl FnOnce(&mut Config) + Send,
    ) -> Bench {
        let origin = TestOrigin::start(script).await;
        let edge = TestEdge::builder(&[origin.url()])
            .config(edit)
            .start()
            .await;
        let client = edge.http_client();
        Bench {
            origin,
            edge,
            client,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Resp {
        self.get_with(path, &[]).await
    }

    pub(crate) async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(Method::GET, path, headers).await
    }

    pub(crate) async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = self.client.request(method, self.edge.http_url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        send(req).await
    }

    /// GET requests the origin received for `path`.
    pub(crate) fn origin_gets(&self, path: &str) -> Vec<Seen> {
        self.origin
            .requests()
            .into_iter()
            .filter(|s| s.method == Method::GET && s.path == path)
            .collect()
    }

    pub(crate) async fn stop(self) {
        self.edge.stop().await;
        self.origin.stop().await;
    }
}

/// An HTTP-date `offset` seconds from now.
pub(crate) fn http_date(offset: i64) -> String {
    let now = SystemTime::now();
    let d = Duration::from_secs(offset.unsigned_abs());
    httpdate::fmt_http_date(if offset >= 0 { now + d } else { now - d })
}

pub(crate) fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).and_then(|v| v.to_str().ok())
}

#[track_caller]
pub(crate) fn assert_hit(r: &Resp, what: &str) {
    let cs = r.cache_status();
    assert!(
        cs.hit && cs.fwd.is_none(),
        "{what}: expected a hit, got {}",
        cs.raw
    );
}

#[track_caller]
pub(crate) fn assert_not_stored(r: &Resp, what: &str) {
    let cs = r.cache_status();
    assert!(
        !cs.hit && !cs.stored,
        "{what}: expected a forwarded, unstored answer, got {}",
        cs.raw
    );
}

/// Sends the same GET `n` times at once; answers in no particular order.
pub(crate) async fn concurrent_gets(b: &Bench, path: &str, n: usize) -> Vec<Resp> {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let req = b.client.get(b.edge.http_url(path));
        set.spawn(send(req));
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = within(20, "concurrent requests", set.join_next()).await {
        out.push(r.expect("request task"));
    }
    out
}

/// An origin whose first answer is `first_cc` with validators; later conditional requests that
/// match get 304 with `Cache-Control: max-age=60` and `X-Gen: 2`.
pub(crate) fn validating_origin(
    etag: Option<&'static str>,
    last_modified: Option<String>,
    first_cc: &'static str,
) -> impl Fn(&http::request::Parts) -> Reply + Send + Sync + 'static {
    move |p| {
        let inm = p.headers.get("if-none-match").and_then(|v| v.to_str().ok());
        let ims = p
            .headers
            .get("if-modified-since")
            .and_then(|v| v.to_str().ok());
        let matches = match (etag, inm, &last_modified, ims) {
            (Some(e), Some(i), _, _) => e == i,
            (_, None, Some(lm), Some(i)) => lm == i,
            _ => false,
        };
        if matches {
            return Reply::ok("")
                .status(304)
                .header("cache-control", "max-age=60")
                .header("x-gen", "2");
        }
        let mut r = Reply::ok("the full body")
            .header("cache-control", first_cc)
            .header("content-type", "text/plain")
            .header("x-gen", "1");
        if let Some(e) = etag {
            r = r.header("etag", e);
        }
        if let Some(lm) = &last_modified {
            r = r.header("last-modified", lm);
        }
        r
    }
}

#[track_caller]
pub(crate) fn assert_revalidated(r: &Resp) {
    assert_eq!(r.status, StatusCode::OK, "the client gets the full answer");
    assert_eq!(&r.body[..], b"the full body");
    let cs = r.cache_status();
    assert_eq!(cs.fwd.as_deref(), Some("stale"), "{}", cs.raw);
    assert_eq!(cs.fwd_status, Some(304), "{}", cs.raw);
    assert!(cs.stored, "{}", cs.raw);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain"),
        "stored headers kept"
    );
}

/// One stored object with both validators, 1,000 bytes long.
pub(crate) fn validated_object() -> impl Fn(&http::request::Parts) -> Reply + Send + Sync + 'static
{
    |_| {
        Reply::ok("0123456789".repeat(100))
            .header("cache-control", "max-age=60")
            .header("etag", "\"obj-1\"")
            .header("last-modified", "Tue, 01 Oct 2024 10:00:00 GMT")
            .header("content-type", "application/octet-stream")
    }
}
