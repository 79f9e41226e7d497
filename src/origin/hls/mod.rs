//! HLS media playlists: parsing a VOD playlist and rendering its looping live sliding window.
//!
//! The live stream is the VOD segment list repeated forever. Absolute segment
//! number `g` (0-based since the live epoch) is segment `g % N` of loop
//! `g / N`, and it becomes available when its end time has passed. The
//! rendered window is the last `live_window` available segments; the media
//! sequence number is the absolute number of the first one. Every loop starts
//! with `#EXT-X-DISCONTINUITY` (the content jumps back; with original bytes
//! the timestamps do too); discontinuities the VOD playlist already had are
//! kept, and `#EXT-X-DISCONTINUITY-SEQUENCE` counts all of them. The LL-HLS view is the
//! exception (`continuous_loops`): its segments are always retimed, so its loops follow each
//! other without the tag.
//!
//! When the origin can shift the segments' timestamps per loop (fragmented
//! MP4, see `mp4`), the playlist is switched to loop directories: loop `k`
//! of `seg.m4s` is listed as `loop-k/seg.m4s`, a distinct URL whose bytes
//! carry loop `k`'s timestamps. Everything here is a pure function of
//! elapsed time. `ll` renders the same window as LL-HLS, with parts.

use std::fmt::Write as _;

use super::clock::{self, Micros};
use crate::syntax::hls_attr;

mod ll;

