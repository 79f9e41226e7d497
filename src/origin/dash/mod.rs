//! DASH: a static single-Period MPD re-presented as a looping dynamic MPD.
//!
//! Two shapes, chosen per MPD when the origin loads it:
//!
//! **Continuous** (the demo media, and any `$Number$`/`@duration` template
//! over fragmented MP4 whose segments tile the content exactly): one Period
//! from `availabilityStartTime` on, segment numbers counting from the epoch,
//! and number `n` served as segment `(n - start) % count` of the content with
//! its decode times shifted by `(n - start) / count` loops (see `mp4`). To a
//! player this is an ordinary live stream with timestamps that only ever
//! increase, and it needs no MPD updates at all.
//!
//! **Period per loop** (everything else that loops: `$Time$`,
//! `SegmentTimeline`, MPEG-TS, byte ranges): segments are served unchanged,
//! so their timestamps restart every loop, and each loop gets its own Period
//! (`start` = loop × content duration) whose copy of the source keeps the
//! source's `presentationTimeOffset`, which is exactly the media time at
//! which the unchanged segments start. Only the Periods that overlap the
//! time-shift window are listed.
//!
//! Why the first shape exists: ffmpeg (checked with 5.1) cannot play the
//! second one across a loop boundary. Its DASH demuxer keeps only one Period
//! (the longest, i.e. the last, since all have the same `duration`), computes
//! the live `$Number$` as `startNumber + (now - availabilityStartTime -
//! suggestedPresentationDelay) / duration` ignoring `Period@start` and
//! `presentationTimeOffset`, and passes the timestamps through as they are.
//! When its reading crosses a loop the timestamps jump back 12 s, the null
//! muxer rejects every later packet as non-monotonic and `-t 6` never
//! completes. Its numbering from the epoch is also why [`NumberAlias`] maps
//! every number `>= startNumber` (not only the current Period's) to a file:
//! in the Period-per-loop shape that at least hands ffmpeg the segment that is
//! live at that moment.
//!
//! Here: the model of the source MPD and how it is read. `xml` lists the tags
//! it is sliced from, `template` reads SegmentTemplates into `$Number$`
//! aliases, `render` writes the dynamic MPD for a moment.

mod render;
mod template;
#[cfg(test)]
mod tests;
mod xml;

use std::fmt::Write as _;

use super::clock::{self, Micros};
use xml::{Kind, Tag};

pub(crate) use template::NumberAlias;

/// MPD attributes the dynamic view sets itself.
const MANAGED_MPD_ATTRS: &[&str] = &[
    "type",
    "availabilityStartTime",
    "availabilityEndTime",
    "publishTime",
    "mediaPresentationDuration",
    "minimumUpdatePeriod",
    "timeShiftBufferDepth",
    "suggestedPresentationDelay",
];

const MANAGED_PERIOD_ATTRS: &[&str] = &["id", "start", "duration"];

/// A static MPD, ready to be presented live.
#[derive(Debug, Clone)]
pub(crate) struct LiveMpd {
    /// XML declaration and anything else before the root element.
    prolog: String,
    root_name: String,
    root_attrs: String,
    has_min_buffer_time: bool,
    /// Children of the root before the Period (ProgramInformation, BaseURL…).
    prelude: String,
    /// Whitespace that preceded the Period, reused between Periods.
    indent: String,
    period_name: String,
    period_attrs: String,
    period_inner: String,
    /// Children of the root after the Period, and the closing tag.
    epilogue: String,
    /// The source names its own clock (`UTCTiming`): no other is added.
    has_utc_timing: bool,
    content: Micros,
    segment: Micros,
    aliases: Vec<NumberAlias>,
    representations: usize,
    continuous: bool,
}

