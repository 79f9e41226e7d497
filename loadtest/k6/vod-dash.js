// k6 load test: virtual players watching VOD over DASH through the edge.
//
// One k6 iteration is one playback session of one player:
//
//   MPD -> per Period, one video and one audio Representation -> their initialization
//   segments -> media segments in presentation order, video and audio interleaved by start
//   time (two source buffers), paced like a player (see PACING below).
//
// Segment addressing supported (ISO/IEC 23009-1 §5.3.9): SegmentTemplate with
// `initialization` and `media` templates ($RepresentationID$, $Number$, $Time$, $Bandwidth$,
// printf widths such as $Number%05d$, and $$), `startNumber`, `timescale`,
// `presentationTimeOffset`, and either `duration` (segment count from the Period duration)
// or a SegmentTimeline (<S t d r>, r="-1" repeating to the end of the Period); inherited from
// Period -> AdaptationSet -> Representation, the most specific level winning per attribute.
// Also SegmentList (<Initialization sourceURL>, <SegmentURL media>) and a single-file
// Representation (BaseURL only). BaseURL elements are resolved level by level against the
// MPD URL (RFC 3986). The MPD must be static (type="static"): live DASH is out of scope.
//
// Pacing (PACING, a playback speed): download ahead up to BUFFER_SECONDS beyond the
// playhead, then follow playback; PACING=0 fetches back to back (a throughput test). A
// segment that arrives after the playhead needed it counts as a rebuffer.
//
// Run:   k6 run loadtest/k6/vod-dash.js
//        BASE_URL=https://127.0.0.1:8443 INSECURE=1 VUS=100 DURATION=5m k6 run loadtest/k6/vod-dash.js
//
// Env:   BASE_URL        edge base URL                               (http://127.0.0.1:8080)
//        MANIFEST        MPD path                                     (/vod/dash/manifest.mpd)
//        VUS             concurrent players                           (50)
//        DURATION        test duration                                (2m)
//        INSECURE        1 = skip TLS certificate verification (self-signed demo cert)
//        VIDEO_REP       random | lowest | highest | <Representation@id>   (random)
//        PACING          playback speed: 1 = real time, 0 = no pacing (1)
//        BUFFER_SECONDS  media held ahead of the playhead when pacing (30)
//        WATCH_SECONDS   stop a session after this much media, 0 = whole title  (0)
//        P95_MANIFEST_MS p(95) threshold for MPD requests (ms)        (250)
//        P95_SEGMENT_MS  p(95) threshold for segment requests (ms)    (1000)

import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Rate } from 'k6/metrics';
import { resolveUrl } from './lib.js';

const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const MANIFEST = __ENV.MANIFEST || '/vod/dash/manifest.mpd';
const VUS = parseInt(__ENV.VUS || '50', 10);
const DURATION = __ENV.DURATION || '2m';
const VIDEO_REP = __ENV.VIDEO_REP || 'random';
const PACING = parseFloat(__ENV.PACING === undefined ? '1' : __ENV.PACING) || 0;
const BUFFER_SECONDS = parseFloat(__ENV.BUFFER_SECONDS || '30');
const WATCH_SECONDS = parseFloat(__ENV.WATCH_SECONDS || '0');
const INSECURE = /^(1|true|yes)$/i.test(__ENV.INSECURE || '');
// Upper bound on segments per Representation and Period (guards against a broken MPD).
const MAX_SEGMENTS = 100000;

