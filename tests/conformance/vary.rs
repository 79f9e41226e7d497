//! Vary: one variant per request header value, Accept-Encoding normalised, `Vary: *`
//! (RFC 9111 §4.1).

use super::bench::*;
use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_stores_one_variant_per_request_header_value() {
    let b = Bench::new(|p| {
        let lang = p
            .headers
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        Reply::ok(format!("lang={lang}"))
            .header("cache-control", "max-age=60")
            .header("vary", "Accept-Language")
    })
    .await;
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    let r = b.get_with("/v", &en).await;
    assert_eq!(r.cache_status().fwd.as_deref(), Some("uri-miss"));
    let r = b.get_with("/v", &fr).await;
    assert_eq!(&r.body[..], b"lang=fr");
    assert_eq!(
        r.cache_status().fwd.as_deref(),
        Some("vary-miss"),
        "{}",
        r.cache_status().raw
    );
    for (h, want) in [(en, "lang=en"), (fr, "lang=fr")] {
        let r = b.get_with("/v", &h).await;
        assert_hit(&r, want);
        assert_eq!(&r.body[..], want.as_bytes());
        assert_eq!(r.header("vary"), Some("Accept-Language"));
    }
    assert_eq!(b.origin.count(), 2, "two variants, two origin requests");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_accept_encoding_is_normalised() {
    let b = Bench::new(|p| {
        let ae = p
            .headers
            .get("accept-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        Reply::ok(format!("origin saw {ae}"))
            .header("cache-control", "max-age=60")
            .header("vary", "Accept-Encoding")
    })
    .await;
    let r = b.get_with("/ae", &[("accept-encoding", "gzip")]).await;
    assert_eq!(&r.body[..], b"origin saw gzip");
    let r = b
        .get_with("/ae", &[("accept-encoding", "gzip, deflate")])
        .await;
    assert_hit(&r, "gzip, deflate is the gzip variant");
    let r = b
        .get_with("/ae", &[("accept-encoding", "deflate, gzip;q=0.5")])
        .await;
    assert_hit(&r, "gzip with a lower q is still the gzip variant");
    let r = b.get_with("/ae", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(&r.body[..], b"origin saw br", "{}", r.cache_status().raw);
    let r = b
        .get_with("/ae", &[("accept-encoding", "br;q=1, gzip;q=0.1")])
        .await;
    assert_hit(&r, "the br variant");
    let r = b.get("/ae").await;
    assert_eq!(&r.body[..], b"origin saw identity");
    assert_eq!(b.origin.count(), 3, "gzip, br, identity");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_star_is_never_served_from_the_cache() {
    let b = Bench::new(|_| {
        Reply::ok("star")
            .header("cache-control", "max-age=60")
            .header("vary", "*")
    })
    .await;
    for _ in 0..3 {
        assert_not_stored(&b.get("/star").await, "Vary: *");
    }
    assert_eq!(b.origin.count(), 3);
    b.stop().await;
}
