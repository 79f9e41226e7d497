//! Cache-Control parsing: case, quoting, several field lines, duplicate and invalid values
//! (RFC 9111 §4.2.1, §5.2).

use super::bench::*;
use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directives_are_case_insensitive_and_values_may_be_quoted() {
    let b = Bench::new(|p| match p.uri.path() {
        "/upper" => Reply::ok("upper").header("cache-control", "PUBLIC, MAX-AGE=60"),
        _ => Reply::ok("quoted").header("cache-control", "max-age=\"60\""),
    })
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
    let b = Bench::new(|_| {
        Reply::ok("two lines")
            .header("cache-control", "public")
            .header("cache-control", "max-age=60")
    })
    .await;
    b.get("/lines").await;
    assert_hit(&b.get("/lines").await, "second line's max-age applies");
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_duplicate_max_age_makes_the_response_stale() {
    let b = Bench::new(|p| {
        let r = Reply::ok("dup").header("cache-control", "max-age=60, max-age=120");
        match p.uri.path() {
            "/dup-etag" if p.headers.get("if-none-match").is_some() => {
                Reply::ok("").status(304).header("etag", "\"d1\"")
            }
            "/dup-etag" => r.header("etag", "\"d1\""),
            _ => r,
        }
    })
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
    let b = Bench::new(|p| match p.uri.path() {
        "/s/bad.ts" => Reply::ok("bad").header("cache-control", "max-age=abc"),
        "/s/empty.ts" => Reply::ok("empty").header("cache-control", "max-age="),
        _ => Reply::ok("negative").header("cache-control", "max-age=-5"),
    })
    .await;
    for path in ["/s/bad.ts", "/s/empty.ts", "/s/negative.ts"] {
        for _ in 0..2 {
            assert_not_stored(&b.get(path).await, path);
        }
        assert_eq!(b.origin.count_path(path), 2, "{path}");
    }
    b.stop().await;
}
