//! The canonical request target: one form of a request's host, path and query, computed once at
//! admission. The signature check, key rules, the cache key, the origin ring and the request sent
//! to the origin all use this form, so no check ever sees another path than the origin does.
//!
//! Rules (RFC 3986 §6.2.2 plus what origins are known to disagree on):
//!
//! - Percent-escapes of characters that mean nothing special in a path (unreserved, sub-delims
//!   except `;`, `:` and `@`) are decoded: `/%76od/` is `/vod/`. Other escapes stay, with
//!   upper-case hex (`%c3%a9` → `%C3%A9`); characters that must not appear raw (`"`, `{`, `|`,
//!   non-ASCII, ...) are escaped.
//! - Dot segments, raw or escaped (`.`, `..`, `%2e`, `.%2E`), are resolved; a path that climbs
//!   above `/` is refused. Empty segments are merged (`//a` → `/a`).
//! - Refused with 400: `\` and `%5C` (origins on Windows and the WHATWG URL parser read it as
//!   `/`), `;` (path parameters, which Java origins strip), `%00` and every other escaped control
//!   character, `%2F` (an escaped `/` that some origins decode into a separator), `%25` followed
//!   by two hex digits (double encoding), malformed escapes, and escapes that do not decode to
//!   UTF-8 (`%C0%AE`, an overlong `.`).
//! - The query keeps its meaning: escapes of unreserved characters are decoded, others
//!   upper-cased, a stray `%` becomes `%25`, and characters a URL parser would escape are escaped.
//! - The host is one valid name or address, lower-cased, without a trailing dot and without the
//!   listener's default port.
//!
//! A canonical path and query are a fixed point of the WHATWG URL parser that builds the origin
//! URL (tested below), so what is checked is byte for byte what the origin receives.

use std::fmt;
use std::net::Ipv6Addr;

use http::header::HOST;

/// Why a request target was refused (always a client error: 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the request target must be a path starting with /")]
    NotAPath,
    #[error("a backslash in the path")]
    Backslash,
    #[error("a ';' path parameter")]
    PathParameter,
    #[error("an escaped control character in the path")]
    ControlCharacter,
    #[error("an escaped '/' (%2F) in the path")]
    EncodedSlash,
    #[error("double percent-encoding in the path")]
    DoubleEncoding,
    #[error("a malformed percent-escape in the path")]
    BadEscape,
    #[error("the path does not decode to UTF-8")]
    NotUtf8,
    #[error("the path climbs above the root")]
    AboveRoot,
    #[error("more than one Host header")]
    TwoHosts,
    #[error("no Host header")]
    NoHost,
    #[error("an invalid Host: {0:?}")]
    BadHost(String),
    #[error("the Host header {header:?} does not match the request target's {target:?}")]
    HostMismatch { header: String, target: String },
}

/// A request's canonical host, path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `name[:port]`, lower case; `None` only for an HTTP/1.0 request without a Host.
    pub host: Option<String>,
    /// Starts with `/`. May still contain `%2F` inside a signed-URL token segment until the
    /// signature phase removes it; [`Target::check_no_encoded_slash`] then refuses any left.
    pub path: String,
    /// Without the `?`; `None` when empty.
    pub query: Option<String>,
}

impl Target {
    /// The canonical target of a request received on a listener with or without TLS.
    pub fn from_request(parts: &http::request::Parts, tls: bool) -> Result<Target, TargetError> {
        let host = request_host(parts, if tls { 443 } else { 80 })?;
        let path = parts.uri.path();
        if !path.starts_with('/') {
            return Err(TargetError::NotAPath);
        }
        Ok(Target {
            host,
            path: canonical_path(path)?,
            query: parts
                .uri
                .query()
                .map(canonical_query)
                .filter(|q| !q.is_empty()),
        })
    }

    /// The canonical target of an origin-relative reference `path[?query]` (a resolved
    /// playlist entry, a CMCD `nor`, a `Location`), on the same host as the request it came from.
    pub fn from_reference(host: Option<&str>, reference: &str) -> Result<Target, TargetError> {
        let (path, query) = match reference.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (reference, None),
        };
        if !path.starts_with('/') {
            return Err(TargetError::NotAPath);
        }
        Ok(Target {
            host: host.map(str::to_owned),
            path: canonical_path(path)?,
            query: query.map(canonical_query).filter(|q| !q.is_empty()),
        })
    }

    /// Refuses an escaped `/` (run after a signed-URL token segment, the one place it may
    /// appear, has been removed).
    pub fn check_no_encoded_slash(&self) -> Result<(), TargetError> {
        if self.path.contains("%2F") {
            return Err(TargetError::EncodedSlash);
        }
        Ok(())
    }

    /// The host name without its port.
    pub fn host_name(&self) -> Option<&str> {
        self.host.as_deref().map(host_name)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

/// The name part of a canonical `name[:port]`.
pub fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.split_once(':').map_or(host, |(name, _)| name)
}

