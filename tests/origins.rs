//! The origin fleet over real sockets: one owner per key on the consistent-hash ring (shares by
//! weight, only the removed origin's keys move), failover before any byte reached the client and
//! never after, passive ejection (connect errors, 5xx, timeouts) with the cool-down trial, active
//! probes with rise / fall, the fast answer when every origin is down (stale copy if stored),
//! HTTPS origins (CA file, SNI), the Host sent to origins, and keep-alive reuse in /metrics.
//!
//! Origin names are unique per test: `streamedge_origin_up` lives in the process-wide recorder
//! that every edge of this test binary shares.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use streamedge::config::HostHeader;
use streamedge::upstream::ring::OriginRing;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Answers every request with the origin's name, never stored by the edge, so every request
/// reaches an origin and the body says which one.
fn named(name: &str) -> impl Fn(&http::request::Parts) -> Reply + Send + Sync + 'static {
    let name = name.to_owned();
    move |_| Reply::ok(name.clone()).header("cache-control", "no-store")
}

/// Starts one origin per name, each answering with its name.
async fn fleet(names: &[&str]) -> Vec<TestOrigin> {
    let mut v = Vec::new();
    for n in names {
        v.push(TestOrigin::start(named(n)).await);
    }
    v
}

/// `(name, url, weight)` triples for `TestEdge::start_fleet`.
fn spec<'a>(
    names: &[&'a str],
    origins: &[TestOrigin],
    weights: &[u32],
) -> Vec<(&'a str, String, u32)> {
    names
        .iter()
        .zip(origins)
        .zip(weights)
        .map(|((n, o), w)| (*n, o.url(), *w))
        .collect()
}

/// Paths whose owner on the ring of `(name, weight)` is `owner`: what the edge should pick,
/// computed with the edge's own ring so a test can aim at one origin. Tests still check with
/// the origins' counters that the request went there.
fn owned_by(origins: &[(&str, u32)], owner: &str, prefix: &str, n: usize) -> Vec<String> {
    let ring = OriginRing::new(origins.iter().copied());
    let idx = origins
        .iter()
        .position(|(name, _)| *name == owner)
        .expect("owner is in the fleet");
    (0..)
        .map(|i| format!("{prefix}/seg_{i}.ts"))
        .filter(|p| ring.owner(p) == Some(idx))
        .take(n)
        .collect()
}

/// GETs every path (over `parallel` concurrent loops) and returns path → the bodies of the
/// answers, in the order each loop made them. Panics on anything but 200.
async fn fetch_all(
    edge: &TestEdge,
    paths: &[String],
    rounds: usize,
    parallel: usize,
) -> HashMap<String, Vec<String>> {
    let client = edge.http_client();
    let mut set = JoinSet::new();
    for lane in 0..parallel {
        let client = client.clone();
        let urls: Vec<(String, String)> = paths
            .iter()
            .skip(lane)
            .step_by(parallel)
            .map(|p| (p.clone(), edge.http_url(p)))
            .collect();
        set.spawn(async move {
            let mut out = Vec::new();
            for (path, url) in urls {
                for _ in 0..rounds {
                    let r = get(&client, &url).await;
                    assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
                    out.push((path.clone(), String::from_utf8_lossy(&r.body).into_owned()));
                }
            }
            out
        });
    }
    let mut by_path: HashMap<String, Vec<String>> = HashMap::new();
    within(30, "fetching every path", async {
        while let Some(r) = set.join_next().await {
            for (path, body) in r.expect("client task") {
                by_path.entry(path).or_default().push(body);
            }
        }
    })
    .await;
    by_path
}

/// Checks that every path was answered by one origin only (each body names it, and that origin
/// and no other counted `rounds` requests for the path) and returns path → origin name.
fn single_owner(
    names: &[&str],
    origins: &[TestOrigin],
    seen: &HashMap<String, Vec<String>>,
    rounds: usize,
) -> HashMap<String, String> {
    let mut owner = HashMap::new();
    for (path, bodies) in seen {
        assert_eq!(bodies.len(), rounds, "{path}");
        assert!(
            bodies.iter().all(|b| *b == bodies[0]),
            "{path} was answered by several origins: {bodies:?}"
        );
        for (name, o) in names.iter().zip(origins) {
            let expected = if *name == bodies[0] { rounds } else { 0 };
            assert_eq!(
                o.count_path(path),
                expected,
                "{path}: origin {name} received the wrong number of requests"
            );
        }
        owner.insert(path.clone(), bodies[0].clone());
    }
    owner
}

