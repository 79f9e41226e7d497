//! Splitting a media segment into low-latency parts: its samples regrouped by decode time into
//! standalone `moof`+`mdat` fragments (CMAF chunks), one per part.
//!
//! Part `i` holds each track's samples whose decode time falls in `[i × L, (i + 1) × L)` from
//! that track's first sample in the segment, `L` being the part length. A part's `trun` states
//! every sample's duration, size and flags (the source's `tfhd` and `trex` defaults resolved),
//! so nothing in it depends on the segment it came from; its `tfdt` is its first sample's decode
//! time, its `mfhd` sequence number is the segment's times [`PART_SEQUENCE_STRIDE`] plus the part
//! index, so numbers keep increasing from part to part and segment to segment. The concatenated
//! parts are the segment's samples, in order, with the same bytes.

use std::collections::HashMap;
use std::ops::Range;

use super::super::clock::{MICROS_PER_SEC, Micros};
use super::{Tracks, be32, be64, boxes, child};

/// Part sequence numbers per segment sequence number: room for more parts than any segment
/// has (a thousand 0.5 s parts are eight minutes).
const PART_SEQUENCE_STRIDE: u32 = 1000;

/// Samples per segment (all its `trun`s together) beyond which it is taken for garbage rather
/// than media; with every sample at least one byte, no segment can claim more samples than it
/// has bytes either.
const MAX_SAMPLES: u32 = 1 << 20;

/// Parts per segment beyond which splitting is refused (a segment of hours, or garbage).
const MAX_PARTS: usize = 10_000;

/// `sample_is_non_sync_sample` in sample flags.
const NON_SYNC: u32 = 0x0001_0000;

/// A segment split into parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Split {
    /// Each part's bytes: one `moof` and one `mdat`.
    pub(crate) parts: Vec<Vec<u8>>,
    /// Where each part ends, from the segment's start: its latest sample end over all tracks.
    pub(crate) ends: Vec<Micros>,
    /// Whether each part starts with a sync sample in every track it has samples of.
    pub(crate) independent: Vec<bool>,
}

/// One sample of a fragmented segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) track: u32,
    /// In the track's timescale.
    pub(crate) decode: u64,
    pub(crate) duration: u32,
    pub(crate) flags: u32,
    /// Composition time offset (signed in a version 1 `trun`).
    pub(crate) cto: i64,
    /// Where the sample's bytes are in the buffer it was read from.
    pub(crate) data: Range<usize>,
}

/// What a track's fragments carry besides samples, kept in its parts.
#[derive(Debug, Clone, Copy)]
struct TrackRun {
    id: u32,
    /// 64-bit `tfdt` (version 1).
    wide_tfdt: bool,
    /// `sample_description_index` of the `tfhd`, if it had one.
    description: Option<u32>,
}

/// The samples of a segment, and what its fragments say about each track.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub(crate) samples: Vec<Sample>,
    runs: Vec<TrackRun>,
    /// The first `mfhd` sequence number.
    sequence: u32,
}

