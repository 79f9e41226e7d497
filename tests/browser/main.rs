//! Real players in a real browser, through the edge (issue 14): Debian's Chromium, headless,
//! driven by playwright-core (`driver.mjs`), plays the demo streams with hls.js, dash.js and
//! Shaka Player (`player.html`; versions pinned by `package-lock.json`) over HTTPS and HTTP/2.
//!
//! The Rust side starts the origins (the demo origin, in-process) and the edge, hands the driver
//! the cases, reacts to its events (a fault when a player has started) and judges the results:
//! seconds played (the sum of small forward steps of `currentTime`), fatal errors, a picture
//! that is not flat, stalls, startup time, live latency, the protocol and the `Cache-Status` of
//! every response. Each case leaves a screenshot and the driver's `results.json` under
//! `target/tmp/browser/<test>/`. Chromium may not reach off loopback: the driver blocks and
//! counts what it tries, and a test fails if a socket got out.
//!
//! Needs `chromium` (Debian's package) and Node.js ≥ 20 with npm; `npm ci` runs here in
//! `tests/browser` when `node_modules` is missing or older than the lockfile. Browser tests run
//! one at a time (a lock), each with its own browser.
//!
//! `players`: every player on the demo streams; `llhls`: hls.js in low-latency mode on the demo's
//! LL-HLS rendition; `faults`: origins killed and restarted under playback; `status`: the admin
//! status page.

#[path = "../common/mod.rs"]
mod common;

mod faults;
mod llhls;
mod players;
mod status;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use streamedge::origin::{self, OriginOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Fetched by the browser at start, on purpose: the blocking proxy must refuse and count it
/// (192.0.2.0/24 is TEST-NET-1, routed nowhere).
const CANARY: &str = "http://192.0.2.1/canary";

/// One browser at a time: two cores do not play fifteen streams well.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Chromium: `STREAMEDGE_CHROMIUM` or Debian's `/usr/bin/chromium`.
fn chromium() -> PathBuf {
    let path = std::env::var_os("STREAMEDGE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} not found: the browser tests need Debian's chromium (apt-get install chromium; \
         .ci/run installs it) or STREAMEDGE_CHROMIUM",
        path.display()
    );
    path
}

/// `npm ci` in tests/browser when node_modules is missing or older than the lockfile (once per
/// test binary).
fn npm_ready() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let dir = here();
        let stamp = dir.join("node_modules/.package-lock.json");
        let lock = dir.join("package-lock.json");
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if modified(&stamp).is_some() && modified(&stamp) >= modified(&lock) {
            return;
        }
        let status = std::process::Command::new("npm")
            .args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&dir)
            .status()
            .expect("run npm (the browser tests need Node.js >= 20 and npm)");
        assert!(status.success(), "npm ci in tests/browser failed: {status}");
    });
}

/// A demo origin (`streamedge origin`) in this process, on a port it keeps across restarts.
pub struct DemoOrigin {
    pub addr: SocketAddr,
    opts: OriginOptions,
    live_start: SystemTime,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl DemoOrigin {
    /// Starts the demo media; the live streams start at `live_start` (two origins given the same
    /// one serve the same stream).
    pub async fn start(opts: OriginOptions, live_start: SystemTime) -> DemoOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().unwrap();
        let mut o = DemoOrigin {
            addr,
            opts,
            live_start,
            stop: None,
            task: None,
        };
        o.serve(listener);
        o
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(origin::serve_with_live_start(
            listener,
            self.opts.clone(),
            self.live_start,
            async move {
                let _ = stopped.await;
            },
        )));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills it: the task is aborted, every connection dropped mid-answer, the port closed.
    pub async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.stop = None;
    }

    /// Starts it again on the same port (after `kill`).
    pub async fn restart(&mut self) {
        assert!(self.task.is_none(), "restart a killed origin");
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("bind the origin's port again");
        self.serve(listener);
    }
}

