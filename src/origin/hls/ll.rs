//! LL-HLS: the live window with the parts of its last segments, the parts of the segment in
//! progress and a preload hint for the next part; and where every part is on the live clock.
//!
//! Part `j` of absolute segment `g` ends at the segment's start plus `ends[j]` of its
//! [`SegmentParts`] (the same in every loop), and is listed from then on; the last part ends
//! with the segment, so a segment is complete exactly when its last part is. Everything here is
//! a pure function of elapsed time, like the plain live window.

use std::fmt::Write as _;

use super::super::clock::{MICROS_PER_SEC, Micros};
use super::super::paths;
use super::{LiveWindow, MediaPlaylist};

/// The playlist version LL-HLS needs (`EXT-X-PART`, `EXT-X-PRELOAD-HINT`, blocking reloads).
const VERSION: u64 = 9;

/// Complete segments, counted back from the live edge, whose parts are listed.
const SEGMENTS_WITH_PARTS: u64 = 3;

/// `PART-HOLD-BACK` in part targets (RFC 8216bis asks for at least two; three as Apple does).
const HOLD_BACK_PARTS: u64 = 3;

/// A segment's parts: where each ends from the segment's start, and which start with a sync
/// sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentParts {
    pub(crate) ends: Vec<Micros>,
    pub(crate) independent: Vec<bool>,
}

/// A part by absolute segment number (media sequence number) and index in its segment;
/// ordered as they are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PartRef {
    pub(crate) msn: u64,
    pub(crate) part: u64,
}

/// A sibling rendition's live edge, for `EXT-X-RENDITION-REPORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// Relative to the reporting playlist.
    pub(crate) uri: String,
    pub(crate) last: PartRef,
}

/// A looping live media playlist whose segments are also served as parts.
#[derive(Debug, Clone)]
pub(crate) struct LowLatency {
    pub(crate) playlist: MediaPlaylist,
    /// Per segment of one loop.
    parts: Vec<SegmentParts>,
    part_target: Micros,
}

impl LowLatency {
    /// `None` unless `parts` has one entry per segment, each with parts ending in increasing
    /// order and the last one with the segment.
    pub(crate) fn new(mut playlist: MediaPlaylist, parts: Vec<SegmentParts>) -> Option<LowLatency> {
        playlist.continuous_loops();
        let fits = parts.len() == playlist.segments.len()
            && parts.iter().zip(&playlist.segments).all(|(p, s)| {
                p.ends.len() == p.independent.len()
                    && p.ends.last() == Some(&s.duration)
                    && p.ends.first().is_some_and(|&e| e > 0)
                    && p.ends.windows(2).all(|w| w[0] < w[1])
            });
        let mut ll = LowLatency {
            playlist,
            parts,
            part_target: 0,
        };
        ll.part_target = ll.longest_part();
        fits.then_some(ll)
    }

    /// The longest part, rounded up to a whole millisecond.
    pub(crate) fn longest_part(&self) -> Micros {
        let longest = self
            .parts
            .iter()
            .flat_map(|p| {
                p.ends
                    .iter()
                    .scan(0, |prev, &e| Some(e - std::mem::replace(prev, e)))
            })
            .max()
            .unwrap_or(0);
        longest.div_ceil(1000) * 1000
    }

    /// Sets `PART-TARGET`: at least the longest part, and the same for every rendition of a
    /// stream.
    pub(crate) fn set_part_target(&mut self, target: Micros) {
        self.part_target = target.max(self.longest_part());
    }

    #[cfg(test)]
    pub(crate) fn part_target(&self) -> Micros {
        self.part_target
    }

    /// `#EXT-X-TARGETDURATION`.
    pub(crate) fn target_duration(&self) -> Micros {
        self.playlist.target_duration()
    }

    fn parts_of(&self, msn: u64) -> &SegmentParts {
        &self.parts[self.playlist.split(msn).1]
    }

    /// Parts of absolute segment `msn`.
    pub(crate) fn parts_in(&self, msn: u64) -> u64 {
        self.parts_of(msn).ends.len() as u64
    }

