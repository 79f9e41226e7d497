//! What a restart keeps: VOD segments, init segments and playlists filled once are answered from
//! disk by the next process without asking the origin; ranges of disk objects; headers refreshed
//! by a 304. What it does not keep: live playlists and objects kept less than `disk.min_ttl`
//! (never written), and purged objects. Vary variants and soft purges hold across it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use super::common::*;
use super::{DiskEdge, Layout, Object, files_under, is_disk_hit, object_files, static_origin};

const VOD_PLAYLIST: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n\
#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MAP:URI=\"init.mp4\"\n\
#EXTINF:4.0,\nseg-0.m4s\n#EXTINF:4.0,\nseg-1.m4s\n#EXTINF:4.0,\nseg-2.m4s\n\
#EXTINF:4.0,\nseg-3.m4s\n#EXTINF:4.0,\nseg-4.m4s\n#EXTINF:4.0,\nseg-5.m4s\n#EXT-X-ENDLIST\n";

const LIVE_PLAYLIST: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:10\n\
#EXT-X-MEDIA-SEQUENCE:100\n#EXTINF:10.0,\nlive-100.ts\n#EXTINF:10.0,\nlive-101.ts\n";

fn segment_headers() -> Vec<(&'static str, String)> {
    vec![
        ("cache-control", "max-age=86400".to_owned()),
        ("content-type", "video/iso.segment".to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_objects_survive_a_restart_and_live_playlists_do_not() {
    let mut objects: Vec<Object> = (0..6)
        .map(|i| {
            (
                format!("/vod/seg-{i}.m4s"),
                payload(150_000 + i * 7_001, 100 + i as u64),
                segment_headers(),
            )
        })
        .collect();
    objects.push((
        "/vod/init.mp4".into(),
        payload(1_234, 99),
        segment_headers(),
    ));
    // No Cache-Control: the playlist's ENDLIST makes it long-lived (cache.ttl.vod_manifest).
    objects.push((
        "/vod/index.m3u8".into(),
        Bytes::from_static(VOD_PLAYLIST.as_bytes()),
        vec![("content-type", "application/vnd.apple.mpegurl".into())],
    ));
    // Live: fresh for 5 s, so a restart within that time would find it fresh had it been
    // written.
    objects.push((
        "/live/index.m3u8".into(),
        Bytes::from_static(LIVE_PLAYLIST.as_bytes()),
        vec![
            ("content-type", "application/vnd.apple.mpegurl".into()),
            ("cache-control", "max-age=5".into()),
        ],
    ));
    // Kept 5 s in all (no stale window: must-revalidate, no validator): below disk.min_ttl.
    objects.push((
        "/api/short.json".into(),
        Bytes::from_static(b"{\"short\": true}"),
        vec![
            ("content-type", "application/json".into()),
            ("cache-control", "max-age=5, must-revalidate".into()),
        ],
    ));
    let origin = static_origin(objects.clone()).await;
    let mut edge = DiskEdge::start(&origin.url(), &Layout::default());

    for (path, body, _) in &objects {
        let r = edge.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(&r.body, body, "{path}");
        assert!(
            !r.cache_status().hit,
            "{path}: a fill, {:?}",
            r.cache_status()
        );
        assert_eq!(origin.count_path(path), 1, "{path}");
    }
    // Every VOD object is written through, the live playlist and the short-lived object never:
    // one file each.
    let vod = objects.len() - 2;
    edge.wait_disk_objects(vod).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        edge.metric("streamedge_disk_objects").await,
        vod as f64,
        "neither the live playlist nor the short-lived object is on disk"
    );
    assert_eq!(
        object_files(&edge.disk()).len(),
        vod,
        "one file per object under objects/: {:?}",
        files_under(&edge.disk())
    );
    assert!(
        files_under(&edge.disk().join("tmp")).is_empty(),
        "nothing left in tmp/ once written: {:?}",
        files_under(&edge.disk().join("tmp"))
    );
    assert!(edge.metric("streamedge_disk_bytes").await >= 900_000.0);
    assert_eq!(edge.metric("streamedge_disk_enabled").await, 1.0);

    edge.restart();
    // At once, while the index may still be rebuilt in the background.
    for (path, body, _) in &objects[..vod] {
        let r = edge.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path} after the restart");
        assert_eq!(&r.body, body, "{path}: the same bytes after the restart");
        assert!(
            is_disk_hit(&r),
            "{path}: a disk hit after the restart, got {:?}",
            r.cache_status()
        );
        assert!(r.cache_status().ttl.is_some_and(|t| t > 0), "{path}");
        assert_eq!(origin.count_path(path), 1, "{path}: not fetched again");
    }
    assert!(edge.metric("streamedge_disk_hits_total").await >= vod as f64);

    let live = edge.get("/live/index.m3u8").await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.body, LIVE_PLAYLIST.as_bytes());
    assert!(
        !live.cache_status().hit,
        "the live playlist was not kept: {:?}",
        live.cache_status()
    );
    assert_eq!(origin.count_path("/live/index.m3u8"), 2);
    let short = edge.get("/api/short.json").await;
    assert_eq!(short.status, StatusCode::OK);
    assert!(
        !short.cache_status().hit,
        "the short-lived object was not kept: {:?}",
        short.cache_status()
    );
    assert_eq!(origin.count_path("/api/short.json"), 2);

    edge.stop();
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_of_disk_objects_and_revalidated_headers_survive_restarts() {
    let ranged = payload(300_000, 7);
    let revalidated = payload(120_000, 8);
    let (r_body, v_body) = (ranged.clone(), revalidated.clone());
    let conditional = Arc::new(AtomicUsize::new(0));
    let seen_conditional = conditional.clone();
    let origin = TestOrigin::start(move |parts| match parts.uri.path() {
        "/vod/r.m4s" => Reply::ok(r_body.clone())
            .header("cache-control", "max-age=86400")
            .header("etag", "\"r1\""),
        "/vod/v.m4s" => {
            if parts.headers.get("if-none-match").map(|v| v.as_bytes()) == Some(b"\"v1\"") {
                seen_conditional.fetch_add(1, Ordering::SeqCst);
                Reply::ok(Bytes::new())
                    .status(304)
                    .header("etag", "\"v1\"")
                    .header("cache-control", "max-age=3600")
                    .header("x-meta", "refreshed")
            } else {
                // Fresh for 1 s, but kept long (an hour of stale-if-error, and a validator).
                Reply::ok(v_body.clone())
                    .header("etag", "\"v1\"")
                    .header("cache-control", "max-age=1, stale-if-error=3600")
                    .header("x-meta", "original")
            }
        }
        "/healthz" => Reply::ok("ok"),
        _ => Reply::ok("not here").status(404),
    })
    .await;
    let mut edge = DiskEdge::start(&origin.url(), &Layout::default());
    let filled = tokio::time::Instant::now();
    assert_eq!(edge.get("/vod/r.m4s").await.body, ranged);
    let v = edge.get("/vod/v.m4s").await;
    assert_eq!(v.body, revalidated);
    assert_eq!(v.header("x-meta"), Some("original"));
    edge.wait_disk_objects(2).await;

    edge.restart();
    for (spec, a, e) in [
        ("bytes=1000-1999", 1000, 2000),
        ("bytes=-500", 299_500, 300_000),
        ("bytes=299990-", 299_990, 300_000),
    ] {
        let r = edge.get_range("/vod/r.m4s", spec).await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{spec}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {a}-{}/300000", e - 1).as_str()),
            "{spec}"
        );
        assert_eq!(r.body, ranged.slice(a..e), "{spec}");
        assert!(r.cache_status().hit, "{spec}: {:?}", r.cache_status());
    }
    assert_eq!(origin.count_path("/vod/r.m4s"), 1, "ranges from disk");

    // The disk copy of /vod/v.m4s is stale now: revalidated with a 304 that refreshes it.
    let stale_at = filled + Duration::from_millis(1500);
    tokio::time::sleep_until(stale_at).await;
    let r = edge.get("/vod/v.m4s").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, revalidated, "the disk body, kept by the 304");
    let cs = r.cache_status();
    assert_eq!(cs.fwd_status, Some(304), "revalidated: {cs:?}");
    assert_eq!(r.header("x-meta"), Some("refreshed"));
    assert_eq!(conditional.load(Ordering::SeqCst), 1);
    assert_eq!(origin.count_path("/vod/v.m4s"), 2);

    // The refreshed headers (an hour of freshness) are what the next process finds on disk.
    tokio::time::sleep(Duration::from_millis(500)).await;
    edge.restart();
    let r = edge.get("/vod/v.m4s").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, revalidated);
    assert!(
        is_disk_hit(&r),
        "fresh on disk after the 304: {:?}",
        r.cache_status()
    );
    assert!(
        r.cache_status().ttl.is_some_and(|t| t > 3500),
        "the refreshed max-age=3600 survived: {:?}",
        r.cache_status()
    );
    assert_eq!(r.header("x-meta"), Some("refreshed"));
    assert_eq!(origin.count_path("/vod/v.m4s"), 2, "not revalidated again");

    edge.stop();
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_object_does_not_come_back_from_disk_after_a_restart() {
    let objects: Vec<Object> = ["a", "b"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                format!("/vod/{n}.m4s"),
                payload(64_000, 200 + i as u64),
                segment_headers(),
            )
        })
        .collect();
    let origin = static_origin(objects.clone()).await;
    let mut edge = DiskEdge::start(&origin.url(), &Layout::default());
    for (path, body, _) in &objects {
        assert_eq!(&edge.get(path).await.body, body);
    }
    edge.wait_disk_objects(2).await;

    let r = edge.purge("path=/vod/a.m4s").await;
    assert_eq!(r.status, StatusCode::OK, "purge: {:?}", r.body);
    edge.wait_metric("streamedge_disk_objects", "1 after the purge", |v| v == 1.0)
        .await;

    edge.restart();
    let a = edge.get("/vod/a.m4s").await;
    assert_eq!(a.body, objects[0].1);
    assert!(!a.cache_status().hit, "purged: {:?}", a.cache_status());
    assert_eq!(origin.count_path("/vod/a.m4s"), 2);
    let b = edge.get("/vod/b.m4s").await;
    assert_eq!(b.body, objects[1].1);
    assert!(is_disk_hit(&b), "{:?}", b.cache_status());
    assert_eq!(origin.count_path("/vod/b.m4s"), 1);

    edge.stop();
    origin.stop().await;
}

