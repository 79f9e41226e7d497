//! The edge's foundation over real sockets: miss → hit, HEAD, HTTPS with h2 by ALPN and with
//! HTTP/1.1, the plain listener, what is not stored, expiry, errors and their statuses,
//! header hygiene, the admin listener, `streamedge check`, and the shutdown drain.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{StatusCode, Version};
use tokio::time::Instant;

const SEGMENT: &str = "/vod/720p/seg-00001.ts";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_then_hit_then_head_from_cache() {
    let body = payload(300_000, 1);
    let origin =
        TestOrigin::fixed(Reply::ok(body.clone()).header("content-type", "video/mp2t")).await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.https_client();
    let url = edge.https_url(SEGMENT);

    let first = get(&client, &url).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, body);
    let cs = first.cache_status();
    assert!(cs.is_miss(), "{}", cs.raw);
    assert_eq!(cs.fwd.as_deref(), Some("uri-miss"), "{}", cs.raw);
    assert_eq!(cs.fwd_status, Some(200), "{}", cs.raw);
    assert!(cs.stored, "{}", cs.raw);
    assert!(cs.ttl.is_some_and(|t| t > 86_000), "{}", cs.raw);
    assert_eq!(first.header("content-type"), Some("video/mp2t"));
    assert_eq!(first.header("content-length"), Some("300000"));

    let second = get(&client, &url).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body, first.body, "identical bytes from the cache");
    let cs = second.cache_status();
    assert!(cs.hit && cs.fwd.is_none(), "{}", cs.raw);
    assert!(second.header("age").is_some(), "Age on a hit");
    assert_eq!(second.header("content-type"), Some("video/mp2t"));
    assert_eq!(origin.count(), 1, "one origin request for miss + hit");

    let h = head(&client, &url).await;
    assert_eq!(h.status, StatusCode::OK);
    assert!(h.body.is_empty(), "HEAD has no body");
    assert_eq!(h.header("content-length"), Some("300000"));
    assert!(h.cache_status().hit, "{}", h.cache_status().raw);
    assert_eq!(origin.count(), 1, "HEAD answered from the cache");

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_on_a_miss_fetches_once_and_stores() {
    let body = payload(100_000, 4);
    let origin = TestOrigin::fixed(Reply::ok(body.clone())).await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.https_client();
    let url = edge.https_url("/vod/seg-head-first.ts");

    let h = head(&client, &url).await;
    assert_eq!(h.status, StatusCode::OK);
    assert!(h.body.is_empty());
    assert_eq!(h.header("content-length"), Some("100000"));
    let seen = origin.last_request();
    assert_eq!(
        seen.method,
        http::Method::GET,
        "the fill fetches the whole object"
    );

    let g = get(&client, &url).await;
    assert!(g.body == body);
    assert_eq!(origin.count(), 1, "{}", g.cache_status().raw);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_negotiates_h2_by_alpn_and_h1_when_asked() {
    let origin = TestOrigin::fixed(Reply::ok("segment")).await;
    let edge = TestEdge::start(&origin).await;

    let h2 = get(&edge.https_client(), &edge.https_url(SEGMENT)).await;
    assert_eq!(h2.version, Version::HTTP_2, "ALPN picks h2");
    assert_eq!(h2.status, StatusCode::OK);
    assert_eq!(&h2.body[..], b"segment");

    let h1 = get(&edge.https_h1_client(), &edge.https_url(SEGMENT)).await;
    assert_eq!(h1.version, Version::HTTP_11);
    assert_eq!(h1.status, StatusCode::OK);
    assert_eq!(&h1.body[..], b"segment");
    assert!(h1.cache_status().hit);
    assert_eq!(origin.count(), 1);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_listener_serves_and_shares_the_cache() {
    let origin = TestOrigin::fixed(Reply::ok("plain")).await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.http_client();

    let r = get(&client, &edge.http_url(SEGMENT)).await;
    assert_eq!(r.version, Version::HTTP_11);
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"plain");
    assert!(r.cache_status().is_miss());
    let r = get(&edge.https_client(), &edge.https_url(SEGMENT)).await;
    assert!(r.cache_status().hit, "one cache for both listeners");
    assert_eq!(origin.count(), 1);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_and_private_are_not_stored() {
    let origin = TestOrigin::start(|parts| match parts.uri.path() {
        "/a/no-store.ts" => Reply::ok("no-store body").header("cache-control", "no-store"),
        _ => Reply::ok("private body").header("cache-control", "private, max-age=60"),
    })
    .await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.https_client();

    for (path, body) in [
        ("/a/no-store.ts", "no-store body"),
        ("/a/private.ts", "private body"),
    ] {
        for _ in 0..2 {
            let r = get(&client, &edge.https_url(path)).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(&r.body[..], body.as_bytes());
            let cs = r.cache_status();
            assert!(!cs.hit && !cs.stored, "{path}: {}", cs.raw);
        }
        assert_eq!(origin.count_path(path), 2, "{path} is not stored");
    }

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_expiry_refetches() {
    let origin =
        TestOrigin::fixed(Reply::ok("short-lived").header("cache-control", "max-age=1")).await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.https_client();
    let url = edge.https_url("/live/short.ts");

    assert!(get(&client, &url).await.cache_status().is_miss());
    // Half-way through its one second of freshness: the whole-second `Date` the origin sends
    // must not eat into it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = get(&client, &url).await;
    assert!(
        r.cache_status().hit,
        "fresh within max-age: {}",
        r.cache_status().raw
    );
    assert_eq!(origin.count(), 1);

    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = get(&client, &url).await;
    assert_eq!(&r.body[..], b"short-lived");
    assert!(!r.cache_status().hit, "expired: {}", r.cache_status().raw);
    assert_eq!(origin.count(), 2, "an expired object is fetched again");

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_passes_through() {
    let origin = TestOrigin::fixed(
        Reply::ok("no such segment\n")
            .status(404)
            .header("content-type", "text/plain"),
    )
    .await;
    let edge = TestEdge::start(&origin).await;

    let r = get(&edge.https_client(), &edge.https_url("/vod/missing.ts")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(&r.body[..], b"no such segment\n");
    assert_eq!(r.cache_status().fwd_status, Some(404));
    assert_eq!(origin.count(), 1);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_down_is_a_quick_502() {
    let dead = dead_port().await;
    let edge = TestEdge::start_with(&[format!("http://{dead}")], "").await;
    let client = edge.https_client();

    let started = Instant::now();
    let r = get(&client, &edge.https_url(SEGMENT)).await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let cs = r.cache_status();
    assert_eq!(
        cs.detail.as_deref(),
        Some("origin-unreachable"),
        "{}",
        cs.raw
    );
    assert!(
        !String::from_utf8_lossy(&r.body).contains("127.0.0.1"),
        "generic body"
    );

    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_object_streams_through_and_is_not_stored() {
    let body = payload(3 << 20, 2);
    let origin =
        TestOrigin::fixed(Reply::ok(body.clone()).trickle(256 << 10, Duration::from_millis(5)))
            .await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| {
            c.cache.max_size = 64 << 20;
            c.cache.max_object_size = 1 << 20;
        })
        .start()
        .await;
    let client = edge.https_client();
    let url = edge.https_url("/vod/big.ts");

    for _ in 0..2 {
        let r = get(&client, &url).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body.len(), body.len());
        assert!(r.body == body, "complete, identical body");
        let cs = r.cache_status();
        assert!(!cs.hit && !cs.stored, "{}", cs.raw);
    }
    assert_eq!(origin.count(), 2, "an oversized object is never stored");

    // Without Content-Length the size is only learnt mid-body.
    origin.set_script({
        let body = body.clone();
        move |_| {
            Reply::ok(body.clone())
                .chunked()
                .trickle(256 << 10, Duration::from_millis(5))
        }
    });
    let url = edge.https_url("/vod/big-chunked.ts");
    for _ in 0..2 {
        let r = get(&client, &url).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body == body, "complete body ({} bytes)", r.body.len());
    }
    assert_eq!(origin.count_path("/vod/big-chunked.ts"), 2);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_both_ways_and_via_added() {
    let origin = TestOrigin::fixed(
        Reply::ok("hop")
            .header("connection", "x-origin-hop")
            .header("x-origin-hop", "secret")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("x-end-to-end", "kept")
            .header("via", "1.1 shield"),
    )
    .await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.http_client();

    let r = send(
        client
            .get(edge.http_url(SEGMENT))
            .header("connection", "x-client-hop")
            .header("x-client-hop", "secret")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic Zm9vOmJhcg==")
            .header("x-request-id", "abc"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    let seen = origin.last_request();
    for name in ["x-client-hop", "keep-alive", "proxy-authorization", "range"] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} forwarded: {:?}",
            seen.headers
        );
    }
    if let Some(c) = seen.headers.get("connection") {
        assert!(!c.to_str().unwrap().contains("x-client-hop"), "{c:?}");
    }
    assert_eq!(seen.headers.get("x-request-id").unwrap(), "abc");
    let via = seen.headers.get("via").expect("Via to the origin");
    assert!(via.to_str().unwrap().contains("streamedge"), "{via:?}");

    for name in ["x-origin-hop", "keep-alive", "proxy-authenticate"] {
        assert!(r.header(name).is_none(), "{name} passed to the client");
    }
    if let Some(c) = r.header("connection") {
        assert!(!c.contains("x-origin-hop"), "{c}");
    }
    assert_eq!(r.header("x-end-to-end"), Some("kept"));
    // Via lists every hop (RFC 9110 §7.6.3): the origin's, then ours.
    let via: Vec<String> = r
        .headers
        .get_all("via")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let via = via.join(", ");
    assert!(
        via.contains("shield") && via.contains("streamedge"),
        "Via: {via}"
    );

    // The same from the cache, twice (the second hit reuses the head the first made): each
    // hop once in Via, one Age, Cache-Status and Content-Length.
    for _ in 0..2 {
        let r = get(&client, &edge.http_url(SEGMENT)).await;
        assert!(r.cache_status().hit);
        assert!(r.header("x-origin-hop").is_none() && r.header("keep-alive").is_none());
        assert_eq!(r.header("x-end-to-end"), Some("kept"));
        let via: Vec<&str> = r
            .headers
            .get_all("via")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(via, ["1.1 shield", "1.1 streamedge"]);
        for name in ["age", "cache-status", "content-length"] {
            assert_eq!(r.headers.get_all(name).iter().count(), 1, "{name}");
        }
        assert_eq!(r.header("content-length"), Some("3"));
        assert_eq!(&r.body[..], b"hop");
    }

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_body_passes_through_byte_identical() {
    use tokio::io::AsyncReadExt;
    let plain = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n".repeat(50);
    let mut gz = Vec::new();
    async_compression::tokio::bufread::GzipEncoder::new(plain.as_bytes())
        .read_to_end(&mut gz)
        .await
        .unwrap();
    let gz = Bytes::from(gz);
    let origin = TestOrigin::fixed(
        Reply::ok(gz.clone())
            .header("content-encoding", "gzip")
            .header("content-type", "application/vnd.apple.mpegurl")
            .header("cache-control", "max-age=30"),
    )
    .await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.https_client();
    let url = edge.https_url("/live/index.m3u8");

    for expect_hit in [false, true] {
        let r = send(client.get(&url).header("accept-encoding", "gzip")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.body, gz, "byte-identical gzip body");
        assert_eq!(r.cache_status().hit, expect_hit, "{}", r.cache_status().raw);
        let mut decoded = String::new();
        async_compression::tokio::bufread::GzipDecoder::new(&r.body[..])
            .read_to_string(&mut decoded)
            .await
            .unwrap();
        assert_eq!(decoded, plain);
    }
    assert_eq!(origin.count(), 1);
    assert_eq!(
        origin
            .last_request()
            .headers
            .get("accept-encoding")
            .unwrap(),
        "gzip"
    );

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_405_with_allow() {
    let origin = TestOrigin::fixed(Reply::ok("x")).await;
    let edge = TestEdge::start(&origin).await;

    for client in [edge.https_client(), edge.https_h1_client()] {
        let r = send(client.post(edge.https_url(SEGMENT)).body("data")).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
        let allow = r.header("allow").expect("Allow");
        assert!(allow.contains("GET") && allow.contains("HEAD"), "{allow}");
    }
    assert_eq!(origin.count(), 0);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_has_metrics_and_healthz() {
    let origin = TestOrigin::fixed(Reply::ok("x")).await;
    let edge = TestEdge::start(&origin).await;
    get(&edge.https_client(), &edge.https_url(SEGMENT)).await;

    let client = edge.http_client();
    let h = get(&client, &edge.admin_url("/healthz")).await;
    assert_eq!(h.status, StatusCode::OK);
    let m = edge.metrics().await;
    assert!(m.contains("streamedge_requests_total"), "{m}");
    assert!(
        metric_sum(&m, "streamedge_requests_total", &[]) >= 1.0,
        "{m}"
    );
    assert!(m.contains("streamedge_origin_requests_total"), "{m}");
    let nf = get(&client, &edge.admin_url("/nope")).await;
    assert_eq!(nf.status, StatusCode::NOT_FOUND);
    // The admin listener is not the proxy.
    assert_eq!(origin.count(), 1);

    edge.stop().await;
    origin.stop().await;
}

#[test]
fn check_command_names_field_and_line() {
    let dir = TempDir::new("check");
    let run = |name: &str, yaml: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamedge"))
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run streamedge check");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (status, _, stderr) = run(
        "bad-size.yaml",
        "listen:\n  http: \"127.0.0.1:8080\"\ncache:\n  max_size: lots\norigins:\n  - url: \"http://127.0.0.1:9000\"\n",
    );
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("cache.max_size"), "{stderr}");
    assert!(
        stderr.contains("bad-size.yaml:4:"),
        "names line 4: {stderr}"
    );

    let (status, _, stderr) = run(
        "too-big.yaml",
        "listen:\n  http: \"127.0.0.1:8080\"\ncache:\n  max_size: 1MiB\n  max_object_size: 2MiB\norigins:\n  - url: \"http://127.0.0.1:9000\"\n",
    );
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("cache.max_object_size"), "{stderr}");
    assert!(stderr.contains("too-big.yaml:5:"), "names line 5: {stderr}");

    let (status, stdout, stderr) = run(
        "good.yaml",
        "listen:\n  http: \"127.0.0.1:8080\"\ncache:\n  max_size: 64MiB\norigins:\n  - url: \"http://127.0.0.1:9000\"\n",
    );
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_a_slow_response() {
    let body = payload(256 << 10, 3);
    let origin = TestOrigin::fixed(
        Reply::ok(body.clone()).trickle_over(16 << 10, Duration::from_millis(1000)),
    )
    .await;
    let mut edge = TestEdge::builder(&[origin.url()])
        .config(|c| c.server.drain_timeout = Duration::from_secs(10))
        .start()
        .await;
    let client = edge.https_client();

    let mut resp = within(
        10,
        "response head",
        client.get(edge.https_url(SEGMENT)).send(),
    )
    .await
    .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let first = within(10, "first chunk", resp.chunk())
        .await
        .unwrap()
        .unwrap();
    let started = Instant::now();
    edge.begin_stop();

    let mut got = first.to_vec();
    while let Some(c) = within(10, "body chunk", resp.chunk())
        .await
        .expect("the response completes during the drain")
    {
        got.extend_from_slice(&c);
    }
    assert!(
        got == body,
        "complete body ({} of {} bytes)",
        got.len(),
        body.len()
    );
    assert!(
        started.elapsed() > Duration::from_millis(300),
        "the body was still in flight"
    );
    drop(resp);

    let https = edge.https;
    edge.stop().await;
    let refused = tokio::net::TcpStream::connect(https).await;
    assert!(refused.is_err(), "no new connections after shutdown");
    origin.stop().await;
}

/// How many sockets listen on `port` (IPv4 loopback), from `/proc/net/tcp`: each per-core
/// runtime has its own `SO_REUSEPORT` copy of a listener. The kernel writes the table a page
/// at a time, and the other tests of this binary open and close sockets meanwhile, so one
/// read can miss a line: the most of five reads (a socket that is gone is in none).
fn listening_sockets(port: u16) -> usize {
    let local = format!(":{port:04X}");
    let once = || {
        std::fs::read_to_string("/proc/net/tcp")
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
            })
            .count()
    };
    (0..5).map(|_| once()).max().unwrap_or(0)
}

/// Many connections at once (HTTP/1.1 in the clear and TLS + HTTP/2; with `per_core` spread
/// by the kernel over the cores' listeners) make one origin request for a cold object; hits
/// follow; a body in flight at shutdown is finished; then nothing listens any more.
async fn serves_collapses_and_drains(runtime: &str, listeners: usize) {
    let body = payload(200_000, 9);
    let origin = TestOrigin::fixed(Reply::ok(body.clone()).delay(Duration::from_millis(400))).await;
    let mut edge = TestEdge::builder(&[origin.url()])
        .yaml(&format!(
            "server:\n  runtime: {runtime}\n  drain_timeout: 10s\n"
        ))
        .start()
        .await;
    let (http, https) = (edge.http, edge.https);
    let deadline = Instant::now() + Duration::from_secs(5);
    while listening_sockets(http.port()) != listeners && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listening_sockets(http.port()), listeners, "HTTP listeners");
    assert_eq!(
        listening_sockets(https.port()),
        listeners,
        "HTTPS listeners"
    );

    // 40 connections: a client (a connection) each, half HTTP/1.1, half h2 over TLS.
    let mut fetches = Vec::new();
    for i in 0..40 {
        let (client, url) = if i % 2 == 0 {
            (edge.http_client(), edge.http_url(SEGMENT))
        } else {
            (edge.h2_client(), edge.https_url(SEGMENT))
        };
        fetches.push(tokio::spawn(async move {
            let r = get(&client, &url).await;
            (r.status, r.body, r.version)
        }));
    }
    for f in fetches {
        let (status, got, version) = within(20, "collapsed fetch", f).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(got == body, "whole body");
        assert!(matches!(version, Version::HTTP_11 | Version::HTTP_2));
    }
    assert_eq!(
        origin.count(),
        1,
        "one origin request from every connection"
    );
    for _ in 0..10 {
        let hit = get(&edge.http_client(), &edge.http_url(SEGMENT)).await;
        assert!(hit.cache_status().hit, "{}", hit.cache_status().raw);
        assert!(hit.body == body);
    }

    // A body in flight when shutdown begins is finished.
    let slow = "/vod/720p/seg-00002.ts";
    origin.set_script(move |_| {
        Reply::ok(payload(256 << 10, 4)).trickle_over(16 << 10, Duration::from_millis(1000))
    });
    let client = edge.https_client();
    let mut resp = within(10, "slow head", client.get(edge.https_url(slow)).send())
        .await
        .expect("response");
    let mut got = within(10, "first chunk", resp.chunk())
        .await
        .unwrap()
        .unwrap()
        .to_vec();
    edge.begin_stop();
    while let Some(c) = within(10, "chunk", resp.chunk())
        .await
        .expect("the response completes during the drain")
    {
        got.extend_from_slice(&c);
    }
    assert!(got == payload(256 << 10, 4), "complete body after shutdown");
    drop(resp);
    edge.stop().await;
    assert_eq!(listening_sockets(http.port()), 0, "no HTTP listener left");
    assert_eq!(listening_sockets(https.port()), 0, "no HTTPS listener left");
    assert!(tokio::net::TcpStream::connect(http).await.is_err());
    origin.stop().await;
}

/// `server.runtime: per_core` (the default): a single-threaded runtime per CPU, each on its own
/// `SO_REUSEPORT` copy of every client listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_runtime_collapses_across_cores_and_drains() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    serves_collapses_and_drains("per_core", cores).await;
}

/// `server.runtime: work_stealing`: one listener per address on the shared runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_stealing_runtime_collapses_and_drains() {
    serves_collapses_and_drains("work_stealing", 1).await;
}

/// Another edge started on an address one already listens on fails to bind ("address in
/// use"), as without `SO_REUSEPORT`: the per-core copies share a port only among themselves,
/// never with another process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_edge_on_a_busy_address_fails_to_bind() {
    let origin = TestOrigin::fixed(Reply::ok("x")).await;
    let edge = TestEdge::start(&origin).await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let deadline = Instant::now() + Duration::from_secs(5);
    while listening_sockets(edge.http.port()) != cores && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let yaml = format!(
        "listen:\n  http: \"{}\"\norigins:\n  - url: \"{}\"\n",
        edge.http,
        origin.url()
    );
    let config = streamedge::config::parse(&yaml).expect("config");
    assert_eq!(
        config.server.runtime,
        streamedge::config::RuntimeModel::PerCore
    );
    let err = streamedge::Listeners::bind(&config)
        .await
        .err()
        .expect("the busy address is refused");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains("listen.http"), "{err}");
    assert_eq!(
        listening_sockets(edge.http.port()),
        cores,
        "the running edge's listeners only"
    );
    edge.stop().await;
    origin.stop().await;
}
