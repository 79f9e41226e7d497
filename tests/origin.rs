//! The synthetic origin over real sockets: VOD and live views, methods, errors, traversal, delay.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use streamedge::origin::{self, OriginOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Upper bound for any one test, so a hang fails instead of stalling CI.
const TEST_LIMIT: Duration = Duration::from_secs(20);

struct Origin {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl Origin {
    async fn start(opts: OriginOptions) -> Origin {
        Self::start_with(|listener, shutdown| origin::serve(listener, opts, shutdown)).await
    }

    async fn start_live_at(opts: OriginOptions, live_start: SystemTime) -> Origin {
        Self::start_with(move |listener, shutdown| {
            origin::serve_with_live_start(listener, opts, live_start, shutdown)
        })
        .await
    }

    async fn start_with<F, Fut>(serve: F) -> Origin
    where
        F: FnOnce(TcpListener, Box<dyn Future<Output = ()> + Send + Unpin>) -> Fut,
        Fut: Future<Output = io::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown: Box<dyn Future<Output = ()> + Send + Unpin> =
            Box::new(Box::pin(async move {
                let _ = stopped.await;
            }));
        let task = tokio::spawn(serve(listener, shutdown));
        Origin { addr, stop, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Triggers shutdown and waits for `serve` to return.
    async fn stop(self) {
        let _ = self.stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve did not return after shutdown")
            .expect("serve panicked");
        result.expect("serve failed");
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().unwrap()
}

fn media_file(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/origin/media/cmaf")
            .join(name),
    )
    .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

/// Sends `path` byte for byte (HTTP clients normalise dot segments away
/// before sending, which is exactly what these tests must not rely on) and
/// returns the status code and body.
async fn raw_get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => buf[i + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

fn media_sequence(playlist: &str) -> u64 {
    playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .unwrap()
        .parse()
        .unwrap()
}

fn whole_seconds_ago(secs: u64) -> SystemTime {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    UNIX_EPOCH + Duration::from_secs(now.as_secs() - secs)
}

async fn sleep_until(t: SystemTime) {
    if let Ok(d) = t.duration_since(SystemTime::now()) {
        tokio::time::sleep(d).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_playlist_and_segment() {
    tokio::time::timeout(TEST_LIMIT, async {
        let o = Origin::start(OriginOptions::default()).await;
        let c = client();

        let r = c.get(o.url("/vod/hls/master.m3u8")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "content-type"),
            Some("application/vnd.apple.mpegurl")
        );
        assert_eq!(header(&r, "cache-control"), None);
        let etag = header(&r, "etag").unwrap().to_owned();
        assert!(etag.starts_with('"') && !etag.starts_with("W/"));
        assert!(header(&r, "last-modified").is_some());
        let len: usize = header(&r, "content-length").unwrap().parse().unwrap();
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), len);
        assert_eq!(&body[..], &media_file("master.m3u8")[..]);

        for (dir, name, ctype) in [
            ("hls", "seg-0-003.m4s", "video/iso.segment"),
            ("dash", "seg-0-003.m4s", "video/iso.segment"),
            ("dash", "init-1.m4s", "video/iso.segment"),
            ("dash", "manifest.mpd", "application/dash+xml"),
            ("hls", "media_1.m3u8", "application/vnd.apple.mpegurl"),
        ] {
            let r = c
                .get(o.url(&format!("/vod/{dir}/{name}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{name}");
            assert_eq!(header(&r, "content-type"), Some(ctype), "{name}");
            let expected = media_file(name);
            assert_eq!(
                header(&r, "content-length"),
                Some(expected.len().to_string().as_str())
            );
            assert_eq!(&r.bytes().await.unwrap()[..], &expected[..], "{name}");
        }

        // Revalidation with the validator just received.
        let r = c
            .get(o.url("/vod/hls/master.m3u8"))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304);
        o.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_405_404_and_ranges() {
    tokio::time::timeout(TEST_LIMIT, async {
        let o = Origin::start(OriginOptions::default()).await;
        let c = client();
        let size = media_file("seg-0-001.m4s").len();

        let r = c
            .head(o.url("/vod/hls/seg-0-001.m4s"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "content-length"),
            Some(size.to_string().as_str())
        );
        assert_eq!(header(&r, "content-type"), Some("video/iso.segment"));
        assert!(r.bytes().await.unwrap().is_empty());

        for method in [
            reqwest::Method::POST,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
        ] {
            let r = c
                .request(method.clone(), o.url("/vod/hls/seg-0-001.m4s"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 405, "{method}");
            assert_eq!(header(&r, "allow"), Some("GET, HEAD"));
        }

        for path in [
            "/vod/hls/nope.m4s",
            "/elsewhere",
            "/",
            "/live/hls/nope.m3u8",
            "/vod/hls/",
            "/vod/dash/master.m3u8",
        ] {
            let r = c.get(o.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 404, "{path}");
        }

        let r = c
            .get(o.url("/vod/hls/seg-0-001.m4s"))
            .header("range", "bytes=10-19")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(
            header(&r, "content-range"),
            Some(format!("bytes 10-19/{size}").as_str())
        );
        assert_eq!(
            &r.bytes().await.unwrap()[..],
            &media_file("seg-0-001.m4s")[10..20]
        );
        o.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_is_refused() {
    tokio::time::timeout(TEST_LIMIT, async {
        // A served directory with a secret right next to it.
        let base = scratch_dir("traversal");
        let served = base.join("served");
        std::fs::create_dir_all(served.join("sub")).unwrap();
        std::fs::write(served.join("sub/ok.ts"), b"fine").unwrap();
        std::fs::write(base.join("secret.txt"), b"TOP SECRET").unwrap();
        let o = Origin::start(OriginOptions {
            dir: Some(served),
            ..OriginOptions::default()
        })
        .await;

        assert_eq!(
            raw_get(o.addr, "/vod/sub/ok.ts").await,
            (200, b"fine".to_vec())
        );
        for path in [
            "/vod/../secret.txt",
            "/vod/sub/../../secret.txt",
            "/vod/%2e%2e/secret.txt",
            "/vod/%2E%2E%2Fsecret.txt",
            "/live/sub/..%2f..%2fsecret.txt",
            "/vod/sub%2f..%2f..%2fsecret.txt",
            "/vod/..%5csecret.txt",
            "/vod//etc/passwd",
            "/vod/%00",
            "/live/loop-1/../secret.txt",
        ] {
            let (status, body) = raw_get(o.addr, path).await;
            assert!(status == 400 || status == 404, "{path}: {status}");
            assert!(!String::from_utf8_lossy(&body).contains("SECRET"), "{path}");
        }
        o.stop().await;
        std::fs::remove_dir_all(base).unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_playlist_advances() {
    tokio::time::timeout(TEST_LIMIT, async {
        // Started a whole second or so ago: the first 2 s segment boundary
        // after the start is at most a second away.
        let start = whole_seconds_ago(1);
        let o = Origin::start_live_at(OriginOptions::default(), start).await;
        let c = client();
        let url = o.url("/live/hls/media_0.m3u8");

        let first = c.get(&url).send().await.unwrap();
        assert_eq!(first.status(), 200);
        assert_eq!(
            header(&first, "content-type"),
            Some("application/vnd.apple.mpegurl")
        );
        assert_eq!(header(&first, "cache-control"), None);
        let etag1 = header(&first, "etag").unwrap().to_owned();
        let text1 = first.text().await.unwrap();
        let seq1 = media_sequence(&text1);
        assert!(!text1.contains("#EXT-X-ENDLIST") && !text1.contains("#EXT-X-PLAYLIST-TYPE"));
        assert!(text1.contains("#EXT-X-DISCONTINUITY-SEQUENCE:"));
        let uris: Vec<&str> = text1.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(uris.len(), 6, "{text1}");

        // Every listed URI (and the init section) resolves under /live.
        for uri in uris.iter().copied().chain(["init-0.m4s"]) {
            let r = c
                .get(o.url(&format!("/live/hls/{uri}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{uri}");
            assert_eq!(header(&r, "content-type"), Some("video/iso.segment"));
        }

        // Past the next boundary (start + 2 s × (seq1 + 1)), the window has
        // moved by one segment.
        sleep_until(start + Duration::from_secs(2 * (seq1 + 1)) + Duration::from_millis(200)).await;
        let second = c.get(&url).send().await.unwrap();
        let etag2 = header(&second, "etag").unwrap().to_owned();
        let text2 = second.text().await.unwrap();
        assert_eq!(media_sequence(&text2), seq1 + 1, "{text1}\n---\n{text2}");
        assert_ne!(etag1, etag2);
        // The window slid: the old second line is the new first.
        let uris2: Vec<&str> = text2.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(uris2[..5], uris[1..]);
        o.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_dash_is_dynamic_and_numbers_through_loops() {
    tokio::time::timeout(TEST_LIMIT, async {
        let start = whole_seconds_ago(100);
        let o = Origin::start_live_at(OriginOptions::default(), start).await;
        let c = client();

        let r = c
            .get(o.url("/live/dash/manifest.mpd"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-type"), Some("application/dash+xml"));
        let mpd = r.text().await.unwrap();
        assert!(mpd.contains("type=\"dynamic\""));
        assert!(mpd.contains("timeShiftBufferDepth=\"PT12S\""));
        assert!(mpd.contains("minimumUpdatePeriod=\"PT2S\""));
        assert!(mpd.contains("suggestedPresentationDelay=\"PT6S\""));
        assert!(mpd.contains("publishTime=\""));
        assert!(!mpd.contains("mediaPresentationDuration"));
        // The epoch is the start minus one 12 s loop of pre-roll.
        let epoch = start - Duration::from_secs(12);
        let secs = epoch.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let ast = format!("availabilityStartTime=\"{}", httpdate_to_iso(secs));
        assert!(mpd.contains(&ast), "{ast} not in\n{mpd}");

        // Number 32 is loop 5 of segment 2: same size, other timestamps,
        // the same bytes as HLS's loop-5 URL.
        let plain = c
            .get(o.url("/vod/dash/seg-0-002.m4s"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let numbered = c
            .get(o.url("/live/dash/seg-0-032.m4s"))
            .send()
            .await
            .unwrap();
        assert_eq!(numbered.status(), 200);
        assert_eq!(header(&numbered, "content-type"), Some("video/iso.segment"));
        let numbered = numbered.bytes().await.unwrap();
        assert_eq!(numbered.len(), plain.len());
        assert_ne!(numbered, plain);
        let looped = c
            .get(o.url("/live/hls/loop-5/seg-0-002.m4s"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(looped, numbered);
        o.stop().await;
    })
    .await
    .expect("test timed out");
}

/// `1970-01-01T00:00:00` style text for whole seconds since the epoch,
/// computed independently of the origin's own formatter.
fn httpdate_to_iso(secs: u64) -> String {
    // httpdate gives "Thu, 01 Jan 1970 00:00:00 GMT"; rearrange it.
    let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
    let parts: Vec<&str> = text.split_whitespace().collect();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months.iter().position(|m| *m == parts[2]).unwrap() + 1;
    format!("{}-{month:02}-{}T{}", parts[3], parts[1], parts[4])
}

/// A live MPD names the origin's clock (`UTCTiming`, http-iso, by path: through a CDN it is the
/// CDN's host), and `/time` answers it, never to be stored; a VOD MPD needs no clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mpds_name_the_origin_clock_and_it_answers() {
    tokio::time::timeout(TEST_LIMIT, async {
        let o = Origin::start(OriginOptions::default()).await;
        let c = client();
        let mpd = c
            .get(o.url("/live/dash/manifest.mpd"))
            .send()
            .await
            .unwrap();
        let mpd = mpd.text().await.unwrap();
        let timing = "<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"/time\"/>";
        assert_eq!(mpd.matches(timing).count(), 1, "{mpd}");
        let at = mpd.find(timing).unwrap();
        assert!(
            mpd[at..].trim_end().ends_with("</MPD>") && mpd.rfind("</Period>").unwrap() < at,
            "after the Periods, inside the root: {mpd}"
        );
        let vod = c.get(o.url("/vod/dash/manifest.mpd")).send().await.unwrap();
        assert!(!vod.text().await.unwrap().contains("UTCTiming"));

        let before = SystemTime::now();
        let r = c.get(o.url("/time")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "cache-control"), Some("no-store"));
        assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
        let text = r.text().await.unwrap();
        // 2026-12-03T13:13:17.123Z: compare to the wall clock, to the second.
        assert_eq!(text.len(), 24, "{text}");
        let now = httpdate::fmt_http_date(before);
        let secs_of = |t: &str| t[11..19].to_owned();
        let hms = now.split_whitespace().nth(4).unwrap().to_owned();
        let after = httpdate::fmt_http_date(SystemTime::now());
        let hms_after = after.split_whitespace().nth(4).unwrap().to_owned();
        assert!(
            secs_of(&text) == hms || secs_of(&text) == hms_after,
            "{text} vs {now}"
        );
        let head = c.head(o.url("/time")).send().await.unwrap();
        assert_eq!(head.status(), 200);
        o.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_is_applied_to_every_response() {
    tokio::time::timeout(TEST_LIMIT, async {
        let delay = Duration::from_millis(300);
        let o = Origin::start(OriginOptions {
            delay,
            ..OriginOptions::default()
        })
        .await;
        let c = client();
        for (path, status) in [
            ("/vod/hls/master.m3u8", 200),
            ("/live/hls/media_0.m3u8", 200),
            ("/nope", 404),
        ] {
            let t = Instant::now();
            let r = c.get(o.url(path)).send().await.unwrap();
            assert_eq!(r.status(), status);
            assert!(t.elapsed() >= delay, "{path} answered in {:?}", t.elapsed());
        }
        o.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_directory_with_live_views() {
    tokio::time::timeout(TEST_LIMIT, async {
        let base = scratch_dir("dir");
        std::fs::create_dir_all(base.join("show")).unwrap();
        let playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n\
                        #EXTINF:4.0,\na.ts\n#EXTINF:4.0,\nb.ts\n#EXT-X-ENDLIST\n";
        std::fs::write(base.join("show/index.m3u8"), playlist).unwrap();
        std::fs::write(base.join("show/a.ts"), [0x47u8; 188]).unwrap();
        std::fs::write(base.join("show/b.ts"), [0x47u8; 376]).unwrap();
        std::fs::write(base.join("show/notes.json"), b"{}").unwrap();
        let mtime = std::fs::metadata(base.join("show/a.ts"))
            .unwrap()
            .modified()
            .unwrap();

        let o = Origin::start(OriginOptions {
            dir: Some(base.clone()),
            live_window: 3,
            ..OriginOptions::default()
        })
        .await;
        let c = client();

        let r = c.get(o.url("/vod/show/index.m3u8")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), playlist);
        let r = c.get(o.url("/vod/show/a.ts")).send().await.unwrap();
        assert_eq!(header(&r, "content-type"), Some("video/mp2t"));
        assert_eq!(
            header(&r, "last-modified"),
            Some(httpdate::fmt_http_date(mtime).as_str())
        );
        let r = c.get(o.url("/vod/show/notes.json")).send().await.unwrap();
        assert_eq!(header(&r, "content-type"), Some("application/json"));

        // MPEG-TS cannot be retimed: the live view lists the files as they
        // are, with a discontinuity at each loop.
        let live = c
            .get(o.url("/live/show/index.m3u8"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let uris: Vec<&str> = live.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(uris.len(), 3, "{live}");
        assert!(uris.iter().all(|u| *u == "a.ts" || *u == "b.ts"), "{live}");
        assert_eq!(live.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{live}");
        let r = c.get(o.url("/live/show/b.ts")).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().len(), 376);
        assert_eq!(
            c.get(o.url("/live/show/loop-3/b.ts"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        o.stop().await;
        std::fs::remove_dir_all(base).unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_prompt_shutdown_with_idle_connections() {
    tokio::time::timeout(TEST_LIMIT, async {
        let o = Origin::start(OriginOptions::default()).await;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let r = h2.get(o.url("/vod/hls/master.m3u8")).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        // An HTTP/1.1 keep-alive connection left idle in the pool.
        let h1 = client();
        assert_eq!(
            h1.get(o.url("/vod/hls/master.m3u8"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );

        let t = Instant::now();
        o.stop().await;
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "shutdown took {:?}",
            t.elapsed()
        );
        drop((h1, h2));
    })
    .await
    .expect("test timed out");
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("streamedge-origin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
