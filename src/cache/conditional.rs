//! Client preconditions (RFC 9110 §13) and byte ranges (§14), evaluated against the response
//! the edge (or the synthetic origin) is about to send.

use std::time::SystemTime;

use http::header::{
    ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED,
    RANGE,
};
use http::{HeaderMap, Method, StatusCode};

use super::policy::http_date;

/// Outcome of evaluating preconditions.
#[derive(Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Send the full (or ranged) response.
    Proceed,
    NotModified,
    Failed,
}

/// An entity tag: (weak, opaque-tag including quotes).
fn parse_etags(value: &str) -> Vec<(bool, &str)> {
    let mut out = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            break;
        }
        let weak = rest.starts_with("W/");
        if weak {
            rest = &rest[2..];
        }
        if let Some(body) = rest.strip_prefix('"') {
            match body.find('"') {
                Some(end) => {
                    out.push((weak, &rest[..end + 2]));
                    rest = &body[end + 1..];
                }
                None => break,
            }
        } else {
            // Not a valid entity-tag; take the token up to the next comma so lenient
            // clients (unquoted tags) still compare.
            let end = rest.find(',').unwrap_or(rest.len());
            let tok = rest[..end].trim();
            if !tok.is_empty() {
                out.push((weak, tok));
            }
            rest = &rest[end..];
        }
    }
    out
}

fn strip_quotes(s: &str) -> &str {
    s.trim_matches('"')
}

/// Weak comparison (RFC 9110 §8.8.3.2): opaque tags equal, weakness ignored.
fn weak_match(list: &str, current: &str) -> bool {
    let cur = parse_etags(current);
    let Some(&(_, cur_tag)) = cur.first() else {
        return false;
    };
    list.trim() == "*"
        || parse_etags(list)
            .iter()
            .any(|(_, t)| strip_quotes(t) == strip_quotes(cur_tag))
}

/// Strong comparison: both strong and equal.
fn strong_match(list: &str, current: &str) -> bool {
    let cur = parse_etags(current);
    let Some(&(cur_weak, cur_tag)) = cur.first() else {
        return false;
    };
    if list.trim() == "*" {
        return true;
    }
    !cur_weak
        && parse_etags(list)
            .iter()
            .any(|(w, t)| !w && strip_quotes(t) == strip_quotes(cur_tag))
}

fn header_str(h: &HeaderMap, name: http::header::HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in h.get_all(name) {
        let s = v.to_str().ok()?;
        match out.as_mut() {
            Some(o) => {
                o.push_str(", ");
                o.push_str(s);
            }
            None => out = Some(s.to_owned()),
        }
    }
    out
}

/// Evaluates If-Match, If-Unmodified-Since, If-None-Match and If-Modified-Since in the order
/// of RFC 9110 §13.2.2, for a response with `status` and `headers`.
pub fn evaluate(
    method: &Method,
    request: &HeaderMap,
    status: StatusCode,
    headers: &HeaderMap,
) -> Precondition {
    if !status.is_success() || !has_precondition(request) {
        return Precondition::Proceed;
    }
    let etag = headers.get(ETAG).and_then(|v| v.to_str().ok());
    let last_modified: Option<SystemTime> = http_date(headers, LAST_MODIFIED);

    if let Some(im) = header_str(request, IF_MATCH) {
        if !etag.is_some_and(|e| strong_match(&im, e)) {
            return Precondition::Failed;
        }
    } else if let (Some(ius), Some(lm)) = (http_date(request, IF_UNMODIFIED_SINCE), last_modified)
        && lm > ius
    {
        return Precondition::Failed;
    }

    let safe = method == Method::GET || method == Method::HEAD;
    if safe {
        if client_has(request, etag, last_modified) {
            return Precondition::NotModified;
        }
    } else if none_match(request, etag) == Some(true) {
        return Precondition::Failed;
    }
    Precondition::Proceed
}

/// Whether a GET or HEAD gets 304 for the representation `headers` describe (its `ETag` and
/// `Last-Modified`): what [`evaluate`] decides once `If-Match` and `If-Unmodified-Since` have
/// passed, for a server (the synthetic origin) that does not evaluate those.
pub(crate) fn not_modified(request: &HeaderMap, headers: &HeaderMap) -> bool {
    let etag = headers.get(ETAG).and_then(|v| v.to_str().ok());
    client_has(request, etag, http_date(headers, LAST_MODIFIED))
}

/// Whether the request has any of the four precondition headers: most have none, and then
/// nothing of the stored response needs to be read (its dates parsed) to answer it.
fn has_precondition(request: &HeaderMap) -> bool {
    !request.is_empty()
        && (request.contains_key(IF_MATCH)
            || request.contains_key(IF_NONE_MATCH)
            || request.contains_key(IF_MODIFIED_SINCE)
            || request.contains_key(IF_UNMODIFIED_SINCE))
}

