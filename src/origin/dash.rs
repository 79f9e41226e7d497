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

use std::fmt::Write as _;

use super::clock::{self, Micros};
use super::paths;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Open,
    Close,
    Empty,
}

#[derive(Debug, Clone)]
struct Tag<'a> {
    name: &'a str,
    attrs: Vec<(&'a str, &'a str)>,
    kind: Kind,
    /// Byte range of the whole tag in the document.
    start: usize,
    end: usize,
}

impl<'a> Tag<'a> {
    fn local_name(&self) -> &'a str {
        local(self.name)
    }

    fn attr(&self, name: &str) -> Option<&'a str> {
        self.attrs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Lists the element tags of an XML document with their byte ranges: enough
/// structure to re-assemble an MPD from slices of the original text without
/// re-serialising (and so without re-escaping) anything. `None` on anything
/// malformed.
fn scan(xml: &str) -> Option<Vec<Tag<'_>>> {
    let b = xml.as_bytes();
    let mut tags = Vec::new();
    let mut i = 0;
    while let Some(offset) = xml.get(i..)?.find('<') {
        let s = i + offset;
        let rest = &xml[s..];
        let skip_to = |end: &str| rest.find(end).map(|e| s + e + end.len());
        if rest.starts_with("<?") {
            i = skip_to("?>")?;
            continue;
        }
        if rest.starts_with("<!--") {
            i = skip_to("-->")?;
            continue;
        }
        if rest.starts_with("<![CDATA[") {
            i = skip_to("]]>")?;
            continue;
        }
        if rest.starts_with("<!") {
            i = skip_to(">")?;
            continue;
        }
        if let Some(close) = rest.strip_prefix("</") {
            let e = close.find('>')?;
            let name = close[..e].trim();
            if name.is_empty() {
                return None;
            }
            let end = s + 2 + e + 1;
            tags.push(Tag {
                name,
                attrs: Vec::new(),
                kind: Kind::Close,
                start: s,
                end,
            });
            i = end;
            continue;
        }
        let mut j = s + 1;
        while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'/' && b[j] != b'>' {
            j += 1;
        }
        let name = &xml[s + 1..j];
        if name.is_empty() {
            return None;
        }
        let mut attrs = Vec::new();
        let kind = loop {
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            match b.get(j)? {
                b'>' => {
                    j += 1;
                    break Kind::Open;
                }
                b'/' => {
                    if b.get(j + 1) != Some(&b'>') {
                        return None;
                    }
                    j += 2;
                    break Kind::Empty;
                }
                _ => {}
            }
            let name_start = j;
            while j < b.len() && !b[j].is_ascii_whitespace() && !matches!(b[j], b'=' | b'>' | b'/')
            {
                j += 1;
            }
            let attr_name = &xml[name_start..j];
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if attr_name.is_empty() || b.get(j) != Some(&b'=') {
                return None;
            }
            j += 1;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let quote = *b.get(j)?;
            if quote != b'"' && quote != b'\'' {
                return None;
            }
            let value_start = j + 1;
            let value_len = xml.get(value_start..)?.find(quote as char)?;
            attrs.push((attr_name, &xml[value_start..value_start + value_len]));
            j = value_start + value_len + 1;
        };
        tags.push(Tag {
            name,
            attrs,
            kind,
            start: s,
            end: j,
        });
        i = j;
    }
    Some(tags)
}

fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// One Representation's `$Number$` segments: maps any number from
/// `startNumber` on (as players numbering from the epoch ask for them) to the
/// file it repeats and the loop it falls in. Keys are paths relative to the
/// served root, like the file table's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NumberAlias {
    prefix: String,
    suffix: String,
    /// Zero-padding width of `$Number%0<width>d$`; 0 for `$Number$`.
    width: usize,
    start: u64,
    /// Segments in one loop of the content.
    count: u64,
    /// The Representation's initialisation segment, if it names one.
    pub(crate) init: Option<String>,
    /// `count` segments of the template's duration make exactly one loop, so
    /// numbering straight through loops keeps MPD time and media time equal.
    exact: bool,
}