    /// When part `p` is produced (its end), from the live epoch; `None` if there is no such
    /// part.
    pub(crate) fn end_of(&self, p: PartRef) -> Option<Micros> {
        let end = *self
            .parts_of(p.msn)
            .ends
            .get(usize::try_from(p.part).ok()?)?;
        Some(self.playlist.start_of(p.msn).saturating_add(end))
    }

    /// The last part of segment `msn`, whose end completes it.
    pub(crate) fn last_part_of(&self, msn: u64) -> PartRef {
        PartRef {
            msn,
            part: self.parts_in(msn) - 1,
        }
    }

    /// The newest part produced `elapsed` after the epoch.
    pub(crate) fn newest(&self, elapsed: Micros) -> Option<PartRef> {
        let g = self.playlist.available(elapsed);
        let into = elapsed.saturating_sub(self.playlist.start_of(g));
        let done = self.parts_of(g).ends.partition_point(|&e| e <= into) as u64;
        match done.checked_sub(1) {
            Some(part) => Some(PartRef { msn: g, part }),
            None => g.checked_sub(1).map(|m| self.last_part_of(m)),
        }
    }

    /// The part produced after `p`.
    pub(crate) fn next(&self, p: PartRef) -> PartRef {
        self.normalize(PartRef {
            msn: p.msn,
            part: p.part.saturating_add(1),
        })
    }

    /// `p`, with an index past its segment's last part taken as the next segment's first.
    pub(crate) fn normalize(&self, p: PartRef) -> PartRef {
        if p.part < self.parts_in(p.msn) {
            p
        } else {
            PartRef {
                msn: p.msn.saturating_add(1),
                part: 0,
            }
        }
    }

    /// The LL-HLS playlist `elapsed` after the epoch, with a window of at most `window`
    /// complete segments; `changed_at` is when its newest part was produced.
    pub(crate) fn live(
        &self,
        elapsed: Micros,
        window: usize,
        date: impl Fn(Micros) -> String,
        reports: &[Report],
    ) -> LiveWindow {
        let edge = Edge {
            ll: self,
            elapsed,
            reports,
        };
        self.playlist.render(elapsed, window, &date, Some(edge))
    }

    /// The URI of part `p` as the playlist lists it.
    fn uri(&self, p: PartRef) -> String {
        paths::part_name(&self.playlist.uri(p.msn), p.part)
    }

    fn write_part(&self, body: &mut String, p: PartRef) {
        let parts = self.parts_of(p.msn);
        let j = p.part as usize;
        let start = j.checked_sub(1).map_or(0, |i| parts.ends[i]);
        let _ = write!(
            body,
            "#EXT-X-PART:DURATION={},URI=\"{}\"",
            seconds(parts.ends[j] - start),
            self.uri(p)
        );
        if parts.independent[j] {
            body.push_str(",INDEPENDENT=YES");
        }
        body.push('\n');
    }
}

/// What the plain window's renderer asks the LL view for.
pub(super) struct Edge<'a> {
    ll: &'a LowLatency,
    elapsed: Micros,
    reports: &'a [Report],
}

