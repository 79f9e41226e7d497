//! Input decoding shared by the targets. Inputs are text, one item per line, so that the seed
//! corpus stays readable and libFuzzer's mutations stay meaningful:
//!
//! - `> name: value`  a request header
//! - `name: value`    a response header (or the request's, for targets without a response)
//! - `:name value`    a control (status, length, method, ...), read by the target
//! - anything else    a bare line, fed to the parser under test as is
//!
//! Header names and values are built with `HeaderName::from_bytes` / `HeaderValue::from_bytes`
//! from the raw bytes; lines that are not valid header fields become bare lines.

#![allow(dead_code)]

use std::borrow::Cow;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// One decoded input.
#[derive(Default)]
pub struct Input<'a> {
    pub request: HeaderMap,
    pub response: HeaderMap,
    pub controls: Vec<(&'a [u8], &'a [u8])>,
    pub bare: Vec<&'a [u8]>,
}

/// The input's lines, without a trailing `\r`.
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// A `name: value` header line.
pub fn header(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = HeaderName::from_bytes(line[..colon].trim_ascii()).ok()?;
    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
    Some((name, value))
}

pub fn decode(data: &[u8]) -> Input<'_> {
    let mut input = Input::default();
    for line in lines(data) {
        if let Some(rest) = line.strip_prefix(b":") {
            let (name, value) = match rest.iter().position(|&b| b == b' ') {
                Some(sp) => (&rest[..sp], rest[sp + 1..].trim_ascii()),
                None => (rest, &b""[..]),
            };
            input.controls.push((name, value));
        } else if let Some(rest) = line.strip_prefix(b">") {
            match header(rest) {
                Some((n, v)) => {
                    input.request.append(n, v);
                }
                None => input.bare.push(line),
            }
        } else {
            match header(line) {
                Some((n, v)) => {
                    input.response.append(n, v);
                }
                None => input.bare.push(line),
            }
        }
    }
    input
}

impl Input<'_> {
    /// Values of the control `name`.
    pub fn control<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.controls
            .iter()
            .filter(move |(n, _)| *n == name.as_bytes())
            .map(|(_, v)| *v)
    }

    /// The first value of control `name` as a number.
    pub fn number(&self, name: &str) -> Option<u64> {
        self.control(name).next().and_then(number)
    }
}

pub fn number(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

pub fn text(v: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(v)
}

/// A header map with one `name` line per value that is a valid header value.
pub fn map_of<'a>(name: HeaderName, values: impl IntoIterator<Item = &'a [u8]>) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        if let Ok(v) = HeaderValue::from_bytes(v) {
            h.append(name.clone(), v);
        }
    }
    h
}
