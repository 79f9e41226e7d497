//! Invalidation by unsafe methods (RFC 9111 §4.4) and purge on the admin listener (token,
//! path, prefix, soft, variants).

use http::{Method, StatusCode};

use super::bench::*;
use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_the_target_on_success() {
    let b = Bench::with(
        |p| match (p.method.as_str(), p.uri.path()) {
            ("GET", path) => Reply::ok(format!("GET {path}")).header("cache-control", "max-age=60"),
            ("POST", "/res/fails") => Reply::ok("no").status(500),
            ("POST", "/res/create") => Reply::ok("created")
                .status(201)
                .header("location", "/res/loc")
                .header("content-location", "/res/cloc"),
            _ => Reply::ok("done"),
        },
        |c| c.server.forward_unsafe_methods = true,
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
    let b = Bench::new(|_| Reply::ok("x").header("cache-control", "max-age=60")).await;
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
    let edge = TestEdge::start(&origin).await;
    let c = edge.http_client();
    get(&c, &edge.http_url("/p/a.ts")).await;
    assert!(get(&c, &edge.http_url("/p/a.ts")).await.cache_status().hit);

    let r = edge.purge_as("path=/p/a.ts", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = edge.purge_as("path=/p/a.ts", Some("wrong-token")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        get(&c, &edge.http_url("/p/a.ts")).await.cache_status().hit,
        "still cached"
    );

    let r = edge.purge("path=/p/a.ts").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get(&c, &edge.http_url("/p/a.ts")).await;
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
    let edge = TestEdge::start(&origin).await;
    let c = edge.http_client();
    let paths = ["/live/a.ts", "/live/b/c.ts", "/vod/a.ts"];
    for p in paths {
        get(&c, &edge.http_url(p)).await;
    }
    let r = edge.purge("prefix=/live/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        !get(&c, &edge.http_url("/live/a.ts"))
            .await
            .cache_status()
            .hit
    );
    assert!(
        !get(&c, &edge.http_url("/live/b/c.ts"))
            .await
            .cache_status()
            .hit
    );
    assert!(
        get(&c, &edge.http_url("/vod/a.ts"))
            .await
            .cache_status()
            .hit,
        "outside the prefix"
    );
    assert_eq!(origin.count(), 5);
    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_purge_marks_stale_so_the_next_request_revalidates() {
    let origin = TestOrigin::start(validating_origin(Some("\"soft\""), None, "max-age=600")).await;
    let edge = TestEdge::start(&origin).await;
    let c = edge.http_client();
    get(&c, &edge.http_url("/soft")).await;
    assert!(get(&c, &edge.http_url("/soft")).await.cache_status().hit);

    let r = edge.purge("path=/soft&soft=1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"purged 1\n");
    let r = get(&c, &edge.http_url("/soft")).await;
    assert_revalidated(&r);
    let seen = origin.last_request();
    assert_eq!(header(&seen, "if-none-match"), Some("\"soft\""));
    assert!(
        get(&c, &edge.http_url("/soft")).await.cache_status().hit,
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
    let edge = TestEdge::start(&origin).await;
    let c = edge.http_client();
    let lang_get =
        |lang: &'static str| send(c.get(edge.http_url("/pv")).header("accept-language", lang));
    lang_get("en").await;
    lang_get("fr").await;
    assert!(lang_get("fr").await.cache_status().hit);
    let r = edge.purge("path=/pv").await;
    assert_eq!(r.status, StatusCode::OK);
    for lang in ["en", "fr"] {
        let r = lang_get(lang).await;
        assert!(!r.cache_status().hit, "{lang}: {}", r.cache_status().raw);
        assert_eq!(&r.body[..], lang.as_bytes());
    }
    assert_eq!(origin.count(), 4);
    edge.stop().await;

    // Without an admin token purge is refused, not open.
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| {
            c.admin
                .as_mut()
                .expect("the harness's admin listener")
                .token = None
        })
        .start()
        .await;
    let r = edge.purge_as("path=/pv", Some("")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    edge.stop().await;
    origin.stop().await;
}
