//! Live HLS windows at chosen instants: sliding, discontinuity numbering checked against a
//! count, byte ranges and keys, loop directories, and what the parser refuses.

use super::*;

const S: Micros = clock::MICROS_PER_SEC;

fn vod(durations: &[f64]) -> String {
    let mut t = String::from(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
         #EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-MAP:URI=\"init.m4s\"\n",
    );
    for (i, d) in durations.iter().enumerate() {
        t.push_str(&format!(
            "#EXTINF:{d:.6},\n#EXT-X-PROGRAM-DATE-TIME:2020-01-01T00:00:00Z\nseg-{}.m4s\n",
            i + 1
        ));
    }
    t.push_str("#EXT-X-ENDLIST\n");
    t
}

fn date(us: Micros) -> String {
    format!("t{us}")
}

fn uris(body: &str) -> Vec<&str> {
    body.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn rejects_multivariant_and_garbage() {
    let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nmedia.m3u8\n";
    assert!(MediaPlaylist::parse(master).is_none());
    assert!(MediaPlaylist::parse("").is_none());
    assert!(MediaPlaylist::parse("hello\n#EXTINF:2,\na.ts\n").is_none());
    assert!(MediaPlaylist::parse("#EXTM3U\n#EXTINF:abc,\na.ts\n").is_none());
    assert!(MediaPlaylist::parse("#EXTM3U\n#EXTINF:0,\na.ts\n").is_none());
    assert!(MediaPlaylist::parse("#EXTM3U\na.ts\n").is_none());
    assert!(MediaPlaylist::parse("#EXTM3U\n#EXTINF:-1,\na.ts\n").is_none());
}

#[test]
fn window_at_chosen_times() {
    let p = MediaPlaylist::parse(&vod(&[2.0; 6])).unwrap();
    assert_eq!(p.loop_duration(), 12 * S);

    // 13.9 s in: loop 0 complete (6 segments), nothing of loop 1 yet.
    let w = p.live(13 * S + 900_000, 6, date);
    assert_eq!(
        (w.media_sequence, w.discontinuity_sequence, w.available),
        (0, 0, 6)
    );
    assert_eq!(
        uris(&w.body),
        [
            "seg-1.m4s",
            "seg-2.m4s",
            "seg-3.m4s",
            "seg-4.m4s",
            "seg-5.m4s",
            "seg-6.m4s"
        ]
    );
    assert!(!w.body.contains("#EXT-X-DISCONTINUITY\n"));
    assert!(!w.body.contains("ENDLIST"));
    assert!(!w.body.contains("PLAYLIST-TYPE"));
    assert!(!w.body.contains("2020-01-01"));
    assert_eq!(w.changed_at, 12 * S);

    // Exactly 14 s: the first segment of loop 1 became available.
    let w = p.live(14 * S, 6, date);
    assert_eq!(
        (w.media_sequence, w.discontinuity_sequence, w.available),
        (1, 0, 7)
    );
    assert_eq!(
        uris(&w.body),
        [
            "seg-2.m4s",
            "seg-3.m4s",
            "seg-4.m4s",
            "seg-5.m4s",
            "seg-6.m4s",
            "seg-1.m4s"
        ]
    );
    let expected_tail = "seg-6.m4s\n#EXT-X-DISCONTINUITY\n\
                         #EXT-X-PROGRAM-DATE-TIME:t12000000\n#EXTINF:2.000000,\nseg-1.m4s\n";
    assert!(w.body.ends_with(expected_tail), "{}", w.body);
    assert_eq!(w.body.matches("#EXT-X-MAP").count(), 1);
    assert!(
        w.body
            .contains("#EXT-X-PROGRAM-DATE-TIME:t2000000\n#EXTINF")
    );
    assert_eq!(w.changed_at, 14 * S);

    // 24 s: the window is loop 1 exactly; it opens with the boundary tag,
    // which is not yet counted in the discontinuity sequence.
    let w = p.live(24 * S, 6, date);
    assert_eq!((w.media_sequence, w.discontinuity_sequence), (6, 0));
    assert!(
        w.body
            .contains("#EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-DISCONTINUITY\n")
    );

    // 26 s: the window slid past that tag, so it is counted now; the
    // next loop's boundary tag is already in.
    let w = p.live(26 * S, 6, date);
    assert_eq!((w.media_sequence, w.discontinuity_sequence), (7, 1));
    assert_eq!(w.body.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    assert_eq!(uris(&w.body)[5], "seg-1.m4s");

    // 32 s, short window inside loop 2: both boundaries counted, no tag.
    let w = p.live(32 * S, 3, date);
    assert_eq!((w.media_sequence, w.discontinuity_sequence), (13, 2));
    assert!(!w.body.contains("#EXT-X-DISCONTINUITY\n"));

    // An hour in: 1800 segments, 300 loops.
    let w = p.live(3600 * S + 1, 6, date);
    assert_eq!(
        (w.media_sequence, w.discontinuity_sequence, w.available),
        (1794, 298, 1800)
    );
}

#[test]
fn header_and_tags() {
    let p = MediaPlaylist::parse(&vod(&[2.0; 3])).unwrap();
    let w = p.live(7 * S, 2, date);
    let expected = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n\
         #EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n\
         #EXT-X-MAP:URI=\"init.m4s\"\n#EXT-X-PROGRAM-DATE-TIME:t2000000\n#EXTINF:2.000000,\nseg-2.m4s\n\
         #EXTINF:2.000000,\nseg-3.m4s\n";
    assert_eq!(w.body, expected);
}

#[test]
fn uneven_segments_advance_on_their_own_ends() {
    let p = MediaPlaylist::parse(&vod(&[1.984, 1.984, 2.016, 1.984, 2.016, 1.984, 0.032])).unwrap();
    assert_eq!(p.loop_duration(), 12 * S);
    assert_eq!(p.available(1_983_999), 0);
    assert_eq!(p.available(1_984_000), 1);
    assert_eq!(p.available(11_967_999), 5);
    assert_eq!(p.available(11_968_000), 6);
    assert_eq!(p.available(12 * S), 7);
    assert_eq!(p.available(12 * S + 1_984_000), 8);
    let w = p.live(12 * S + 1_984_000, 6, date);
    assert_eq!(w.media_sequence, 2);
    assert_eq!(uris(&w.body).last(), Some(&"seg-1.m4s"));
    assert_eq!(w.changed_at, 12 * S + 1_984_000);
}

#[test]
fn short_history_gives_a_short_window() {
    let p = MediaPlaylist::parse(&vod(&[2.0; 6])).unwrap();
    let w = p.live(S, 6, date);
    assert_eq!((w.media_sequence, w.available), (0, 0));
    assert!(uris(&w.body).is_empty());
    let w = p.live(4 * S, 6, date);
    assert_eq!(uris(&w.body), ["seg-1.m4s", "seg-2.m4s"]);
    // A window of 0 still shows the newest segment.
    assert_eq!(uris(&p.live(4 * S, 0, date).body), ["seg-2.m4s"]);
}

/// The closed form against counting the tags one by one.
#[test]
fn discontinuity_sequence_matches_brute_force() {
    for source in [
        vod(&[2.0; 4]),
        "#EXTM3U\n#EXTINF:2,\na\n#EXT-X-DISCONTINUITY\n#EXTINF:2,\nb\n#EXTINF:2,\nc\n#EXT-X-DISCONTINUITY\n#EXTINF:2,\nd\n".to_owned(),
        "#EXTM3U\n#EXT-X-DISCONTINUITY\n#EXTINF:2,\na\n#EXTINF:2,\nb\n#EXT-X-DISCONTINUITY\n#EXTINF:2,\nc\n".to_owned(),
        "#EXTM3U\n#EXTINF:3,\nonly\n".to_owned(),
    ] {
        let p = MediaPlaylist::parse(&source).unwrap();
        let mut count = 0;
        for g in 0..40 {
            count += u64::from(p.discontinuity(g));
            assert_eq!(p.discontinuities_through(g), count, "g={g} in {source}");
        }
        for window in [1, 2, 3, 5] {
            for step in 0..60 {
                let elapsed = step * S;
                let w = p.live(elapsed, window, date);
                if w.available == 0 {
                    continue;
                }
                // Number every segment's discontinuity the way a player
                // does and compare with its absolute count.
                let mut cc = w.discontinuity_sequence;
                let mut g = w.media_sequence;
                for line in w.body.lines() {
                    if line == "#EXT-X-DISCONTINUITY" {
                        cc += 1;
                    } else if !line.starts_with('#') {
                        assert_eq!(cc, p.discontinuities_through(g), "g={g} t={elapsed} w={window}");
                        g += 1;
                    }
                }
                assert_eq!(g, w.available);
            }
        }
    }
}

#[test]
fn byteranges_become_explicit_and_keys_stick() {
    let src = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n\
               #EXT-X-KEY:METHOD=AES-128,URI=\"k1\"\n\
               #EXTINF:2,\n#EXT-X-BYTERANGE:100@0\nall.ts\n\
               #EXTINF:2,\n#EXT-X-BYTERANGE:50\nall.ts\n\
               #EXT-X-KEY:METHOD=AES-128,URI=\"k2\"\n\
               #EXTINF:2,\n#EXT-X-BYTERANGE:70\nall.ts\n";
    let p = MediaPlaylist::parse(src).unwrap();
    let w = p.live(6 * S, 1, date);
    assert!(w.body.contains("#EXT-X-KEY:METHOD=AES-128,URI=\"k2\"\n"));
    assert!(w.body.contains("#EXT-X-BYTERANGE:70@150\nall.ts\n"));
    let w = p.live(4 * S, 1, date);
    assert!(w.body.contains("#EXT-X-KEY:METHOD=AES-128,URI=\"k1\"\n"));
    assert!(w.body.contains("#EXT-X-BYTERANGE:50@100\n"));
    // Across the loop boundary the first key is restated.
    let w = p.live(8 * S, 2, date);
    let k1 = w.body.find("URI=\"k1\"").unwrap();
    assert!(w.body.find("URI=\"k2\"").unwrap() < k1);
}

#[test]
fn loop_dirs_give_each_loop_its_own_urls() {
    let mut p = MediaPlaylist::parse(&vod(&[2.0; 3])).unwrap();
    assert_eq!(
        p.fmp4_segments().unwrap(),
        (1..=3)
            .map(|i| Fmp4Segment {
                uri: format!("seg-{i}.m4s"),
                init: "init.m4s".into()
            })
            .collect::<Vec<_>>()
    );
    p.use_loop_dirs();
    let w = p.live(14 * S, 4, date);
    assert_eq!(
        uris(&w.body),
        [
            "loop-1/seg-1.m4s",
            "loop-1/seg-2.m4s",
            "loop-1/seg-3.m4s",
            "loop-2/seg-1.m4s"
        ]
    );
    // The initialisation section is the same for every loop.
    assert!(w.body.contains("#EXT-X-MAP:URI=\"init.m4s\"\n"));
    assert_eq!(w.discontinuity_sequence, 0);
    assert_eq!(w.body.matches("#EXT-X-DISCONTINUITY\n").count(), 2);
}

#[test]
fn only_whole_file_fmp4_gets_loop_dirs() {
    let ts = MediaPlaylist::parse("#EXTM3U\n#EXTINF:2,\na.ts\n").unwrap();
    assert_eq!(ts.fmp4_segments(), None);
    let ranged = "#EXTM3U\n#EXT-X-MAP:URI=\"i.mp4\"\n#EXTINF:2,\n#EXT-X-BYTERANGE:10@0\nall.mp4\n";
    assert_eq!(MediaPlaylist::parse(ranged).unwrap().fmp4_segments(), None);
    let ranged_map = "#EXTM3U\n#EXT-X-MAP:URI=\"all.mp4\",BYTERANGE=\"100@0\"\n#EXTINF:2,\ns.m4s\n";
    assert_eq!(
        MediaPlaylist::parse(ranged_map).unwrap().fmp4_segments(),
        None
    );
}

#[test]
fn missing_target_duration_is_computed() {
    let p = MediaPlaylist::parse("#EXTM3U\n#EXTINF:2.5,\na.ts\n#EXTINF:6.2,\nb.ts\n").unwrap();
    assert!(
        p.live(9 * S, 3, date)
            .body
            .contains("#EXT-X-TARGETDURATION:7\n")
    );
}