/// `segment` split into parts of `part_len`; `None` unless it is fragmented MP4 of tracks in
/// `tracks`, with every sample's duration and size known and no part left empty.
pub(crate) fn split(segment: &[u8], tracks: &Tracks, part_len: Micros) -> Option<Split> {
    if part_len == 0 {
        return None;
    }
    let parsed = parse(segment, tracks)?;
    let mut first: HashMap<u32, u64> = HashMap::new();
    for s in &parsed.samples {
        first.entry(s.track).or_insert(s.decode);
    }
    let micros = |s: &Sample, ticks: u64| -> Option<Micros> {
        let scale = u128::from(tracks.get(&s.track)?.timescale);
        let rel = u128::from(ticks.checked_sub(first[&s.track])?);
        u64::try_from((rel * u128::from(MICROS_PER_SEC) + scale / 2) / scale).ok()
    };
    let mut groups: Vec<Vec<&Sample>> = Vec::new();
    let mut ends: Vec<Micros> = Vec::new();
    for s in &parsed.samples {
        let i = usize::try_from(micros(s, s.decode)? / part_len).ok()?;
        if i >= MAX_PARTS {
            return None;
        }
        if groups.len() <= i {
            groups.resize_with(i + 1, Vec::new);
            ends.resize(i + 1, 0);
        }
        groups[i].push(s);
        let end = micros(s, s.decode.checked_add(u64::from(s.duration))?)?;
        ends[i] = ends[i].max(end);
    }
    if groups.is_empty() || groups.iter().any(Vec::is_empty) {
        return None;
    }
    for i in 1..ends.len() {
        ends[i] = ends[i].max(ends[i - 1]);
    }
    let independent = groups
        .iter()
        .map(|g| {
            parsed.runs.iter().all(|r| {
                g.iter()
                    .find(|s| s.track == r.id)
                    .is_none_or(|s| s.flags & NON_SYNC == 0)
            })
        })
        .collect();
    let base = parsed.sequence.wrapping_mul(PART_SEQUENCE_STRIDE);
    let parts = groups
        .iter()
        .enumerate()
        .map(|(i, g)| write_part(segment, g, &parsed.runs, base.wrapping_add(i as u32)))
        .collect::<Option<_>>()?;
    Some(Split {
        parts,
        ends,
        independent,
    })
}

/// Every sample of the fragments in `buf`, in order, with the sample defaults of `tracks`.
pub(crate) fn parse(buf: &[u8], tracks: &Tracks) -> Option<Parsed> {
    let mut out = Parsed::default();
    let mut sequence = None;
    // Boxes are contiguous, so each one starts where the previous one ended.
    let mut box_start = 0;
    for (kind, start, end) in boxes(buf, 0, buf.len())? {
        if &kind == b"moof" {
            let moof = boxes(buf, start, end)?;
            if let Some(&(_, mfhd, _)) = child(&moof, b"mfhd") {
                sequence.get_or_insert(be32(buf, mfhd + 4)?);
            }
            // Without an explicit base, a traf's data follows the previous traf's.
            let mut data_end = box_start;
            for &(kind, s, e) in &moof {
                if &kind == b"traf" {
                    data_end = parse_traf(buf, s, e, box_start, data_end, tracks, &mut out)?;
                }
            }
        }
        box_start = end;
    }
    out.sequence = sequence.unwrap_or(0);
    (!out.samples.is_empty()).then_some(out)
}

/// The samples of the `traf` at `buf[start..end]` of the `moof` at `moof_start`, appended to
/// `out`; returns where its data ends.
fn parse_traf(
    buf: &[u8],
    start: usize,
    end: usize,
    moof_start: usize,
    implicit_base: usize,
    tracks: &Tracks,
    out: &mut Parsed,
) -> Option<usize> {
    let traf = boxes(buf, start, end)?;
    let &(_, tfhd, tfhd_end) = child(&traf, b"tfhd")?;
    let flags = be32(buf, tfhd)? & 0x00FF_FFFF;
    let id = be32(buf, tfhd + 4)?;
    let mut defaults = tracks.get(&id)?.defaults;
    let mut at = tfhd + 8;
    let mut field = |bit: u32, wide: bool| -> Option<Option<u64>> {
        if flags & bit == 0 {
            return Some(None);
        }
        let v = if wide {
            be64(buf, at)?
        } else {
            u64::from(be32(buf, at)?)
        };
        at += if wide { 8 } else { 4 };
        Some(Some(v))
    };
    let base_offset = field(0x1, true)?;
    let description = field(0x2, false)?.map(|v| v as u32);
    for (bit, slot) in [
        (0x8, &mut defaults.duration),
        (0x10, &mut defaults.size),
        (0x20, &mut defaults.flags),
    ] {
        if let Some(v) = field(bit, false)? {
            *slot = Some(v as u32);
        }
    }
    if at > tfhd_end {
        return None;
    }
    let base = match base_offset {
        Some(b) => usize::try_from(b).ok()?,
        None if flags & 0x2_0000 != 0 => moof_start,
        None => implicit_base,
    };
    let &(_, tfdt, _) = child(&traf, b"tfdt")?;
    let wide_tfdt = *buf.get(tfdt)? == 1;
    let mut decode = if wide_tfdt {
        be64(buf, tfdt + 4)?
    } else {
        u64::from(be32(buf, tfdt + 4)?)
    };
    if !out.runs.iter().any(|r| r.id == id) {
        out.runs.push(TrackRun {
            id,
            wide_tfdt,
            description,
        });
    }
    let mut data = base;
    for &(kind, s, e) in &traf {
        if &kind == b"trun" {
            (decode, data) = parse_trun(buf, s, e, id, base, (decode, data), defaults, out)?;
        }
    }
    Some(data)
}

