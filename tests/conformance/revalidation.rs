//! Revalidation of stale objects with If-None-Match / If-Modified-Since, 304 and 200 answers,
//! collapsed revalidations and Vary variants (RFC 9111 §4.3).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;

use super::bench::*;
use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entry_with_etag_is_revalidated_with_if_none_match() {
    let b = Bench::new(validating_origin(Some("\"v1\""), None, "max-age=1")).await;
    assert_eq!(b.get("/rv").await.header("x-gen"), Some("1"));
    // A hit before the revalidation: the head hits reuse (made at the first) must not
    // outlive the object it was made of.
    let first_hit = b.get("/rv").await;
    assert_hit(&first_hit, "stored");
    assert_eq!(first_hit.header("x-gen"), Some("1"));
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
    let b = Bench::new(validating_origin(None, Some(lm.clone()), "max-age=1")).await;
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
    let b = Bench::new(move |_| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        Reply::ok(format!("version {i}"))
            .header("cache-control", "max-age=1")
            .header("etag", &format!("\"v{i}\""))
    })
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
    let b = Bench::new(move |p| {
        let r = validating(p);
        if r.status == StatusCode::NOT_MODIFIED {
            r.delay(Duration::from_millis(400))
        } else {
            r
        }
    })
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
    let b = Bench::new(validating_origin(Some("\"r1\""), None, "max-age=1")).await;
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
    let b = Bench::new(|p| {
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
    })
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
