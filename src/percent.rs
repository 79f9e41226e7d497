//! Percent-decoding of URL components (RFC 3986 §2.1): lenient for the edge, where an invalid
//! escape stays as written instead of failing the request, and strict for the synthetic origin,
//! whose paths name files.

/// Decodes `%XX` escapes; invalid ones are kept literally, invalid UTF-8 is replaced.
pub fn decode(s: &str) -> String {
    decode_lenient(s, false)
}

/// `decode` for `application/x-www-form-urlencoded` values, where `+` is a space.
pub fn decode_form(s: &str) -> String {
    decode_lenient(s, true)
}

/// Decodes `%XX` escapes exactly: `None` for an invalid escape or bytes that are not UTF-8,
/// where a guess would name another file than the one asked for.
pub(crate) fn decode_strict(s: &str) -> Option<String> {
    String::from_utf8(decode_bytes(s, false, true)?).ok()
}

fn decode_lenient(s: &str, plus_is_space: bool) -> String {
    if !(s.contains('%') || plus_is_space && s.contains('+')) {
        return s.to_owned();
    }
    // Lenient decoding keeps what it cannot read, so it always has bytes.
    let bytes = decode_bytes(s, plus_is_space, false).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The bytes `s` stands for. An invalid escape (`%` not followed by two hex digits) is kept as
/// written, or refused with `None` when `strict`.
fn decode_bytes(s: &str, plus_is_space: bool, strict: bool) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => match escape_at(b, i) {
                Some(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                None if strict => return None,
                None => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}

/// The byte the escape `%XX` at `i` stands for, if it is one.
fn escape_at(b: &[u8], i: usize) -> Option<u8> {
    let digit = |at: usize| char::from(*b.get(at)?).to_digit(16);
    u8::try_from(digit(i + 1)? << 4 | digit(i + 2)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_keeps_invalid_escapes() {
        assert_eq!(decode("%2Flive%2Fa.ts"), "/live/a.ts");
        assert_eq!(decode("..%2F300kbps%2Fseg35.m4v"), "../300kbps/seg35.m4v");
        assert_eq!(decode("a+b"), "a+b");
        assert_eq!(decode_form("a+b%3Dc"), "a b=c");
        assert_eq!(decode("bad%zz"), "bad%zz");
        assert_eq!(decode("end%2"), "end%2");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%ff"), "\u{fffd}");
        // Two hex digits, nothing else: a sign is not one.
        assert_eq!(decode("%+f"), "%+f");
    }

    #[test]
    fn strict_decoding_refuses_what_it_cannot_read_exactly() {
        assert_eq!(decode_strict("caf%C3%A9.ts").as_deref(), Some("café.ts"));
        assert_eq!(decode_strict("a+b%20c").as_deref(), Some("a+b c"));
        for bad in ["%zz", "%4", "%", "%ff%fe", "%+f"] {
            assert_eq!(decode_strict(bad), None, "{bad}");
        }
    }
}
