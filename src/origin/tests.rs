//! The origin as a whole, without sockets: the demo media going live, retimed segments,
//! responses, and damaged input through every parser.

use bytes::Bytes;
use http::header::{
    ALLOW, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    LAST_MODIFIED, RANGE,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use super::live::HLS_TYPE;
use super::*;
use crate::cache::conditional::{self, RangeRequest};

fn origin(window: usize) -> Origin {
    let opts = OriginOptions {
        live_window: window,
        ..OriginOptions::default()
    };
    Origin::new(files::embedded(SystemTime::now()), &opts, SystemTime::now())
}

fn get(o: &Origin, path: &str) -> Response<Full<Bytes>> {
    o.respond(&Method::GET, path, &HeaderMap::new())
}

#[test]
fn demo_paths_resolve() {
    let o = origin(6);
    for (label, path) in demo_paths() {
        let r = get(&o, path);
        assert_eq!(r.status(), StatusCode::OK, "{label} {path}");
    }
}

#[test]
fn demo_media_goes_live_with_a_full_window() {
    let o = origin(6);
    // Two video renditions and one audio: three media playlists, three Representations.
    assert_eq!(o.live_hls.len(), 3);
    assert_eq!(o.live_dash.len(), 1);
    assert!(o.live_dash["dash/manifest.mpd"].source.is_continuous());
    assert_eq!(o.numbered.len(), 3);
    assert!(
        o.numbered
            .iter()
            .all(|(_, shift)| *shift == Some(12_000_000))
    );
    assert_eq!(o.looped.len(), 18);
    assert_eq!(o.retimable.len(), 36);
    // One 12 s loop of pre-roll fills six 2 s segments.
    for (playlist, prefix) in [
        ("hls/media_0.m3u8", "seg-0-"),
        ("hls/media_1.m3u8", "seg-1-"),
        ("hls/media_2.m3u8", "seg-2-"),
    ] {
        let e = o.live(playlist).unwrap();
        let text = std::str::from_utf8(&e.body).unwrap();
        let uris: Vec<_> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(uris.len(), 6, "{text}");
        assert!(
            uris.iter()
                .all(|u| u.starts_with("loop-") && u.contains(prefix)),
            "{text}"
        );
    }
    // The multivariant playlist is served as it is: both video variants, one audio group.
    let master = o.live("hls/master.m3u8").unwrap();
    assert_eq!(master.body, o.files["hls/master.m3u8"].body);
    let master = std::str::from_utf8(&master.body).unwrap();
    assert_eq!(master.matches("AUDIO=\"group_A1\"").count(), 2, "{master}");
    assert!(master.contains("\nmedia_0.m3u8\n") && master.contains("\nmedia_2.m3u8\n"));
    // The live MPD keeps both video Representations in one AdaptationSet.
    let mpd = o.live("dash/manifest.mpd").unwrap();
    let mpd = std::str::from_utf8(&mpd.body).unwrap();
    let video = &mpd[..mpd.find("</AdaptationSet>").unwrap()];
    assert!(video.contains("contentType=\"video\""), "{mpd}");
    assert_eq!(video.matches("<Representation ").count(), 2, "{mpd}");
    assert!(
        video.contains("<Representation id=\"0\"") && video.contains("<Representation id=\"2\"")
    );
    assert_eq!(o.epoch_text.len(), "2024-01-01T00:00:00.000Z".len());
    assert!(o.epoch_text.ends_with(".000Z"));
}

#[test]
fn live_segments_carry_their_loops_timestamps() {
    let o = origin(6);
    let file = &o.files["hls/seg-0-002.m4s"].body;
    // Loop 0 (plain or loop-0) is the file itself.
    assert_eq!(&o.live("hls/seg-0-002.m4s").unwrap().body, file);
    assert_eq!(&o.live("hls/loop-0/seg-0-002.m4s").unwrap().body, file);
    // Loop 5 through HLS's loop directory and DASH's number 5 * 6 + 2
    // are the same bytes: the file shifted by 60 s.
    let hls = o.live("hls/loop-5/seg-0-002.m4s").unwrap();
    let dash = o.live("dash/seg-0-032.m4s").unwrap();
    assert_eq!(hls.body, dash.body);
    assert_eq!(hls.etag, dash.etag);
    assert_ne!(&hls.body, file);
    assert_ne!(hls.etag, o.files["hls/seg-0-002.m4s"].etag);
    let ts = mp4::timescales(&o.files["hls/init-0.m4s"].body).unwrap();
    let sites = mp4::sites(file, &ts).unwrap();
    assert_eq!(mp4::shift(file, &sites, 5, 12_000_000), hls.body.to_vec());
    // Cached: the second request is the same allocation.
    let again = o.live("hls/loop-5/seg-0-002.m4s").unwrap();
    assert_eq!(again.body.as_ptr(), hls.body.as_ptr());
    // The high video rendition loops the same way.
    let file = &o.files["hls/seg-2-002.m4s"].body;
    let hls = o.live("hls/loop-5/seg-2-002.m4s").unwrap();
    assert_eq!(hls.body, o.live("dash/seg-2-032.m4s").unwrap().body);
    let ts = mp4::timescales(&o.files["hls/init-2.m4s"].body).unwrap();
    let sites = mp4::sites(file, &ts).unwrap();
    assert_eq!(mp4::shift(file, &sites, 5, 12_000_000), hls.body.to_vec());
    // Not a segment, or not one of these.
    assert!(o.live("hls/loop-5/init-0.m4s").is_none());
    assert!(o.live("hls/loop-5/nope.m4s").is_none());
    assert!(o.live("dash/seg-0-000.m4s").is_none());
    assert!(!o.files.contains_key("hls/loop-5/seg-0-002.m4s"));
}

#[test]
fn ranges() {
    let o = origin(6);
    let full = o.files["hls/seg-1-001.m4s"].body.clone();
    let ask = |range: &'static str| {
        let mut h = HeaderMap::new();
        h.insert(RANGE, HeaderValue::from_static(range));
        o.respond(&Method::GET, "/vod/hls/seg-1-001.m4s", &h)
    };
    let header = |r: &Response<Full<Bytes>>, name| {
        r.headers()
            .get(name)
            .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
    };
    let total = full.len();
    let r = ask("bytes=0-99");
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&r, CONTENT_RANGE),
        Some(format!("bytes 0-99/{total}"))
    );
    assert_eq!(header(&r, CONTENT_LENGTH).as_deref(), Some("100"));
    let r = ask("bytes=100-");
    assert_eq!(
        header(&r, CONTENT_RANGE),
        Some(format!("bytes 100-{}/{total}", total - 1))
    );
    let r = ask("bytes=-10");
    assert_eq!(
        header(&r, CONTENT_RANGE),
        Some(format!("bytes {}-{}/{total}", total - 10, total - 1))
    );
    let r = ask("bytes=0-999999999");
    assert_eq!(header(&r, CONTENT_LENGTH), Some(total.to_string()));
    let r = ask("bytes=999999999-");
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, CONTENT_RANGE), Some(format!("bytes */{total}")));
    for ignored in [
        "bytes=5-2",
        "bytes=0-1,4-5",
        "items=0-1",
        "bytes=a-b",
        "bytes=-",
        "bytes=+1-2",
    ] {
        assert_eq!(ask(ignored).status(), StatusCode::OK, "{ignored}");
    }
    let resolved = |range: &'static str, len| {
        let mut h = HeaderMap::new();
        h.insert(RANGE, HeaderValue::from_static(range));
        conditional::resolve(&conditional::parse_range(&h).unwrap(), len)
    };
    assert_eq!(resolved("bytes=-0", 10), RangeRequest::Unsatisfiable);
    assert_eq!(resolved("bytes=0-", 0), RangeRequest::Unsatisfiable);
    // If-Range: the range applies while the entity is the one the client names.
    let whole = get(&o, "/vod/hls/seg-1-001.m4s");
    for (validator, status) in [
        (whole.headers()[ETAG].clone(), StatusCode::PARTIAL_CONTENT),
        (
            whole.headers()[LAST_MODIFIED].clone(),
            StatusCode::PARTIAL_CONTENT,
        ),
        (HeaderValue::from_static("\"other\""), StatusCode::OK),
    ] {
        let mut h = HeaderMap::new();
        h.insert(RANGE, HeaderValue::from_static("bytes=0-9"));
        h.insert(IF_RANGE, validator.clone());
        let r = o.respond(&Method::GET, "/vod/hls/seg-1-001.m4s", &h);
        assert_eq!(r.status(), status, "{validator:?}");
    }
}

