//! Host: exactly one valid host per request, checked against an absolute-form target, and part
//! of the cache key whenever origins see it (`fetch.host_header: client`).

use streamedge::config::HostHeader;

use crate::common::*;
use crate::raw;

/// An origin whose answer depends on the Host it receives (a multi-tenant origin).
async fn tenant_origin() -> TestOrigin {
    TestOrigin::start(|parts| {
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        Reply::ok(format!("site of {host}")).header("cache-control", "max-age=60")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hosts_answer_is_never_served_to_another_host() {
    let origin = tenant_origin().await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| c.fetch.host_header = HostHeader::Client)
        .start()
        .await;

    let evil = raw::get(edge.http, "/index.m3u8", "Host: evil.example\r\n").await;
    assert_eq!(evil.status, 200);
    assert_eq!(evil.body, b"site of evil.example");
    let good = raw::get(edge.http, "/index.m3u8", "Host: good.example\r\n").await;
    assert_eq!(good.status, 200);
    assert_eq!(good.body, b"site of good.example", "{}", good.head);
    assert_eq!(origin.count(), 2, "each host fetched its own object");

    // Spellings of one host are one host: a hit, and the origin saw the canonical name.
    for spelling in ["GOOD.example", "good.example.", "good.example:80"] {
        let r = raw::get(edge.http, "/index.m3u8", &format!("Host: {spelling}\r\n")).await;
        assert_eq!(r.body, b"site of good.example", "{spelling}");
        assert!(
            r.header("cache-status").unwrap_or_default().contains("hit"),
            "{spelling}: {}",
            r.head
        );
    }
    assert_eq!(origin.count(), 2);

    // Absolute form: the target's host is the host (and must agree with Host).
    let r = raw::get(
        edge.http,
        "http://good.example/index.m3u8",
        "Host: good.example\r\n",
    )
    .await;
    assert_eq!(r.body, b"site of good.example");
    let r = raw::get(
        edge.http,
        "http://good.example/other.m3u8",
        "Host: evil.example\r\n",
    )
    .await;
    assert_eq!(r.status, 400, "absolute-form host and Host disagree");

    // HTTP/2 carries the host as :authority.
    let h2 = get(&edge.h2_client(), &edge.https_url("/index.m3u8")).await;
    assert_eq!(h2.body, format!("site of localhost:{}", edge.https.port()));
    assert_eq!(origin.count(), 3);

    // Purge by path and host takes one host's copy (the path in any spelling); by path alone,
    // every host's.
    let r = edge.purge("path=/%69ndex.m3u8&host=EVIL.example").await;
    assert_eq!(r.body, "purged 1\n");
    let hit = |host: &'static str| async move {
        let r = raw::get(edge.http, "/index.m3u8", &format!("Host: {host}\r\n")).await;
        r.header("cache-status").unwrap_or_default().contains("hit")
    };
    assert!(hit("good.example").await, "another host's copy stays");
    assert!(!hit("evil.example").await, "purged");
    let r = edge.purge("path=/index.m3u8").await;
    assert_eq!(
        r.body, "purged 3\n",
        "good, evil (fetched again) and localhost"
    );
    assert!(!hit("good.example").await);
    let r = edge.purge("path=/a/../../x").await;
    assert_eq!(r.status, http::StatusCode::BAD_REQUEST);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_client_hosts_the_origin_sees_its_own_and_hosts_share_objects() {
    let origin = tenant_origin().await;
    let edge = TestEdge::start(&origin).await;
    let a = raw::get(edge.http, "/index.m3u8", "Host: evil.example\r\n").await;
    let b = raw::get(edge.http, "/index.m3u8", "Host: good.example\r\n").await;
    assert_eq!(a.body, b.body);
    assert_eq!(a.body, format!("site of {}", origin.addr).as_bytes());
    assert_eq!(origin.count(), 1);
    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_invalid_hosts_and_missing_hosts_are_refused() {
    let origin = tenant_origin().await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| c.fetch.host_header = HostHeader::Client)
        .start()
        .await;
    let cases = [
        (
            "two Host headers",
            "Host: good.example\r\nHost: evil.example\r\n",
        ),
        (
            "two equal Host headers",
            "Host: good.example\r\nHost: good.example\r\n",
        ),
        ("no Host", ""),
        ("empty Host", "Host: \r\n"),
        ("space", "Host: evil example\r\n"),
        ("path", "Host: evil.example/x\r\n"),
        ("userinfo", "Host: user@good.example\r\n"),
        ("backslash", "Host: good.example\\evil\r\n"),
        ("bad port", "Host: good.example:99999\r\n"),
        ("two ports", "Host: good.example:80:81\r\n"),
        ("empty label", "Host: good..example\r\n"),
        ("bad IPv6", "Host: [::zz]\r\n"),
        ("percent", "Host: good%2eexample\r\n"),
    ];
    for (what, headers) in cases {
        let r = raw::get(edge.http, "/index.m3u8", headers).await;
        assert_eq!(r.status, 400, "{what}: {}", r.head);
    }
    assert_eq!(origin.count(), 0, "nothing reached the origin");

    // HTTP/1.0 may omit Host (the origin then gets its own authority).
    let r = raw::send(edge.http, b"GET /index.m3u8 HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, format!("site of {}", origin.addr).as_bytes());
    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_hosts_are_matched_in_canonical_form() {
    let origin = tenant_origin().await;
    let edge = TestEdge::start_with(&[origin.url()], "server:\n  hosts: [good.example]\n").await;
    for host in ["good.example", "GOOD.EXAMPLE.", "good.example:8080"] {
        let r = raw::get(edge.http, "/a.ts", &format!("Host: {host}\r\n")).await;
        assert_eq!(r.status, 200, "{host}");
    }
    for host in ["evil.example", "good.example.evil.example", "good-example"] {
        let r = raw::get(edge.http, "/b.ts", &format!("Host: {host}\r\n")).await;
        assert_eq!(r.status, 421, "{host}");
    }
    let r = raw::get(
        edge.http,
        "http://evil.example/b.ts",
        "Host: evil.example\r\n",
    )
    .await;
    assert_eq!(r.status, 421);
    assert_eq!(origin.count(), 1);
    edge.stop().await;
    origin.stop().await;
}
