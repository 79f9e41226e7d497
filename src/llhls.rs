//! LL-HLS delivery directives (`_HLS_msn`, `_HLS_part`, `_HLS_skip`): what a playlist request
//! asks for, the plain playlist it asks about, and how long a blocking reload may wait.

use std::time::Duration;

/// LL-HLS delivery directives of a playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Directives {
    pub msn: Option<u64>,
    pub part: Option<u64>,
    pub skip: bool,
}

impl Directives {
    pub fn from_query(query: Option<&str>) -> Directives {
        let mut d = Directives::default();
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "_HLS_msn" => d.msn = v.parse().ok(),
                "_HLS_part" => d.part = v.parse().ok(),
                "_HLS_skip" => d.skip = v == "YES" || v == "v2",
                _ => {}
            }
        }
        d
    }

    /// A blocking playlist reload: the origin holds the request until the part exists.
    pub fn is_blocking(&self) -> bool {
        self.msn.is_some()
    }

    pub fn any(&self) -> bool {
        self.msn.is_some() || self.part.is_some() || self.skip
    }
}

/// True for the query parameters that are LL-HLS delivery directives.
pub fn is_directive(name: &str) -> bool {
    matches!(name, "_HLS_msn" | "_HLS_part" | "_HLS_skip")
}

/// The query of the plain playlist a request with delivery directives asks about (the query
/// without them, `Some(None)` when nothing is left); `None` when there were no directives.
pub fn strip_directives(query: &str) -> Option<Option<String>> {
    let pairs = query.split('&');
    let rest: Vec<&str> = pairs
        .clone()
        .filter(|p| !is_directive(p.split_once('=').map_or(p, |(k, _)| k)))
        .collect();
    if rest.len() == pairs.count() {
        return None;
    }
    Some((!rest.is_empty()).then(|| rest.join("&")))
}

/// How long an origin may hold a blocking reload when the playlist's target duration is not
/// known yet.
const UNKNOWN_TARGET_HOLD: Duration = Duration::from_secs(30);

/// What the playlist a request with directives asks about is known to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playlist {
    /// Not stored (or not a media playlist we could read).
    Unknown,
    /// Live, with its target duration if it gave one.
    Live(Option<Duration>),
    /// Ended (EXT-X-ENDLIST): directives are meaningless.
    Ended,
}

/// How to serve a request with `directives` for `playlist`: `None` to serve the plain
/// playlist (directives on an ended playlist are ignored), or the first-byte timeout for the
/// directed request (a blocking reload may wait three target durations and a second).
pub fn plan(directives: Directives, playlist: Playlist, base: Duration) -> Option<Duration> {
    match playlist {
        Playlist::Ended => None,
        Playlist::Live(target) if directives.is_blocking() => {
            Some(base.max(target.map_or(UNKNOWN_TARGET_HOLD, |t| t * 3 + Duration::from_secs(1))))
        }
        Playlist::Unknown if directives.is_blocking() => Some(base.max(UNKNOWN_TARGET_HOLD)),
        _ => Some(base),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives() {
        let d = Directives::from_query(Some("_HLS_msn=12&_HLS_part=3&x=1"));
        assert_eq!((d.msn, d.part, d.skip), (Some(12), Some(3), false));
        assert!(d.is_blocking());
        assert!(!Directives::from_query(None).any());
    }

    #[test]
    fn plain_playlist_query() {
        assert_eq!(
            strip_directives("_HLS_msn=3&b=1&_HLS_part=0"),
            Some(Some("b=1".into()))
        );
        assert_eq!(strip_directives("_HLS_msn=3"), Some(None));
        assert_eq!(strip_directives("b=1"), None);
    }

    #[test]
    fn plans() {
        let base = Duration::from_secs(10);
        let blocking = Directives::from_query(Some("_HLS_msn=5"));
        let part_only = Directives::from_query(Some("_HLS_skip=YES"));
        assert_eq!(plan(blocking, Playlist::Ended, base), None);
        assert_eq!(
            plan(blocking, Playlist::Live(Some(Duration::from_secs(4))), base),
            Some(Duration::from_secs(13))
        );
        assert_eq!(
            plan(blocking, Playlist::Live(Some(Duration::from_secs(1))), base),
            Some(base)
        );
        assert_eq!(
            plan(blocking, Playlist::Unknown, base),
            Some(Duration::from_secs(30))
        );
        assert_eq!(plan(part_only, Playlist::Unknown, base), Some(base));
        assert_eq!(plan(part_only, Playlist::Ended, base), None);
    }
}