#[test]
fn conditional_requests() {
    let o = origin(6);
    let r = get(&o, "/vod/hls/init-0.m4s");
    let etag = r.headers()[ETAG].clone();
    let lm = r.headers()[LAST_MODIFIED].clone();
    let ask = |name, value: &HeaderValue| {
        let mut h = HeaderMap::new();
        h.insert(name, value.clone());
        o.respond(&Method::GET, "/vod/hls/init-0.m4s", &h).status()
    };
    assert_eq!(ask(IF_NONE_MATCH, &etag), StatusCode::NOT_MODIFIED);
    let weak_list =
        HeaderValue::from_str(&format!("\"nope\", W/{}", etag.to_str().unwrap())).unwrap();
    assert_eq!(ask(IF_NONE_MATCH, &weak_list), StatusCode::NOT_MODIFIED);
    assert_eq!(
        ask(IF_NONE_MATCH, &HeaderValue::from_static("\"other\"")),
        StatusCode::OK
    );
    assert_eq!(ask(IF_MODIFIED_SINCE, &lm), StatusCode::NOT_MODIFIED);
    let old = HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(ask(IF_MODIFIED_SINCE, &old), StatusCode::OK);
    assert_eq!(
        ask(IF_MODIFIED_SINCE, &HeaderValue::from_static("garbage")),
        StatusCode::OK
    );
}

