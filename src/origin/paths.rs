//! Request paths: which view (`/vod`, `/live`, `/ll`) and which file key, with traversal ruled
//! out; the names of loop directories and of parts.
//!
//! Files are only ever looked up by key in the in-memory table, so a path
//! cannot reach outside the served directory anyway; refusing `.`/`..`
//! segments (also percent-encoded), backslashes and NULs here keeps it that
//! way even if lookups change, and gives clients a clear 400.

use crate::percent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    Vod,
    Live,
    /// `/ll/`: live, with LL-HLS media playlists and their parts.
    LowLatency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Malformed or unsafe: 400.
    BadRequest,
    /// Well-formed but nothing can live there: 404.
    NotFound,
}

/// Splits a request path (still percent-encoded, without query) into the
/// view and the file key (`hls/master.m3u8`).
pub(crate) fn parse(path: &str) -> Result<(View, String), Rejection> {
    let rest = path.strip_prefix('/').ok_or(Rejection::BadRequest)?;
    let decoded = percent::decode_strict(rest).ok_or(Rejection::BadRequest)?;
    if decoded.contains(['\\', '\0']) {
        return Err(Rejection::BadRequest);
    }
    let mut segments = decoded.split('/');
    let view = match segments.next() {
        Some("vod") => View::Vod,
        Some("live") => View::Live,
        Some("ll") => View::LowLatency,
        _ => return Err(Rejection::NotFound),
    };
    let mut key = String::with_capacity(decoded.len());
    for segment in segments {
        match segment {
            "." | ".." => return Err(Rejection::BadRequest),
            "" => return Err(Rejection::NotFound),
            s => {
                if !key.is_empty() {
                    key.push('/');
                }
                key.push_str(s);
            }
        }
    }
    if key.is_empty() {
        return Err(Rejection::NotFound);
    }
    Ok((view, key))
}

/// The key a URI written in a playlist or MPD at `dir` (a key prefix, `""` or
/// `"a/b/"`) refers to, if it is a plain relative path: no scheme, query,
/// fragment, absolute path or dot segments, so the join is just a
/// concatenation. `None` for anything else.
pub(crate) fn join_plain(dir: &str, uri: &str) -> Option<String> {
    if uri.is_empty()
        || uri.contains("://")
        || uri.contains(['?', '#', '\\'])
        || uri.starts_with('/')
    {
        return None;
    }
    let decoded = percent::decode_strict(uri)?;
    if decoded.contains('\0') || decoded.split('/').any(|s| matches!(s, "" | "." | "..")) {
        return None;
    }
    Some(format!("{dir}{decoded}"))
}

/// `a/loop-7/b.m4s` → (`a/b.m4s`, 7): the loop-directory form live HLS
/// playlists use for per-loop segment URLs.
pub(crate) fn split_loop(key: &str) -> Option<(String, u64)> {
    let mut parts: Vec<&str> = key.split('/').collect();
    let at = parts.iter().rposition(|p| {
        p.strip_prefix("loop-").is_some_and(|n| {
            !n.is_empty() && n.len() <= 19 && n.bytes().all(|c| c.is_ascii_digit())
        })
    })?;
    if at + 1 == parts.len() {
        return None;
    }
    let n = parts.remove(at).strip_prefix("loop-")?.parse().ok()?;
    Some((parts.join("/"), n))
}

/// `a/seg.m4s` → `a/seg.p2.m4s`: the name of part `n` of a segment, the index put before the
/// extension so the part keeps it (a name without one gets `.m4s`).
pub(crate) fn part_name(segment: &str, n: u64) -> String {
    let (stem, ext) = part_stem(segment);
    format!("{stem}.p{n}{ext}")
}

/// (stem, extension) that the names of a segment's parts are made of: `a/seg.m4s` →
/// (`a/seg`, `.m4s`).
pub(crate) fn part_stem(segment: &str) -> (&str, &str) {
    let name = segment.rfind('/').map_or(0, |i| i + 1);
    match segment[name..].rfind('.') {
        Some(dot) if dot > 0 => segment.split_at(name + dot),
        _ => (segment, ".m4s"),
    }
}

