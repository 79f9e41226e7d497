//! HLS media playlists: parsing a VOD playlist and rendering its looping live sliding window.
//!
//! The live stream is the VOD segment list repeated forever. Absolute segment
//! number `g` (0-based since the live epoch) is segment `g % N` of loop
//! `g / N`, and it becomes available when its end time has passed. The
//! rendered window is the last `live_window` available segments; the media
//! sequence number is the absolute number of the first one. Every loop starts
//! with `#EXT-X-DISCONTINUITY` (the content jumps back; with original bytes
//! the timestamps do too); discontinuities the VOD playlist already had are
//! kept, and `#EXT-X-DISCONTINUITY-SEQUENCE` counts all of them.
//!
//! When the origin can shift the segments' timestamps per loop (fragmented
//! MP4, see `mp4`), the playlist is switched to loop directories: loop `k`
//! of `seg.m4s` is listed as `loop-k/seg.m4s`, a distinct URL whose bytes
//! carry loop `k`'s timestamps. Everything here is a pure function of
//! elapsed time.

use std::fmt::Write as _;

use super::clock::{self, Micros};
use crate::syntax::hls_attr;

/// Playlist-level tags that stay in a live playlist.
const KEPT_HEADER_TAGS: &[&str] = &[
    "#EXT-X-VERSION",
    "#EXT-X-TARGETDURATION",
    "#EXT-X-INDEPENDENT-SEGMENTS",
    "#EXT-X-START",
    "#EXT-X-I-FRAMES-ONLY",
    "#EXT-X-DEFINE",
    "#EXT-X-ALLOW-CACHE",
];

/// Tags the live view recomputes or must not carry: VOD markers, our own
/// sequence numbers and dates, and low-latency parts (which would promise
/// blocking reloads this origin does not implement).
const DROPPED_TAGS: &[&str] = &[
    "#EXT-X-MEDIA-SEQUENCE",
    "#EXT-X-DISCONTINUITY-SEQUENCE",
    "#EXT-X-PLAYLIST-TYPE",
    "#EXT-X-ENDLIST",
    "#EXT-X-PROGRAM-DATE-TIME",
    "#EXT-X-SERVER-CONTROL",
    "#EXT-X-PART-INF",
    "#EXT-X-PART",
    "#EXT-X-PRELOAD-HINT",
    "#EXT-X-RENDITION-REPORT",
    "#EXT-X-SKIP",
];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    duration: Micros,
    /// `#EXTINF`, other per-segment tags, then the URI.
    lines: Vec<String>,
    /// The VOD playlist had `#EXT-X-DISCONTINUITY` before this segment.
    discontinuity: bool,
    /// `#EXT-X-MAP` / `#EXT-X-KEY` lines in force for this segment. They
    /// apply until replaced, so the window has to state them where it starts
    /// and wherever they change (including across the loop boundary).
    state: Vec<String>,
}

/// A VOD media playlist, ready to be presented live.
#[derive(Debug, Clone)]
pub(crate) struct MediaPlaylist {
    header: Vec<String>,
    segments: Vec<Segment>,
    /// `ends[i]`: end of segment `i` from the start of a loop.
    ends: Vec<Micros>,
    /// Length of one loop: the sum of the EXTINF durations.
    total: Micros,
    /// `disc_after_first[i]`: source discontinuities in segments `1..=i`.
    disc_after_first: Vec<u64>,
    /// List loop `k`'s segments as `loop-k/<uri>`.
    loop_dirs: bool,
}

/// A segment URI and the initialisation section (`#EXT-X-MAP`) it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fmp4Segment {
    pub(crate) uri: String,
    pub(crate) init: String,
}

/// One rendering of the live window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveWindow {
    pub(crate) body: String,
    /// Absolute number of the first segment (the media sequence number).
    pub(crate) media_sequence: u64,
    pub(crate) discontinuity_sequence: u64,
    /// Segments available so far; changes exactly when the window moves, so
    /// it keys caches of the rendered text.
    pub(crate) available: u64,
    /// When the window last moved, from the live epoch.
    pub(crate) changed_at: Micros,
}

