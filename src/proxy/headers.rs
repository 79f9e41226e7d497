//! Headers across the edge: what a client's request may tell an origin (an allow-list, the
//! client's address, `Via`), hop-by-hop stripping both ways, and response headers as stored.
//!
//! Every request header that reaches an origin can change its answer, and the answer is shared
//! by everyone who asks for the same key. So only headers named in `fetch.forward_headers` go
//! through (content negotiation, CORS, tracing by default); the edge writes `Host`,
//! `Accept-Encoding`, `Via` and the client-address headers itself; credentials and cookies go
//! only with fetches that are not shared.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::compress;
use crate::config::{FetchConfig, IpNet};

/// The edge's `Via` entry, on requests to origins and on responses.
pub const VIA: &str = "1.1 streamedge";

/// The client-address headers of one request: `X-Forwarded-For`, `Forwarded` and `X-Real-IP`.
/// What a client says about its own address is believed only when it connects from a trusted
/// proxy (`server.trusted_proxies`); the address the connection came from is always appended.
#[derive(Debug, Clone)]
pub struct ClientAddress {
    forwarded_for: HeaderValue,
    forwarded: HeaderValue,
    real_ip: HeaderValue,
}

impl ClientAddress {
    pub fn new(client: &HeaderMap, remote: IpAddr, trusted: &[IpNet]) -> ClientAddress {
        let remote = remote.to_canonical();
        let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
        let mut chain: Vec<IpAddr> = Vec::new();
        let mut forwarded = String::new();
        if is_trusted(remote) {
            chain = client
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|a| a.trim().parse::<IpAddr>().ok())
                .collect();
            for v in client.get_all(header::FORWARDED) {
                if let Ok(v) = v.to_str() {
                    forwarded.push_str(v.trim());
                    forwarded.push_str(", ");
                }
            }
        }
        chain.push(remote);
        // The client is the nearest address that is not one of our proxies.
        let real = chain
            .iter()
            .rev()
            .find(|a| !is_trusted(**a))
            .or(chain.first())
            .copied()
            .unwrap_or(remote);
        let list = chain
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match remote {
            IpAddr::V4(a) => forwarded.push_str(&format!("for={a}")),
            IpAddr::V6(a) => forwarded.push_str(&format!("for=\"[{a}]\"")),
        }
        let value = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
        ClientAddress {
            forwarded_for: value(&list),
            forwarded: value(&forwarded),
            real_ip: value(&real.to_string()),
        }
    }
}

/// Request headers for the origin: the allow-listed ones the client sent (without those its
/// `Connection` names), `Accept-Encoding` reduced to the one coding the variant stands for,
/// `Via`, and the client's address. The client's preconditions, range and cache directives never
/// go: a fill fetches the whole, current object. `private`: a fetch for this request alone,
/// which may carry its credentials and cookies.
pub fn origin_request_headers(
    client: &HeaderMap,
    private: bool,
    fetch: &FetchConfig,
    address: Option<&ClientAddress>,
) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(fetch.forward_headers.len() + 6);
    let connection_listed = connection_tokens(client);
    let credentials: &[HeaderName] = if private {
        &[header::AUTHORIZATION, header::COOKIE]
    } else {
        &[]
    };
    for name in fetch.forward_headers.iter().chain(credentials) {
        if connection_listed.iter().any(|n| n == name.as_str()) {
            continue;
        }
        for value in client.get_all(name) {
            h.append(name.clone(), value.clone());
        }
    }
    let coding = compress::preferred_encoding(client);
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static(coding.as_str()),
    );
    h.append(header::VIA, HeaderValue::from_static(VIA));
    if let Some(a) = address {
        h.insert("x-forwarded-for", a.forwarded_for.clone());
        h.insert(header::FORWARDED, a.forwarded.clone());
        h.insert("x-real-ip", a.real_ip.clone());
    }
    h
}

pub fn connection_tokens(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}

