//! The dynamic MPD for a moment: the root element's live attributes, then one Period on the
//! continuous timeline or one per loop that overlaps the time-shift window.

use std::fmt::Write as _;

use super::LiveMpd;
use crate::origin::TIME_PATH;
use crate::origin::clock::{self, Micros};

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

impl LiveMpd {
    /// How far back a player may go: `window` segments.
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
        self.write_root(&mut body, window, epoch_text, &date(published_at));
        body.push_str(&self.prelude);
        self.write_periods(&mut body, first_loop, last_loop);
        self.write_epilogue(&mut body);
        body.push('\n');
        LiveManifest {
            body,
            first_loop,
            last_loop,
            published_at,
        }
    }

    /// The root element's opening tag: the source's own attributes, then the live ones.
    fn write_root(&self, body: &mut String, window: usize, epoch_text: &str, published: &str) {
        let tsbd = self.time_shift_buffer(window);
        // A few segments behind the edge, but always inside the buffer.
        let delay_segments = (window as u64 / 2).clamp(1, 3);
        let spd = self.segment.saturating_mul(delay_segments);
        let _ = write!(
            body,
            "<{}{} type=\"dynamic\" availabilityStartTime=\"{}\" publishTime=\"{}\" \
             minimumUpdatePeriod=\"{}\" timeShiftBufferDepth=\"{}\" suggestedPresentationDelay=\"{}\"",
            self.root_name,
            self.root_attrs,
            epoch_text,
            published,
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
    }

    /// What follows the Periods, with a `UTCTiming` before the root's end tag unless the source
    /// has one: a live MPD's clients need the server's clock (availability is wall-clock time),
    /// and without one dash.js asks time.akamai.com. It names [`TIME_PATH`] on this origin by a
    /// path, which players resolve against the MPD's URL, so through a CDN it is the CDN's
    /// host (the origin answers it `no-store`: a cache passes it on).
    fn write_epilogue(&self, body: &mut String) {
        let close = self.epilogue.rfind("</").unwrap_or(self.epilogue.len());
        if self.has_utc_timing {
            body.push_str(&self.epilogue);
            return;
        }
        // `indent` starts with the line break before a Period.
        body.push_str(self.epilogue[..close].trim_end());
        let _ = writeln!(
            body,
            "{}<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"{TIME_PATH}\"/>",
            self.indent
        );
        body.push_str(&self.epilogue[close..]);
    }

    /// The one continuous Period, or a copy of the source Period for each loop listed.
    fn write_periods(&self, body: &mut String, first_loop: u64, last_loop: u64) {
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
    }
}