async fn lang(edge: &DiskEdge, l: &str) -> Resp {
    send(
        edge.client()
            .get(edge.get_url("/vod/subs.vtt"))
            .header("accept-language", l),
    )
    .await
}

/// `Vary` variants are stored on disk as well (the variant index is a record of its own): after
/// a restart each variant is a disk hit with its own bytes. A soft purge before the restart
/// still holds after it: the object is revalidated (304), not served as fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_variants_and_soft_purges_survive_a_restart() {
    let origin = TestOrigin::start(|parts| {
        let path = parts.uri.path();
        if path == "/healthz" {
            return Reply::ok("ok");
        }
        let lang = parts
            .headers
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        if parts.headers.get("if-none-match").is_some() {
            return Reply::ok("").status(304).header("etag", "\"v\"");
        }
        Reply::ok(format!("{path} in {lang}"))
            .header("cache-control", "max-age=86400")
            .header("etag", "\"v\"")
            .header("vary", "Accept-Language")
    })
    .await;
    let mut edge = DiskEdge::start(&origin.url(), &Layout::default());
    for l in ["en", "fr"] {
        assert_eq!(lang(&edge, l).await.body, format!("/vod/subs.vtt in {l}"));
    }
    edge.get("/vod/soft.m4s").await;
    // The variant index and two variants, and the soft-purge target.
    edge.wait_disk_objects(4).await;
    let r = edge.purge("path=/vod/soft.m4s&soft=1").await;
    assert_eq!(r.status, StatusCode::OK, "soft purge: {:?}", r.body);

    edge.restart();
    for l in ["en", "fr"] {
        let r = lang(&edge, l).await;
        assert_eq!(r.body, format!("/vod/subs.vtt in {l}"));
        assert!(is_disk_hit(&r), "{l}: {:?}", r.cache_status());
    }
    assert_eq!(
        origin.count_path("/vod/subs.vtt"),
        2,
        "one fetch per variant"
    );
    let soft = edge.get("/vod/soft.m4s").await;
    assert_eq!(soft.body, "/vod/soft.m4s in none");
    assert_eq!(
        soft.cache_status().fwd_status,
        Some(304),
        "revalidated after the restart: {:?}",
        soft.cache_status()
    );
    assert_eq!(origin.count_path("/vod/soft.m4s"), 2);

    edge.stop();
    origin.stop().await;
}