/// The origin's response headers as stored: hop-by-hop, framing and Age removed. Values are
/// copied: hyper parses them as slices of its read buffer, and a stored slice would pin the
/// whole buffer (often hundreds of KB of body bytes) for as long as the object stays cached.
pub fn stored_headers(origin: &HeaderMap) -> HeaderMap {
    let listed = connection_tokens(origin);
    let mut h = HeaderMap::with_capacity(origin.len() + 1);
    for (name, value) in origin {
        if is_hop_by_hop(name)
            || listed.iter().any(|n| n == name.as_str())
            || *name == header::CONTENT_LENGTH
            || *name == header::AGE
        {
            continue;
        }
        h.append(name.clone(), owned(value));
    }
    if !h.contains_key(header::DATE) {
        // RFC 9110 §6.6.1: a recipient with a clock adds Date when it caches or forwards.
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
            h.insert(header::DATE, v);
        }
    }
    h
}

/// A header value in its own allocation.
fn owned(value: &HeaderValue) -> HeaderValue {
    match HeaderValue::from_bytes(value.as_bytes()) {
        Ok(mut v) => {
            v.set_sensitive(value.is_sensitive());
            v
        }
        Err(_) => value.clone(),
    }
}

pub fn varies_on(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(name.as_str()))
}

/// `Vary` names of a response; a body the origin encoded always varies on Accept-Encoding.
pub fn vary_names(headers: &mut HeaderMap) -> Option<Arc<[HeaderName]>> {
    let mut names: Vec<HeaderName> = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"));
    if encoded && !names.contains(&header::ACCEPT_ENCODING) {
        names.push(header::ACCEPT_ENCODING);
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    (!names.is_empty()).then(|| names.into())
}

/// `headers` with the origin's `Age`: `stored_headers` drops it (the edge sends its own), but
/// the current age of what is stored starts from it (RFC 9111 §4.2.3).
pub fn with_origin_age<'a>(
    headers: &'a HeaderMap,
    age: Option<&HeaderValue>,
) -> Cow<'a, HeaderMap> {
    match age {
        Some(age) => {
            let mut h = headers.clone();
            h.insert(header::AGE, age.clone());
            Cow::Owned(h)
        }
        None => Cow::Borrowed(headers),
    }
}

