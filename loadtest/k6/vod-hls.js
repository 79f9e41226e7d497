// k6 load test: virtual players watching VOD over HLS through the edge.
//
// One k6 iteration is one playback session of one player:
//
//   multivariant playlist -> pick a variant (+ its separate audio rendition, if any)
//   -> media playlist(s) -> init segment(s) (#EXT-X-MAP) -> segments in presentation order,
//      video and audio interleaved by start time, as a player with two source buffers does.
//
// Pacing (PACING, a playback speed): the player downloads ahead until it holds
// BUFFER_SECONDS of media beyond the playhead, then waits for playback to consume it,
// which is what hls.js (maxBufferLength 30 s) and most players do. With PACING=0 there is no
// pacing: segments are fetched back to back (a throughput test, not a viewer model). A
// segment that arrives after the playhead reached it counts as a rebuffer (stall), and the
// playhead waits for it. After the last segment, a paced player keeps "watching" its buffer
// out, so the number of VUs is the number of concurrent viewers.
//
// Run:   k6 run loadtest/k6/vod-hls.js
//        BASE_URL=https://127.0.0.1:8443 INSECURE=1 VUS=100 DURATION=5m k6 run loadtest/k6/vod-hls.js
//        PACING=0 VUS=20 k6 run loadtest/k6/vod-hls.js      # no pacing: as fast as possible
//
// Env:   BASE_URL        edge base URL                               (http://127.0.0.1:8080)
//        MANIFEST        multivariant playlist path                   (/vod/hls/master.m3u8)
//        VUS             concurrent players                           (50)
//        DURATION        test duration                                (2m)
//        INSECURE        1 = skip TLS certificate verification (self-signed demo cert)
//        VARIANT         random | lowest | highest | <index>          (random)
//        PACING          playback speed: 1 = real time, 0 = no pacing, 4 = 4x  (1)
//        BUFFER_SECONDS  media held ahead of the playhead when pacing (30)
//        WATCH_SECONDS   stop a session after this much media, 0 = whole title  (0)
//        P95_PLAYLIST_MS p(95) threshold for playlist requests (ms)   (250)
//        P95_SEGMENT_MS  p(95) threshold for segment requests (ms)    (1000)

import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Rate } from 'k6/metrics';
import { resolveUrl, parseAttributes, lines } from './lib.js';

const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const MANIFEST = __ENV.MANIFEST || '/vod/hls/master.m3u8';
const VUS = parseInt(__ENV.VUS || '50', 10);
const DURATION = __ENV.DURATION || '2m';
const VARIANT = (__ENV.VARIANT || 'random').toLowerCase();
const PACING = parseFloat(__ENV.PACING === undefined ? '1' : __ENV.PACING) || 0;
const BUFFER_SECONDS = parseFloat(__ENV.BUFFER_SECONDS || '30');
const WATCH_SECONDS = parseFloat(__ENV.WATCH_SECONDS || '0');
const INSECURE = /^(1|true|yes)$/i.test(__ENV.INSECURE || '');

