//! The forwarding mark: the header a node puts on a request it sends to a peer, so that the
//! peer serves it itself and never forwards it again. It is an HMAC-SHA256 over the sending
//! node, a timestamp, the method and the request target, keyed by the fleet's shared secret:
//! a client cannot make one, and one seen on the wire is good only for its own target for a
//! minute. Purges and probes between nodes carry it too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue, Method};
use sha2::Sha256;

/// The header that carries the mark: `<node> <unix seconds> <hex HMAC>`.
pub const HEADER: HeaderName = HeaderName::from_static("streamedge-peer");

/// How far a mark's time may be from this node's clock (the fleet's clocks run on NTP).
const MAX_SKEW: Duration = Duration::from_secs(60);

/// Makes and checks marks with the fleet's secret.
#[derive(Clone)]
pub struct Marker {
    key: Hmac<Sha256>,
}

impl std::fmt::Debug for Marker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Marker")
    }
}

impl Marker {
    pub fn new(secret: &str) -> Marker {
        Marker {
            key: Hmac::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length"),
        }
    }

    fn mac(&self, node: &str, secs: u64, method: &Method, target: &str) -> Hmac<Sha256> {
        let mut mac = self.key.clone();
        for part in [
            node.as_bytes(),
            secs.to_string().as_bytes(),
            method.as_str().as_bytes(),
        ] {
            mac.update(part);
            mac.update(b"\n");
        }
        mac.update(target.as_bytes());
        mac
    }

    /// The mark of `node` for `method target` (the target as it goes on the wire: path and
    /// query).
    pub fn mark(&self, node: &str, method: &Method, target: &str) -> HeaderValue {
        let secs = unix_now();
        let sig = self.mac(node, secs, method, target).finalize().into_bytes();
        let mut v = format!("{node} {secs} ");
        for b in sig {
            v.push_str(&format!("{b:02x}"));
        }
        HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("invalid"))
    }

    /// The sending node, when `value` is a genuine mark for `method target` made within the
    /// last minute.
    pub fn verify(&self, value: &HeaderValue, method: &Method, target: &str) -> Option<String> {
        let text = value.to_str().ok()?;
        let mut parts = text.split(' ');
        let (node, secs, sig) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || sig.len() != 64 {
            return None;
        }
        let secs: u64 = secs.parse().ok()?;
        let now = unix_now();
        if now.abs_diff(secs) > MAX_SKEW.as_secs() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(sig.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        self.mac(node, secs, method, target)
            .verify_slice(&bytes)
            .ok()
            .map(|()| node.to_owned())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_verifies_for_its_own_request_only() {
        let m = Marker::new("a fleet secret of some length");
        let v = m.mark("http://127.0.0.2:8080", &Method::GET, "/live/a.m3u8?x=1");
        assert_eq!(
            m.verify(&v, &Method::GET, "/live/a.m3u8?x=1").as_deref(),
            Some("http://127.0.0.2:8080")
        );
        assert_eq!(m.verify(&v, &Method::GET, "/live/b.m3u8?x=1"), None);
        assert_eq!(m.verify(&v, &Method::HEAD, "/live/a.m3u8?x=1"), None);
        let other = Marker::new("another secret, same length!!");
        assert_eq!(other.verify(&v, &Method::GET, "/live/a.m3u8?x=1"), None);
    }

    #[test]
    fn forged_and_old_marks_fail() {
        let m = Marker::new("a fleet secret of some length");
        for forged in [
            "",
            "http://127.0.0.2:8080",
            "http://127.0.0.2:8080 1 00",
            &format!("http://127.0.0.2:8080 {} {}", unix_now(), "0".repeat(64)),
            &format!("http://127.0.0.2:8080 {} {}", unix_now(), "zz".repeat(32)),
        ] {
            let v = HeaderValue::from_str(forged).unwrap();
            assert_eq!(m.verify(&v, &Method::GET, "/a"), None, "{forged:?}");
        }
        // A genuine mark from two minutes ago.
        let old = unix_now() - 120;
        let sig = m.mac("n", old, &Method::GET, "/a").finalize().into_bytes();
        let hex: String = sig.iter().map(|b| format!("{b:02x}")).collect();
        let v = HeaderValue::from_str(&format!("n {old} {hex}")).unwrap();
        assert_eq!(m.verify(&v, &Method::GET, "/a"), None);
    }
}
