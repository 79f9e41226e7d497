// k6 load test: virtual players watching a live HLS stream through the edge.
//
// Each VU is one player. It loads the multivariant playlist once, picks a variant (and the
// variant's audio rendition, if it has a separate one), then behaves like hls.js / AVPlayer:
//
//   - reload every media playlist once per target duration (#EXT-X-TARGETDURATION); when a
//     reload brings nothing new, retry after half a target duration (RFC 8216 §6.3.4);
//   - fetch every segment it has not fetched before, identified by its media sequence number
//     (so a looping origin that reuses file names is still followed correctly), starting
//     START_SEGMENTS segments from the live edge (hls.js' liveSyncDurationCount is 3);
//   - fetch each init segment (#EXT-X-MAP:URI=...) once;
//   - resolve every URI against the URL of the playlist it appears in (RFC 3986 §5).
//
// One k6 iteration is one reload cycle of one player, so `k6 run` stops promptly at the end
// of DURATION and per-player state lives in module scope (module scope is per VU in k6).
//
// Run:   k6 run loadtest/k6/live-hls.js
//        BASE_URL=https://127.0.0.1:8443 INSECURE=1 VUS=200 DURATION=5m k6 run loadtest/k6/live-hls.js
//
// Env:   BASE_URL        edge base URL                        (http://127.0.0.1:8080)
//        MANIFEST        multivariant playlist path            (/live/hls/master.m3u8)
//        VUS             concurrent players                    (50)
//        DURATION        test duration                         (2m)
//        RAMP            ramp-up time for the players, 0 = all at once   (30s)
//        INSECURE        1 = skip TLS certificate verification (the demo's self-signed cert)
//        VARIANT         random | lowest | highest | <index in the playlist>   (random)
//        START_SEGMENTS  segments behind the live edge to start with   (3)
//        P95_PLAYLIST_MS p(95) threshold for playlist requests (ms)    (250)
//        P95_SEGMENT_MS  p(95) threshold for segment requests (ms)     (1000)

import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Rate } from 'k6/metrics';
import { resolveUrl, parseAttributes, lines } from './lib.js';

const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const MANIFEST = __ENV.MANIFEST || '/live/hls/master.m3u8';
const VUS = parseInt(__ENV.VUS || '50', 10);
const DURATION = __ENV.DURATION || '2m';
const RAMP = __ENV.RAMP || '30s';
const VARIANT = (__ENV.VARIANT || 'random').toLowerCase();
const START_SEGMENTS = Math.max(1, parseInt(__ENV.START_SEGMENTS || '3', 10));
const INSECURE = /^(1|true|yes)$/i.test(__ENV.INSECURE || '');