impl Drop for DemoOrigin {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A player case: `player` is hls, dash or shaka; passes once `play_s` seconds are played within
/// `deadline_s`.
pub fn player_case(name: &str, player: &str, url: &str, play_s: f64, deadline_s: f64) -> Value {
    json!({"name": name, "player": player, "url": url, "play_s": play_s, "deadline_s": deadline_s})
}

/// One driver run: a browser, its cases, and the events they send.
pub struct Browser {
    child: Child,
    events: mpsc::UnboundedReceiver<Value>,
    results: HashMap<String, Value>,
    /// Events received while waiting for another one.
    seen: Vec<Value>,
    pub artifacts: PathBuf,
    /// The case names given, each of which must report a result.
    cases: Vec<String>,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // node, its Chromium and Chromium's helpers: the whole process group.
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}

/// What a run gave: each case's result by name, and the network report.
pub struct Report {
    pub results: HashMap<String, Value>,
    pub network: Value,
}

impl Browser {
    /// Launches the browser on `cases` (started in order, side by side) once no other test has
    /// one; returns when it is up.
    pub async fn launch(test: &str, cases: Vec<Value>) -> Browser {
        let turn = BROWSER.lock().await;
        npm_ready();
        let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("browser")
            .join(test);
        let _ = std::fs::remove_dir_all(&artifacts);
        std::fs::create_dir_all(&artifacts).expect("artifacts directory");
        let names = cases
            .iter()
            .map(|c| c["name"].as_str().expect("a case has a name").to_owned())
            .collect();
        let spec = json!({
            "chromium": chromium(),
            "artifacts": artifacts,
            "cases": cases,
            "canary": CANARY,
        });
        let spec_path = artifacts.join("spec.json");
        std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        // Its own process group, so that Chromium's processes go with node on drop; and our
        // pipe on its stdin, which the driver takes as its lifeline if this process dies.
        let mut child = Command::new("node")
            .arg(here().join("driver.mjs"))
            .arg(&spec_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("run node (the browser tests need Node.js >= 20)");
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        let _ = tx.send(v);
                    }
                    Err(_) => eprintln!("driver: {line}"),
                }
            }
        });
        let mut b = Browser {
            child,
            events,
            results: HashMap::new(),
            seen: Vec::new(),
            artifacts,
            cases: names,
            _turn: turn,
        };
        b.wait_for(60, "the browser to start", |e| e["event"] == "ready")
            .await;
        b
    }

    /// The first event that `pred` accepts, received before or now (the others are kept).
    pub async fn wait_for(
        &mut self,
        secs: u64,
        what: &str,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        if let Some(i) = self.seen.iter().position(&mut pred) {
            return self.seen.remove(i);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let ev = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => panic!("the browser driver exited while waiting for {what}"),
                Err(_) => panic!("timed out after {secs}s waiting for {what}"),
            };
            if ev["event"] == "result" {
                let name = ev["case"].as_str().unwrap_or("?").to_owned();
                self.results.insert(name, ev.clone());
            }
            if pred(&ev) {
                return ev;
            }
            self.seen.push(ev);
        }
    }

    /// Waits until case `name` is playing.
    pub async fn playing(&mut self, name: &str, secs: u64) -> Value {
        let what = format!("{name} to play");
        self.wait_for(secs, &what, |e| {
            e["case"] == name && e["event"] == "playing"
        })
        .await
    }

    /// Waits for every result and the network report, and checks that nothing left loopback.
    pub async fn finish(mut self, secs: u64) -> Report {
        let network = self
            .wait_for(secs, "the browser run to end", |e| e["event"] == "done")
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        for name in &self.cases {
            assert!(
                self.results.contains_key(name),
                "case {name} reported no result (see the driver's output above)"
            );
        }
        for (name, r) in &self.results {
            eprintln!("{name}: {}", summary(r));
        }
        eprintln!(
            "off-loopback attempts blocked: {} {}; sockets {}, route probes {}; artifacts in {}",
            network["blocked_total"],
            network["blocked"],
            network["sockets"],
            network["route_probes"],
            self.artifacts.display()
        );
        assert!(
            network["blocked"]["192.0.2.1"].as_u64().unwrap_or(0) >= 1,
            "the canary request off loopback was not blocked and counted: {network}"
        );
        let escaped = network["escaped"].as_array().cloned().unwrap_or_default();
        assert!(
            escaped.is_empty(),
            "Chromium reached off loopback: {escaped:?}"
        );
        assert!(
            network["sockets"].as_u64().unwrap_or(0) > 0,
            "the net log recorded no socket at all: the check would see nothing: {network}"
        );
        Report {
            results: std::mem::take(&mut self.results),
            network,
        }
    }
}

