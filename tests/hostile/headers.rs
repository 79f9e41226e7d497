//! Request headers to origins: an allow-list, so headers that change an origin's answer without
//! being in the cache key never reach it; the client's address is the real one.

use crate::common::*;
use crate::raw;

/// An origin that builds its answer from whatever forwarding headers it gets (as frameworks
/// that trust X-Forwarded-* do), and marks it cacheable.
async fn gullible_origin() -> TestOrigin {
    TestOrigin::start(|parts| {
        let h = |n: &str| {
            parts
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        Reply::ok(format!(
            "#EXTM3U\n# base {}://{}{}\n",
            h("x-forwarded-proto"),
            h("x-forwarded-host"),
            h("x-original-url"),
        ))
        .header("cache-control", "max-age=60")
    })
    .await
}

const POISON: &[&str] = &[
    "X-Forwarded-Host: evil.example",
    "X-Forwarded-Scheme: nothttps",
    "X-Forwarded-Proto: nothttps",
    "X-Forwarded-Port: 6666",
    "X-Forwarded-Prefix: /evil",
    "X-Forwarded-Server: evil.example",
    "X-Forwarded-SSL: off",
    "X-Original-URL: /admin",
    "X-Original-URI: /admin",
    "X-Original-Host: evil.example",
    "X-Rewrite-URL: /admin",
    "X-HTTP-Method-Override: DELETE",
    "X-HTTP-Method: DELETE",
    "X-Method-Override: DELETE",
    "X-Host: evil.example",
    "Front-End-Https: off",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
    "Upgrade: websocket",
    "X-Custom-Tenant: evil",
    "True-Client-IP: 6.6.6.6",
    "Cookie: session=evil",
    "Authorization: Basic ZXZpbDpldmls",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_headers_never_reach_the_origin_so_they_cannot_poison_the_cache() {
    let origin = gullible_origin().await;
    let edge = TestEdge::start(&origin).await;
    let mut attack = String::from("Host: edge.test\r\nUser-Agent: hls.js\r\n");
    for h in POISON.iter().filter(|h| !h.starts_with("Authorization")) {
        attack.push_str(h);
        attack.push_str("\r\n");
    }
    let r = raw::get(edge.http, "/live/index.m3u8", &attack).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body, b"#EXTM3U\n# base -://--\n");
    let seen = origin.last_request();
    for h in POISON {
        let name = h.split(':').next().unwrap();
        assert!(
            seen.headers.get(name).is_none(),
            "{name} reached the origin: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers.get("user-agent").unwrap(), "hls.js");

    // Everyone else gets the clean answer.
    let r = get(&edge.http_client(), &edge.http_url("/live/index.m3u8")).await;
    assert_eq!(r.body, "#EXTM3U\n# base -://--\n");
    assert!(r.cache_status().hit);
    assert_eq!(origin.count(), 1);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_may_forward_a_header_by_name() {
    let origin = gullible_origin().await;
    let edge = TestEdge::start_with(
        &[origin.url()],
        "fetch:\n  forward_headers: [x-forwarded-proto, accept]\n",
    )
    .await;
    let r = raw::get(
        edge.http,
        "/a.m3u8",
        "Host: edge.test\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nUser-Agent: x\r\n",
    )
    .await;
    assert_eq!(r.body, b"#EXTM3U\n# base https://--\n");
    let seen = origin.last_request();
    assert!(seen.headers.get("user-agent").is_none(), "not in the list");
    assert!(seen.headers.get("x-forwarded-host").is_none());

    // A connection-nominated header is hop-by-hop even when it is on the list.
    let r = raw::get(
        edge.http,
        "/b.m3u8",
        "Host: edge.test\r\nX-Forwarded-Proto: https\r\nConnection: x-forwarded-proto\r\n",
    )
    .await;
    assert_eq!(r.body, b"#EXTM3U\n# base -://--\n");

    let config = streamedge::config::parse(
        "listen:\n  http: \"127.0.0.1:1\"\norigins:\n  - url: \"http://127.0.0.1:2\"\n\
         fetch:\n  forward_headers: [X-Forwarded-Host]\n",
    )
    .unwrap();
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("x-forwarded-host") && warnings[0].contains("Vary"));
    let e = streamedge::config::parse(
        "listen:\n  http: \"127.0.0.1:1\"\norigins:\n  - url: \"http://127.0.0.1:2\"\n\
         fetch:\n  forward_headers: [accept, x-forwarded-for]\n",
    )
    .unwrap_err();
    assert_eq!(
        (e.line, e.field.as_str()),
        (6, "fetch.forward_headers"),
        "{e}"
    );

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_gets_the_real_client_address_whatever_the_client_claims() {
    let origin = TestOrigin::fixed(Reply::ok("x").header("cache-control", "no-store")).await;
    let spoof = "Host: edge.test\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\
                 Forwarded: for=6.6.6.6;host=evil.example\r\nTrue-Client-IP: 6.6.6.6\r\n";

    let edge = TestEdge::start(&origin).await;
    let r = raw::get(edge.http, "/a.ts", spoof).await;
    assert_eq!(r.status, 200);
    let seen = origin.last_request();
    assert_eq!(seen.headers.get("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(seen.headers.get("x-real-ip").unwrap(), "127.0.0.1");
    assert_eq!(seen.headers.get("forwarded").unwrap(), "for=127.0.0.1");
    assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert!(seen.headers.get("true-client-ip").is_none());
    edge.stop().await;

    // Behind a trusted load balancer its chain is kept and the client is the first untrusted
    // address from the right.
    let edge = TestEdge::start_with(
        &[origin.url()],
        "server:\n  trusted_proxies: [127.0.0.0/8, 10.0.0.0/8]\n",
    )
    .await;
    let r = raw::get(
        edge.http,
        "/b.ts",
        "Host: edge.test\r\nX-Forwarded-For: 6.6.6.6, 203.0.113.9, 10.1.2.3\r\n\
         Forwarded: for=203.0.113.9\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = origin.last_request();
    assert_eq!(
        seen.headers.get("x-forwarded-for").unwrap(),
        "6.6.6.6, 203.0.113.9, 10.1.2.3, 127.0.0.1"
    );
    assert_eq!(seen.headers.get("x-real-ip").unwrap(), "203.0.113.9");
    assert_eq!(
        seen.headers.get("forwarded").unwrap(),
        "for=203.0.113.9, for=127.0.0.1"
    );
    edge.stop().await;
    origin.stop().await;
}
