//! The live clock shared by every live view, and the date/duration text formats it needs.

// The live timeline follows the wall clock players compare PROGRAM-DATE-TIME and
// availabilityStartTime with; a paused test clock must not hold it back.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::syntax;

/// Microseconds since the live epoch. Every live view is a pure function of
/// this number, so tests can pick any instant without sleeping.
pub(crate) type Micros = u64;

pub(crate) const MICROS_PER_SEC: u64 = 1_000_000;

/// Where the simulated live streams are in time.
///
/// The epoch is the origin start minus a pre-roll of whole content loops
/// (chosen by the caller), so a full sliding window / time-shift buffer exists
/// from the very first request instead of an empty playlist for the first
/// `live_window` segment durations. Elapsed time is measured on the monotonic
/// clock so a wall-clock step never makes a media sequence go backwards; the
/// wall clock is read once, to place the epoch for `availabilityStartTime` and
/// `PROGRAM-DATE-TIME`.
#[derive(Debug, Clone)]
pub(crate) struct LiveClock {
    epoch: SystemTime,
    started: Instant,
    elapsed_at_start: Micros,
}

impl LiveClock {
    pub(crate) fn new(origin_start: SystemTime, preroll: Micros) -> Self {
        // Whole seconds: some players (ffmpeg) read availabilityStartTime
        // to the second, and the live timeline should not differ by a
        // fraction between them and everyone else.
        let start = truncate_to_seconds(origin_start);
        let epoch = start
            .checked_sub(Duration::from_micros(preroll))
            .unwrap_or(UNIX_EPOCH);
        let now = SystemTime::now();
        let elapsed_at_start = now.duration_since(epoch).map(duration_micros).unwrap_or(0);
        LiveClock {
            epoch,
            started: Instant::now(),
            elapsed_at_start,
        }
    }

    pub(crate) fn elapsed(&self) -> Micros {
        self.elapsed_at_start
            .saturating_add(duration_micros(self.started.elapsed()))
    }

    pub(crate) fn epoch(&self) -> SystemTime {
        self.epoch
    }

    pub(crate) fn wall(&self, at: Micros) -> SystemTime {
        self.epoch + Duration::from_micros(at)
    }
}

fn duration_micros(d: Duration) -> Micros {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(crate) fn truncate_to_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => UNIX_EPOCH,
    }
}

/// `2024-05-01T12:00:00.250Z`: the xs:dateTime / ISO 8601 form both
/// `availabilityStartTime` and `EXT-X-PROGRAM-DATE-TIME` accept.
pub(crate) fn format_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let millis = d.subsec_millis();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm), to avoid pulling in a date crate for one formatter.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// `PT12S`, `PT1.5S`: an xs:duration with at most millisecond precision.
pub(crate) fn format_duration(us: Micros) -> String {
    let secs = us / MICROS_PER_SEC;
    let millis = (us % MICROS_PER_SEC) / 1000;
    if millis == 0 {
        format!("PT{secs}S")
    } else {
        let frac = format!("{millis:03}");
        format!("PT{secs}.{}S", frac.trim_end_matches('0'))
    }
}

/// An MPD's xs:duration in microseconds. Unlike the edge, which takes `PT` as zero, the origin
/// refuses a duration that names no component: it would loop nothing.
pub(crate) fn parse_duration(text: &str) -> Option<Micros> {
    let d = syntax::parse_iso8601(text).filter(|d| !d.empty)?;
    seconds_to_micros(d.seconds)
}

/// Seconds as written in a playlist (`2.000000`) to whole microseconds,
/// rounding so `0.1 + 0.2`-style float noise cannot lose a microsecond.
pub(crate) fn seconds_to_micros(secs: f64) -> Option<Micros> {
    if !secs.is_finite() || !(0.0..=1e12).contains(&secs) {
        return None;
    }
    Some((secs * MICROS_PER_SEC as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789); // leap day
        assert_eq!(format_utc(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799); // end of 2099
        assert_eq!(format_utc(t), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn formats_durations() {
        assert_eq!(format_duration(0), "PT0S");
        assert_eq!(format_duration(12_000_000), "PT12S");
        assert_eq!(format_duration(1_500_000), "PT1.5S");
        assert_eq!(format_duration(2_016_000), "PT2.016S");
        assert_eq!(format_duration(2_000_999), "PT2S");
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("PT12.0S"), Some(12_000_000));
        assert_eq!(parse_duration("PT1H2M3.5S"), Some(3_723_500_000));
        assert_eq!(parse_duration("P1DT1S"), Some(86_401_000_000));
        assert_eq!(parse_duration("PT0.032S"), Some(32_000));
        for bad in [
            "", "P", "PT", "12S", "P1Y", "P1M", "PT1X", "PT1.2.3S", "PTS", "PT5",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn clock_counts_from_the_epoch() {
        let start = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let clock = LiveClock::new(start, 12 * MICROS_PER_SEC);
        assert_eq!(
            clock.epoch(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000 - 12)
        );
        // The origin "started" long ago, so elapsed is far past the pre-roll.
        assert!(clock.elapsed() > 12 * MICROS_PER_SEC);
        assert_eq!(clock.wall(1_000), clock.epoch() + Duration::from_millis(1));
    }
}