/// Exactly one valid host: the Host header, the absolute-form target's authority (HTTP/1.1) or
/// `:authority` (HTTP/2); when both are given they must agree.
fn request_host(
    parts: &http::request::Parts,
    default_port: u16,
) -> Result<Option<String>, TargetError> {
    let mut headers = parts.headers.get_all(HOST).iter();
    let header = headers.next();
    if headers.next().is_some() {
        return Err(TargetError::TwoHosts);
    }
    let header = header
        .map(|v| canonical_host(v.as_bytes(), default_port))
        .transpose()?;
    let authority = parts
        .uri
        .authority()
        .map(|a| canonical_host(a.as_str().as_bytes(), default_port))
        .transpose()?;
    match (authority, header) {
        (Some(target), Some(header)) if target != header => {
            Err(TargetError::HostMismatch { header, target })
        }
        (Some(h), _) | (None, Some(h)) => Ok(Some(h)),
        (None, None) if parts.version <= http::Version::HTTP_10 => Ok(None),
        (None, None) => Err(TargetError::NoHost),
    }
}

/// A Host value as `name[:port]`: a DNS name (letters, digits, `-`, `_`, dots), an IPv4 address
/// or a bracketed IPv6 address, lower case, one trailing dot removed, the default port dropped.
pub fn canonical_host(raw: &[u8], default_port: u16) -> Result<String, TargetError> {
    let bad = || TargetError::BadHost(String::from_utf8_lossy(raw).into_owned());
    let s = std::str::from_utf8(raw).map_err(|_| bad())?;
    let (name, port) = if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        addr.parse::<Ipv6Addr>().map_err(|_| bad())?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (format!("[{}]", addr.to_ascii_lowercase()), port)
    } else {
        let (name, port) = match s.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (s, None),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if !dns_name(name) {
            return Err(bad());
        }
        // Room for the port too: one allocation for the whole host.
        let mut lower = String::with_capacity(name.len() + 6);
        lower.push_str(name);
        lower.make_ascii_lowercase();
        (lower, port)
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => {
            if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let n: u32 = p.parse().map_err(|_| bad())?;
            if n == 0 || n > 65535 {
                return Err(bad());
            }
            (n != u32::from(default_port)).then_some(n)
        }
    };
    let mut name = name;
    if let Some(p) = port {
        name.push(':');
        name.push_str(itoa::Buffer::new().format(p));
    }
    Ok(name)
}

/// A DNS name (or IPv4 address): 1 to 253 bytes of labels of 1 to 63 letters, digits, `-`
/// or `_`, separated by single dots. One pass over the bytes (on every request).
fn dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let mut label = 0;
    for &b in name.as_bytes() {
        if b == b'.' {
            if label == 0 {
                return false;
            }
            label = 0;
        } else if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            label += 1;
            if label > 63 {
                return false;
            }
        } else {
            return false;
        }
    }
    label != 0
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The escape `%XX` at `i`, if well formed.
fn escape_at(b: &[u8], i: usize) -> Option<u8> {
    let hi = hex_value(*b.get(i + 1)?)?;
    let lo = hex_value(*b.get(i + 2)?)?;
    Some(hi << 4 | lo)
}

fn push_escaped(out: &mut String, v: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(v >> 4)] as char);
    out.push(HEX[usize::from(v & 15)] as char);
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters that stand for themselves in a canonical path segment: RFC 3986 `pchar` without
/// `;` (refused raw, kept escaped).
fn is_path_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
}

/// One raw path segment (between two `/`) in canonical form.
fn canonical_segment(raw: &[u8], out: &mut String) -> Result<(), TargetError> {
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let v = escape_at(raw, i).ok_or(TargetError::BadEscape)?;
            match v {
                0x00..=0x1F | 0x7F => return Err(TargetError::ControlCharacter),
                b'\\' => return Err(TargetError::Backslash),
                b'%' if escape_at(raw, i + 2).is_some() => {
                    return Err(TargetError::DoubleEncoding);
                }
                v if is_path_char(v) => out.push(v as char),
                v => push_escaped(out, v),
            }
            i += 3;
            continue;
        }
        match b {
            b'\\' => return Err(TargetError::Backslash),
            b';' => return Err(TargetError::PathParameter),
            0x00..=0x1F | 0x7F => return Err(TargetError::ControlCharacter),
            b if is_path_char(b) => out.push(b as char),
            b => push_escaped(out, b),
        }
        i += 1;
    }
    Ok(())
}

