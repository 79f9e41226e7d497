//! The two tiers together: objects evicted from a small memory tier are answered from disk
//! (`detail=disk`) without the origin, and one that keeps being asked for is copied back to
//! memory after `promote_after` disk hits; the disk tier keeps within `disk.max_size`.

use std::time::Duration;

use http::StatusCode;

use super::common::*;
use super::{DiskEdge, Layout, Object, is_disk_hit, object_files, static_origin};

async fn get_ok(edge: &DiskEdge, path: &str) -> Resp {
    let r = edge.get(path).await;
    assert_eq!(r.status, StatusCode::OK, "{path}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_objects_are_disk_hits_and_come_back_to_memory_after_two() {
    let objects: Vec<Object> = (0..20)
        .map(|i| {
            (
                format!("/vod/t-{i}.m4s"),
                payload(1 << 20, 1100 + i as u64),
                vec![("cache-control", "max-age=86400".to_owned())],
            )
        })
        .collect();
    let origin = static_origin(objects.clone()).await;
    // Memory holds three of the twenty; the disk all of them.
    let mut edge = DiskEdge::start(
        &origin.url(),
        &Layout {
            memory: "4MiB",
            max_object: "2MiB",
            ..Layout::default()
        },
    );
    for (path, body, _) in &objects {
        let r = get_ok(&edge, path).await;
        assert_eq!(&r.body, body, "{path}");
        assert!(!r.cache_status().hit, "{path}: a fill");
    }
    edge.wait_disk_objects(objects.len()).await;

    let mut from_disk = Vec::new();
    for (path, body, _) in &objects {
        let r = get_ok(&edge, path).await;
        assert_eq!(&r.body, body, "{path}");
        let cs = r.cache_status();
        assert!(cs.hit, "{path}: a hit from one tier or the other: {cs:?}");
        if cs.detail.as_deref() == Some("disk") {
            from_disk.push(path.clone());
        } else {
            assert_eq!(cs.detail, None, "{path}: {cs:?}");
        }
    }
    for (path, _, _) in &objects {
        assert_eq!(origin.count_path(path), 1, "{path}: never fetched again");
    }
    assert!(
        from_disk.len() >= 15,
        "4 MiB of memory holds at most 3 of 20 1-MiB objects, the rest are disk hits: {} were",
        from_disk.len()
    );
    assert!(edge.metric("streamedge_disk_hits_total").await >= from_disk.len() as f64);

    // One disk hit so far; the second one promotes it, and then memory answers.
    let promoted = from_disk[0].clone();
    let r = get_ok(&edge, &promoted).await;
    assert!(
        r.cache_status().hit && r.cache_status().detail.as_deref() == Some("disk"),
        "{promoted}: its second disk hit: {:?}",
        r.cache_status()
    );
    let mut answers = Vec::new();
    let mut in_memory = false;
    for _ in 0..5 {
        let r = get_ok(&edge, &promoted).await;
        let cs = r.cache_status();
        answers.push(cs.raw.clone());
        if cs.hit && cs.detail.is_none() {
            in_memory = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(in_memory, "{promoted} promoted to memory: {answers:?}");
    let r = get_ok(&edge, &promoted).await;
    assert!(
        r.cache_status().hit && r.cache_status().detail.is_none(),
        "{promoted} stays in memory: {:?}",
        r.cache_status()
    );
    assert_eq!(origin.count_path(&promoted), 1);

    edge.stop();
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_tier_stays_within_its_max_size() {
    // 8 MiB of segments, each asked for twice (past any admission filter), for a 4 MiB disk
    // tier: older objects make room, and reaching the limit is no failure.
    let objects: Vec<Object> = (0..16)
        .map(|i| {
            (
                format!("/vod/m-{i}.m4s"),
                payload(512 << 10, 1200 + i as u64),
                vec![("cache-control", "max-age=86400".to_owned())],
            )
        })
        .collect();
    let origin = static_origin(objects.clone()).await;
    let mut edge = DiskEdge::start(
        &origin.url(),
        &Layout {
            max_object: "1MiB",
            disk_max: "4MiB",
            ..Layout::default()
        },
    );
    for (path, body, _) in &objects {
        for _ in 0..2 {
            assert_eq!(&get_ok(&edge, path).await.body, body, "{path}");
        }
    }
    edge.wait_disk_objects(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let limit = 4u64 << 20;
    let bytes = edge.metric("streamedge_disk_bytes").await;
    assert!(
        bytes <= limit as f64,
        "streamedge_disk_bytes {bytes} > {limit}"
    );
    let on_disk: u64 = object_files(&edge.disk())
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    // The files hold headers and checksums too: a little slack over the bodies.
    assert!(
        on_disk <= limit + (64 << 10),
        "{on_disk} bytes of object files for a {limit}-byte tier"
    );
    assert_eq!(
        edge.metric("streamedge_disk_enabled").await,
        1.0,
        "a tier at its size limit is not a failing disk"
    );

    edge.restart();
    let mut from_disk = 0;
    for (path, body, _) in &objects {
        let r = get_ok(&edge, path).await;
        assert_eq!(&r.body, body, "{path}");
        from_disk += usize::from(is_disk_hit(&r));
    }
    assert!(
        (1..=8).contains(&from_disk),
        "what the 4 MiB tier kept is served from it: {from_disk} disk hits"
    );
    let fetched: usize = objects.iter().map(|(p, _, _)| origin.count_path(p)).sum();
    assert_eq!(
        fetched,
        2 * objects.len() - from_disk,
        "the rest fetched again once"
    );

    edge.stop();
    origin.stop().await;
}
