//! Origin health that clients cannot game: an origin's bad answer for one URL is that URL's
//! problem; a request that meets the keep-alive race is sent again on a new connection; and
//! ejection never leaves a request with nothing to try.

use std::time::Duration;

use http::StatusCode;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::common::*;
use crate::rawsrv::{Act, RawOrigin, ok};

/// Answers by the first path segment: every kind of bad answer a client can make an origin give
/// by choosing the URL, and `/ok/...` fine.
fn bad_answers(path: &str, _n: usize) -> Act {
    let kind = path.split('/').nth(1).unwrap_or("");
    match kind {
        "503" => {
            Act::Send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy".to_vec())
        }
        "502" => Act::Send(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n".to_vec()),
        "garbage" => Act::Send(b"HTTP/1.1 9x9 what is this\r\n\r\n".to_vec()),
        "nonsense" => Act::Send(b"\x00\x01\x02 not http at all\r\n\r\n".to_vec()),
        "huge" => {
            let mut r = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
            r.extend(std::iter::repeat_n(b'a', 1 << 20));
            r.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
            Act::Send(r)
        }
        "conflict" => Act::Send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".to_vec(),
        ),
        "slow" => Act::Later(Duration::from_secs(3), ok("late")),
        "444" => Act::Close,
        _ => Act::Send(ok(path)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_for_chosen_urls_do_not_take_the_origin_out() {
    let origin = RawOrigin::start(bad_answers).await;
    let edge = TestEdge::fleet_builder(&[("only", origin.url(), 1)])
        .config(|c| {
            c.fetch.first_byte_timeout = Duration::from_millis(300);
            c.fetch.passive_fall = 2;
            c.fetch.passive_cooldown = Duration::from_secs(60);
        })
        .start()
        .await;
    let client = edge.http_client();
    for round in 0..4 {
        for kind in [
            "503", "502", "garbage", "nonsense", "huge", "conflict", "slow", "444",
        ] {
            let r = get(&client, &edge.http_url(&format!("/{kind}/{round}.ts"))).await;
            assert!(
                matches!(r.status.as_u16(), 502..=504),
                "/{kind}: {}",
                r.status
            );
            assert_ne!(
                r.cache_status().detail.as_deref(),
                Some("no-healthy-origin"),
                "/{kind}/{round}: {}",
                r.cache_status().raw
            );
        }
        let r = get(&client, &edge.http_url(&format!("/ok/{round}.ts"))).await;
        assert_eq!(r.status, StatusCode::OK, "round {round}");
    }
    assert_eq!(edge.origin_up("only").await, Some(1.0));

    // Many concurrent HTTP/2 streams to slow URLs: first-byte timeouts, nothing more.
    let h2 = edge.h2_client();
    let mut set = JoinSet::new();
    for i in 0..64 {
        let (h2, url) = (h2.clone(), edge.https_url(&format!("/slow/h2-{i}.ts")));
        set.spawn(async move { get(&h2, &url).await.status });
    }
    within(20, "slow streams", async {
        while let Some(s) = set.join_next().await {
            assert_eq!(s.unwrap(), StatusCode::GATEWAY_TIMEOUT);
        }
    })
    .await;
    let r = get(&client, &edge.http_url("/ok/after.ts")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(edge.origin_up("only").await, Some(1.0));
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_eject_only_when_the_operator_opts_in() {
    let names = ["st-a", "st-b"];
    let a = RawOrigin::start(bad_answers).await;
    let b = RawOrigin::start(bad_answers).await;
    let edge = TestEdge::fleet_builder(&[("st-a", a.url(), 1), ("st-b", b.url(), 1)])
        .config(|c| {
            c.fetch.passive_fall = 1;
            c.fetch.passive_statuses = vec![503];
            c.fetch.max_attempts = 1;
        })
        .start()
        .await;
    let client = edge.http_client();
    let r = get(&client, &edge.http_url("/503/x.ts")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let down: Vec<bool> = {
        let mut v = Vec::new();
        for n in names {
            v.push(edge.origin_up(n).await == Some(0.0));
        }
        v
    };
    assert_eq!(down.iter().filter(|d| **d).count(), 1, "{down:?}");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keep_alive_race_is_resent_on_a_new_connection() {
    // Each connection answers its first request and closes as the second one arrives: every
    // reuse of a pooled connection meets the race, deterministically.
    let origin = RawOrigin::start(|path, n| {
        if n == 0 {
            Act::Send(ok(path))
        } else {
            Act::Close
        }
    })
    .await;
    let edge = TestEdge::fleet_builder(&[("racy", origin.url(), 1)])
        .config(|c| {
            c.fetch.passive_fall = 1;
            c.fetch.passive_cooldown = Duration::from_secs(60);
        })
        .start()
        .await;
    let client = edge.http_client();
    for i in 0..8 {
        let path = format!("/race/{i}.ts");
        let r = get(&client, &edge.http_url(&path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.cache_status().raw);
        assert_eq!(r.body, path);
    }
    assert_eq!(
        edge.origin_up("racy").await,
        Some(1.0),
        "not held against it"
    );
    let resent = metric_sum(
        &edge.metrics().await,
        "streamedge_origin_resends_total",
        &["origin=\"racy\""],
    );
    // Every other request: the one after a fresh connection reuses it and meets the race.
    assert!(resent >= 3.0, "resends: {resent}");
    // Each race cost one request on a dead connection and one on a new connection.
    assert_eq!(origin.requests() as f64, 8.0 + resent);
    assert!(origin.connections() as f64 >= 2.0 * resent);
    edge.stop().await;

    // Like Node's keepAliveTimeout: idle connections closed after 100 ms, and bursts of
    // requests with pauses around that long. No client sees an error.
    let origin = RawOrigin::start(|path, _| Act::Send(ok(path))).await;
    let idle_closing = IdleCloser::start(origin.addr, Duration::from_millis(100)).await;
    let edge = TestEdge::start_fleet(&[("node", idle_closing.url(), 1)], "").await;
    let client = edge.http_client();
    let mut failed = 0;
    let mut total = 0;
    for burst in 0..15u64 {
        let mut set = JoinSet::new();
        for i in 0..4 {
            let (client, url) = (client.clone(), edge.http_url(&format!("/n/{burst}-{i}.ts")));
            set.spawn(async move { client.get(url).send().await.map(|r| r.status()) });
        }
        while let Some(r) = set.join_next().await {
            total += 1;
            if !matches!(r.unwrap(), Ok(StatusCode::OK)) {
                failed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(90 + (burst % 4) * 5)).await;
    }
    assert_eq!(failed, 0, "{failed} of {total} requests failed");
    assert_eq!(edge.origin_up("node").await, Some(1.0));
    edge.stop().await;
}

/// A TCP proxy in front of an origin that closes a client connection after it has been idle
/// (no bytes from the client) for `idle`.
struct IdleCloser {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl IdleCloser {
    async fn start(upstream: std::net::SocketAddr, idle: Duration) -> IdleCloser {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    Ok((mut client, _)) = listener.accept() => {
                        conns.spawn(async move {
                            let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                                return;
                            };
                            let (mut cr, mut cw) = client.split();
                            let (mut sr, mut sw) = server.split();
                            let mut a = [0u8; 16384];
                            let mut b = [0u8; 16384];
                            loop {
                                tokio::select! {
                                    r = tokio::time::timeout(idle, cr.read(&mut a)) => match r {
                                        Ok(Ok(n)) if n > 0 => {
                                            if sw.write_all(&a[..n]).await.is_err() { return; }
                                        }
                                        _ => return,
                                    },
                                    r = sr.read(&mut b) => match r {
                                        Ok(n) if n > 0 => {
                                            if cw.write_all(&b[..n]).await.is_err() { return; }
                                        }
                                        _ => return,
                                    },
                                }
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        IdleCloser { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for IdleCloser {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_origin_is_out_they_are_tried_anyway() {
    let names = ["out-a", "out-b"];
    let mut origins = Vec::new();
    for n in names {
        origins.push(
            TestOrigin::start(move |_| Reply::ok(n).header("cache-control", "no-store")).await,
        );
    }
    let edge = TestEdge::fleet_builder(&[
        ("out-a", origins[0].url(), 1),
        ("out-b", origins[1].url(), 1),
    ])
    .config(|c| {
        c.fetch.passive_fall = 1;
        c.fetch.passive_cooldown = Duration::from_secs(60);
    })
    .start()
    .await;
    let client = edge.http_client();
    for o in &mut origins {
        o.kill().await;
    }
    for i in 0..3 {
        let r = get(&client, &edge.http_url(&format!("/out/{i}.ts"))).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "tried, refused");
    }
    edge.wait_origin_up("out-a", false, 2).await;
    edge.wait_origin_up("out-b", false, 2).await;

    // Back long before the cool-down ends: the next request finds them.
    for o in &mut origins {
        o.restart().await;
    }
    let t = Instant::now();
    let r = get(&client, &edge.http_url("/out/back.ts")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(t.elapsed() < Duration::from_secs(2));
    let all_down = metric_sum(
        &edge.metrics().await,
        "streamedge_origin_all_down_requests_total",
        &[],
    );
    assert!(all_down >= 3.0, "{all_down}");
    edge.stop().await;
    for o in origins {
        o.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_health_check_still_lets_a_trickle_of_requests_through() {
    // The probe path fails, the content is fine: probes declare every origin down.
    let origin = TestOrigin::start(|parts| {
        if parts.uri.path() == "/hc" {
            Reply::ok("broken").status(500)
        } else {
            Reply::ok("content").header("cache-control", "no-store")
        }
    })
    .await;
    let edge = TestEdge::start_fleet(
        &[("probed", origin.url(), 1)],
        "health_check:\n  path: /hc\n  interval: 100ms\n  rise: 1\n  fall: 1\n",
    )
    .await;
    edge.wait_origin_up("probed", false, 5).await;
    let client = edge.http_client();
    let content = || origin.count() - origin.count_path("/hc");
    let before = content();
    let mut ok = 0;
    let mut unavailable = 0;
    let t = Instant::now();
    let mut i = 0;
    while t.elapsed() < Duration::from_millis(2500) {
        let r = get(&client, &edge.http_url(&format!("/c/{i}.ts"))).await;
        match r.status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => unavailable += 1,
            s => panic!("{s}"),
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        (2..=4).contains(&ok),
        "{ok} trials went through, {unavailable} refused"
    );
    assert!(unavailable > 20, "{unavailable}");
    assert_eq!(content() - before, ok, "only the trials reached the origin");
    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_to_a_request_without_validators_is_an_origin_error() {
    let origin = TestOrigin::fixed(
        Reply::ok("")
            .status(304)
            .header("etag", "\"x\"")
            .header("cache-control", "max-age=60"),
    )
    .await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.http_client();
    for _ in 0..2 {
        let r = get(&client, &edge.http_url("/not-modified/a.ts")).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert!(!r.cache_status().stored, "{}", r.cache_status().raw);
    }
    assert_eq!(origin.count(), 2, "nothing was stored");
    edge.stop().await;
    origin.stop().await;
}
