//! Fragmented MP4: finding the decode-time fields of a segment and shifting them by whole loops;
//! splitting a segment into low-latency parts (`parts`).
//!
//! A looping live view serves loop `k` of a segment with every
//! `tfdt.baseMediaDecodeTime` (and `sidx.earliest_presentation_time`) moved
//! forward by `k` loop durations, so timestamps keep increasing across loops
//! exactly as a real live encoder's would. Only those fields change; the
//! sample data and every box size stay as they are, so the patch is a copy
//! and a few big-endian additions.

use std::collections::HashMap;

use super::clock::{MICROS_PER_SEC, Micros};

mod parts;

pub(crate) use parts::split;

/// A decode-time field inside a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Site {
    /// Byte offset of the field.
    pos: usize,
    /// 64-bit (version 1 box) rather than 32-bit.
    wide: bool,
    /// Ticks per second of the field.
    timescale: u32,
}

/// Track ID → media timescale, from an initialisation segment's `moov`.
pub(crate) type Timescales = HashMap<u32, u32>;

/// (type, start of the payload, end of the box) for each box in `buf[start..end]`.
fn boxes(buf: &[u8], start: usize, end: usize) -> Option<Vec<([u8; 4], usize, usize)>> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let size32 = be32(buf, pos)?;
        let kind: [u8; 4] = buf.get(pos + 4..pos + 8)?.try_into().ok()?;
        let (header, size) = match size32 {
            0 => (8, end - pos),
            1 => (16, usize::try_from(be64(buf, pos + 8)?).ok()?),
            n => (8, usize::try_from(n).ok()?),
        };
        let box_end = pos.checked_add(size)?;
        if size < header || box_end > end {
            return None;
        }
        out.push((kind, pos + header, box_end));
        pos = box_end;
    }
    Some(out)
}

fn be32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        buf.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn be64(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        buf.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn child<'a>(
    list: &'a [([u8; 4], usize, usize)],
    kind: &[u8; 4],
) -> Option<&'a ([u8; 4], usize, usize)> {
    list.iter().find(|(k, _, _)| k == kind)
}

/// A track as an initialisation segment describes it: its media timescale and the sample
/// defaults of its `trex`, which apply where a fragment states none of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Track {
    pub(crate) timescale: u32,
    defaults: Defaults,
}

/// Per-sample values a `trex` or `tfhd` may give once for all samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Defaults {
    duration: Option<u32>,
    size: Option<u32>,
    flags: Option<u32>,
}

/// Track ID → track, from an initialisation segment's `moov`.
pub(crate) type Tracks = HashMap<u32, Track>;

/// The timescale of every track in an initialisation segment; `None` if it
/// is not one.
#[cfg(test)]
pub(crate) fn timescales(init: &[u8]) -> Option<Timescales> {
    Some(timescales_of(&tracks(init)?))
}

/// The timescale of each of `tracks`.
pub(crate) fn timescales_of(tracks: &Tracks) -> Timescales {
    tracks.iter().map(|(&id, t)| (id, t.timescale)).collect()
}

