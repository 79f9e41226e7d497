//! Just enough XML for MPDs: the element tags of a document with their attributes and byte
//! ranges, so an MPD can be re-assembled from slices of its own text without re-serialising
//! (and so without re-escaping) anything.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Open,
    Close,
    Empty,
}

#[derive(Debug, Clone)]
pub(super) struct Tag<'a> {
    pub(super) name: &'a str,
    pub(super) attrs: Vec<(&'a str, &'a str)>,
    pub(super) kind: Kind,
    /// Byte range of the whole tag in the document.
    pub(super) start: usize,
    pub(super) end: usize,
}

impl<'a> Tag<'a> {
    pub(super) fn local_name(&self) -> &'a str {
        local(self.name)
    }

    pub(super) fn attr(&self, name: &str) -> Option<&'a str> {
        self.attrs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

/// A name without its namespace prefix.
pub(super) fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Lists the element tags of an XML document with their byte ranges, passing over processing
/// instructions, comments, CDATA and declarations. `None` on anything malformed.
pub(super) fn scan(xml: &str) -> Option<Vec<Tag<'_>>> {
    let mut tags = Vec::new();
    let mut i = 0;
    while let Some(offset) = xml.get(i..)?.find('<') {
        let s = i + offset;
        let rest = &xml[s..];
        if let Some(end) = skipped(rest) {
            i = s + end?;
            continue;
        }
        let tag = match rest.strip_prefix("</") {
            Some(close) => close_tag(close, s)?,
            None => open_tag(xml, s)?,
        };
        i = tag.end;
        tags.push(tag);
    }
    Some(tags)
}

/// Markup that is not an element (`<?…?>`, `<!--…-->`, `<![CDATA[…]]>`, `<!…>`): `Some` with
/// where it ends in `rest`, or `Some(None)` when it never does; `None` for an element.
fn skipped(rest: &str) -> Option<Option<usize>> {
    const SKIPPED: [(&str, &str); 4] = [
        ("<?", "?>"),
        ("<!--", "-->"),
        ("<![CDATA[", "]]>"),
        ("<!", ">"),
    ];
    let (_, end) = SKIPPED.iter().find(|(open, _)| rest.starts_with(open))?;
    Some(rest.find(end).map(|e| e + end.len()))
}

/// The closing tag at `start`, `close` being the text after its `</`.
fn close_tag(close: &str, start: usize) -> Option<Tag<'_>> {
    let e = close.find('>')?;
    let name = close[..e].trim();
    if name.is_empty() {
        return None;
    }
    Some(Tag {
        name,
        attrs: Vec::new(),
        kind: Kind::Close,
        start,
        end: start + 2 + e + 1,
    })
}

/// The opening or empty-element tag at `start`, with its attributes.
fn open_tag(xml: &str, start: usize) -> Option<Tag<'_>> {
    let b = xml.as_bytes();
    let mut j = skip(b, start + 1, |c| {
        !c.is_ascii_whitespace() && c != b'/' && c != b'>'
    });
    let name = &xml[start + 1..j];
    if name.is_empty() {
        return None;
    }
    let mut attrs = Vec::new();
    let kind = loop {
        j = skip(b, j, |c| c.is_ascii_whitespace());
        match b.get(j)? {
            b'>' => {
                j += 1;
                break Kind::Open;
            }
            b'/' => {
                if b.get(j + 1) != Some(&b'>') {
                    return None;
                }
                j += 2;
                break Kind::Empty;
            }
            _ => {}
        }
        let (attr, next) = attribute(xml, j)?;
        attrs.push(attr);
        j = next;
    };
    Some(Tag {
        name,
        attrs,
        kind,
        start,
        end: j,
    })
}

/// The `name="value"` (or `'value'`) at `at`, and where the text after it begins.
fn attribute(xml: &str, at: usize) -> Option<((&str, &str), usize)> {
    let b = xml.as_bytes();
    let mut j = skip(b, at, |c| {
        !c.is_ascii_whitespace() && !matches!(c, b'=' | b'>' | b'/')
    });
    let name = &xml[at..j];
    j = skip(b, j, |c| c.is_ascii_whitespace());
    if name.is_empty() || b.get(j) != Some(&b'=') {
        return None;
    }
    j = skip(b, j + 1, |c| c.is_ascii_whitespace());
    let quote = *b.get(j)?;
    if quote != b'"' && quote != b'\'' {
        return None;
    }
    let value_start = j + 1;
    let value_len = xml.get(value_start..)?.find(quote as char)?;
    let value = &xml[value_start..value_start + value_len];
    Some(((name, value), value_start + value_len + 1))
}

/// The first index from `from` on whose byte is not `while_`.
fn skip(b: &[u8], from: usize, while_: impl Fn(u8) -> bool) -> usize {
    let mut j = from;
    while j < b.len() && while_(b[j]) {
        j += 1;
    }
    j
}

/// Attribute text with the five predefined entities replaced.
pub(super) fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}
