//! Response directives and what they forbid: no-cache, must-revalidate, no-store, private,
//! Authorization, Set-Cookie, no-transform (RFC 9111 §3, §5.2.2).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use super::bench::*;
use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_revalidates_every_time() {
    let b = Bench::new(|p| {
        if p.headers.get("if-none-match").is_some() {
            Reply::ok("").status(304).header("etag", "\"nc\"")
        } else {
            Reply::ok("no-cache body")
                .header("cache-control", "max-age=3600, no-cache")
                .header("etag", "\"nc\"")
        }
    })
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
    let mut b = Bench::with(
        |p| {
            let cc = match p.uri.path() {
                "/must" => "max-age=1, must-revalidate, stale-if-error=60",
                "/proxy" => "max-age=1, proxy-revalidate, stale-if-error=60",
                "/smax" => "s-maxage=1, stale-if-error=60",
                _ => "max-age=1, stale-if-error=60",
            };
            Reply::ok(format!("body of {}", p.uri.path())).header("cache-control", cc)
        },
        |c| {
            c.fetch.passive_fall = 100;
            c.fetch.connect_timeout = Duration::from_millis(500);
        },
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
    let b = Bench::new(|p| match p.uri.path() {
        "/ns" => Reply::ok("ns").header("cache-control", "no-store, max-age=60"),
        _ => Reply::ok("ok").header("cache-control", "max-age=60"),
    })
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
    let b = Bench::new(|p| match p.uri.path() {
        "/private" => Reply::ok("p").header("cache-control", "private, max-age=60"),
        "/private-field" => {
            Reply::ok("pf").header("cache-control", "private=\"x-user\", max-age=60")
        }
        _ => Reply::ok("pub").header("cache-control", "public, max-age=60"),
    })
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
    let b = Bench::new(|p| {
        let cc = match p.uri.path() {
            "/auth/public" => "public, max-age=60",
            "/auth/smaxage" => "s-maxage=60",
            "/auth/must" => "max-age=60, must-revalidate",
            _ => "max-age=60",
        };
        Reply::ok("secret").header("cache-control", cc)
    })
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
    let b = Bench::new(move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        Reply::ok(format!("for {i}"))
            .header("cache-control", "max-age=60")
            .header("set-cookie", &format!("session={i}"))
    })
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
    let b = Bench::with(
        |_| {
            Reply::ok("shared")
                .header("cache-control", "max-age=60")
                .header("set-cookie", "session=abc")
        },
        |c| c.cache.store_set_cookie = true,
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
    let b = Bench::new(move |p| {
        let cc = if p.uri.path() == "/m/nt.m3u8" {
            "max-age=60, no-transform"
        } else {
            "max-age=60"
        };
        Reply::ok(served.clone())
            .header("content-type", "application/vnd.apple.mpegurl")
            .header("cache-control", cc)
    })
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
