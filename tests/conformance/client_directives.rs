//! The client's own directives: only-if-cached, and no-cache / max-age=0 / Pragma honoured
//! only when configured (RFC 9111 §5.2.1).

use http::StatusCode;

use super::bench::*;
use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_if_cached_is_504_unless_stored() {
    let b = Bench::new(|_| Reply::ok("cached").header("cache-control", "max-age=60")).await;
    let oic = [("cache-control", "only-if-cached")];
    let r = b.get_with("/oic", &oic).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(b.origin.count(), 0, "never forwarded");
    b.get("/oic").await;
    let r = b.get_with("/oic", &oic).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_hit(&r, "stored");
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_no_cache_is_ignored_by_default() {
    let b = Bench::new(validating_origin(Some("\"n\""), None, "max-age=600")).await;
    b.get("/cnc").await;
    for h in [
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
        ("pragma", "no-cache"),
    ] {
        assert_hit(&b.get_with("/cnc", &[h]).await, h.1);
    }
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_no_cache_revalidates_when_honoured() {
    let b = Bench::with(validating_origin(Some("\"n\""), None, "max-age=600"), |c| {
        c.cache.honor_client_no_cache = true
    })
    .await;
    b.get("/cnc").await;
    for (i, h) in [
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
        ("pragma", "no-cache"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = b.get_with("/cnc", &[h]).await;
        assert_revalidated(&r);
        assert_eq!(b.origin.count(), i + 2, "{}: forwarded", h.1);
        assert_eq!(
            header(&b.origin.last_request(), "if-none-match"),
            Some("\"n\"")
        );
    }
    assert_hit(&b.get("/cnc").await, "a plain request");
    b.stop().await;
}