/// RFC 9111 §4.3.4: the stored headers updated with those of a 304.
pub fn merge_304(stored: &HeaderMap, fresh: &HeaderMap) -> HeaderMap {
    let fresh = stored_headers(fresh);
    let mut merged = stored.clone();
    for name in fresh.keys() {
        if *name == header::CONTENT_ENCODING || *name == header::CONTENT_TYPE {
            continue;
        }
        merged.remove(name);
        for v in fresh.get_all(name) {
            merged.append(name.clone(), v.clone());
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn fetch_config() -> FetchConfig {
        crate::config::parse(
            "listen:\n  http: \"127.0.0.1:1\"\norigins:\n  - url: \"http://127.0.0.1:2\"\n",
        )
        .unwrap()
        .fetch
    }

    #[test]
    fn only_allow_listed_headers_reach_the_origin() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, user-agent"),
        );
        h.insert(header::USER_AGENT, HeaderValue::from_static("nominated"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        for poison in [
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-scheme",
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
            "sec-websocket-key",
            "x-bar",
        ] {
            h.insert(
                HeaderName::from_static(poison),
                HeaderValue::from_static("evil"),
            );
        }
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\""));
        h.insert(header::COOKIE, HeaderValue::from_static("s=1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, br"),
        );
        let cfg = fetch_config();
        let o = origin_request_headers(&h, false, &cfg, None);
        let names: Vec<&str> = o.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept", "accept-encoding", "via"], "{o:?}");
        assert_eq!(o.get(header::ACCEPT_ENCODING).unwrap(), "br");
        assert_eq!(o.get(header::VIA).unwrap(), VIA);
        let private = origin_request_headers(&h, true, &cfg, None);
        assert_eq!(private.get(header::COOKIE).unwrap(), "s=1");
        assert_eq!(private.get(header::AUTHORIZATION).unwrap(), "Bearer x");
    }

    #[test]
    fn client_address_is_the_peer_unless_a_trusted_proxy_says_otherwise() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 10.0.0.9"),
        );
        h.insert(header::FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        let cfg = fetch_config();
        let peer: IpAddr = "192.0.2.7".parse().unwrap();

        let a = ClientAddress::new(&h, peer, &[]);
        let o = origin_request_headers(&h, false, &cfg, Some(&a));
        assert_eq!(o.get("x-forwarded-for").unwrap(), "192.0.2.7");
        assert_eq!(o.get(header::FORWARDED).unwrap(), "for=192.0.2.7");
        assert_eq!(o.get("x-real-ip").unwrap(), "192.0.2.7");

        let trusted = [
            IpNet::parse("192.0.2.0/24").unwrap(),
            IpNet::parse("10.0.0.0/8").unwrap(),
        ];
        let a = ClientAddress::new(&h, peer, &trusted);
        let o = origin_request_headers(&h, false, &cfg, Some(&a));
        assert_eq!(
            o.get("x-forwarded-for").unwrap(),
            "1.2.3.4, 10.0.0.9, 192.0.2.7"
        );
        assert_eq!(
            o.get(header::FORWARDED).unwrap(),
            "for=1.2.3.4, for=192.0.2.7"
        );
        assert_eq!(o.get("x-real-ip").unwrap(), "1.2.3.4");

        let v6 = ClientAddress::new(&HeaderMap::new(), "::ffff:192.0.2.7".parse().unwrap(), &[]);
        assert_eq!(v6.forwarded, "for=192.0.2.7");
        let v6 = ClientAddress::new(&HeaderMap::new(), "2001:db8::1".parse().unwrap(), &[]);
        assert_eq!(v6.forwarded, "for=\"[2001:db8::1]\"");
        assert_eq!(v6.forwarded_for, "2001:db8::1");
    }

    #[test]
    fn stored_values_do_not_pin_the_read_buffer() {
        let buffer = Bytes::from(vec![b'a'; 64 * 1024]);
        let mut origin = HeaderMap::new();
        origin.insert(
            header::ETAG,
            HeaderValue::from_maybe_shared(buffer.slice(0..8)).unwrap(),
        );
        let stored = stored_headers(&origin);
        let v = stored.get(header::ETAG).unwrap().as_bytes();
        assert_eq!(v, b"aaaaaaaa");
        let range = buffer.as_ptr_range();
        assert!(!range.contains(&v.as_ptr()), "the stored value is a copy");
    }

    #[test]
    fn merge_304_keeps_body_headers() {
        let mut stored = HeaderMap::new();
        stored.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
        stored.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
        stored.insert(header::ETAG, HeaderValue::from_static("\"1\""));
        let mut fresh = HeaderMap::new();
        fresh.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        fresh.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        fresh.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let m = merge_304(&stored, &fresh);
        assert_eq!(m.get(header::CACHE_CONTROL).unwrap(), "max-age=60");
        assert_eq!(m.get(header::CONTENT_TYPE).unwrap(), "video/mp2t");
        assert_eq!(m.get(header::ETAG).unwrap(), "\"1\"");
        assert!(m.get(header::CONTENT_LENGTH).is_none());
    }

    #[test]
    fn encoded_bodies_vary_on_accept_encoding() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let names = vary_names(&mut h).unwrap();
        assert_eq!(&*names, &[header::ACCEPT_ENCODING]);
        assert_eq!(h.get(header::VARY).unwrap(), "Accept-Encoding");
        let mut plain = HeaderMap::new();
        assert!(vary_names(&mut plain).is_none());
        assert!(varies_on(&h, &header::ACCEPT_ENCODING));
    }
}
