//! Building the origin at start: the file table, the live view each manifest allows (and the
//! LL-HLS view of media playlists whose segments split into parts), the segments whose
//! timestamps can be shifted per loop, and the live clock with its pre-roll.

use std::collections::HashMap;
use std::time::SystemTime;

use super::clock::{self, LiveClock, Micros};
use super::files::{self, Entity};
use super::live::{self, Live, LowLatencyView, Partable, Retimable};
use super::{Origin, OriginOptions, dash, hls, mp4, paths};

/// `live_window` is clamped to this: a window is rendered on every move, and
/// ten thousand segments is already hours of content.
const MAX_WINDOW: usize = 10_000;

/// The tracks of each initialisation segment looked at so far (`None`: not fragmented MP4).
type Inits = HashMap<String, Option<mp4::Tracks>>;

impl Origin {
    /// The origin for `loaded`: every file served as it is, and a live view of every manifest
    /// that can loop, on a clock started at `live_start`.
    pub(super) fn new(
        loaded: Vec<files::Loaded>,
        opts: &OriginOptions,
        live_start: SystemTime,
    ) -> Origin {
        let (files, manifests) = index(loaded);
        let mut origin = Origin {
            files,
            live_hls: HashMap::new(),
            live_dash: HashMap::new(),
            looped: HashMap::new(),
            numbered: Vec::new(),
            retimable: HashMap::new(),
            ll_hls: HashMap::new(),
            partable: HashMap::new(),
            clock: LiveClock::new(live_start, 0),
            epoch_text: String::new(),
            window: opts.live_window.clamp(1, MAX_WINDOW),
            delay: opts.delay,
            requests: opts.requests.clone(),
        };
        let mut inits = Inits::new();
        let mut preroll: Micros = 0;
        for key in manifests {
            let Some(text) = origin
                .files
                .get(&key)
                .and_then(|e| std::str::from_utf8(&e.body).ok().map(str::to_owned))
            else {
                continue;
            };
            let needs = if key.to_ascii_lowercase().ends_with(".m3u8") {
                origin.add_live_hls(key, &text, &mut inits)
            } else {
                origin.add_live_dash(key, &text, &mut inits)
            };
            preroll = preroll.max(needs.unwrap_or(0));
        }
        origin.link_low_latency();
        origin.start_clock(live_start, preroll);
        origin
    }

    /// Makes the media playlist `key` live, in loop directories when every segment can be
    /// retimed; the pre-roll its window needs, or `None` if it is no media playlist.
    fn add_live_hls(&mut self, key: String, text: &str, inits: &mut Inits) -> Option<Micros> {
        let dir = directory(&key);
        let mut p = hls::MediaPlaylist::parse(text)?;
        let pairs: Option<Vec<(String, String)>> = p.fmp4_segments().and_then(|segs| {
            segs.iter()
                .map(|s| {
                    Some((
                        paths::join_plain(&dir, &s.uri)?,
                        paths::join_plain(&dir, &s.init)?,
                    ))
                })
                .collect()
        });
        if let Some(pairs) = pairs
            && let Some(segments) = self.retime_all(pairs.clone(), inits)
        {
            for seg in segments {
                self.looped.entry(seg).or_insert(p.loop_duration());
            }
            p.use_loop_dirs();
            self.add_low_latency(&key, &p, &pairs, inits);
        }
        let loops = (self.window as u64).div_ceil(p.segment_count());
        let preroll = loops.saturating_mul(p.loop_duration());
        self.live_hls.insert(key, Live::new(p));
        Some(preroll)
    }

    /// Makes the MPD `key` live, on the continuous timeline when every `$Number$` segment can
    /// be retimed; the pre-roll its time-shift buffer needs, or `None` if it cannot loop.
    fn add_live_dash(&mut self, key: String, text: &str, inits: &mut Inits) -> Option<Micros> {
        let dir = directory(&key);
        let mut m = dash::LiveMpd::parse(text, &dir)?;
        let mut shift = None;
        if m.can_be_continuous() {
            let pairs: Option<Vec<_>> = m
                .aliases()
                .iter()
                .flat_map(|a| a.keys().map(move |k| Some((k, a.init.clone()?))))
                .collect();
            if pairs
                .and_then(|pairs| self.retime_all(pairs, inits))
                .is_some()
            {
                m.use_continuous_timeline();
                shift = Some(m.loop_duration());
            }
        }
        self.numbered
            .extend(m.aliases().iter().cloned().map(|a| (a, shift)));
        let preroll = m.preroll(self.window);
        self.live_dash.insert(key, Live::new(m));
        Some(preroll)
    }

    /// The decode-time fields of segment `seg` as described by `init`, if
    /// both are fragmented MP4 that fit together.
    fn sites(&self, seg: &str, init: &str, inits: &mut Inits) -> Option<Vec<mp4::Site>> {
        let tracks = self.tracks(init, inits)?;
        mp4::sites(&self.files.get(seg)?.body, &mp4::timescales_of(&tracks))
    }

