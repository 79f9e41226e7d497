//! Streaming awareness over real sockets: manifest TTLs from the manifest (live HLS, LL-HLS,
//! VOD, dynamic and static MPDs) and the live age cap, media kinds, compressed manifests,
//! LL-HLS blocking reloads and preload hints, prefetch (playlist and CMCD `nor`), cache-key
//! rules, signed URLs and `streamedge sign`, CMCD metrics — and ffmpeg playing the demo's HLS
//! and DASH, live and VOD, through the edge over verified HTTPS.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use http::StatusCode;
use streamedge::config::KindDurations;
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, sleep};

const HLS: &str = "application/vnd.apple.mpegurl";
const DASH: &str = "application/dash+xml";

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A live media playlist: `count` segments from `seq`, no ENDLIST.
fn live_playlist(seq: u64, target: u32, count: u64, prefix: &str) -> String {
    let mut s = format!(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{seq}\n"
    );
    for n in seq..seq + count {
        s.push_str(&format!("#EXTINF:{target}.000,\n{prefix}{n}.ts\n"));
    }
    s
}

/// An LL-HLS playlist whose newest segment `msn` has parts 0..=`part` and a preload hint for
/// the next part.
fn ll_playlist(msn: u64, part: u64, target: u32, part_target: &str) -> String {
    let mut s = format!(
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{target}\n\
         #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5\n\
         #EXT-X-PART-INF:PART-TARGET={part_target}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
        msn - 3
    );
    for n in msn - 3..msn {
        s.push_str(&format!("#EXTINF:{target}.0,\nseg-{n}.mp4\n"));
    }
    for p in 0..=part {
        s.push_str(&format!(
            "#EXT-X-PART:DURATION={part_target},URI=\"part-{msn}.{p}.mp4\"\n"
        ));
    }
    s.push_str(&format!(
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-{msn}.{}.mp4\"\n",
        part + 1
    ));
    s
}

/// A VOD-sized playlist with enough lines to be worth compressing.
fn big_playlist(segments: u64) -> String {
    let mut s = String::from(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n",
    );
    for n in 0..segments {
        s.push_str(&format!("#EXTINF:4.000,\nsegment_{n:05}.m4s\n"));
    }
    s.push_str("#EXT-X-ENDLIST\n");
    s
}

async fn get_h(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req).await
}

async fn brotli_decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    async_compression::tokio::bufread::BrotliDecoder::new(b)
        .read_to_end(&mut out)
        .await
        .expect("valid brotli");
    out
}

async fn gzip_decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    async_compression::tokio::bufread::GzipDecoder::new(b)
        .read_to_end(&mut out)
        .await
        .expect("valid gzip");
    out
}

async fn gzip_encode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    async_compression::tokio::bufread::GzipEncoder::new(b)
        .read_to_end(&mut out)
        .await
        .expect("gzip");
    out
}

fn varies_on_accept_encoding(r: &Resp) -> bool {
    r.headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding"))
}

fn age(r: &Resp) -> u64 {
    r.header("age")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no Age in {:?}", r.headers))
}

fn ttl(r: &Resp) -> i64 {
    let cs = r.cache_status();
    cs.ttl.unwrap_or_else(|| panic!("no ttl in {}", cs.raw))
}