/// Every track of an initialisation segment, with its `trex` defaults if `mvex` has them;
/// `None` if it is not one.
pub(crate) fn tracks(init: &[u8]) -> Option<Tracks> {
    let top = boxes(init, 0, init.len())?;
    let &(_, moov_start, moov_end) = child(&top, b"moov")?;
    let moov = boxes(init, moov_start, moov_end)?;
    let mut out = Tracks::new();
    for &(kind, start, end) in &moov {
        if &kind != b"trak" {
            continue;
        }
        let trak = boxes(init, start, end)?;
        let &(_, tkhd, tkhd_end) = child(&trak, b"tkhd")?;
        let id_at = tkhd + if *init.get(tkhd)? == 1 { 20 } else { 12 };
        let &(_, mdia, mdia_end) = child(&trak, b"mdia")?;
        let mdia = boxes(init, mdia, mdia_end)?;
        let &(_, mdhd, mdhd_end) = child(&mdia, b"mdhd")?;
        let scale_at = mdhd + if *init.get(mdhd)? == 1 { 20 } else { 12 };
        if id_at + 4 > tkhd_end || scale_at + 4 > mdhd_end {
            return None;
        }
        let timescale = be32(init, scale_at)?;
        if timescale == 0 {
            return None;
        }
        let track = Track {
            timescale,
            defaults: Defaults::default(),
        };
        out.insert(be32(init, id_at)?, track);
    }
    if let Some(&(_, mvex, mvex_end)) = child(&moov, b"mvex") {
        for (kind, start, end) in boxes(init, mvex, mvex_end)? {
            // version/flags(4) track_ID(4) description index(4) duration(4) size(4) flags(4)
            if &kind == b"trex"
                && end - start >= 24
                && let Some(t) = out.get_mut(&be32(init, start + 4)?)
            {
                t.defaults = Defaults {
                    duration: be32(init, start + 12),
                    size: be32(init, start + 16),
                    flags: be32(init, start + 20),
                };
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The decode-time fields of a media segment. `None` unless it is a
/// fragmented-MP4 segment whose every `traf` has a `tfdt` for a track the
/// initialisation segment knows.
pub(crate) fn sites(segment: &[u8], timescales: &Timescales) -> Option<Vec<Site>> {
    let mut sites = Vec::new();
    let mut fragments = 0;
    for (kind, start, end) in boxes(segment, 0, segment.len())? {
        match &kind {
            b"sidx" => {
                // version(1) flags(3) reference_ID(4) timescale(4) earliest_presentation_time
                let wide = *segment.get(start)? != 0;
                let timescale = be32(segment, start + 8)?;
                let pos = start + 12;
                if pos + if wide { 8 } else { 4 } > end || timescale == 0 {
                    return None;
                }
                sites.push(Site {
                    pos,
                    wide,
                    timescale,
                });
            }
            b"moof" => {
                for (kind, start, end) in boxes(segment, start, end)? {
                    if &kind != b"traf" {
                        continue;
                    }
                    let traf = boxes(segment, start, end)?;
                    let &(_, tfhd, _) = child(&traf, b"tfhd")?;
                    let timescale = *timescales.get(&be32(segment, tfhd + 4)?)?;
                    let &(_, tfdt, tfdt_end) = child(&traf, b"tfdt")?;
                    let wide = *segment.get(tfdt)? == 1;
                    let pos = tfdt + 4;
                    if pos + if wide { 8 } else { 4 } > tfdt_end {
                        return None;
                    }
                    sites.push(Site {
                        pos,
                        wide,
                        timescale,
                    });
                    fragments += 1;
                }
            }
            _ => {}
        }
    }
    (fragments > 0).then_some(sites)
}

/// `segment` as loop `loops` of content that is `loop_len` long. Each field
/// moves by `loops` × (one loop in its own ticks, rounded once), so rounding
/// never accumulates. 32-bit fields wrap, as an encoder's would.
pub(crate) fn shift(segment: &[u8], sites: &[Site], loops: u64, loop_len: Micros) -> Vec<u8> {
    let mut out = segment.to_vec();
    for s in sites {
        let per_loop = (u128::from(loop_len) * u128::from(s.timescale)
            + u128::from(MICROS_PER_SEC / 2))
            / u128::from(MICROS_PER_SEC);
        let add = per_loop.saturating_mul(u128::from(loops));
        if s.wide {
            if let Some(field) = out.get_mut(s.pos..s.pos + 8) {
                let old = u128::from(u64::from_be_bytes(field.try_into().unwrap_or_default()));
                let new = u64::try_from(old.saturating_add(add)).unwrap_or(u64::MAX);
                field.copy_from_slice(&new.to_be_bytes());
            }
        } else if let Some(field) = out.get_mut(s.pos..s.pos + 4) {
            let old = u128::from(u32::from_be_bytes(field.try_into().unwrap_or_default()));
            let new = ((old + add % (1u128 << 32)) % (1u128 << 32)) as u32;
            field.copy_from_slice(&new.to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(name: &str) -> &'static [u8] {
        super::super::media::FILES
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, b)| *b)
            .unwrap()
    }

    fn tfdt(segment: &[u8], sites: &[Site]) -> Vec<u64> {
        sites
            .iter()
            .map(|s| {
                if s.wide {
                    be64(segment, s.pos).unwrap()
                } else {
                    u64::from(be32(segment, s.pos).unwrap())
                }
            })
            .collect()
    }

    #[test]
    fn demo_media_timescales_and_sites() {
        let video = timescales(media("hls/init-0.m4s")).unwrap();
        let audio = timescales(media("hls/init-1.m4s")).unwrap();
        assert_eq!(video.values().copied().collect::<Vec<_>>(), [12_800]);
        assert_eq!(audio.values().copied().collect::<Vec<_>>(), [32_000]);

        let seg = media("hls/seg-0-002.m4s");
        let s = sites(seg, &video).unwrap();
        // sidx (its own timescale) and one tfdt, both 2 s in.
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.iter()
                .zip(tfdt(seg, &s))
                .map(|(s, v)| v * 1_000_000 / u64::from(s.timescale))
                .collect::<Vec<_>>(),
            [2_000_000, 2_000_000]
        );
        // Each file has one track, ID 1, so only the pairing the playlist or
        // MPD states tells them apart.
        assert_eq!(video.keys().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(audio.keys().copied().collect::<Vec<_>>(), [1]);
        assert!(sites(media("hls/master.m3u8"), &video).is_none());
        assert!(timescales(seg).is_none());
    }

    #[test]
    fn shifting_moves_only_the_decode_times() {
        let ts = timescales(media("hls/init-1.m4s")).unwrap();
        let seg = media("hls/seg-1-001.m4s");
        let s = sites(seg, &ts).unwrap();
        let before = tfdt(seg, &s);
        let shifted = shift(seg, &s, 3, 12_000_000);
        let after = tfdt(&shifted, &s);
        for ((b, a), site) in before.iter().zip(&after).zip(&s) {
            assert_eq!(a - b, 3 * 12 * u64::from(site.timescale));
        }
        assert_eq!(shifted.len(), seg.len());
        let differing = seg.iter().zip(&shifted).filter(|(a, b)| a != b).count();
        assert!(differing <= 2 * 8, "{differing} bytes changed");
        assert_eq!(shift(seg, &s, 0, 12_000_000), seg);
    }

    #[test]
    fn narrow_fields_wrap_and_garbage_is_refused() {
        // moof > traf > (tfhd track 7, tfdt v0 = 0xFFFF_FFF0)
        let mut tfhd = vec![0, 0, 0, 16, b't', b'f', b'h', b'd', 0, 0, 0, 0];
        tfhd.extend(7u32.to_be_bytes());
        let mut tfdt = vec![0, 0, 0, 16, b't', b'f', b'd', b't', 0, 0, 0, 0];
        tfdt.extend(0xFFFF_FFF0u32.to_be_bytes());
        let traf_len = 8 + tfhd.len() + tfdt.len();
        let mut traf = (traf_len as u32).to_be_bytes().to_vec();
        traf.extend(b"traf");
        traf.extend(&tfhd);
        traf.extend(&tfdt);
        let mut seg = ((8 + traf.len()) as u32).to_be_bytes().to_vec();
        seg.extend(b"moof");
        seg.extend(&traf);

        let ts = Timescales::from([(7, 1000)]);
        let s = sites(&seg, &ts).unwrap();
        assert_eq!(
            s,
            [Site {
                pos: 8 + 8 + 16 + 12,
                wide: false,
                timescale: 1000
            }]
        );
        assert_eq!(tfdt_value(&shift(&seg, &s, 1, 20_000), &s), 4); // 0xFFFFFFF0 + 20 wraps
        assert!(sites(&seg, &Timescales::from([(8, 1000)])).is_none());

        for bad in [
            &seg[..seg.len() - 1],
            &seg[..7],
            b"\0\0\0\x01moof\0\0\0\0\0\0\0\x04".as_slice(),
        ] {
            assert!(sites(bad, &ts).is_none());
        }
        assert!(sites(b"", &ts).is_none());
        assert!(timescales(b"").is_none());
    }

    fn tfdt_value(seg: &[u8], s: &[Site]) -> u64 {
        tfdt(seg, s)[0]
    }
}
