//! HTTP caching conformance over real sockets (RFC 9111, 9110 §13–14, 9211, 9213, 5861): origins
//! script their headers, tests assert what the client sees, what the origin received and how
//! often, and the edge's `Cache-Status`.
//!
//! Paths without a media extension are `other` content (no default TTL), so the origin's headers
//! alone decide; `.ts` paths are segments and `.m3u8` manifests. Freshness in tests is 1 s and
//! the sleeps that let it run out are 1.1–1.3 s.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// A time long enough for a one-second freshness to run out.
const PAST_ONE_SECOND: Duration = Duration::from_millis(1200);

/// An origin, an edge in front of it and a plain HTTP/1.1 client.
struct Bench {
    origin: TestOrigin,
    edge: TestEdge,
    client: reqwest::Client,
}

impl Bench {
    /// `extra` is appended to the edge's YAML (whole top-level sections).
    async fn new(
        script: impl Fn(&http::request::Parts) -> Reply + Send + Sync + 'static,
        extra: &str,
    ) -> Bench {
        let origin = TestOrigin::start(script).await;
        let edge = TestEdge::start_with(&[origin.url()], extra).await;
        let client = edge.http_client();
        Bench {
            origin,
            edge,
            client,
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.get_with(path, &[]).await
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(Method::GET, path, headers).await
    }

    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = self.client.request(method, self.edge.http_url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        send(req).await
    }

    /// GET requests the origin received for `path`.
    fn origin_gets(&self, path: &str) -> Vec<Seen> {
        self.origin
            .requests()
            .into_iter()
            .filter(|s| s.method == Method::GET && s.path == path)
            .collect()
    }

    async fn stop(self) {
        self.edge.stop().await;
        self.origin.stop().await;
    }
}

/// An HTTP-date `offset` seconds from now.
fn http_date(offset: i64) -> String {
    let now = SystemTime::now();
    let d = Duration::from_secs(offset.unsigned_abs());
    httpdate::fmt_http_date(if offset >= 0 { now + d } else { now - d })
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).and_then(|v| v.to_str().ok())
}

#[track_caller]
fn assert_hit(r: &Resp, what: &str) {
    let cs = r.cache_status();
    assert!(
        cs.hit && cs.fwd.is_none(),
        "{what}: expected a hit, got {}",
        cs.raw
    );
}

#[track_caller]
fn assert_not_stored(r: &Resp, what: &str) {
    let cs = r.cache_status();
    assert!(
        !cs.hit && !cs.stored,
        "{what}: expected a forwarded, unstored answer, got {}",
        cs.raw
    );
}

/// Sends the same GET `n` times at once; answers in no particular order.
async fn concurrent_gets(b: &Bench, path: &str, n: usize) -> Vec<Resp> {
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

/// An edge with an admin token (the harness's edge has none), plain HTTP only.
struct TokenEdge {
    http: SocketAddr,
    admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), streamedge::StartError>>>,
}

impl TokenEdge {
    const TOKEN: &'static str = "purge-secret-0123";

    async fn start(origin: &TestOrigin) -> TokenEdge {
        TokenEdge::start_with(origin, Some(TokenEdge::TOKEN)).await
    }