#[test]
fn methods_and_errors() {
    let o = origin(6);
    for m in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::PATCH,
    ] {
        let r = o.respond(&m, "/vod/hls/master.m3u8", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
    }
    assert_eq!(get(&o, "/vod/hls/nope.m4s").status(), StatusCode::NOT_FOUND);
    assert_eq!(
        get(&o, "/vod/../Cargo.toml").status(),
        StatusCode::BAD_REQUEST
    );
    let r = o.respond(&Method::HEAD, "/vod/hls/seg-0-001.m4s", &HeaderMap::new());
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[CONTENT_LENGTH].to_str().unwrap(),
        o.files["hls/seg-0-001.m4s"].body.len().to_string()
    );
}

/// Truncated, bit-flipped and spliced versions of the demo files through
/// every parser, renderer and the whole origin: nothing may panic.
#[test]
fn malformed_input_never_panics() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let video = mp4::timescales(&origin(6).files["hls/init-0.m4s"].body).unwrap();
    let audio_init = origin(6).files["hls/init-1.m4s"].body.clone();
    let times = [0, 1, 12_345_678, 3_600_000_000, u64::MAX / 2, u64::MAX];
    for (i, (key, original)) in media::FILES.iter().enumerate() {
        for round in 0..150 {
            let mut b = original.to_vec();
            let len = b.len() as u64;
            match round % 3 {
                0 => b.truncate((next() % len) as usize),
                1 => {
                    for _ in 0..1 + next() % 4 {
                        let at = (next() % len) as usize;
                        b[at] ^= 1 << (next() % 8);
                    }
                }
                _ => {
                    let at = (next() % len) as usize;
                    let other = media::FILES[(next() as usize) % media::FILES.len()].1;
                    b.splice(at.., other.iter().copied());
                }
            }
            let text = String::from_utf8_lossy(&b);
            if let Some(p) = hls::MediaPlaylist::parse(&text) {
                let _ = p.fmp4_segments();
                for t in times {
                    p.live(t, 6, |_| String::new());
                }
            }
            if let Some(m) = dash::LiveMpd::parse(&text, "dash/") {
                let _ = m.can_be_continuous();
                for t in times {
                    m.live(t, 6, "E", |_| String::new());
                }
                for a in m.aliases() {
                    let _ = a.resolve("dash/seg-0-123456.m4s");
                    let _ = a.keys().take(10).count();
                }
            }
            let _ = mp4::timescales(&b);
            if let Some(t) = mp4::tracks(&audio_init) {
                let _ = mp4::split(&b, &t, 500_000);
            }
            let _ = paths::split_part(&text);
            if let Some(s) = mp4::sites(&b, &video) {
                mp4::shift(&b, &s, u64::MAX, u64::MAX);
            }
            let _ = paths::parse(&format!(
                "/live/{}",
                text.chars().take(40).collect::<String>()
            ));

            // The whole origin with this one file damaged.
            if round % 10 == 0 {
                let mut files = files::embedded(SystemTime::now());
                files[i].body = Bytes::from(b.clone());
                let o = Origin::new(files, &OriginOptions::default(), SystemTime::now());
                for (k, _) in media::FILES {
                    let _ = o.live(k);
                    let name = k.rsplit('/').next().unwrap_or(k);
                    let _ = o.live(&format!("hls/loop-3/{name}"));
                }
                let _ = o.live("dash/seg-1-099.m4s");
                for key in [
                    "hls/media_0.m3u8",
                    "hls/media_1.m3u8",
                    "hls/loop-3/seg-0-002.p1.m4s",
                    "hls/loop-3/seg-1-006.p3.m4s",
                ] {
                    let _ = o.low_latency(key);
                }
                assert!(o.files.contains_key(*key));
            }
        }
    }
}