/// One line per case for the test log.
fn summary(r: &Value) -> String {
    if let Some(e) = r.get("driver_error") {
        return format!("driver error: {e}");
    }
    let lat: Vec<f64> = r["latency_s"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let lat = if lat.is_empty() {
        String::new()
    } else {
        format!(", latency median {:.2} s", percentile(&lat, 0.5))
    };
    format!(
        "played {} s, startup {} ms, stalls {} ({} ms), errors {}, warnings {}{lat}, levels {}, \
         picture {}, protocols {}, Cache-Status {}, statuses {}",
        r["played_s"],
        r["startup_ms"],
        r["stalls"],
        r["stall_ms"],
        r["errors"],
        r["warnings"],
        r["levels"],
        r["picture"],
        r["protocols"],
        r["cache_status"],
        r["statuses"],
    )
}

/// The `q` quantile (0..=1) of `v`, by nearest rank.
pub fn percentile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// What every player case must show: `min_played` seconds played, no fatal error, a picture,
/// HTTP/2 for every response from the edge, and a `Cache-Status` on them.
pub fn assert_played(r: &Value, min_played: f64) {
    assert_played_through(r, min_played);
    let name = r["case"].as_str().unwrap_or("?");
    assert_eq!(r["errors"], json!([]), "{name}: fatal player errors");
}

/// [`assert_played`] for a case that may see errors on its way (an origin down).
pub fn assert_played_through(r: &Value, min_played: f64) {
    let name = r["case"].as_str().unwrap_or("?");
    assert!(r.get("driver_error").is_none(), "{name}: {r}");
    let played = r["played_s"].as_f64().unwrap_or(0.0);
    assert!(
        played >= min_played,
        "{name}: played {played} s of {min_played} in time: {}",
        summary(r)
    );
    let stddev = r["picture"]["stddev"].as_f64().unwrap_or(0.0);
    assert!(
        stddev > 10.0,
        "{name}: the picture is flat: {}",
        r["picture"]
    );
    assert_eq!(
        r["protocols"],
        json!(["h2"]),
        "{name}: every response from the edge over HTTP/2"
    );
    let seen: u64 = r["cache_status"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    assert!(seen > 0, "{name}: no Cache-Status seen: {r}");
}

/// Latency samples of a case taken `skip_s` seconds or more after it started playing (the
/// driver samples every 100 ms).
pub fn latencies(r: &Value, skip_s: f64) -> Vec<f64> {
    let all: Vec<f64> = r["latency_s"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let skip = (skip_s * 10.0) as usize;
    all.into_iter().skip(skip).collect()
}

/// Stalls of a case that began at or after `since_ms` (wall clock, ms).
pub fn stalls_since(r: &Value, since_ms: u64) -> usize {
    r["stall_at"].as_array().map_or(0, |a| {
        a.iter()
            .filter_map(Value::as_u64)
            .filter(|&t| t >= since_ms)
            .count()
    })
}

/// Stalls of a case after its first `settle_s` seconds of playing (a player finding its place
/// right after start-up, e.g. Shaka jumping a gap, is not what a fault test looks for).
pub fn stalls_after_start(r: &Value, settle_s: f64) -> usize {
    let start = r["playing_at"].as_u64().unwrap_or(0);
    stalls_since(r, start + (settle_s * 1000.0) as u64)
}

/// Now, as the wall-clock milliseconds the driver reports in.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
