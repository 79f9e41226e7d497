//! The client's preconditions answered from the cache: If-None-Match, If-Modified-Since,
//! If-Match, If-Unmodified-Since, If-Range (RFC 9110 §13).

use http::StatusCode;

use super::bench::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_is_answered_304_from_the_cache() {
    let b = Bench::new(validated_object()).await;
    b.get("/obj").await;
    for inm in ["\"obj-1\"", "W/\"obj-1\"", "\"x\", \"obj-1\"", "*"] {
        let r = b.get_with("/obj", &[("if-none-match", inm)]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some("\"obj-1\""));
        assert_hit(&r, inm);
    }
    let r = b.get_with("/obj", &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), 1000);
    assert_eq!(b.origin.count(), 1, "never forwarded");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preconditions_on_a_miss_are_evaluated_on_the_fetched_response() {
    let b = Bench::new(validated_object()).await;
    let r = b.get_with("/cold", &[("if-none-match", "\"obj-1\"")]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.cache_status().fwd.as_deref(), Some("uri-miss"));
    assert_eq!(
        header(&b.origin.last_request(), "if-none-match"),
        None,
        "the fill asks for the whole object, not the client's condition"
    );
    let r = b.get_with("/cold2", &[("if-match", "\"nope\"")]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    for path in ["/cold", "/cold2"] {
        let r = b.get(path).await;
        assert_hit(&r, "stored by the conditional miss");
        assert_eq!(r.body.len(), 1000);
    }
    assert_eq!(b.origin.count(), 2);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_modified_since_is_answered_304_and_if_none_match_takes_precedence() {
    let b = Bench::new(validated_object()).await;
    b.get("/obj").await;
    let same = [("if-modified-since", "Tue, 01 Oct 2024 10:00:00 GMT")];
    assert_eq!(
        b.get_with("/obj", &same).await.status,
        StatusCode::NOT_MODIFIED
    );
    let later = [("if-modified-since", "Wed, 02 Oct 2024 10:00:00 GMT")];
    assert_eq!(
        b.get_with("/obj", &later).await.status,
        StatusCode::NOT_MODIFIED
    );
    let earlier = [("if-modified-since", "Mon, 30 Sep 2024 10:00:00 GMT")];
    assert_eq!(b.get_with("/obj", &earlier).await.status, StatusCode::OK);
    let both = [
        ("if-none-match", "\"other\""),
        ("if-modified-since", "Wed, 02 Oct 2024 10:00:00 GMT"),
    ];
    assert_eq!(
        b.get_with("/obj", &both).await.status,
        StatusCode::OK,
        "If-Modified-Since is ignored when If-None-Match is present"
    );
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_and_if_unmodified_since_fail_with_412() {
    let b = Bench::new(validated_object()).await;
    b.get("/obj").await;
    let cases: [(&str, &str, StatusCode); 6] = [
        ("if-match", "\"obj-1\"", StatusCode::OK),
        ("if-match", "*", StatusCode::OK),
        ("if-match", "\"other\"", StatusCode::PRECONDITION_FAILED),
        ("if-match", "W/\"obj-1\"", StatusCode::PRECONDITION_FAILED),
        (
            "if-unmodified-since",
            "Wed, 02 Oct 2024 10:00:00 GMT",
            StatusCode::OK,
        ),
        (
            "if-unmodified-since",
            "Mon, 30 Sep 2024 10:00:00 GMT",
            StatusCode::PRECONDITION_FAILED,
        ),
    ];
    for (name, value, want) in cases {
        let r = b.get_with("/obj", &[(name, value)]).await;
        assert_eq!(r.status, want, "{name}: {value}");
    }
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_range_applies_the_range_only_to_the_same_representation() {
    let b = Bench::new(validated_object()).await;
    b.get("/obj").await;
    let range = ("range", "bytes=0-9");
    for (value, want) in [
        ("\"obj-1\"", StatusCode::PARTIAL_CONTENT),
        ("\"obj-0\"", StatusCode::OK),
        ("W/\"obj-1\"", StatusCode::OK),
        ("Tue, 01 Oct 2024 10:00:00 GMT", StatusCode::PARTIAL_CONTENT),
        ("Mon, 30 Sep 2024 10:00:00 GMT", StatusCode::OK),
    ] {
        let r = b.get_with("/obj", &[range, ("if-range", value)]).await;
        assert_eq!(r.status, want, "If-Range: {value}");
        let expected = if want == StatusCode::OK { 1000 } else { 10 };
        assert_eq!(r.body.len(), expected, "If-Range: {value}");
    }
    b.stop().await;
}
