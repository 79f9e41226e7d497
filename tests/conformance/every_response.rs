//! Age, Date and Cache-Status on every response, whatever answered it (RFC 9111 §5.1,
//! RFC 9110 §6.6.1, RFC 9211).

use http::{Method, StatusCode};

use super::bench::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_date_and_cache_status_on_every_response() {
    let b = Bench::new(validated_object()).await;
    let mut answers = vec![("miss", b.get("/all").await)];
    answers.push(("hit", b.get("/all").await));
    answers.push((
        "304",
        b.get_with("/all", &[("if-none-match", "\"obj-1\"")]).await,
    ));
    answers.push(("206", b.get_with("/all", &[("range", "bytes=0-1")]).await));
    answers.push(("416", b.get_with("/all", &[("range", "bytes=5000-")]).await));
    answers.push(("412", b.get_with("/all", &[("if-match", "\"nope\"")]).await));
    answers.push((
        "only-if-cached",
        b.get_with("/none", &[("cache-control", "only-if-cached")])
            .await,
    ));
    answers.push(("HEAD", b.send(Method::HEAD, "/all", &[]).await));
    answers.push(("405", b.send(Method::POST, "/all", &[]).await));
    for (what, r) in &answers {
        assert!(r.header("date").is_some(), "{what}: Date");
        assert!(r.header("age").is_some(), "{what}: Age in {:?}", r.headers);
        assert!(
            r.header("cache-status")
                .is_some_and(|v| v.starts_with("streamedge")),
            "{what}: Cache-Status in {:?}",
            r.headers
        );
    }
    // Errors the edge makes (412, 504, 405 here) can be read by a browser player on another
    // origin: without CORS the browser hides the status behind a network failure.
    for i in [5, 6, 8] {
        let (what, r) = &answers[i];
        assert!(
            r.status.is_client_error() || r.status.is_server_error(),
            "{what}"
        );
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("*"),
            "{what}: CORS on an edge-made error"
        );
    }
    let failed = &answers[5].1;
    assert_eq!(failed.status, StatusCode::PRECONDITION_FAILED);
    assert_hit(failed, "a 412 decided on the stored object");
    let not_cached = &answers[6].1;
    assert_eq!(not_cached.status, StatusCode::GATEWAY_TIMEOUT);
    let cs = not_cached.cache_status();
    assert!(
        !cs.hit && cs.fwd.is_none(),
        "only-if-cached is not forwarded: {}",
        cs.raw
    );
    b.stop().await;
}