/// Waits (bounded) until the edge answers `url` from its cache (`only-if-cached` never goes
/// to the origin), and returns that answer.
async fn wait_cached(client: &reqwest::Client, url: &str) -> Resp {
    within(10, &format!("{url} to be cached"), async {
        loop {
            let r = get_h(client, url, &[("cache-control", "only-if-cached")]).await;
            if r.status == StatusCode::OK {
                return r;
            }
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

// ---------------------------------------------------------------------------------------------
// Manifest TTLs and media kinds.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_playlist_is_refreshed_at_half_its_target_duration() {
    let plain = Arc::new(AtomicU64::new(100));
    let p = plain.clone();
    let origin = TestOrigin::start(move |req| match req.uri.path() {
        // No extension: the kind comes from the content type.
        "/live/chan" | "/live/a/index.m3u8" => {
            let seq = p.fetch_add(1, Ordering::SeqCst);
            Reply::ok(live_playlist(seq, 2, 4, "s")).header("content-type", HLS)
        }
        "/live/ll/index.m3u8" => {
            Reply::ok(ll_playlist(20, 1, 2, "0.5")).header("content-type", HLS)
        }
        _ => Reply::ok(payload(1000, 1)).header("content-type", "video/mp2t"),
    })
    .await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.https_client();

    for path in ["/live/a/index.m3u8", "/live/chan"] {
        let url = edge.https_url(path);
        let first = get(&client, &url).await;
        assert_eq!(first.status, StatusCode::OK);
        let cs = first.cache_status();
        assert!(cs.stored, "{path}: {}", cs.raw);
        assert_eq!(
            cs.ttl,
            Some(1),
            "{path}: half of TARGETDURATION:2 ({})",
            cs.raw
        );
        let started = Instant::now();
        let again = get(&client, &url).await;
        assert!(again.cache_status().hit, "{}", again.cache_status().raw);
        assert_eq!(again.body, first.body);
        assert_eq!(origin.count_path(path), 1);
        sleep(Duration::from_millis(1150).saturating_sub(started.elapsed())).await;
        let later = get(&client, &url).await;
        assert!(
            later.cache_status().is_miss(),
            "{path} older than half a target duration is refreshed: {}",
            later.cache_status().raw
        );
        assert_ne!(later.body, first.body, "a newer window");
        assert_eq!(origin.count_path(path), 2);
    }

    // LL-HLS: half the part target (0.25 s), not half the target duration.
    let url = edge.https_url("/live/ll/index.m3u8");
    let first = get(&client, &url).await;
    assert_eq!(ttl(&first), 0, "{}", first.cache_status().raw);
    sleep(Duration::from_millis(400)).await;
    let later = get(&client, &url).await;
    assert!(
        !later.cache_status().hit,
        "LL-HLS playlist older than half a part target: {}",
        later.cache_status().raw
    );
    assert_eq!(origin.count_path("/live/ll/index.m3u8"), 2);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_playlist_is_never_served_older_than_one_target_duration_unless_the_origin_fails() {
    let seq = Arc::new(AtomicU64::new(1));
    let s = seq.clone();
    let origin = TestOrigin::start(move |req| {
        if req.uri.path().ends_with(".m3u8") {
            let n = s.fetch_add(1, Ordering::SeqCst);
            Reply::ok(live_playlist(n, 2, 3, "seg"))
                .header("content-type", HLS)
                .header(
                    "cache-control",
                    "max-age=60, stale-while-revalidate=60, stale-if-error=60",
                )
        } else {
            Reply::ok(payload(500, 2)).header("content-type", "video/mp2t")
        }
    })
    .await;
    // A section names one kind; the kinds it leaves out are zero.
    let manifests_only = KindDurations {
        manifest: Duration::from_secs(30),
        segment: Duration::ZERO,
        other: Duration::ZERO,
    };
    let edge = TestEdge::builder(&[origin.url()])
        .config(move |c| {
            c.cache.stale_while_revalidate = manifests_only;
            c.cache.stale_if_error = manifests_only;
        })
        .start()
        .await;
    let client = edge.https_client();
    let url = edge.https_url("/live/cap/index.m3u8");

    let first = get(&client, &url).await;
    let cs = first.cache_status();
    assert!(cs.stored, "{}", cs.raw);
    assert!(
        cs.ttl.is_some_and(|t| t <= 2),
        "max-age=60 capped at TARGETDURATION:2: {}",
        cs.raw
    );
    let t0 = Instant::now();
    sleep(Duration::from_millis(1000)).await;
    let hit = get(&client, &url).await;
    assert!(hit.cache_status().hit, "{}", hit.cache_status().raw);
    assert!(age(&hit) <= 2);
    assert_eq!(hit.body, first.body);

    // Past one target duration: neither max-age=60 nor stale-while-revalidate=60 lets the old
    // window out; the edge waits for a new one.
    sleep(Duration::from_millis(2300).saturating_sub(t0.elapsed())).await;
    let refreshed = get(&client, &url).await;
    let cs = refreshed.cache_status();
    assert!(!cs.hit, "stale live playlist served: {}", cs.raw);
    assert_eq!(refreshed.status, StatusCode::OK);
    assert!(age(&refreshed) <= 2);
    assert!(
        String::from_utf8_lossy(&refreshed.body).contains("#EXT-X-MEDIA-SEQUENCE:2"),
        "the newer window"
    );
    let path = "/live/cap/index.m3u8";
    assert_eq!(origin.count_path(path), 2);

    // But in place of a failed origin the newest playlist the edge has is served, within
    // stale-if-error, however old: a player reloading it sees it unchanged and waits, where
    // errors make it give up (hls.js does after three; the browser suite shows it riding out an
    // outage this way). It says so in Cache-Status.
    origin.set_script(|_| {
        Reply::ok("down")
            .status(503)
            .header("cache-control", "stale-if-error=60")
    });
    let t1 = Instant::now();
    sleep(Duration::from_millis(2300)).await;
    let stale = get(&client, &url).await;
    let cs = stale.cache_status();
    assert_eq!(
        stale.status,
        StatusCode::OK,
        "a playlist {} ms old in place of a 503: {:?}",
        t1.elapsed().as_millis(),
        stale.header("cache-status")
    );
    assert_eq!(stale.body, refreshed.body, "the newest window the edge had");
    assert!(
        cs.raw.contains("fwd=stale") && cs.raw.contains("detail=stale-if-error"),
        "{}",
        cs.raw
    );
    assert!(age(&stale) >= 2, "its Age tells how old it is");

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_playlists_and_segments_are_cached_long() {
    let endlist = format!("{}#EXT-X-ENDLIST\n", live_playlist(1, 4, 3, "v"));
    let typed = live_playlist(1, 4, 3, "v").replace(
        "#EXT-X-VERSION:6\n",
        "#EXT-X-VERSION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n",
    );
    let origin = TestOrigin::start(move |req| match req.uri.path() {
        "/vod/endlist.m3u8" => Reply::ok(endlist.clone()).header("content-type", HLS),
        "/vod/typed.m3u8" => Reply::ok(typed.clone()).header("content-type", HLS),
        "/vod/seg-1.m4s" => Reply::ok(payload(2000, 3)).header("content-type", "video/mp4"),
        // No extension: a segment by its content type.
        _ => Reply::ok(payload(2000, 4)).header("content-type", "video/mp4"),
    })
    .await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| c.cache.ttl.vod_manifest = Duration::from_secs(7 * 60))
        .start()
        .await;
    let client = edge.https_client();

    for path in ["/vod/endlist.m3u8", "/vod/typed.m3u8"] {
        let r = get(&client, &edge.https_url(path)).await;
        assert!(r.cache_status().stored, "{}", r.cache_status().raw);
        let t = ttl(&r);
        assert!(
            (418..=420).contains(&t),
            "{path}: ttl {t}, want vod_manifest 420"
        );
        let again = get(&client, &edge.https_url(path)).await;
        assert!(again.cache_status().hit);
        assert_eq!(origin.count_path(path), 1);
    }
    for path in ["/vod/seg-1.m4s", "/vod/object/42"] {
        let r = get(&client, &edge.https_url(path)).await;
        let t = ttl(&r);
        assert!(
            (86_390..=86_400).contains(&t),
            "{path}: segments are immutable (1d), ttl {t}"
        );
    }

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_and_static_mpds() {
    let mpd = |attrs: &str| {
        format!(
            "<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" {attrs}>\n\
             <Period id=\"0\"/>\n</MPD>\n"
        )
    };
    let dynamic = mpd(
        "type=\"dynamic\" minimumUpdatePeriod=\"PT8S\" availabilityStartTime=\"2026-01-01T00:00:00Z\"",
    );
    let no_period = mpd("type=\"dynamic\" availabilityStartTime=\"2026-01-01T00:00:00Z\"");
    let fixed = mpd("type=\"static\" mediaPresentationDuration=\"PT60S\"");
    let origin = TestOrigin::start(move |req| {
        let body = match req.uri.path() {
            "/d/dynamic.mpd" | "/d/explicit.mpd" => dynamic.clone(),
            "/d/no-period.mpd" => no_period.clone(),
            _ => fixed.clone(),
        };
        let r = Reply::ok(body).header("content-type", DASH);
        if req.uri.path() == "/d/explicit.mpd" {
            r.header("cache-control", "max-age=60")
        } else {
            r
        }
    })
    .await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| {
            c.cache.ttl.manifest = Duration::from_secs(3);
            c.cache.ttl.vod_manifest = Duration::from_secs(7 * 60);
        })
        .start()
        .await;
    let client = edge.https_client();
    let cases = [
        ("/d/dynamic.mpd", 4..=4, "half minimumUpdatePeriod PT8S"),
        ("/d/no-period.mpd", 3..=3, "cache.ttl.manifest"),
        ("/d/static.mpd", 418..=420, "vod_manifest"),
        (
            "/d/explicit.mpd",
            7..=8,
            "max-age=60 capped at the update period",
        ),
    ];
    for (path, want, why) in cases {
        let r = get(&client, &edge.https_url(path)).await;
        assert_eq!(r.status, StatusCode::OK);
        let t = ttl(&r);
        assert!(want.contains(&t), "{path}: ttl {t}, want {want:?} ({why})");
    }

    edge.stop().await;
    origin.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Compression.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_are_compressed_once_for_every_encoding() {
    let text = big_playlist(200);
    let small = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\na.m4s\n#EXT-X-ENDLIST\n";
    let (t, s) = (text.clone(), small.to_owned());
    let origin = TestOrigin::start(move |req| {
        let body = if req.uri.path() == "/c/small.m3u8" {
            s.clone()
        } else {
            t.clone()
        };
        Reply::ok(body).header("content-type", HLS)
    })
    .await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.https_client();
    let url = edge.https_url("/c/index.m3u8");

    let br = get_h(&client, &url, &[("accept-encoding", "gzip, deflate, br")]).await;
    assert_eq!(br.status, StatusCode::OK);
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert!(varies_on_accept_encoding(&br), "{:?}", br.headers);
    assert!(
        br.body.len() < text.len() / 4,
        "{} of {}",
        br.body.len(),
        text.len()
    );
    assert_eq!(brotli_decode(&br.body).await, text.as_bytes());
    assert_eq!(
        br.header("content-length"),
        Some(br.body.len().to_string().as_str())
    );

    let gz = get_h(&client, &url, &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert!(varies_on_accept_encoding(&gz));
    assert_eq!(gzip_decode(&gz.body).await, text.as_bytes());
    assert!(gz.cache_status().hit, "{}", gz.cache_status().raw);

    // q-values: Brotli refused.
    let q = get_h(&client, &url, &[("accept-encoding", "br;q=0, gzip")]).await;
    assert_eq!(q.header("content-encoding"), Some("gzip"));
    assert_eq!(gzip_decode(&q.body).await, text.as_bytes());
    let q = get_h(
        &client,
        &url,
        &[("accept-encoding", "gzip;q=0.4, br;q=0.9")],
    )
    .await;
    assert_eq!(q.header("content-encoding"), Some("br"));
    let q = get_h(&client, &url, &[("accept-encoding", "br;q=0, gzip;q=0")]).await;
    assert_eq!(q.header("content-encoding"), None);
    assert_eq!(q.body, text.as_bytes());

    let identity = get(&client, &url).await;
    assert_eq!(identity.header("content-encoding"), None);
    assert!(varies_on_accept_encoding(&identity));
    assert_eq!(identity.body, text.as_bytes());

    // Computed once: the same bytes again, and one origin request for all of the above.
    let br2 = get_h(&client, &url, &[("accept-encoding", "br")]).await;
    assert_eq!(br2.body, br.body);
    assert!(br2.cache_status().hit);
    assert_eq!(origin.count_path("/c/index.m3u8"), 1);

    // Below compression.min_size (512 B): as it is.
    let small_r = get_h(
        &client,
        &edge.https_url("/c/small.m3u8"),
        &[("accept-encoding", "br, gzip")],
    )
    .await;
    assert_eq!(small_r.header("content-encoding"), None);
    assert_eq!(small_r.body, small.as_bytes());

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_and_origin_encoded_bodies_are_not_recompressed() {
    let text = big_playlist(100);
    let gzipped = Bytes::from(gzip_encode(text.as_bytes()).await);
    // Very compressible bytes that are nonetheless a segment.
    let segment = Bytes::from(vec![b'A'; 20_000]);
    let (g, sg, t) = (gzipped.clone(), segment.clone(), text.clone());
    let origin = TestOrigin::start(move |req| match req.uri.path() {
        "/n/seg-1.ts" => Reply::ok(sg.clone()).header("content-type", "video/mp2t"),
        "/n/encoded.m3u8" => Reply::ok(g.clone())
            .header("content-type", HLS)
            .header("content-encoding", "gzip"),
        _ => Reply::ok(t.clone())
            .header("content-type", HLS)
            .header("cache-control", "max-age=300, no-transform"),
    })
    .await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.https_client();
    let ae = [("accept-encoding", "br, gzip")];

    for _ in 0..2 {
        let seg = get_h(&client, &edge.https_url("/n/seg-1.ts"), &ae).await;
        assert_eq!(seg.header("content-encoding"), None, "segment recompressed");
        assert_eq!(seg.body, segment);
    }

    let enc_url = edge.https_url("/n/encoded.m3u8");
    for _ in 0..2 {
        let r = get_h(&client, &enc_url, &[("accept-encoding", "gzip")]).await;
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.body, gzipped, "the origin's gzip bytes, untouched");
        assert_eq!(gzip_decode(&r.body).await, text.as_bytes());
        assert!(varies_on_accept_encoding(&r));
    }
    assert_eq!(origin.count_path("/n/encoded.m3u8"), 1);

    let nt = get_h(&client, &edge.https_url("/n/no-transform.m3u8"), &ae).await;
    assert_eq!(nt.header("content-encoding"), None, "no-transform honoured");
    assert_eq!(nt.body, text.as_bytes());

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_text_is_compressed_too() {
    let text = big_playlist(100).replace('#', "/");
    let t = text.clone();
    let origin = TestOrigin::start(move |req| match req.uri.path() {
        "/t/info.json" => Reply::ok(t.clone())
            .header("content-type", "application/json")
            .header("cache-control", "max-age=60"),
        // No freshness: not stored, so not worth encoding.
        _ => Reply::ok(t.clone()).header("content-type", "text/plain"),
    })
    .await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.https_client();
    let url = edge.https_url("/t/info.json");

    let br = get_h(&client, &url, &[("accept-encoding", "br")]).await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert!(varies_on_accept_encoding(&br));
    assert_eq!(brotli_decode(&br.body).await, text.as_bytes());
    let gz = get_h(&client, &url, &[("accept-encoding", "gzip")]).await;
    assert!(gz.cache_status().hit, "{}", gz.cache_status().raw);
    assert_eq!(gzip_decode(&gz.body).await, text.as_bytes());
    assert_eq!(get(&client, &url).await.body, text.as_bytes());
    assert_eq!(origin.count_path("/t/info.json"), 1);

    let uncached = get_h(
        &client,
        &edge.https_url("/t/log.txt"),
        &[("accept-encoding", "br")],
    )
    .await;
    assert_eq!(uncached.header("content-encoding"), None);
    assert_eq!(uncached.body, text.as_bytes());

    edge.stop().await;
    origin.stop().await;
}

// ---------------------------------------------------------------------------------------------
// LL-HLS.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_blocking_reloads_collapse_into_one_origin_request() {
    let origin = TestOrigin::start(|req| {
        let q = req.uri.query().unwrap_or("");
        if req.uri.path() == "/ll/index.m3u8" {
            let d = streamedge::llhls::Directives::from_query(Some(q));
            let (msn, part) = (d.msn.unwrap_or(10), d.part.unwrap_or(0));
            // Held until the part "exists".
            let hold = if d.msn.is_some() {
                Duration::from_millis(1500)
            } else {
                Duration::ZERO
            };
            Reply::ok(ll_playlist(msn, part, 2, "0.5"))
                .header("content-type", HLS)
                .delay(hold)
        } else {
            Reply::ok(payload(300, 5)).header("content-type", "video/mp4")
        }
    })
    .await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.h2_client();
    let url = edge.https_url("/ll/index.m3u8?_HLS_msn=12&_HLS_part=2");

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (c, u) = (client.clone(), url.clone());
        tasks.spawn(async move { get(&c, &u).await });
    }
    let expected = ll_playlist(12, 2, 2, "0.5");
    let mut collapsed = 0;
    while let Some(r) = tasks.join_next().await {
        let r = r.expect("request task");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, expected.as_bytes());
        if r.cache_status().collapsed || r.cache_status().hit {
            collapsed += 1;
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert_eq!(
        origin.count_path("/ll/index.m3u8"),
        1,
        "100 blocking reloads, one origin request"
    );
    assert!(collapsed >= 99, "{collapsed} collapsed");
    let seen: Vec<_> = origin
        .requests()
        .into_iter()
        .filter(|s| s.path == "/ll/index.m3u8")
        .collect();
    assert_eq!(seen[0].query.as_deref(), Some("_HLS_msn=12&_HLS_part=2"));

    // Another (msn, part), or _HLS_skip, is another playlist.
    let other = get(
        &client,
        &edge.https_url("/ll/index.m3u8?_HLS_part=3&_HLS_msn=12"),
    )
    .await;
    assert_eq!(other.body, ll_playlist(12, 3, 2, "0.5").as_bytes());
    let skip = get(
        &client,
        &edge.https_url("/ll/index.m3u8?_HLS_msn=12&_HLS_part=2&_HLS_skip=YES"),
    )
    .await;
    assert_eq!(skip.status, StatusCode::OK);
    assert_eq!(origin.count_path("/ll/index.m3u8"), 3);
    let last = origin
        .requests()
        .into_iter()
        .rfind(|s| s.path == "/ll/index.m3u8")
        .unwrap();
    assert_eq!(
        last.query.as_deref(),
        Some("_HLS_msn=12&_HLS_part=2&_HLS_skip=YES")
    );

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_reload_may_outlast_the_first_byte_timeout() {
    let origin = TestOrigin::start(|req| {
        let q = req.uri.query().unwrap_or("");
        let blocking = q.contains("_HLS_msn");
        match req.uri.path() {
            p if p.ends_with(".m3u8") => Reply::ok(ll_playlist(30, 1, 1, "0.5"))
                .header("content-type", HLS)
                .delay(if blocking {
                    Duration::from_millis(2000)
                } else {
                    Duration::ZERO
                }),
            "/slow/seg.m4s" => Reply::ok(payload(100, 6)).delay(Duration::from_millis(2000)),
            _ => Reply::ok(payload(100, 7)).header("content-type", "video/mp4"),
        }
    })
    .await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| {
            c.fetch.first_byte_timeout = Duration::from_secs(1);
            c.fetch.max_attempts = 1;
        })
        .start()
        .await;
    let client = edge.https_client();

    // The control: an ordinary request held as long is a 504.
    let slow = get(&client, &edge.https_url("/slow/seg.m4s")).await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);

    // TARGETDURATION:1 (3 x target = 3 s): the playlist is known, a 2 s hold is fine.
    let plain = get(&client, &edge.https_url("/a/index.m3u8")).await;
    assert_eq!(plain.status, StatusCode::OK);
    let started = Instant::now();
    let held = get(
        &client,
        &edge.https_url("/a/index.m3u8?_HLS_msn=31&_HLS_part=0"),
    )
    .await;
    assert_eq!(held.status, StatusCode::OK, "{:?}", held.body);
    assert!(started.elapsed() >= Duration::from_millis(1900));
    assert!(String::from_utf8_lossy(&held.body).contains("#EXT-X-PART-INF"));

    // Not knowing the playlist yet, the edge still waits for a blocking reload.
    let cold = get(
        &client,
        &edge.https_url("/b/index.m3u8?_HLS_msn=31&_HLS_part=0"),
    )
    .await;
    assert_eq!(cold.status, StatusCode::OK, "{:?}", cold.body);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directives_are_ignored_on_an_endlist_playlist() {
    let vod = format!("{}#EXT-X-ENDLIST\n", ll_playlist(40, 3, 2, "0.5"));
    let v = vod.clone();
    let origin = TestOrigin::start(move |_| Reply::ok(v.clone()).header("content-type", HLS)).await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.https_client();

    let first = get(&client, &edge.https_url("/e/index.m3u8")).await;
    assert_eq!(first.body, vod.as_bytes());
    for q in [
        "_HLS_msn=41&_HLS_part=0",
        "_HLS_msn=99&_HLS_part=5",
        "_HLS_msn=41&_HLS_skip=YES",
    ] {
        let r = get(&client, &edge.https_url(&format!("/e/index.m3u8?{q}"))).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, vod.as_bytes());
        assert!(r.cache_status().hit, "{q}: {}", r.cache_status().raw);
    }
    assert_eq!(origin.count(), 1);
    assert!(origin.requests().iter().all(|s| s.query.is_none()));

    // Asked with directives before the edge knows the playlist: once the answer shows
    // ENDLIST, later directives are ignored too.
    let first = get(
        &client,
        &edge.https_url("/e2/index.m3u8?_HLS_msn=41&_HLS_part=0"),
    )
    .await;
    assert_eq!(first.body, vod.as_bytes());
    for q in ["_HLS_msn=42&_HLS_part=1", "_HLS_msn=41&_HLS_part=0"] {
        let r = get(&client, &edge.https_url(&format!("/e2/index.m3u8?{q}"))).await;
        assert_eq!(r.body, vod.as_bytes());
        assert!(r.cache_status().hit, "{q}: {}", r.cache_status().raw);
    }
    let plain = get(&client, &edge.https_url("/e2/index.m3u8")).await;
    assert!(plain.cache_status().hit, "{}", plain.cache_status().raw);
    assert_eq!(origin.count_path("/e2/index.m3u8"), 1);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preload_hinted_part_streams_while_the_origin_produces_it() {
    let part = payload(64 * 1024, 8);
    let p = part.clone();
    let origin = TestOrigin::start(move |req| match req.uri.path() {
        "/h/index.m3u8" => Reply::ok(ll_playlist(50, 1, 2, "1.0")).header("content-type", HLS),
        // The hinted part: its first bytes at once, the rest as the encoder makes them.
        "/h/part-50.2.mp4" => Reply::ok(p.clone())
            .header("content-type", "video/mp4")
            .chunked()
            .trickle_over(8 * 1024, Duration::from_millis(2000)),
        _ => Reply::ok(payload(1000, 9)).header("content-type", "video/mp4"),
    })
    .await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.h2_client();

    let playlist = get(&client, &edge.https_url("/h/index.m3u8")).await;
    assert!(String::from_utf8_lossy(&playlist.body).contains("part-50.2.mp4"));
    let url = edge.https_url("/h/part-50.2.mp4");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (c, u, e) = (client.clone(), url.clone(), part.clone());
        tasks.spawn(async move { stream(c.get(&u), e).await });
    }
    while let Some(s) = tasks.join_next().await {
        let s = s.expect("reader task");
        assert!(s.complete(&part), "{s:?}");
        let first = s.first_chunk.expect("a first chunk");
        assert!(
            first < Duration::from_millis(1000),
            "first bytes after {first:?}, before the origin finished"
        );
        assert!(s.total >= Duration::from_millis(1500), "{s:?}");
    }
    assert_eq!(
        origin.count_path("/h/part-50.2.mp4"),
        1,
        "the hint's prefetch and five players: one origin request"
    );

    edge.stop().await;
    origin.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Prefetch.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_segments_of_a_live_playlist_are_prefetched() {
    let origin = TestOrigin::start(|req| match req.uri.path() {
        "/pf/index.m3u8" => Reply::ok(live_playlist(10, 2, 5, "seg")).header("content-type", HLS),
        p => Reply::ok(payload(5000, p.len() as u64))
            .header("content-type", "video/mp2t")
            .delay(Duration::from_millis(500)),
    })
    .await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.https_client();
    let fetched_before = metric_sum(
        &edge.metrics().await,
        "streamedge_prefetches_total",
        &["result=\"fetched\""],
    );

    get(&client, &edge.https_url("/pf/index.m3u8")).await;
    // A player asking while the prefetch is in flight joins it.
    within(5, "the prefetch of seg14 to reach the origin", async {
        while origin.count_path("/pf/seg14.ts") == 0 {
            sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let joined = get(&client, &edge.https_url("/pf/seg14.ts")).await;
    assert!(
        joined.cache_status().collapsed,
        "{}",
        joined.cache_status().raw
    );
    // One that asks later finds it cached.
    wait_cached(&client, &edge.https_url("/pf/seg13.ts")).await;
    for n in [13, 14] {
        let r = get(&client, &edge.https_url(&format!("/pf/seg{n}.ts"))).await;
        assert!(r.cache_status().hit, "seg{n}: {}", r.cache_status().raw);
        assert_eq!(origin.count_path(&format!("/pf/seg{n}.ts")), 1);
    }
    for n in [10, 11, 12] {
        assert_eq!(
            origin.count_path(&format!("/pf/seg{n}.ts")),
            0,
            "only the newest prefetch.segments (2)"
        );
    }
    let fetched_after = metric_sum(
        &edge.metrics().await,
        "streamedge_prefetches_total",
        &["result=\"fetched\""],
    );
    assert!(
        fetched_after >= fetched_before + 2.0,
        "{fetched_before} -> {fetched_after}"
    );

    // The next refresh lists the same segments: each key is prefetched once.
    sleep(Duration::from_millis(1100)).await;
    let again = get(&client, &edge.https_url("/pf/index.m3u8")).await;
    assert!(!again.cache_status().hit);
    sleep(Duration::from_millis(200)).await;
    assert_eq!(origin.count_path("/pf/seg14.ts"), 1);
    assert_eq!(origin.count_path("/pf/seg13.ts"), 1);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_concurrency_is_bounded() {
    let origin = TestOrigin::start(|req| match req.uri.path() {
        "/pc/index.m3u8" => Reply::ok(live_playlist(1, 2, 6, "seg")).header("content-type", HLS),
        _ => Reply::ok(payload(1000, 10))
            .header("content-type", "video/mp2t")
            .delay(Duration::from_millis(500)),
    })
    .await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| {
            c.prefetch.segments = 4;
            c.prefetch.concurrency = 1;
        })
        .start()
        .await;
    let client = edge.https_client();
    get(&client, &edge.https_url("/pc/index.m3u8")).await;
    sleep(Duration::from_millis(300)).await;
    let segs: usize = (1..=6)
        .map(|n| origin.count_path(&format!("/pc/seg{n}.ts")))
        .sum();
    assert_eq!(segs, 1, "one prefetch at a time; the rest are skipped");

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmcd_next_object_is_prefetched() {
    let origin = TestOrigin::start(|req| {
        Reply::ok(payload(3000, req.uri.path().len() as u64)).header("content-type", "video/mp4")
    })
    .await;
    let edge = TestEdge::start(&origin).await;
    let client = edge.https_client();

    // Query form: `nor` relative to the request, percent-encoded.
    let r = get(
        &client,
        &edge.https_url("/cm/v/seg-1.m4s?CMCD=nor%3D%22seg-2.m4s%22%2Cot%3Dv%2Csid%3D%22s1%22"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        origin.last_request().query,
        None,
        "CMCD never reaches the origin"
    );
    wait_cached(&client, &edge.https_url("/cm/v/seg-2.m4s")).await;
    let r = get(&client, &edge.https_url("/cm/v/seg-2.m4s")).await;
    assert!(r.cache_status().hit, "{}", r.cache_status().raw);
    assert_eq!(origin.count_path("/cm/v/seg-2.m4s"), 1);

    // Header form, with a path into another rendition.
    let r = get_h(
        &client,
        &edge.https_url("/cm/v/seg-3.m4s"),
        &[("cmcd-request", "nor=\"..%2Fa%2Fseg-3.m4s\"")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    wait_cached(&client, &edge.https_url("/cm/a/seg-3.m4s")).await;
    let r = get(&client, &edge.https_url("/cm/a/seg-3.m4s")).await;
    assert!(r.cache_status().hit, "{}", r.cache_status().raw);
    assert_eq!(origin.count_path("/cm/a/seg-3.m4s"), 1);

    edge.stop().await;
    origin.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Cache keys.

const KEY_RULES: &str = "cache_key:\n  - prefix: /live/\n    query_allow: [bitrate]\n  \
                         - prefix: /vod/\n    query_deny: [session, uid]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_keys_follow_the_prefix_rules() {
    let origin = TestOrigin::start(|req| {
        let seed = req.uri.path().len() as u64 + req.uri.query().map_or(0, |q| q.len() as u64);
        Reply::ok(payload(2000, seed)).header("content-type", "video/mp2t")
    })
    .await;
    let edge = TestEdge::start_with(&[origin.url()], KEY_RULES).await;
    let client = edge.https_client();
    let fetch = |path: &'static str| {
        let (c, u) = (client.clone(), edge.https_url(path));
        async move { get(&c, &u).await }
    };

    // Deny list, sorted parameters, CMCD dropped.
    let a = fetch("/vod/a.ts?b=2&a=1&session=s1").await;
    assert!(a.cache_status().is_miss());
    assert_eq!(origin.last_request().query.as_deref(), Some("a=1&b=2"));
    let b = fetch("/vod/a.ts?a=1&uid=7&b=2&CMCD=bl%3D100%2Cot%3Dv").await;
    assert!(b.cache_status().hit, "{}", b.cache_status().raw);
    assert_eq!(b.body, a.body);
    let c = fetch("/vod/a.ts?a=1").await;
    assert!(c.cache_status().is_miss(), "another object");
    assert_eq!(origin.count_path("/vod/a.ts"), 2);

    // Allow list: only bitrate (and LL-HLS directives) are kept.
    fetch("/live/x.ts?foo=1&bitrate=800&sid=9").await;
    assert_eq!(origin.last_request().query.as_deref(), Some("bitrate=800"));
    let hit = fetch("/live/x.ts?bitrate=800&foo=2").await;
    assert!(hit.cache_status().hit);
    fetch("/live/y.ts?zz=1").await;
    assert_eq!(origin.last_request().query, None);

    // No rule: all parameters, sorted, CMCD still dropped.
    fetch("/other/y.ts?z=1&a=2&CMCD=bs").await;
    assert_eq!(origin.last_request().query.as_deref(), Some("a=2&z=1"));
    assert!(fetch("/other/y.ts?a=2&z=1").await.cache_status().hit);
    assert_eq!(origin.count_path("/other/y.ts"), 1);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_normalised_key_picks_the_origin() {
    // Uncacheable answers: every request goes to the origin the ring picks for its key.
    let reply = Reply::ok("x").header("cache-control", "no-store");
    let a = TestOrigin::fixed(reply.clone()).await;
    let b = TestOrigin::fixed(reply).await;
    let edge = TestEdge::start_with(&[a.url(), b.url()], KEY_RULES).await;
    let client = edge.https_client();
    for i in 0..24 {
        for q in [
            "p=1&q=2&session=a",
            "q=2&p=1&uid=b",
            "CMCD=bl%3D1&uid=c&q=2&p=1",
        ] {
            let r = get(&client, &edge.https_url(&format!("/vod/k{i}.ts?{q}"))).await;
            assert_eq!(r.status, StatusCode::OK);
        }
    }
    for i in 0..24 {
        let path = format!("/vod/k{i}.ts");
        let (na, nb) = (a.count_path(&path), b.count_path(&path));
        assert!(
            (na, nb) == (3, 0) || (na, nb) == (0, 3),
            "{path}: origin a {na}, origin b {nb}"
        );
    }
    assert!(a.count() > 0 && b.count() > 0, "both origins own keys");
    for s in a.requests().into_iter().chain(b.requests()) {
        assert_eq!(s.query.as_deref(), Some("p=1&q=2"));
    }

    edge.stop().await;
    a.stop().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Signed URLs.

const KEY_NEW: &str = "current-key-0123456789abcdef";
const KEY_OLD: &str = "previous-key-0123456789abcdef";

async fn signed_edge(origin: &TestOrigin) -> TestEdge {
    let yaml = format!(
        "signed_urls:\n  - prefix: /secure/\n    keys: [\"{KEY_NEW}\", \"{KEY_OLD}\"]\n    \
         param: token\n    path_segment: true\n"
    );
    TestEdge::start_with(&[origin.url()], &yaml).await
}

async fn signed_origin() -> TestOrigin {
    TestOrigin::start(|req| {
        if req.uri.path().ends_with(".m3u8") {
            Reply::ok(
                live_playlist(1, 4, 3, "seg-").replace(
                    "#EXT-X-VERSION:6\n",
                    "#EXT-X-VERSION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n",
                ) + "#EXT-X-ENDLIST\n",
            )
            .header("content-type", HLS)
        } else {
            Reply::ok(payload(1500, 11)).header("content-type", "video/mp2t")
        }
    })
    .await
}

fn token(key: &str, acl: &str, expires: u64) -> String {
    streamedge::signing::make_token(key.as_bytes(), acl, expires)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_are_checked_and_stripped() {
    let origin = signed_origin().await;
    let edge = signed_edge(&origin).await;
    let client = edge.https_client();
    let exp = now_unix() + 600;
    let url = |path: &str, q: &str| edge.https_url(&format!("{path}?{q}"));
    let good = token(KEY_NEW, "/secure/hls/*", exp);

    // Missing, valid, expired, tampered, out of scope, rotated, unknown key.
    let missing = get(&client, &edge.https_url("/secure/hls/index.m3u8")).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    let ok = get(
        &client,
        &url("/secure/hls/index.m3u8", &format!("token={good}&x=1")),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let seen = origin.last_request();
    assert_eq!(seen.path, "/secure/hls/index.m3u8");
    assert_eq!(
        seen.query.as_deref(),
        Some("x=1"),
        "the token is not forwarded"
    );

    let expired = token(KEY_NEW, "/secure/hls/*", now_unix() - 5);
    let r = get(
        &client,
        &url("/secure/hls/seg-1.ts", &format!("token={expired}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "expired");
    let widened = good.replace("acl=/secure/hls/*", "acl=/secure/*");
    let r = get(
        &client,
        &url("/secure/hls/seg-1.ts", &format!("token={widened}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "acl changed");
    let later = good.replace(&format!("exp={exp}"), &format!("exp={}", exp + 3600));
    let r = get(
        &client,
        &url("/secure/hls/seg-1.ts", &format!("token={later}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "expiry changed");
    let mut flipped = good.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == '0' { '1' } else { '0' });
    let r = get(
        &client,
        &url("/secure/hls/seg-1.ts", &format!("token={flipped}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "signature changed");
    let elsewhere = token(KEY_NEW, "/secure/other/*", exp);
    let r = get(
        &client,
        &url("/secure/hls/seg-1.ts", &format!("token={elsewhere}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "out of scope");
    let stranger = token("someone-elses-key-0123456789", "/secure/hls/*", exp);
    let r = get(
        &client,
        &url("/secure/hls/seg-1.ts", &format!("token={stranger}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "unknown key");

    let rotated = token(KEY_OLD, "/secure/hls/*", exp);
    let r = get(
        &client,
        &url("/secure/hls/seg-1.ts", &format!("token={rotated}")),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the previous key during a rotation"
    );
    // Another valid token for the same object: one cache entry, the token is not in the key.
    let r = get(
        &client,
        &url("/secure/hls/seg-1.ts", &format!("token={good}")),
    )
    .await;
    assert!(r.cache_status().hit, "{}", r.cache_status().raw);
    assert_eq!(origin.count_path("/secure/hls/seg-1.ts"), 1);

    // Outside the prefix nothing is checked.
    assert_eq!(
        get(&client, &edge.https_url("/open/seg-1.ts")).await.status,
        StatusCode::OK
    );

    // Path-segment form: relative URIs in the playlist inherit the token.
    let in_path = token(KEY_NEW, "/secure/hls/*", exp).replace('/', "%2F");
    let playlist_url = edge.https_url(&format!("/secure/token={in_path}/hls/index.m3u8"));
    let pl = get(&client, &playlist_url).await;
    assert_eq!(pl.status, StatusCode::OK);
    let r = get(
        &client,
        &url("/secure/hls/index.m3u8", &format!("token={rotated}")),
    )
    .await;
    assert!(
        r.cache_status().hit,
        "path and query forms share one object"
    );
    let base = reqwest::Url::parse(&playlist_url).unwrap();
    let uris: Vec<String> = String::from_utf8_lossy(&pl.body)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(uris.len(), 3);
    for u in &uris {
        let seg = base.join(u).unwrap();
        assert!(seg.path().contains("/token="), "{seg}");
        let r = get(&client, seg.as_str()).await;
        assert_eq!(r.status, StatusCode::OK, "{seg}");
    }
    assert_eq!(origin.count_path("/secure/hls/seg-2.ts"), 1);
    let tampered = in_path.replace("hls", "dash");
    let r = get(
        &client,
        &edge.https_url(&format!("/secure/token={tampered}/hls/seg-2.ts")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    for s in origin.requests() {
        let target = format!("{}?{}", s.path, s.query.unwrap_or_default());
        assert!(
            !target.contains("token") && !target.contains("hmac"),
            "the origin saw a token: {target}"
        );
    }

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_command_makes_tokens_the_edge_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_streamedge"))
        .args([
            "sign",
            "--key",
            KEY_NEW,
            "--acl",
            "/secure/*",
            "--ttl",
            "1h",
        ])
        .output()
        .expect("run streamedge sign");
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let exp: u64 = token
        .strip_prefix("exp=")
        .and_then(|t| t.split('~').next())
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("token {token:?}"));
    let now = now_unix();
    assert!(
        (now + 3590..=now + 3610).contains(&exp),
        "exp {exp} is about an hour from {now}"
    );
    assert!(token.contains("~acl=/secure/*~hmac="), "{token}");

    let bad = Command::new(env!("CARGO_BIN_EXE_streamedge"))
        .args([
            "sign",
            "--key",
            KEY_NEW,
            "--acl",
            "/secure/*",
            "--ttl",
            "soon",
        ])
        .output()
        .expect("run streamedge sign");
    assert!(!bad.status.success(), "a bad --ttl is refused");

    let origin = signed_origin().await;
    let edge = signed_edge(&origin).await;
    let client = edge.https_client();
    let r = get(
        &client,
        &edge.https_url(&format!("/secure/live/seg-9.ts?token={token}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let tampered = token.replace("/secure/*", "/*");
    let r = get(
        &client,
        &edge.https_url(&format!("/secure/live/seg-9.ts?token={tampered}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    edge.stop().await;
    origin.stop().await;
}

// ---------------------------------------------------------------------------------------------
// CMCD.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmcd_is_counted_in_metrics() {
    let origin =
        TestOrigin::fixed(Reply::ok(payload(800, 12)).header("content-type", "video/mp4")).await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| c.prefetch.cmcd_nor = false)
        .start()
        .await;
    let client = edge.https_client();
    let requests = |t: &str, o: &str| metric_sum(t, "streamedge_cmcd_requests_total", &[o]);
    let starved = |t: &str| metric_sum(t, "streamedge_cmcd_buffer_starvation_total", &[]);
    let before = edge.metrics().await;

    for i in 0..3 {
        get(
            &client,
            &edge.https_url(&format!(
                "/cmcd/seg-{i}.m4s?CMCD=bl%3D300%2Cbs%2Cot%3Dv%2Csid%3D%22abc%22"
            )),
        )
        .await;
    }
    get_h(
        &client,
        &edge.https_url("/cmcd/index.m3u8"),
        &[
            ("cmcd-object", "ot=m"),
            ("cmcd-session", "sid=\"abc\""),
            ("cmcd-request", "bl=5000"),
        ],
    )
    .await;
    // No CMCD: not counted.
    get(&client, &edge.https_url("/cmcd/seg-9.m4s")).await;

    let after = edge.metrics().await;
    let media = requests(&after, "object=\"media\"") - requests(&before, "object=\"media\"");
    let manifest =
        requests(&after, "object=\"manifest\"") - requests(&before, "object=\"manifest\"");
    assert!(media >= 3.0, "media {media}\n{after}");
    assert!(manifest >= 1.0, "manifest {manifest}");
    assert!(starved(&after) - starved(&before) >= 3.0);

    edge.stop().await;
    origin.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A real player: ffmpeg through the edge over verified HTTPS.

/// What one ffmpeg run did.
struct FfmpegRun {
    /// `None`: killed at the time limit.
    code: Option<i32>,
    /// The last `frame=` of `-progress`: frames decoded.
    frames: u64,
    stderr: String,
}

/// Runs ffmpeg, bounded by `limit` (killed past it).
fn run_ffmpeg(args: &[String], limit: Duration) -> FfmpegRun {
    let mut child = match Command::new("ffmpeg")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "ffmpeg is required for this test (Debian: apt-get install ffmpeg; CI installs it \
             in .ci/run) but could not be started: {e}"
        ),
    };
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let code = loop {
        match child.try_wait().expect("wait for ffmpeg") {
            Some(status) => break status.code(),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let progress = stdout.join().unwrap_or_default();
    let frames = progress
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("frame="))
        .find_map(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let mut stderr = stderr.join().unwrap_or_default();
    if code.is_none() {
        stderr.push_str(&format!("\n(killed after {limit:?})"));
    }
    FfmpegRun {
        code,
        frames,
        stderr,
    }
}

/// Plays 4 s of `url`, trusting only `ca_file`, decoding every frame of every stream (`-map 0`:
/// both video renditions of the demo, not only the one ffmpeg would pick) and throwing it away.
///
/// `-tls_verify 1 -ca_file` applies to the request for `url`. ffmpeg 5.1's HLS and DASH
/// demuxers hand only a few options (headers, user agent, cookies, ...) down to the requests
/// for the playlists and segments they open themselves, so those are made over the same TLS
/// listener but without verification on ffmpeg's side.
fn ffmpeg_args(ca_file: &std::path::Path, url: &str) -> Vec<String> {
    [
        "-nostdin",
        "-hide_banner",
        "-nostats",
        "-v",
        "error",
        "-tls_verify",
        "1",
        "-ca_file",
        &ca_file.display().to_string(),
        "-i",
        url,
        "-map",
        "0",
        "-t",
        "4",
        "-progress",
        "pipe:1",
        "-f",
        "null",
        "-",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ffmpeg_plays_hls_and_dash_live_and_vod_through_the_edge() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_addr = listener.local_addr().unwrap();
    let (stop_origin, origin_stopped) = tokio::sync::oneshot::channel::<()>();
    let origin = tokio::spawn(streamedge::origin::serve(
        listener,
        streamedge::origin::OriginOptions::default(),
        async move {
            let _ = origin_stopped.await;
        },
    ));
    let edge = TestEdge::start_with(&[format!("http://{origin_addr}")], "").await;
    let ca = edge.cert_pem_path();
    assert!(ca.exists(), "{}", ca.display());

    let mut runs = tokio::task::JoinSet::new();
    for path in [
        "/vod/hls/master.m3u8",
        "/vod/dash/manifest.mpd",
        "/live/hls/master.m3u8",
        "/live/dash/manifest.mpd",
    ] {
        let args = ffmpeg_args(&ca, &edge.https_url(path));
        runs.spawn_blocking(move || (path, run_ffmpeg(&args, Duration::from_secs(45))));
    }
    // Certificate verification is on: a CA that did not sign the edge's certificate fails.
    let dir = TempDir::new("media-ca");
    let stranger = dir.path().join("other-ca.pem");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&stranger, other.cert.pem()).unwrap();
    let args = ffmpeg_args(&stranger, &edge.https_url("/vod/hls/master.m3u8"));
    runs.spawn_blocking(move || ("untrusted", run_ffmpeg(&args, Duration::from_secs(45))));

    let mut failures = Vec::new();
    while let Some(done) = runs.join_next().await {
        let (what, run) = done.expect("ffmpeg task");
        if what == "untrusted" {
            if run.code == Some(0) || run.frames > 0 {
                failures.push(format!(
                    "ffmpeg played through a certificate its CA file does not vouch for: {}",
                    run.stderr
                ));
            }
            continue;
        }
        // 4 s at 25 fps.
        if run.code != Some(0) || !run.stderr.trim().is_empty() || run.frames < 90 {
            failures.push(format!(
                "{what}: exit {:?}, {} frames\n{}",
                run.code, run.frames, run.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));

    edge.stop().await;
    let _ = stop_origin.send(());
    within(10, "synthetic origin to stop", origin)
        .await
        .expect("origin task")
        .expect("origin serve");
}
