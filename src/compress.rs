//! Accept-Encoding negotiation and Brotli / gzip encoding of manifests.
//!
//! Encodings are computed once per stored object version (by the fill that stores it) and
//! kept with it, never per request. Only manifests and text (playlists, MPDs, JSON, XML) are
//! compressed. Media segments (WebVTT subtitle segments included) and bodies the origin
//! already encoded pass untouched.

use async_compression::Level;
use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder};
use bytes::Bytes;
use http::HeaderMap;
use http::header::{ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE};
use tokio::io::AsyncReadExt;

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

pub use crate::config::CompressConfig;

/// Content types the edge compresses: manifests and text.
fn compressible_type(content_type: &str) -> bool {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        ct.as_str(),
        "application/vnd.apple.mpegurl"
            | "application/x-mpegurl"
            | "audio/mpegurl"
            | "audio/x-mpegurl"
            | "application/dash+xml"
            | "text/vtt"
            | "application/json"
            | "application/xml"
            | "text/xml"
            | "application/ttml+xml"
    ) || ct.starts_with("text/")
}

/// Whether a stored response body may be compressed by the edge.
pub fn compressible(cfg: &CompressConfig, headers: &HeaderMap, len: usize) -> bool {
    if !cfg.enabled || (len as u64) < cfg.min_size {
        return false;
    }
    let encoded = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"));
    let no_transform = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("no-transform"));
    let text = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(compressible_type);
    text && !encoded && !no_transform
}

/// Encodes a body. Brotli quality and gzip level come from the config (quality 11 is far too
/// slow for the request path; 4 matches or beats 5-9 on playlists).
pub async fn encode(
    cfg: &CompressConfig,
    body: &[u8],
    encoding: Encoding,
) -> std::io::Result<Bytes> {
    let mut out = Vec::with_capacity(body.len() / 4 + 64);
    match encoding {
        Encoding::Brotli => {
            let q = cfg.brotli_quality.min(11) as i32;
            BrotliEncoder::with_quality(body, Level::Precise(q))
                .read_to_end(&mut out)
                .await?;
        }
        Encoding::Gzip => {
            let l = cfg.gzip_level.clamp(1, 9) as i32;
            GzipEncoder::with_quality(body, Level::Precise(l))
                .read_to_end(&mut out)
                .await?;
        }
        Encoding::Identity => return Ok(Bytes::copy_from_slice(body)),
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder};
    use http::HeaderValue;

    #[tokio::test]
    async fn round_trips() {
        let cfg = CompressConfig::default();
        let body: Vec<u8> = (0..600)
            .flat_map(|i| format!("#EXTINF:4.000,\nseg_{i:05}.m4s\n").into_bytes())
            .collect();
        let br = encode(&cfg, &body, Encoding::Brotli).await.unwrap();
        assert!(
            br.len() < body.len() / 5,
            "brotli {} of {}",
            br.len(),
            body.len()
        );
        let mut back = Vec::new();
        BrotliDecoder::new(&br[..])
            .read_to_end(&mut back)
            .await
            .unwrap();
        assert_eq!(back, body);
        let gz = encode(&cfg, &body, Encoding::Gzip).await.unwrap();
        let mut back = Vec::new();
        GzipDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .await
            .unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn what_is_compressible() {
        let cfg = CompressConfig::default();
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.apple.mpegurl"),
        );
        assert!(compressible(&cfg, &h, 4096));
        assert!(!compressible(&cfg, &h, 100), "below min_size");
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(!compressible(&cfg, &h, 4096), "origin already encoded");
        let mut seg = HeaderMap::new();
        seg.insert(CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
        assert!(
            !compressible(&cfg, &seg, 4096),
            "segments are never recompressed"
        );
        let mut nt = HeaderMap::new();
        nt.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/dash+xml"),
        );
        nt.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=2, no-transform"),
        );
        assert!(!compressible(&cfg, &nt, 4096));
    }

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
