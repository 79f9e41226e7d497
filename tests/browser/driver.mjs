// Drives Debian's Chromium (headless, through playwright-core) for tests/browser/main.rs.
//
//   node driver.mjs <spec.json>
//
// The spec names the browser, an artifacts directory and the cases: a player page
// (player.html: hls.js, dash.js or Shaka Player on a manifest URL) or any page to load and
// sample (the edge's status page). Cases run concurrently, one tab each. The driver writes JSON
// lines on stdout: {"event":"ready"} once the browser is up, {"case":..,"event":"playing"}
// when a player starts, {"case":..,"event":"result",..} per case, and {"event":"done",..}
// last, with what Chromium tried to reach off loopback. The Rust side decides pass or fail.
//
// Off-loopback traffic: Chromium gets a proxy (below, on loopback) for everything that is not
// loopback, which answers every request and CONNECT with 403 and counts it by host; host names
// other than localhost do not resolve (--host-resolver-rules); QUIC is off. Chromium's own net
// log records every socket it connects: the driver reports any remote address that is not
// loopback as escaped, and the test fails on one.

import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
// The test holds our stdin open; when it goes away, so do we (and Chromium with us).
process.stdin.on("end", () => process.exit(3));
process.stdin.resume();
const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
mkdirSync(spec.artifacts, { recursive: true });

function emit(obj) { process.stdout.write(JSON.stringify(obj) + "\n"); }

// The player page and the players, from node_modules (versions pinned by package-lock.json).
const files = {
  "/player.html": [path.join(here, "player.html"), "text/html; charset=utf-8"],
  "/lib/hls.js": [path.join(here, "node_modules/hls.js/dist/hls.min.js"), "text/javascript"],
  "/lib/dash.js": [path.join(here, "node_modules/dashjs/dist/modern/umd/dash.all.min.js"), "text/javascript"],
  "/lib/shaka.js": [path.join(here, "node_modules/shaka-player/dist/shaka-player.compiled.js"), "text/javascript"],
};
const pages = http.createServer((req, res) => {
  if (req.url === "/blank.html") { res.writeHead(200, { "content-type": "text/html" }); res.end("<!doctype html><title>blank</title>"); return; }
  const f = files[new URL(req.url, "http://x").pathname];
  if (!f) { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { "content-type": f[1], "cache-control": "no-store" });
  res.end(readFileSync(f[0]));
});

// The blocking proxy: counts and refuses whatever Chromium sends off loopback.
const blocked = {};
function block(host) { blocked[host] = (blocked[host] || 0) + 1; }
const proxy = http.createServer((req, res) => {
  let host = req.headers.host || "?";
  try { host = new URL(req.url).host; } catch {}
  block(host);
  res.writeHead(403); res.end();
});
proxy.on("connect", (req, socket) => {
  block(req.url);
  socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
});

function listen(server) {
  return new Promise(resolve => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}
const pagePort = await listen(pages);
const proxyPort = await listen(proxy);

const netlog = path.join(spec.artifacts, "netlog.json");
const browser = await chromium.launch({
  executablePath: spec.chromium,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    `--proxy-server=http://127.0.0.1:${proxyPort}`,
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    `--log-net-log=${netlog}`,
    "--net-log-capture-mode=Default",
  ],
});
const context = await browser.newContext({
  ignoreHTTPSErrors: true, // the edge's certificate is made by the test
  viewport: { width: 660, height: 400 },
});
emit({ event: "ready" });