/// The samples of the `trun` at `buf[start..end]`, from decode time and data position `next`;
/// returns both after its last sample.
#[allow(clippy::too_many_arguments)]
fn parse_trun(
    buf: &[u8],
    start: usize,
    end: usize,
    track: u32,
    base: usize,
    next: (u64, usize),
    defaults: super::Defaults,
    out: &mut Parsed,
) -> Option<(u64, usize)> {
    let (mut decode, mut data) = next;
    let version = *buf.get(start)?;
    let flags = be32(buf, start)? & 0x00FF_FFFF;
    let count = be32(buf, start + 4)?;
    let mut at = start + 8;
    if flags & 0x1 != 0 {
        let offset = be32(buf, at)? as i32;
        data = base.checked_add_signed(isize::try_from(offset).ok()?)?;
        at += 4;
    }
    let first_flags = if flags & 0x4 != 0 {
        at += 4;
        Some(be32(buf, at - 4)?)
    } else {
        None
    };
    let per_sample = [0x100, 0x200, 0x400, 0x800]
        .iter()
        .filter(|&&b| flags & b != 0)
        .count()
        * 4;
    let total = out.samples.len().saturating_add(count as usize);
    if total > MAX_SAMPLES as usize || total > buf.len() || at + per_sample * count as usize > end {
        return None;
    }
    for n in 0..count {
        let mut read = |bit: u32| -> Option<Option<u32>> {
            if flags & bit == 0 {
                return Some(None);
            }
            at += 4;
            Some(Some(be32(buf, at - 4)?))
        };
        let duration = read(0x100)?.or(defaults.duration)?;
        let size = read(0x200)?.or(defaults.size)?;
        let sample_flags = read(0x400)?
            .or(first_flags.filter(|_| n == 0))
            .or(defaults.flags)
            .unwrap_or(0);
        let cto = read(0x800)?.map_or(0, |raw| {
            if version == 0 {
                i64::from(raw)
            } else {
                i64::from(raw as i32)
            }
        });
        let data_end = data.checked_add(usize::try_from(size).ok()?)?;
        if size == 0 || data_end > buf.len() {
            return None;
        }
        out.samples.push(Sample {
            track,
            decode,
            duration,
            flags: sample_flags,
            cto,
            data: data..data_end,
        });
        decode = decode.checked_add(u64::from(duration))?;
        data = data_end;
    }
    Some((decode, data))
}