impl Edge<'_> {
    /// The playlist tags, the version raised to what LL-HLS needs, then the server control
    /// and part target.
    pub(super) fn write_header(&self, body: &mut String, header: &[String]) {
        let mut versioned = false;
        for h in header {
            if let Some(v) = h.strip_prefix("#EXT-X-VERSION:") {
                let v = v.trim().parse().unwrap_or(0u64).max(VERSION);
                let _ = writeln!(body, "#EXT-X-VERSION:{v}");
                versioned = true;
            } else {
                body.push_str(h);
                body.push('\n');
            }
        }
        if !versioned {
            let _ = writeln!(body, "#EXT-X-VERSION:{VERSION}");
        }
        let target = self.ll.part_target;
        let _ = writeln!(
            body,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={}",
            millis(target * HOLD_BACK_PARTS)
        );
        let _ = writeln!(body, "#EXT-X-PART-INF:PART-TARGET={}", millis(target));
    }

    /// The parts of complete segment `g`, if it is among the last few before the one in
    /// progress (`available`).
    pub(super) fn write_parts_of_complete(&self, body: &mut String, g: u64, available: u64) {
        if g + SEGMENTS_WITH_PARTS >= available {
            for part in 0..self.ll.parts_in(g) {
                self.ll.write_part(body, PartRef { msn: g, part });
            }
        }
    }

    /// The segment in progress (`available`): its head and the parts produced so far, then
    /// the hint for the next part and the sibling renditions' reports. Returns when the
    /// newest part was produced.
    pub(super) fn write_live_edge(
        &self,
        body: &mut String,
        first: u64,
        available: u64,
        date: &impl Fn(Micros) -> String,
    ) -> Micros {
        let ll = self.ll;
        let newest = ll.newest(self.elapsed);
        if let Some(p) = newest.filter(|p| p.msn == available) {
            ll.playlist
                .write_head(body, available, available == first, date);
            for part in 0..=p.part {
                ll.write_part(
                    body,
                    PartRef {
                        msn: available,
                        part,
                    },
                );
            }
        }
        let next = newest.map_or(PartRef { msn: 0, part: 0 }, |p| ll.next(p));
        let _ = writeln!(
            body,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            ll.uri(next)
        );
        for r in self.reports {
            let _ = writeln!(
                body,
                "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={},LAST-PART={}",
                r.uri, r.last.msn, r.last.part
            );
        }
        newest.and_then(|p| ll.end_of(p)).unwrap_or(0)
    }
}

/// `0.52`, `2.016`: seconds with as many decimals as the microseconds need.
fn seconds(us: Micros) -> String {
    let frac = format!("{:06}", us % MICROS_PER_SEC);
    let frac = frac.trim_end_matches('0');
    format!(
        "{}.{}",
        us / MICROS_PER_SEC,
        if frac.is_empty() { "0" } else { frac }
    )
}