/// `If-None-Match`, or without it `If-Modified-Since`, says the client already has the
/// representation (RFC 9110 §13.2.2 steps 3 and 4).
fn client_has(request: &HeaderMap, etag: Option<&str>, last_modified: Option<SystemTime>) -> bool {
    match none_match(request, etag) {
        Some(matched) => matched,
        None => matches!(
            (http_date(request, IF_MODIFIED_SINCE), last_modified),
            (Some(ims), Some(lm)) if lm <= ims
        ),
    }
}

/// Whether `If-None-Match` matches `etag` by weak comparison (`*` matches anything); `None`
/// without the header.
fn none_match(request: &HeaderMap, etag: Option<&str>) -> Option<bool> {
    let inm = header_str(request, IF_NONE_MATCH)?;
    Some(etag.is_some_and(|e| weak_match(&inm, e)) || (inm.trim() == "*"))
}

/// A request's byte range, resolved against a known length.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum RangeRequest {
    /// No range, or one to ignore (send 200 with the whole body).
    Full,
    /// One satisfiable range `[start, end)`.
    Single(u64, u64),
    /// Several satisfiable ranges, coalesced and in request order.
    Multi(Vec<(u64, u64)>),
    /// 416.
    Unsatisfiable,
}

/// One `first-last`, `first-` or `-suffix` spec, unresolved.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum RangeSpec {
    FromTo(u64, u64),
    From(u64),
    Suffix(u64),
}

/// Parses `Range: bytes=...`. `None` for a missing or invalid header (ignored per RFC 9110).
pub fn parse_range(headers: &HeaderMap) -> Option<Vec<RangeSpec>> {
    let mut values = headers.get_all(RANGE).iter();
    let v = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (unit, set) = v.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    for part in set.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (a, b) = part.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        let num = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let spec = match (a.is_empty(), b.is_empty()) {
            (true, false) => RangeSpec::Suffix(num(b)?),
            (false, true) => RangeSpec::From(num(a)?),
            (false, false) => {
                let (x, y) = (num(a)?, num(b)?);
                if y < x {
                    return None;
                }
                RangeSpec::FromTo(x, y)
            }
            (true, true) => return None,
        };
        specs.push(spec);
    }
    if specs.is_empty() || specs.len() > 32 {
        return None;
    }
    Some(specs)
}

/// Resolves range specs against the representation length.
pub fn resolve(specs: &[RangeSpec], len: u64) -> RangeRequest {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for s in specs {
        let r = match *s {
            RangeSpec::FromTo(a, b) if a < len => Some((a, b.min(len - 1) + 1)),
            RangeSpec::From(a) if a < len => Some((a, len)),
            RangeSpec::Suffix(n) if n > 0 && len > 0 => Some((len.saturating_sub(n), len)),
            _ => None,
        };
        if let Some(r) = r {
            out.push(r);
        }
    }
    match out.len() {
        0 => RangeRequest::Unsatisfiable,
        1 => RangeRequest::Single(out[0].0, out[0].1),
        _ => {
            // Coalesce overlapping ranges (RFC 9110 §14.1.1 allows it and it defeats abuse).
            let mut sorted = out.clone();
            sorted.sort();
            let mut merged: Vec<(u64, u64)> = Vec::new();
            for (a, b) in sorted {
                match merged.last_mut() {
                    Some(last) if a <= last.1 => last.1 = last.1.max(b),
                    _ => merged.push((a, b)),
                }
            }
            if merged.len() == 1 {
                RangeRequest::Single(merged[0].0, merged[0].1)
            } else {
                RangeRequest::Multi(merged)
            }
        }
    }
}