/// One part: a `moof` with a `traf` per track that has samples in it, then one `mdat` with
/// their bytes, track by track.
fn write_part(
    src: &[u8],
    samples: &[&Sample],
    runs: &[TrackRun],
    sequence: u32,
) -> Option<Vec<u8>> {
    let data_len: usize = samples.iter().map(|s| s.data.len()).sum();
    let mut out = Vec::with_capacity(data_len + 64 + 16 * samples.len());
    // (where a trun's data_offset goes, where its data starts in the mdat payload)
    let mut offsets = Vec::new();
    let mut data_at = 0;
    let moof = open_box(&mut out, b"moof");
    let mfhd = open_box(&mut out, b"mfhd");
    out.extend(0u32.to_be_bytes());
    out.extend(sequence.to_be_bytes());
    close_box(&mut out, mfhd)?;
    for run in runs {
        let track: Vec<&Sample> = samples
            .iter()
            .copied()
            .filter(|s| s.track == run.id)
            .collect();
        let Some(first) = track.first() else {
            continue;
        };
        let traf = open_box(&mut out, b"traf");
        let tfhd = open_box(&mut out, b"tfhd");
        // default-base-is-moof, and the description index if the source named one.
        let tfhd_flags = 0x2_0000 | if run.description.is_some() { 0x2 } else { 0 };
        out.extend(u32::to_be_bytes(tfhd_flags));
        out.extend(run.id.to_be_bytes());
        if let Some(d) = run.description {
            out.extend(d.to_be_bytes());
        }
        close_box(&mut out, tfhd)?;
        let tfdt = open_box(&mut out, b"tfdt");
        if run.wide_tfdt {
            out.extend(0x0100_0000u32.to_be_bytes());
            out.extend(first.decode.to_be_bytes());
        } else {
            out.extend(0u32.to_be_bytes());
            // A 32-bit field wraps, as the source's would have.
            out.extend((first.decode as u32).to_be_bytes());
        }
        close_box(&mut out, tfdt)?;
        let with_cto = track.iter().any(|s| s.cto != 0);
        let version: u32 = if track.iter().any(|s| s.cto < 0) {
            1
        } else {
            0
        };
        let trun_flags = 0x1 | 0x100 | 0x200 | 0x400 | if with_cto { 0x800 } else { 0 };
        let trun = open_box(&mut out, b"trun");
        out.extend(((version << 24) | trun_flags).to_be_bytes());
        out.extend(u32::try_from(track.len()).ok()?.to_be_bytes());
        offsets.push((out.len(), data_at));
        out.extend(0u32.to_be_bytes());
        for s in &track {
            out.extend(s.duration.to_be_bytes());
            out.extend(u32::try_from(s.data.len()).ok()?.to_be_bytes());
            out.extend(s.flags.to_be_bytes());
            if with_cto {
                out.extend((s.cto as u32).to_be_bytes());
            }
            data_at += s.data.len();
        }
        close_box(&mut out, trun)?;
        close_box(&mut out, traf)?;
    }
    close_box(&mut out, moof)?;
    // Data offsets count from the moof's first byte (default-base-is-moof) to past the mdat header.
    let payload = out.len() + 8;
    for (at, rel) in offsets {
        let offset = i32::try_from(payload + rel).ok()?;
        out[at..at + 4].copy_from_slice(&offset.to_be_bytes());
    }
    let mdat = open_box(&mut out, b"mdat");
    for run in runs {
        for s in samples.iter().filter(|s| s.track == run.id) {
            out.extend_from_slice(src.get(s.data.clone())?);
        }
    }
    close_box(&mut out, mdat)?;
    Some(out)
}

/// Starts a box whose size is filled in by [`close_box`]; returns where it starts.
fn open_box(out: &mut Vec<u8>, kind: &[u8; 4]) -> usize {
    let at = out.len();
    out.extend([0; 4]);
    out.extend(kind);
    at
}

