//! LL-HLS from the synthetic origin over real sockets: the playlist rules (parts within the part
//! target, hold-back, the preload hint is the next part), blocking reloads and the preload hint
//! held until produced, refusals, parts that add up to their segment; and the same through an
//! edge, whose herds reach the origin once per blocking reload and once per part.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use streamedge::origin::{self, OriginOptions, RequestLog};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use common::{TestEdge, get, within};

const VIDEO: &str = "/ll/hls/media_0.m3u8";
const AUDIO: &str = "/ll/hls/media_1.m3u8";

/// The demo origin on a loopback port, recording every request.
struct LlOrigin {
    addr: SocketAddr,
    log: RequestLog,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl LlOrigin {
    async fn start() -> LlOrigin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = RequestLog::new();
        let opts = OriginOptions {
            requests: Some(log.clone()),
            ..OriginOptions::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(origin::serve_with_live_start(
            listener,
            opts,
            SystemTime::now(),
            async move {
                let _ = stopped.await;
            },
        ));
        LlOrigin {
            addr,
            log,
            stop,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received whose path and query have every one of `needles`.
    fn count(&self, needles: &[&str]) -> usize {
        self.log
            .entries()
            .iter()
            .filter(|e| needles.iter().all(|n| e.target.contains(n)))
            .count()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        within(10, "origin to stop", self.task)
            .await
            .expect("origin task")
            .expect("origin serve");
    }
}

fn client() -> reqwest::Client {
    streamedge::tls::install_provider();
    reqwest::Client::builder().build().unwrap()
}

/// A part as an LL playlist lists it.
#[derive(Debug, Clone, PartialEq)]
struct Part {
    msn: u64,
    index: u64,
    duration: f64,
    uri: String,
    independent: bool,
}

/// What the tests read from an LL media playlist.
#[derive(Debug, Default)]
struct Ll {
    version: u64,
    can_block_reload: bool,
    part_target: f64,
    part_hold_back: f64,
    /// (msn, URI) of the complete segments.
    segments: Vec<(u64, String)>,
    parts: Vec<Part>,
    hint: String,
    dates: usize,
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_once(':')?.1.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

fn parse(text: &str) -> Ll {
    let mut ll = Ll::default();
    let mut msn = 0;
    let mut index = 0;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
            ll.version = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v.parse().unwrap();
        } else if line.starts_with("#EXT-X-SERVER-CONTROL:") {
            ll.can_block_reload = attr(line, "CAN-BLOCK-RELOAD") == Some("YES");
            ll.part_hold_back = attr(line, "PART-HOLD-BACK").unwrap().parse().unwrap();
        } else if line.starts_with("#EXT-X-PART-INF:") {
            ll.part_target = attr(line, "PART-TARGET").unwrap().parse().unwrap();
        } else if line.starts_with("#EXT-X-PART:") {
            ll.parts.push(Part {
                msn,
                index,
                duration: attr(line, "DURATION").unwrap().parse().unwrap(),
                uri: attr(line, "URI").unwrap().to_owned(),
                independent: attr(line, "INDEPENDENT") == Some("YES"),
            });
            index += 1;
        } else if line.starts_with("#EXT-X-PRELOAD-HINT:") {
            assert_eq!(attr(line, "TYPE"), Some("PART"), "{line}");
            ll.hint = attr(line, "URI").unwrap().to_owned();
        } else if line.starts_with("#EXT-X-PROGRAM-DATE-TIME:") {
            ll.dates += 1;
        } else if !line.starts_with('#') && !line.is_empty() {
            ll.segments.push((msn, line.to_owned()));
            msn += 1;
            index = 0;
        }
    }
    ll
}

/// `loop-3/seg-0-002.p1.m4s` → (`loop-3/seg-0-002`, 1).
fn part_name(uri: &str) -> (&str, u64) {
    let stem = uri.strip_suffix(".m4s").unwrap();
    let (seg, n) = stem.rsplit_once(".p").unwrap();
    (seg, n.parse().unwrap())
}

impl Ll {
    /// The part after the last one listed, as (msn, index), which the hint must name.
    fn next_part(&self) -> (u64, u64) {
        let last = self.parts.last().unwrap();
        let (last_seg, _) = part_name(&last.uri);
        let (hint_seg, hint_index) = part_name(&self.hint);
        if hint_seg == last_seg {
            assert_eq!(hint_index, last.index + 1, "hint {}", self.hint);
            (last.msn, last.index + 1)
        } else {
            // A new segment: the last part completed its own.
            assert_eq!(hint_index, 0, "hint {}", self.hint);
            assert_eq!(
                self.segments.last().map(|s| s.0),
                Some(last.msn),
                "the hint names a new segment while {} is in progress",
                last.msn
            );
            (last.msn + 1, 0)
        }
    }

    fn has_part(&self, msn: u64, index: u64) -> bool {
        self.parts.iter().any(|p| p.msn == msn && p.index == index)
    }
}

/// Top-level boxes of `buf`, as (type, payload).
fn boxes(buf: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= buf.len() {
        let size = u32::from_be_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        assert!(size >= 8 && pos + size <= buf.len(), "box at {pos}");
        out.push((
            buf[pos + 4..pos + 8].try_into().unwrap(),
            &buf[pos + 8..pos + size],
        ));
        pos += size;
    }
    assert_eq!(pos, buf.len(), "trailing bytes");
    out
}

/// (samples, sample bytes) of a fragmented MP4: the `trun` sample counts and `mdat` sizes.
fn samples(buf: &[u8]) -> (u64, usize) {
    let mut count = 0;
    let mut data = 0;
    for (kind, payload) in boxes(buf) {
        match &kind {
            b"moof" => {
                for (kind, traf) in boxes(payload) {
                    if &kind == b"traf" {
                        for (kind, run) in boxes(traf) {
                            if &kind == b"trun" {
                                count +=
                                    u64::from(u32::from_be_bytes(run[4..8].try_into().unwrap()));
                            }
                        }
                    }
                }
            }
            b"mdat" => data += payload.len(),
            _ => {}
        }
    }
    (count, data)
}

async fn playlist(client: &reqwest::Client, url: &str) -> (Ll, String) {
    let r = get(client, url).await;
    assert_eq!(r.status, StatusCode::OK, "{url}");
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    (parse(&text), text)
}

#[tokio::test]
async fn playlists_follow_the_ll_hls_rules() {
    let o = LlOrigin::start().await;
    let c = client();
    for path in [VIDEO, AUDIO] {
        let r = get(&c, &o.url(path)).await;
        assert_eq!(
            r.header("cache-control"),
            None,
            "the edge derives a plain playlist's TTL"
        );
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        let ll = parse(&text);
        assert!(ll.version >= 9 && ll.can_block_reload, "{text}");
        assert!((ll.part_target - 0.52).abs() < 1e-9, "{text}");
        assert!(ll.part_hold_back >= 2.0 * ll.part_target, "{text}");
        assert!((ll.part_hold_back - 3.0 * ll.part_target).abs() < 1e-9);
        assert!(ll.dates >= 1, "{text}");
        assert_eq!(ll.segments.len(), 6, "{text}");
        // Parts of at least the last three complete segments.
        let with_parts: std::collections::BTreeSet<u64> = ll.parts.iter().map(|p| p.msn).collect();
        let last = ll.segments.last().unwrap().0;
        for msn in last - 2..=last {
            assert!(with_parts.contains(&msn), "no parts of {msn}\n{text}");
        }
        for p in &ll.parts {
            assert!(p.duration <= ll.part_target + 1e-9, "{p:?}\n{text}");
            assert!(p.duration > 0.0);
            if p.index == 0 {
                assert!(p.independent, "{p:?}");
            }
        }
        ll.next_part();
    }
    o.stop().await;
}

#[tokio::test]
async fn blocking_reload_answers_when_the_part_is_out() {
    let o = LlOrigin::start().await;
    let c = client();
    let (ll, _) = playlist(&c, &o.url(VIDEO)).await;
    let (msn, part) = ll.next_part();
    let query = format!("?_HLS_msn={msn}&_HLS_part={part}");
    let started = Instant::now();
    let r = within(
        5,
        "blocking reload",
        get(&c, &o.url(&format!("{VIDEO}{query}"))),
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let answer = parse(&text);
    assert!(answer.has_part(msn, part), "{msn}.{part} missing\n{text}");
    // At most one part (0.52 s) and some slack for the scheduler.
    assert!(waited <= Duration::from_millis(1_200), "waited {waited:?}");
    assert_eq!(o.count(&[VIDEO, &query[1..]]), 1);

    // Without _HLS_part: the next segment complete.
    let next_segment = answer.segments.last().unwrap().0 + 1;
    let r = within(
        5,
        "blocking reload for a segment",
        get(&c, &o.url(&format!("{VIDEO}?_HLS_msn={next_segment}"))),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let answer = parse(std::str::from_utf8(&r.body).unwrap());
    assert_eq!(answer.segments.last().unwrap().0, next_segment);

    // A part already out is answered at once; too far ahead is refused at once.
    let started = Instant::now();
    let r = get(
        &c,
        &o.url(&format!("{VIDEO}?_HLS_msn={msn}&_HLS_part={part}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let last = answer.segments.last().unwrap().0;
    let r = get(
        &c,
        &o.url(&format!("{VIDEO}?_HLS_msn={}&_HLS_part=0", last + 3)),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = get(&c, &o.url(&format!("{VIDEO}?_HLS_part=1"))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    o.stop().await;
}

#[tokio::test]
async fn preload_hint_is_served_when_produced() {
    let o = LlOrigin::start().await;
    let c = client();
    for path in [VIDEO, AUDIO] {
        let (ll, _) = playlist(&c, &o.url(path)).await;
        let hint = o.url(&format!("/ll/hls/{}", ll.hint));
        let started = Instant::now();
        let r = within(5, "preload hint", get(&c, &hint)).await;
        let waited = started.elapsed();
        assert_eq!(r.status, StatusCode::OK, "{hint}");
        assert!(waited <= Duration::from_millis(1_200), "waited {waited:?}");
        assert!(r.header("etag").is_some_and(|e| e.starts_with('"')));
        let top: Vec<[u8; 4]> = boxes(&r.body).iter().map(|b| b.0).collect();
        assert_eq!(top, [*b"moof", *b"mdat"], "{hint}");
        assert!(samples(&r.body).0 >= 12);
        // Served again at once, the same bytes.
        let again = get(&c, &hint).await;
        assert_eq!(again.body, r.body);

        // A part a whole loop ahead does not exist yet.
        let (seg, _) = part_name(&ll.hint);
        let (dir, name) = seg.split_once('/').unwrap();
        let loops: u64 = dir.strip_prefix("loop-").unwrap().parse().unwrap();
        let ahead = o.url(&format!("/ll/hls/loop-{}/{name}.p0.m4s", loops + 1));
        let r = get(&c, &ahead).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{ahead}");
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    o.stop().await;
}

#[tokio::test]
async fn parts_of_a_finished_segment_make_the_segment() {
    let o = LlOrigin::start().await;
    let c = client();
    for path in [VIDEO, AUDIO] {
        let (ll, text) = playlist(&c, &o.url(path)).await;
        let (msn, uri) = ll.segments.last().unwrap().clone();
        let parts: Vec<&Part> = ll.parts.iter().filter(|p| p.msn == msn).collect();
        assert_eq!(parts.len(), 4, "{text}");
        let segment = get(&c, &o.url(&format!("/ll/hls/{uri}"))).await.body;
        let mut joined = Vec::new();
        let mut counts = Vec::new();
        for p in parts {
            let body = get(&c, &o.url(&format!("/ll/hls/{}", p.uri))).await.body;
            counts.push(samples(&body).0);
            joined.extend_from_slice(&body);
        }
        let (count, data) = samples(&segment);
        assert_eq!(samples(&joined), (count, data), "{path} {uri}");
        assert_eq!(counts.iter().sum::<u64>(), count);
        if path == VIDEO {
            assert_eq!(counts, [13, 12, 13, 12]);
        }
    }
    o.stop().await;
}

/// Fires `n` concurrent GETs of `url`; the bodies, once all are 200.
async fn herd(client: &reqwest::Client, url: &str, n: usize) -> Vec<Bytes> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (c, u) = (client.clone(), url.to_owned());
        set.spawn(async move { get(&c, &u).await });
    }
    let mut bodies = Vec::new();
    while let Some(r) = set.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{url}");
        bodies.push(r.body);
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herds_through_the_edge_reach_the_origin_once() {
    let o = LlOrigin::start().await;
    let edge = TestEdge::builder(&[o.url("")]).start().await;
    let c = edge.https_client();
    // The edge learns the playlist is live (and its target duration) from the plain one.
    let (ll, _) = playlist(&c, &edge.https_url(VIDEO)).await;
    let (msn, part) = ll.next_part();
    let after = if part < 3 {
        (msn, part + 1)
    } else {
        (msn + 1, 0)
    };
    let reloads = [(msn, part), after];
    let herds = reloads.map(|(m, p)| {
        let url = edge.https_url(&format!("{VIDEO}?_HLS_msn={m}&_HLS_part={p}"));
        let c = c.clone();
        async move { herd(&c, &url, 20).await }
    });
    let [first, second] = herds;
    let (first, second) = within(10, "blocking reload herds", async {
        tokio::join!(first, second)
    })
    .await;
    for ((m, p), bodies) in reloads.iter().zip([first, second]) {
        assert!(
            bodies.iter().all(|b| *b == bodies[0]),
            "{m}.{p}: different playlists"
        );
        let text = std::str::from_utf8(&bodies[0]).unwrap();
        assert!(parse(text).has_part(*m, *p), "{m}.{p} missing\n{text}");
        let query = [format!("_HLS_msn={m}"), format!("_HLS_part={p}")];
        assert_eq!(
            o.count(&[VIDEO, &query[0], &query[1]]),
            1,
            "origin requests for {m}.{p}: {:#?}",
            o.log.entries()
        );
    }

    // The preload hint of the newest playlist, asked for by a herd before it exists.
    let newest = parse(std::str::from_utf8(&herd(&c, &edge.https_url(VIDEO), 1).await[0]).unwrap());
    let hint = format!("/ll/hls/{}", newest.hint);
    let bodies = within(10, "part herd", herd(&c, &edge.https_url(&hint), 20)).await;
    assert!(bodies.iter().all(|b| *b == bodies[0] && !b.is_empty()));
    let top: Vec<[u8; 4]> = boxes(&bodies[0]).iter().map(|b| b.0).collect();
    assert_eq!(top, [*b"moof", *b"mdat"]);
    assert_eq!(o.count(&[&hint]), 1, "{:#?}", o.log.entries());

    edge.stop().await;
    o.stop().await;
}