pub(crate) use ll::{LowLatency, PartRef, Report, SegmentParts};

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
    /// No `#EXT-X-DISCONTINUITY` at loop boundaries (see `continuous_loops`).
    continuous_loops: bool,
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
        let mut reader = Reader::default();
        for line in lines {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('#') {
                reader.tag(line)?;
            } else {
                reader.uri(line)?;
            }
        }
        reader.finish()
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

    /// Loops follow each other without `#EXT-X-DISCONTINUITY` (the LL-HLS view): the segments
    /// are retimed, so timestamps run on across the boundary with the same initialisation and
    /// an IDR at every segment start; only the source's own discontinuities are tagged. A tag
    /// there made hls.js with an alternate audio rendition join in two continuities (video on
    /// the loop's last segment, audio on the next loop's first) and wait for ever.
    pub(crate) fn continuous_loops(&mut self) {
        self.continuous_loops = true;
    }

    pub(crate) fn segment_count(&self) -> u64 {
        self.segments.len() as u64
    }

    /// One loop of the content.
    pub(crate) fn loop_duration(&self) -> Micros {
        self.total
    }

    /// `#EXT-X-TARGETDURATION`, or the longest segment if the source's is unreadable.
    pub(crate) fn target_duration(&self) -> Micros {
        self.header
            .iter()
            .find_map(|h| h.strip_prefix("#EXT-X-TARGETDURATION:"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .and_then(clock::seconds_to_micros)
            .filter(|&t| t > 0)
            .unwrap_or_else(|| self.segments.iter().map(|s| s.duration).max().unwrap_or(0))
    }

    /// Duration of segment `i` of a loop.
    pub(crate) fn segment_duration(&self, i: usize) -> Option<Micros> {
        self.segments.get(i).map(|s| s.duration)
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
        (k > 0 && i == 0 && !self.continuous_loops) || self.segments[i].discontinuity
    }

    /// Number of `#EXT-X-DISCONTINUITY` tags on segments `0..=g`.
    fn discontinuities_through(&self, g: u64) -> u64 {
        let (k, i) = self.split(g);
        let first = u64::from(self.segments[0].discontinuity);
        let rest_per_loop = self.disc_after_first[self.segments.len() - 1];
        if self.continuous_loops {
            // Only the source's own tags, in every loop.
            return k
                .saturating_mul(first + rest_per_loop)
                .saturating_add(first + self.disc_after_first[i]);
        }
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
        self.render(elapsed, window, &date, None)
    }

    /// The live window; with `ll`, as the LL-HLS view renders it (`ll`): its own header
    /// tags, the parts of the last segments, and the live edge after them.
    fn render(
        &self,
        elapsed: Micros,
        window: usize,
        date: &impl Fn(Micros) -> String,
        ll: Option<ll::Edge<'_>>,
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
        match &ll {
            Some(edge) => edge.write_header(&mut body, &self.header),
            None => {
                for h in &self.header {
                    body.push_str(h);
                    body.push('\n');
                }
            }
        }
        let _ = writeln!(body, "#EXT-X-MEDIA-SEQUENCE:{first}");
        let _ = writeln!(
            body,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}"
        );
        for g in first..available {
            self.write_head(&mut body, g, g == first, date);
            if let Some(edge) = &ll {
                edge.write_parts_of_complete(&mut body, g, available);
            }
            self.write_tail(&mut body, g);
        }
        let changed_at = match &ll {
            Some(edge) => edge.write_live_edge(&mut body, first, available, date),
            None => match available.checked_sub(1) {
                Some(last) => self
                    .start_of(last)
                    .saturating_add(self.segments[self.split(last).1].duration),
                None => 0,
            },
        };
        LiveWindow {
            body,
            media_sequence: first,
            discontinuity_sequence,
            available,
            changed_at,
        }
    }

    /// What comes before absolute segment `g` (and before its parts): a discontinuity where
    /// there is one, the map and keys where they change, the date where the window starts or
    /// the timeline jumps.
    fn write_head(
        &self,
        body: &mut String,
        g: u64,
        first_in_window: bool,
        date: &impl Fn(Micros) -> String,
    ) {
        let seg = &self.segments[self.split(g).1];
        let disc = self.discontinuity(g);
        if disc {
            body.push_str("#EXT-X-DISCONTINUITY\n");
        }
        // Restated only when it changes: an unchanged EXT-X-MAP carries
        // over discontinuities, and players such as ffmpeg re-read the
        // initialisation section for every MAP tag they see.
        if first_in_window || self.segments[self.split(g - 1).1].state != seg.state {
            for s in &seg.state {
                body.push_str(s);
                body.push('\n');
            }
        }
        if first_in_window || disc {
            let _ = writeln!(body, "#EXT-X-PROGRAM-DATE-TIME:{}", date(self.start_of(g)));
        }
    }

    /// Absolute segment `g`'s own tags and its URI.
    fn write_tail(&self, body: &mut String, g: u64) {
        let Some((_, tags)) = self.segments[self.split(g).1].lines.split_last() else {
            return;
        };
        for l in tags {
            body.push_str(l);
            body.push('\n');
        }
        body.push_str(&self.uri(g));
        body.push('\n');
    }

    /// Absolute segment `g`'s URI: in its loop directory when the playlist uses them.
    fn uri(&self, g: u64) -> String {
        let (k, i) = self.split(g);
        let uri = self.segments[i].lines.last().map_or("", String::as_str);
        if self.loop_dirs {
            format!("loop-{k}/{uri}")
        } else {
            uri.to_owned()
        }
    }
}

/// [`MediaPlaylist::parse`] between lines: the playlist so far and what applies to the next
/// segment.
#[derive(Default)]
struct Reader {
    header: Vec<String>,
    segments: Vec<Segment>,
    /// Tags for the next segment, `#EXTINF` first.
    pending: Vec<String>,
    duration: Option<Micros>,
    discontinuity: bool,
    map: Option<String>,
    keys: Vec<String>,
    /// A segment came after the last `#EXT-X-KEY`, so the next one replaces the set.
    keys_closed: bool,
    /// (length, explicit offset) of a pending `#EXT-X-BYTERANGE`.
    byterange: Option<(u64, Option<u64>)>,
    /// The URI of the previous segment, if it had a range, and where that range ended.
    last_range: Option<(String, u64)>,
}