export const options = {
  insecureSkipTLSVerify: INSECURE,
  scenarios: {
    live_players: RAMP === '0' || RAMP === '0s'
      ? { executor: 'constant-vus', vus: VUS, duration: DURATION, gracefulStop: '10s' }
      : {
        executor: 'ramping-vus',
        startVUs: 0,
        stages: [{ duration: RAMP, target: VUS }, { duration: DURATION, target: VUS }],
        gracefulRampDown: '5s',
        gracefulStop: '10s',
      },
  },
  thresholds: {
    // Errors: status >= 400 or a transport failure, on any request (k6's built-in rate).
    http_req_failed: ['rate<0.001'],
    // Latency (request start to last body byte), per request type via the `type` tag.
    [`http_req_duration{type:playlist}`]: [`p(95)<${__ENV.P95_PLAYLIST_MS || 250}`],
    [`http_req_duration{type:segment}`]: [`p(95)<${__ENV.P95_SEGMENT_MS || 1000}`],
    // Informational (no threshold): listed so their sub-metrics appear in the summary.
    [`http_req_duration{type:init}`]: ['max>=0'],
    [`http_req_waiting{type:segment}`]: ['max>=0'],
  },
  // Segment URLs are unique; the `name` tag (set on every request) keeps the number of
  // time series small, so k6 does not need to track one per URL.
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

// Custom metrics.
const segmentsFetched = new Counter('segments_fetched');
const segmentsSkipped = new Counter('segments_skipped'); // fell out of the window unfetched
const segmentSlow = new Rate('segment_slower_than_realtime'); // download > its duration
const edgeHit = new Rate('edge_cache_hit'); // Cache-Status: answered from the edge's cache

// ---------------------------------------------------------------------------------------------
// Playlist parsing (RFC 8216), lenient: unknown tags are ignored.

// Multivariant playlist -> { variants: [{uri, bandwidth, audio}], audio: {group: [{uri, def}]} }
// A media playlist given as the "multivariant" yields one variant: itself.
export function parseMultivariant(text, url) {
  const ls = lines(text);
  const variants = [];
  const audio = {};
  let pending = null;
  for (const l of ls) {
    if (l.startsWith('#EXT-X-STREAM-INF:')) {
      const a = parseAttributes(l.slice(18));
      pending = { bandwidth: parseInt(a.BANDWIDTH || '0', 10), audio: a.AUDIO || null };
    } else if (l.startsWith('#EXT-X-MEDIA:')) {
      const a = parseAttributes(l.slice(13));
      if (a.TYPE === 'AUDIO' && a.URI) {
        const g = a['GROUP-ID'] || '';
        (audio[g] = audio[g] || []).push({ uri: resolveUrl(url, a.URI), def: a.DEFAULT === 'YES' });
      }
    } else if (!l.startsWith('#') && pending) {
      pending.uri = resolveUrl(url, l);
      variants.push(pending);
      pending = null;
    }
  }
  if (variants.length === 0 && ls.some((l) => l.startsWith('#EXTINF'))) {
    variants.push({ uri: url, bandwidth: 0, audio: null });
  }
  return { variants, audio };
}

// Media playlist -> { target, msn (of the first segment), endList, segments: [{msn, uri, dur, map}] }
export function parseMedia(text, url) {
  const out = { target: 0, msn: 0, endList: false, segments: [] };
  let dur = 0;
  let map = null;
  let msn = null;
  for (const l of lines(text)) {
    if (l.startsWith('#EXT-X-TARGETDURATION:')) {
      out.target = parseFloat(l.slice(22)) || 0;
    } else if (l.startsWith('#EXT-X-MEDIA-SEQUENCE:')) {
      out.msn = parseInt(l.slice(22), 10) || 0;
    } else if (l.startsWith('#EXTINF:')) {
      dur = parseFloat(l.slice(8)) || 0;
    } else if (l.startsWith('#EXT-X-MAP:')) {
      const a = parseAttributes(l.slice(11));
      map = a.URI ? resolveUrl(url, a.URI) : null;
    } else if (l.startsWith('#EXT-X-ENDLIST')) {
      out.endList = true;
    } else if (!l.startsWith('#')) {
      if (msn === null) msn = out.msn;
      out.segments.push({ msn, uri: resolveUrl(url, l), dur, map });
      msn += 1;
      dur = 0;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Requests.

function get(url, type, responseType) {
  const res = http.get(url, {
    tags: { type, name: type }, // `name` groups all URLs of a type into one time series
    responseType: responseType || 'text',
    timeout: '20s',
  });
  check(res, { [`${type} status is 200`]: (r) => r.status === 200 });
  if (res.status > 0) {
    const cs = res.headers['Cache-Status'] || '';
    // Served from the edge's cache: a hit, a stale copy revalidated with a 304, or stale-if-error.
    edgeHit.add(/;\s*hit\b|fwd-status=304|stale-if-error/.test(cs), { type });
  }
  return res;
}

// Per-VU player state (module scope is per VU).
let player = null;

function pickVariant(variants) {
  const sorted = variants.slice().sort((a, b) => a.bandwidth - b.bandwidth);
  if (VARIANT === 'lowest') return sorted[0];
  if (VARIANT === 'highest') return sorted[sorted.length - 1];
  const n = parseInt(VARIANT, 10);
  if (!isNaN(n)) return variants[Math.min(Math.max(n, 0), variants.length - 1)];
  return variants[Math.floor(Math.random() * variants.length)];
}

function startPlayer() {
  const url = BASE_URL + MANIFEST;
  const res = get(url, 'playlist');
  if (res.status !== 200 || !res.body) return null;
  const mv = parseMultivariant(res.body, url);
  if (mv.variants.length === 0) {
    console.error(`no variant in ${url}`);
    return null;
  }
  const v = pickVariant(mv.variants);
  const tracks = [{ url: v.uri, kind: 'video' }];
  const group = v.audio && mv.audio[v.audio];
  if (group && group.length > 0) {
    const a = group.find((r) => r.def) || group[0];
    if (a.uri !== v.uri) tracks.push({ url: a.uri, kind: 'audio' });
  }
  for (const t of tracks) {
    t.lastMsn = null; // highest media sequence number fetched
    t.maps = {}; // init segments fetched
    t.lastFirstMsn = null;
    t.nextReload = 0; // ms timestamp
  }
  return { tracks };
}

// One reload of one track: returns the delay (s) until this track's next reload.
function reloadTrack(t) {
  const res = get(t.url, 'playlist');
  if (res.status !== 200 || !res.body) return 1; // error: retry soon, never crash
  const pl = parseMedia(res.body, t.url);
  const target = pl.target > 0 ? pl.target : 2;
  if (pl.segments.length === 0) return target / 2;
  const first = pl.segments[0].msn;
  const last = pl.segments[pl.segments.length - 1].msn;
  // Media sequence went backwards: the stream restarted; start again from the live edge.
  if (t.lastMsn !== null && last < t.lastMsn - pl.segments.length) t.lastMsn = null;
  let from;
  if (t.lastMsn === null) {
    from = Math.max(first, last - START_SEGMENTS + 1);
  } else {
    from = t.lastMsn + 1;
    if (from < first) {
      segmentsSkipped.add(first - from); // the window moved past segments we never fetched
      from = first;
    }
  }
  let fresh = 0;
  for (const s of pl.segments) {
    if (s.msn < from) continue;
    if (s.map && !t.maps[s.map]) {
      const r = get(s.map, 'init', 'none');
      if (r.status === 200) t.maps[s.map] = true;
    }
    const r = get(s.uri, 'segment', 'none');
    if (r.status === 200) {
      segmentsFetched.add(1);
      if (s.dur > 0) segmentSlow.add(r.timings.duration > s.dur * 1000);
    }
    // Advance even on failure: a player skips a failed live segment rather than loop on it.
    t.lastMsn = s.msn;
    fresh += 1;
  }
  if (pl.endList) return 3600; // the live stream ended
  // Unchanged playlist: retry after half a target duration (RFC 8216 §6.3.4).
  return fresh > 0 ? target : target / 2;
}

export default function () {
  if (player === null) {
    player = startPlayer();
    if (player === null) {
      sleep(1 + Math.random()); // multivariant failed: back off, try again next iteration
      return;
    }
    // Stagger players so reloads are not synchronised by the ramp alone.
    sleep(Math.random());
  }
  // Reload every track that is due, then sleep until the next one is due.
  const now = Date.now();
  for (const t of player.tracks) {
    if (t.nextReload <= now) {
      const t0 = Date.now();
      const delay = reloadTrack(t);
      // The reload period runs from when the reload was requested (like hls.js).
      t.nextReload = t0 + delay * 1000;
    }
  }
  const next = Math.min(...player.tracks.map((t) => t.nextReload));
  const wait = (next - Date.now()) / 1000;
  if (wait > 0) sleep(Math.min(wait, 60));
}
