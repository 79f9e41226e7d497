//! The store's time rules on a paused clock: how long a hit-for-miss mark lasts, how a stored
//! object ages, and what a soft purge leaves.

use super::*;

fn store() -> Store {
    let cfg = crate::config::parse(
        "listen:\n  http: \"127.0.0.1:1\"\norigins:\n  - url: \"http://127.0.0.1:2\"\n",
    )
    .unwrap();
    Store::new(&cfg.cache)
}

/// A segment stored now: fresh for 10 s, then 20 s of stale-while-revalidate and 60 s of
/// stale-if-error.
fn segment() -> Arc<CachedObject> {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::ETAG, "\"v1\"".parse().unwrap());
    Arc::new(CachedObject {
        hit_head: Default::default(),
        status: StatusCode::OK,
        headers,
        body: Body::Memory(Bytes::from_static(b"segment")),
        kind: ContentKind::Segment,
        freshness: Freshness {
            stored_at: Instant::now(),
            initial_age: Duration::from_secs(2),
            lifetime: Duration::from_secs(10),
            stale_while_revalidate: Duration::from_secs(20),
            stale_if_error: Duration::from_secs(60),
            must_revalidate: false,
            no_cache: false,
            max_age: None,
        },
        vary: None,
        origin: "o".into(),
        encodings: None,
        media: None,
    })
}

fn found(l: Lookup) -> Arc<CachedObject> {
    match l {
        Lookup::Found(_, o) => o,
        other => panic!("expected a stored object, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_hit_for_miss_mark_lasts_its_ttl() {
    let s = store();
    let key = CacheKey::new("/private.ts", None);
    s.mark_hit_for_miss(&key, Duration::from_secs(30)).await;
    tokio::time::advance(Duration::from_millis(29_999)).await;
    assert!(matches!(
        s.lookup(&key, &HeaderMap::new()).await,
        Lookup::HitForMiss(_)
    ));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(matches!(
        s.lookup(&key, &HeaderMap::new()).await,
        Lookup::Missing(_, false)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_zero_hit_for_miss_ttl_leaves_the_stored_object() {
    let s = store();
    let key = CacheKey::new("/seg.ts", None);
    s.insert(&key, &HeaderMap::new(), segment()).await;
    s.mark_hit_for_miss(&key, Duration::ZERO).await;
    found(s.lookup(&key, &HeaderMap::new()).await);
}

#[tokio::test(start_paused = true)]
async fn a_stored_object_ages_with_the_clock_through_its_stale_windows() {
    let s = store();
    let key = CacheKey::new("/seg.ts", None);
    s.insert(&key, &HeaderMap::new(), segment()).await;

    tokio::time::advance(Duration::from_secs(7)).await;
    let o = found(s.lookup(&key, &HeaderMap::new()).await);
    let f = o.freshness;
    let now = Instant::now();
    assert_eq!(
        f.age(now),
        Duration::from_secs(9),
        "initial age + resident time"
    );
    assert!(f.is_fresh(now));
    assert_eq!(f.ttl_secs(now), 1);

    tokio::time::advance(Duration::from_secs(1)).await;
    let now = Instant::now();
    assert!(!f.is_fresh(now), "stale once age reaches the lifetime");
    assert!(f.may_serve_stale_while_revalidate(now));

    tokio::time::advance(Duration::from_secs(20)).await;
    let now = Instant::now();
    assert!(
        f.may_serve_stale_while_revalidate(now),
        "20 s stale: the edge of the window"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let now = Instant::now();
    assert!(!f.may_serve_stale_while_revalidate(now));
    assert!(f.may_answer_for_failed_origin(now, false));
    assert_eq!(f.ttl_secs(now), -21, "any part of a second stale counts");

    tokio::time::advance(Duration::from_secs(40)).await;
    let now = Instant::now();
    assert!(!f.may_serve_stale_on_error(now), "past stale-if-error");
    assert!(!f.may_answer_for_failed_origin(now, false));
    assert!(
        f.may_answer_for_failed_origin(now, true),
        "with no usable origin at all, a stale copy still answers"
    );
}

#[tokio::test(start_paused = true)]
async fn a_soft_purge_leaves_a_stale_copy_without_stale_windows() {
    let s = store();
    let key = CacheKey::new("/seg.ts", None);
    s.insert(&key, &HeaderMap::new(), segment()).await;
    assert_eq!(s.soft_purge(&key).await, 1);
    let o = found(s.lookup(&key, &HeaderMap::new()).await);
    let now = Instant::now();
    assert!(!o.freshness.is_fresh(now));
    assert!(!o.freshness.may_serve_stale_while_revalidate(now));
    assert!(!o.freshness.may_serve_stale_on_error(now));
    assert!(o.has_validator(), "kept for revalidation");
}