/// The canonical form of an absolute path (see the module docs).
pub fn canonical_path(raw: &str) -> Result<String, TargetError> {
    if is_plain_path(raw.as_bytes()) {
        return Ok(raw.to_owned());
    }
    let raw = raw.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(TargetError::NotAPath);
    }
    let raw_segments: Vec<&[u8]> = raw[1..].split(|&b| b == b'/').collect();
    let last = raw_segments.len() - 1;
    let mut segments: Vec<String> = Vec::with_capacity(raw_segments.len());
    let mut trailing_slash = false;
    for (i, raw_segment) in raw_segments.iter().enumerate() {
        let mut seg = String::with_capacity(raw_segment.len());
        canonical_segment(raw_segment, &mut seg)?;
        trailing_slash = i == last && matches!(seg.as_str(), "" | "." | "..");
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(TargetError::AboveRoot)?;
            }
            _ => segments.push(seg),
        }
    }
    let mut path = String::with_capacity(raw.len());
    for s in &segments {
        path.push('/');
        path.push_str(s);
    }
    if trailing_slash || segments.is_empty() {
        path.push('/');
    }
    if !decodes_to_utf8(&path) {
        return Err(TargetError::NotUtf8);
    }
    Ok(path)
}

/// Already canonical (most requests): no escapes, only characters that stand for themselves,
/// no empty segment but a last one (a trailing slash), no dot segments. One pass.
fn is_plain_path(b: &[u8]) -> bool {
    let Some((&b'/', rest)) = b.split_first() else {
        return false;
    };
    // The current segment's length, and how many of its bytes are dots.
    let (mut len, mut dots) = (0, 0);
    let dot_segment = |len: usize, dots: usize| len == dots && (1..=2).contains(&len);
    for &c in rest {
        if c == b'/' {
            if len == 0 || dot_segment(len, dots) {
                return false;
            }
            (len, dots) = (0, 0);
        } else if is_path_char(c) {
            len += 1;
            dots += usize::from(c == b'.');
        } else {
            return false;
        }
    }
    !dot_segment(len, dots)
}

/// Whether every escape of a canonical string decodes to valid UTF-8.
fn decodes_to_utf8(s: &str) -> bool {
    if !s.contains('%') {
        return true;
    }
    let b = s.as_bytes();
    let mut bytes = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match escape_at(b, i) {
            Some(v) if b[i] == b'%' => {
                bytes.push(v);
                i += 3;
            }
            _ => {
                bytes.push(b[i]);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&bytes).is_ok()
}

/// Characters that stand for themselves in a canonical query: RFC 3986 `query` characters,
/// without `'` (which the WHATWG URL parser escapes in http(s) queries).
fn is_query_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'?'
        )
}