/// `a/seg.p2.m4s` → (`a/seg`, 2, `.m4s`): a part name taken apart, for [`part_stem`] to match.
pub(crate) fn split_part(key: &str) -> Option<(&str, u64, &str)> {
    let name = key.rfind('/').map_or(0, |i| i + 1);
    let (rest, ext) = key.split_at(name + key[name..].rfind('.')?);
    let at = rest[name..].rfind(".p")? + name;
    let digits = &rest[at + 2..];
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((&rest[..at], digits.parse().ok()?, ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_and_keys() {
        assert_eq!(
            parse("/vod/hls/master.m3u8"),
            Ok((View::Vod, "hls/master.m3u8".into()))
        );
        assert_eq!(
            parse("/live/a/b/c.m4s"),
            Ok((View::Live, "a/b/c.m4s".into()))
        );
        assert_eq!(
            parse("/vod/with%20space.ts"),
            Ok((View::Vod, "with space.ts".into()))
        );
        assert_eq!(
            parse("/vod/caf%C3%A9.ts"),
            Ok((View::Vod, "café.ts".into()))
        );
    }

    #[test]
    fn unknown_places_are_not_found() {
        for p in [
            "/",
            "/vod",
            "/vod/",
            "/live/",
            "/other/x.ts",
            "/VOD/x.ts",
            "/vod//x.ts",
            "/vod/x/",
            "/vodx/a",
        ] {
            assert_eq!(parse(p), Err(Rejection::NotFound), "{p}");
        }
    }

    #[test]
    fn traversal_is_refused() {
        for p in [
            "/vod/../etc/passwd",
            "/vod/a/../../etc/passwd",
            "/vod/./a",
            "/vod/%2e%2e/etc/passwd",
            "/vod/%2E%2E%2Fetc%2Fpasswd",
            "/vod/a%2f..%2f..%2fsecret",
            "/live/..",
            "/vod/..%5c..%5cwin.ini",
            "/vod/a\\..\\b",
            "/vod/a%00.ts",
            "/vod/%zz",
            "/vod/%4",
            "/vod/%",
            "/vod/%ff%fe",
            "vod/x.ts",
            "",
        ] {
            assert_eq!(parse(p), Err(Rejection::BadRequest), "{p}");
        }
        // Harmless look-alikes stay files.
        assert_eq!(
            parse("/vod/..a/b...ts"),
            Ok((View::Vod, "..a/b...ts".into()))
        );
    }

    #[test]
    fn plain_relative_uris() {
        assert_eq!(
            join_plain("hls/", "seg-0-001.m4s").as_deref(),
            Some("hls/seg-0-001.m4s")
        );
        assert_eq!(join_plain("", "v/a%20b.m4s").as_deref(), Some("v/a b.m4s"));
        for uri in [
            "",
            "/abs.ts",
            "http://x/a.ts",
            "a.ts?x=1",
            "a.ts#f",
            "../a.ts",
            "./a.ts",
            "a//b.ts",
            "a\\b",
            "%2e%2e/a",
            "%zz",
        ] {
            assert_eq!(join_plain("d/", uri), None, "{uri}");
        }
    }

    #[test]
    fn part_names() {
        assert_eq!(
            part_name("loop-3/seg-0-003.m4s", 2),
            "loop-3/seg-0-003.p2.m4s"
        );
        assert_eq!(part_name("a.b/seg", 0), "a.b/seg.p0.m4s");
        assert_eq!(part_name(".hidden", 1), ".hidden.p1.m4s");
        for seg in ["hls/seg-0-003.m4s", "a.b/seg", "x/y.z.mp4", ".hidden"] {
            for n in [0, 7, 12345] {
                let name = part_name(seg, n);
                let (stem, got, ext) = split_part(&name).unwrap();
                assert_eq!(((stem, ext), got), (part_stem(seg), n), "{seg} {n}");
            }
        }
        for key in [
            "seg.m4s",
            "seg.p.m4s",
            "seg.px.m4s",
            "seg.p1",
            "a.p1/seg.m4s",
            "seg.p-1.m4s",
        ] {
            assert_eq!(split_part(key), None, "{key}");
        }
        assert_eq!(
            parse("/ll/hls/a.m3u8"),
            Ok((View::LowLatency, "hls/a.m3u8".into()))
        );
    }

    #[test]
    fn loop_directories() {
        assert_eq!(
            split_loop("hls/loop-7/seg.m4s"),
            Some(("hls/seg.m4s".into(), 7))
        );
        assert_eq!(split_loop("loop-0/seg.m4s"), Some(("seg.m4s".into(), 0)));
        assert_eq!(
            split_loop("loop-1/loop-2/s.m4s"),
            Some(("loop-1/s.m4s".into(), 2))
        );
        for key in [
            "hls/seg.m4s",
            "loop-/s",
            "loop-x/s",
            "hls/loop-3",
            "loop-99999999999999999999/s",
            "loop-+1/s",
        ] {
            assert_eq!(split_loop(key), None, "{key}");
        }
    }
}