impl MediaPlaylist {
    /// `None` unless `text` is a media playlist with at least one segment of
    /// non-zero total duration (multivariant playlists have no `#EXTINF`).
    pub(crate) fn parse(text: &str) -> Option<MediaPlaylist> {
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        if lines.next()?.trim() != "#EXTM3U" {
            return None;
        }
        let mut header = Vec::new();
        let mut segments: Vec<Segment> = Vec::new();
        let mut pending: Vec<String> = Vec::new();
        let mut duration: Option<Micros> = None;
        let mut discontinuity = false;
        let mut map: Option<String> = None;
        let mut keys: Vec<String> = Vec::new();
        let mut keys_closed = false;
        // (length, explicit offset) of a pending `#EXT-X-BYTERANGE`.
        let mut byterange: Option<(u64, Option<u64>)> = None;
        let mut last_range: Option<(String, u64)> = None;

        for line in lines {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if !line.starts_with('#') {
                let duration = duration.take()?;
                let mut seg_lines = std::mem::take(&mut pending);
                if let Some((len, offset)) = byterange.take() {
                    // A range without offset continues the previous segment's
                    // range; make it explicit so the segment can open a window.
                    let offset = offset.unwrap_or(match &last_range {
                        Some((uri, end)) if uri == line => *end,
                        _ => 0,
                    });
                    seg_lines.push(format!("#EXT-X-BYTERANGE:{len}@{offset}"));
                    last_range = Some((line.to_owned(), offset.checked_add(len)?));
                } else {
                    last_range = None;
                }
                seg_lines.push(line.to_owned());
                let mut state: Vec<String> = map.iter().cloned().collect();
                state.extend(keys.iter().cloned());
                segments.push(Segment {
                    duration,
                    lines: seg_lines,
                    discontinuity: std::mem::take(&mut discontinuity),
                    state,
                });
                keys_closed = true;
                continue;
            }
            let name = line.split(':').next().unwrap_or(line);
            if name == "#EXTINF" {
                let value = line.get("#EXTINF:".len()..)?;
                let secs: f64 = value.split(',').next()?.trim().parse().ok()?;
                duration = Some(clock::seconds_to_micros(secs)?);
                // EXTINF goes first so the segment's other tags follow it.
                pending.insert(0, line.to_owned());
            } else if name == "#EXT-X-DISCONTINUITY" {
                discontinuity = true;
            } else if name == "#EXT-X-MAP" {
                map = Some(line.to_owned());
            } else if name == "#EXT-X-KEY" {
                if keys_closed {
                    keys.clear();
                    keys_closed = false;
                }
                keys.push(line.to_owned());
            } else if name == "#EXT-X-BYTERANGE" {
                let spec = line.get("#EXT-X-BYTERANGE:".len()..)?;
                let (len, offset) = match spec.split_once('@') {
                    Some((l, o)) => (l.trim().parse().ok()?, Some(o.trim().parse().ok()?)),
                    None => (spec.trim().parse().ok()?, None),
                };
                byterange = Some((len, offset));
            } else if KEPT_HEADER_TAGS.contains(&name) {
                header.push(line.to_owned());
            } else if !DROPPED_TAGS.contains(&name) {
                pending.push(line.to_owned());
            }
        }

        if segments.is_empty() {
            return None;
        }
        let mut ends = Vec::with_capacity(segments.len());
        let mut total: Micros = 0;
        for s in &segments {
            total = total.checked_add(s.duration)?;
            ends.push(total);
        }
        if total == 0 {
            return None;
        }
        if !header
            .iter()
            .any(|h| h.starts_with("#EXT-X-TARGETDURATION"))
        {
            let longest = segments.iter().map(|s| s.duration).max().unwrap_or(0);
            header.push(format!(
                "#EXT-X-TARGETDURATION:{}",
                longest.div_ceil(clock::MICROS_PER_SEC)
            ));
        }
        let mut disc_after_first = Vec::with_capacity(segments.len());
        let mut n = 0;
        for (i, s) in segments.iter().enumerate() {
            if i > 0 && s.discontinuity {
                n += 1;
            }
            disc_after_first.push(n);
        }
        Some(MediaPlaylist {
            header,
            segments,
            ends,
            total,
            disc_after_first,
            loop_dirs: false,
        })
    }

    /// Every segment with its initialisation section, if all of them are
    /// whole files (no byte ranges) named by plain relative URIs and have an
    /// `#EXT-X-MAP`: the shape whose loops can be given their own URLs.
    pub(crate) fn fmp4_segments(&self) -> Option<Vec<Fmp4Segment>> {
        self.segments
            .iter()
            .map(|seg| {
                let uri = seg.lines.last()?;
                if seg.lines.iter().any(|l| l.starts_with("#EXT-X-BYTERANGE")) {
                    return None;
                }
                let map = seg
                    .state
                    .iter()
                    .find_map(|l| l.strip_prefix("#EXT-X-MAP:"))?;
                if hls_attr(map, "BYTERANGE").is_some() {
                    return None;
                }
                Some(Fmp4Segment {
                    uri: uri.clone(),
                    init: hls_attr(map, "URI")?.to_owned(),
                })
            })
            .collect()
    }

    /// From now on list loop `k` of every segment as `loop-k/<uri>`.
    pub(crate) fn use_loop_dirs(&mut self) {
        self.loop_dirs = true;
    }

    pub(crate) fn segment_count(&self) -> u64 {
        self.segments.len() as u64
    }

    /// One loop of the content.
    pub(crate) fn loop_duration(&self) -> Micros {
        self.total
    }

