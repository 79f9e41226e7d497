//! The synthetic origin (`streamedge origin`): serves HLS/DASH files, simulates live.
//!
//! # URL layout
//!
//! * `/vod/<key>`: the files as they are. `<key>` is a path relative to the
//!   served root: the bundled demo media (`hls/master.m3u8` and
//!   `dash/manifest.mpd`, each with the CMAF segments both formats share
//!   beside it; see [`demo_paths`]) or the `--dir` directory.
//! * `/live/<key>`: the same content as a live stream that loops forever.
//!   HLS media playlists (those with `#EXTINF`) become sliding windows
//!   (`hls`); a static single-Period MPD becomes a dynamic one (`dash`);
//!   everything else, multivariant playlists included, is served unchanged,
//!   so relative URIs land on the live media playlists and segments.
//!
//! # Live segments
//!
//! The loop boundary is a real discontinuity (the picture's clock jumps back
//! to 0), and every loop opens with `#EXT-X-DISCONTINUITY`. What the segment
//! bytes do there depends on the format:
//!
//! * **Fragmented MP4** (the demo): each loop gets its own URLs, whose bytes
//!   are the VOD segment with its `tfdt`/`sidx` decode times moved forward by
//!   whole loops (`mp4`), so timestamps only ever increase, as from a real
//!   encoder. HLS lists loop `k` of `seg.m4s` as `loop-k/seg.m4s`; DASH uses
//!   one Period and `$Number$` counted from `availabilityStartTime`, number
//!   `n` being segment `n % count` of loop `n / count` (1-based as the
//!   template says). The same loop is the same bytes under both.
//! * **Anything else** (MPEG-TS, byte ranges, `$Time$` templates): the VOD
//!   bytes under their own names, timestamps restarting every loop; DASH then
//!   gets one Period per loop.
//!
//! Any loop can be fetched, past or future: availability windows are not
//! enforced, because ffmpeg's DASH demuxer reads ahead of the live edge and
//! skips a segment that fails instead of retrying it.
//!
//! Why not serve fMP4 loops unchanged, too: ffmpeg cannot play that. With
//! audio and video in separate renditions, its HLS demuxer picks packets by
//! lowest DTS, so the first stream to wrap back to 0 is drained while the
//! other waits, and ffmpeg's per-input discontinuity correction flips
//! between the two; its DASH demuxer ignores Period timing altogether (see
//! `dash`). Either way, `ffmpeg -t 6` stalls whenever it reads across a
//! loop. With continuous timestamps it plays like any live stream, and an
//! edge sees what real live traffic looks like: new segment URLs every few
//! seconds, each one fetched once and then served from cache.
//!
//! # Time
//!
//! All live views read one clock (`clock::LiveClock`) whose epoch is the
//! origin start (whole second) minus a pre-roll of whole loops, long enough
//! that every sliding window and time-shift buffer is already full on the
//! first request. Otherwise a fresh origin would hand out empty playlists
//! for `live_window` segment durations. `availabilityStartTime` is that
//! epoch; HLS media sequence numbers count segments since it. Renderings are
//! pure functions of the elapsed time, cached until the window moves.
//!
//! # Responses
//!
//! Files carry `Content-Length`, a strong `ETag` (fingerprint of the bytes,
//! computed once; retimed segments get their own), and `Last-Modified`
//! (origin start for embedded media, the file's mtime for `--dir`). Live
//! playlists and MPDs get validators that change exactly when their text
//! does, `Last-Modified` being the moment the window moved. `If-None-Match`
//! and `If-Modified-Since` are answered with 304 so an edge can revalidate;
//! a single `Range` gets 206 (byte-range playlists need it), several get the
//! whole entity. No `Cache-Control` is sent: the edge under test derives
//! TTLs itself. The configured delay is slept before every response, errors
//! included.
//!
//! # Serving
//!
//! Everything is in memory as `Bytes` (see `files` for `--dir`). A retimed
//! segment is built once per loop and kept while that loop is live.
//! Connections go through hyper-util's auto builder (HTTP/1.1 with
//! keep-alive, and HTTP/2 with prior knowledge, over plain TCP) with
//! `TCP_NODELAY`. The only locks on the request path guard a live rendering
//! or a retimed segment for the moment it takes to clone it.

mod clock;
mod dash;
mod files;
mod hls;
mod media;
mod mp4;
mod paths;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, ALLOW, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, LAST_MODIFIED,
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

