//! A disk that fails turns the disk tier off, and only it: every answer stays correct, from
//! memory or the origin. The disk is a tmpfs in a mount namespace of the edge's own (we are
//! root in the test machine; elsewhere these tests say SKIPPED and pass): one too small for
//! what `disk.max_size` promises, and one remounted read-only while the edge runs.

use std::time::Duration;

use http::StatusCode;

use super::common::*;
use super::{DiskEdge, Layout, Object, client, static_origin};

fn segments(prefix: &str, n: usize, size: usize, seed: u64) -> Vec<Object> {
    (0..n)
        .map(|i| {
            (
                format!("/vod/{prefix}-{i}.m4s"),
                payload(size, seed + i as u64),
                vec![("cache-control", "max-age=86400".to_owned())],
            )
        })
        .collect()
}

/// Every object answered 200 with its bytes; returns how many were hits.
async fn get_all(edge: &DiskEdge, objects: &[Object], what: &str) -> usize {
    let mut hits = 0;
    for (path, body, _) in objects {
        let r = edge.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {path}");
        assert_eq!(&r.body, body, "{what}: {path}");
        hits += usize::from(r.cache_status().hit);
    }
    hits
}

fn assert_fetched_once(origin: &TestOrigin, objects: &[Object], what: &str) {
    for (path, _, _) in objects {
        assert_eq!(origin.count_path(path), 1, "{what}: {path}");
    }
}

/// Waits (bounded) until the disk tier reports itself off or counts errors; returns
/// (`streamedge_disk_enabled`, `streamedge_disk_errors_total`).
async fn wait_disk_trouble(edge: &DiskEdge, want_off: bool) -> (f64, f64) {
    let mut last = (f64::NAN, f64::NAN);
    let waited = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let m = edge.process().metrics().await;
            last = (
                metric_sum(&m, "streamedge_disk_enabled", &[]),
                metric_sum(&m, "streamedge_disk_errors_total", &[]),
            );
            let off = last.0 == 0.0 && m.contains("streamedge_disk_enabled");
            if off || (!want_off && last.1 > 0.0) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| {
        panic!(
            "the disk tier neither went off{} within 15s: (enabled, errors) = {last:?}; stderr:\n{}",
            if want_off { "" } else { " nor counted errors" },
            edge.process().stderr()
        )
    })
}

async fn assert_healthy(edge: &DiskEdge) {
    let r = get(&client(), &format!("{}/healthz", edge.process().admin)).await;
    assert_eq!(r.status, StatusCode::OK, "/healthz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_turns_the_tier_off_and_serving_goes_on() {
    // 4 MiB of segments for a 2 MiB disk that claims 1 GiB.
    let first = segments("full", 8, 512 << 10, 600);
    let later = segments("later", 4, 300 << 10, 700);
    let origin = static_origin([first.clone(), later.clone()].concat()).await;
    let Some(mut edge) = DiskEdge::start_in_tmpfs(&origin.url(), &Layout::default(), "2m") else {
        origin.stop().await;
        return;
    };
    edge.wait_metric("streamedge_disk_enabled", "1 at start", |v| v == 1.0)
        .await;

    assert_eq!(get_all(&edge, &first, "filling").await, 0);
    let (enabled, errors) = wait_disk_trouble(&edge, false).await;
    eprintln!("full disk: streamedge_disk_enabled {enabled}, errors {errors}");
    assert!(
        edge.metric("streamedge_disk_bytes").await <= (2 << 20) as f64,
        "no more on disk than it holds"
    );

    // Memory still has everything; new objects come from the origin.
    assert_eq!(
        get_all(&edge, &first, "again").await,
        first.len(),
        "from memory"
    );
    assert_fetched_once(&origin, &first, "after the disk filled up");
    assert_eq!(get_all(&edge, &later, "new objects").await, 0);
    assert_eq!(
        get_all(&edge, &later, "new objects again").await,
        later.len()
    );
    assert_fetched_once(&origin, &later, "new objects");
    assert_healthy(&edge).await;
    assert!(
        edge.process_mut()
            .child
            .try_wait()
            .expect("try_wait")
            .is_none(),
        "the edge is running"
    );

    edge.stop();
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_turns_read_only_is_switched_off_and_serving_goes_on() {
    let before = segments("ro-before", 3, 256 << 10, 800);
    let during = segments("ro-during", 5, 200 << 10, 900);
    let after = segments("ro-after", 3, 100 << 10, 1000);
    let origin = static_origin([before.clone(), during.clone(), after.clone()].concat()).await;
    let Some(mut edge) = DiskEdge::start_in_tmpfs(&origin.url(), &Layout::default(), "64m") else {
        origin.stop().await;
        return;
    };
    assert_eq!(get_all(&edge, &before, "before").await, 0);
    edge.wait_disk_objects(before.len()).await;
    assert_eq!(edge.metric("streamedge_disk_enabled").await, 1.0);

    edge.remount_ro().await;
    assert_eq!(get_all(&edge, &during, "while writes fail").await, 0);
    let (_, errors) = wait_disk_trouble(&edge, true).await;
    assert!(errors >= 1.0, "the failed writes are counted: {errors}");

    // Everything answered right: what memory holds from memory, the rest from the origin.
    let all = [before.clone(), during.clone()].concat();
    assert_eq!(get_all(&edge, &all, "with the tier off").await, all.len());
    assert_fetched_once(&origin, &all, "with the tier off");
    assert_eq!(get_all(&edge, &after, "new objects").await, 0);
    assert_eq!(
        get_all(&edge, &after, "new objects again").await,
        after.len()
    );
    assert_fetched_once(&origin, &after, "new objects");
    assert_eq!(edge.metric("streamedge_disk_enabled").await, 0.0);
    assert_healthy(&edge).await;

    edge.stop();
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_disk_path_the_tier_is_reported_off() {
    // A process of its own: metrics are process-wide, and other tests' edges run in this one.
    let origin = TestOrigin::fixed(Reply::ok("x").header("cache-control", "max-age=60")).await;
    let dir = TempDir::new("nodisk");
    let config = dir.path().join("edge.yaml");
    std::fs::write(
        &config,
        format!(
            "listen:\n  http: \"127.0.0.1:0\"\nadmin:\n  listen: \"127.0.0.1:0\"\n\
             log:\n  access: off\norigins:\n  - url: \"{}\"\n",
            origin.url()
        ),
    )
    .expect("write config");
    let mut edge = EdgeProcess::start(&config);
    let m = edge.metrics().await;
    let line = m
        .lines()
        .find(|l| l.starts_with("streamedge_disk_enabled"))
        .unwrap_or_else(|| panic!("no streamedge_disk_enabled in /metrics"));
    assert_eq!(line.rsplit(' ').next(), Some("0"), "{line}");
    assert!(edge.terminate(30).success());
    origin.stop().await;
}