export const options = {
  insecureSkipTLSVerify: INSECURE,
  scenarios: {
    dash_players: {
      executor: 'constant-vus',
      vus: VUS,
      duration: DURATION,
      gracefulStop: '10s',
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    [`http_req_duration{type:manifest}`]: [`p(95)<${__ENV.P95_MANIFEST_MS || 250}`],
    [`http_req_duration{type:segment}`]: [`p(95)<${__ENV.P95_SEGMENT_MS || 1000}`],
    [`http_req_duration{type:init}`]: ['max>=0'], // informational
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

const segmentsFetched = new Counter('segments_fetched');
const sessions = new Counter('sessions_completed');
const rebuffers = new Counter('rebuffers');
const edgeHit = new Rate('edge_cache_hit'); // Cache-Status: answered from the edge's cache

// ---------------------------------------------------------------------------------------------
// A small, lenient XML parser: elements (namespace prefixes dropped from names), attributes,
// text. Enough for MPDs; comments, processing instructions and DOCTYPE are skipped.

function decodeEntities(s) {
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);/g, (_, e) => {
    if (e[0] === '#') {
      return String.fromCharCode(e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    }
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[e];
  });
}

function localName(n) {
  const i = n.indexOf(':');
  return i >= 0 ? n.slice(i + 1) : n;
}

export function parseXml(text) {
  const root = { name: '#document', attrs: {}, children: [], text: '' };
  const stack = [root];
  const re = /<!--[\s\S]*?-->|<!\[CDATA\[([\s\S]*?)\]\]>|<\?[\s\S]*?\?>|<!DOCTYPE[^>]*>|<\/\s*([^\s>]+)\s*>|<([^\s/>!?]+)((?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>|([^<]+)/g;
  const attrRe = /([^\s=/>]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g;
  let m;
  while ((m = re.exec(text)) !== null) {
    const top = stack[stack.length - 1];
    if (m[1] !== undefined) {
      top.text += m[1];
    } else if (m[2] !== undefined) {
      // Closing tag: pop to the matching element (tolerates unclosed children).
      const name = localName(m[2]);
      for (let i = stack.length - 1; i > 0; i--) {
        if (stack[i].name === name) {
          stack.length = i;
          break;
        }
      }
    } else if (m[3] !== undefined) {
      const el = { name: localName(m[3]), attrs: {}, children: [], text: '' };
      let a;
      attrRe.lastIndex = 0;
      while ((a = attrRe.exec(m[4] || '')) !== null) {
        el.attrs[localName(a[1])] = decodeEntities(a[2] !== undefined ? a[2] : a[3]);
      }
      top.children.push(el);
      if (m[5] !== '/') stack.push(el);
    } else if (m[6] !== undefined) {
      top.text += decodeEntities(m[6]);
    }
  }
  return root;
}

function kids(el, name) {
  return el ? el.children.filter((c) => c.name === name) : [];
}

function kid(el, name) {
  return kids(el, name)[0] || null;
}

// ISO 8601 duration as used by MPDs (PnYnMnDTnHnMnS; years/months approximated) -> seconds.
export function parseDuration(s) {
  if (!s) return null;
  const m = /^(-)?P(?:(\d+(?:\.\d+)?)Y)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$/.exec(s.trim());
  if (!m) return null;
  const n = (x) => (x ? parseFloat(x) : 0);
  const secs = n(m[2]) * 31536000 + n(m[3]) * 2592000 + n(m[4]) * 86400 + n(m[5]) * 3600
    + n(m[6]) * 60 + n(m[7]);
  return m[1] ? -secs : secs;
}

// ---------------------------------------------------------------------------------------------
// Segment templates.

// Expands $RepresentationID$, $Number$, $Time$, $Bandwidth$ (with optional %0Nd) and $$.
export function expandTemplate(tpl, vars) {
  return tpl.replace(/\$(RepresentationID|Number|Time|Bandwidth|)(?:%0?(\d+)([diuxX]))?\$/g,
    (whole, name, width, conv) => {
      if (name === '') return '$';
      let v = vars[name];
      if (v === undefined || v === null) return whole;
      if (name === 'RepresentationID') return String(v); // no format tag allowed on it
      let str = conv === 'x' ? v.toString(16) : conv === 'X' ? v.toString(16).toUpperCase() : String(v);
      if (width) while (str.length < parseInt(width, 10)) str = '0' + str;
      return str;
    });
}

function mergedAttrs(levels, name) {
  // Attributes of SegmentTemplate/SegmentList at each level, the most specific winning, and
  // the SegmentTimeline / SegmentURL children of the most specific level that has them.
  const out = { attrs: {}, timeline: null, urls: null, init: null, present: false };
  for (const lvl of levels) {
    const el = kid(lvl, name);
    if (!el) continue;
    out.present = true;
    Object.assign(out.attrs, el.attrs);
    const tl = kid(el, 'SegmentTimeline');
    if (tl) out.timeline = tl;
    const urls = kids(el, 'SegmentURL');
    if (urls.length) out.urls = urls;
    const init = kid(el, 'Initialization');
    if (init) out.init = init;
  }
  return out;
}

// One Representation in one Period -> { init: url|null, segments: [{uri, start, dur}] }.
// `start` is in seconds from the start of the presentation.
export function representationSegments(ctx) {
  const { levels, rep, baseUrl, periodStart, periodDur } = ctx;
  const vars = { RepresentationID: rep.attrs.id, Bandwidth: parseInt(rep.attrs.bandwidth || '0', 10) };
  const segments = [];
  // The addressing scheme is the one of the most specific level that has one (a
  // Representation's SegmentList overrides a Period's SegmentTemplate).
  let scheme = null;
  for (let i = levels.length - 1; i >= 0 && !scheme; i--) {
    scheme = ['SegmentTemplate', 'SegmentList', 'SegmentBase'].find((n) => kid(levels[i], n)) || null;
  }
  const tpl = mergedAttrs(levels, 'SegmentTemplate');
  if (scheme === 'SegmentTemplate') {
    const a = tpl.attrs;
    const timescale = parseFloat(a.timescale || '1') || 1;
    const pto = parseFloat(a.presentationTimeOffset || '0') || 0;
    const startNumber = parseInt(a.startNumber || '1', 10);
    const init = a.initialization ? resolveUrl(baseUrl, expandTemplate(a.initialization, vars)) : null;
    if (!a.media) return { init, segments };
    const push = (number, time, dur) => {
      segments.push({
        uri: resolveUrl(baseUrl, expandTemplate(a.media, Object.assign({}, vars, { Number: number, Time: time }))),
        start: periodStart + (time - pto) / timescale,
        dur: dur / timescale,
      });
    };
    if (tpl.timeline) {
      const ss = kids(tpl.timeline, 'S');
      let t = 0;
      let number = startNumber;
      const periodEnd = periodDur !== null ? pto + periodDur * timescale : null;
      for (let i = 0; i < ss.length && segments.length < MAX_SEGMENTS; i++) {
        const s = ss[i].attrs;
        if (s.t !== undefined) t = parseFloat(s.t);
        const d = parseFloat(s.d);
        if (!(d > 0)) break;
        let r = parseInt(s.r || '0', 10);
        if (r < 0) {
          // Repeat until the next S@t, or the end of the Period.
          const next = ss[i + 1] && ss[i + 1].attrs.t !== undefined ? parseFloat(ss[i + 1].attrs.t) : periodEnd;
          r = next === null ? 0 : Math.ceil((next - t) / d) - 1;
        }
        for (let k = 0; k <= r && segments.length < MAX_SEGMENTS; k++) {
          push(number, t, d);
          number += 1;
          t += d;
        }
      }
    } else if (a.duration) {
      const d = parseFloat(a.duration);
      if (periodDur === null) throw new Error(`Representation ${rep.attrs.id}: Period has no duration`);
      const count = Math.min(MAX_SEGMENTS, Math.ceil(periodDur / (d / timescale) - 1e-9));
      for (let k = 0; k < count; k++) push(startNumber + k, pto + k * d, d);
    }
    return { init, segments };
  }
  const list = mergedAttrs(levels, 'SegmentList');
  if (scheme === 'SegmentList') {
    const timescale = parseFloat(list.attrs.timescale || '1') || 1;
    const d = parseFloat(list.attrs.duration || '0') / timescale;
    const init = list.init && list.init.attrs.sourceURL ? resolveUrl(baseUrl, list.init.attrs.sourceURL) : null;
    (list.urls || []).forEach((u, k) => {
      segments.push({ uri: resolveUrl(baseUrl, u.attrs.media || ''), start: periodStart + k * d, dur: d });
    });
    return { init, segments };
  }
  // SegmentBase or nothing: the Representation is one file at its BaseURL.
  segments.push({ uri: baseUrl, start: periodStart, dur: periodDur || 0 });
  return { init: null, segments };
}

function withBase(url, el) {
  const b = kid(el, 'BaseURL');
  return b && b.text.trim() ? resolveUrl(url, b.text.trim()) : url;
}

function repKind(as, rep) {
  const ct = rep.attrs.contentType || as.attrs.contentType || '';
  const mime = rep.attrs.mimeType || as.attrs.mimeType || '';
  if (ct === 'video' || mime.startsWith('video/')) return 'video';
  if (ct === 'audio' || mime.startsWith('audio/')) return 'audio';
  if (rep.attrs.width || as.attrs.width || as.attrs.maxWidth) return 'video';
  return 'other';
}

function pickVideo(reps) {
  const byId = reps.find((r) => r.rep.attrs.id === VIDEO_REP);
  if (byId) return byId;
  const sorted = reps.slice().sort((a, b) => a.bw - b.bw);
  if (VIDEO_REP === 'lowest') return sorted[0];
  if (VIDEO_REP === 'highest') return sorted[sorted.length - 1];
  return reps[Math.floor(Math.random() * reps.length)];
}

// MPD text -> [{uri, start, dur, init, kind}] for one video and one audio Representation per
// Period, in presentation order.
export function planSession(text, mpdUrl) {
  const doc = parseXml(text);
  const mpd = kid(doc, 'MPD');
  if (!mpd) throw new Error('not an MPD');
  if (mpd.attrs.type === 'dynamic') throw new Error('dynamic (live) MPD: use a VOD MPD');
  const total = parseDuration(mpd.attrs.mediaPresentationDuration);
  const mpdBase = withBase(mpdUrl, mpd);
  const periods = kids(mpd, 'Period');
  const items = [];
  let prevEnd = 0;
  periods.forEach((period, pi) => {
    const start = parseDuration(period.attrs.start);
    const periodStart = start !== null ? start : prevEnd;
    let periodDur = parseDuration(period.attrs.duration);
    if (periodDur === null) {
      const next = periods[pi + 1] && parseDuration(periods[pi + 1].attrs.start);
      if (next !== null && next !== undefined) periodDur = next - periodStart;
      else if (total !== null) periodDur = total - periodStart;
    }
    prevEnd = periodDur !== null ? periodStart + periodDur : periodStart;
    const periodBase = withBase(mpdBase, period);
    const candidates = { video: [], audio: [] };
    for (const as of kids(period, 'AdaptationSet')) {
      const asBase = withBase(periodBase, as);
      for (const rep of kids(as, 'Representation')) {
        const kind = repKind(as, rep);
        if (!candidates[kind]) continue;
        candidates[kind].push({
          as, rep, kind, bw: parseInt(rep.attrs.bandwidth || '0', 10),
          baseUrl: withBase(asBase, rep),
          levels: [period, as, rep],
        });
      }
    }
    const chosen = [];
    if (candidates.video.length) chosen.push(pickVideo(candidates.video));
    if (candidates.audio.length) {
      // The first audio AdaptationSet (usually the default language), lowest bandwidth.
      const firstAs = candidates.audio[0].as;
      chosen.push(candidates.audio.filter((c) => c.as === firstAs).sort((a, b) => a.bw - b.bw)[0]);
    }
    for (const c of chosen) {
      const { init, segments } = representationSegments({
        levels: c.levels, rep: c.rep, baseUrl: c.baseUrl, periodStart, periodDur,
      });
      for (const s of segments) items.push({ uri: s.uri, start: s.start, dur: s.dur, init, kind: c.kind });
    }
  });
  // Presentation order; at equal start times, keep video before audio (stable sort).
  return items
    .map((s, i) => ({ s, i }))
    .sort((a, b) => a.s.start - b.s.start || a.i - b.i)
    .map((x) => x.s);
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

// Playback clock for pacing (see vod-hls.js): playback starts once the first segment of each
// track is in; a segment that arrives after the playhead needed it is a stall.
class Playback {
  constructor(firstEnd) {
    this.firstEnd = firstEnd;
    this.startedAt = null;
  }
  position() {
    return this.startedAt === null ? 0 : ((Date.now() - this.startedAt) / 1000) * PACING;
  }
  waitForRoom(start) {
    if (PACING <= 0) return;
    if (this.startedAt === null) {
      if (start >= this.firstEnd) this.startedAt = Date.now();
      return;
    }
    const ahead = start - this.position();
    if (ahead > BUFFER_SECONDS) sleep((ahead - BUFFER_SECONDS) / PACING);
  }
  arrived(start) {
    if (PACING <= 0 || this.startedAt === null) return;
    const late = this.position() - start;
    if (late > 0) {
      rebuffers.add(1);
      this.startedAt += (late / PACING) * 1000;
    }
  }
  drain(end) {
    if (PACING <= 0) return;
    if (this.startedAt === null) this.startedAt = Date.now();
    const left = end - this.position();
    if (left > 0) sleep(left / PACING);
  }
}

export default function () {
  const url = BASE_URL + MANIFEST;
  const res = get(url, 'manifest');
  if (res.status !== 200 || !res.body) {
    sleep(1 + Math.random()); // error: back off and start a new session
    return;
  }
  let items;
  try {
    items = planSession(res.body, url);
  } catch (e) {
    console.error(`${url}: ${e.message}`);
    sleep(1);
    return;
  }
  if (WATCH_SECONDS > 0) items = items.filter((s) => s.start < WATCH_SECONDS);
  if (items.length === 0) {
    console.error(`${url}: no segments found`);
    sleep(1);
    return;
  }
  const play = new Playback(items[0].start + items[0].dur);
  const initsDone = {};
  let end = 0;
  for (const s of items) {
    if (s.init && !initsDone[s.init]) {
      initsDone[s.init] = true;
      get(s.init, 'init', 'none');
    }
    play.waitForRoom(s.start);
    const r = get(s.uri, 'segment', 'none');
    if (r.status === 200) segmentsFetched.add(1);
    play.arrived(s.start);
    end = Math.max(end, s.start + s.dur);
  }
  play.drain(end);
  sessions.add(1);
  sleep(Math.random());
}
