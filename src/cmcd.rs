//! Common Media Client Data (CTA-5004): what players report about themselves, from the `CMCD`
//! query parameter or the `CMCD-*` request headers, for logs, metrics and prefetch (`nor`).

use http::HeaderMap;

/// The CMCD request headers (CTA-5004 §2.3), as header names made once.
const CMCD_HEADERS: [http::HeaderName; 4] = [
    http::HeaderName::from_static("cmcd-request"),
    http::HeaderName::from_static("cmcd-object"),
    http::HeaderName::from_static("cmcd-status"),
    http::HeaderName::from_static("cmcd-session"),
];

/// The CMCD keys the edge uses. Everything else is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmcd {
    /// `sid`: session id.
    pub session: Option<String>,
    /// `bl`: buffer length, ms.
    pub buffer_ms: Option<u64>,
    /// `mtp`: measured throughput, kbit/s.
    pub throughput_kbps: Option<u64>,
    /// `bs`: the buffer ran empty since the last request.
    pub starved: bool,
    /// `ot`: object type (m, a, v, av, i, c, tt, k, o).
    pub object_type: Option<String>,
    /// `nor`: the next object the player will request (relative URL).
    pub next_object: Option<String>,
    /// `su`: startup (buffer empty because the session is starting).
    pub startup: bool,
}

impl Cmcd {
    pub fn is_empty(&self) -> bool {
        *self == Cmcd::default()
    }

    /// Reads CMCD from the query (`CMCD=<url-encoded list>`) or, failing that, the headers.
    pub fn from_request(query: Option<&str>, headers: &HeaderMap) -> Cmcd {
        // The four headers are looked up by prebuilt names: a name given as text is parsed
        // and hashed again on every lookup, and most requests carry none of them.
        let mut c = Cmcd::default();
        if let Some(q) = query {
            for pair in q.split('&') {
                if let Some(v) = pair.strip_prefix("CMCD=") {
                    c.parse_list(&crate::percent::decode(v));
                    return c;
                }
            }
        }
        // Most requests carry no CMCD header: one pass over the names (no hashing) finds out
        // before four lookups.
        if !headers.keys().any(|k| k.as_str().starts_with("cmcd-")) {
            return c;
        }
        for name in &CMCD_HEADERS {
            for v in headers.get_all(name) {
                if let Ok(s) = v.to_str() {
                    c.parse_list(s);
                }
            }
        }
        c
    }

    /// Parses `key=value,key,key="string"` (CTA-5004 §3.1, Structured Field dictionary style).
    fn parse_list(&mut self, list: &str) {
        for item in split_outside_quotes(list) {
            let item = item.trim();
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            let string = || value.map(|v| v.trim_matches('"').to_owned());
            let number = || {
                value
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| *v >= 0.0)
            };
            match key {
                "sid" => self.session = string().filter(|s| s.len() <= 64),
                "bl" => self.buffer_ms = number().map(|v| v as u64),
                "mtp" => self.throughput_kbps = number().map(|v| v as u64),
                "bs" => self.starved = value.is_none_or(|v| v == "?1"),
                "su" => self.startup = value.is_none_or(|v| v == "?1"),
                "ot" => self.object_type = value.map(str::to_owned).filter(|s| s.len() <= 4),
                "nor" => self.next_object = string().filter(|s| s.len() <= 1024),
                _ => {}
            }
        }
    }
}

/// True for query parameters that carry CMCD (always dropped from cache keys).
pub fn is_cmcd_param(name: &str) -> bool {
    name == "CMCD"
}

fn split_outside_quotes(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn from_query() {
        let q = "x=1&CMCD=bl%3D21300%2Cbs%2Cmtp%3D48100%2Cnor%3D%22..%252F300kbps%252Fsegment35.m4v%22%2Cot%3Dv%2Csid%3D%226e2fb550-c457-11e9-bb97-0800200c9a66%22";
        let c = Cmcd::from_request(Some(q), &HeaderMap::new());
        assert_eq!(c.buffer_ms, Some(21300));
        assert_eq!(c.throughput_kbps, Some(48100));
        assert!(c.starved);
        assert_eq!(c.object_type.as_deref(), Some("v"));
        assert_eq!(
            c.session.as_deref(),
            Some("6e2fb550-c457-11e9-bb97-0800200c9a66")
        );
        assert_eq!(
            c.next_object.as_deref(),
            Some("..%2F300kbps%2Fsegment35.m4v")
        );
    }

    #[test]
    fn from_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "cmcd-request",
            HeaderValue::from_static("bl=2000,mtp=5000,nor=\"seg_2.m4s\""),
        );
        h.insert("cmcd-session", HeaderValue::from_static("sid=\"abc\",su"));
        let c = Cmcd::from_request(None, &h);
        assert_eq!(c.buffer_ms, Some(2000));
        assert_eq!(c.next_object.as_deref(), Some("seg_2.m4s"));
        assert_eq!(c.session.as_deref(), Some("abc"));
        assert!(c.startup);
        assert!(!c.starved);
        assert!(Cmcd::from_request(None, &HeaderMap::new()).is_empty());
    }

    #[test]
    fn junk_is_ignored() {
        let c = Cmcd::from_request(
            Some("CMCD=bl%3D-5%2Cmtp%3Dabc%2C%2C%2C%3D%3D%2Cbs%3D%3F0"),
            &HeaderMap::new(),
        );
        assert_eq!(c.buffer_ms, None);
        assert_eq!(c.throughput_kbps, None);
        assert!(!c.starved);
        let _ = Cmcd::from_request(Some("CMCD=%"), &HeaderMap::new());
        let _ = Cmcd::from_request(Some("CMCD=%2"), &HeaderMap::new());
    }
}
