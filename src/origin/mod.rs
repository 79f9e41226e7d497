//! The synthetic origin (`streamedge origin`): serves HLS/DASH files, simulates live.
//!
//! # URL layout
//!
//! * `/vod/<key>`: the files as they are. `<key>` is a path relative to the
//!   served root: the bundled demo media (`cmaf/master.m3u8`,
//!   `cmaf/manifest.mpd`, and the CMAF segments both of them share) or the
//!   `--dir` directory.
//! * `/live/<key>`: the same files presented as a live stream that loops the
//!   content forever. HLS media playlists (those with `#EXTINF`) become
//!   sliding windows ([`hls`]); a static single-Period MPD becomes a dynamic
//!   MPD with one Period per loop ([`dash`]); everything else, multivariant
//!   playlists included, is served unchanged, so relative URIs land on the
//!   live media playlists and on the same segment bytes as `/vod`.
//!
//! # Time
//!
//! All live views read one clock ([`clock::LiveClock`]) whose epoch is the
//! origin start minus a pre-roll of whole loops, long enough that every
//! sliding window and time-shift buffer is already full on the first request
//! (otherwise a fresh origin would hand out empty playlists for
//! `live_window` segment durations). `availabilityStartTime` is that epoch;
//! HLS media sequence numbers count segments since it. Renderings are pure
//! functions of the elapsed time, cached until the window moves.
//!
//! # Responses
//!
//! Files carry `Content-Length`, a strong `ETag` (fingerprint of the bytes,
//! computed once), and `Last-Modified` (origin start for embedded media, the
//! file's mtime for `--dir`). Live playlists and MPDs get validators that
//! change exactly when the window moves, `Last-Modified` being the moment it
//! did. `If-None-Match` / `If-Modified-Since` are honoured with 304 so an
//! edge can revalidate. No `Cache-Control` is sent: the edge under test
//! derives TTLs itself. `Range` is ignored (a full 200 is a valid answer).
//! The configured delay is slept before every response, errors included.
//!
//! # Serving
//!
//! Everything is in memory as `Bytes` (see [`files`] for `--dir`), the
//! connection handling is hyper-util's auto builder (HTTP/1.1 with keep-alive
//! and HTTP/2 prior knowledge over plain TCP) with `TCP_NODELAY`, and the
//! only lock on the request path guards a live rendering for the moment it
//! takes to clone it.

mod clock;
mod dash;
mod files;
mod hls;
mod media;
mod paths;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    ALLOW, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use clock::{LiveClock, Micros};
use files::Entity;

/// How the origin serves.
#[derive(Debug, Clone)]
pub struct OriginOptions {
    /// Directory to serve; `None` serves the bundled demo media (embedded in
    /// the binary, so it works from any working directory).
    pub dir: Option<PathBuf>,
    /// Added before every response's headers (simulated origin latency).
    pub delay: Duration,
    /// Segments in a live sliding window (and the DASH time-shift buffer).
    pub live_window: usize,
}

impl Default for OriginOptions {
    fn default() -> Self {
        OriginOptions {
            dir: None,
            delay: Duration::ZERO,
            live_window: 6,
        }
    }
}

/// Paths a player can open on this origin when it serves the demo media, as
/// (label, path) pairs.
pub fn demo_paths() -> Vec<(&'static str, &'static str)> {
    vec![
        ("VOD HLS", "/vod/cmaf/master.m3u8"),
        ("VOD DASH", "/vod/cmaf/manifest.mpd"),
        ("live HLS", "/live/cmaf/master.m3u8"),
        ("live DASH", "/live/cmaf/manifest.mpd"),
    ]
}

/// Serves until `shutdown` resolves, then stops accepting and returns.
/// Binding is the caller's job (tests bind 127.0.0.1:0).
pub async fn serve(
    listener: TcpListener,
    opts: OriginOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with_live_start(listener, opts, SystemTime::now(), shutdown).await
}

