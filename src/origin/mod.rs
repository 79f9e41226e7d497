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
//! * `/ll/<key>`: `/live/`, with every media playlist whose fMP4 segments can
//!   be retimed and split made low-latency HLS (`ll`, `hls::ll`): the
//!   segments of the last few seconds also as ~0.5 s parts,
//!   `loop-k/seg.pJ.m4s` (part `J` of `loop-k/seg.m4s`: its samples whose
//!   decode time falls in `[J × 0.5 s, (J + 1) × 0.5 s)` of the segment,
//!   re-fragmented into their own `moof`+`mdat` by `mp4`), an
//!   `EXT-X-PRELOAD-HINT` for the next part, and blocking playlist reloads
//!   (`_HLS_msn`, `_HLS_part`). A blocking reload or a request for one of the
//!   next two parts is held until what it asks for is produced on the live
//!   clock (at most three target durations, then 503); further ahead is 400
//!   (playlist) or 404 (part). Anything else under `/ll/` (the multivariant
//!   playlist, segments, DASH) is what `/live/` serves.
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
//! TTLs itself (for an LL playlist, half its part target). The exceptions are
//! LL-HLS: the answer to a blocking reload gets `max-age=60` (what it was
//! asked for is in it for good), its refusals `no-store`. The configured
//! delay is slept before every response (and before any LL-HLS hold), errors
//! included. A `RequestLog` in the options records every request received,
//! for tests that count what reached the origin.
//!
//! # Serving
//!
//! Everything is in memory as `Bytes` (see `files` for `--dir`). A retimed
//! segment is built once per loop and kept while that loop is live.
//! Connections go through hyper-util's auto builder (HTTP/1.1 with
//! keep-alive, and HTTP/2 with prior knowledge, over plain TCP) with
//! `TCP_NODELAY`. The only locks on the request path guard a live rendering
//! or a retimed segment for the moment it takes to clone it.
//!
//! What the edge also needs is the edge's own code, not a copy: the accept
//! loop (`crate::accept`), preconditions and ranges (`cache::conditional`),
//! percent-decoding (`crate::percent`), HLS attributes and ISO 8601 durations
//! (`crate::syntax`).
//!
//! # Files
//!
//! Here: options, `serve` and the connection loop. `setup` builds the origin
//! from the files (`files`, the embedded demo in `media`); `ll` holds LL-HLS
//! requests until their answer exists, then `respond` answers a request
//! (`paths` says which file it names); `live` renders the live views (`hls`,
//! `dash`) on the `clock`, retimes segments and splits them into parts
//! (`mp4`).

mod clock;
mod dash;
mod files;
mod hls;
mod live;
mod ll;
mod media;
mod mp4;
mod paths;
mod respond;
mod setup;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::accept::Acceptor;
use clock::{LiveClock, Micros};
use files::Entity;
use live::{Live, LowLatencyView, Partable, Retimable};

/// The origin's clock: `GET /time` answers the current UTC time (`2024-05-01T12:00:00.250Z`,
/// `no-store`), which every live MPD names in a `UTCTiming` element.
pub const TIME_PATH: &str = "/time";

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
    /// Where to record every request received (for tests that count what reached the
    /// origin); `None` records nothing.
    pub requests: Option<RequestLog>,
}

impl Default for OriginOptions {
    fn default() -> Self {
        OriginOptions {
            dir: None,
            delay: Duration::ZERO,
            live_window: 6,
            requests: None,
        }
    }
}

/// A shared record of the requests an origin received, in order; clones share it. It grows
/// without bound: it is meant for tests, not for an origin that runs for days.
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    entries: Arc<Mutex<Vec<LoggedRequest>>>,
}

/// One request as the origin received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: http::Method,
    /// Path and query, as sent (`/ll/hls/media_0.m3u8?_HLS_msn=12&_HLS_part=1`).
    pub target: String,
    /// When it arrived (before the configured delay and any hold).
    pub received: tokio::time::Instant,
}

impl RequestLog {
    pub fn new() -> RequestLog {
        RequestLog::default()
    }

    /// Every request so far, oldest first.
    pub fn entries(&self) -> Vec<LoggedRequest> {
        self.lock().clone()
    }

    /// How many requests so far had exactly this path and query.
    pub fn count(&self, target: &str) -> usize {
        self.lock().iter().filter(|e| e.target == target).count()
    }

    fn record(&self, method: &http::Method, uri: &http::Uri) {
        let target = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
        self.lock().push(LoggedRequest {
            method: method.clone(),
            target,
            received: tokio::time::Instant::now(),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<LoggedRequest>> {
        // Entries are pushed whole, so a poisoned log is still a consistent one.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
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
        ("live LL-HLS", "/ll/hls/master.m3u8"),
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

/// Everything the origin serves, built once at start (`setup`) and read by every request
/// (`respond`, `live`).
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
    /// LL-HLS views of the live media playlists whose segments split into parts.
    ll_hls: HashMap<String, LowLatencyView>,
    /// The segments of those playlists, by the (stem, extension) of their parts' names.
    partable: HashMap<(String, String), Partable>,
    clock: LiveClock,
    epoch_text: String,
    window: usize,
    delay: Duration,
    requests: Option<RequestLog>,
}

#[cfg(test)]
mod tests;
