//! Accept-Encoding negotiation and Brotli / gzip encoding of manifests.

use http::HeaderMap;
use http::header::ACCEPT_ENCODING;

/// The content codings the edge can produce itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Brotli,
    Gzip,
    Identity,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
            Encoding::Identity => "identity",
        }
    }
}

/// Parses `Accept-Encoding` (RFC 9110 §12.5.3) and returns the best coding we offer:
/// highest q-value wins, Brotli before gzip on ties, identity unless refused.
pub fn preferred_encoding(headers: &HeaderMap) -> Encoding {
    let mut br: Option<f32> = None;
    let mut gzip: Option<f32> = None;
    let mut star: Option<f32> = None;
    let mut seen = false;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if coding.is_empty() {
                continue;
            }
            seen = true;
            let mut q = 1.0f32;
            for p in parts {
                let p = p.trim();
                if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                    q = v.trim().parse::<f32>().unwrap_or(0.0).clamp(0.0, 1.0);
                }
            }
            match coding.as_str() {
                "br" => br = Some(q),
                "gzip" | "x-gzip" => gzip = Some(q),
                "*" => star = Some(q),
                _ => {}
            }
        }
    }
    if !seen {
        return Encoding::Identity;
    }
    let br = br.or(star).unwrap_or(0.0);
    let gzip = gzip.or(star).unwrap_or(0.0);
    if br > 0.0 && br >= gzip {
        Encoding::Brotli
    } else if gzip > 0.0 {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ae(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn negotiation() {
        assert_eq!(preferred_encoding(&HeaderMap::new()), Encoding::Identity);
        assert_eq!(
            preferred_encoding(&ae("gzip, deflate, br")),
            Encoding::Brotli
        );
        assert_eq!(preferred_encoding(&ae("gzip")), Encoding::Gzip);
        assert_eq!(
            preferred_encoding(&ae("br;q=0.5, gzip;q=0.8")),
            Encoding::Gzip
        );
        assert_eq!(
            preferred_encoding(&ae("br;q=0, gzip;q=0")),
            Encoding::Identity
        );
        assert_eq!(preferred_encoding(&ae("*")), Encoding::Brotli);
        assert_eq!(preferred_encoding(&ae("identity")), Encoding::Identity);
        assert_eq!(preferred_encoding(&ae("GZIP;Q=1")), Encoding::Gzip);
        assert_eq!(preferred_encoding(&ae("br;q=abc, gzip")), Encoding::Gzip);
    }
}
