//! Damage on disk is never served: files flipped, truncated or removed while the edge was down
//! are dropped and fetched again, and a process killed (SIGKILL) in the middle of a large fill
//! leaves nothing that a restarted edge would serve short.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use super::common::ranged::synthetic;
use super::common::*;
use super::{DiskEdge, Layout, is_disk_hit, object_files, static_origin};

fn segment(i: usize) -> (String, Bytes, Vec<(&'static str, String)>) {
    (
        format!("/vod/d-{i}.m4s"),
        payload(200_000 + i * 977, 300 + i as u64),
        vec![("cache-control", "max-age=86400".to_owned())],
    )
}

/// Flips one byte (xor 0xff) at the middle of `path`.
fn flip_middle_byte(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).expect("read object file");
    assert!(!bytes.is_empty(), "{} is empty", path.display());
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(path, bytes).expect("write object file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_are_dropped_and_fetched_again_never_served() {
    let objects: Vec<_> = (0..6).map(segment).collect();
    let origin = static_origin(objects.clone()).await;
    let mut edge = DiskEdge::start(&origin.url(), &Layout::default());
    for (path, body, _) in &objects {
        assert_eq!(&edge.get(path).await.body, body, "{path}");
    }
    edge.wait_disk_objects(objects.len()).await;
    edge.stop();

    let files = object_files(&edge.disk());
    assert_eq!(files.len(), objects.len(), "one file per object: {files:?}");
    // Three flipped, one cut to half, one removed, one left alone.
    for f in &files[..3] {
        flip_middle_byte(f);
    }
    let len = std::fs::metadata(&files[3]).expect("stat").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&files[3])
        .expect("open")
        .set_len(len / 2)
        .expect("truncate");
    std::fs::remove_file(&files[4]).expect("remove");
    let damaged = 5;

    edge.start_again();
    for (path, body, _) in &objects {
        let r = edge.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(&r.body, body, "{path}: never the damaged bytes");
    }
    let counts: Vec<usize> = objects
        .iter()
        .map(|(p, _, _)| origin.count_path(p))
        .collect();
    assert_eq!(
        counts.iter().filter(|&&c| c == 2).count(),
        damaged,
        "each damaged object fetched once more: {counts:?}"
    );
    assert_eq!(
        counts.iter().filter(|&&c| c == 1).count(),
        objects.len() - damaged,
        "the intact one from disk: {counts:?}"
    );
    assert!(
        edge.metric("streamedge_disk_corrupt_total").await > 0.0,
        "corrupt files counted"
    );
    assert_eq!(edge.metric("streamedge_disk_enabled").await, 1.0);

    // The objects fetched again replace the damaged files: after one more restart every one
    // is a disk hit.
    edge.wait_disk_objects(objects.len()).await;
    edge.restart();
    for (path, body, _) in &objects {
        let r = edge.get(path).await;
        assert_eq!(&r.body, body, "{path}");
        assert!(is_disk_hit(&r), "{path}: {:?}", r.cache_status());
    }
    let after: Vec<usize> = objects
        .iter()
        .map(|(p, _, _)| origin.count_path(p))
        .collect();
    assert_eq!(after, counts, "no more origin requests");

    edge.stop();
    origin.stop().await;
}

const BIG: usize = 24 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_large_fill_never_leaves_a_short_object() {
    // Each object trickles in over about 1.2 s; the edge is killed part-way, or right after the
    // client has it all (while it may still be writing the file).
    let kill_points = [Some(300), Some(800), None];
    let bodies: Vec<Bytes> = (0..kill_points.len())
        .map(|k| Bytes::from(synthetic(400 + k as u64, 0, BIG as u64)))
        .collect();
    let served = bodies.clone();
    let origin = TestOrigin::start(move |parts| {
        let path = parts.uri.path();
        let k = path
            .strip_prefix("/vod/big-")
            .and_then(|s| s.strip_suffix(".mp4"))
            .and_then(|s| s.parse::<usize>().ok());
        match k.and_then(|k| served.get(k)) {
            Some(body) => Reply::ok(body.clone())
                .header("cache-control", "max-age=86400")
                .trickle_over(256 << 10, Duration::from_millis(1200)),
            None => Reply::ok("ok"),
        }
    })
    .await;
    let mut edge = DiskEdge::start(&origin.url(), &Layout::default());

    for (k, point) in kill_points.iter().enumerate() {
        let path = format!("/vod/big-{k}.mp4");
        let body = bodies[k].clone();
        let first = tokio::spawn(stream(edge.client().get(edge.get_url(&path)), body.clone()));
        match point {
            Some(ms) => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                edge.kill9();
                let s = within(20, "the cut client's body", first)
                    .await
                    .expect("client task");
                // Cut by the kill: an error, never a clean short body.
                assert!(
                    s.complete(&body) || s.error.is_some(),
                    "{path}: killed after {ms} ms: {} bytes and no error",
                    s.len
                );
            }
            None => {
                let s = within(20, "the first client's body", first)
                    .await
                    .expect("client task");
                assert!(s.complete(&body), "{path}: the first fill: {s:?}");
                edge.kill9();
            }
        }

        edge.start_again();
        let s = stream(edge.client().get(edge.get_url(&path)), body.clone()).await;
        assert_eq!(s.status, StatusCode::OK, "{path} after the kill");
        assert!(
            s.complete(&body),
            "{path}: complete and identical after a kill at {point:?} ms: {} of {BIG} bytes, \
             matches {}, error {:?}",
            s.len,
            s.matches,
            s.error
        );
        let fetched = origin.count_path(&path);
        assert!(
            fetched <= 2,
            "{path}: from disk (1) or fetched again (2), not {fetched}"
        );
        if fetched == 1 {
            assert!(s.cache_status().hit, "{path}: {:?}", s.cache_status());
        }
        eprintln!(
            "kill at {point:?} ms: {path} {}",
            if fetched == 1 {
                "served from disk"
            } else {
                "fetched again"
            }
        );
    }

    edge.stop();
    origin.stop().await;
}