/// [`serve`], with the live streams behaving as if the origin had started at
/// `live_start`: a test can put a segment boundary a few milliseconds ahead
/// instead of sleeping through a whole segment duration.
pub async fn serve_with_live_start(
    listener: TcpListener,
    opts: OriginOptions,
    live_start: SystemTime,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let loaded = match &opts.dir {
        None => files::embedded(live_start),
        Some(dir) => {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || files::load_dir(&dir))
                .await
                .map_err(io::Error::other)??
        }
    };
    let origin = Arc::new(Origin::new(loaded, &opts, live_start));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Playlists and small segments are latency-bound; don't
                    // let Nagle hold the last packet of a response.
                    let _ = stream.set_nodelay(true);
                    let origin = origin.clone();
                    let service = service_fn(move |req| {
                        let origin = origin.clone();
                        async move { Ok::<_, Infallible>(origin.handle(req).await) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    connections.spawn(graceful.watch(conn));
                }
                Err(e) => {
                    // Typically EMFILE under load: back off instead of spinning.
                    tracing::warn!(error = %e, "origin: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // In-flight requests may finish and idle keep-alive connections close at
    // once; a client that holds on longer is cut off rather than waited for.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    connections.shutdown().await;
    Ok(())
}

const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const HLS_TYPE: &str = "application/vnd.apple.mpegurl";
const DASH_TYPE: &str = "application/dash+xml";

struct Origin {
    files: HashMap<String, Entity>,
    live_hls: HashMap<String, Live<hls::MediaPlaylist, u64>>,
    live_dash: HashMap<String, Live<dash::LiveMpd, (u64, u64)>>,
    aliases: Vec<dash::NumberAlias>,
    clock: LiveClock,
    epoch_text: String,
    window: usize,
    delay: Duration,
}

/// A live view and its latest rendering, keyed by what makes it change.
struct Live<T, K> {
    source: T,
    latest: Mutex<Option<(K, Entity)>>,
}

impl<T, K: PartialEq + Copy> Live<T, K> {
    fn new(source: T) -> Self {
        Live {
            source,
            latest: Mutex::new(None),
        }
    }

    fn get(&self, key: K, render: impl FnOnce(&T) -> Entity) -> Entity {
        // A panic elsewhere cannot leave a half-written cache entry (the
        // Option is replaced whole), so a poisoned lock is still usable.
        let cached = |latest: &Mutex<Option<(K, Entity)>>| {
            let guard = latest.lock().unwrap_or_else(|e| e.into_inner());
            match &*guard {
                Some((k, e)) if *k == key => Some(e.clone()),
                _ => None,
            }
        };
        if let Some(e) = cached(&self.latest) {
            return e;
        }
        // Rendered outside the lock; concurrent misses render the same text.
        let fresh = render(&self.source);
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, fresh.clone()));
        fresh
    }
}

impl Origin {
    fn new(loaded: Vec<files::Loaded>, opts: &OriginOptions, live_start: SystemTime) -> Origin {
        let window = opts.live_window.max(1);
        let mut files = HashMap::with_capacity(loaded.len());
        let mut live_hls = HashMap::new();
        let mut live_dash = HashMap::new();
        let mut aliases = Vec::new();
        let mut preroll: Micros = 0;
        for file in loaded {
            let lower = file.key.to_ascii_lowercase();
            if lower.ends_with(".m3u8") {
                if let Some(p) = std::str::from_utf8(&file.body)
                    .ok()
                    .and_then(hls::MediaPlaylist::parse)
                {
                    let loops = (window as u64).div_ceil(p.segment_count());
                    preroll = preroll.max(loops.saturating_mul(p.loop_duration()));
                    live_hls.insert(file.key.clone(), Live::new(p));
                }
            } else if lower.ends_with(".mpd") {
                let dir = file.key.rfind('/').map_or("", |i| &file.key[..=i]);
                if let Some(m) = std::str::from_utf8(&file.body)
                    .ok()
                    .and_then(|t| dash::LiveMpd::parse(t, dir))
                {
                    preroll = preroll.max(m.preroll(window));
                    aliases.extend(m.aliases().iter().cloned());
                    live_dash.insert(file.key.clone(), Live::new(m));
                }
            }
            let ctype = files::content_type(&file.key);
            files.insert(file.key, Entity::new(file.body, ctype, file.modified));
        }
        // Whole seconds keep availabilityStartTime a round number.
        let preroll = preroll.div_ceil(clock::MICROS_PER_SEC) * clock::MICROS_PER_SEC;
        let clock = LiveClock::new(live_start, preroll);
        Origin {
            files,
            live_hls,
            live_dash,
            aliases,
            epoch_text: clock::format_utc(clock.epoch()),
            clock,
            window,
            delay: opts.delay,
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.respond(req.method(), req.uri().path(), req.headers())
    }

    fn respond(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response<Full<Bytes>> {
        let head = method == Method::HEAD;
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
        };
        match entity {
            Some(e) => entity_response(e, head, headers),
            None => plain(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn live(&self, key: &str) -> Option<Entity> {
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
        self.aliases
            .iter()
            .find_map(|a| a.resolve(key))
            .and_then(|k| self.files.get(&k).cloned())
    }
}

fn entity_response(e: Entity, head: bool, req: &HeaderMap) -> Response<Full<Bytes>> {
    let not_modified = match req.get(IF_NONE_MATCH) {
        Some(inm) => etag_matches(inm, &e.etag),
        None => req
            .get(IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| e.modified <= since),
    };
    let len = e.body.len() as u64;
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if head {
        (StatusCode::OK, Bytes::new())
    } else {
        (StatusCode::OK, e.body)
    };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if status == StatusCode::OK {
        h.insert(CONTENT_TYPE, e.content_type);
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    h.insert(ETAG, e.etag);
    h.insert(LAST_MODIFIED, e.last_modified);
    r
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2).
fn etag_matches(header: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(list) = header.to_str() else {
        return false;
    };
    let ours = etag.as_bytes();
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).as_bytes() == ours)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(window: usize) -> Origin {
        let opts = OriginOptions {
            live_window: window,
            ..OriginOptions::default()
        };
        Origin::new(files::embedded(SystemTime::now()), &opts, SystemTime::now())
    }

    fn get(o: &Origin, path: &str) -> Response<Full<Bytes>> {
        o.respond(&Method::GET, path, &HeaderMap::new())
    }

    #[test]
    fn demo_paths_resolve() {
        let o = origin(6);
        for (label, path) in demo_paths() {
            let r = get(&o, path);
            assert_eq!(r.status(), StatusCode::OK, "{label} {path}");
        }
    }

    #[test]
    fn demo_media_goes_live_with_a_full_window() {
        let o = origin(6);
        assert_eq!(o.live_hls.len(), 2);
        assert_eq!(o.live_dash.len(), 1);
        assert_eq!(o.aliases.len(), 2);
        // One 12 s loop of pre-roll fills six 2 s segments.
        let e = o.live("cmaf/media_0.m3u8").unwrap();
        let text = std::str::from_utf8(&e.body).unwrap();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("seg-0-")).count(),
            6,
            "{text}"
        );
        assert!(o.live("cmaf/master.m3u8").is_some());
        assert!(o.live("cmaf/seg-0-001.m4s").is_some());
        assert_eq!(
            o.live("cmaf/seg-0-007.m4s").unwrap().body,
            o.files["cmaf/seg-0-001.m4s"].body
        );
        assert!(o.live("cmaf/seg-0-000.m4s").is_none());
        assert_eq!(o.files["cmaf/master.m3u8"].content_type, HLS_TYPE);
    }

    #[test]
    fn conditional_requests() {
        let o = origin(6);
        let r = get(&o, "/vod/cmaf/init-0.m4s");
        let etag = r.headers()[ETAG].clone();
        let lm = r.headers()[LAST_MODIFIED].clone();
        let ask = |name, value: &HeaderValue| {
            let mut h = HeaderMap::new();
            h.insert(name, value.clone());
            o.respond(&Method::GET, "/vod/cmaf/init-0.m4s", &h).status()
        };
        assert_eq!(ask(IF_NONE_MATCH, &etag), StatusCode::NOT_MODIFIED);
        let weak_list =
            HeaderValue::from_str(&format!("\"nope\", W/{}", etag.to_str().unwrap())).unwrap();
        assert_eq!(ask(IF_NONE_MATCH, &weak_list), StatusCode::NOT_MODIFIED);
        assert_eq!(
            ask(IF_NONE_MATCH, &HeaderValue::from_static("\"other\"")),
            StatusCode::OK
        );
        assert_eq!(ask(IF_MODIFIED_SINCE, &lm), StatusCode::NOT_MODIFIED);
        let old = HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(ask(IF_MODIFIED_SINCE, &old), StatusCode::OK);
        assert_eq!(
            ask(IF_MODIFIED_SINCE, &HeaderValue::from_static("garbage")),
            StatusCode::OK
        );
    }

    #[test]
    fn methods_and_errors() {
        let o = origin(6);
        for m in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::PATCH,
        ] {
            let r = o.respond(&m, "/vod/cmaf/master.m3u8", &HeaderMap::new());
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        }
        assert_eq!(
            get(&o, "/vod/cmaf/nope.m4s").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&o, "/vod/../Cargo.toml").status(),
            StatusCode::BAD_REQUEST
        );
        let r = o.respond(&Method::HEAD, "/vod/cmaf/seg-0-001.m4s", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[CONTENT_LENGTH].to_str().unwrap(),
            o.files["cmaf/seg-0-001.m4s"].body.len().to_string()
        );
    }

    #[test]
    fn live_renderings_are_cached_until_the_window_moves() {
        let live = Live::new(());
        let mut renders = 0;
        let mut render = |_: &()| {
            renders += 1;
            Entity::new(Bytes::from_static(b"x"), HLS_TYPE, SystemTime::now())
        };
        live.get(1u64, &mut render);
        live.get(1u64, &mut render);
        live.get(2u64, &mut render);
        assert_eq!(renders, 2);
    }
}