    async fn start_with(origin: &TestOrigin, token: Option<&str>) -> TokenEdge {
        streamedge::tls::install_provider();
        let token = token.map_or(String::new(), |t| format!("  token: \"{t}\"\n"));
        let yaml = format!(
            "listen:\n  http: \"127.0.0.1:0\"\n\
             admin:\n  listen: \"127.0.0.1:0\"\n{token}\
             origins:\n  - url: \"{}\"\n",
            origin.url()
        );
        let config = streamedge::config::parse(&yaml).expect("token edge config");
        let listeners = streamedge::Listeners::bind(&config)
            .await
            .expect("bind edge listeners");
        let addrs = listeners.addrs();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(streamedge::run(listeners, config, async move {
            let _ = rx.await;
        }));
        TokenEdge {
            http: addrs.http.expect("http listener"),
            admin: addrs.admin.expect("admin listener"),
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    async fn purge(&self, client: &reqwest::Client, query: &str, token: Option<&str>) -> Resp {
        let mut req = client.post(format!("http://{}/purge?{query}", self.admin));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        send(req).await
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            within(20, "token edge to stop", task)
                .await
                .expect("edge task")
                .expect("edge run");
        }
    }
}

impl Drop for TokenEdge {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn plain_client() -> reqwest::Client {
    streamedge::tls::install_provider();
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

// ---------------------------------------------------------------------------------------------
// Cache-Control parsing.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directives_are_case_insensitive_and_values_may_be_quoted() {
    let b = Bench::new(
        |p| match p.uri.path() {
            "/upper" => Reply::ok("upper").header("cache-control", "PUBLIC, MAX-AGE=60"),
            _ => Reply::ok("quoted").header("cache-control", "max-age=\"60\""),
        },
        "",
    )
    .await;
    for path in ["/upper", "/quoted"] {
        let first = b.get(path).await;
        assert!(
            first.cache_status().stored,
            "{path}: {}",
            first.cache_status().raw
        );
        let second = b.get(path).await;
        assert_hit(&second, path);
        let ttl = second.cache_status().ttl.unwrap();
        assert!((58..=60).contains(&ttl), "{path}: ttl {ttl}");
        assert_eq!(b.origin.count_path(path), 1, "{path}");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_over_several_lines_is_one_list() {
    let b = Bench::new(
        |_| {
            Reply::ok("two lines")
                .header("cache-control", "public")
                .header("cache-control", "max-age=60")
        },
        "",
    )
    .await;
    b.get("/lines").await;
    assert_hit(&b.get("/lines").await, "second line's max-age applies");
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_duplicate_max_age_makes_the_response_stale() {
    let b = Bench::new(
        |p| {
            let r = Reply::ok("dup").header("cache-control", "max-age=60, max-age=120");
            match p.uri.path() {
                "/dup-etag" if p.headers.get("if-none-match").is_some() => {
                    Reply::ok("").status(304).header("etag", "\"d1\"")
                }
                "/dup-etag" => r.header("etag", "\"d1\""),
                _ => r,
            }
        },
        "",
    )
    .await;
    // Without a validator: not stored at all.
    for _ in 0..2 {
        assert_not_stored(&b.get("/dup").await, "duplicate max-age");
    }
    assert_eq!(b.origin.count_path("/dup"), 2);
    // With one: stored, but stale, so every use is revalidated.
    b.get("/dup-etag").await;
    let r = b.get("/dup-etag").await;
    assert_eq!(&r.body[..], b"dup");
    assert_eq!(
        r.cache_status().fwd.as_deref(),
        Some("stale"),
        "{}",
        r.cache_status().raw
    );
    let seen = b.origin_gets("/dup-etag");
    assert_eq!(seen.len(), 2);
    assert_eq!(header(&seen[1], "if-none-match"), Some("\"d1\""));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_max_age_is_stale_and_not_replaced_by_a_default() {
    // A segment would get the 1-day default if the origin said nothing; an invalid max-age is
    // not nothing: the response is stale.
    let b = Bench::new(
        |p| match p.uri.path() {
            "/s/bad.ts" => Reply::ok("bad").header("cache-control", "max-age=abc"),
            "/s/empty.ts" => Reply::ok("empty").header("cache-control", "max-age="),
            _ => Reply::ok("negative").header("cache-control", "max-age=-5"),
        },
        "",
    )
    .await;
    for path in ["/s/bad.ts", "/s/empty.ts", "/s/negative.ts"] {
        for _ in 0..2 {
            assert_not_stored(&b.get(path).await, path);
        }
        assert_eq!(b.origin.count_path(path), 2, "{path}");
    }
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Freshness: which field decides, and Age.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s_maxage_wins_over_max_age() {
    let b = Bench::new(
        |p| match p.uri.path() {
            "/short" => Reply::ok("s").header("cache-control", "max-age=3600, s-maxage=1"),
            _ => Reply::ok("l").header("cache-control", "max-age=0, s-maxage=60"),
        },
        "",
    )
    .await;
    b.get("/short").await;
    b.get("/long").await;
    assert_hit(&b.get("/short").await, "s-maxage=1 fresh at first");
    let long = b.get("/long").await;
    assert_hit(&long, "s-maxage=60 over max-age=0");
    assert!(long.cache_status().ttl.unwrap() > 50);
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let r = b.get("/short").await;
    assert!(
        !r.cache_status().hit,
        "s-maxage=1 ran out: {}",
        r.cache_status().raw
    );
    assert_eq!(b.origin.count_path("/short"), 2);
    assert_hit(&b.get("/long").await, "still fresh");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_wins_over_expires() {
    let b = Bench::new(
        |p| match p.uri.path() {
            "/future" => Reply::ok("f")
                .header("cache-control", "max-age=1")
                .header("expires", &http_date(3600)),
            _ => Reply::ok("p")
                .header("cache-control", "max-age=60")
                .header("expires", &http_date(-3600)),
        },
        "",
    )
    .await;
    b.get("/future").await;
    b.get("/past").await;
    assert_hit(
        &b.get("/past").await,
        "max-age=60 over an Expires in the past",
    );
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let r = b.get("/future").await;
    assert!(
        !r.cache_status().hit,
        "max-age=1 over a later Expires: {}",
        r.cache_status().raw
    );
    assert_eq!(b.origin.count_path("/future"), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_alone_gives_freshness_and_invalid_expires_is_stale() {
    let b = Bench::new(
        |p| match p.uri.path() {
            "/in-a-minute" => Reply::ok("e")
                .header("date", &http_date(0))
                .header("expires", &http_date(60)),
            "/zero" => Reply::ok("z").header("expires", "0"),
            _ => Reply::ok("p").header("expires", &http_date(-60)),
        },
        "",
    )
    .await;
    b.get("/in-a-minute").await;
    let r = b.get("/in-a-minute").await;
    assert_hit(&r, "Expires a minute ahead");
    let ttl = r.cache_status().ttl.unwrap();
    assert!((57..=60).contains(&ttl), "ttl from Expires - Date: {ttl}");
    for path in ["/zero", "/past"] {
        b.get(path).await;
        assert_not_stored(&b.get(path).await, path);
        assert_eq!(b.origin.count_path(path), 2, "{path}");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_cache_control_wins_over_cache_control_and_expires() {
    let b = Bench::new(
        |p| match p.uri.path() {
            "/cdn-allows" => Reply::ok("a")
                .header("cache-control", "no-store")
                .header("cdn-cache-control", "max-age=60"),
            "/cdn-forbids" => Reply::ok("f")
                .header("cache-control", "max-age=60")
                .header("cdn-cache-control", "no-store"),
            "/cdn-shorter" => Reply::ok("s")
                .header("cache-control", "max-age=3600")
                .header("cdn-cache-control", "max-age=1"),
            // RFC 9213 §2.2: with a targeted field, Expires is ignored too.
            _ => Reply::ok("x")
                .header("cdn-cache-control", "public")
                .header("expires", &http_date(3600)),
        },
        "",
    )
    .await;
    for path in [
        "/cdn-allows",
        "/cdn-forbids",
        "/cdn-shorter",
        "/cdn-expires",
    ] {
        b.get(path).await;
    }
    assert_hit(
        &b.get("/cdn-allows").await,
        "CDN-Cache-Control max-age over no-store",
    );
    assert_not_stored(&b.get("/cdn-forbids").await, "CDN-Cache-Control no-store");
    assert_hit(&b.get("/cdn-shorter").await, "fresh at first");
    assert_not_stored(&b.get("/cdn-expires").await, "Expires ignored");
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let r = b.get("/cdn-shorter").await;
    assert!(
        !r.cache_status().hit,
        "CDN max-age=1 ran out: {}",
        r.cache_status().raw
    );
    assert_eq!(b.origin.count_path("/cdn-allows"), 1);
    assert_eq!(b.origin.count_path("/cdn-forbids"), 2);
    assert_eq!(b.origin.count_path("/cdn-shorter"), 2);
    assert_eq!(b.origin.count_path("/cdn-expires"), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_header_wins_over_cdn_cache_control() {
    let b = Bench::new(
        |_| {
            Reply::ok("edge")
                .header("cache-control", "no-store")
                .header("cdn-cache-control", "no-store")
                .header("streamedge-cache-control", "max-age=60")
        },
        "",
    )
    .await;
    b.get("/edge").await;
    assert_hit(&b.get("/edge").await, "streamedge-cache-control first");
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_header_is_configurable_and_can_be_disabled() {
    let script = |p: &http::request::Parts| match p.uri.path() {
        "/custom" => Reply::ok("c")
            .header("cache-control", "no-store")
            .header("x-edge-cc", "max-age=60"),
        _ => Reply::ok("d")
            .header("cache-control", "no-store")
            .header("streamedge-cache-control", "max-age=60"),
    };
    let b = Bench::new(script, "cache:\n  targeted_header: x-edge-cc\n").await;
    b.get("/custom").await;
    assert_hit(&b.get("/custom").await, "the configured header");
    b.get("/default").await;
    assert_not_stored(
        &b.get("/default").await,
        "the default name is no longer targeted",
    );
    b.stop().await;

    let b = Bench::new(script, "cache:\n  targeted_header: \"\"\n").await;
    b.get("/default").await;
    assert_not_stored(&b.get("/default").await, "disabled: Cache-Control decides");
    assert_eq!(b.origin.count(), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_age_is_served_and_shortens_freshness() {
    let b = Bench::new(
        |_| {
            Reply::ok("aged")
                .header("cache-control", "max-age=31")
                .header("age", "30")
        },
        "",
    )
    .await;
    let first = b.get("/aged").await;
    let age: u64 = first.header("age").unwrap().parse().unwrap();
    assert!((30..=31).contains(&age), "Age on the miss: {age}");
    assert!(
        first.cache_status().ttl.unwrap() <= 1,
        "{}",
        first.cache_status().raw
    );
    let hit = b.get("/aged").await;
    assert_hit(&hit, "one second of freshness left");
    assert!(hit.header("age").unwrap().parse::<u64>().unwrap() >= 30);
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let r = b.get("/aged").await;
    assert!(
        !r.cache_status().hit,
        "expired at 31 s of age: {}",
        r.cache_status().raw
    );
    assert_eq!(b.origin.count(), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_in_the_past_counts_as_age() {
    let b = Bench::new(
        |_| {
            Reply::ok("dated")
                .header("cache-control", "max-age=31")
                .header("date", &http_date(-30))
        },
        "",
    )
    .await;
    let first = b.get("/dated").await;
    let age: u64 = first.header("age").unwrap().parse().unwrap();
    assert!((29..=31).contains(&age), "apparent age from Date: {age}");
    assert_hit(&b.get("/dated").await, "still fresh");
    tokio::time::sleep(PAST_ONE_SECOND).await;
    assert!(!b.get("/dated").await.cache_status().hit);
    assert_eq!(b.origin.count(), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_default_ttls_apply_only_when_the_origin_is_silent() {
    let b = Bench::new(
        |p| match p.uri.path() {
            "/s/told.ts" => Reply::ok("told").header("cache-control", "max-age=5"),
            "/m/list.m3u8" => {
                Reply::ok("#EXTM3U\n").header("content-type", "application/vnd.apple.mpegurl")
            }
            _ => Reply::ok("silent"),
        },
        "cache:\n  ttl:\n    segment: 1h\n    manifest: 7s\n    other: 0\n",
    )
    .await;
    b.get("/s/silent.ts").await;
    let r = b.get("/s/silent.ts").await;
    assert_hit(&r, "segment default");
    assert!(
        r.cache_status().ttl.unwrap() > 3500,
        "{}",
        r.cache_status().raw
    );
    b.get("/s/told.ts").await;
    let r = b.get("/s/told.ts").await;
    assert_hit(&r, "origin max-age");
    assert!(
        r.cache_status().ttl.unwrap() <= 5,
        "origin's max-age, not the default"
    );
    b.get("/m/list.m3u8").await;
    let r = b.get("/m/list.m3u8").await;
    assert_hit(&r, "manifest default");
    assert!(
        (1..=7).contains(&r.cache_status().ttl.unwrap()),
        "{}",
        r.cache_status().raw
    );
    b.get("/other").await;
    assert_not_stored(&b.get("/other").await, "other: no default");
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Directives.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_revalidates_every_time() {
    let b = Bench::new(
        |p| {
            if p.headers.get("if-none-match").is_some() {
                Reply::ok("").status(304).header("etag", "\"nc\"")
            } else {
                Reply::ok("no-cache body")
                    .header("cache-control", "max-age=3600, no-cache")
                    .header("etag", "\"nc\"")
            }
        },
        "",
    )
    .await;
    b.get("/nc").await;
    for _ in 0..2 {
        let r = b.get("/nc").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], b"no-cache body");
        let cs = r.cache_status();
        assert_eq!(cs.fwd.as_deref(), Some("stale"), "{}", cs.raw);
        assert_eq!(cs.fwd_status, Some(304), "{}", cs.raw);
    }
    let seen = b.origin_gets("/nc");
    assert_eq!(seen.len(), 3, "every use goes to the origin");
    assert!(
        seen[1..]
            .iter()
            .all(|s| header(s, "if-none-match") == Some("\"nc\""))
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_revalidate_proxy_revalidate_and_s_maxage_forbid_stale_on_error() {
    let mut b = Bench::new(
        |p| {
            let cc = match p.uri.path() {
                "/must" => "max-age=1, must-revalidate, stale-if-error=60",
                "/proxy" => "max-age=1, proxy-revalidate, stale-if-error=60",
                "/smax" => "s-maxage=1, stale-if-error=60",
                _ => "max-age=1, stale-if-error=60",
            };
            Reply::ok(format!("body of {}", p.uri.path())).header("cache-control", cc)
        },
        "fetch:\n  passive_fall: 100\n  connect_timeout: 500ms\n",
    )
    .await;
    let paths = ["/must", "/proxy", "/smax", "/allowed"];
    for path in paths {
        b.get(path).await;
    }
    tokio::time::sleep(PAST_ONE_SECOND).await;
    b.origin.kill().await;
    for path in ["/must", "/proxy", "/smax"] {
        let r = b.get(path).await;
        assert!(
            r.status.is_server_error(),
            "{path}: no stale copy, got {}",
            r.status
        );
    }
    let r = b.get("/allowed").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"body of /allowed");
    assert_eq!(r.cache_status().detail.as_deref(), Some("stale-if-error"));
    b.origin.restart().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_in_the_response_or_the_request_prevents_storing() {
    let b = Bench::new(
        |p| match p.uri.path() {
            "/ns" => Reply::ok("ns").header("cache-control", "no-store, max-age=60"),
            _ => Reply::ok("ok").header("cache-control", "max-age=60"),
        },
        "",
    )
    .await;
    b.get("/ns").await;
    assert_not_stored(&b.get("/ns").await, "response no-store");
    assert_eq!(b.origin.count_path("/ns"), 2);

    let r = b.get_with("/req", &[("cache-control", "no-store")]).await;
    assert!(
        !r.cache_status().stored,
        "request no-store: {}",
        r.cache_status().raw
    );
    let r = b.get("/req").await;
    assert!(
        !r.cache_status().hit,
        "nothing was stored: {}",
        r.cache_status().raw
    );
    assert_hit(&b.get("/req").await, "stored by the plain request");
    assert_eq!(b.origin.count_path("/req"), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_is_not_stored_and_public_is() {
    let b = Bench::new(
        |p| match p.uri.path() {
            "/private" => Reply::ok("p").header("cache-control", "private, max-age=60"),
            "/private-field" => {
                Reply::ok("pf").header("cache-control", "private=\"x-user\", max-age=60")
            }
            _ => Reply::ok("pub").header("cache-control", "public, max-age=60"),
        },
        "",
    )
    .await;
    for path in ["/private", "/private-field"] {
        b.get(path).await;
        assert_not_stored(&b.get(path).await, path);
        assert_eq!(b.origin.count_path(path), 2, "{path}");
    }
    b.get("/public").await;
    assert_hit(&b.get("/public").await, "public");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_requests_are_stored_only_when_the_response_allows_it() {
    let b = Bench::new(
        |p| {
            let cc = match p.uri.path() {
                "/auth/public" => "public, max-age=60",
                "/auth/smaxage" => "s-maxage=60",
                "/auth/must" => "max-age=60, must-revalidate",
                _ => "max-age=60",
            };
            Reply::ok("secret").header("cache-control", cc)
        },
        "",
    )
    .await;
    let auth = [("authorization", "Bearer user-1")];
    b.get_with("/auth/plain", &auth).await;
    assert_not_stored(&b.get_with("/auth/plain", &auth).await, "plain max-age");
    assert_eq!(b.origin.count_path("/auth/plain"), 2);
    assert_eq!(
        header(&b.origin.last_request(), "authorization"),
        Some("Bearer user-1"),
        "credentials reach the origin"
    );
    for path in ["/auth/public", "/auth/smaxage", "/auth/must"] {
        b.get_with(path, &auth).await;
        assert_hit(&b.get_with(path, &auth).await, path);
        assert_eq!(b.origin.count_path(path), 1, "{path}");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_responses_are_not_stored_by_default() {
    let n = Arc::new(AtomicUsize::new(0));
    let b = Bench::new(
        move |_| {
            let i = n.fetch_add(1, Ordering::SeqCst);
            Reply::ok(format!("for {i}"))
                .header("cache-control", "max-age=60")
                .header("set-cookie", &format!("session={i}"))
        },
        "",
    )
    .await;
    let a = b.get("/cookie").await;
    let c = b.get("/cookie").await;
    assert_not_stored(&c, "Set-Cookie");
    assert_eq!(a.header("set-cookie"), Some("session=0"));
    assert_eq!(
        c.header("set-cookie"),
        Some("session=1"),
        "nobody gets another's cookie"
    );
    assert_eq!(b.origin.count(), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_set_cookie_stores_without_the_cookie() {
    let b = Bench::new(
        |_| {
            Reply::ok("shared")
                .header("cache-control", "max-age=60")
                .header("set-cookie", "session=abc")
        },
        "cache:\n  store_set_cookie: true\n",
    )
    .await;
    b.get("/cookie").await;
    let hit = b.get("/cookie").await;
    assert_hit(&hit, "stored when configured");
    assert_eq!(hit.header("set-cookie"), None, "the cookie is not shared");
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_transform_stops_edge_compression() {
    let mut playlist = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n",
    );
    for i in 0..60 {
        playlist.push_str(&format!("#EXTINF:4.000,\nsegment-{i:05}.ts\n"));
    }
    playlist.push_str("#EXT-X-ENDLIST\n");
    let body = Bytes::from(playlist);
    let served = body.clone();
    let b = Bench::new(
        move |p| {
            let cc = if p.uri.path() == "/m/nt.m3u8" {
                "max-age=60, no-transform"
            } else {
                "max-age=60"
            };
            Reply::ok(served.clone())
                .header("content-type", "application/vnd.apple.mpegurl")
                .header("cache-control", cc)
        },
        "",
    )
    .await;
    let ae = [("accept-encoding", "br, gzip")];
    let r = b.get_with("/m/plain.m3u8", &ae).await;
    assert_eq!(
        r.header("content-encoding"),
        Some("br"),
        "compressed without no-transform"
    );
    for _ in 0..2 {
        let r = b.get_with("/m/nt.m3u8", &ae).await;
        assert_eq!(r.header("content-encoding"), None, "no-transform");
        assert_eq!(r.body, body);
    }
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Heuristic freshness and stored statuses.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristic_freshness_from_last_modified() {
    let b = Bench::new(
        |p| match p.uri.path() {
            "/old" => Reply::ok("old").header("last-modified", &http_date(-10 * 86_400)),
            "/recent" => Reply::ok("recent").header("last-modified", &http_date(-100)),
            _ => Reply::ok("no validator"),
        },
        "",
    )
    .await;
    b.get("/old").await;
    let r = b.get("/old").await;
    assert_hit(&r, "10 days old: heuristically fresh");
    let ttl = r.cache_status().ttl.unwrap();
    assert!(
        (86_000..=86_400).contains(&ttl),
        "capped at heuristic_max 1d: {ttl}"
    );
    b.get("/recent").await;
    let r = b.get("/recent").await;
    assert_hit(&r, "10% of 100 s");
    assert!(
        (8..=10).contains(&r.cache_status().ttl.unwrap()),
        "{}",
        r.cache_status().raw
    );
    b.get("/none").await;
    assert_not_stored(&b.get("/none").await, "no Last-Modified: no heuristic");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristics_only_for_heuristically_cacheable_statuses() {
    let b = Bench::new(
        |p| {
            let status: u16 = p.uri.path()[1..].parse().unwrap();
            let r = Reply::ok(if status == 204 { "" } else { "body" }).status(status);
            let r = if (300..400).contains(&status) {
                r.header("location", "/elsewhere")
            } else {
                r
            };
            r.header("last-modified", &http_date(-86_400))
        },
        "",
    )
    .await;
    for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
        let path = format!("/{status}");
        let first = b.get(&path).await;
        assert_eq!(first.status.as_u16(), status);
        let r = b.get(&path).await;
        assert_eq!(r.status.as_u16(), status);
        assert_hit(&r, &path);
        assert_eq!(b.origin.count_path(&path), 1, "{path}");
    }
    for status in [302, 303, 307, 400, 403, 500] {
        let path = format!("/{status}");
        b.get(&path).await;
        let r = b.get(&path).await;
        assert_eq!(r.status.as_u16(), status);
        assert_not_stored(&r, &path);
        assert_eq!(b.origin.count_path(&path), 2, "{path}");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_statuses_are_stored_only_with_explicit_freshness() {
    let b = Bench::new(
        |p| match p.uri.path() {
            "/302-max-age" => Reply::ok("moved")
                .status(302)
                .header("location", "/x")
                .header("cache-control", "max-age=60"),
            "/500-max-age" => Reply::ok("broken but says so")
                .status(500)
                .header("cache-control", "max-age=60"),
            _ => Reply::ok("broken").status(500),
        },
        "",
    )
    .await;
    for path in ["/302-max-age", "/500-max-age"] {
        b.get(path).await;
        assert_hit(&b.get(path).await, path);
    }
    b.get("/500").await;
    assert_not_stored(&b.get("/500").await, "5xx without freshness");
    assert_eq!(b.origin.count_path("/500"), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_and_gone_are_cached_for_the_negative_ttl() {
    let b = Bench::new(
        |p| match p.uri.path() {
            "/s/gone.ts" => Reply::ok("gone").status(410),
            "/s/nostore.ts" => Reply::ok("no")
                .status(404)
                .header("cache-control", "no-store"),
            "/s/told.ts" => Reply::ok("told")
                .status(404)
                .header("cache-control", "max-age=60"),
            _ => Reply::ok("missing").status(404),
        },
        "cache:\n  ttl:\n    negative: 1s\n",
    )
    .await;
    for path in ["/s/missing.ts", "/s/gone.ts", "/s/told.ts"] {
        let r = b.get(path).await;
        assert!(r.cache_status().stored, "{path}: {}", r.cache_status().raw);
        assert_hit(&b.get(path).await, path);
    }
    b.get("/s/nostore.ts").await;
    assert_not_stored(&b.get("/s/nostore.ts").await, "404 with no-store");
    tokio::time::sleep(PAST_ONE_SECOND).await;
    assert!(
        !b.get("/s/missing.ts").await.cache_status().hit,
        "negative TTL ran out"
    );
    assert_hit(
        &b.get("/s/told.ts").await,
        "the origin's max-age, not the negative TTL",
    );
    assert_eq!(b.origin.count_path("/s/missing.ts"), 2);
    assert_eq!(b.origin.count_path("/s/gone.ts"), 1);
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Revalidation.

/// An origin whose first answer is `first_cc` with validators; later conditional requests that
/// match get 304 with `Cache-Control: max-age=60` and `X-Gen: 2`.
fn validating_origin(
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
fn assert_revalidated(r: &Resp) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entry_with_etag_is_revalidated_with_if_none_match() {
    let b = Bench::new(validating_origin(Some("\"v1\""), None, "max-age=1"), "").await;
    assert_eq!(b.get("/rv").await.header("x-gen"), Some("1"));
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let r = b.get("/rv").await;
    assert_revalidated(&r);
    assert_eq!(r.header("x-gen"), Some("2"), "headers updated from the 304");
    let seen = b.origin_gets("/rv");
    assert_eq!(seen.len(), 2);
    assert_eq!(header(&seen[1], "if-none-match"), Some("\"v1\""));
    let hit = b.get("/rv").await;
    assert_hit(&hit, "freshness updated by the 304");
    assert!(
        hit.cache_status().ttl.unwrap() > 50,
        "{}",
        hit.cache_status().raw
    );
    assert_eq!(hit.header("x-gen"), Some("2"));
    assert_eq!(&hit.body[..], b"the full body");
    assert_eq!(b.origin.count(), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entry_with_last_modified_is_revalidated_with_if_modified_since() {
    let lm = http_date(-3600);
    let b = Bench::new(validating_origin(None, Some(lm.clone()), "max-age=1"), "").await;
    b.get("/lm").await;
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let r = b.get("/lm").await;
    assert_revalidated(&r);
    let seen = b.origin_gets("/lm");
    assert_eq!(seen.len(), 2);
    assert_eq!(header(&seen[1], "if-modified-since"), Some(lm.as_str()));
    assert_eq!(header(&seen[1], "if-none-match"), None);
    assert_hit(&b.get("/lm").await, "fresh again");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidation_answered_with_a_new_body_replaces_the_object() {
    let n = Arc::new(AtomicUsize::new(0));
    let b = Bench::new(
        move |_| {
            let i = n.fetch_add(1, Ordering::SeqCst) + 1;
            Reply::ok(format!("version {i}"))
                .header("cache-control", "max-age=1")
                .header("etag", &format!("\"v{i}\""))
        },
        "",
    )
    .await;
    b.get("/changes").await;
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let r = b.get("/changes").await;
    assert_eq!(&r.body[..], b"version 2");
    let cs = r.cache_status();
    assert_eq!(
        (cs.fwd.as_deref(), cs.fwd_status),
        (Some("stale"), Some(200)),
        "{}",
        cs.raw
    );
    let hit = b.get("/changes").await;
    assert_hit(&hit, "the new version is stored");
    assert_eq!(&hit.body[..], b"version 2");
    assert_eq!(hit.header("etag"), Some("\"v2\""));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revalidations_collapse_into_one() {
    let validating = validating_origin(Some("\"c1\""), None, "max-age=1");
    let b = Bench::new(
        move |p| {
            let r = validating(p);
            if r.status == StatusCode::NOT_MODIFIED {
                r.delay(Duration::from_millis(400))
            } else {
                r
            }
        },
        "",
    )
    .await;
    b.get("/herd").await;
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let answers = concurrent_gets(&b, "/herd", 20).await;
    for r in &answers {
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(&r.body[..], b"the full body");
    }
    assert!(
        answers.iter().any(|r| r.cache_status().collapsed),
        "some requests joined the revalidation"
    );
    assert_eq!(
        b.origin.count(),
        2,
        "one revalidation for twenty stale requests"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_and_preconditions_on_a_stale_object_apply_after_revalidation() {
    let b = Bench::new(validating_origin(Some("\"r1\""), None, "max-age=1"), "").await;
    b.get("/stale-range").await;
    b.get("/stale-inm").await;
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let r = b.get_with("/stale-range", &[("range", "bytes=4-7")]).await;
    assert_eq!(
        r.status,
        StatusCode::PARTIAL_CONTENT,
        "{}",
        r.cache_status().raw
    );
    assert_eq!(&r.body[..], b"full");
    assert_eq!(r.header("content-range"), Some("bytes 4-7/13"));
    assert_eq!(
        r.cache_status().fwd_status,
        Some(304),
        "{}",
        r.cache_status().raw
    );
    let r = b
        .get_with("/stale-inm", &[("if-none-match", "\"r1\"")])
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_MODIFIED,
        "{}",
        r.cache_status().raw
    );
    assert_eq!(r.cache_status().fwd.as_deref(), Some("stale"));
    let seen = b.origin_gets("/stale-inm");
    assert_eq!(seen.len(), 2, "the stale object was revalidated first");
    assert_eq!(header(&seen[1], "if-none-match"), Some("\"r1\""));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_variants_are_revalidated_separately() {
    let b = Bench::new(
        |p| {
            let lang = p
                .headers
                .get("accept-language")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            let etag = format!("\"{lang}-1\"");
            let r = if p.headers.get("if-none-match").and_then(|v| v.to_str().ok())
                == Some(etag.as_str())
            {
                Reply::ok("")
                    .status(304)
                    .header("cache-control", "max-age=60")
            } else {
                Reply::ok(format!("text in {lang}")).header("cache-control", "max-age=1")
            };
            r.header("vary", "Accept-Language").header("etag", &etag)
        },
        "",
    )
    .await;
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    b.get_with("/vr", &en).await;
    b.get_with("/vr", &fr).await;
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let r = b.get_with("/vr", &en).await;
    assert_eq!(&r.body[..], b"text in en");
    assert_eq!(
        r.cache_status().fwd_status,
        Some(304),
        "{}",
        r.cache_status().raw
    );
    assert_eq!(
        header(&b.origin.last_request(), "if-none-match"),
        Some("\"en-1\"")
    );
    let r = b.get_with("/vr", &en).await;
    assert_hit(&r, "the en variant is fresh again");
    assert_eq!(&r.body[..], b"text in en");
    let r = b.get_with("/vr", &fr).await;
    assert!(
        !r.cache_status().hit,
        "fr is still stale: {}",
        r.cache_status().raw
    );
    assert_eq!(&r.body[..], b"text in fr");
    assert_eq!(
        header(&b.origin.last_request(), "if-none-match"),
        Some("\"fr-1\"")
    );
    assert_eq!(b.origin.count(), 4);
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Client preconditions.

fn validated_object() -> impl Fn(&http::request::Parts) -> Reply + Send + Sync + 'static {
    |_| {
        Reply::ok("0123456789".repeat(100))
            .header("cache-control", "max-age=60")
            .header("etag", "\"obj-1\"")
            .header("last-modified", "Tue, 01 Oct 2024 10:00:00 GMT")
            .header("content-type", "application/octet-stream")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_is_answered_304_from_the_cache() {
    let b = Bench::new(validated_object(), "").await;
    b.get("/obj").await;
    for inm in ["\"obj-1\"", "W/\"obj-1\"", "\"x\", \"obj-1\"", "*"] {
        let r = b.get_with("/obj", &[("if-none-match", inm)]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some("\"obj-1\""));
        assert_hit(&r, inm);
    }
    let r = b.get_with("/obj", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), 1000);
    assert_eq!(b.origin.count(), 1, "never forwarded");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preconditions_on_a_miss_are_evaluated_on_the_fetched_response() {
    let b = Bench::new(validated_object(), "").await;
    let r = b.get_with("/cold", &[("if-none-match", "\"obj-1\"")]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.cache_status().fwd.as_deref(), Some("uri-miss"));
    assert_eq!(
        header(&b.origin.last_request(), "if-none-match"),
        None,
        "the fill asks for the whole object, not the client's condition"
    );
    let r = b.get_with("/cold2", &[("if-match", "\"nope\"")]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    for path in ["/cold", "/cold2"] {
        let r = b.get(path).await;
        assert_hit(&r, "stored by the conditional miss");
        assert_eq!(r.body.len(), 1000);
    }
    assert_eq!(b.origin.count(), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_modified_since_is_answered_304_and_if_none_match_takes_precedence() {
    let b = Bench::new(validated_object(), "").await;
    b.get("/obj").await;
    let same = [("if-modified-since", "Tue, 01 Oct 2024 10:00:00 GMT")];
    assert_eq!(
        b.get_with("/obj", &same).await.status,
        StatusCode::NOT_MODIFIED
    );
    let later = [("if-modified-since", "Wed, 02 Oct 2024 10:00:00 GMT")];
    assert_eq!(
        b.get_with("/obj", &later).await.status,
        StatusCode::NOT_MODIFIED
    );
    let earlier = [("if-modified-since", "Mon, 30 Sep 2024 10:00:00 GMT")];
    assert_eq!(b.get_with("/obj", &earlier).await.status, StatusCode::OK);
    let both = [
        ("if-none-match", "\"other\""),
        ("if-modified-since", "Wed, 02 Oct 2024 10:00:00 GMT"),
    ];
    assert_eq!(
        b.get_with("/obj", &both).await.status,
        StatusCode::OK,
        "If-Modified-Since is ignored when If-None-Match is present"
    );
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_and_if_unmodified_since_fail_with_412() {
    let b = Bench::new(validated_object(), "").await;
    b.get("/obj").await;
    let cases: [(&str, &str, StatusCode); 6] = [
        ("if-match", "\"obj-1\"", StatusCode::OK),
        ("if-match", "*", StatusCode::OK),
        ("if-match", "\"other\"", StatusCode::PRECONDITION_FAILED),
        ("if-match", "W/\"obj-1\"", StatusCode::PRECONDITION_FAILED),
        (
            "if-unmodified-since",
            "Wed, 02 Oct 2024 10:00:00 GMT",
            StatusCode::OK,
        ),
        (
            "if-unmodified-since",
            "Mon, 30 Sep 2024 10:00:00 GMT",
            StatusCode::PRECONDITION_FAILED,
        ),
    ];
    for (name, value, want) in cases {
        let r = b.get_with("/obj", &[(name, value)]).await;
        assert_eq!(r.status, want, "{name}: {value}");
    }
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_range_applies_the_range_only_to_the_same_representation() {
    let b = Bench::new(validated_object(), "").await;
    b.get("/obj").await;
    let range = ("range", "bytes=0-9");
    for (value, want) in [
        ("\"obj-1\"", StatusCode::PARTIAL_CONTENT),
        ("\"obj-0\"", StatusCode::OK),
        ("W/\"obj-1\"", StatusCode::OK),
        ("Tue, 01 Oct 2024 10:00:00 GMT", StatusCode::PARTIAL_CONTENT),
        ("Mon, 30 Sep 2024 10:00:00 GMT", StatusCode::OK),
    ] {
        let r = b.get_with("/obj", &[range, ("if-range", value)]).await;
        assert_eq!(r.status, want, "If-Range: {value}");
        let expected = if want == StatusCode::OK { 1000 } else { 10 };
        assert_eq!(r.body.len(), expected, "If-Range: {value}");
    }
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Range.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_ranges_are_served_206_from_a_stored_object() {
    let body = payload(1000, 11);
    let served = body.clone();
    let b = Bench::new(
        move |_| Reply::ok(served.clone()).header("cache-control", "max-age=60"),
        "",
    )
    .await;
    b.get("/bytes").await;
    for (spec, a, e) in [
        ("bytes=0-99", 0, 100),
        ("bytes=900-", 900, 1000),
        ("bytes=-100", 900, 1000),
        ("bytes=990-5000", 990, 1000),
        ("bytes=-5000", 0, 1000),
        ("bytes=500-500", 500, 501),
    ] {
        let r = b.get_with("/bytes", &[("range", spec)]).await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{spec}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {a}-{}/1000", e - 1).as_str()),
            "{spec}"
        );
        assert_eq!(
            r.header("content-length"),
            Some((e - a).to_string().as_str())
        );
        assert_eq!(r.body, body.slice(a..e), "{spec}");
        assert_hit(&r, spec);
    }
    // Invalid syntax or another unit: ignored, the whole object.
    for spec in ["bytes=5-1", "items=0-1", "bytes=x-y"] {
        let r = b.get_with("/bytes", &[("range", spec)]).await;
        assert_eq!(r.status, StatusCode::OK, "{spec}");
        assert_eq!(r.body, body);
    }
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsatisfiable_ranges_are_416_with_the_length() {
    let b = Bench::new(
        |_| Reply::ok(payload(1000, 12)).header("cache-control", "max-age=60"),
        "",
    )
    .await;
    // On a miss (answered from the fill's head) and from the store.
    for path in ["/u1", "/u1", "/u2"] {
        for spec in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
            let r = b.get_with(path, &[("range", spec)]).await;
            assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{path} {spec}");
            assert_eq!(r.header("content-range"), Some("bytes */1000"), "{spec}");
            assert!(r.body.is_empty());
        }
    }
    assert_eq!(
        b.origin.count(),
        2,
        "the 416s did not stop the objects being stored"
    );
    b.stop().await;
}

/// Splits a `multipart/byteranges` body into (Content-Range, bytes) parts.
fn multipart_parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("a boundary")
        .trim_matches('"');
    let delimiter = format!("\r\n--{boundary}");
    let text = body.to_vec();
    let mut parts = Vec::new();
    let mut pos = 0;
    let find = |from: usize, needle: &[u8]| {
        text[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + from)
    };
    while let Some(start) = find(pos, delimiter.as_bytes()) {
        let after = start + delimiter.len();
        if text[after..].starts_with(b"--") {
            break;
        }
        let head_end = find(after, b"\r\n\r\n").expect("part head");
        let head = String::from_utf8_lossy(&text[after..head_end]).to_string();
        let range = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("content-range:")
                    .then(|| l["content-range:".len()..].trim().to_owned())
            })
            .expect("Content-Range in the part");
        let data_start = head_end + 4;
        let data_end = find(data_start, delimiter.as_bytes()).expect("next delimiter");
        parts.push((range, text[data_start..data_end].to_vec()));
        pos = data_end;
    }
    parts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiple_ranges_are_multipart_from_the_store_and_whole_on_a_miss() {
    let body = Bytes::from("abcdefghijklmnopqrstuvwxyz".repeat(40));
    let served = body.clone();
    let b = Bench::new(
        move |_| {
            Reply::ok(served.clone())
                .header("cache-control", "max-age=60")
                .header("content-type", "text/plain")
        },
        "",
    )
    .await;
    let ranges = [("range", "bytes=0-9,500-509,-5")];
    let miss = b.get_with("/multi", &ranges).await;
    assert_eq!(
        miss.status,
        StatusCode::OK,
        "a miss answers multiple ranges with the whole"
    );
    assert_eq!(miss.body, body);

    let r = b.get_with("/multi", &ranges).await;
    assert_hit(&r, "multipart from the store");
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    let ct = r.header("content-type").unwrap().to_owned();
    assert!(ct.starts_with("multipart/byteranges"), "{ct}");
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    let parts = multipart_parts(&ct, &r.body);
    assert_eq!(
        parts,
        vec![
            ("bytes 0-9/1040".to_owned(), body[0..10].to_vec()),
            ("bytes 500-509/1040".to_owned(), body[500..510].to_vec()),
            ("bytes 1035-1039/1040".to_owned(), body[1035..1040].to_vec()),
        ]
    );
    // Overlapping ranges coalesce into one.
    let r = b.get_with("/multi", &[("range", "bytes=0-5,3-9")]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.header("content-range"), Some("bytes 0-9/1040"));
    assert_eq!(r.body, body.slice(0..10));
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_on_a_miss_streams_the_slice_as_its_bytes_arrive() {
    // The origin sends the first half at once and the second half two seconds later: slices of
    // the first half must be complete while the object is still being filled (not stored).
    const LEN: usize = 256 << 10;
    let body = payload(LEN, 13);
    let served = body.clone();
    let b = Bench::new(
        move |_| {
            Reply::ok(served.clone())
                .header("cache-control", "max-age=60")
                .trickle(LEN / 2, Duration::from_secs(2))
        },
        "",
    )
    .await;
    let ranged = |spec: &str| {
        send(
            b.client
                .get(b.edge.http_url("/slow.bin"))
                .header("range", spec),
        )
    };
    let (first, mid) = tokio::join!(ranged("bytes=0-1023"), ranged("bytes=65536-66559"));
    let in_flight = b
        .get_with("/slow.bin", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(
        in_flight.status,
        StatusCode::GATEWAY_TIMEOUT,
        "the slices were answered before the whole object arrived"
    );
    for (r, (a, e)) in [(first, (0, 1024)), (mid, (65_536, 66_560))] {
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {a}-{}/{LEN}", e - 1).as_str())
        );
        assert_eq!(r.body, body.slice(a..e));
    }
    // A slice of the second half joins the same fill and ends when its bytes arrive.
    let late = ranged("bytes=200000-200999").await;
    assert_eq!(late.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(late.body, body.slice(200_000..201_000));
    assert_eq!(b.origin.count(), 1, "one fill for every range");
    let origin_range = b.origin.last_request();
    assert_eq!(
        header(&origin_range, "range"),
        None,
        "the fill fetches the whole object"
    );

    // The whole object was stored: a later range is a hit.
    within(5, "the fill to be stored", async {
        loop {
            let r = b
                .get_with("/slow.bin", &[("cache-control", "only-if-cached")])
                .await;
            if r.status == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let r = b.get_with("/slow.bin", &[("range", "bytes=-10")]).await;
    assert_hit(&r, "range from the stored object");
    assert_eq!(r.body, body.slice(LEN - 10..));
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_206_is_never_stored_as_the_whole_object() {
    let b = Bench::new(
        |_| {
            Reply::ok("0123456789")
                .status(206)
                .header("content-range", "bytes 0-9/100")
                .header("cache-control", "max-age=60")
        },
        "",
    )
    .await;
    for _ in 0..2 {
        let r = b.get("/partial").await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
        assert_not_stored(&r, "origin 206");
    }
    assert_eq!(b.origin.count(), 2);
    let r = b
        .get_with("/partial", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(
        r.status,
        StatusCode::GATEWAY_TIMEOUT,
        "nothing stored for the key"
    );
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Vary.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_stores_one_variant_per_request_header_value() {
    let b = Bench::new(
        |p| {
            let lang = p
                .headers
                .get("accept-language")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            Reply::ok(format!("lang={lang}"))
                .header("cache-control", "max-age=60")
                .header("vary", "Accept-Language")
        },
        "",
    )
    .await;
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    let r = b.get_with("/v", &en).await;
    assert_eq!(r.cache_status().fwd.as_deref(), Some("uri-miss"));
    let r = b.get_with("/v", &fr).await;
    assert_eq!(&r.body[..], b"lang=fr");
    assert_eq!(
        r.cache_status().fwd.as_deref(),
        Some("vary-miss"),
        "{}",
        r.cache_status().raw
    );
    for (h, want) in [(en, "lang=en"), (fr, "lang=fr")] {
        let r = b.get_with("/v", &h).await;
        assert_hit(&r, want);
        assert_eq!(&r.body[..], want.as_bytes());
        assert_eq!(r.header("vary"), Some("Accept-Language"));
    }
    assert_eq!(b.origin.count(), 2, "two variants, two origin requests");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_accept_encoding_is_normalised() {
    let b = Bench::new(
        |p| {
            let ae = p
                .headers
                .get("accept-encoding")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            Reply::ok(format!("origin saw {ae}"))
                .header("cache-control", "max-age=60")
                .header("vary", "Accept-Encoding")
        },
        "",
    )
    .await;
    let r = b.get_with("/ae", &[("accept-encoding", "gzip")]).await;
    assert_eq!(&r.body[..], b"origin saw gzip");
    let r = b
        .get_with("/ae", &[("accept-encoding", "gzip, deflate")])
        .await;
    assert_hit(&r, "gzip, deflate is the gzip variant");
    let r = b
        .get_with("/ae", &[("accept-encoding", "deflate, gzip;q=0.5")])
        .await;
    assert_hit(&r, "gzip with a lower q is still the gzip variant");
    let r = b.get_with("/ae", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(&r.body[..], b"origin saw br", "{}", r.cache_status().raw);
    let r = b
        .get_with("/ae", &[("accept-encoding", "br;q=1, gzip;q=0.1")])
        .await;
    assert_hit(&r, "the br variant");
    let r = b.get("/ae").await;
    assert_eq!(&r.body[..], b"origin saw identity");
    assert_eq!(b.origin.count(), 3, "gzip, br, identity");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_star_is_never_served_from_the_cache() {
    let b = Bench::new(
        |_| {
            Reply::ok("star")
                .header("cache-control", "max-age=60")
                .header("vary", "*")
        },
        "",
    )
    .await;
    for _ in 0..3 {
        assert_not_stored(&b.get("/star").await, "Vary: *");
    }
    assert_eq!(b.origin.count(), 3);
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Stale content.

fn generations(
    cc: &'static str,
    refresh_delay: Duration,
) -> (
    Arc<AtomicUsize>,
    impl Fn(&http::request::Parts) -> Reply + Send + Sync + 'static,
) {
    let n = Arc::new(AtomicUsize::new(0));
    let counter = n.clone();
    let script = move |_: &http::request::Parts| {
        let i = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let r = Reply::ok(format!("gen-{i}")).header("cache-control", cc);
        if i > 1 { r.delay(refresh_delay) } else { r }
    };
    (n, script)
}

async fn wait_for_body(b: &Bench, path: &str, want: &str) -> Resp {
    within(5, &format!("{path} to serve {want}"), async {
        loop {
            let r = b.get(path).await;
            if &r.body[..] == want.as_bytes() {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let (_, script) = generations(
        "max-age=1, stale-while-revalidate=30",
        Duration::from_millis(500),
    );
    let b = Bench::new(script, "").await;
    assert_eq!(&b.get("/swr").await.body[..], b"gen-1");
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let stale = concurrent_gets(&b, "/swr", 8).await;
    for r in &stale {
        assert_eq!(&r.body[..], b"gen-1", "stale content at once");
        let cs = r.cache_status();
        assert!(cs.hit, "{}", cs.raw);
        assert_eq!(
            cs.detail.as_deref(),
            Some("stale-while-revalidate"),
            "{}",
            cs.raw
        );
        assert!(cs.ttl.unwrap() < 0, "{}", cs.raw);
    }
    let fresh = wait_for_body(&b, "/swr", "gen-2").await;
    assert_hit(&fresh, "the refreshed object");
    assert_eq!(
        b.origin.count(),
        2,
        "one background refresh for eight stale requests"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_from_the_config_default() {
    let (_, script) = generations("max-age=1", Duration::ZERO);
    let b = Bench::new(
        script,
        "cache:\n  stale_while_revalidate:\n    other: 30s\n",
    )
    .await;
    b.get("/swr-default").await;
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let r = b.get("/swr-default").await;
    assert_eq!(&r.body[..], b"gen-1");
    assert_eq!(
        r.cache_status().detail.as_deref(),
        Some("stale-while-revalidate")
    );
    wait_for_body(&b, "/swr-default", "gen-2").await;
    assert_eq!(b.origin.count(), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_revalidate_forbids_stale_while_revalidate() {
    let (_, script) = generations(
        "max-age=1, must-revalidate, stale-while-revalidate=30",
        Duration::from_millis(200),
    );
    let b = Bench::new(script, "").await;
    b.get("/mr-swr").await;
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let r = b.get("/mr-swr").await;
    assert_eq!(
        &r.body[..],
        b"gen-2",
        "waited for the origin, no stale copy"
    );
    assert_eq!(
        r.cache_status().fwd.as_deref(),
        Some("stale"),
        "{}",
        r.cache_status().raw
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_stale_when_the_origin_is_down() {
    let mut b = Bench::new(
        |_| Reply::ok("kept").header("cache-control", "max-age=1, stale-if-error=60"),
        "fetch:\n  passive_fall: 100\n  connect_timeout: 500ms\n",
    )
    .await;
    b.get("/sie").await;
    tokio::time::sleep(PAST_ONE_SECOND).await;
    b.origin.kill().await;
    let r = b.get("/sie").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"kept");
    let cs = r.cache_status();
    assert_eq!(cs.fwd.as_deref(), Some("stale"), "{}", cs.raw);
    assert_eq!(cs.detail.as_deref(), Some("stale-if-error"), "{}", cs.raw);
    assert!(cs.fwd_status.is_some_and(|s| s >= 500), "{}", cs.raw);
    b.origin.restart().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_stale_when_the_origin_answers_5xx() {
    let n = Arc::new(AtomicUsize::new(0));
    let b = Bench::new(
        move |p| {
            if n.fetch_add(1, Ordering::SeqCst) < 3 {
                let cc = if p.uri.path() == "/no-sie" {
                    "max-age=1"
                } else {
                    "max-age=1, stale-if-error=60"
                };
                return Reply::ok(format!("good {}", p.uri.path())).header("cache-control", cc);
            }
            match p.uri.path() {
                "/e503" => Reply::ok("unavailable").status(503),
                _ => Reply::ok("internal error").status(500),
            }
        },
        "fetch:\n  passive_fall: 100\n",
    )
    .await;
    for path in ["/e500", "/e503", "/no-sie"] {
        b.get(path).await;
    }
    tokio::time::sleep(PAST_ONE_SECOND).await;
    for (path, status) in [("/e500", 500), ("/e503", 503)] {
        let r = b.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.cache_status().raw);
        assert_eq!(r.body, format!("good {path}").into_bytes());
        let cs = r.cache_status();
        assert_eq!(cs.fwd.as_deref(), Some("stale"), "{}", cs.raw);
        assert_eq!(cs.fwd_status, Some(status), "{}", cs.raw);
        assert_eq!(cs.detail.as_deref(), Some("stale-if-error"), "{}", cs.raw);
    }
    let r = b.get("/no-sie").await;
    assert_eq!(
        r.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "no stale-if-error: passed on"
    );
    assert_eq!(&r.body[..], b"internal error", "the origin's own answer");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_stale_when_the_origin_times_out() {
    let n = Arc::new(AtomicUsize::new(0));
    let b = Bench::new(
        move |_| {
            let r = Reply::ok("before").header("cache-control", "max-age=1, stale-if-error=60");
            if n.fetch_add(1, Ordering::SeqCst) == 0 {
                r
            } else {
                r.hang()
            }
        },
        "fetch:\n  first_byte_timeout: 300ms\n  passive_fall: 100\n",
    )
    .await;
    b.get("/hang").await;
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let r = b.get("/hang").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"before");
    assert_eq!(
        r.cache_status().fwd_status,
        Some(504),
        "{}",
        r.cache_status().raw
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_defaults_per_media_kind() {
    let mut b = Bench::new(
        |p| Reply::ok(format!("copy of {}", p.uri.path())).header("cache-control", "max-age=1"),
        "cache:\n  stale_if_error:\n    segment: 1h\n    other: 0\n\
         fetch:\n  passive_fall: 100\n  connect_timeout: 500ms\n",
    )
    .await;
    b.get("/s/seg.ts").await;
    b.get("/o/other").await;
    tokio::time::sleep(PAST_ONE_SECOND).await;
    b.origin.kill().await;
    let r = b.get("/o/other").await;
    assert_eq!(
        r.status,
        StatusCode::BAD_GATEWAY,
        "no stale-if-error for other content"
    );
    let r = b.get("/s/seg.ts").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "segments keep an hour of stale-if-error"
    );
    assert_eq!(&r.body[..], b"copy of /s/seg.ts");
    assert_eq!(r.cache_status().detail.as_deref(), Some("stale-if-error"));
    b.origin.restart().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Invalidation and purge.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_the_target_on_success() {
    let b = Bench::new(
        |p| match (p.method.as_str(), p.uri.path()) {
            ("GET", path) => Reply::ok(format!("GET {path}")).header("cache-control", "max-age=60"),
            ("POST", "/res/fails") => Reply::ok("no").status(500),
            ("POST", "/res/create") => Reply::ok("created")
                .status(201)
                .header("location", "/res/loc")
                .header("content-location", "/res/cloc"),
            _ => Reply::ok("done"),
        },
        "server:\n  forward_unsafe_methods: true\n",
    )
    .await;
    let gets = |path: &str| b.origin_gets(path).len();
    for path in ["/res/a", "/res/fails", "/res/loc", "/res/cloc", "/res/b"] {
        b.get(path).await;
        assert_hit(&b.get(path).await, path);
    }

    let r = b.send(Method::POST, "/res/a", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(b.origin.requests().iter().any(|s| s.method == Method::POST));
    assert!(
        !b.get("/res/a").await.cache_status().hit,
        "POST invalidated /res/a"
    );
    assert_eq!(gets("/res/a"), 2);

    let r = b.send(Method::POST, "/res/fails", &[]).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_hit(
        &b.get("/res/fails").await,
        "a failed POST invalidates nothing",
    );

    let r = b.send(Method::POST, "/res/create", &[]).await;
    assert_eq!(r.status, StatusCode::CREATED);
    for path in ["/res/loc", "/res/cloc"] {
        assert!(
            !b.get(path).await.cache_status().hit,
            "{path} invalidated by the 201"
        );
        assert_eq!(gets(path), 2, "{path}");
    }

    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        b.get("/res/b").await;
        let before = gets("/res/b");
        assert_eq!(
            b.send(method.clone(), "/res/b", &[]).await.status,
            StatusCode::OK
        );
        assert!(
            !b.get("/res/b").await.cache_status().hit,
            "{method} invalidated"
        );
        assert_eq!(gets("/res/b"), before + 1, "{method}");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_are_405_unless_forwarding_is_on() {
    let b = Bench::new(|_| Reply::ok("x").header("cache-control", "max-age=60"), "").await;
    b.get("/res").await;
    let r = b.send(Method::POST, "/res", &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    assert_hit(&b.get("/res").await, "nothing invalidated");
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_needs_the_admin_token() {
    let origin =
        TestOrigin::fixed(Reply::ok("purge me").header("cache-control", "max-age=600")).await;
    let edge = TokenEdge::start(&origin).await;
    let c = plain_client();
    get(&c, &edge.url("/p/a.ts")).await;
    assert!(get(&c, &edge.url("/p/a.ts")).await.cache_status().hit);

    let r = edge.purge(&c, "path=/p/a.ts", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = edge.purge(&c, "path=/p/a.ts", Some("wrong-token")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        get(&c, &edge.url("/p/a.ts")).await.cache_status().hit,
        "still cached"
    );

    let r = edge.purge(&c, "path=/p/a.ts", Some(TokenEdge::TOKEN)).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get(&c, &edge.url("/p/a.ts")).await;
    assert_eq!(
        r.cache_status().fwd.as_deref(),
        Some("uri-miss"),
        "{}",
        r.cache_status().raw
    );
    assert_eq!(origin.count(), 2);
    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_prefix_removes_every_key_under_it() {
    let origin = TestOrigin::start(|p| {
        Reply::ok(format!("{}", p.uri)).header("cache-control", "max-age=600")
    })
    .await;
    let edge = TokenEdge::start(&origin).await;
    let c = plain_client();
    let paths = ["/live/a.ts", "/live/b/c.ts", "/vod/a.ts"];
    for p in paths {
        get(&c, &edge.url(p)).await;
    }
    let r = edge
        .purge(&c, "prefix=/live/", Some(TokenEdge::TOKEN))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!get(&c, &edge.url("/live/a.ts")).await.cache_status().hit);
    assert!(!get(&c, &edge.url("/live/b/c.ts")).await.cache_status().hit);
    assert!(
        get(&c, &edge.url("/vod/a.ts")).await.cache_status().hit,
        "outside the prefix"
    );
    assert_eq!(origin.count(), 5);
    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_purge_marks_stale_so_the_next_request_revalidates() {
    let origin = TestOrigin::start(validating_origin(Some("\"soft\""), None, "max-age=600")).await;
    let edge = TokenEdge::start(&origin).await;
    let c = plain_client();
    get(&c, &edge.url("/soft")).await;
    assert!(get(&c, &edge.url("/soft")).await.cache_status().hit);

    let r = edge
        .purge(&c, "path=/soft&soft=1", Some(TokenEdge::TOKEN))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"purged 1\n");
    let r = get(&c, &edge.url("/soft")).await;
    assert_revalidated(&r);
    let seen = origin.last_request();
    assert_eq!(header(&seen, "if-none-match"), Some("\"soft\""));
    assert!(
        get(&c, &edge.url("/soft")).await.cache_status().hit,
        "fresh again"
    );
    assert_eq!(origin.count(), 2);
    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_every_variant_and_is_disabled_without_a_token() {
    let origin = TestOrigin::start(|p| {
        let lang = p
            .headers
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        Reply::ok(lang)
            .header("cache-control", "max-age=600")
            .header("vary", "Accept-Language")
    })
    .await;
    let edge = TokenEdge::start(&origin).await;
    let c = plain_client();
    let lang_get =
        |lang: &'static str| send(c.get(edge.url("/pv")).header("accept-language", lang));
    lang_get("en").await;
    lang_get("fr").await;
    assert!(lang_get("fr").await.cache_status().hit);
    let r = edge.purge(&c, "path=/pv", Some(TokenEdge::TOKEN)).await;
    assert_eq!(r.status, StatusCode::OK);
    for lang in ["en", "fr"] {
        let r = lang_get(lang).await;
        assert!(!r.cache_status().hit, "{lang}: {}", r.cache_status().raw);
        assert_eq!(&r.body[..], lang.as_bytes());
    }
    assert_eq!(origin.count(), 4);
    edge.stop().await;

    // Without an admin token purge is refused, not open.
    let edge = TokenEdge::start_with(&origin, None).await;
    let r = edge.purge(&c, "path=/pv", Some("")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    edge.stop().await;
    origin.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The client's own directives.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_if_cached_is_504_unless_stored() {
    let b = Bench::new(
        |_| Reply::ok("cached").header("cache-control", "max-age=60"),
        "",
    )
    .await;
    let oic = [("cache-control", "only-if-cached")];
    let r = b.get_with("/oic", &oic).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(b.origin.count(), 0, "never forwarded");
    b.get("/oic").await;
    let r = b.get_with("/oic", &oic).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_hit(&r, "stored");
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_no_cache_is_ignored_by_default() {
    let b = Bench::new(validating_origin(Some("\"n\""), None, "max-age=600"), "").await;
    b.get("/cnc").await;
    for h in [
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
        ("pragma", "no-cache"),
    ] {
        assert_hit(&b.get_with("/cnc", &[h]).await, h.1);
    }
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_no_cache_revalidates_when_honoured() {
    let b = Bench::new(
        validating_origin(Some("\"n\""), None, "max-age=600"),
        "cache:\n  honor_client_no_cache: true\n",
    )
    .await;
    b.get("/cnc").await;
    for (i, h) in [
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
        ("pragma", "no-cache"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = b.get_with("/cnc", &[h]).await;
        assert_revalidated(&r);
        assert_eq!(b.origin.count(), i + 2, "{}: forwarded", h.1);
        assert_eq!(
            header(&b.origin.last_request(), "if-none-match"),
            Some("\"n\"")
        );
    }
    assert_hit(&b.get("/cnc").await, "a plain request");
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Age, Date and Cache-Status on every response.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_date_and_cache_status_on_every_response() {
    let b = Bench::new(validated_object(), "").await;
    let mut answers = vec![("miss", b.get("/all").await)];
    answers.push(("hit", b.get("/all").await));
    answers.push((
        "304",
        b.get_with("/all", &[("if-none-match", "\"obj-1\"")]).await,
    ));
    answers.push(("206", b.get_with("/all", &[("range", "bytes=0-1")]).await));
    answers.push(("416", b.get_with("/all", &[("range", "bytes=5000-")]).await));
    answers.push(("412", b.get_with("/all", &[("if-match", "\"nope\"")]).await));
    answers.push((
        "only-if-cached",
        b.get_with("/none", &[("cache-control", "only-if-cached")])
            .await,
    ));
    answers.push(("HEAD", b.send(Method::HEAD, "/all", &[]).await));
    answers.push(("405", b.send(Method::POST, "/all", &[]).await));
    for (what, r) in &answers {
        assert!(r.header("date").is_some(), "{what}: Date");
        assert!(r.header("age").is_some(), "{what}: Age in {:?}", r.headers);
        assert!(
            r.header("cache-status")
                .is_some_and(|v| v.starts_with("streamedge")),
            "{what}: Cache-Status in {:?}",
            r.headers
        );
    }
    let failed = &answers[5].1;
    assert_eq!(failed.status, StatusCode::PRECONDITION_FAILED);
    assert_hit(failed, "a 412 decided on the stored object");
    let not_cached = &answers[6].1;
    assert_eq!(not_cached.status, StatusCode::GATEWAY_TIMEOUT);
    let cs = not_cached.cache_status();
    assert!(
        !cs.hit && cs.fwd.is_none(),
        "only-if-cached is not forwarded: {}",
        cs.raw
    );
    b.stop().await;
}
