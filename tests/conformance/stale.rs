//! Stale content: stale-while-revalidate and stale-if-error, from the origin and from the
//! config (RFC 5861).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use streamedge::config::KindDurations;

use super::bench::*;
use super::common::*;

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
    let b = Bench::new(script).await;
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
    let b = Bench::with(script, |c| {
        c.cache.stale_while_revalidate = KindDurations {
            manifest: Duration::ZERO,
            segment: Duration::ZERO,
            other: Duration::from_secs(30),
        };
    })
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
    let b = Bench::new(script).await;
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
    let mut b = Bench::with(
        |_| Reply::ok("kept").header("cache-control", "max-age=1, stale-if-error=60"),
        |c| {
            c.fetch.passive_fall = 100;
            c.fetch.connect_timeout = Duration::from_millis(500);
        },
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
    let b = Bench::with(
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
        |c| c.fetch.passive_fall = 100,
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
    let b = Bench::with(
        move |_| {
            let r = Reply::ok("before").header("cache-control", "max-age=1, stale-if-error=60");
            if n.fetch_add(1, Ordering::SeqCst) == 0 {
                r
            } else {
                r.hang()
            }
        },
        |c| {
            c.fetch.first_byte_timeout = Duration::from_millis(300);
            c.fetch.passive_fall = 100;
        },
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
    let mut b = Bench::with(
        |p| Reply::ok(format!("copy of {}", p.uri.path())).header("cache-control", "max-age=1"),
        |c| {
            c.cache.stale_if_error = KindDurations {
                manifest: Duration::ZERO,
                segment: Duration::from_secs(3600),
                other: Duration::ZERO,
            };
            c.fetch.passive_fall = 100;
            c.fetch.connect_timeout = Duration::from_millis(500);
        },
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