/// `0.520`: seconds to the millisecond.
fn millis(us: Micros) -> String {
    format!("{}.{:03}", us / MICROS_PER_SEC, us % MICROS_PER_SEC / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = MICROS_PER_SEC;

    /// Six 2 s segments in loop directories, each in four 0.5 s parts.
    fn quarters() -> LowLatency {
        let mut text = String::from(
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-MAP:URI=\"init.m4s\"\n",
        );
        for i in 1..=6 {
            text.push_str(&format!("#EXTINF:2.0,\nseg-{i}.m4s\n"));
        }
        let mut p = MediaPlaylist::parse(&text).unwrap();
        p.use_loop_dirs();
        let parts = vec![
            SegmentParts {
                ends: vec![S / 2, S, 3 * S / 2, 2 * S],
                independent: vec![true, false, false, false],
            };
            6
        ];
        LowLatency::new(p, parts).unwrap()
    }

    fn date(us: Micros) -> String {
        format!("t{us}")
    }

    fn lines_with<'a>(body: &'a str, prefix: &str) -> Vec<&'a str> {
        body.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn playlist_in_the_middle_of_a_segment() {
        let ll = quarters();
        assert_eq!(ll.part_target(), S / 2);
        // Loop 1, segment 1 (msn 7), 0.7 s in: its first part is out.
        let t = 14 * S + 700_000;
        let w = ll.live(t, 6, date, &[]);
        let body = &w.body;
        assert!(body.contains("#EXT-X-VERSION:9\n"), "{body}");
        assert!(!body.contains("#EXT-X-VERSION:6"));
        assert!(body.contains(
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500\n\
             #EXT-X-PART-INF:PART-TARGET=0.500\n"
        ));
        // The complete segments are those of the plain window at the same instant.
        let plain = ll.playlist.live(t, 6, date);
        let uris = |b: &str| -> Vec<String> {
            b.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(uris(body), uris(&plain.body));
        assert_eq!(w.media_sequence, plain.media_sequence);
        // Parts: the last three complete segments (msn 4, 5, 6) and one of msn 7.
        let parts = lines_with(body, "#EXT-X-PART:");
        assert_eq!(parts.len(), 3 * 4 + 1, "{body}");
        assert_eq!(
            parts[0],
            "#EXT-X-PART:DURATION=0.5,URI=\"loop-0/seg-5.p0.m4s\",INDEPENDENT=YES"
        );
        assert_eq!(
            parts[1],
            "#EXT-X-PART:DURATION=0.5,URI=\"loop-0/seg-5.p1.m4s\""
        );
        assert_eq!(
            *parts.last().unwrap(),
            "#EXT-X-PART:DURATION=0.5,URI=\"loop-1/seg-2.p0.m4s\",INDEPENDENT=YES"
        );
        assert!(body.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"loop-1/seg-2.p1.m4s\"\n"));
        assert_eq!(w.changed_at, 14 * S + S / 2);
        // Parts come before their segment's URI.
        let p3 = body.find("loop-0/seg-6.p3.m4s").unwrap();
        let seg6 = body.find("\nloop-0/seg-6.m4s\n").unwrap();
        assert!(p3 < seg6);
    }

    #[test]
    fn playlist_across_the_loop_boundary() {
        let ll = quarters();
        // Loop 2 has begun (msn 12): its first part follows on, no discontinuity (the
        // timestamps are retimed, continuous), and the discontinuity sequence stays 0.
        let t = 24 * S + 600_000;
        let body = ll.live(t, 6, date, &[]).body;
        let tail = &body[body.find("\nloop-1/seg-6.m4s\n").unwrap()..];
        assert_eq!(
            tail,
            "\nloop-1/seg-6.m4s\n\
             #EXT-X-PART:DURATION=0.5,URI=\"loop-2/seg-1.p0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"loop-2/seg-1.p1.m4s\"\n"
        );
        assert!(!body.contains("#EXT-X-DISCONTINUITY\n"), "{body}");
        assert!(body.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0\n"), "{body}");
        // Exactly when a segment completes: no part of the next yet, the hint is its first.
        let body = ll.live(24 * S, 6, date, &[]).body;
        assert!(body.ends_with(
            "loop-1/seg-6.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"loop-2/seg-1.p0.m4s\"\n"
        ));
        let reports = [Report {
            uri: "audio.m3u8".into(),
            last: PartRef { msn: 11, part: 3 },
        }];
        let body = ll.live(24 * S, 6, date, &reports).body;
        assert!(
            body.ends_with("#EXT-X-RENDITION-REPORT:URI=\"audio.m3u8\",LAST-MSN=11,LAST-PART=3\n")
        );
    }

    #[test]
    fn parts_follow_the_clock() {
        let ll = quarters();
        let mut t = 0;
        while t < 40 * S {
            let newest = ll.newest(t).unwrap_or(PartRef { msn: 0, part: 0 });
            let next = ll.next(newest);
            if t >= S / 2 {
                assert!(ll.end_of(newest).unwrap() <= t, "{t}");
            }
            assert!(ll.end_of(next).unwrap() > t, "{t}");
            assert!(next > newest);
            t += 100_000;
        }
        assert_eq!(ll.newest(S / 2 - 1), None);
        assert_eq!(
            ll.normalize(PartRef { msn: 3, part: 4 }),
            PartRef { msn: 4, part: 0 }
        );
        assert_eq!(ll.end_of(PartRef { msn: 3, part: 4 }), None);
        assert_eq!(ll.end_of(ll.last_part_of(3)), Some(8 * S));
    }

    #[test]
    fn parts_must_fit_their_segments() {
        let p = quarters().playlist;
        let part = |ends: Vec<Micros>| SegmentParts {
            independent: vec![true; ends.len()],
            ends,
        };
        assert!(LowLatency::new(p.clone(), vec![part(vec![S, 2 * S]); 5]).is_none());
        assert!(LowLatency::new(p.clone(), vec![part(vec![S, 3 * S]); 6]).is_none());
        assert!(LowLatency::new(p.clone(), vec![part(vec![S, S, 2 * S]); 6]).is_none());
        assert!(LowLatency::new(p.clone(), vec![part(vec![0, 2 * S]); 6]).is_none());
        let mut uneven = vec![part(vec![S, 2 * S]); 6];
        uneven[2] = part(vec![520_000, 2 * S]);
        let ll = LowLatency::new(p, uneven).unwrap();
        // The longest part: 1.48 s.
        assert_eq!(ll.part_target(), 1_480_000);
        assert_eq!(seconds(1_480_000), "1.48");
        assert_eq!(seconds(2 * S), "2.0");
        assert_eq!(millis(1_560_000), "1.560");
    }
}