impl Reader {
    /// A URI line: the segment the pending tags describe, with the map and keys in force.
    fn uri(&mut self, line: &str) -> Option<()> {
        let duration = self.duration.take()?;
        let mut lines = std::mem::take(&mut self.pending);
        if let Some((len, offset)) = self.byterange.take() {
            // A range without offset continues the previous segment's
            // range; make it explicit so the segment can open a window.
            let offset = offset.unwrap_or(match &self.last_range {
                Some((uri, end)) if uri == line => *end,
                _ => 0,
            });
            lines.push(format!("#EXT-X-BYTERANGE:{len}@{offset}"));
            self.last_range = Some((line.to_owned(), offset.checked_add(len)?));
        } else {
            self.last_range = None;
        }
        lines.push(line.to_owned());
        let mut state: Vec<String> = self.map.iter().cloned().collect();
        state.extend(self.keys.iter().cloned());
        self.segments.push(Segment {
            duration,
            lines,
            discontinuity: std::mem::take(&mut self.discontinuity),
            state,
        });
        self.keys_closed = true;
        Some(())
    }

    /// A tag line: segment tags wait for their URI, playlist tags are kept or dropped.
    fn tag(&mut self, line: &str) -> Option<()> {
        let name = line.split(':').next().unwrap_or(line);
        match name {
            "#EXTINF" => {
                let value = line.get("#EXTINF:".len()..)?;
                let secs: f64 = value.split(',').next()?.trim().parse().ok()?;
                self.duration = Some(clock::seconds_to_micros(secs)?);
                // EXTINF goes first so the segment's other tags follow it.
                self.pending.insert(0, line.to_owned());
            }
            "#EXT-X-DISCONTINUITY" => self.discontinuity = true,
            "#EXT-X-MAP" => self.map = Some(line.to_owned()),
            "#EXT-X-KEY" => {
                if self.keys_closed {
                    self.keys.clear();
                    self.keys_closed = false;
                }
                self.keys.push(line.to_owned());
            }
            "#EXT-X-BYTERANGE" => {
                let spec = line.get("#EXT-X-BYTERANGE:".len()..)?;
                self.byterange = Some(match spec.split_once('@') {
                    Some((l, o)) => (l.trim().parse().ok()?, Some(o.trim().parse().ok()?)),
                    None => (spec.trim().parse().ok()?, None),
                });
            }
            _ if KEPT_HEADER_TAGS.contains(&name) => self.header.push(line.to_owned()),
            _ if !DROPPED_TAGS.contains(&name) => self.pending.push(line.to_owned()),
            _ => {}
        }
        Some(())
    }

    /// The playlist, if it has a segment and lasts longer than nothing; a missing
    /// `#EXT-X-TARGETDURATION` is computed from the longest segment.
    fn finish(mut self) -> Option<MediaPlaylist> {
        if self.segments.is_empty() {
            return None;
        }
        let mut ends = Vec::with_capacity(self.segments.len());
        let mut total: Micros = 0;
        for s in &self.segments {
            total = total.checked_add(s.duration)?;
            ends.push(total);
        }
        if total == 0 {
            return None;
        }
        if !self
            .header
            .iter()
            .any(|h| h.starts_with("#EXT-X-TARGETDURATION"))
        {
            let longest = self.segments.iter().map(|s| s.duration).max().unwrap_or(0);
            self.header.push(format!(
                "#EXT-X-TARGETDURATION:{}",
                longest.div_ceil(clock::MICROS_PER_SEC)
            ));
        }
        let mut disc_after_first = Vec::with_capacity(self.segments.len());
        let mut n = 0;
        for (i, s) in self.segments.iter().enumerate() {
            if i > 0 && s.discontinuity {
                n += 1;
            }
            disc_after_first.push(n);
        }
        Some(MediaPlaylist {
            header: self.header,
            segments: self.segments,
            ends,
            total,
            disc_after_first,
            loop_dirs: false,
            continuous_loops: false,
        })
    }
}

#[cfg(test)]
mod tests;