impl NumberAlias {
    /// (file, loop) for the segment `key` names, if it is one of these
    /// segments; numbers within the first loop are the files themselves.
    pub(crate) fn resolve(&self, key: &str) -> Option<(String, u64)> {
        let digits = key.strip_prefix(&self.prefix)?.strip_suffix(&self.suffix)?;
        if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        if self.width > 0 && digits.len() < self.width {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        let offset = n.checked_sub(self.start)?;
        Some((
            self.key(self.start + offset % self.count),
            offset / self.count,
        ))
    }

    fn key(&self, n: u64) -> String {
        format!(
            "{}{:0width$}{}",
            self.prefix,
            n,
            self.suffix,
            width = self.width
        )
    }

    /// The files of one loop, in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.count).map(|i| self.key(self.start + i))
    }
}

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
    content: Micros,
    segment: Micros,
    aliases: Vec<NumberAlias>,
    representations: usize,
    continuous: bool,
}

/// One rendering of the dynamic MPD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveManifest {
    pub(crate) body: String,
    /// Loops (Periods) listed: `first_loop..=last_loop`; both 0 for the
    /// continuous shape, whose single Period never changes.
    pub(crate) first_loop: u64,
    pub(crate) last_loop: u64,
    /// `publishTime`: when the MPD last changed, from the epoch.
    pub(crate) published_at: Micros,
}

#[derive(Default)]
struct TemplateAttrs {
    media: Option<String>,
    initialization: Option<String>,
    duration: Option<u64>,
    timescale: Option<u64>,
    start_number: Option<u64>,
}

impl TemplateAttrs {
    fn from_tag(tag: &Tag<'_>) -> Self {
        TemplateAttrs {
            media: tag.attr("media").map(unescape),
            initialization: tag.attr("initialization").map(unescape),
            duration: tag.attr("duration").and_then(|v| v.trim().parse().ok()),
            timescale: tag.attr("timescale").and_then(|v| v.trim().parse().ok()),
            start_number: tag.attr("startNumber").and_then(|v| v.trim().parse().ok()),
        }
    }

    /// `self` overrides `outer`, as a Representation's template overrides
    /// its AdaptationSet's.
    fn over(&self, outer: &TemplateAttrs) -> TemplateAttrs {
        TemplateAttrs {
            media: self.media.clone().or_else(|| outer.media.clone()),
            initialization: self
                .initialization
                .clone()
                .or_else(|| outer.initialization.clone()),
            duration: self.duration.or(outer.duration),
            timescale: self.timescale.or(outer.timescale),
            start_number: self.start_number.or(outer.start_number),
        }
    }
}

struct Rep {
    id: String,
    bandwidth: String,
    template: TemplateAttrs,
}