/// Whether an `If-Range` precondition lets the range apply (RFC 9110 §13.1.5).
pub fn if_range_allows(request: &HeaderMap, headers: &HeaderMap) -> bool {
    let Some(v) = request.get(IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let v = v.trim();
    if v.starts_with('"') || v.starts_with("W/") {
        return headers
            .get(ETAG)
            .and_then(|e| e.to_str().ok())
            .is_some_and(|e| !v.starts_with("W/") && strong_match(v, e));
    }
    match (
        httpdate::parse_http_date(v).ok(),
        http_date(headers, LAST_MODIFIED),
    ) {
        (Some(d), Some(lm)) => lm == d,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// The precondition of a GET with `req` headers against a 200 with `resp` headers.
    fn get_ok(req: &[(&str, &str)], resp: &HeaderMap) -> Precondition {
        evaluate(&Method::GET, &h(req), StatusCode::OK, resp)
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn if_none_match() {
        let resp = h(&[("etag", "\"abc\"")]);
        assert_eq!(
            get_ok(&[("if-none-match", "\"abc\"")], &resp),
            Precondition::NotModified
        );
        assert_eq!(
            get_ok(&[("if-none-match", "W/\"abc\"")], &resp),
            Precondition::NotModified
        );
        assert_eq!(
            get_ok(&[("if-none-match", "\"x\", \"abc\"")], &resp),
            Precondition::NotModified
        );
        assert_eq!(
            get_ok(&[("if-none-match", "\"x\"")], &resp),
            Precondition::Proceed
        );
        assert_eq!(
            get_ok(&[("if-none-match", "*")], &resp),
            Precondition::NotModified
        );
    }

    #[test]
    fn not_modified_for_a_server_without_if_match() {
        let resp = h(&[
            ("etag", "\"abc\""),
            ("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT"),
        ]);
        assert!(not_modified(&h(&[("if-none-match", "W/\"abc\"")]), &resp));
        assert!(!not_modified(&h(&[("if-none-match", "\"x\"")]), &resp));
        assert!(not_modified(
            &h(&[("if-modified-since", "Tue, 01 Jan 2030 00:00:00 GMT")]),
            &resp
        ));
        // If-None-Match decides alone when it is there; If-Match is not looked at.
        let both = h(&[
            ("if-none-match", "\"x\""),
            ("if-modified-since", "Tue, 01 Jan 2030 00:00:00 GMT"),
            ("if-match", "\"other\""),
        ]);
        assert!(!not_modified(&both, &resp));
        assert!(!not_modified(&h(&[]), &resp));
    }

    #[test]
    fn if_modified_since_and_unmodified() {
        let lm = "Tue, 01 Jan 2030 00:00:00 GMT";
        let resp = h(&[("last-modified", lm)]);
        let get = Method::GET;
        assert_eq!(
            get_ok(&[("if-modified-since", lm)], &resp),
            Precondition::NotModified
        );
        assert_eq!(
            get_ok(
                &[("if-modified-since", "Mon, 31 Dec 2029 00:00:00 GMT")],
                &resp
            ),
            Precondition::Proceed
        );
        assert_eq!(
            get_ok(
                &[("if-unmodified-since", "Mon, 31 Dec 2029 00:00:00 GMT")],
                &resp
            ),
            Precondition::Failed
        );
        // If-None-Match takes precedence over If-Modified-Since.
        let both = h(&[("if-none-match", "\"zzz\""), ("if-modified-since", lm)]);
        let resp2 = h(&[("last-modified", lm), ("etag", "\"abc\"")]);
        assert_eq!(
            evaluate(&get, &both, StatusCode::OK, &resp2),
            Precondition::Proceed
        );
    }

    #[test]
    fn if_match_is_strong() {
        assert_eq!(
            get_ok(&[("if-match", "\"abc\"")], &h(&[("etag", "\"abc\"")])),
            Precondition::Proceed
        );
        assert_eq!(
            get_ok(&[("if-match", "\"abc\"")], &h(&[("etag", "W/\"abc\"")])),
            Precondition::Failed
        );
        assert_eq!(
            get_ok(&[("if-match", "\"x\"")], &h(&[("etag", "\"abc\"")])),
            Precondition::Failed
        );
        assert_eq!(
            get_ok(&[("if-match", "*")], &h(&[("etag", "\"abc\"")])),
            Precondition::Proceed
        );
    }

    #[test]
    fn ranges() {
        let p = |v: &str| parse_range(&h(&[("range", v)]));
        let r = |v: &str| resolve(&p(v).unwrap(), 100);
        assert_eq!(r("bytes=0-9"), RangeRequest::Single(0, 10));
        assert_eq!(r("bytes=90-"), RangeRequest::Single(90, 100));
        assert_eq!(r("bytes=-10"), RangeRequest::Single(90, 100));
        assert_eq!(r("bytes=-1000"), RangeRequest::Single(0, 100));
        assert_eq!(r("bytes=50-1000"), RangeRequest::Single(50, 100));
        assert_eq!(r("bytes=100-"), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=-0"), RangeRequest::Unsatisfiable);
        assert_eq!(
            r("bytes=0-1,5-6"),
            RangeRequest::Multi(vec![(0, 2), (5, 7)])
        );
        assert_eq!(r("bytes=0-5,3-9"), RangeRequest::Single(0, 10));
        assert_eq!(p("bytes=5-1"), None);
        assert_eq!(p("items=0-1"), None);
        assert_eq!(p("bytes=a-b"), None);
        assert_eq!(p("bytes="), None);
    }

    #[test]
    fn if_range() {
        let resp = h(&[
            ("etag", "\"v1\""),
            ("last-modified", "Tue, 01 Jan 2030 00:00:00 GMT"),
        ]);
        assert!(if_range_allows(&h(&[]), &resp));
        assert!(if_range_allows(&h(&[("if-range", "\"v1\"")]), &resp));
        assert!(!if_range_allows(&h(&[("if-range", "\"v0\"")]), &resp));
        assert!(if_range_allows(
            &h(&[("if-range", "Tue, 01 Jan 2030 00:00:00 GMT")]),
            &resp
        ));
        assert!(!if_range_allows(
            &h(&[("if-range", "Mon, 31 Dec 2029 00:00:00 GMT")]),
            &resp
        ));
    }
}
