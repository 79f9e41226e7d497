//! Manifest text that both the edge (`media`) and the synthetic origin read: HLS attribute lists
//! and ISO 8601 durations.

use std::time::Duration;

/// Attribute value from an HLS attribute list (`KEY=VALUE,KEY="quoted"`), quotes removed.
pub fn hls_attr<'a>(list: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let name = rest[..eq].trim().trim_start_matches(',').trim();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name == key {
            return Some(value);
        }
        rest = next.trim_start_matches(',');
    }
    None
}

/// An ISO 8601 duration as DASH writes them: `PT2S`, `PT0.5S`, `PT1M30S`, `P1DT2H`, `P1W`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct IsoDuration {
    /// The length in seconds, unrounded, so each reader picks its own precision.
    pub(crate) seconds: f64,
    /// No component is written (`P`, `PT`): xs:duration forbids that, a lenient reader takes
    /// it as zero.
    pub(crate) empty: bool,
}

/// Parses an ISO 8601 duration. Years and months have no fixed length, so they are refused
/// rather than guessed.
pub(crate) fn parse_iso8601(s: &str) -> Option<IsoDuration> {
    let rest = s.trim().strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut d = IsoDuration {
        seconds: 0.0,
        empty: true,
    };
    d.add(date, |unit, n| match unit {
        'D' => Some(n * 86400.0),
        'W' => Some(n * 7.0 * 86400.0),
        _ => None,
    })?;
    d.add(time, |unit, n| match unit {
        'H' => Some(n * 3600.0),
        'M' => Some(n * 60.0),
        'S' => Some(n),
        _ => None,
    })?;
    Some(d)
}

impl IsoDuration {
    /// Adds the components of the date or the time part (`1DT`, `2H30M`), each a number and
    /// the unit `seconds` turns into seconds.
    fn add(&mut self, part: &str, seconds: impl Fn(char, f64) -> Option<f64>) -> Option<()> {
        let mut num = String::new();
        for c in part.chars() {
            match c {
                '0'..='9' | '.' => num.push(c),
                unit => {
                    self.seconds += seconds(unit, num.parse::<f64>().ok()?)?;
                    self.empty = false;
                    num.clear();
                }
            }
        }
        num.is_empty().then_some(())
    }
}

/// ISO 8601 durations as used by DASH, up to 10⁹ seconds (`PT` is zero).
pub fn iso8601_duration(s: &str) -> Option<Duration> {
    let d = parse_iso8601(s)?;
    (0.0..=1e9)
        .contains(&d.seconds)
        .then(|| Duration::from_secs_f64(d.seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(iso8601_duration("PT2S"), Some(Duration::from_secs(2)));
        assert_eq!(iso8601_duration("PT0.5S"), Some(Duration::from_millis(500)));
        assert_eq!(iso8601_duration("PT1M30S"), Some(Duration::from_secs(90)));
        assert_eq!(iso8601_duration("P1DT1H"), Some(Duration::from_secs(90000)));
        assert_eq!(iso8601_duration("2S"), None);
        assert_eq!(iso8601_duration("PT2X"), None);
        assert_eq!(iso8601_duration("PT"), Some(Duration::ZERO));
    }

    #[test]
    fn duration_parts() {
        let parsed = |s| parse_iso8601(s).map(|d| (d.seconds, d.empty));
        assert_eq!(parsed("P1W"), Some((604_800.0, false)));
        assert_eq!(parsed("P1DT"), Some((86_400.0, false)));
        assert_eq!(parsed(" PT0.25S "), Some((0.25, false)));
        assert_eq!(parsed("P"), Some((0.0, true)));
        assert_eq!(parsed("PT"), Some((0.0, true)));
        for bad in [
            "", "P1Y", "P1M", "PT1D", "P1H", "P1", "P1T2S", "PTS", "PT1S2", "PT-1S", "PT1HT1S",
        ] {
            assert_eq!(parsed(bad), None, "{bad}");
        }
    }

    #[test]
    fn attribute_lists() {
        let l = "METHOD=AES-128,URI=\"k,1\",IV=0x1";
        assert_eq!(hls_attr(l, "METHOD"), Some("AES-128"));
        assert_eq!(hls_attr(l, "URI"), Some("k,1"));
        assert_eq!(hls_attr(l, "IV"), Some("0x1"));
        assert_eq!(hls_attr(l, "KEYFORMAT"), None);
        assert_eq!(hls_attr("URI=\"unterminated", "URI"), None);
        assert_eq!(hls_attr("", "URI"), None);
    }
}
