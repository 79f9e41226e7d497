//! Requests between the nodes of a fleet, on the client listener: the forwarding mark a
//! request from a peer carries (checked once, before anything else), and the two things only
//! a peer may ask — a probe of this node and a fleet-wide purge.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};

use super::body::full;
use super::context::{Ctx, Runtime};
use crate::cluster::{PROBE_PATH, PURGE_PATH, mark};
use crate::server::ResponseBody;

/// The node that sent this request, when it carries a genuine forwarding mark. A mark that
/// does not verify is counted and ignored: the request is a client's like any other.
pub(super) fn from_peer(rt: &Runtime, parts: &http::request::Parts) -> Option<Arc<str>> {
    let value = parts.headers.get(mark::HEADER)?;
    let cluster = rt.cluster.as_ref()?;
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    match cluster.marker().verify(value, &parts.method, target) {
        Some(node) => Some(node.into()),
        None => {
            crate::metrics::peer_mark_rejected();
            tracing::debug!(target, "forwarding mark rejected");
            None
        }
    }
}

/// The answer to a peer's probe or purge, when this is one.
pub(super) async fn endpoint(
    ctx: &Ctx,
    parts: &http::request::Parts,
) -> Option<Response<ResponseBody>> {
    ctx.from_peer.as_ref()?;
    match (&parts.method, parts.uri.path()) {
        (&Method::GET | &Method::HEAD, PROBE_PATH) => {
            let node = ctx.rt.cluster.as_ref().map_or("", |c| c.node());
            Some(text(StatusCode::OK, format!("{node}\n")))
        }
        (&Method::POST, PURGE_PATH) => {
            let query = parts.uri.query().unwrap_or("");
            Some(match super::purge::purge(&ctx.proxy, query).await {
                Ok(n) => text(StatusCode::OK, format!("purged {n}\n")),
                Err(m) => text(StatusCode::BAD_REQUEST, format!("{m}\n")),
            })
        }
        _ => None,
    }
}

fn text(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}
