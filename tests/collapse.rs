//! Request collapsing over real sockets: one origin fetch however many clients ask at once,
//! streamed to all of them as it arrives; failures reach every reader as errors; unshareable
//! and oversized answers are not shared or stored.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{StatusCode, Version};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long the origin takes to send a large segment in the herd tests.
const TRICKLE: Duration = Duration::from_millis(1000);

/// Runs `n` concurrent streamed GETs of `url` and returns their results (bounded).
async fn herd(client: &reqwest::Client, url: &str, n: usize, expected: &Bytes) -> Vec<Streamed> {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let req = client.get(url);
        let expected = expected.clone();
        set.spawn(async move { stream(req, expected).await });
    }
    within(60, "all clients to finish", async {
        let mut out = Vec::with_capacity(n);
        while let Some(r) = set.join_next().await {
            out.push(r.expect("client task"));
        }
        out
    })
    .await
}

/// Every client got a complete, identical body; exactly one led the fetch; the others
/// joined it (or, arriving after it ended, hit what it stored); first bytes came early.
fn assert_one_fetch_shared(results: &[Streamed], expected: &Bytes) -> usize {
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.status, StatusCode::OK, "client {i}");
        assert!(
            r.complete(expected),
            "client {i}: {} of {} bytes, matches {}, error {:?}",
            r.len,
            expected.len(),
            r.matches,
            r.error
        );
    }

    let statuses: Vec<CacheStatus> = results.iter().map(|r| r.cache_status()).collect();
    let leaders = statuses.iter().filter(|c| !c.hit && !c.collapsed).count();
    let collapsed = statuses.iter().filter(|c| c.collapsed).count();
    let hits = statuses.iter().filter(|c| c.hit).count();
    assert_eq!(
        leaders,
        1,
        "one leader: {:?}",
        statuses.iter().map(|c| &c.raw).collect::<HashSet<_>>()
    );
    assert_eq!(leaders + collapsed + hits, results.len());
    assert!(collapsed > 0, "followers say collapsed");
    for c in statuses.iter().filter(|c| c.collapsed) {
        assert_eq!(c.fwd_status, Some(200), "{}", c.raw);
    }

    let firsts: Vec<Duration> = results.iter().filter_map(|r| r.first_chunk).collect();
    let med = median(firsts);
    assert!(
        med < TRICKLE / 2,
        "median time to first chunk {med:?} is not well before the {TRICKLE:?} trickle ends"
    );
    collapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_cold_requests_make_one_origin_fetch() {
    let body = payload(4 << 20, 10);
    let origin = TestOrigin::fixed(
        Reply::ok(body.clone())
            .header("content-type", "video/mp2t")
            .trickle_over(64 << 10, TRICKLE),
    )
    .await;
    let edge = TestEdge::start(&origin).await;
    // HTTP/1.1, one connection per concurrent request. In the clear: 200 TLS handshakes and
    // 800 MB of TLS records cost seconds in a debug build and prove nothing about collapsing
    // (the HTTP/2 test below runs over TLS).
    let client = edge.http_client();
    let url = edge.http_url("/vod/1080p/seg-00042.ts");

    let results = herd(&client, &url, 200, &body).await;
    assert_eq!(origin.count(), 1, "exactly one origin request");
    assert!(results.iter().all(|r| r.version == Version::HTTP_11));
    let collapsed = assert_one_fetch_shared(&results, &body);

    let m = edge.metrics().await;
    assert!(
        metric_sum(&m, "streamedge_collapsed_requests_total", &[]) >= collapsed as f64,
        "{m}"
    );
    let r = get(&client, &url).await;
    assert!(r.cache_status().hit, "stored after the fill");
    assert_eq!(origin.count(), 1);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_on_one_connection_collapse() {
    let body = payload(4 << 20, 11);
    let origin = TestOrigin::start({
        let body = body.clone();
        move |parts| match parts.uri.path() {
            "/warm-up.ts" => Reply::ok("warm"),
            _ => Reply::ok(body.clone()).trickle_over(64 << 10, TRICKLE),
        }
    })
    .await;
    // One client connection at most: a second would wait for a permit and the herd would
    // time out, so passing proves the streams shared one connection.
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| c.server.max_connections = 1)
        .start()
        .await;
    // h2 only in ALPN: the client pools one connection and multiplexes every request on it.
    let client = edge.h2_client();
    let warm = get(&client, &edge.https_url("/warm-up.ts")).await;
    assert_eq!(warm.version, Version::HTTP_2);

    let results = herd(
        &client,
        &edge.https_url("/vod/1080p/seg-00043.ts"),
        64,
        &body,
    )
    .await;
    assert!(results.iter().all(|r| r.version == Version::HTTP_2));
    assert_eq!(origin.count_path("/vod/1080p/seg-00043.ts"), 1);
    assert_one_fetch_shared(&results, &body);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_gets_the_whole_object() {
    let body = payload(1 << 20, 12);
    let origin =
        TestOrigin::fixed(Reply::ok(body.clone()).trickle(64 << 10, Duration::from_millis(50)))
            .await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.https_client();
    let url = edge.https_url("/vod/seg-late.ts");

    let mut first = within(10, "first head", client.get(&url).send())
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 * (64 << 10) {
        let c = within(10, "first body", first.chunk())
            .await
            .unwrap()
            .unwrap();
        got.extend_from_slice(&c);
    }
    // Mid-stream: the origin is still sending.
    let late = within(10, "late joiner", stream(client.get(&url), body.clone())).await;
    assert!(
        late.complete(&body),
        "late joiner: {} bytes, {:?}",
        late.len,
        late.error
    );
    let cs = late.cache_status();
    assert!(cs.collapsed, "joined the fill in flight: {}", cs.raw);
    while let Some(c) = within(10, "first body", first.chunk()).await.unwrap() {
        got.extend_from_slice(&c);
    }
    assert!(got == body, "the first client's body too");
    assert_eq!(origin.count(), 1);

    edge.stop().await;
    origin.stop().await;
}

/// Twelve readers (h1 and h2) of a fill the origin breaks off: each must see its body fail,
/// after the bytes that did arrive; they shared one fetch; nothing was stored, so once the
/// origin behaves the next request fetches again and that answer is stored.
async fn broken_fill_fails_every_reader(
    origin: &TestOrigin,
    edge: &TestEdge,
    path: &str,
    body: &Bytes,
) {
    let before = origin.count_path(path);
    let h1 = edge.http_client();
    let h2 = edge.h2_client();
    let mut set = JoinSet::new();
    for i in 0..12 {
        let req = if i % 2 == 0 {
            h1.get(edge.http_url(path))
        } else {
            h2.get(edge.https_url(path))
        };
        set.spawn(stream(req, body.clone()));
    }
    let results = within(30, "readers", async {
        let mut v = Vec::new();
        while let Some(r) = set.join_next().await {
            v.push(r.unwrap());
        }
        v
    })
    .await;
    assert_eq!(
        origin.count_path(path),
        before + 1,
        "{path}: the readers shared one fetch"
    );
    for r in &results {
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(
            r.error.is_some(),
            "{path}: a broken body must fail, not end cleanly ({} bytes)",
            r.len
        );
        assert!(r.len < body.len() && r.matches, "{path}: {} bytes", r.len);
    }

    origin.set_script({
        let body = body.clone();
        move |_| Reply::ok(body.clone())
    });
    let r = get(&h1, &edge.http_url(path)).await;
    assert_eq!(origin.count_path(path), before + 2, "{path}: not stored");
    assert!(r.body == body, "{path}: complete after the origin recovers");
    let cs = r.cache_status();
    assert!(cs.is_miss() && cs.stored, "{path}: {}", cs.raw);
    let r = get(&h1, &edge.http_url(path)).await;
    assert!(r.cache_status().hit && r.body == body, "{path}");
    assert_eq!(origin.count_path(path), before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_cut_mid_body_is_an_error_for_every_reader() {
    let body = payload(1 << 20, 13);
    let half = body.len() / 2;
    let cut = {
        let body = body.clone();
        move |parts: &http::request::Parts| {
            let reply = Reply::ok(body.clone())
                .trickle(64 << 10, Duration::from_millis(60))
                .cut(half);
            if parts.uri.path().contains("chunked") {
                reply.chunked()
            } else {
                reply
            }
        }
    };
    let origin = TestOrigin::start(cut.clone()).await;
    let edge = TestEdge::start(&origin).await;

    // Content-Length announced, half sent, connection aborted.
    broken_fill_fails_every_reader(&origin, &edge, "/vod/seg-cut.ts", &body).await;
    // Chunked: the last chunk never comes.
    origin.set_script(cut);
    broken_fill_fails_every_reader(&origin, &edge, "/vod/seg-cut-chunked.ts", &body).await;

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_stalling_mid_body_is_an_error_for_every_reader() {
    let body = payload(1 << 20, 16);
    // Half the body, then nothing for ten seconds: the idle timeout fails the fill.
    let stall = {
        let body = body.clone();
        move |_: &http::request::Parts| {
            Reply::ok(body.clone()).trickle(body.len() / 2, Duration::from_secs(10))
        }
    };
    let origin = TestOrigin::start(stall).await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| c.fetch.idle_timeout = Duration::from_millis(400))
        .start()
        .await;

    let started = Instant::now();
    broken_fill_fails_every_reader(&origin, &edge, "/vod/seg-stall.ts", &body).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_timeout_is_504_for_every_waiter() {
    let origin = TestOrigin::fixed(Reply::ok("never").hang()).await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| {
            c.fetch.first_byte_timeout = Duration::from_millis(500);
            c.fetch.max_attempts = 1;
        })
        .start()
        .await;
    let client = edge.http_client();
    let url = edge.http_url("/vod/seg-hang.ts");

    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..20 {
        set.spawn(send(client.get(&url)));
    }
    let mut n = 0;
    while let Some(r) = within(20, "waiters", set.join_next()).await {
        let r = r.unwrap();
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(r.cache_status().detail.as_deref(), Some("origin-timeout"));
        n += 1;
    }
    assert_eq!(n, 20);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(
        origin.count(),
        1,
        "the waiters shared one (timed out) fetch"
    );

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_going_away_does_not_stop_the_fill() {
    let body = payload(2 << 20, 14);
    let origin = TestOrigin::start({
        let body = body.clone();
        move |parts| match parts.uri.path() {
            // Slow head: the leader goes away before the origin answers.
            "/vod/seg-early.ts" => Reply::ok(body.clone()).delay(Duration::from_millis(400)),
            _ => Reply::ok(body.clone()).trickle_over(64 << 10, Duration::from_millis(1000)),
        }
    })
    .await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.http_client();

    // 1. The leader drops its response after reading a little of the body.
    let url = edge.http_url("/vod/seg-leader.ts");
    let mut leader = within(10, "leader head", client.get(&url).send())
        .await
        .unwrap();
    within(10, "leader first chunk", leader.chunk())
        .await
        .unwrap()
        .expect("a first chunk");
    let (heads_tx, mut heads_rx) = tokio::sync::mpsc::channel::<()>(8);
    let mut followers = JoinSet::new();
    for _ in 0..5 {
        let req = client.get(&url);
        let tx = heads_tx.clone();
        let expected = body.clone();
        followers.spawn(async move {
            let resp = req.send().await.expect("follower head");
            let _ = tx.send(()).await;
            let cs = CacheStatus::of(resp.headers());
            let bytes = resp.bytes().await;
            (cs, bytes.map(|b| b == expected))
        });
    }
    for _ in 0..5 {
        within(10, "follower heads", heads_rx.recv()).await;
    }
    let dropped_at = Instant::now();
    drop(leader);
    while let Some(r) = within(20, "followers", followers.join_next()).await {
        let (cs, complete) = r.unwrap();
        assert!(cs.collapsed, "joined while in flight: {}", cs.raw);
        assert!(matches!(complete, Ok(true)), "follower body: {complete:?}");
    }
    assert!(
        dropped_at.elapsed() > Duration::from_millis(100),
        "the leader left while the body was still coming"
    );
    assert_eq!(origin.count_path("/vod/seg-leader.ts"), 1);
    let r = get(&client, &url).await;
    assert!(
        r.cache_status().hit,
        "the fill completed and stored: {}",
        r.cache_status().raw
    );
    assert!(r.body == body);
    assert_eq!(origin.count_path("/vod/seg-leader.ts"), 1);

    // 2. The leader goes away before the origin has even answered.
    let url = edge.http_url("/vod/seg-early.ts");
    let leader = tokio::spawn({
        let req = client.get(&url);
        async move { req.send().await.map(|r| r.status()) }
    });
    origin.wait_for_count(2).await;
    let mut followers = JoinSet::new();
    for _ in 0..3 {
        followers.spawn(stream(client.get(&url), body.clone()));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    leader.abort();
    let _ = leader.await;
    while let Some(r) = within(20, "followers", followers.join_next()).await {
        let r = r.unwrap();
        assert!(r.complete(&body), "{} bytes, {:?}", r.len, r.error);
    }
    assert_eq!(origin.count_path("/vod/seg-early.ts"), 1);
    assert!(get(&client, &url).await.cache_status().hit);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_going_away_does_not_disturb_the_others() {
    let body = payload(2 << 20, 17);
    let origin = TestOrigin::fixed(
        Reply::ok(body.clone()).trickle_over(64 << 10, Duration::from_millis(600)),
    )
    .await;
    let edge = TestEdge::start(&origin).await;
    // All streams on one HTTP/2 connection: the one that goes away is reset, not the others.
    let client = edge.h2_client();
    let url = edge.https_url("/vod/seg-quitter.ts");

    let mut set = JoinSet::new();
    for _ in 0..6 {
        set.spawn(stream(client.get(&url), body.clone()));
    }
    let mut quitter = within(10, "quitter head", client.get(&url).send())
        .await
        .unwrap();
    within(10, "quitter chunk", quitter.chunk())
        .await
        .unwrap()
        .expect("a first chunk");
    drop(quitter);
    while let Some(r) = within(20, "readers", set.join_next()).await {
        let r = r.unwrap();
        assert!(r.complete(&body), "{} bytes, {:?}", r.len, r.error);
    }
    assert_eq!(origin.count(), 1);
    assert!(get(&client, &url).await.cache_status().hit);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_set_cookie_answers_are_not_shared() {
    let served = Arc::new(AtomicUsize::new(0));
    let origin = TestOrigin::start({
        let served = served.clone();
        move |parts| {
            let n = served.fetch_add(1, Ordering::SeqCst);
            let reply = Reply::ok(format!("for request {n}")).delay(Duration::from_millis(150));
            match parts.uri.path() {
                "/user/private.ts" => reply.header("cache-control", "private, max-age=60"),
                _ => reply.header("set-cookie", format!("session={n}").as_str()),
            }
        }
    })
    .await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.http_client();
    const N: usize = 8;

    for path in ["/user/private.ts", "/user/cookie.ts"] {
        let url = edge.http_url(path);
        let mut set = JoinSet::new();
        for _ in 0..N {
            set.spawn(send(client.get(&url)));
        }
        let mut bodies = HashSet::new();
        while let Some(r) = within(20, "clients", set.join_next()).await {
            let r = r.unwrap();
            assert_eq!(r.status, StatusCode::OK);
            let cs = r.cache_status();
            assert!(!cs.hit && !cs.collapsed && !cs.stored, "{path}: {}", cs.raw);
            bodies.insert(r.body);
        }
        assert_eq!(bodies.len(), N, "{path}: every client got its own answer");
        assert_eq!(
            origin.count_path(path),
            N,
            "{path}: one origin request per client"
        );

        // Remembered as uncacheable (hit-for-miss): straight to the origin.
        let r = get(&client, &url).await;
        assert!(!r.cache_status().hit);
        assert_eq!(origin.count_path(path), N + 1, "{path}");
    }

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_objects_stream_to_every_waiter_and_are_not_stored() {
    let body = payload(3 << 20, 15);
    let origin = TestOrigin::start({
        let body = body.clone();
        move |parts| {
            let reply = Reply::ok(body.clone())
                .delay(Duration::from_millis(200))
                .trickle_over(128 << 10, Duration::from_millis(300));
            if parts.uri.path().contains("chunked") {
                reply.chunked()
            } else {
                reply
            }
        }
    })
    .await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| {
            c.cache.max_size = 64 << 20;
            c.cache.max_object_size = 1 << 20;
        })
        .start()
        .await;
    let client = edge.http_client();

    // With Content-Length the size is known at the head; chunked, only mid-body.
    for path in ["/vod/huge.ts", "/vod/huge-chunked.ts"] {
        let url = edge.http_url(path);
        let results = herd(&client, &url, 10, &body).await;
        for r in &results {
            assert_eq!(r.status, StatusCode::OK, "{path}");
            assert!(r.complete(&body), "{path}: {} bytes, {:?}", r.len, r.error);
            if !path.contains("chunked") {
                // Chunked, the size is learnt only after the head announced the fill.
                assert!(!r.cache_status().stored, "{path}: {}", r.cache_status().raw);
            }
        }
        let fetched = origin.count_path(path);
        assert!((1..=10).contains(&fetched), "{path}: {fetched}");
        let r = get(&client, &url).await;
        assert!(r.body == body && !r.cache_status().hit, "{path}");
        assert_eq!(
            origin.count_path(path),
            fetched + 1,
            "{path}: nothing stored"
        );
    }

    edge.stop().await;
    origin.stop().await;
}
