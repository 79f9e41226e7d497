//! Requests to responses: the method and path pick an entity (a file, a live rendering, a
//! retimed segment or a part), and the entity answers with 200, 206, 304 or 416 through the edge's own
//! precondition and Range code (`cache::conditional`).

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    LAST_MODIFIED,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::clock::{self, Micros};
use super::files::Entity;
use super::live::{DASH_TYPE, HLS_TYPE};
use super::{Origin, paths};
use crate::cache::conditional::{self, RangeRequest};

impl Origin {
    /// Answers one request, after the configured delay (errors included) and, for LL-HLS,
    /// once what it asks for exists (`ll`).
    pub(super) async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if let Some(log) = &self.requests {
            log.record(req.method(), req.uri());
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let mut resp = match self.hold(req.method(), req.uri()).await {
            Ok(hold) => {
                let mut r = self.respond(req.method(), req.uri().path(), req.headers());
                if r.status() == StatusCode::OK
                    && let Some(cc) = hold.cache_control()
                {
                    r.headers_mut().insert(CACHE_CONTROL, cc);
                }
                r
            }
            Err(r) => r,
        };
        // Browser players (hls.js, dash.js) on any page may fetch the demo media.
        resp.headers_mut().insert(
            http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        resp
    }

    /// The response to `method` on `path`, before the delay and CORS.
    pub(super) fn respond(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Response<Full<Bytes>> {
        let head = method == Method::HEAD;
        if path == super::TIME_PATH && (method == Method::GET || head) {
            return now(head);
        }
        if method != Method::GET && !head {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let entity = match paths::parse(path) {
            Err(paths::Rejection::BadRequest) => {
                return plain(StatusCode::BAD_REQUEST, "bad request\n");
            }
            Err(paths::Rejection::NotFound) => None,
            Ok((paths::View::Vod, key)) => self.files.get(&key).cloned(),
            Ok((paths::View::Live, key)) => self.live(&key),
            Ok((paths::View::LowLatency, key)) => self.low_latency(&key),
        };
        match entity {
            Some(e) => entity_response(e, head, headers),
            None => plain(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// The response to a GET or HEAD for `e`: 304 when the client's validators match, 206 for a
/// single satisfiable range, 416 for an unsatisfiable one, else the whole entity. Several
/// ranges get the whole entity too, which RFC 9110 allows.
fn entity_response(e: Entity, head: bool, req: &HeaderMap) -> Response<Full<Bytes>> {
    let mut validators = HeaderMap::with_capacity(2);
    validators.insert(ETAG, e.etag.clone());
    validators.insert(LAST_MODIFIED, e.last_modified.clone());
    let total = e.body.len() as u64;
    let range = if conditional::not_modified(req, &validators) {
        None
    } else {
        Some(
            conditional::parse_range(req)
                .filter(|specs| specs.len() == 1 && conditional::if_range_allows(req, &validators))
                .map_or(RangeRequest::Full, |specs| {
                    conditional::resolve(&specs, total)
                }),
        )
    };
    let (status, mut body, content_range) = match range {
        None => (StatusCode::NOT_MODIFIED, Bytes::new(), None),
        // Both ends are within the body, whose length is a usize.
        Some(RangeRequest::Single(start, end)) => (
            StatusCode::PARTIAL_CONTENT,
            e.body.slice(start as usize..end as usize),
            Some(format!("bytes {start}-{}/{total}", end - 1)),
        ),
        Some(RangeRequest::Unsatisfiable) => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            Bytes::new(),
            Some(format!("bytes */{total}")),
        ),
        Some(RangeRequest::Full | RangeRequest::Multi(_)) => (StatusCode::OK, e.body, None),
    };
    let len = body.len() as u64;
    if head {
        body = Bytes::new();
    }
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if status != StatusCode::NOT_MODIFIED {
        if status != StatusCode::RANGE_NOT_SATISFIABLE {
            h.insert(CONTENT_TYPE, e.content_type);
        }
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    if let Some(v) = content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
        h.insert(CONTENT_RANGE, v);
    }
    h.extend(validators);
    r
}

/// The origin's clock (`TIME_PATH`), as the ISO 8601 text `urn:mpeg:dash:utc:http-iso:2014`
/// asks for; never stored by a cache.
fn now(head: bool) -> Response<Full<Bytes>> {
    let text = clock::format_utc(SystemTime::now());
    let len = text.len();
    let mut r = Response::new(Full::new(if head {
        Bytes::new()
    } else {
        Bytes::from(text)
    }));
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

pub(super) fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl Origin {
    /// What `/live/<key>` serves: the current rendering of a live playlist or MPD, or a file,
    /// a segment of a loop directory or a `$Number$` past the first loop, retimed to its loop
    /// where the view shifts timestamps.
    pub(super) fn live(&self, key: &str) -> Option<Entity> {
        let elapsed = self.clock.elapsed();
        let date = |us: Micros| clock::format_utc(self.clock.wall(us));
        if let Some(live) = self.live_hls.get(key) {
            return Some(live.get(live.source.available(elapsed), |p| {
                let w = p.live(elapsed, self.window, date);
                Entity::new(Bytes::from(w.body), HLS_TYPE, self.clock.wall(w.changed_at))
            }));
        }
        if let Some(live) = self.live_dash.get(key) {
            return Some(live.get(live.source.loops(elapsed, self.window), |m| {
                let l = m.live(elapsed, self.window, &self.epoch_text, date);
                Entity::new(
                    Bytes::from(l.body),
                    DASH_TYPE,
                    self.clock.wall(l.published_at),
                )
            }));
        }
        if key.to_ascii_lowercase().ends_with(".mpd") {
            // An MPD that cannot loop (dynamic, multi-Period…) has no live
            // form; serving it static under /live would mislead.
            return None;
        }
        if let Some(e) = self.files.get(key) {
            return Some(e.clone());
        }
        if let Some((file, loops)) = paths::split_loop(key)
            && let Some(&loop_len) = self.looped.get(&file)
        {
            return self.retimed(&file, loops, loop_len);
        }
        let (alias, shift) = self
            .numbered
            .iter()
            .find(|(a, _)| a.resolve(key).is_some())?;
        let (file, loops) = alias.resolve(key)?;
        match shift {
            Some(loop_len) => self.retimed(&file, loops, *loop_len),
            None => self.files.get(&file).cloned(),
        }
    }

    /// Segment `key` as loop `loops` of content `loop_len` long.
    pub(super) fn retimed(&self, key: &str, loops: u64, loop_len: Micros) -> Option<Entity> {
        let file = self.files.get(key)?;
        let r = self.retimable.get(key)?;
        if loops == 0 {
            return Some(file.clone());
        }
        Some(r.retimed(file, loops, loop_len))
    }
}