use crate::accept::Acceptor;
use crate::cache::conditional::{self, RangeRequest};
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
    /// Segments in a live sliding window (and the DASH time-shift buffer);
    /// taken as at least 1 and at most 10 000.
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
        ("VOD HLS", "/vod/hls/master.m3u8"),
        ("VOD DASH", "/vod/dash/manifest.mpd"),
        ("live HLS", "/live/hls/master.m3u8"),
        ("live DASH", "/live/dash/manifest.mpd"),
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
    serve_connections(listener, origin, shutdown).await;
    Ok(())
}

/// Accepts and serves connections until `shutdown` resolves; then in-flight requests may finish
/// and idle keep-alive connections close at once, and a client that holds on longer than
/// [`SHUTDOWN_GRACE`] is cut off rather than waited for.
async fn serve_connections(
    listener: TcpListener,
    origin: Arc<Origin>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // Accept errors are logged, not counted: the edge's metrics are not the origin's.
    let mut acceptor = Acceptor::new(listener, "origin", || {});
    while let Some((stream, _)) = acceptor.next(shutdown.as_mut()).await {
        // Connections that have ended are let go of as new ones come.
        while connections.try_join_next().is_some() {}
        let origin = origin.clone();
        let service = service_fn(move |req| {
            let origin = origin.clone();
            async move { Ok::<_, Infallible>(origin.handle(req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        connections.spawn(graceful.watch(conn));
    }
    drop(acceptor);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    connections.shutdown().await;
}

const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const HLS_TYPE: &str = "application/vnd.apple.mpegurl";
const DASH_TYPE: &str = "application/dash+xml";

/// `live_window` is clamped to this: a window is rendered on every move, and
/// ten thousand segments is already hours of content.
const MAX_WINDOW: usize = 10_000;

/// Retimed copies kept per segment: a live window spans at most two loops,
/// and a couple more cover players lagging behind.
const RETIMED_COPIES: usize = 4;

struct Origin {
    files: HashMap<String, Entity>,
    live_hls: HashMap<String, Live<hls::MediaPlaylist, u64>>,
    live_dash: HashMap<String, Live<dash::LiveMpd, (u64, u64)>>,
    /// Segments that live HLS playlists list in loop directories, with the
    /// loop length to shift them by.
    looped: HashMap<String, Micros>,
    /// `$Number$` segments of live MPDs, with the loop length to shift them
    /// by when the MPD is on the continuous timeline.
    numbered: Vec<(dash::NumberAlias, Option<Micros>)>,
    /// Segments whose decode times can be shifted.
    retimable: HashMap<String, Retimable>,
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
        if let Some((k, e)) = &*self.latest.lock().unwrap_or_else(|e| e.into_inner())
            && *k == key
        {
            return e.clone();
        }
        // Rendered outside the lock; concurrent misses render the same text.
        let fresh = render(&self.source);
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, fresh.clone()));
        fresh
    }
}

struct Retimable {
    sites: Vec<mp4::Site>,
    /// ((loops, loop length), segment) for the latest few loops served.
    recent: Mutex<VecDeque<((u64, Micros), Entity)>>,
}

impl Origin {
    fn new(loaded: Vec<files::Loaded>, opts: &OriginOptions, live_start: SystemTime) -> Origin {
        let window = opts.live_window.clamp(1, MAX_WINDOW);
        let mut files = HashMap::with_capacity(loaded.len());
        let mut manifests = Vec::new();
        for file in loaded {
            let lower = file.key.to_ascii_lowercase();
            if lower.ends_with(".m3u8") || lower.ends_with(".mpd") {
                manifests.push(file.key.clone());
            }
            let ctype = files::content_type(&file.key);
            files.insert(file.key, Entity::new(file.body, ctype, file.modified));
        }
        manifests.sort();

        let mut origin = Origin {
            files,
            live_hls: HashMap::new(),
            live_dash: HashMap::new(),
            looped: HashMap::new(),
            numbered: Vec::new(),
            retimable: HashMap::new(),
            clock: LiveClock::new(live_start, 0),
            epoch_text: String::new(),
            window,
            delay: opts.delay,
        };
        let mut inits = HashMap::new();
        let mut preroll: Micros = 0;
        for key in manifests {
            let dir = key.rfind('/').map_or("", |i| &key[..=i]).to_owned();
            let Some(text) = origin
                .files
                .get(&key)
                .and_then(|e| std::str::from_utf8(&e.body).ok().map(str::to_owned))
            else {
                continue;
            };
            if key.to_ascii_lowercase().ends_with(".m3u8") {
                let Some(mut p) = hls::MediaPlaylist::parse(&text) else {
                    continue;
                };
                let segments = p.fmp4_segments().and_then(|segs| {
                    segs.iter()
                        .map(|s| {
                            let init = paths::join_plain(&dir, &s.init)?;
                            let seg = paths::join_plain(&dir, &s.uri)?;
                            let sites = origin.sites(&seg, &init, &mut inits)?;
                            Some((seg, sites))
                        })
                        .collect::<Option<Vec<_>>>()
                });
                if let Some(segments) = segments {
                    for (seg, sites) in segments {
                        origin
                            .looped
                            .entry(seg.clone())
                            .or_insert(p.loop_duration());
                        origin.add_retimable(seg, sites);
                    }
                    p.use_loop_dirs();
                }
                let loops = (window as u64).div_ceil(p.segment_count());
                preroll = preroll.max(loops.saturating_mul(p.loop_duration()));
                origin.live_hls.insert(key, Live::new(p));
            } else {
                let Some(mut m) = dash::LiveMpd::parse(&text, &dir) else {
                    continue;
                };
                let mut shift = None;
                if m.can_be_continuous() {
                    let segments = m
                        .aliases()
                        .iter()
                        .flat_map(|a| a.keys().map(move |k| (k, a.init.clone())))
                        .map(|(seg, init)| {
                            let sites = origin.sites(&seg, init.as_deref()?, &mut inits)?;
                            Some((seg, sites))
                        })
                        .collect::<Option<Vec<_>>>();
                    if let Some(segments) = segments {
                        for (seg, sites) in segments {
                            origin.add_retimable(seg, sites);
                        }
                        m.use_continuous_timeline();
                        shift = Some(m.loop_duration());
                    }
                }
                origin
                    .numbered
                    .extend(m.aliases().iter().cloned().map(|a| (a, shift)));
                preroll = preroll.max(m.preroll(window));
                origin.live_dash.insert(key, Live::new(m));
            }
        }
        // Whole seconds, like the origin start the clock rounds down to, so
        // availabilityStartTime is a whole second too.
        let preroll = preroll
            .div_ceil(clock::MICROS_PER_SEC)
            .saturating_mul(clock::MICROS_PER_SEC);
        origin.clock = LiveClock::new(live_start, preroll);
        origin.epoch_text = clock::format_utc(origin.clock.epoch());
        origin
    }

    /// The decode-time fields of segment `seg` as described by `init`, if
    /// both are fragmented MP4 that fit together.
    fn sites(
        &self,
        seg: &str,
        init: &str,
        inits: &mut HashMap<String, Option<mp4::Timescales>>,
    ) -> Option<Vec<mp4::Site>> {
        let timescales = inits
            .entry(init.to_owned())
            .or_insert_with(|| self.files.get(init).and_then(|e| mp4::timescales(&e.body)))
            .as_ref()?;
        mp4::sites(&self.files.get(seg)?.body, timescales)
    }

    fn add_retimable(&mut self, key: String, sites: Vec<mp4::Site>) {
        self.retimable.entry(key).or_insert_with(|| Retimable {
            sites,
            recent: Mutex::new(VecDeque::with_capacity(RETIMED_COPIES)),
        });
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let mut resp = self.respond(req.method(), req.uri().path(), req.headers());
        // Browser players (hls.js, dash.js) on any page may fetch the demo media.
        resp.headers_mut().insert(
            http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        resp
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
    fn retimed(&self, key: &str, loops: u64, loop_len: Micros) -> Option<Entity> {
        let file = self.files.get(key)?;
        let r = self.retimable.get(key)?;
        if loops == 0 {
            return Some(file.clone());
        }
        let id = (loops, loop_len);
        {
            let recent = r.recent.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, e)) = recent.iter().find(|(k, _)| *k == id) {
                return Some(e.clone());
            }
        }
        let e = file.with_body(Bytes::from(mp4::shift(
            &file.body, &r.sites, loops, loop_len,
        )));
        let mut recent = r.recent.lock().unwrap_or_else(|e| e.into_inner());
        if !recent.iter().any(|(k, _)| *k == id) {
            if recent.len() == RETIMED_COPIES {
                recent.pop_front();
            }
            recent.push_back((id, e.clone()));
        }
        Some(e)
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
    use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, RANGE};

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
        assert!(o.live_dash["dash/manifest.mpd"].source.is_continuous());
        assert_eq!(o.numbered.len(), 2);
        assert!(
            o.numbered
                .iter()
                .all(|(_, shift)| *shift == Some(12_000_000))
        );
        assert_eq!(o.looped.len(), 12);
        assert_eq!(o.retimable.len(), 24);
        // One 12 s loop of pre-roll fills six 2 s segments.
        for (playlist, prefix) in [
            ("hls/media_0.m3u8", "seg-0-"),
            ("hls/media_1.m3u8", "seg-1-"),
        ] {
            let e = o.live(playlist).unwrap();
            let text = std::str::from_utf8(&e.body).unwrap();
            let uris: Vec<_> = text.lines().filter(|l| !l.starts_with('#')).collect();
            assert_eq!(uris.len(), 6, "{text}");
            assert!(
                uris.iter()
                    .all(|u| u.starts_with("loop-") && u.contains(prefix)),
                "{text}"
            );
        }
        assert!(o.live("hls/master.m3u8").is_some());
        assert_eq!(o.epoch_text.len(), "2024-01-01T00:00:00.000Z".len());
        assert!(o.epoch_text.ends_with(".000Z"));
    }

    #[test]
    fn live_segments_carry_their_loops_timestamps() {
        let o = origin(6);
        let file = &o.files["hls/seg-0-002.m4s"].body;
        // Loop 0 (plain or loop-0) is the file itself.
        assert_eq!(&o.live("hls/seg-0-002.m4s").unwrap().body, file);
        assert_eq!(&o.live("hls/loop-0/seg-0-002.m4s").unwrap().body, file);
        // Loop 5 through HLS's loop directory and DASH's number 5 * 6 + 2
        // are the same bytes: the file shifted by 60 s.
        let hls = o.live("hls/loop-5/seg-0-002.m4s").unwrap();
        let dash = o.live("dash/seg-0-032.m4s").unwrap();
        assert_eq!(hls.body, dash.body);
        assert_eq!(hls.etag, dash.etag);
        assert_ne!(&hls.body, file);
        assert_ne!(hls.etag, o.files["hls/seg-0-002.m4s"].etag);
        let ts = mp4::timescales(&o.files["hls/init-0.m4s"].body).unwrap();
        let sites = mp4::sites(file, &ts).unwrap();
        assert_eq!(mp4::shift(file, &sites, 5, 12_000_000), hls.body.to_vec());
        // Cached: the second request is the same allocation.
        let again = o.live("hls/loop-5/seg-0-002.m4s").unwrap();
        assert_eq!(again.body.as_ptr(), hls.body.as_ptr());
        // Not a segment, or not one of these.
        assert!(o.live("hls/loop-5/init-0.m4s").is_none());
        assert!(o.live("hls/loop-5/nope.m4s").is_none());
        assert!(o.live("dash/seg-0-000.m4s").is_none());
        assert!(!o.files.contains_key("hls/loop-5/seg-0-002.m4s"));
    }

    #[test]
    fn ranges() {
        let o = origin(6);
        let full = o.files["hls/seg-1-001.m4s"].body.clone();
        let ask = |range: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(RANGE, HeaderValue::from_static(range));
            o.respond(&Method::GET, "/vod/hls/seg-1-001.m4s", &h)
        };
        let header = |r: &Response<Full<Bytes>>, name| {
            r.headers()
                .get(name)
                .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
        };
        let total = full.len();
        let r = ask("bytes=0-99");
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            header(&r, CONTENT_RANGE),
            Some(format!("bytes 0-99/{total}"))
        );
        assert_eq!(header(&r, CONTENT_LENGTH).as_deref(), Some("100"));
        let r = ask("bytes=100-");
        assert_eq!(
            header(&r, CONTENT_RANGE),
            Some(format!("bytes 100-{}/{total}", total - 1))
        );
        let r = ask("bytes=-10");
        assert_eq!(
            header(&r, CONTENT_RANGE),
            Some(format!("bytes {}-{}/{total}", total - 10, total - 1))
        );
        let r = ask("bytes=0-999999999");
        assert_eq!(header(&r, CONTENT_LENGTH), Some(total.to_string()));
        let r = ask("bytes=999999999-");
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(header(&r, CONTENT_RANGE), Some(format!("bytes */{total}")));
        for ignored in [
            "bytes=5-2",
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
        ] {
            assert_eq!(ask(ignored).status(), StatusCode::OK, "{ignored}");
        }
        let resolved = |range: &'static str, len| {
            let mut h = HeaderMap::new();
            h.insert(RANGE, HeaderValue::from_static(range));
            conditional::resolve(&conditional::parse_range(&h).unwrap(), len)
        };
        assert_eq!(resolved("bytes=-0", 10), RangeRequest::Unsatisfiable);
        assert_eq!(resolved("bytes=0-", 0), RangeRequest::Unsatisfiable);
        // If-Range: the range applies while the entity is the one the client names.
        let whole = get(&o, "/vod/hls/seg-1-001.m4s");
        for (validator, status) in [
            (whole.headers()[ETAG].clone(), StatusCode::PARTIAL_CONTENT),
            (
                whole.headers()[LAST_MODIFIED].clone(),
                StatusCode::PARTIAL_CONTENT,
            ),
            (HeaderValue::from_static("\"other\""), StatusCode::OK),
        ] {
            let mut h = HeaderMap::new();
            h.insert(RANGE, HeaderValue::from_static("bytes=0-9"));
            h.insert(IF_RANGE, validator.clone());
            let r = o.respond(&Method::GET, "/vod/hls/seg-1-001.m4s", &h);
            assert_eq!(r.status(), status, "{validator:?}");
        }
    }

    #[test]
    fn conditional_requests() {
        let o = origin(6);
        let r = get(&o, "/vod/hls/init-0.m4s");
        let etag = r.headers()[ETAG].clone();
        let lm = r.headers()[LAST_MODIFIED].clone();
        let ask = |name, value: &HeaderValue| {
            let mut h = HeaderMap::new();
            h.insert(name, value.clone());
            o.respond(&Method::GET, "/vod/hls/init-0.m4s", &h).status()
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
            let r = o.respond(&m, "/vod/hls/master.m3u8", &HeaderMap::new());
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        }
        assert_eq!(get(&o, "/vod/hls/nope.m4s").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            get(&o, "/vod/../Cargo.toml").status(),
            StatusCode::BAD_REQUEST
        );
        let r = o.respond(&Method::HEAD, "/vod/hls/seg-0-001.m4s", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[CONTENT_LENGTH].to_str().unwrap(),
            o.files["hls/seg-0-001.m4s"].body.len().to_string()
        );
    }

    /// Truncated, bit-flipped and spliced versions of the demo files through
    /// every parser, renderer and the whole origin: nothing may panic.
    #[test]
    fn malformed_input_never_panics() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let video = mp4::timescales(&origin(6).files["hls/init-0.m4s"].body).unwrap();
        let times = [0, 1, 12_345_678, 3_600_000_000, u64::MAX / 2, u64::MAX];
        for (i, (key, original)) in media::FILES.iter().enumerate() {
            for round in 0..150 {
                let mut b = original.to_vec();
                let len = b.len() as u64;
                match round % 3 {
                    0 => b.truncate((next() % len) as usize),
                    1 => {
                        for _ in 0..1 + next() % 4 {
                            let at = (next() % len) as usize;
                            b[at] ^= 1 << (next() % 8);
                        }
                    }
                    _ => {
                        let at = (next() % len) as usize;
                        let other = media::FILES[(next() as usize) % media::FILES.len()].1;
                        b.splice(at.., other.iter().copied());
                    }
                }
                let text = String::from_utf8_lossy(&b);
                if let Some(p) = hls::MediaPlaylist::parse(&text) {
                    let _ = p.fmp4_segments();
                    for t in times {
                        p.live(t, 6, |_| String::new());
                    }
                }
                if let Some(m) = dash::LiveMpd::parse(&text, "dash/") {
                    let _ = m.can_be_continuous();
                    for t in times {
                        m.live(t, 6, "E", |_| String::new());
                    }
                    for a in m.aliases() {
                        let _ = a.resolve("dash/seg-0-123456.m4s");
                        let _ = a.keys().take(10).count();
                    }
                }
                let _ = mp4::timescales(&b);
                if let Some(s) = mp4::sites(&b, &video) {
                    mp4::shift(&b, &s, u64::MAX, u64::MAX);
                }
                let _ = paths::parse(&format!(
                    "/live/{}",
                    text.chars().take(40).collect::<String>()
                ));

                // The whole origin with this one file damaged.
                if round % 10 == 0 {
                    let mut files = files::embedded(SystemTime::now());
                    files[i].body = Bytes::from(b.clone());
                    let o = Origin::new(files, &OriginOptions::default(), SystemTime::now());
                    for (k, _) in media::FILES {
                        let _ = o.live(k);
                        let name = k.rsplit('/').next().unwrap_or(k);
                        let _ = o.live(&format!("hls/loop-3/{name}"));
                    }
                    let _ = o.live("dash/seg-1-099.m4s");
                    assert!(o.files.contains_key(*key));
                }
            }
        }
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