impl LiveMpd {
    /// `dir` is the MPD's directory as a key prefix (`""` or `"a/b/"`).
    /// `None` unless the MPD is static with exactly one Period and a known
    /// duration: the shapes that loop cleanly.
    pub(crate) fn parse(xml: &str, dir: &str) -> Option<LiveMpd> {
        let tags = xml::scan(xml)?;
        let root = tags.first()?;
        if root.local_name() != "MPD" || root.kind != Kind::Open {
            return None;
        }
        if root.attr("type").is_some_and(|t| t.trim() != "static") {
            return None;
        }
        let (p_open, p_close, root_close) = only_period(&tags)?;
        let (period, period_end) = (&tags[p_open], &tags[p_close]);
        let content = root
            .attr("mediaPresentationDuration")
            .or_else(|| period.attr("duration"))
            .and_then(clock::parse_duration)
            .filter(|&d| d > 0)?;
        let mut found = template::period_segments(&tags[p_open..=p_close], dir, content);
        if tags.iter().any(|t| t.local_name() == "BaseURL") {
            // BaseURLs move segments to where the aliases cannot follow.
            found.aliases.clear();
        }
        let segment = if found.longest > 0 {
            found.longest
        } else {
            root.attr("maxSegmentDuration")
                .and_then(clock::parse_duration)
                .filter(|&d| d > 0)
                .unwrap_or(content)
        };
        let prelude_full = &xml[root.end..period.start];
        let prelude = prelude_full.trim_end();
        let indent = &prelude_full[prelude.len()..];
        Some(LiveMpd {
            prolog: xml[..root.start].to_owned(),
            root_name: root.name.to_owned(),
            root_attrs: kept_attrs(&root.attrs, MANAGED_MPD_ATTRS),
            has_min_buffer_time: root.attr("minBufferTime").is_some(),
            prelude: prelude.to_owned(),
            indent: if indent.is_empty() {
                "\n".to_owned()
            } else {
                indent.to_owned()
            },
            period_name: period.name.to_owned(),
            period_attrs: kept_attrs(&period.attrs, MANAGED_PERIOD_ATTRS),
            period_inner: xml[period.end..period_end.start].to_owned(),
            epilogue: xml[period_end.end..tags[root_close].end].to_owned(),
            has_utc_timing: xml.contains("UTCTiming"),
            content,
            segment,
            aliases: found.aliases,
            representations: found.representations,
            continuous: false,
        })
    }

    /// Whether every Representation is a `$Number$` template with an
    /// initialisation segment that tiles the content exactly: the shape the
    /// continuous timeline needs (the caller still has to check the files).
    pub(crate) fn can_be_continuous(&self) -> bool {
        self.representations > 0
            && self.aliases.len() == self.representations
            && self.aliases.iter().all(|a| a.exact && a.init.is_some())
    }

    /// Present one Period with segments numbered through the loops; the
    /// caller serves the numbers with shifted timestamps.
    pub(crate) fn use_continuous_timeline(&mut self) {
        self.continuous = true;
    }

    #[cfg(test)]
    pub(crate) fn is_continuous(&self) -> bool {
        self.continuous
    }

    /// One loop of the content (the static presentation's duration).
    pub(crate) fn loop_duration(&self) -> Micros {
        self.content
    }

    pub(crate) fn aliases(&self) -> &[NumberAlias] {
        &self.aliases
    }
}

/// The tag indices of the root's one child Period (its opening and closing tag) and of the
/// root's closing tag, checking that the elements nest. `None` for no Period or several, an
/// empty or remote (xlink) one, or broken nesting.
fn only_period(tags: &[Tag<'_>]) -> Option<(usize, usize, usize)> {
    let mut stack: Vec<&str> = Vec::new();
    let mut period: Option<(usize, usize)> = None;
    let mut periods = 0;
    for (idx, tag) in tags.iter().enumerate() {
        let child_of_root = tag.local_name() == "Period" && stack.len() == 1;
        match tag.kind {
            Kind::Open => {
                if child_of_root {
                    periods += 1;
                    period = Some((idx, idx));
                }
                stack.push(tag.name);
            }
            Kind::Empty if child_of_root => return None,
            Kind::Empty => {}
            Kind::Close => {
                if stack.pop() != Some(tag.name) {
                    return None;
                }
                if let Some((open, _)) = period
                    && stack.len() == 1
                    && tag.local_name() == "Period"
                {
                    period = Some((open, idx));
                }
                if stack.is_empty() {
                    let (open, close) = period?;
                    return (periods == 1 && close != open).then_some((open, close, idx));
                }
            }
        }
    }
    None
}

/// The attributes of a tag the live view does not set itself, as written in a start tag.
fn kept_attrs(attrs: &[(&str, &str)], managed: &[&str]) -> String {
    let mut out = String::new();
    for (name, value) in attrs {
        if !managed.contains(name) {
            let _ = write!(out, " {name}=\"{value}\"");
        }
    }
    out
}
