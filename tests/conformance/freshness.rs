//! Freshness: which field decides (s-maxage, max-age, Expires, CDN-Cache-Control and the
//! targeted header, the config's default TTLs), and Age (RFC 9111 §4.2, RFC 9213).

use std::time::Duration;

use http::HeaderName;

use super::bench::*;
use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s_maxage_wins_over_max_age() {
    let b = Bench::new(|p| match p.uri.path() {
        "/short" => Reply::ok("s").header("cache-control", "max-age=3600, s-maxage=1"),
        _ => Reply::ok("l").header("cache-control", "max-age=0, s-maxage=60"),
    })
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
    let b = Bench::new(|p| match p.uri.path() {
        "/future" => Reply::ok("f")
            .header("cache-control", "max-age=1")
            .header("expires", &http_date(3600)),
        _ => Reply::ok("p")
            .header("cache-control", "max-age=60")
            .header("expires", &http_date(-3600)),
    })
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
    let b = Bench::new(|p| match p.uri.path() {
        "/in-a-minute" => Reply::ok("e")
            .header("date", &http_date(0))
            .header("expires", &http_date(60)),
        "/zero" => Reply::ok("z").header("expires", "0"),
        _ => Reply::ok("p").header("expires", &http_date(-60)),
    })
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
    let b = Bench::new(|p| match p.uri.path() {
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
    })
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
    let b = Bench::new(|_| {
        Reply::ok("edge")
            .header("cache-control", "no-store")
            .header("cdn-cache-control", "no-store")
            .header("streamedge-cache-control", "max-age=60")
    })
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
    let b = Bench::with(script, |c| {
        c.cache.targeted_header = Some(HeaderName::from_static("x-edge-cc"))
    })
    .await;
    b.get("/custom").await;
    assert_hit(&b.get("/custom").await, "the configured header");
    b.get("/default").await;
    assert_not_stored(
        &b.get("/default").await,
        "the default name is no longer targeted",
    );
    b.stop().await;

    let b = Bench::with(script, |c| c.cache.targeted_header = None).await;
    b.get("/default").await;
    assert_not_stored(&b.get("/default").await, "disabled: Cache-Control decides");
    assert_eq!(b.origin.count(), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_age_is_served_and_shortens_freshness() {
    let b = Bench::new(|_| {
        Reply::ok("aged")
            .header("cache-control", "max-age=31")
            .header("age", "30")
    })
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
    let b = Bench::new(|_| {
        Reply::ok("dated")
            .header("cache-control", "max-age=31")
            .header("date", &http_date(-30))
    })
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
    let b = Bench::with(
        |p| match p.uri.path() {
            "/s/told.ts" => Reply::ok("told").header("cache-control", "max-age=5"),
            "/m/list.m3u8" => {
                Reply::ok("#EXTM3U\n").header("content-type", "application/vnd.apple.mpegurl")
            }
            _ => Reply::ok("silent"),
        },
        |c| {
            c.cache.ttl.segment = Duration::from_secs(3600);
            c.cache.ttl.manifest = Duration::from_secs(7);
            c.cache.ttl.other = Duration::ZERO;
        },
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
