//! SegmentTemplates: what a Period's templates and timelines say about its segments, and
//! `$Number$` aliases that map any segment number to the file it repeats and the loop it is in.

use super::xml::{Kind, Tag, local, unescape};
use crate::origin::clock::{self, Micros};
use crate::origin::paths;

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
    pub(super) count: u64,
    /// The Representation's initialisation segment, if it names one.
    pub(crate) init: Option<String>,
    /// `count` segments of the template's duration make exactly one loop, so
    /// numbering straight through loops keeps MPD time and media time equal.
    pub(super) exact: bool,
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

/// What a SegmentTemplate says, as far as the origin needs it.
#[derive(Default)]
pub(super) struct TemplateAttrs {
    pub(super) media: Option<String>,
    pub(super) initialization: Option<String>,
    pub(super) duration: Option<u64>,
    pub(super) timescale: Option<u64>,
    pub(super) start_number: Option<u64>,
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

/// A Representation: what its templates fill in, and its own template.
pub(super) struct Rep {
    pub(super) id: String,
    pub(super) bandwidth: String,
    pub(super) template: TemplateAttrs,
}

/// What a Period's templates and timelines say about its segments.
pub(super) struct PeriodSegments {
    /// One for each Representation numbered by a `$Number$` template.
    pub(super) aliases: Vec<NumberAlias>,
    /// The longest segment duration found in templates and timelines (0: none).
    pub(super) longest: Micros,
    pub(super) representations: usize,
}

/// Gathers [`PeriodSegments`] from the tags of one Period, `dir` being the MPD's directory as
/// a key prefix and `content` the length of one loop.
pub(super) fn period_segments(period: &[Tag<'_>], dir: &str, content: Micros) -> PeriodSegments {
    let mut walk = PeriodWalk {
        found: PeriodSegments {
            aliases: Vec::new(),
            longest: 0,
            representations: 0,
        },
        dir,
        content,
        period_template: TemplateAttrs::default(),
        set_template: TemplateAttrs::default(),
        reps: Vec::new(),
        current_rep: None,
        timescale: 1,
        parents: Vec::new(),
    };
    for tag in period {
        match tag.kind {
            Kind::Close => walk.close(tag.local_name()),
            Kind::Open | Kind::Empty => walk.open(tag),
        }
    }
    walk.found
}

/// The state of [`period_segments`] between tags: the templates in force at each level and the
/// Representations of the AdaptationSet being read.
struct PeriodWalk<'t, 'd> {
    found: PeriodSegments,
    dir: &'d str,
    content: Micros,
    period_template: TemplateAttrs,
    set_template: TemplateAttrs,
    reps: Vec<Rep>,
    current_rep: Option<Rep>,
    /// Of the SegmentTemplate open around a SegmentTimeline.
    timescale: u64,
    parents: Vec<&'t str>,
}

impl<'t> PeriodWalk<'t, '_> {
    /// An element ends: a Representation joins its AdaptationSet, whose end resolves each
    /// Representation's template against the outer ones.
    fn close(&mut self, name: &str) {
        self.parents.pop();
        match name {
            "Representation" => self.reps.extend(self.current_rep.take()),
            "AdaptationSet" => {
                let outer = self.set_template.over(&self.period_template);
                for rep in self.reps.drain(..) {
                    let t = rep.template.over(&outer);
                    if let Some(d) = template_duration(&t) {
                        self.found.longest = self.found.longest.max(d);
                    }
                    self.found
                        .aliases
                        .extend(alias_for(&rep, &t, self.dir, self.content));
                }
                self.set_template = TemplateAttrs::default();
            }
            "SegmentTemplate" => self.timescale = 1,
            _ => {}
        }
    }

    /// An element begins (or is empty): a Representation, a SegmentTemplate at its level, or
    /// a timeline entry whose duration counts.
    fn open(&mut self, tag: &Tag<'t>) {
        match tag.local_name() {
            "Representation" => {
                self.found.representations += 1;
                let rep = Rep {
                    id: tag.attr("id").map(unescape).unwrap_or_default(),
                    bandwidth: tag.attr("bandwidth").map(unescape).unwrap_or_default(),
                    template: TemplateAttrs::default(),
                };
                if tag.kind == Kind::Empty {
                    self.reps.push(rep);
                } else {
                    self.current_rep = Some(rep);
                }
            }
            "SegmentTemplate" => self.template(tag),
            "S" => {
                if let Some(d) = tag.attr("d").and_then(|d| d.trim().parse::<u64>().ok())
                    && self.timescale > 0
                {
                    let us = u128::from(d) * u128::from(clock::MICROS_PER_SEC)
                        / u128::from(self.timescale);
                    self.found.longest = self
                        .found
                        .longest
                        .max(u64::try_from(us).unwrap_or(u64::MAX));
                }
            }
            _ => {}
        }
        if tag.kind == Kind::Open {
            self.parents.push(tag.name);
        }
    }

    /// A SegmentTemplate applies to the Representation, AdaptationSet or Period around it.
    fn template(&mut self, tag: &Tag<'t>) {
        let attrs = TemplateAttrs::from_tag(tag);
        if tag.kind == Kind::Open {
            self.timescale = attrs.timescale.unwrap_or(1);
        }
        match self.parents.last().map(|p| local(p)) {
            Some("Representation") => {
                if let Some(rep) = self.current_rep.as_mut() {
                    rep.template = attrs;
                }
            }
            Some("AdaptationSet") => self.set_template = attrs,
            Some("Period") => self.period_template = attrs,
            _ => {}
        }
    }
}

/// The segment duration a template states.
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

/// The `$Number$` alias of a Representation whose template `t` numbers segments of a fixed
/// duration over content `content` long.
pub(super) fn alias_for(
    rep: &Rep,
    t: &TemplateAttrs,
    dir: &str,
    content: Micros,
) -> Option<NumberAlias> {
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