// The canary: a request off loopback on purpose, which the proxy must block and count.
if (spec.canary) {
  const p = await context.newPage();
  await p.goto(`http://127.0.0.1:${pagePort}/blank.html`);
  await p.evaluate(u => fetch(u, { mode: "no-cors" }).then(() => "answered", e => `${e}`), spec.canary);
  await p.close();
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

async function runCase(c) {
  const page = await context.newPage();
  const console_errors = [];
  const console_all = []; // every console line, kept when the case asks (c.console)
  page.on("console", m => {
    if (m.type() === "error") console_errors.push(m.text().slice(0, 300));
    if (c.console) { console_all.push(`${m.type()} ${m.text().slice(0, 300)}`); if (console_all.length > 400) console_all.shift(); }
  });
  page.on("pageerror", e => console_errors.push(`pageerror: ${e.message}`.slice(0, 300)));
  // What the network saw, from the DevTools protocol: protocol and Cache-Status per response.
  const responses = [];
  const failed = [];
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  cdp.on("Network.responseReceived", e => {
    const h = e.response.headers;
    const cs = h["cache-status"] ?? h["Cache-Status"] ?? null;
    responses.push({ url: e.response.url, status: e.response.status, protocol: e.response.protocol, cache_status: cs });
  });
  cdp.on("Network.loadingFailed", e => { if (!e.canceled) failed.push(e.errorText); });

  const started = Date.now();
  const url = c.player
    ? `http://127.0.0.1:${pagePort}/player.html?player=${c.player}&src=${encodeURIComponent(c.url)}` +
      (c.low_latency ? "&ll=1" : "") + (c.loop ? "&loop=1" : "") +
      (c.config ? `&cfg=${encodeURIComponent(JSON.stringify(c.config))}` : "")
    : c.url;
  await page.goto(url, { timeout: 15000 });
  const result = { case: c.name, event: "result", url: c.url, player: c.player ?? null };
  if (c.player) {
    let announced = false;
    const progress = []; // [wall clock ms, seconds played, stalls], every second
    let s;
    while (true) {
      s = await page.evaluate(() => {
        const x = window.__se;
        return { played_s: x.played_s, startup_ms: x.startup_ms, stalls: x.stalls, errors: x.errors.length, ended: x.ended };
      });
      if (s.startup_ms !== null && !announced) { announced = true; emit({ case: c.name, event: "playing", startup_ms: s.startup_ms }); }
      const elapsed = (Date.now() - started) / 1000;
      if (progress.length === 0 || Date.now() - progress[progress.length - 1][0] >= 1000) progress.push([Date.now(), +s.played_s.toFixed(2), s.stalls]);
      if (s.played_s >= c.play_s || elapsed > c.deadline_s) break;
      await sleep(250);
    }
    const st = await page.evaluate(() => {
      const x = window.__se;
      return {
        played_s: +x.played_s.toFixed(2), startup_ms: x.startup_ms, stalls: x.stalls, stall_ms: x.stall_ms,
        waiting_events: x.waiting_events, errors: x.errors, warnings: x.warnings, latency_s: x.latency_s,
        levels: x.levels, manifest_levels: x.manifest_levels ?? null, log: x.log,
        playing_at: x.playing_at, stall_at: x.stall_at,
        hls_latency: x.hls_latency ? x.hls_latency() : null,
        hls_target_latency: x.hls_target_latency ? x.hls_target_latency() : null,
      };
    });
    Object.assign(result, st);
    result.picture = await page.evaluate(() => window.__picture());
    // Where the media element stands (for a case that did not play: a gap, a pause, no data).
    result.media = await page.evaluate(() => {
      const v = document.querySelector("video");
      const ranges = [];
      for (let i = 0; i < v.buffered.length; i++) ranges.push([+v.buffered.start(i).toFixed(3), +v.buffered.end(i).toFixed(3)]);
      return { currentTime: +v.currentTime.toFixed(3), readyState: v.readyState, paused: v.paused, buffered: ranges };
    });
    result.progress = progress;
  } else {
    // A page to sample: the text of the given element ids, every second.
    const samples = [];
    for (let i = 0; i < (c.samples ?? 5); i++) {
      await sleep(1000);
      samples.push(await page.evaluate(ids => Object.fromEntries(ids.map(id => {
        const el = document.getElementById(id);
        return [id, el ? el.textContent.trim() : null];
      })), c.ids ?? []));
    }
    result.samples = samples;
  }
  result.elapsed_s = +((Date.now() - started) / 1000).toFixed(1);
  result.console_errors = console_errors;
  if (c.console) result.console = console_all;
  result.failed_requests = failed;
  result.protocols = [...new Set(responses.filter(r => !r.url.startsWith(`http://127.0.0.1:${pagePort}/`)).map(r => r.protocol))];
  const counts = {};
  for (const r of responses) {
    if (r.cache_status === null) continue;
    const m = /;\s*(hit|fwd=[a-z-]+)/.exec(r.cache_status);
    const k = m ? m[1] : r.cache_status;
    counts[k] = (counts[k] || 0) + 1;
    if (r.cache_status.includes("detail=stale-if-error")) counts["stale-if-error"] = (counts["stale-if-error"] || 0) + 1;
  }
  result.cache_status = counts;
  result.responses = responses.length;
  result.blocking_requests = responses.filter(r => r.url.includes("_HLS_msn=")).length;
  result.part_requests = responses.filter(r => /\.p\d+\.m4s(\?|$)/.test(r.url)).length;
  result.statuses = responses.reduce((a, r) => { a[r.status] = (a[r.status] || 0) + 1; return a; }, {});
  result.screenshot = path.join(spec.artifacts, `${c.name}.png`);
  await page.screenshot({ path: result.screenshot, fullPage: !c.player });
  await page.close();
  emit(result);
  return result;
}

// Cases start in order, `start_after_s` apart if given, and run side by side.
const running = [];
for (const c of spec.cases) {
  if (c.start_after_s) await sleep(c.start_after_s * 1000);
  running.push(runCase(c).catch(e => {
    const r = { case: c.name, event: "result", driver_error: `${e.stack || e}`.slice(0, 2000) };
    emit(r);
    return r;
  }));
}
const results = await Promise.all(running);
await context.close();
await browser.close();
pages.close();
proxy.close();

// The net log is complete once Chromium has exited. Per socket (net log source): its remote
// address and whether anything went out. A TCP connect to a non-loopback address sends a SYN,
// so it counts as escaped even if it fails; a UDP socket counts only if it sent bytes (Chromium
// "connects" a UDP socket to a public address to learn its route, which sends nothing: those
// are reported as route probes).
const escaped = [];
const probes = [];
let sockets = 0;
function loopback(addr) {
  const m = /^\[([^\]]+)\](?::\d+)?$/.exec(addr) || /^([^:]+)(?::\d+)?$/.exec(addr);
  const ip = m ? m[1] : addr;
  return ip.startsWith("127.") || ip === "::1" || ip === "localhost";
}
if (existsSync(netlog)) {
  const text = readFileSync(netlog, "utf8");
  let log;
  try { log = JSON.parse(text); } catch { log = JSON.parse(text.replace(/,\s*$/, "") + "]}"); }
  const types = Object.fromEntries(Object.entries(log.constants.logEventTypes).map(([k, v]) => [v, k]));
  const bySource = new Map();
  for (const ev of log.events || []) {
    const type = types[ev.type];
    const id = ev.source && ev.source.id;
    const p = ev.params || {};
    let s = bySource.get(id);
    const addr = p.address ?? p.remote_address ?? null;
    if (typeof addr === "string" && /CONNECT/.test(type)) {
      if (!s) { s = { addr, tcp: false, sent: false }; bySource.set(id, s); }
      s.addr = addr;
      if (type.startsWith("TCP_CONNECT")) s.tcp = true;
    }
    if (s && /BYTES_SENT/.test(type)) s.sent = true;
  }
  for (const s of bySource.values()) {
    sockets++;
    if (loopback(s.addr)) continue;
    if (s.tcp || s.sent) escaped.push(s.addr); else probes.push(s.addr);
  }
}
const done = { event: "done", blocked, blocked_total: Object.values(blocked).reduce((a, b) => a + b, 0), sockets, escaped: [...new Set(escaped)], route_probes: probes.length };
writeFileSync(path.join(spec.artifacts, "results.json"), JSON.stringify({ results, network: done }, null, 2));
emit(done);
process.exit(0);