    /// The tracks of initialisation segment `init`, if it is one.
    fn tracks(&self, init: &str, inits: &mut Inits) -> Option<mp4::Tracks> {
        inits
            .entry(init.to_owned())
            .or_insert_with(|| self.files.get(init).and_then(|e| mp4::tracks(&e.body)))
            .clone()
    }

    /// Adds the LL-HLS view of live playlist `key` (in loop directories, its segments and
    /// their initialisation segments `pairs`), if every segment can be split into parts.
    fn add_low_latency(
        &mut self,
        key: &str,
        p: &hls::MediaPlaylist,
        pairs: &[(String, String)],
        inits: &mut Inits,
    ) -> Option<()> {
        let mut parts = Vec::with_capacity(pairs.len());
        let mut partables = Vec::with_capacity(pairs.len());
        for (i, (seg, init)) in pairs.iter().enumerate() {
            let tracks = self.tracks(init, inits)?;
            let split = mp4::split(&self.files.get(seg)?.body, &tracks, live::PART_LENGTH)?;
            // On the playlist's clock: the last part ends with the segment's EXTINF.
            let duration = p.segment_duration(i)?;
            let mut ends: Vec<Micros> = split.ends.iter().map(|&e| e.min(duration)).collect();
            *ends.last_mut()? = duration;
            parts.push(hls::SegmentParts {
                ends,
                independent: split.independent,
            });
            let (stem, ext) = paths::part_stem(seg);
            let partable = Partable::new(key.to_owned(), i, seg.clone(), tracks);
            partables.push(((stem.to_owned(), ext.to_owned()), partable));
        }
        let ll = hls::LowLatency::new(p.clone(), parts)?;
        for (stem, partable) in partables {
            self.partable.entry(stem).or_insert(partable);
        }
        self.ll_hls.insert(key.to_owned(), LowLatencyView::new(ll));
        Some(())
    }

    /// Gives the LL-HLS playlists of each directory (the renditions of one stream) one
    /// `PART-TARGET`, and each the others as siblings to report on.
    fn link_low_latency(&mut self) {
        let mut streams: HashMap<String, Vec<String>> = HashMap::new();
        for key in self.ll_hls.keys() {
            streams.entry(directory(key)).or_default().push(key.clone());
        }
        for (dir, mut keys) in streams {
            keys.sort();
            let target = keys
                .iter()
                .map(|k| self.ll_hls[k].live.source.longest_part())
                .max()
                .unwrap_or(0);
            for key in &keys {
                let siblings = keys
                    .iter()
                    .filter(|k| *k != key)
                    .map(|k| (k[dir.len()..].to_owned(), k.clone()))
                    .collect();
                if let Some(view) = self.ll_hls.get_mut(key) {
                    view.live.source.set_part_target(target);
                    view.siblings = siblings;
                }
            }
        }
    }

    /// Makes every (segment, initialisation segment) pair retimable, if all of them are
    /// fragmented MP4 whose decode times can be found: the segments, or `None` and nothing
    /// changed when one cannot.
    fn retime_all(
        &mut self,
        pairs: Vec<(String, String)>,
        inits: &mut Inits,
    ) -> Option<Vec<String>> {
        let found = pairs
            .into_iter()
            .map(|(seg, init)| {
                let sites = self.sites(&seg, &init, inits)?;
                Some((seg, sites))
            })
            .collect::<Option<Vec<_>>>()?;
        let mut segments = Vec::with_capacity(found.len());
        for (seg, sites) in found {
            self.retimable
                .entry(seg.clone())
                .or_insert_with(|| Retimable::new(sites));
            segments.push(seg);
        }
        Some(segments)
    }

    /// Starts the live clock `preroll` before `live_start`, so every window is full at once.
    fn start_clock(&mut self, live_start: SystemTime, preroll: Micros) {
        // Whole seconds, like the origin start the clock rounds down to, so
        // availabilityStartTime is a whole second too.
        let preroll = preroll
            .div_ceil(clock::MICROS_PER_SEC)
            .saturating_mul(clock::MICROS_PER_SEC);
        self.clock = LiveClock::new(live_start, preroll);
        self.epoch_text = clock::format_utc(self.clock.epoch());
    }
}

/// The file table, and the manifests among its keys in order.
fn index(loaded: Vec<files::Loaded>) -> (HashMap<String, Entity>, Vec<String>) {
    let mut files = HashMap::with_capacity(loaded.len());
    let mut manifests = Vec::new();
    for file in loaded {
        let lower = file.key.to_ascii_lowercase();
        if lower.ends_with(".m3u8") || lower.ends_with(".mpd") {
            manifests.push(file.key.clone());
        }
        let ctype = files::content_type(&file.key);
        files.insert(file.key, Entity::new(file.body, ctype, file.modified));
    }
    manifests.sort();
    (files, manifests)
}

/// The directory of a file key, as a key prefix (`""` or `"a/b/"`) that relative URIs join.
fn directory(key: &str) -> String {
    key.rfind('/').map_or("", |i| &key[..=i]).to_owned()
}