#[test]
fn live_renderings_are_cached_until_the_window_moves() {
    let live = Live::new(());
    let mut renders = 0;
    let mut render = |_: &()| {
        renders += 1;
        Entity::new(Bytes::from_static(b"x"), HLS_TYPE, SystemTime::now())
    };
    live.get(1u64, &mut render);
    live.get(1u64, &mut render);
    live.get(2u64, &mut render);
    assert_eq!(renders, 2);
}

#[test]
fn demo_media_goes_low_latency() {
    let o = origin(6);
    // Two video renditions and one audio; each reports the other two.
    assert_eq!(o.ll_hls.len(), 3);
    assert_eq!(o.partable.len(), 18);
    for key in ["hls/media_0.m3u8", "hls/media_1.m3u8", "hls/media_2.m3u8"] {
        let view = &o.ll_hls[key];
        // Video parts are 13 or 12 frames of 40 ms, audio ones 16 or 15 of 32 ms: one target.
        assert_eq!(view.live.source.part_target(), 520_000, "{key}");
        assert_eq!(view.siblings.len(), 2);
        let e = o.low_latency(key).unwrap();
        let text = std::str::from_utf8(&e.body).unwrap();
        assert!(
            text.contains("#EXT-X-PART-INF:PART-TARGET=0.520\n"),
            "{text}"
        );
        assert!(text.contains("PART-HOLD-BACK=1.560"), "{text}");
        assert!(
            text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"loop-"),
            "{text}"
        );
        assert!(
            text.contains("#EXT-X-RENDITION-REPORT:URI=\"media_"),
            "{text}"
        );
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:"));
        // Cached until the next part: the same allocation.
        let again = o.low_latency(key).unwrap();
        if again.etag == e.etag {
            assert_eq!(again.body.as_ptr(), e.body.as_ptr());
        }
    }
    // The multivariant playlist and the DASH view are the /live ones.
    assert_eq!(
        o.low_latency("hls/master.m3u8").unwrap().body,
        o.files["hls/master.m3u8"].body
    );
    assert!(o.low_latency("dash/manifest.mpd").is_some());
    assert_eq!(get(&o, "/ll/hls/media_0.m3u8").status(), StatusCode::OK);
}