fn close_box(out: &mut [u8], at: usize) -> Option<()> {
    let size = u32::try_from(out.len() - at).ok()?;
    out[at..at + 4].copy_from_slice(&size.to_be_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::super::tracks;
    use super::*;

    fn media(name: &str) -> &'static [u8] {
        super::super::super::media::FILES
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, b)| *b)
            .unwrap()
    }

    /// (sample count, total duration in ticks, data bytes) of `buf`.
    fn summary(buf: &[u8], tracks: &Tracks) -> (usize, u64, Vec<u8>) {
        let p = parse(buf, tracks).unwrap();
        let duration = p.samples.iter().map(|s| u64::from(s.duration)).sum();
        let data = p
            .samples
            .iter()
            .flat_map(|s| buf[s.data.clone()].iter().copied())
            .collect();
        (p.samples.len(), duration, data)
    }

    #[test]
    fn demo_segments_split_into_half_second_parts() {
        for (rendition, counts) in [(0, [13, 12, 13, 12]), (1, [16, 16, 15, 16])] {
            let t = tracks(media(&format!("hls/init-{rendition}.m4s"))).unwrap();
            let seg = media(&format!("hls/seg-{rendition}-001.m4s"));
            let split = split(seg, &t, 500_000).unwrap();
            let per_part: Vec<usize> = split
                .parts
                .iter()
                .map(|p| parse(p, &t).unwrap().samples.len())
                .collect();
            assert_eq!(per_part, counts, "rendition {rendition}");
            let whole = parse(seg, &t).unwrap();
            // Each part stands alone: its tfdt is its first sample's decode time.
            let mut next = 0;
            for p in &split.parts {
                let samples = parse(p, &t).unwrap().samples;
                assert_eq!(samples[0].decode, whole.samples[next].decode);
                let top: Vec<[u8; 4]> = boxes(p, 0, p.len()).unwrap().iter().map(|b| b.0).collect();
                assert_eq!(top, [*b"moof", *b"mdat"]);
                next += samples.len();
            }
            if rendition == 0 {
                assert_eq!(split.ends, [520_000, 1_000_000, 1_520_000, 2_000_000]);
                assert_eq!(split.independent, [true, false, false, false]);
            } else {
                assert_eq!(split.ends, [512_000, 1_024_000, 1_504_000, 2_016_000]);
                assert_eq!(split.independent, [true; 4]);
            }
        }
    }

    /// A `trun` may claim a million samples in 16 bytes; all of a segment's `trun`s together may
    /// not claim more samples than the segment has bytes (nor zero-byte samples), so a crafted
    /// segment cannot make the splitter allocate gigabytes.
    #[test]
    fn sample_counts_are_bounded_by_the_segment() {
        let t = tracks(media("hls/init-0.m4s")).unwrap();
        let seg = media("hls/seg-0-001.m4s");
        let trun = seg.windows(4).position(|w| w == b"trun").unwrap() + 4;
        for (flags, count) in [(0x0000_0001u32, 1_000_000u32), (0x0000_0001, 40_000)] {
            let mut bad = seg.to_vec();
            bad[trun..trun + 4].copy_from_slice(&flags.to_be_bytes());
            bad[trun + 4..trun + 8].copy_from_slice(&count.to_be_bytes());
            assert!(parse(&bad, &t).is_none(), "{count} samples claimed");
            assert!(split(&bad, &t, 500_000).is_none());
        }
        assert!(parse(seg, &t).is_some());
    }

    #[test]
    fn parts_concatenated_are_the_segment() {
        for rendition in 0..2 {
            let t = tracks(media(&format!("hls/init-{rendition}.m4s"))).unwrap();
            for n in 1..=6 {
                let seg = media(&format!("hls/seg-{rendition}-00{n}.m4s"));
                let split = split(seg, &t, 500_000).unwrap();
                let joined: Vec<u8> = split.parts.concat();
                assert_eq!(summary(&joined, &t), summary(seg, &t), "{rendition}/{n}");
                let whole = parse(seg, &t).unwrap().samples;
                let again = parse(&joined, &t).unwrap().samples;
                let strip = |v: Vec<Sample>| -> Vec<_> {
                    v.into_iter()
                        .map(|s| (s.decode, s.duration, s.flags, s.cto, s.data.len()))
                        .collect()
                };
                assert_eq!(strip(again), strip(whole));
                // Sequence numbers increase across parts.
                let seqs: Vec<u32> = split
                    .parts
                    .iter()
                    .map(|p| parse(p, &t).unwrap().sequence)
                    .collect();
                assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
            }
        }
    }

    /// One fragment whose tfhd and trun give no durations, sizes or flags: four samples of
    /// 10 bytes, 300 ticks each at 1 kHz, everything from the trex.
    fn bare_fragment() -> Vec<u8> {
        let mut out = Vec::new();
        let moof = open_box(&mut out, b"moof");
        let traf = open_box(&mut out, b"traf");
        let tfhd = open_box(&mut out, b"tfhd");
        out.extend(0x0002_0000u32.to_be_bytes());
        out.extend(1u32.to_be_bytes());
        close_box(&mut out, tfhd).unwrap();
        let tfdt = open_box(&mut out, b"tfdt");
        out.extend(0x0100_0000u32.to_be_bytes());
        out.extend(5_000u64.to_be_bytes());
        close_box(&mut out, tfdt).unwrap();
        let trun = open_box(&mut out, b"trun");
        out.extend(1u32.to_be_bytes());
        out.extend(4u32.to_be_bytes());
        let offset_at = out.len();
        out.extend(0u32.to_be_bytes());
        close_box(&mut out, trun).unwrap();
        close_box(&mut out, traf).unwrap();
        close_box(&mut out, moof).unwrap();
        let data_offset = (out.len() + 8) as u32;
        out[offset_at..offset_at + 4].copy_from_slice(&data_offset.to_be_bytes());
        let mdat = open_box(&mut out, b"mdat");
        out.extend((0..40u8).collect::<Vec<_>>());
        close_box(&mut out, mdat).unwrap();
        out
    }

    #[test]
    fn defaults_come_from_trex_when_the_fragment_has_none() {
        let with_trex = Tracks::from([(
            1,
            super::super::Track {
                timescale: 1000,
                defaults: super::super::Defaults {
                    duration: Some(300),
                    size: Some(10),
                    flags: Some(0),
                },
            },
        )]);
        let seg = bare_fragment();
        let samples = parse(&seg, &with_trex).unwrap().samples;
        assert_eq!(samples.len(), 4);
        assert!(
            samples
                .iter()
                .all(|s| s.duration == 300 && s.data.len() == 10)
        );
        assert_eq!(samples[3].decode, 5_900);
        // Decode times 0, 300 | 600, 900 ms into the segment.
        let split = split(&seg, &with_trex, 500_000).unwrap();
        assert_eq!(split.ends, [600_000, 1_200_000]);
        assert_eq!(
            summary(&split.parts.concat(), &with_trex),
            summary(&seg, &with_trex)
        );
        let second = parse(&split.parts[1], &with_trex).unwrap().samples;
        assert_eq!(
            (
                second[0].decode,
                &split.parts[1][split.parts[1].len() - 20..]
            ),
            (5_600, &(20..40u8).collect::<Vec<_>>()[..])
        );
        // Without the trex's defaults nothing says how long or large a sample is.
        let mut bare = with_trex.clone();
        for t in bare.values_mut() {
            t.defaults = super::super::Defaults::default();
        }
        assert!(parse(&seg, &bare).is_none());
        // The demo's own fragments state their defaults in the tfhd (the trex says 0).
        let t = tracks(media("hls/init-1.m4s")).unwrap();
        assert_eq!(t.values().next().unwrap().defaults.duration, Some(0));
        let audio = parse(media("hls/seg-1-001.m4s"), &t).unwrap().samples;
        assert!(audio.iter().all(|s| s.duration == 1024));
    }

    #[test]
    fn garbage_is_refused() {
        let t = tracks(media("hls/init-0.m4s")).unwrap();
        let seg = media("hls/seg-0-001.m4s");
        assert!(split(seg, &t, 0).is_none());
        assert!(split(&seg[..seg.len() - 1], &t, 500_000).is_none());
        assert!(split(b"", &t, 500_000).is_none());
        assert!(split(media("hls/init-0.m4s"), &t, 500_000).is_none());
        // A part length longer than the segment: one part, the whole segment's samples.
        let one = split(seg, &t, 10_000_000).unwrap();
        assert_eq!(one.parts.len(), 1);
        assert_eq!(summary(&one.parts[0], &t), summary(seg, &t));
    }
}
