//! Forwarding of unsafe methods (POST, PUT, PATCH, DELETE) and OPTIONS: uncached, without
//! retries, and invalidating what the origin says changed (RFC 9111 §4.4).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::Response;
use http::header::{self, HeaderMap, HeaderValue};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;

use super::admit::reference_key;
use super::cache_status::{CACHE_STATUS, CacheStatus};
use super::context::{Proxy, Runtime};
use super::headers::{VIA, stored_headers};
use crate::cache::CacheKey;
use crate::cache::fill::Lease;
use crate::error::EdgeError;
use crate::server::{BoxError, ResponseBody};
use crate::upstream::OriginRequest;

/// Forwards an unsafe method (POST, PUT, PATCH, DELETE) to the origin that owns the target,
/// uncached and without retries, and invalidates the target URI (and the `Location` /
/// `Content-Location` it names) when the origin accepts it (RFC 9111 §4.4).
pub async fn forward_unsafe(
    proxy: &Arc<Proxy>,
    rt: &Arc<Runtime>,
    parts: &http::request::Parts,
    mut headers: HeaderMap,
    body: Incoming,
    key: CacheKey,
) -> Result<Response<ResponseBody>, EdgeError> {
    // Held until the origin has the body: counted in the in-flight budget.
    let mut lease = proxy.fills.budget().lease();
    let body = read_request_body(body, rt, &mut lease, &key).await?;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    let request = OriginRequest {
        key: key.clone(),
        method: parts.method.clone(),
        headers,
        first_byte_timeout: rt.config.fetch.first_byte_timeout,
        body: Some(body),
        retry: false,
    };
    let resp = rt.upstream.fetch(&request).await?;
    let status = resp.response.status();
    let mut headers = stored_headers(resp.response.headers());
    if status.is_success() || status.is_redirection() {
        proxy.store.purge(&key).await;
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(target) = headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(same_origin_path)
                && let Some(key) = reference_key(rt, key.host(), &target)
            {
                proxy.store.purge(&key).await;
            }
        }
    }
    headers.append(header::VIA, HeaderValue::from_static(VIA));
    if let Some(len) = resp.response.content_length() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    headers.insert(CACHE_STATUS, CacheStatus::method().value(&rt.cache_name));
    let stream = futures_util::stream::unfold(Some(resp), |state| async move {
        let mut resp = state?;
        match resp.chunk().await {
            Ok(Some(c)) => Some((Ok(Frame::data(c)), Some(resp))),
            Ok(None) => {
                resp.finished(true);
                None
            }
            Err(e) => {
                resp.finished(false);
                Some((Err(Box::new(e) as BoxError), None))
            }
        }
    });
    let mut response = Response::new(UnsyncBoxBody::new(StreamBody::new(stream)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// A client's request body, whole: at most `cache.max_object_size`, within the in-flight
/// budget, and with no pause longer than `server.header_read_timeout` between its parts.
async fn read_request_body(
    mut body: Incoming,
    rt: &Runtime,
    lease: &mut Lease,
    key: &CacheKey,
) -> Result<Bytes, EdgeError> {
    let limit = rt.config.cache.max_object_size;
    let pause = rt.config.server.header_read_timeout;
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(pause, body.frame()).await {
            Err(_) => return Err(EdgeError::BadRequest("the request body stalled".into())),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => {
                return Err(EdgeError::BadRequest(format!(
                    "reading the request body: {e}"
                )));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if (buf.len() + data.len()) as u64 > limit {
            return Err(EdgeError::PayloadTooLarge { limit });
        }
        if !lease.grow(data.len() as u64) {
            return Err(EdgeError::Overloaded {
                key: key.to_string(),
            });
        }
        buf.extend_from_slice(&data);
    }
}

/// A Location value as a path on this edge: absolute paths as they are; absolute URLs are not
/// resolved (their host may be anyone's).
fn same_origin_path(location: &str) -> Option<String> {
    location
        .starts_with('/')
        .then(|| location.to_owned())
        .filter(|l| !l.starts_with("//"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(same_origin_path("/a/b").as_deref(), Some("/a/b"));
        assert_eq!(same_origin_path("//evil/a"), None);
        assert_eq!(same_origin_path("https://x/a"), None);
    }
}