#[test]
fn parts_of_live_segments_are_the_segment_split() {
    let o = origin(6);
    let t = mp4::tracks(&o.files["hls/init-0.m4s"].body).unwrap();
    for loops in [0, 3] {
        let seg = o.live(&format!("hls/loop-{loops}/seg-0-003.m4s")).unwrap();
        let parts: Vec<Entity> = (0..4)
            .map(|j| {
                o.low_latency(&format!("hls/loop-{loops}/seg-0-003.p{j}.m4s"))
                    .unwrap()
            })
            .collect();
        assert!(
            o.low_latency(&format!("hls/loop-{loops}/seg-0-003.p4.m4s"))
                .is_none()
        );
        let split = mp4::split(&seg.body, &t, 500_000).unwrap();
        for (p, want) in parts.iter().zip(&split.parts) {
            assert_eq!(&p.body[..], &want[..]);
            assert_ne!(p.etag, seg.etag);
        }
        // Cached per loop: the same allocation again.
        let again = o
            .low_latency(&format!("hls/loop-{loops}/seg-0-003.p1.m4s"))
            .unwrap();
        assert_eq!(again.body.as_ptr(), parts[1].body.as_ptr());
    }
    // Loop 3's parts carry loop 3's decode times: different bytes from loop 0's.
    assert_ne!(
        o.low_latency("hls/loop-0/seg-0-003.p2.m4s").unwrap().etag,
        o.low_latency("hls/loop-3/seg-0-003.p2.m4s").unwrap().etag
    );
    for key in [
        "hls/loop-0/seg-0-003.p-1.m4s",
        "hls/seg-0-003.p1.m4s",
        "hls/loop-0/nope.p1.m4s",
        "dash/loop-0/seg-0-003.p1.m4s",
    ] {
        assert!(o.low_latency(key).is_none(), "{key}");
    }
    // Parts exist only under /ll/.
    assert!(o.live("hls/loop-0/seg-0-003.p1.m4s").is_none());
}

#[test]
fn any_retimable_playlist_goes_low_latency() {
    // A --dir layout: segments in a subdirectory, one named without an extension, and a
    // playlist of MPEG-TS beside it, which cannot be split.
    let file = |key: &str, name: &str| files::Loaded {
        key: key.to_owned(),
        body: Bytes::from_static(
            media::FILES
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, b)| *b)
                .unwrap(),
        ),
        modified: SystemTime::now(),
    };
    let text = |key: &str, body: &'static str| files::Loaded {
        key: key.to_owned(),
        body: Bytes::from_static(body.as_bytes()),
        modified: SystemTime::now(),
    };
    let loaded = vec![
        text(
            "s/index.m3u8",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"v/init.mp4\"\n\
             #EXTINF:2.0,\nv/a.mp4\n#EXTINF:2.0,\nv/b\n",
        ),
        file("s/v/init.mp4", "hls/init-0.m4s"),
        file("s/v/a.mp4", "hls/seg-0-001.m4s"),
        file("s/v/b", "hls/seg-0-002.m4s"),
        text("ts/p.m3u8", "#EXTM3U\n#EXTINF:2.0,\nx.ts\n"),
        text("ts/x.ts", "not really"),
    ];
    let o = Origin::new(loaded, &OriginOptions::default(), SystemTime::now());
    assert_eq!(o.ll_hls.len(), 1);
    let e = o.low_latency("s/index.m3u8").unwrap();
    let body = std::str::from_utf8(&e.body).unwrap();
    assert!(body.contains(".p0.mp4\",INDEPENDENT=YES"), "{body}");
    assert!(body.contains("/v/b.p0.m4s\",INDEPENDENT=YES"), "{body}");
    for key in ["s/loop-2/v/a.p3.mp4", "s/loop-2/v/b.p0.m4s"] {
        let part = o.low_latency(key).unwrap();
        assert_eq!(&part.body[4..8], b"moof", "{key}");
    }
    assert!(o.low_latency("s/loop-2/v/b.p0").is_none());
    // What cannot be split is what /live serves.
    assert_eq!(
        o.low_latency("ts/p.m3u8").unwrap().body,
        o.live("ts/p.m3u8").unwrap().body
    );
}

#[tokio::test]
async fn holds_are_bounded_by_three_target_durations() {
    let o = origin(6);
    let started = tokio::time::Instant::now();
    // Due in 50 ms, with time to spare: held, then let through.
    assert!(o.wait_until(o.clock.elapsed() + 50_000, 2_000_000).await);
    // Due in 10 s, held at most 3 × 0.1 s.
    assert!(!o.wait_until(o.clock.elapsed() + 10_000_000, 100_000).await);
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(340),
        "{waited:?}"
    );
    assert!(waited < std::time::Duration::from_secs(5), "{waited:?}");
}