impl LiveMpd {
    /// `dir` is the MPD's directory as a key prefix (`""` or `"a/b/"`).
    /// `None` unless the MPD is static with exactly one Period and a known
    /// duration: the shapes that loop cleanly.
    pub(crate) fn parse(xml: &str, dir: &str) -> Option<LiveMpd> {
        let tags = scan(xml)?;
        let root = tags.first()?;
        if root.local_name() != "MPD" || root.kind != Kind::Open {
            return None;
        }
        if root.attr("type").is_some_and(|t| t.trim() != "static") {
            return None;
        }

        // Find the root's child Periods and check nesting along the way.
        let mut stack: Vec<&str> = Vec::new();
        let mut period: Option<(usize, usize)> = None; // tag indices
        let mut periods = 0;
        let mut root_close = None;
        for (idx, tag) in tags.iter().enumerate() {
            match tag.kind {
                Kind::Open => {
                    if stack.len() == 1 && tag.local_name() == "Period" {
                        periods += 1;
                        period = Some((idx, idx));
                    }
                    stack.push(tag.name);
                }
                Kind::Empty => {
                    if stack.len() == 1 && tag.local_name() == "Period" {
                        return None; // remote (xlink) or empty Period
                    }
                }
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
                        root_close = Some(idx);
                        break;
                    }
                }
            }
        }
        let root_close = root_close?;
        let (p_open, p_close) = period?;
        if periods != 1 || p_close == p_open {
            return None;
        }
        let p_open_tag = &tags[p_open];
        let p_close_tag = &tags[p_close];

        let content = root
            .attr("mediaPresentationDuration")
            .or_else(|| p_open_tag.attr("duration"))
            .and_then(clock::parse_duration)
            .filter(|&d| d > 0)?;

        let (mut aliases, longest, representations) =
            Self::segments(&tags[p_open..=p_close], dir, content);
        if tags.iter().any(|t| t.local_name() == "BaseURL") {
            // BaseURLs move segments to where the aliases cannot follow.
            aliases.clear();
        }
        let segment = if longest > 0 {
            longest
        } else {
            root.attr("maxSegmentDuration")
                .and_then(clock::parse_duration)
                .filter(|&d| d > 0)
                .unwrap_or(content)
        };

        let keep = |attrs: &[(&str, &str)], managed: &[&str]| {
            let mut out = String::new();
            for (name, value) in attrs {
                if !managed.contains(name) {
                    let _ = write!(out, " {name}=\"{value}\"");
                }
            }
            out
        };
        let prelude_full = &xml[root.end..p_open_tag.start];
        let prelude = prelude_full.trim_end();
        let indent = &prelude_full[prelude.len()..];
        Some(LiveMpd {
            prolog: xml[..root.start].to_owned(),
            root_name: root.name.to_owned(),
            root_attrs: keep(&root.attrs, MANAGED_MPD_ATTRS),
            has_min_buffer_time: root.attr("minBufferTime").is_some(),
            prelude: prelude.to_owned(),
            indent: if indent.is_empty() {
                "\n".to_owned()
            } else {
                indent.to_owned()
            },
            period_name: p_open_tag.name.to_owned(),
            period_attrs: keep(&p_open_tag.attrs, MANAGED_PERIOD_ATTRS),
            period_inner: xml[p_open_tag.end..p_close_tag.start].to_owned(),
            epilogue: xml[p_close_tag.end..tags[root_close].end].to_owned(),
            content,
            segment,
            aliases,
            representations,
            continuous: false,
        })
    }

    /// Number aliases for the Period's `$Number$` templates, the longest
    /// segment duration found in its templates and timelines, and the number
    /// of Representations.
    fn segments(
        period: &[Tag<'_>],
        dir: &str,
        content: Micros,
    ) -> (Vec<NumberAlias>, Micros, usize) {
        let mut aliases = Vec::new();
        let mut representations = 0;
        let mut longest: Micros = 0;
        let mut period_template = TemplateAttrs::default();
        let mut set_template = TemplateAttrs::default();
        let mut reps: Vec<Rep> = Vec::new();
        let mut current_rep: Option<Rep> = None;
        let mut timescale: u64 = 1;
        let mut parents: Vec<&str> = Vec::new();

        for tag in period {
            let name = tag.local_name();
            match tag.kind {
                Kind::Close => {
                    parents.pop();
                    match name {
                        "Representation" => reps.extend(current_rep.take()),
                        "AdaptationSet" => {
                            let outer = set_template.over(&period_template);
                            for rep in reps.drain(..) {
                                let t = rep.template.over(&outer);
                                if let Some(d) = template_duration(&t) {
                                    longest = longest.max(d);
                                }
                                aliases.extend(alias_for(&rep, &t, dir, content));
                            }
                            set_template = TemplateAttrs::default();
                        }
                        "SegmentTemplate" => timescale = 1,
                        _ => {}
                    }
                    continue;
                }
                Kind::Open | Kind::Empty => {}
            }
            match name {
                "Representation" => {
                    representations += 1;
                    let rep = Rep {
                        id: tag.attr("id").map(unescape).unwrap_or_default(),
                        bandwidth: tag.attr("bandwidth").map(unescape).unwrap_or_default(),
                        template: TemplateAttrs::default(),
                    };
                    if tag.kind == Kind::Empty {
                        reps.push(rep);
                    } else {
                        current_rep = Some(rep);
                    }
                }
                "SegmentTemplate" => {
                    let attrs = TemplateAttrs::from_tag(tag);
                    if tag.kind == Kind::Open {
                        timescale = attrs.timescale.unwrap_or(1);
                    }
                    match parents.last().map(|p| local(p)) {
                        Some("Representation") => {
                            if let Some(rep) = current_rep.as_mut() {
                                rep.template = attrs;
                            }
                        }
                        Some("AdaptationSet") => set_template = attrs,
                        Some("Period") => period_template = attrs,
                        _ => {}
                    }
                }
                "S" => {
                    if let Some(d) = tag.attr("d").and_then(|d| d.trim().parse::<u64>().ok())
                        && timescale > 0
                    {
                        let us = u128::from(d) * u128::from(clock::MICROS_PER_SEC)
                            / u128::from(timescale);
                        longest = longest.max(u64::try_from(us).unwrap_or(u64::MAX));
                    }
                }
                _ => {}
            }
            if tag.kind == Kind::Open {
                parents.push(tag.name);
            }
        }
        (aliases, longest, representations)
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

    fn time_shift_buffer(&self, window: usize) -> Micros {
        self.segment.saturating_mul(window.max(1) as u64)
    }

    /// Pre-roll (whole loops) that fills the time-shift buffer at start-up.
    pub(crate) fn preroll(&self, window: usize) -> Micros {
        self.time_shift_buffer(window)
            .div_ceil(self.content)
            .saturating_mul(self.content)
    }

    /// The loops (Periods) listed at `elapsed`: those that overlap the
    /// time-shift window. The MPD changes exactly when these do.
    pub(crate) fn loops(&self, elapsed: Micros, window: usize) -> (u64, u64) {
        if self.continuous {
            return (0, 0);
        }
        let tsbd = self.time_shift_buffer(window);
        (
            elapsed.saturating_sub(tsbd) / self.content,
            elapsed / self.content,
        )
    }

    /// The dynamic MPD `elapsed` after the epoch. `epoch_text` is the epoch
    /// as `availabilityStartTime`; `date` turns an epoch offset into a date.
    pub(crate) fn live(
        &self,
        elapsed: Micros,
        window: usize,
        epoch_text: &str,
        date: impl Fn(Micros) -> String,
    ) -> LiveManifest {
        let tsbd = self.time_shift_buffer(window);
        // A few segments behind the edge, but always inside the buffer.
        let delay_segments = (window as u64 / 2).clamp(1, 3);
        let spd = self.segment.saturating_mul(delay_segments);
        let (first_loop, last_loop) = self.loops(elapsed, window);
        let mut published_at = last_loop * self.content;
        if elapsed >= tsbd && !self.continuous {
            published_at = published_at.max(first_loop * self.content + tsbd);
        }

        let mut body = String::with_capacity(
            self.prolog.len()
                + self.prelude.len()
                + self.epilogue.len()
                + 512
                + (self.period_inner.len() + 128)
                    .saturating_mul(((last_loop - first_loop) as usize).min(64) + 1),
        );
        body.push_str(&self.prolog);
        let _ = write!(
            body,
            "<{}{} type=\"dynamic\" availabilityStartTime=\"{}\" publishTime=\"{}\" \
             minimumUpdatePeriod=\"{}\" timeShiftBufferDepth=\"{}\" suggestedPresentationDelay=\"{}\"",
            self.root_name,
            self.root_attrs,
            epoch_text,
            date(published_at),
            clock::format_duration(self.segment),
            clock::format_duration(tsbd),
            clock::format_duration(spd),
        );
        if !self.has_min_buffer_time {
            let _ = write!(
                body,
                " minBufferTime=\"{}\"",
                clock::format_duration(self.segment)
            );
        }
        body.push('>');
        body.push_str(&self.prelude);
        if self.continuous {
            let _ = write!(
                body,
                "{}<{} id=\"live\" start=\"PT0S\"{}>",
                self.indent, self.period_name, self.period_attrs,
            );
            body.push_str(&self.period_inner);
            let _ = write!(body, "</{}>", self.period_name);
        }
        for k in (first_loop..=last_loop).filter(|_| !self.continuous) {
            let _ = write!(
                body,
                "{}<{} id=\"loop-{k}\" start=\"{}\" duration=\"{}\"{}>",
                self.indent,
                self.period_name,
                clock::format_duration(k * self.content),
                clock::format_duration(self.content),
                self.period_attrs,
            );
            body.push_str(&self.period_inner);
            let _ = write!(body, "</{}>", self.period_name);
        }
        body.push_str(&self.epilogue);
        body.push('\n');
        LiveManifest {
            body,
            first_loop,
            last_loop,
            published_at,
        }
    }
}

fn template_duration(t: &TemplateAttrs) -> Option<Micros> {
    let d = u128::from(t.duration?);
    let ts = u128::from(t.timescale.unwrap_or(1));
    if ts == 0 {
        return None;
    }
    u64::try_from(d * u128::from(clock::MICROS_PER_SEC) / ts).ok()
}

/// A template with `$RepresentationID$`, `$Bandwidth$` and `$$` filled in,
/// split around its one `$Number$` if it has one: (before, Some((width,
/// after))), `before` already joined to `dir`. `None` for `$Time$`,
/// formatted identifiers, an unterminated `$`, and anything that is not a
/// plain relative path.
fn expand(template: &str, rep: &Rep, dir: &str) -> Option<(String, Option<(usize, String)>)> {
    let mut before = String::new();
    let mut after = String::new();
    let mut width = None;
    let mut literal = true;
    for part in template.split('$') {
        let out = if width.is_some() {
            &mut after
        } else {
            &mut before
        };
        if literal {
            out.push_str(part);
        } else if part.is_empty() {
            out.push('$');
        } else if part == "RepresentationID" {
            out.push_str(&rep.id);
        } else if part == "Bandwidth" {
            out.push_str(&rep.bandwidth);
        } else if let Some(format) = part.strip_prefix("Number") {
            if width.is_some() {
                return None;
            }
            width = Some(if format.is_empty() {
                0
            } else {
                let w = format.strip_prefix("%0")?.strip_suffix('d')?;
                w.parse::<usize>().ok().filter(|&w| w <= 20)?
            });
        } else {
            return None;
        }
        literal = !literal;
    }
    if literal || before.contains('%') || after.contains('%') {
        // An unterminated identifier, or percent-encoding the keys (which are
        // decoded) would not match.
        return None;
    }
    // A number is digits, so checking the path with one in place is enough.
    paths::join_plain(dir, &format!("{before}0{after}"))?;
    Some((format!("{dir}{before}"), width.map(|w| (w, after))))
}

fn alias_for(rep: &Rep, t: &TemplateAttrs, dir: &str, content: Micros) -> Option<NumberAlias> {
    let (prefix, number) = expand(t.media.as_deref()?, rep, dir)?;
    let (width, suffix) = number?;
    let duration = u128::from(t.duration?);
    let timescale = u128::from(t.timescale.unwrap_or(1));
    if duration == 0 || timescale == 0 {
        return None;
    }
    let loop_ticks = u128::from(content) * timescale;
    let per_segment = duration * u128::from(clock::MICROS_PER_SEC);
    let count = u64::try_from(loop_ticks.div_ceil(per_segment))
        .ok()
        .filter(|&c| c > 0)?;
    let init = match t.initialization.as_deref().map(|i| expand(i, rep, dir)) {
        Some(Some((init, None))) => Some(init),
        _ => None,
    };
    Some(NumberAlias {
        prefix,
        suffix,
        width,
        start: t.start_number.unwrap_or(1),
        count,
        init,
        exact: loop_ticks % per_segment == 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = clock::MICROS_PER_SEC;

    const STATIC_MPD: &str = include_str!("media/cmaf/manifest.mpd");

    fn date(us: Micros) -> String {
        format!("t{us}")
    }

    fn live(mpd: &LiveMpd, elapsed: Micros, window: usize) -> LiveManifest {
        mpd.live(elapsed, window, "EPOCH", date)
    }

    fn periods(body: &str) -> Vec<(String, String)> {
        let tags = scan(body).unwrap();
        tags.iter()
            .filter(|t| t.local_name() == "Period" && t.kind == Kind::Open)
            .map(|t| {
                (
                    t.attr("id").unwrap().to_owned(),
                    t.attr("start").unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn demo_mpd_goes_live() {
        let mpd = LiveMpd::parse(STATIC_MPD, "dash/").unwrap();
        assert_eq!(mpd.loop_duration(), 12 * S);
        assert_eq!(mpd.segment, 2 * S);
        assert_eq!(mpd.preroll(6), 12 * S);
        assert_eq!(mpd.preroll(7), 24 * S);

        let m = live(&mpd, 30 * S, 6);
        let root = &scan(&m.body).unwrap()[0];
        assert_eq!(root.attr("type"), Some("dynamic"));
        assert_eq!(root.attr("availabilityStartTime"), Some("EPOCH"));
        assert_eq!(root.attr("timeShiftBufferDepth"), Some("PT12S"));
        assert_eq!(root.attr("suggestedPresentationDelay"), Some("PT6S"));
        assert_eq!(root.attr("minimumUpdatePeriod"), Some("PT2S"));
        assert_eq!(root.attr("minBufferTime"), Some("PT4.0S"));
        assert_eq!(
            root.attr("profiles"),
            Some("urn:mpeg:dash:profile:isoff-live:2011")
        );
        assert_eq!(root.attr("mediaPresentationDuration"), None);
        // Window [18 s, 30 s]: loops 1 and 2.
        assert_eq!((m.first_loop, m.last_loop), (1, 2));
        assert_eq!(
            periods(&m.body),
            [
                ("loop-1".into(), "PT12S".into()),
                ("loop-2".into(), "PT24S".into())
            ]
        );
        // Loop 2 began at 24 s; loop 0 left the window at 24 s too.
        assert_eq!(m.published_at, 24 * S);
        assert_eq!(root.attr("publishTime"), Some("t24000000"));
        // Each Period is a verbatim copy: same templates, no offset added.
        assert_eq!(
            m.body
                .matches("media=\"seg-$RepresentationID$-$Number%03d$.m4s\"")
                .count(),
            4
        );
        assert_eq!(m.body.matches("startNumber=\"1\"").count(), 4);
        assert!(!m.body.contains("presentationTimeOffset"));
        assert!(m.body.contains("<ServiceDescription id=\"0\">"));
        assert!(m.body.trim_end().ends_with("</MPD>"));
        assert!(
            m.body
                .starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<MPD ")
        );
    }

    #[test]
    fn periods_follow_the_time_shift_window() {
        let mpd = LiveMpd::parse(STATIC_MPD, "").unwrap();
        let ids = |e: Micros, w: usize| {
            let m = live(&mpd, e, w);
            (m.first_loop, m.last_loop, m.published_at)
        };
        assert_eq!(ids(12 * S, 6), (0, 1, 12 * S));
        assert_eq!(ids(23 * S, 6), (0, 1, 12 * S));
        assert_eq!(ids(24 * S, 6), (1, 2, 24 * S));
        // Short buffer (4 s): loop 1 alone from 28 s.
        assert_eq!(ids(27 * S, 2), (1, 2, 24 * S));
        assert_eq!(ids(28 * S, 2), (2, 2, 28 * S));
        // Long buffer (40 s) at 100 s: [60, 100] covers loops 5..=8, and
        // loop 4 left it just now.
        assert_eq!(ids(100 * S, 20), (5, 8, 100 * S));
        // Before the buffer has filled (no pre-roll): from loop 0.
        assert_eq!(ids(5 * S, 6), (0, 0, 0));
        let m = live(&mpd, 3600 * S, 6);
        assert_eq!(periods(&m.body).last().unwrap().1, "PT3600S");
    }

    #[test]
    fn aliases_map_numbers_to_files_and_loops() {
        let mpd = LiveMpd::parse(STATIC_MPD, "dash/").unwrap();
        let a = mpd.aliases();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].init.as_deref(), Some("dash/init-0.m4s"));
        assert_eq!(a[1].init.as_deref(), Some("dash/init-1.m4s"));
        assert_eq!(
            a[1].keys().collect::<Vec<_>>(),
            (1..=6)
                .map(|i| format!("dash/seg-1-00{i}.m4s"))
                .collect::<Vec<_>>()
        );
        let resolve = |k: &str| a.iter().find_map(|a| a.resolve(k));
        let file = |k: &str, l| Some((k.to_owned(), l));
        assert_eq!(resolve("dash/seg-0-003.m4s"), file("dash/seg-0-003.m4s", 0));
        assert_eq!(resolve("dash/seg-0-006.m4s"), file("dash/seg-0-006.m4s", 0));
        assert_eq!(resolve("dash/seg-0-007.m4s"), file("dash/seg-0-001.m4s", 1));
        assert_eq!(
            resolve("dash/seg-1-1234.m4s"),
            file("dash/seg-1-004.m4s", 205)
        );
        assert_eq!(resolve("dash/seg-0-000.m4s"), None); // before startNumber
        assert_eq!(resolve("dash/seg-0-07.m4s"), None); // narrower than %03d
        assert_eq!(resolve("dash/seg-2-007.m4s"), None);
        assert_eq!(resolve("seg-0-007.m4s"), None);
        assert_eq!(resolve("dash/seg-0-99999999999999999999999.m4s"), None);
        assert_eq!(resolve("dash/seg-0-+07.m4s"), None);
        assert_eq!(resolve("dash/init-0.m4s"), None);
    }

    #[test]
    fn continuous_timeline() {
        let mut mpd = LiveMpd::parse(STATIC_MPD, "dash/").unwrap();
        assert!(mpd.can_be_continuous());
        mpd.use_continuous_timeline();
        let a = live(&mpd, 30 * S, 6);
        let b = live(&mpd, 3600 * S, 6);
        // Nothing in it depends on time: players compute the live edge.
        assert_eq!(a, b);
        assert_eq!((a.first_loop, a.last_loop, a.published_at), (0, 0, 0));
        assert_eq!(mpd.loops(3600 * S, 6), (0, 0));
        assert_eq!(periods(&a.body), [("live".into(), "PT0S".into())]);
        let tags = scan(&a.body).unwrap();
        let period = tags.iter().find(|t| t.local_name() == "Period").unwrap();
        assert_eq!(period.attr("duration"), None);
        assert_eq!(tags[0].attr("type"), Some("dynamic"));
        assert_eq!(tags[0].attr("timeShiftBufferDepth"), Some("PT12S"));
        assert_eq!(a.body.matches("startNumber=\"1\"").count(), 2);
    }

    #[test]
    fn continuity_needs_every_representation_numbered_exactly() {
        let mpd = |inner: &str| {
            format!(
                "<MPD type=\"static\" mediaPresentationDuration=\"PT10S\"><Period>{inner}</Period></MPD>"
            )
        };
        let numbered = "<AdaptationSet><SegmentTemplate media=\"$RepresentationID$-$Number$.m4s\" \
                        initialization=\"$RepresentationID$.mp4\" duration=\"2\"/>\
                        <Representation id=\"a\"/><Representation id=\"b\"/></AdaptationSet>";
        let m = LiveMpd::parse(&mpd(numbered), "").unwrap();
        assert!(m.can_be_continuous());
        assert_eq!(
            m.aliases()[1].resolve("b-6.m4s"),
            Some(("b-1.m4s".into(), 1))
        );
        assert_eq!(m.aliases()[1].init.as_deref(), Some("b.mp4"));
        // 10 s in 3 s segments does not tile.
        let uneven = numbered.replace("duration=\"2\"", "duration=\"3\"");
        assert!(
            !LiveMpd::parse(&mpd(&uneven), "")
                .unwrap()
                .can_be_continuous()
        );
        // A Representation the template scheme does not cover.
        let mixed = numbered.replace(
            "</AdaptationSet>",
            "</AdaptationSet><AdaptationSet><Representation id=\"c\"><BaseURL>c.mp4</BaseURL></Representation></AdaptationSet>",
        );
        assert!(
            !LiveMpd::parse(&mpd(&mixed), "")
                .unwrap()
                .can_be_continuous()
        );
        let no_init = numbered.replace("initialization=\"$RepresentationID$.mp4\"", "");
        assert!(
            !LiveMpd::parse(&mpd(&no_init), "")
                .unwrap()
                .can_be_continuous()
        );
    }

    #[test]
    fn alias_template_forms() {
        let rep = Rep {
            id: "v1".into(),
            bandwidth: "5000".into(),
            template: TemplateAttrs::default(),
        };
        let t = |media: &str| TemplateAttrs {
            media: Some(media.into()),
            initialization: None,
            duration: Some(4),
            timescale: Some(1),
            start_number: Some(0),
        };
        let a = alias_for(&rep, &t("$Bandwidth$/$$x$Number$.m4s"), "d/", 10 * S).unwrap();
        assert_eq!(a.count, 3);
        assert!(!a.exact);
        assert_eq!(
            a.resolve("d/5000/$x4.m4s"),
            Some(("d/5000/$x1.m4s".into(), 1))
        );
        for bad in [
            "$RepresentationID$-$Time$.m4s",
            "$Number$-$Number$",
            "a$Number",
            "../$Number$.m4s",
            "http://x/$Number$.m4s",
            "/abs/$Number$.m4s",
            "$Number%5d$.m4s",
            "a%20b-$Number$.m4s",
            "plain.mp4",
        ] {
            assert!(alias_for(&rep, &t(bad), "", S).is_none(), "{bad}");
        }
    }

    #[test]
    fn refuses_what_does_not_loop() {
        let one = |body: &str| {
            format!("<MPD type=\"static\" mediaPresentationDuration=\"PT10S\">{body}</MPD>")
        };
        assert!(LiveMpd::parse(&one("<Period><AdaptationSet/></Period>"), "").is_some());
        assert!(LiveMpd::parse(&one("<Period/>"), "").is_none());
        assert!(LiveMpd::parse(&one("<Period></Period><Period></Period>"), "").is_none());
        assert!(LiveMpd::parse(&one(""), "").is_none());
        assert!(LiveMpd::parse(&one("<Period><A></Period>"), "").is_none());
        let dynamic = "<MPD type=\"dynamic\"><Period><A/></Period></MPD>";
        assert!(LiveMpd::parse(dynamic, "").is_none());
        let no_duration = "<MPD><Period><A/></Period></MPD>";
        assert!(LiveMpd::parse(no_duration, "").is_none());
        let period_duration = "<MPD><Period duration=\"PT4S\"><A/></Period></MPD>";
        assert_eq!(
            LiveMpd::parse(period_duration, "").unwrap().loop_duration(),
            4 * S
        );
        for garbage in [
            "",
            "<",
            "<MPD",
            "<MPD a=b>",
            "<MPD a=\"b>",
            "<?xml",
            "text",
            "<MPD></X>",
        ] {
            assert!(LiveMpd::parse(garbage, "").is_none(), "{garbage}");
        }
    }

    #[test]
    fn timeline_durations_and_base_urls() {
        let mpd = "<MPD type=\"static\" mediaPresentationDuration=\"PT8S\"><BaseURL>x/</BaseURL><Period>\
                   <AdaptationSet><SegmentTemplate timescale=\"90000\" media=\"$Number$.ts\">\
                   <SegmentTimeline><S d=\"360000\" r=\"1\"/></SegmentTimeline></SegmentTemplate>\
                   <Representation id=\"a\"/></AdaptationSet></Period></MPD>";
        let m = LiveMpd::parse(mpd, "").unwrap();
        assert_eq!(m.segment, 4 * S);
        assert!(m.aliases().is_empty());
        let body = live(&m, 20 * S, 3).body;
        assert!(body.contains(
            "<BaseURL>x/</BaseURL>\n<Period id=\"loop-1\" start=\"PT8S\" duration=\"PT8S\">"
        ));
    }

    #[test]
    fn scanner_keeps_comments_and_quotes_out() {
        let tags =
            scan("<?xml?><!-- <X> --><A b='1>2' c=\"&amp;\"><![CDATA[<Y>]]><B/></A>").unwrap();
        let names: Vec<_> = tags.iter().map(|t| (t.name, t.kind)).collect();
        assert_eq!(
            names,
            [("A", Kind::Open), ("B", Kind::Empty), ("A", Kind::Close)]
        );
        assert_eq!(tags[0].attr("b"), Some("1>2"));
        assert_eq!(unescape(tags[0].attr("c").unwrap()), "&");
    }
}