    /// Segments whose end time is at or before `elapsed`.
    pub(crate) fn available(&self, elapsed: Micros) -> u64 {
        let loops = elapsed / self.total;
        let into = elapsed % self.total;
        let done = self.ends.partition_point(|&end| end <= into) as u64;
        loops
            .saturating_mul(self.segment_count())
            .saturating_add(done)
    }

    /// Start time of absolute segment `g` from the live epoch.
    fn start_of(&self, g: u64) -> Micros {
        let (k, i) = self.split(g);
        let start_in_loop = self.ends[i] - self.segments[i].duration;
        k.saturating_mul(self.total).saturating_add(start_in_loop)
    }

    fn split(&self, g: u64) -> (u64, usize) {
        let n = self.segment_count();
        (g / n, (g % n) as usize)
    }

    /// Whether absolute segment `g` is preceded by `#EXT-X-DISCONTINUITY`.
    fn discontinuity(&self, g: u64) -> bool {
        let (k, i) = self.split(g);
        (k > 0 && i == 0) || self.segments[i].discontinuity
    }

    /// Number of `#EXT-X-DISCONTINUITY` tags on segments `0..=g`.
    fn discontinuities_through(&self, g: u64) -> u64 {
        let (k, i) = self.split(g);
        let first = u64::from(self.segments[0].discontinuity);
        let rest_per_loop = self.disc_after_first[self.segments.len() - 1];
        if k == 0 {
            return first + self.disc_after_first[i];
        }
        // Loop 0 has the source's own tags; every later loop also opens
        // with the loop-boundary tag (which absorbs a source tag on segment 0).
        let loop0 = first + rest_per_loop;
        let later = 1 + rest_per_loop;
        loop0
            .saturating_add((k - 1).saturating_mul(later))
            .saturating_add(1 + self.disc_after_first[i])
    }

    /// The live playlist `elapsed` after the epoch, with a window of at most
    /// `window` segments. `date` turns an epoch offset into the
    /// `PROGRAM-DATE-TIME` text.
    pub(crate) fn live(
        &self,
        elapsed: Micros,
        window: usize,
        date: impl Fn(Micros) -> String,
    ) -> LiveWindow {
        let available = self.available(elapsed);
        let first = available.saturating_sub(window.max(1) as u64);
        let discontinuity_sequence = if available == 0 {
            0
        } else {
            self.discontinuities_through(first) - u64::from(self.discontinuity(first))
        };

        let mut body = String::with_capacity(256 + 64 * window.min(1024));
        body.push_str("#EXTM3U\n");
        for h in &self.header {
            body.push_str(h);
            body.push('\n');
        }
        let _ = writeln!(body, "#EXT-X-MEDIA-SEQUENCE:{first}");
        let _ = writeln!(
            body,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}"
        );
        let mut previous_state: Option<&[String]> = None;
        for g in first..available {
            let (_, i) = self.split(g);
            let seg = &self.segments[i];
            let disc = self.discontinuity(g);
            if disc {
                body.push_str("#EXT-X-DISCONTINUITY\n");
            }
            // Restated only when it changes: an unchanged EXT-X-MAP carries
            // over discontinuities, and players such as ffmpeg re-read the
            // initialisation section for every MAP tag they see.
            if previous_state != Some(seg.state.as_slice()) {
                for s in &seg.state {
                    body.push_str(s);
                    body.push('\n');
                }
            }
            previous_state = Some(seg.state.as_slice());
            if g == first || disc {
                let _ = writeln!(body, "#EXT-X-PROGRAM-DATE-TIME:{}", date(self.start_of(g)));
            }
            let Some((uri, tags)) = seg.lines.split_last() else {
                continue;
            };
            for l in tags {
                body.push_str(l);
                body.push('\n');
            }
            if self.loop_dirs {
                let _ = write!(body, "loop-{}/", self.split(g).0);
            }
            body.push_str(uri);
            body.push('\n');
        }
        let changed_at = match available.checked_sub(1) {
            Some(last) => self
                .start_of(last)
                .saturating_add(self.segments[self.split(last).1].duration),
            None => 0,
        };
        LiveWindow {
            body,
            media_sequence: first,
            discontinuity_sequence,
            available,
            changed_at,
        }
    }
}

#[cfg(test)]
mod tests {
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
        let p =
            MediaPlaylist::parse(&vod(&[1.984, 1.984, 2.016, 1.984, 2.016, 1.984, 0.032])).unwrap();
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
        let ranged =
            "#EXTM3U\n#EXT-X-MAP:URI=\"i.mp4\"\n#EXTINF:2,\n#EXT-X-BYTERANGE:10@0\nall.mp4\n";
        assert_eq!(MediaPlaylist::parse(ranged).unwrap().fmp4_segments(), None);
        let ranged_map =
            "#EXTM3U\n#EXT-X-MAP:URI=\"all.mp4\",BYTERANGE=\"100@0\"\n#EXTINF:2,\ns.m4s\n";
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
}