export const options = {
  insecureSkipTLSVerify: INSECURE,
  scenarios: {
    vod_players: {
      executor: 'constant-vus',
      vus: VUS,
      duration: DURATION,
      gracefulStop: '10s',
    },
  },
  thresholds: {
    // Errors: status >= 400 or a transport failure, on any request.
    http_req_failed: ['rate<0.001'],
    // Latency (request start to last body byte) per request type, via the `type` tag.
    [`http_req_duration{type:playlist}`]: [`p(95)<${__ENV.P95_PLAYLIST_MS || 250}`],
    [`http_req_duration{type:segment}`]: [`p(95)<${__ENV.P95_SEGMENT_MS || 1000}`],
    [`http_req_duration{type:init}`]: ['max>=0'], // informational
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

const segmentsFetched = new Counter('segments_fetched');
const sessions = new Counter('sessions_completed');
const rebuffers = new Counter('rebuffers'); // paced players only
const edgeHit = new Rate('edge_cache_hit'); // Cache-Status: answered from the edge's cache

// ---------------------------------------------------------------------------------------------
// Playlist parsing (RFC 8216), lenient: unknown tags are ignored.

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
  // Given a media playlist directly: play it.
  if (variants.length === 0 && ls.some((l) => l.startsWith('#EXTINF'))) {
    variants.push({ uri: url, bandwidth: 0, audio: null });
  }
  return { variants, audio };
}

// Media playlist -> [{uri, start, dur, map}] with start times accumulated from #EXTINF.
export function parseMedia(text, url) {
  const segments = [];
  let dur = 0;
  let start = 0;
  let map = null;
  for (const l of lines(text)) {
    if (l.startsWith('#EXTINF:')) {
      dur = parseFloat(l.slice(8)) || 0;
    } else if (l.startsWith('#EXT-X-MAP:')) {
      const a = parseAttributes(l.slice(11));
      map = a.URI ? resolveUrl(url, a.URI) : null;
    } else if (!l.startsWith('#')) {
      segments.push({ uri: resolveUrl(url, l), start, dur, map });
      start += dur;
      dur = 0;
    }
  }
  return segments;
}

// ---------------------------------------------------------------------------------------------

function get(url, type, responseType) {
  const res = http.get(url, {
    tags: { type, name: type }, // `name` groups all URLs of a type into one time series
    responseType: responseType || 'text',
    timeout: '30s',
  });
  check(res, { [`${type} status is 200`]: (r) => r.status === 200 });
  if (res.status > 0) {
    const cs = res.headers['Cache-Status'] || '';
    // Served from the edge's cache: a hit, a stale copy revalidated with a 304, or stale-if-error.
    edgeHit.add(/;\s*hit\b|fwd-status=304|stale-if-error/.test(cs), { type });
  }
  return res;
}

function pickVariant(variants) {
  const sorted = variants.slice().sort((a, b) => a.bandwidth - b.bandwidth);
  if (VARIANT === 'lowest') return sorted[0];
  if (VARIANT === 'highest') return sorted[sorted.length - 1];
  const n = parseInt(VARIANT, 10);
  if (!isNaN(n)) return variants[Math.min(Math.max(n, 0), variants.length - 1)];
  return variants[Math.floor(Math.random() * variants.length)];
}

// Playback clock for pacing: media time reached by the playhead, stalls included.
// Playback starts when the first segment of every track is in (the first item that starts
// at or after the end of the very first one is about to be fetched).
class Playback {
  constructor(firstEnd) {
    this.firstEnd = firstEnd;
    this.startedAt = null; // ms; moved forward by stalls
  }
  position() {
    return this.startedAt === null ? 0 : ((Date.now() - this.startedAt) / 1000) * PACING;
  }
  // Before fetching media that starts at `start`: start playback once the first segments are
  // buffered; then wait until the buffer ahead of the playhead drops below BUFFER_SECONDS.
  waitForRoom(start) {
    if (PACING <= 0) return;
    if (this.startedAt === null) {
      if (start >= this.firstEnd) this.startedAt = Date.now();
      return;
    }
    const ahead = start - this.position();
    if (ahead > BUFFER_SECONDS) sleep((ahead - BUFFER_SECONDS) / PACING);
  }
  // After media starting at `start` arrived: if the playhead already needed it, that was a
  // stall; the playhead waited for it.
  arrived(start) {
    if (PACING <= 0 || this.startedAt === null) return;
    const late = this.position() - start;
    if (late > 0) {
      rebuffers.add(1);
      this.startedAt += (late / PACING) * 1000;
    }
  }
  // Watch the rest of the buffer after the last download.
  drain(end) {
    if (PACING <= 0) return;
    if (this.startedAt === null) this.startedAt = Date.now(); // everything fit in one slot
    const left = end - this.position();
    if (left > 0) sleep(left / PACING);
  }
}

export default function () {
  const url = BASE_URL + MANIFEST;
  const res = get(url, 'playlist');
  if (res.status !== 200 || !res.body) {
    sleep(1 + Math.random()); // error: back off and start a new session
    return;
  }
  const mv = parseMultivariant(res.body, url);
  if (mv.variants.length === 0) {
    console.error(`no variant in ${url}`);
    sleep(1);
    return;
  }
  const v = pickVariant(mv.variants);
  const trackUrls = [v.uri];
  const group = v.audio && mv.audio[v.audio];
  if (group && group.length > 0) {
    const a = group.find((r) => r.def) || group[0];
    if (a.uri !== v.uri) trackUrls.push(a.uri);
  }

  // Load the media playlists (a player loads them before its first segment).
  let items = [];
  for (const t of trackUrls) {
    // MANIFEST may be a media playlist: it was just fetched, do not fetch it twice.
    const r = t === url ? res : get(t, 'playlist');
    if (r.status !== 200 || !r.body) {
      sleep(1 + Math.random());
      return;
    }
    items = items.concat(parseMedia(r.body, t));
  }
  // Presentation order, video and audio interleaved (stable: ties keep the track order).
  items = items
    .map((s, i) => ({ s, i }))
    .sort((a, b) => a.s.start - b.s.start || a.i - b.i)
    .map((x) => x.s);
  if (WATCH_SECONDS > 0) items = items.filter((s) => s.start < WATCH_SECONDS);

  if (items.length === 0) {
    sleep(1);
    return;
  }
  const play = new Playback(items[0].start + items[0].dur);
  const mapsDone = {};
  let end = 0;
  for (const s of items) {
    if (s.map && !mapsDone[s.map]) {
      mapsDone[s.map] = true; // once per session, even on failure (the player would give up)
      get(s.map, 'init', 'none');
    }
    play.waitForRoom(s.start);
    const r = get(s.uri, 'segment', 'none');
    if (r.status === 200) segmentsFetched.add(1);
    play.arrived(s.start);
    end = Math.max(end, s.start + s.dur);
  }
  play.drain(end);
  sessions.add(1);
  sleep(Math.random()); // a moment before the next viewer session on this VU
}
