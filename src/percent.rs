//! Percent-decoding of URL components (RFC 3986 §2.1), lenient: an invalid escape stays as
//! written instead of failing the request.

/// Decodes `%XX` escapes; invalid ones are kept literally, invalid UTF-8 is replaced.
pub fn decode(s: &str) -> String {
    decode_inner(s, false)
}

/// `decode` for `application/x-www-form-urlencoded` values, where `+` is a space.
pub fn decode_form(s: &str) -> String {
    decode_inner(s, true)
}

fn decode_inner(s: &str, plus_is_space: bool) -> String {
    if !(s.contains('%') || plus_is_space && s.contains('+')) {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let escaped = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match escaped {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
    }
}