fn shares(names: &[&str], owner: &HashMap<String, String>) -> Vec<f64> {
    names
        .iter()
        .map(|n| owner.values().filter(|o| o == n).count() as f64 / owner.len() as f64)
        .collect()
}

fn paths(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}/seg_{i}.ts")).collect()
}

async fn stop_all(edge: TestEdge, origins: Vec<TestOrigin>) {
    edge.stop().await;
    for o in origins {
        o.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The ring.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_one_origin_and_equal_weights_share_evenly() {
    let names = ["even-a", "even-b", "even-c"];
    let origins = fleet(&names).await;
    let edge = TestEdge::start_fleet(&spec(&names, &origins, &[1, 1, 1]), "").await;

    let keys = paths("/even", 600);
    let seen = fetch_all(&edge, &keys, 2, 6).await;
    let owner = single_owner(&names, &origins, &seen, 2);
    let s = shares(&names, &owner);
    for (n, share) in names.iter().zip(&s) {
        assert!(
            (share - 1.0 / 3.0).abs() < 0.08,
            "{n} owns {share:.3} of the keys: {s:?}"
        );
    }

    stop_all(edge, origins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_shared_by_weight() {
    let names = ["wt-a", "wt-b", "wt-c"];
    let origins = fleet(&names).await;
    let edge = TestEdge::start_fleet(&spec(&names, &origins, &[2, 1, 1]), "").await;

    let keys = paths("/weighted", 600);
    let seen = fetch_all(&edge, &keys, 2, 6).await;
    let owner = single_owner(&names, &origins, &seen, 2);
    let s = shares(&names, &owner);
    assert!((s[0] - 0.5).abs() < 0.1, "weight 2 owns {:.3}: {s:?}", s[0]);
    assert!(
        (s[1] - 0.25).abs() < 0.08,
        "weight 1 owns {:.3}: {s:?}",
        s[1]
    );
    assert!(
        (s[2] - 0.25).abs() < 0.08,
        "weight 1 owns {:.3}: {s:?}",
        s[2]
    );

    stop_all(edge, origins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_origin_moves_only_its_keys() {
    let names = ["rm-a", "rm-b", "rm-c"];
    let origins = fleet(&names).await;
    let keys = paths("/removal", 300);

    let edge = TestEdge::start_fleet(&spec(&names, &origins, &[1, 1, 1]), "").await;
    let before = single_owner(&names, &origins, &fetch_all(&edge, &keys, 1, 4).await, 1);
    edge.stop().await;
    let b_requests = origins[1].count();
    let b_keys = before.values().filter(|o| *o == "rm-b").count();
    assert!(b_keys > 50, "rm-b owned only {b_keys} of 300 keys");

    // The same fleet without rm-b: same names and URLs for the survivors.
    let survivors = vec![("rm-a", origins[0].url(), 1), ("rm-c", origins[2].url(), 1)];
    let edge = TestEdge::start_fleet(&survivors, "").await;
    let after = fetch_all(&edge, &keys, 1, 4).await;
    let mut moved = 0;
    for k in &keys {
        let was = &before[k];
        let now = &after[k][0];
        if was == "rm-b" {
            assert!(now == "rm-a" || now == "rm-c", "{k} went to {now}");
            moved += 1;
        } else {
            assert_eq!(now, was, "{k} moved off a surviving origin");
        }
    }
    assert_eq!(moved, b_keys);
    assert_eq!(
        origins[1].count(),
        b_requests,
        "the removed origin got no request"
    );

    stop_all(edge, origins).await;
}

// ---------------------------------------------------------------------------------------------
// Failover and ejection.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_origin_under_load_loses_no_request() {
    let names = ["kill-a", "kill-b", "kill-c"];
    let mut origins = fleet(&names).await;
    // Without probes: the dead origin gets a trial request every 300ms (which must not cost a
    // client its answer either), and once restarted a trial brings it back.
    let edge = TestEdge::fleet_builder(&spec(&names, &origins, &[1, 1, 1]))
        .config(|c| c.fetch.passive_cooldown = Duration::from_millis(300))
        .start()
        .await;
    let client = edge.http_client();

    let started = Instant::now();
    let run_for = Duration::from_millis(1500);
    let mut set = JoinSet::new();
    for c in 0..4 {
        let client = client.clone();
        let base = edge.http_url("");
        set.spawn(async move {
            let mut failures = Vec::new();
            let mut done = 0usize;
            let mut i = 0;
            while started.elapsed() < run_for {
                let url = format!("{base}/load/c{c}/seg_{i}.ts");
                i += 1;
                match tokio::time::timeout(Duration::from_secs(5), client.get(&url).send()).await {
                    Err(_) => failures.push(format!("{url}: no answer in 5s")),
                    Ok(Err(e)) => failures.push(format!("{url}: {}", error_chain(&e))),
                    Ok(Ok(r)) => {
                        let status = r.status();
                        match r.bytes().await {
                            Ok(b) if status == StatusCode::OK && b.starts_with(b"kill-") => {
                                done += 1
                            }
                            Ok(b) => failures.push(format!("{url}: {status} {b:?}")),
                            Err(e) => failures.push(format!("{url}: body {}", error_chain(&e))),
                        }
                    }
                }
            }
            (done, failures)
        });
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let b_before = origins[1].count();
    origins[1].kill().await;

    let mut total = 0;
    let mut failures = Vec::new();
    within(20, "load clients to finish", async {
        while let Some(r) = set.join_next().await {
            let (done, f) = r.expect("client task");
            total += done;
            failures.extend(f);
        }
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:#?}",
        failures.len()
    );
    assert!(
        b_before > 10,
        "kill-b served {b_before} requests before it was killed"
    );
    assert!(total > 200, "only {total} requests in {run_for:?}");
    edge.wait_origin_up("kill-b", false, 5).await;
    assert_eq!(edge.origin_up("kill-a").await, Some(1.0));
    assert_eq!(edge.origin_up("kill-c").await, Some(1.0));

    // Back on the same port: its keys come home.
    origins[1].restart().await;
    let ring = [("kill-a", 1), ("kill-b", 1), ("kill-c", 1)];
    let key = &owned_by(&ring, "kill-b", "/back", 1)[0];
    within(5, "the restarted origin to serve its keys again", async {
        while get(&client, &edge.http_url(key)).await.body != "kill-b" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(edge.origin_up("kill-b").await, Some(1.0));

    stop_all(edge, origins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_answering_503_is_failed_over_then_ejected() {
    let names = ["five-a", "five-b", "five-c"];
    let origins = fleet(&names).await;
    origins[1].set_script(|_| {
        Reply::ok("overloaded")
            .status(503)
            .header("cache-control", "no-store")
    });
    let edge = TestEdge::fleet_builder(&spec(&names, &origins, &[1, 1, 1]))
        .config(|c| {
            c.fetch.passive_fall = 2;
            c.fetch.passive_cooldown = Duration::from_secs(60);
            c.fetch.passive_statuses = vec![503];
        })
        .start()
        .await;
    let client = edge.http_client();

    let ring = [("five-a", 1), ("five-b", 1), ("five-c", 1)];
    let keys = owned_by(&ring, "five-b", "/fail503", 6);
    for (i, k) in keys.iter().enumerate() {
        let r = get(&client, &edge.http_url(k)).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{k}: the client never sees the 503"
        );
        assert!(
            r.body == "five-a" || r.body == "five-c",
            "{k} answered by {:?}",
            r.body
        );
        let expected_b = (i + 1).min(2);
        assert_eq!(
            origins[1].count(),
            expected_b,
            "after {k}: five-b is asked until it failed `passive_fall` times"
        );
    }
    assert_eq!(
        origins[1].count_path(&keys[0]),
        1,
        "the owner was asked first"
    );
    assert_eq!(edge.origin_up("five-b").await, Some(0.0));
    assert_eq!(edge.origin_up("five-a").await, Some(1.0));

    stop_all(edge, origins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_origin_times_out_and_is_failed_over() {
    let names = ["hang-a", "hang-b", "hang-c"];
    let origins = fleet(&names).await;
    origins[1].set_script(|_| Reply::ok("never").hang());
    let edge = TestEdge::fleet_builder(&spec(&names, &origins, &[1, 1, 1]))
        .config(|c| c.fetch.first_byte_timeout = Duration::from_millis(300))
        .start()
        .await;
    let client = edge.http_client();

    let ring = [("hang-a", 1), ("hang-b", 1), ("hang-c", 1)];
    let keys = owned_by(&ring, "hang-b", "/hang", 2);
    let key = &keys[0];
    let t = Instant::now();
    let r = get(&client, &edge.http_url(key)).await;
    let took = t.elapsed();
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body == "hang-a" || r.body == "hang-c",
        "answered by {:?}",
        r.body
    );
    assert_eq!(origins[1].count_path(key), 1, "the owner was asked first");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1000),
        "answer after {took:?}; expected the 300ms first-byte timeout plus a little"
    );

    // HEAD fails over the same way.
    let t = Instant::now();
    let r = head(&client, &edge.http_url(&keys[1])).await;
    let took = t.elapsed();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        origins[1].count_path(&keys[1]),
        1,
        "the owner was asked first"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1000),
        "HEAD answered after {took:?}"
    );

    stop_all(edge, origins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_origin_is_readmitted_after_rise_good_probes() {
    let names = ["probe-a", "probe-b", "probe-c"];
    let origins = fleet(&names).await;
    let sick = Arc::new(AtomicBool::new(false));
    origins[1].set_script({
        let sick = sick.clone();
        move |parts| {
            if parts.uri.path() == "/hc" && sick.load(Ordering::SeqCst) {
                Reply::ok("sick").status(500)
            } else {
                Reply::ok("probe-b").header("cache-control", "no-store")
            }
        }
    });
    let edge = TestEdge::start_fleet(
        &spec(&names, &origins, &[1, 1, 1]),
        "health_check:\n  path: /hc\n  interval: 100ms\n  timeout: 500ms\n  rise: 2\n  fall: 2\n",
    )
    .await;
    let client = edge.http_client();
    let ring = [("probe-a", 1), ("probe-b", 1), ("probe-c", 1)];
    let keys = owned_by(&ring, "probe-b", "/probe", 4);

    origins[1].wait_for_count(2).await;
    assert_eq!(
        origins[1].count_path("/hc"),
        origins[1].count(),
        "probes only so far"
    );
    assert_eq!(edge.origin_up("probe-b").await, Some(1.0));
    let r = get(&client, &edge.http_url(&keys[0])).await;
    assert_eq!(r.body, "probe-b");

    sick.store(true, Ordering::SeqCst);
    edge.wait_origin_up("probe-b", false, 5).await;
    for k in &keys[1..3] {
        let r = get(&client, &edge.http_url(k)).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_ne!(r.body, "probe-b", "{k}: a fallen origin gets no request");
        assert_eq!(origins[1].count_path(k), 0, "{k}");
    }

    let probes_at_recovery = origins[1].count_path("/hc");
    sick.store(false, Ordering::SeqCst);
    edge.wait_origin_up("probe-b", true, 5).await;
    assert!(
        origins[1].count_path("/hc") >= probes_at_recovery + 2,
        "up again only after `rise` good probes"
    );
    let r = get(&client, &edge.http_url(&keys[3])).await;
    assert_eq!(
        r.body, "probe-b",
        "the recovered origin owns its keys again"
    );

    stop_all(edge, origins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_probes_one_trial_after_the_cooldown_readmits() {
    let names = ["cool-a", "cool-b", "cool-c"];
    let origins = fleet(&names).await;
    let sick = Arc::new(AtomicBool::new(true));
    origins[1].set_script({
        let sick = sick.clone();
        move |_| {
            if sick.load(Ordering::SeqCst) {
                Reply::ok("sick").status(503)
            } else {
                Reply::ok("cool-b")
                    .header("cache-control", "no-store")
                    .delay(Duration::from_millis(300))
            }
        }
    });
    let cooldown = Duration::from_millis(400);
    let edge = TestEdge::fleet_builder(&spec(&names, &origins, &[1, 1, 1]))
        .config(|c| {
            c.fetch.passive_fall = 1;
            c.fetch.passive_cooldown = Duration::from_millis(400);
            c.fetch.passive_statuses = vec![503];
        })
        .start()
        .await;
    let client = edge.http_client();
    let ring = [("cool-a", 1), ("cool-b", 1), ("cool-c", 1)];
    let keys = owned_by(&ring, "cool-b", "/cool", 12);
    let b = &origins[1];
    let fetch = |k: &str| {
        let client = client.clone();
        let url = edge.http_url(k);
        async move {
            let r = get(&client, &url).await;
            assert_eq!(r.status, StatusCode::OK, "{url}");
            String::from_utf8_lossy(&r.body).into_owned()
        }
    };

    // One failure ejects it; the next request skips it.
    assert_ne!(fetch(&keys[0]).await, "cool-b");
    assert_eq!(b.count(), 1);
    assert_eq!(edge.origin_up("cool-b").await, Some(0.0));
    assert_ne!(fetch(&keys[1]).await, "cool-b");
    assert_eq!(
        b.count(),
        1,
        "an ejected origin is skipped during the cool-down"
    );

    // After the cool-down one trial goes through; it fails, so the cool-down starts again.
    tokio::time::sleep(cooldown + Duration::from_millis(100)).await;
    assert_ne!(fetch(&keys[2]).await, "cool-b");
    assert_eq!(b.count(), 2, "one trial after the cool-down");
    assert_ne!(fetch(&keys[3]).await, "cool-b");
    assert_eq!(b.count(), 2, "a failed trial restarts the cool-down");
    assert_eq!(edge.origin_up("cool-b").await, Some(0.0));

    // Healthy (and slow) again: of four concurrent requests after the cool-down exactly one
    // is the trial; its success re-admits the origin.
    sick.store(false, Ordering::SeqCst);
    tokio::time::sleep(cooldown + Duration::from_millis(100)).await;
    let mut set = JoinSet::new();
    for k in &keys[4..8] {
        set.spawn(fetch(k));
    }
    let mut bodies = Vec::new();
    within(10, "concurrent requests", async {
        while let Some(r) = set.join_next().await {
            bodies.push(r.expect("client task"));
        }
    })
    .await;
    assert_eq!(b.count(), 3, "one trial at a time: {bodies:?}");
    assert_eq!(
        bodies.iter().filter(|b| *b == "cool-b").count(),
        1,
        "{bodies:?}"
    );
    assert_eq!(edge.origin_up("cool-b").await, Some(1.0));
    assert_eq!(fetch(&keys[8]).await, "cool-b", "re-admitted");

    stop_all(edge, origins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_origins_down_by_probes_answers_at_once() {
    // Origins that accept but never answer. First-byte timeouts say nothing about an origin
    // (a client can pick a slow URL), so requests alone do not eject them; probes do.
    let names = ["down-a", "down-b"];
    let origins = fleet(&names).await;
    for o in &origins {
        o.set_script(|_| Reply::ok("never").hang());
    }
    let edge = TestEdge::fleet_builder(&spec(&names, &origins, &[1, 1]))
        .config(|c| {
            c.fetch.first_byte_timeout = Duration::from_millis(400);
            c.fetch.passive_fall = 1;
            c.fetch.passive_cooldown = Duration::from_secs(60);
        })
        .start()
        .await;
    let client = edge.http_client();

    let t = Instant::now();
    let r = get(&client, &edge.http_url("/down/seg_0.ts")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "both origins were tried"
    );
    assert_eq!(origins[0].count() + origins[1].count(), 2);
    assert_eq!(
        edge.origin_up("down-a").await,
        Some(1.0),
        "timeouts do not eject"
    );
    edge.stop().await;

    let edge = TestEdge::start_fleet(
        &spec(&names, &origins, &[1, 1]),
        "fetch:\n  first_byte_timeout: 400ms\n\
         health_check:\n  path: /hc\n  interval: 100ms\n  timeout: 100ms\n  rise: 1\n  fall: 1\n",
    )
    .await;
    edge.wait_origin_up("down-a", false, 5).await;
    edge.wait_origin_up("down-b", false, 5).await;
    let content = || {
        origins
            .iter()
            .map(|o| o.count() - o.count_path("/hc"))
            .sum::<usize>()
    };
    let before = content();
    // The first request may be the trial each origin gets per second; the rest answer at once.
    let _ = get(&client, &edge.http_url("/down/trial.ts")).await;
    let trials = content() - before;
    assert!(trials <= 2, "{trials}");
    for i in 1..5 {
        let t = Instant::now();
        let r = get(&client, &edge.http_url(&format!("/down/seg_{i}.ts"))).await;
        let took = t.elapsed();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(took < Duration::from_millis(150), "503 after {took:?}");
    }
    assert_eq!(content() - before, trials, "no origin was asked");
    let ready = get(&edge.http_client(), &edge.admin_url("/readyz")).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready without origins"
    );

    stop_all(edge, origins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_origin_ports_give_fast_errors_and_stay_tried() {
    let a = dead_port().await;
    let b = dead_port().await;
    let edge = TestEdge::fleet_builder(&[
        ("closed-a", format!("http://{a}"), 1),
        ("closed-b", format!("http://{b}"), 1),
    ])
    .config(|c| {
        c.fetch.first_byte_timeout = Duration::from_secs(5);
        c.fetch.connect_timeout = Duration::from_secs(5);
        c.fetch.passive_fall = 2;
        c.fetch.passive_cooldown = Duration::from_secs(60);
    })
    .start()
    .await;
    let client = edge.http_client();
    let mut statuses = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        let r = get(&client, &edge.http_url(&format!("/closed/seg_{i}.ts"))).await;
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "answer {} after {took:?}",
            r.status
        );
        statuses.push(r.status.as_u16());
    }
    // Refused connections eject both; with every origin out they are still tried (and refuse).
    assert_eq!(statuses, [502; 5], "{statuses:?}");
    assert_eq!(edge.origin_up("closed-a").await, Some(0.0));
    assert_eq!(edge.origin_up("closed-b").await, Some(0.0));

    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_origins_down_serves_the_stored_stale_copy() {
    let names = ["stale-a", "stale-b"];
    let mut origins = fleet(&names).await;
    for o in &origins {
        o.set_script(|_| {
            Reply::ok("version 1").header("cache-control", "max-age=1, stale-if-error=60")
        });
    }
    let edge = TestEdge::fleet_builder(&spec(&names, &origins, &[1, 1]))
        .config(|c| {
            c.fetch.passive_fall = 1;
            c.fetch.passive_cooldown = Duration::from_secs(60);
        })
        .start()
        .await;
    let client = edge.http_client();
    let url = edge.http_url("/stale/seg_1.ts");

    let r = get(&client, &url).await;
    assert_eq!(r.body, "version 1");
    assert!(r.cache_status().stored, "{}", r.cache_status().raw);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for o in &mut origins {
        o.kill().await;
    }

    // Both origins refuse: the stale copy is served.
    let r = get(&client, &url).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "version 1");
    let cs = r.cache_status();
    assert_eq!(cs.fwd.as_deref(), Some("stale"), "{}", cs.raw);

    // Both ejected now, and still tried: an object never stored gets the refusal (502) at
    // once, the stale one its copy.
    edge.wait_origin_up("stale-a", false, 2).await;
    edge.wait_origin_up("stale-b", false, 2).await;
    let t = Instant::now();
    let r = get(&client, &edge.http_url("/stale/never-stored.ts")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let r = get(&client, &url).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "version 1");
    assert_eq!(
        r.cache_status().fwd.as_deref(),
        Some("stale"),
        "{}",
        r.cache_status().raw
    );
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "took {:?}",
        t.elapsed()
    );

    stop_all(edge, origins).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_after_bytes_reached_the_client() {
    let names = ["cut-a", "cut-b", "cut-c"];
    let body = payload(256 * 1024, 9);
    let mut origins = Vec::new();
    for _ in names {
        let body = body.clone();
        origins.push(TestOrigin::start(move |_| Reply::ok(body.clone()).cut(64 * 1024)).await);
    }
    let edge = TestEdge::start_fleet(&spec(&names, &origins, &[1, 1, 1]), "").await;
    let client = edge.http_client();

    let path = "/cut/seg_1.ts";
    let s = within(
        10,
        "cut body",
        stream(client.get(edge.http_url(path)), body.clone()),
    )
    .await;
    assert_eq!(s.status, StatusCode::OK);
    assert!(
        s.error.is_some(),
        "the client's body fails: got {} bytes cleanly",
        s.len
    );
    assert!(s.len < body.len());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked: usize = origins.iter().map(|o| o.count_path(path)).sum();
    assert_eq!(asked, 1, "one origin request, no second origin tried");

    stop_all(edge, origins).await;
}

// ---------------------------------------------------------------------------------------------
// HTTPS origins, Host, connections.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origin_verified_by_ca_file_with_sni() {
    let tls = OriginTls::localhost();
    let origin = TestOrigin::start_tls(&tls, |_| {
        Reply::ok("over tls").header("cache-control", "no-store")
    })
    .await;
    let dir = TempDir::new("origin-ca");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).expect("write CA");
    let other = OriginTls::localhost();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, &other.ca_pem).expect("write CA");

    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| c.fetch.ca_file = Some(ca.clone()))
        .start()
        .await;
    let r = get(&edge.http_client(), &edge.http_url("/tls/seg_1.ts")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "over tls");
    assert_eq!(origin.count(), 1);
    assert!(
        origin
            .sni()
            .iter()
            .all(|n| n.as_deref() == Some("localhost"))
            && !origin.sni().is_empty(),
        "SNI seen by the origin: {:?}",
        origin.sni()
    );
    edge.stop().await;

    // A CA that did not sign the origin's certificate, then the system roots: both refuse.
    for ca_file in [Some(other_ca.clone()), None] {
        let handshakes = origin.connections();
        let edge = TestEdge::builder(&[origin.url()])
            .config(|c| c.fetch.ca_file = ca_file.clone())
            .start()
            .await;
        let r = get(&edge.http_client(), &edge.http_url("/tls/seg_2.ts")).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_GATEWAY,
            "with ca_file {ca_file:?}"
        );
        assert!(origin.connections() > handshakes, "the edge did connect");
        assert_eq!(
            origin.count(),
            1,
            "no request over an unverified connection"
        );
        edge.stop().await;
    }

    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_is_the_origins_or_the_clients() {
    let origin = TestOrigin::fixed(Reply::ok("x").header("cache-control", "no-store")).await;
    for (mode, expected) in [
        (HostHeader::Origin, origin.addr.to_string()),
        (HostHeader::Client, "media.example.com".to_owned()),
    ] {
        let edge = TestEdge::builder(&[origin.url()])
            .config(move |c| c.fetch.host_header = mode)
            .start()
            .await;
        let r = send(
            edge.http_client()
                .get(edge.http_url("/host/seg_1.ts"))
                .header("host", "media.example.com"),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{mode:?}");
        let seen = origin.last_request();
        assert_eq!(
            seen.headers.get("host").and_then(|v| v.to_str().ok()),
            Some(expected.as_str()),
            "host_header: {mode:?}"
        );
        edge.stop().await;
    }
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_misses_reuse_origin_connections() {
    let origin = TestOrigin::start(|p| {
        Reply::ok(Bytes::from(p.uri.path().to_owned())).header("cache-control", "max-age=60")
    })
    .await;
    let edge = TestEdge::start_with(&[origin.url()], "").await;
    let client = edge.http_client();
    for i in 0..100 {
        let r = get(&client, &edge.http_url(&format!("/reuse/seg_{i}.ts"))).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.cache_status().is_miss());
    }
    assert_eq!(origin.count(), 100);
    assert!(
        origin.connections() <= 2,
        "{} origin connections",
        origin.connections()
    );

    let text = edge.metrics().await;
    let new = metric_sum(
        &text,
        "streamedge_origin_connections_total",
        &["state=\"new\""],
    );
    let reused = metric_sum(
        &text,
        "streamedge_origin_connections_total",
        &["state=\"reused\""],
    );
    assert!(
        (1.0..=2.0).contains(&new) && reused >= 98.0,
        "/metrics right after the misses: new {new}, reused {reused}"
    );

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_count_in_the_connection_metrics() {
    let origin = TestOrigin::start(|p| {
        Reply::ok(Bytes::from(p.uri.path().to_owned())).header("cache-control", "no-store")
    })
    .await;
    let edge = TestEdge::start_fleet(
        &[("conn-probed", origin.url(), 1)],
        "health_check:\n  path: /hc\n  interval: 20ms\n",
    )
    .await;
    origin.wait_for_count(10).await;
    let client = edge.http_client();
    for i in 0..20 {
        let r = get(&client, &edge.http_url(&format!("/probed/seg_{i}.ts"))).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let text = edge.metrics().await;
    let received = origin.count() as f64;
    let new = metric_sum(
        &text,
        "streamedge_origin_connections_total",
        &["state=\"new\""],
    );
    let reused = metric_sum(
        &text,
        "streamedge_origin_connections_total",
        &["state=\"reused\""],
    );
    assert!(
        new <= origin.connections() as f64,
        "new {new}, connections accepted {}",
        origin.connections()
    );
    assert!(
        (new + reused - received).abs() <= 1.0,
        "every request the origin received (probes too) is new or reused: new {new}, reused \
         {reused}, received {received}"
    );

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_whose_client_left_does_not_eject_the_origin_for_good() {
    let names = ["lost-a", "lost-b", "lost-c"];
    let origins = fleet(&names).await;
    let state = Arc::new(std::sync::atomic::AtomicU8::new(0)); // 0 sick, 1 slow, 2 well
    origins[1].set_script({
        let state = state.clone();
        move |_| match state.load(Ordering::SeqCst) {
            0 => Reply::ok("sick").status(503),
            1 => Reply::ok("lost-b").delay(Duration::from_secs(2)),
            _ => Reply::ok("lost-b").header("cache-control", "no-store"),
        }
    });
    let edge = TestEdge::fleet_builder(&spec(&names, &origins, &[1, 1, 1]))
        .config(|c| {
            c.server.forward_unsafe_methods = true;
            c.fetch.passive_fall = 1;
            c.fetch.passive_cooldown = Duration::from_millis(300);
            c.fetch.passive_statuses = vec![503];
        })
        .start()
        .await;
    let client = edge.https_client();
    let ring = [("lost-a", 1), ("lost-b", 1), ("lost-c", 1)];
    let keys = owned_by(&ring, "lost-b", "/lost", 3);

    let r = get(&client, &edge.https_url(&keys[0])).await;
    assert_ne!(r.body, "lost-b");
    assert_eq!(edge.origin_up("lost-b").await, Some(0.0));

    // The trial after the cool-down is a POST whose client gives up before the answer.
    state.store(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let gave_up = client
        .post(edge.https_url(&keys[1]))
        .body("x")
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client gave up: {gave_up:?}");
    assert_eq!(origins[1].count_path(&keys[1]), 1, "the POST was the trial");

    // Healthy again: a later request gets its trial and re-admits the origin.
    state.store(2, Ordering::SeqCst);
    within(5, "another trial to re-admit lost-b", async {
        loop {
            tokio::time::sleep(Duration::from_millis(350)).await;
            let r = get(&client, &edge.https_url(&keys[2])).await;
            if r.body == "lost-b" {
                break;
            }
        }
    })
    .await;
    assert_eq!(edge.origin_up("lost-b").await, Some(1.0));

    stop_all(edge, origins).await;
}
