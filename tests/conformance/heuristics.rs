//! Heuristic freshness and which statuses are stored, including the negative TTL
//! (RFC 9111 §3, §4.2.2).

use super::bench::*;
use super::common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristic_freshness_from_last_modified() {
    let b = Bench::new(|p| match p.uri.path() {
        "/old" => Reply::ok("old").header("last-modified", &http_date(-10 * 86_400)),
        "/recent" => Reply::ok("recent").header("last-modified", &http_date(-100)),
        _ => Reply::ok("no validator"),
    })
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
    let b = Bench::new(|p| {
        let status: u16 = p.uri.path()[1..].parse().unwrap();
        let r = Reply::ok(if status == 204 { "" } else { "body" }).status(status);
        let r = if (300..400).contains(&status) {
            r.header("location", "/elsewhere")
        } else {
            r
        };
        r.header("last-modified", &http_date(-86_400))
    })
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
    let b = Bench::new(|p| match p.uri.path() {
        "/302-max-age" => Reply::ok("moved")
            .status(302)
            .header("location", "/x")
            .header("cache-control", "max-age=60"),
        "/500-max-age" => Reply::ok("broken but says so")
            .status(500)
            .header("cache-control", "max-age=60"),
        _ => Reply::ok("broken").status(500),
    })
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
    let b = Bench::with(
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
        |c| c.cache.ttl.negative = Duration::from_secs(1),
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