/// The canonical form of a query (lenient: queries in the wild are messy, and no check reads a
/// query differently from the origin once its escapes are in one form).
pub fn canonical_query(raw: &str) -> String {
    let b = raw.as_bytes();
    if b.iter().all(|&c| is_query_char(c)) {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match escape_at(b, i) {
                Some(v) if is_unreserved(v) => out.push(v as char),
                Some(v) => push_escaped(&mut out, v),
                None => {
                    out.push_str("%25");
                    i += 1;
                    continue;
                }
            }
            i += 3;
            continue;
        }
        if is_query_char(b[i]) {
            out.push(b[i] as char);
        } else {
            push_escaped(&mut out, b[i]);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Result<String, TargetError> {
        canonical_path(p)
    }

    #[test]
    fn unreserved_escapes_decode_and_others_are_upper_case() {
        assert_eq!(
            path("/%76od/hls/master.m3u8").unwrap(),
            "/vod/hls/master.m3u8"
        );
        assert_eq!(path("/a%2Db%7e%2b").unwrap(), "/a-b~+");
        assert_eq!(path("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(path("/caf\u{e9}").unwrap(), "/caf%C3%A9");
        assert_eq!(path("/a%3Fb%23c").unwrap(), "/a%3Fb%23c");
        assert_eq!(path("/a%3bb").unwrap(), "/a%3Bb");
        assert_eq!(path("/a\"b{c}|d^e").unwrap(), "/a%22b%7Bc%7D%7Cd%5Ee");
        assert_eq!(path("/100%25").unwrap(), "/100%25");
        assert_eq!(path("/").unwrap(), "/");
    }

    #[test]
    fn dot_segments_raw_or_escaped_are_resolved() {
        assert_eq!(path("/a/../b").unwrap(), "/b");
        assert_eq!(path("/a/./b/").unwrap(), "/a/b/");
        assert_eq!(path("/a/b/..").unwrap(), "/a/");
        assert_eq!(path("/secure/a/%2e%2e/b/x.ts").unwrap(), "/secure/b/x.ts");
        assert_eq!(path("/secure/a/.%2E/b/x.ts").unwrap(), "/secure/b/x.ts");
        assert_eq!(path("/a/%2e/b").unwrap(), "/a/b");
        assert_eq!(path("/a/.hidden").unwrap(), "/a/.hidden");
        assert_eq!(path("/a/...").unwrap(), "/a/...");
        assert_eq!(path("/../etc/passwd"), Err(TargetError::AboveRoot));
        assert_eq!(path("/a/%2e%2e/%2e%2e/x"), Err(TargetError::AboveRoot));
    }

    #[test]
    fn empty_segments_merge() {
        assert_eq!(path("//secure/a.ts").unwrap(), "/secure/a.ts");
        assert_eq!(path("/a//b///c/").unwrap(), "/a/b/c/");
        assert_eq!(path("//").unwrap(), "/");
    }

    #[test]
    fn ambiguous_forms_are_refused() {
        assert_eq!(path("/secure/a/..\\b/x.ts"), Err(TargetError::Backslash));
        assert_eq!(path("/a%5cb"), Err(TargetError::Backslash));
        assert_eq!(path("/secure;x/a.ts"), Err(TargetError::PathParameter));
        assert_eq!(path("/secure%00/a.ts"), Err(TargetError::ControlCharacter));
        assert_eq!(path("/a%0Ab"), Err(TargetError::ControlCharacter));
        assert_eq!(path("/a%7f"), Err(TargetError::ControlCharacter));
        assert_eq!(path("/a%252Fb"), Err(TargetError::DoubleEncoding));
        assert_eq!(path("/a%zz"), Err(TargetError::BadEscape));
        assert_eq!(path("/a%2"), Err(TargetError::BadEscape));
        assert_eq!(path("/a/%c0%ae%c0%ae/b"), Err(TargetError::NotUtf8));
        assert_eq!(path("a/b"), Err(TargetError::NotAPath));
        // An escaped slash survives canonicalisation (a path token may hold one) and is refused
        // by the check that runs after the signature phase.
        let t = Target::from_reference(None, "/vod%2fhls/master.m3u8").unwrap();
        assert_eq!(t.path, "/vod%2Fhls/master.m3u8");
        assert_eq!(t.check_no_encoded_slash(), Err(TargetError::EncodedSlash));
        let t = Target::from_reference(None, "/%2fsecure/a.ts").unwrap();
        assert_eq!(t.check_no_encoded_slash(), Err(TargetError::EncodedSlash));
    }

    #[test]
    fn the_fast_path_agrees_with_the_full_one() {
        for p in [
            "/",
            "/a",
            "/a/",
            "/a/b.ts",
            "//a",
            "/a//b",
            "/a/",
            "/./a",
            "/a/.",
            "/a/..",
            "/.a/b..",
            "/a/.../b",
            "/a:b@c!$&'()*+,=/x-y_z~",
        ] {
            let plain = is_plain_path(p.as_bytes());
            // Force the full path by spelling one character as an escape.
            let slow = canonical_path(&format!("{p}%41")).map(|s| s[..s.len() - 1].to_owned());
            if plain {
                assert_eq!(canonical_path(p).as_deref(), Ok(p), "{p}");
                assert_eq!(slow.as_deref(), Ok(p), "{p}");
            }
        }
        assert!(!is_plain_path(b"//a"));
        assert!(!is_plain_path(b"/a//b"));
        assert!(!is_plain_path(b"/./a"));
        assert!(!is_plain_path(b"/a/.."));
        assert!(is_plain_path(b"/a/"));
        assert!(is_plain_path(b"/"));
    }

    #[test]
    fn canonical_paths_are_idempotent() {
        for p in [
            "/%76od/a%2Db/caf%c3%a9/x%3F",
            "/a//./b/../c/",
            "/a\"b{c}|d^e[f]`g",
            "/%7e%21%24%26%27%28%29%2a%2b%2c%3d%3a%40",
        ] {
            let once = path(p).unwrap();
            assert_eq!(path(&once).unwrap(), once, "{p}");
        }
    }

    #[test]
    fn queries_keep_their_meaning_in_one_form() {
        assert_eq!(canonical_query("tok%65n=1&a=%2f"), "token=1&a=%2F");
        assert_eq!(canonical_query("a=100%&b=%zz"), "a=100%25&b=%25zz");
        assert_eq!(
            canonical_query("a='x'&b=\"y\"&c=<>"),
            "a=%27x%27&b=%22y%22&c=%3C%3E"
        );
        assert_eq!(canonical_query("a=b+c&d=/e?f"), "a=b+c&d=/e?f");
        let q = canonical_query("x=%e9%41'");
        assert_eq!(canonical_query(&q), q);
    }

    /// What is checked is what the origin receives: the URL parser that builds the origin
    /// request leaves a canonical path and query exactly as they are.
    #[test]
    fn canonical_targets_are_a_fixed_point_of_the_url_parser() {
        for raw in [
            "/%76od/a%2Db/caf%c3%a9/x%3F",
            "/a/%2e%2e/b",
            "/a\"b{c}|d^e[f]`g/h'i",
            "/%7e%21%24%26%27%28%29%2a%2b%2c%3d%3a%40/%3B%23%25",
            "/x?q='a b'&c=%2e&d=\\|^`{}",
        ] {
            let t = Target::from_reference(None, raw).unwrap();
            let url = reqwest::Url::parse(&format!("http://origin.example:8080/base{t}")).unwrap();
            assert_eq!(url.path(), format!("/base{}", t.path), "{raw}");
            assert_eq!(url.query(), t.query.as_deref(), "{raw}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(canonical_host(b"Good.Example", 80).unwrap(), "good.example");
        assert_eq!(
            canonical_host(b"good.example.:80", 80).unwrap(),
            "good.example"
        );
        assert_eq!(
            canonical_host(b"good.example:443", 80).unwrap(),
            "good.example:443"
        );
        assert_eq!(
            canonical_host(b"good.example:", 80).unwrap(),
            "good.example"
        );
        assert_eq!(
            canonical_host(b"127.0.0.1:8080", 80).unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(canonical_host(b"[::1]:443", 443).unwrap(), "[::1]");
        assert_eq!(
            canonical_host(b"[FE80::1]:8443", 443).unwrap(),
            "[fe80::1]:8443"
        );
        for bad in [
            &b""[..],
            b"evil.example/x",
            b"user@good.example",
            b"good example",
            b"good.example:99999",
            b"good.example:0",
            b"good.example:80:80",
            b"a..b",
            b"[::1",
            b"[zz]:80",
            b"good.example\\x",
            b"\xff",
        ] {
            assert!(
                canonical_host(bad, 80).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(host_name("good.example:8080"), "good.example");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
    }

    fn parts(target: &str, version: http::Version, hosts: &[&str]) -> http::request::Parts {
        let mut b = http::Request::builder().uri(target).version(version);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn exactly_one_valid_host() {
        let v11 = http::Version::HTTP_11;
        let t = Target::from_request(&parts("/a", v11, &["Good.example"]), false).unwrap();
        assert_eq!(t.host.as_deref(), Some("good.example"));
        assert_eq!(
            Target::from_request(&parts("/a", v11, &["good.example", "evil.example"]), false),
            Err(TargetError::TwoHosts)
        );
        assert_eq!(
            Target::from_request(&parts("/a", v11, &[]), false),
            Err(TargetError::NoHost)
        );
        assert!(Target::from_request(&parts("/a", http::Version::HTTP_10, &[]), false).is_ok());
        assert!(matches!(
            Target::from_request(&parts("/a", v11, &["evil example"]), false),
            Err(TargetError::BadHost(_))
        ));
        // Absolute form: the target's authority and the Host header must agree.
        assert!(matches!(
            Target::from_request(
                &parts("http://good.example/a", v11, &["evil.example"]),
                false
            ),
            Err(TargetError::HostMismatch { .. })
        ));
        let t = Target::from_request(
            &parts("http://GOOD.example:80/a", v11, &["good.example"]),
            false,
        )
        .unwrap();
        assert_eq!(t.host.as_deref(), Some("good.example"));
        assert_eq!(t.path, "/a");
    }
}
