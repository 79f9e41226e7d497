//! The disk tier measured, side by side with nginx `proxy_cache` (a disk cache by design), in
//! four parts; see loadtest/README.md, "The disk tier":
//!
//! 1. **hits**: N distinct 1 MiB objects on each cache's disk (streamedge with a memory tier
//!    too small to hold them and `promote_after: 0` (never), so that every hit is a disk
//!    hit), then wrk asks for them at random: req/s and p99 with the page cache warm, then
//!    after `drop_caches` (when the machine allows it), and one pass over the set right after
//!    `drop_caches`;
//! 2. **restart**: 100k small objects on disk, the cache stopped and started again: the time
//!    until the first answer and the first hit, and until `streamedge_disk_index_ready` is 1
//!    (nginx: until its first hit, and optionally until its cache loader is done);
//! 3. **index memory**: streamedge's RSS after that restart, index loaded, minus the RSS of
//!    the same config over an empty disk: per million objects and per object;
//! 4. **ranges**: K random ranges of 64 KiB-1 MiB of a 1 GiB object, asked twice, through
//!    streamedge (4 MiB slices), nginx without `slice`, and nginx with `slice 4m`: the bytes
//!    the origin sent, against the bytes the ranges touch.
//!
//! Medians over rounds; the tables are printed as Markdown. The exit status is 1 when the
//! benchmark could not run, 0 otherwise (anomalies are printed, not fatal).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use streamedge_loadtest::admin::{self, metric_sum};
use streamedge_loadtest::client::{self, Expect};
use streamedge_loadtest::crowd::make_object;
use streamedge_loadtest::diskutil::{self, Usage};
use streamedge_loadtest::edgeproc::{EdgeProcess, Listen};
use streamedge_loadtest::loadgen::{self, WRK_DIR, WrkResult};
use streamedge_loadtest::nginx::{self, DiskConf, Nginx};
use streamedge_loadtest::origin::{Behaviour, Content, Origin, Route};
use streamedge_loadtest::process::{self, free_port};
use streamedge_loadtest::rangeorigin::{self, RangeOrigin};
use streamedge_loadtest::report::{Json, Machine, load_average, median, ms, percentile};
use streamedge_loadtest::setup::{TempDir, edge_binary, expect_of, git_state, tool_version, which};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The disk tier against nginx proxy_cache: hits from disk, start-up over a full disk, index
/// memory, origin bytes of random ranges of a large object.
#[derive(Parser, Debug, Clone)]
#[command(name = "disk")]
struct Args {
    /// Parts to run, comma-separated: hits, restart (with the index memory), ranges.
    #[arg(long, value_delimiter = ',', default_value = "hits,restart,ranges")]
    parts: Vec<String>,
    /// Caches to measure, comma-separated: streamedge, nginx (nginx is both nginx variants
    /// of the ranges part).
    #[arg(long, value_delimiter = ',', default_value = "streamedge,nginx")]
    targets: Vec<String>,
    /// Rounds; each runs every measurement of the selected parts once per cache.
    #[arg(long, default_value_t = 3)]
    rounds: usize,

    /// hits: distinct objects on disk.
    #[arg(long, default_value_t = 256)]
    objects: usize,
    /// hits: size of each object, KiB.
    #[arg(long, default_value_t = 1024)]
    object_kib: u64,
    /// hits and restart: streamedge's memory tier (cache.max_size), MiB; max_object_size is
    /// half of it.
    #[arg(long, default_value_t = 8)]
    memory_mib: u64,
    /// hits: measured seconds of each wrk run with the page cache warm.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// hits: seconds of the same load before it, unmeasured.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// hits: seconds of the wrk run right after drop_caches (0: none).
    #[arg(long, default_value_t = 5)]
    cold_duration: u64,
    /// hits: wrk threads and connections.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// hits: connections of the pass over the whole set right after drop_caches.
    #[arg(long, default_value_t = 8)]
    cold_conns: usize,

    /// restart: objects on disk.
    #[arg(long, default_value_t = 100_000)]
    index_objects: usize,
    /// restart: size of each of those objects, bytes.
    #[arg(long, default_value_t = 1024)]
    small_bytes: usize,
    /// restart: connections that fill the disk.
    #[arg(long, default_value_t = 64)]
    fill_conns: usize,
    /// restart: seconds to wait for a started cache's first hit and index.
    #[arg(long, default_value_t = 300)]
    ready_timeout_s: u64,
    /// restart: also wait for nginx's cache loader to finish after each restart (it starts
    /// 60 s after nginx, then loads 100 files every 50 ms: minutes for 100k objects).
    #[arg(long)]
    nginx_loader: bool,

    /// ranges: random ranges per pass (each asked twice: two passes).
    #[arg(long, default_value_t = 200)]
    ranges: usize,
    /// ranges: size of the object, MiB.
    #[arg(long, default_value_t = 1024)]
    big_mib: u64,
    /// ranges: shortest and longest range, KiB.
    #[arg(long, default_value_t = 64)]
    range_min_kib: u64,
    #[arg(long, default_value_t = 1024)]
    range_max_kib: u64,
    /// ranges: slice size of streamedge (cache.slice.size) and nginx (`slice`), MiB.
    #[arg(long, default_value_t = 4)]
    slice_mib: u64,
    /// ranges: streamedge's memory tier, MiB.
    #[arg(long, default_value_t = 1024)]
    range_memory_mib: u64,
    /// ranges: seed of the random ranges (the same ranges for every cache and round).
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Never drop the page cache (no "cold" measurements).
    #[arg(long)]
    no_drop_caches: bool,
    /// Where the caches' directories go (their disks): a directory on the disk to measure,
    /// not a tmpfs. Default: the system's temporary directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Before each measurement, wait up to this many seconds for other builds on the machine
    /// (cargo, rustc) to finish; every measurement reports how many it saw anyway.
    #[arg(long, default_value_t = 0)]
    wait_quiet_s: u64,
    /// The streamedge binary (default: target/release/streamedge next to this program, built
    /// first with `cargo build --release --bin streamedge`).
    #[arg(long, value_name = "PATH")]
    edge_bin: Option<PathBuf>,
    /// Do not build the streamedge binary; use it as it is.
    #[arg(long)]
    no_build: bool,
    /// Keep the temporary directory (configs, logs, caches) and print its path.
    #[arg(long)]
    keep: bool,
    /// Also write every measurement as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
/// `promote_after` of the hits and restart parts: no disk hit is ever promoted to memory.
const NEVER_PROMOTE: u64 = 0;
/// Warnings about the machine's limits streamedge logs at start (notes, not anomalies).
const MACHINE_LIMITS: &[&str] =
    &["server.max_connections is above what the open-file limit allows"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Hits,
    Restart,
    Ranges,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Streamedge,
    Nginx,
    /// nginx with the slice module (ranges only).
    NginxSlice,
}

impl Target {
    fn slug(self) -> &'static str {
        match self {
            Target::Streamedge => "streamedge",
            Target::Nginx => "nginx",
            Target::NginxSlice => "nginx-slice",
        }
    }
}

/// Whether `drop_caches` works here.
#[derive(Debug, Clone)]
enum DropCaches {
    Permitted,
    NotPermitted(String),
    Disabled,
}

impl DropCaches {
    fn ok(&self) -> bool {
        matches!(self, DropCaches::Permitted)
    }

    fn describe(&self) -> String {
        match self {
            DropCaches::Permitted => "permitted".into(),
            DropCaches::NotPermitted(e) => format!("not permitted ({e})"),
            DropCaches::Disabled => "not tried (--no-drop-caches)".into(),
        }
    }
}

/// What else ran on the machine during a measurement.
#[derive(Debug, Clone, Default)]
struct Quiet {
    load: String,
    other_builds: usize,
    other_cores: f64,
}

impl Quiet {
    fn tag(&self) -> String {
        format!(
            "[load {}, other builds {}, other CPU {:.2} cores]",
            self.load, self.other_builds, self.other_cores
        )
    }
}

/// A pass of requests over a set of objects (fills, checks, the cold pass).
#[derive(Debug, Clone, Default)]
struct Pass {
    wall: Duration,
    ok: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
    /// Per request, from its write to its last byte.
    times: Vec<Duration>,
    statuses: BTreeMap<String, usize>,
}

impl Pass {
    fn merge(&mut self, o: Pass) {
        self.ok += o.ok;
        self.bytes += o.bytes;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.times.extend(o.times);
        for (k, v) in o.statuses {
            *self.statuses.entry(k).or_insert(0) += v;
        }
    }

    fn mib_s(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn p(&self, p: f64) -> Option<f64> {
        let mut t = self.times.clone();
        t.sort();
        (!t.is_empty()).then(|| ms(percentile(&t, p)))
    }
}

/// The cache status of an answer, in a few words: `disk hit`, `memory hit`, `fwd=uri-miss`
/// for streamedge (`Cache-Status`), nginx's `X-Cache-Status` as it is.
fn class(cache_status: Option<&str>) -> String {
    let Some(cs) = cache_status else {
        return "no cache status".into();
    };
    let first = cs.split(',').next().unwrap_or_default();
    let mut params = first.split(';').map(str::trim);
    let name = params.next().unwrap_or_default();
    if !name.starts_with("streamedge") {
        return cs.trim().to_owned();
    }
    let params: Vec<&str> = params.collect();
    if params.contains(&"hit") {
        if params.contains(&"detail=disk") {
            "disk hit".into()
        } else {
            "memory hit".into()
        }
    } else if let Some(fwd) = params.iter().find(|p| p.starts_with("fwd=")) {
        (*fwd).to_owned()
    } else {
        first.trim().to_owned()
    }
}

fn is_hit(class: &str) -> bool {
    class.ends_with("hit") || class == "HIT"
}

fn tally(t: &BTreeMap<String, usize>) -> String {
    if t.is_empty() {
        return "-".into();
    }
    t.iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A cache under test, started.
enum Running {
    Edge(EdgeProcess),
    Nginx(Nginx),
}

impl Running {
    fn addr(&self) -> SocketAddr {
        match self {
            Running::Edge(e) => e.http,
            Running::Nginx(n) => n.addr,
        }
    }

    fn stop(&mut self) {
        match self {
            Running::Edge(e) => e.stop(),
            Running::Nginx(n) => n.stop(),
        }
    }
}

/// streamedge's config with a disk tier.
struct EdgeDisk<'a> {
    memory_mib: u64,
    max_object_mib: u64,
    disk: &'a Path,
    disk_max_mib: u64,
    /// `promote_after`, or the default.
    promote_after: Option<u64>,
    /// `slice.size`, or no `slice` section.
    slice_mib: Option<u64>,
}

fn edge_yaml(listen: &Listen, origin: SocketAddr, e: &EdgeDisk) -> String {
    let mut y = format!(
        r#"# Generated by the streamedge disk benchmark (loadtest/src/bin/disk.rs).
listen: {{ http: "{http}" }}
admin: {{ listen: "{admin}" }}
server: {{ drain_timeout: 2s }}
cache:
  max_size: {mem}MiB
  max_object_size: {obj}MiB
  disk:
    path: "{disk}"
    max_size: {disk_max}MiB
"#,
        http = listen.http,
        admin = listen.admin,
        mem = e.memory_mib,
        obj = e.max_object_mib,
        disk = e.disk.display(),
        disk_max = e.disk_max_mib,
    );
    if let Some(p) = e.promote_after {
        y.push_str(&format!(
            "    min_ttl: 30s\n    promote_after: {p}\n    fsync: false\n"
        ));
    }
    // The slice size must not exceed max_object_size (its default is 4 MiB).
    if let Some(s) = e
        .slice_mib
        .or((e.max_object_mib < 4).then_some(e.max_object_mib))
    {
        y.push_str(&format!("  slice:\n    size: {s}MiB\n"));
    }
    y.push_str(&format!(
        r#"origins:
  - url: "http://{origin}"
    name: bench-origin
log: {{ level: warn, access: "off" }}
"#
    ));
    y
}

/// A start that failed, with a hint when this streamedge has no disk tier at all.
fn start_error(e: anyhow::Error) -> anyhow::Error {
    if format!("{e:#}").contains("unknown field `disk`") {
        e.context(
            "this streamedge has no disk tier (cache.disk, issue 13): use a build that has it (--edge-bin), or --targets nginx",
        )
    } else {
        e
    }
}

fn fresh_listen() -> anyhow::Result<Listen> {
    Ok(Listen {
        http: free_port()?,
        https: None,
        admin: free_port()?,
    })
}

/// The process `pid` is gone or a zombie.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Asks `addr` for every path once, `conns` at a time on kept-alive connections.
async fn fetch_all(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    expect: Expect,
    conns: usize,
) -> Pass {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conns.max(1) {
        let (paths, next) = (paths.clone(), next.clone());
        set.spawn(async move {
            let mut pass = Pass::default();
            let mut conn: Option<TcpStream> = None;
            let host = addr.to_string();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                let mut stream = match conn.take() {
                    Some(s) => s,
                    None => match client::connect(addr).await {
                        Ok(s) => s,
                        Err(e) => {
                            pass.errors += 1;
                            pass.first_error.get_or_insert(format!("connect: {e}"));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let t = Instant::now();
                let r = tokio::time::timeout(
                    Duration::from_secs(30),
                    client::get_kept_alive(&mut stream, &host, path, expect, t),
                )
                .await
                .unwrap_or_else(|_| Err("timed out after 30 s".into()));
                match r {
                    Ok(s) => {
                        pass.ok += 1;
                        pass.bytes += expect.len;
                        pass.times.push(s.done);
                        *pass
                            .statuses
                            .entry(class(s.cache_status.as_deref()))
                            .or_insert(0) += 1;
                        if !s.close {
                            conn = Some(stream);
                        }
                    }
                    Err(e) => {
                        pass.errors += 1;
                        pass.first_error.get_or_insert(format!("GET {path}: {e}"));
                    }
                }
            }
            pass
        });
    }
    let mut all = Pass::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(p) => all.merge(p),
            Err(e) => {
                all.errors += 1;
                all.first_error.get_or_insert(format!("client task: {e}"));
            }
        }
    }
    all.wall = t0.elapsed();
    all
}

/// `streamedge_disk_objects` and `streamedge_disk_bytes` once at least `want` objects are on
/// disk, or once the count has not grown for `stall`, or after `limit`.
async fn wait_disk(admin: SocketAddr, want: u64, stall: Duration, limit: Duration) -> (f64, f64) {
    let t0 = Instant::now();
    let (mut last, mut since) = (-1.0, Instant::now());
    loop {
        let text = admin::metrics(admin).await.unwrap_or_default();
        let objects = metric_sum(&text, "streamedge_disk_objects");
        let bytes = metric_sum(&text, "streamedge_disk_bytes");
        if objects >= want as f64 || t0.elapsed() > limit {
            return (objects, bytes);
        }
        if objects > last {
            (last, since) = (objects, Instant::now());
        } else if since.elapsed() > stall {
            return (objects, bytes);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ----- part 1: hits from disk -----

/// A cache with the hit set on its disk.
struct HitsCache {
    target: Target,
    running: Running,
}

/// How the hit set got on a cache's disk.
struct HitsSetup {
    target: Target,
    /// The pass after the fill: where the answers came from.
    check: Pass,
    usage: Usage,
}

struct HitsRun {
    target: Target,
    warm: WrkResult,
    cold: Option<WrkResult>,
    cold_pass: Option<Pass>,
    origin_requests: u64,
    quiet: Quiet,
}

// ----- part 2: restart -----

#[derive(Debug, Clone, Default)]
struct Restart {
    round: usize,
    target: Option<Target>,
    /// Started after drop_caches.
    cold: bool,
    /// From the start of the process: the first answer (and what it was), the first hit.
    first_answer: Option<(Duration, String)>,
    first_hit: Option<Duration>,
    /// Answers before the first hit (misses, errors), and failed attempts after connecting.
    answers_before_hit: usize,
    failed: usize,
    /// streamedge: `streamedge_disk_index_ready` 1; nginx: its cache loader done (optional).
    index_ready: Option<Duration>,
    /// streamedge: `streamedge_disk_objects` once ready.
    indexed: Option<f64>,
    /// streamedge: RSS and VmHWM after the index is ready and a second more, KiB.
    rss_kib: u64,
    hwm_kib: u64,
    note: Option<String>,
    quiet: Quiet,
}

/// The filled disk of one cache.
#[derive(Debug, Clone, Default)]
struct Filled {
    pass: Pass,
    passes: usize,
    disk_objects: Option<f64>,
    disk_bytes: Option<f64>,
    usage: Usage,
    stop: Duration,
}

/// streamedge started with no request, over the filled disk or an empty one: its RSS (KiB)
/// a second after its index is ready.
#[derive(Debug, Clone, Default)]
struct Idle {
    loaded: bool,
    rss_kib: u64,
    hwm_kib: u64,
    index_ready: Option<Duration>,
    indexed: Option<f64>,
}

// ----- part 4: ranges -----

#[derive(Debug, Clone, Default)]
struct RangePass {
    origin_bytes: u64,
    origin_requests: u64,
    /// The origin had stopped sending when the pass was counted.
    settled: bool,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    times: Vec<Duration>,
    /// Status code and cache status of the answers.
    statuses: BTreeMap<String, usize>,
}

impl RangePass {
    fn p(&self, p: f64) -> Option<f64> {
        let mut t = self.times.clone();
        t.sort();
        (!t.is_empty()).then(|| ms(percentile(&t, p)))
    }
}

struct RangeRun {
    target: Target,
    passes: [RangePass; 2],
    quiet: Quiet,
}

/// The ranges asked: (first byte, length), reproducible from the seed.
fn make_ranges(args: &Args, size: u64) -> Vec<(u64, u64)> {
    let mut state = args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (lo, hi) = (args.range_min_kib * KIB, args.range_max_kib * KIB);
    (0..args.ranges)
        .map(|_| {
            let len = (lo + next() % (hi - lo + 1)).min(size);
            let first = next() % (size - len + 1);
            (first, len)
        })
        .collect()
}

/// Bytes covered by the union of the ranges.
fn distinct_bytes(ranges: &[(u64, u64)]) -> u64 {
    let mut r: Vec<(u64, u64)> = ranges.iter().map(|&(a, n)| (a, a + n)).collect();
    r.sort();
    let (mut total, mut end) = (0u64, 0u64);
    for (a, b) in r {
        let a = a.max(end);
        if b > a {
            total += b - a;
            end = b;
        }
    }
    total
}

/// Bytes of the slices of `slice` bytes the ranges touch (what a slicing cache must fetch at
/// least).
fn slice_bytes(ranges: &[(u64, u64)], slice: u64, size: u64) -> u64 {
    let mut touched: Vec<u64> = ranges
        .iter()
        .flat_map(|&(a, n)| a / slice..=(a + n - 1) / slice)
        .collect();
    touched.sort_unstable();
    touched.dedup();
    touched.iter().map(|&i| slice.min(size - i * slice)).sum()
}

/// Everything the measurements need.
struct Bench<'a> {
    args: &'a Args,
    edge_bin: Option<PathBuf>,
    nginx_bin: Option<PathBuf>,
    tmp: PathBuf,
    origin: &'a Origin,
    drop: DropCaches,
    notes: Vec<String>,
    anomalies: Vec<String>,
    builds: process::BuildWatch,
    /// hits
    hit_paths: Arc<Vec<String>>,
    hit_paths_file: PathBuf,
    hit_expect: Expect,
    /// restart
    idx_paths: Arc<Vec<String>>,
    idx_expect: Expect,
    /// The next object each target's probes ask for after a restart (never asked before).
    next_probe: BTreeMap<&'static str, usize>,
}

/// Everything measured.
#[derive(Default)]
struct Results {
    hits_setups: Vec<HitsSetup>,
    hits: Vec<HitsRun>,
    filled: Vec<(Target, Filled)>,
    restarts: Vec<Restart>,
    idles: Vec<Idle>,
    ranges: Vec<RangeRun>,
    range_distinct: u64,
    range_sum: u64,
    /// Bytes of the slices the ranges touch.
    range_slices: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("disk: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_list<T: Copy + PartialEq>(
    what: &str,
    given: &[String],
    all: &[(&str, T)],
) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    for g in given {
        let g = g.trim();
        match all.iter().find(|(n, _)| *n == g) {
            Some(&(_, t)) if !out.contains(&t) => out.push(t),
            Some(_) => {}
            None => bail!(
                "unknown {what} {g:?} ({})",
                all.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    Ok(out)
}

fn run(args: Args) -> anyhow::Result<()> {
    // reqwest (the ranges' client) is built without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let parts = parse_list(
        "part",
        &args.parts,
        &[
            ("hits", Part::Hits),
            ("restart", Part::Restart),
            ("ranges", Part::Ranges),
        ],
    )?;
    let targets = parse_list(
        "target",
        &args.targets,
        &[("streamedge", Target::Streamedge), ("nginx", Target::Nginx)],
    )?;
    if parts.is_empty() || targets.is_empty() {
        bail!("nothing to run: no --parts or no --targets");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if args.memory_mib < 2 {
        bail!("--memory-mib must be at least 2 (max_object_size is half of it)");
    }
    if parts.contains(&Part::Hits) {
        if args.objects == 0 || args.object_kib == 0 || args.duration == 0 {
            bail!("--objects, --object-kib and --duration must be at least 1");
        }
        if args.object_kib * KIB > args.memory_mib * MIB / 2 {
            bail!(
                "--object-kib {} is above max_object_size (half of --memory-mib {}): the objects would be sliced",
                args.object_kib,
                args.memory_mib
            );
        }
        if which("wrk").is_none() {
            bail!("wrk is not installed (Debian package `wrk`)");
        }
    }
    if parts.contains(&Part::Restart) && (args.index_objects == 0 || args.small_bytes == 0) {
        bail!("--index-objects and --small-bytes must be at least 1");
    }
    if parts.contains(&Part::Ranges)
        && (args.ranges == 0
            || args.range_min_kib == 0
            || args.range_min_kib > args.range_max_kib
            || args.range_max_kib * KIB > args.big_mib * MIB
            || args.slice_mib == 0)
    {
        bail!(
            "--ranges, --range-min-kib and --slice-mib must be at least 1, and --range-min-kib <= --range-max-kib <= --big-mib x 1024"
        );
    }
    let machine = Machine::describe();
    let edge_bin = if targets.contains(&Target::Streamedge) {
        Some(edge_binary(args.edge_bin.as_deref(), args.no_build)?)
    } else {
        None
    };
    let nginx_bin = if targets.contains(&Target::Nginx) {
        let bin = nginx::find().ok_or_else(|| {
            anyhow!("nginx is not installed (Debian package `nginx`); --targets streamedge leaves it out")
        })?;
        Some(bin)
    } else {
        None
    };
    let mut versions = vec![format!(
        "streamedge {} ({})",
        env!("CARGO_PKG_VERSION"),
        git_state()
    )];
    let mut slice_module = None;
    if let Some(bin) = &nginx_bin {
        let out = std::process::Command::new(bin).arg("-V").output();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default();
        let first = text.lines().next().unwrap_or_default().trim().to_owned();
        versions.push(
            first
                .strip_prefix("nginx version: ")
                .unwrap_or(&first)
                .to_owned(),
        );
        slice_module = Some(text.contains("--with-http_slice_module"));
    }
    if parts.contains(&Part::Hits) {
        versions.push(format!("wrk {}", tool_version("wrk", &["-v"])));
    }

    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let tmp = TempDir {
        path: base.join(format!("streamedge-disk-{}-{stamp}", std::process::id())),
        keep: args.keep,
    };
    std::fs::create_dir_all(&tmp.path)
        .with_context(|| format!("cannot create {}", tmp.path.display()))?;

    let dropping = if args.no_drop_caches {
        DropCaches::Disabled
    } else {
        match diskutil::drop_page_cache() {
            Ok(()) => DropCaches::Permitted,
            Err(e) => DropCaches::NotPermitted(e),
        }
    };

    // The origin of the hits and restart parts: 1 MiB objects under /disk/, small ones under
    // /idx/, at full speed, `Cache-Control: max-age=3600`.
    let hit_object = make_object((args.object_kib * KIB) as usize);
    // Not the same bytes as the start of the hit objects.
    let small_object = make_object(args.small_bytes + 7).slice(7..);
    let full_speed = Behaviour {
        latency: Duration::ZERO,
        body_time: Duration::ZERO,
    };
    let threads = machine.nproc.max(1);
    let origin = Origin::start_content(
        Content {
            files: Default::default(),
            routes: vec![
                Route {
                    prefix: "/disk/".into(),
                    object: hit_object.clone(),
                    behaviour: full_speed,
                },
                Route {
                    prefix: "/idx/".into(),
                    object: small_object.clone(),
                    behaviour: full_speed,
                },
            ],
        },
        threads,
    )?;
    let hit_paths: Vec<String> = (0..args.objects)
        .map(|i| format!("/disk/obj-{i:05}.bin"))
        .collect();
    let hit_paths_file = tmp.path.join("hit-paths.txt");
    std::fs::write(&hit_paths_file, hit_paths.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", hit_paths_file.display()))?;
    let idx_paths: Vec<String> = if parts.contains(&Part::Restart) {
        (0..args.index_objects)
            .map(|i| format!("/idx/{:03}/seg-{i:07}.m4s", i / 1000))
            .collect()
    } else {
        Vec::new()
    };

    let load_before = load_average();
    let compilers = process::other_builds();
    println!("streamedge disk: the disk tier against nginx proxy_cache");
    println!(
        "machine: {} cores ({}), {} RAM, kernel {}, {}",
        machine.nproc, machine.cpu, machine.memory, machine.kernel, machine.os
    );
    println!("versions: {}", versions.join("; "));
    println!(
        "caches on: {} ({})",
        tmp.path.display(),
        diskutil::filesystem(&tmp.path)
    );
    println!("drop_caches: {}", dropping.describe());
    if let Some(false) = slice_module {
        println!(
            "WARNING: this nginx has no slice module (--with-http_slice_module): the nginx-slice target is left out"
        );
    }
    println!(
        "parts: {}; targets: {}; {} rounds",
        args.parts.join(","),
        args.targets.join(","),
        args.rounds
    );
    if parts.contains(&Part::Hits) {
        println!(
            "hits: {} objects of {} KiB; streamedge memory tier {} MiB, promote_after {NEVER_PROMOTE}; wrk -t{} -c{} -s random-set.lua, {} s warm-up + {} s measured, {} s after drop_caches; cold pass with {} connections",
            args.objects,
            args.object_kib,
            args.memory_mib,
            args.threads,
            args.conns,
            args.warmup,
            args.duration,
            args.cold_duration,
            args.cold_conns
        );
    }
    if parts.contains(&Part::Restart) {
        println!(
            "restart: {} objects of {} bytes on disk (filled with {} connections), paths like {}; timeout {} s{}",
            args.index_objects,
            args.small_bytes,
            args.fill_conns,
            idx_paths.first().map_or("-", String::as_str),
            args.ready_timeout_s,
            if args.nginx_loader {
                "; waits for nginx's cache loader"
            } else {
                ""
            }
        );
    }
    if parts.contains(&Part::Ranges) {
        println!(
            "ranges: {} random ranges of {}-{} KiB of a {} MiB object, asked twice; slices of {} MiB; streamedge memory tier {} MiB; seed {}",
            args.ranges,
            args.range_min_kib,
            args.range_max_kib,
            args.big_mib,
            args.slice_mib,
            args.range_memory_mib,
            args.seed
        );
    }
    println!("load average before: {load_before}; other builds' compiler processes: {compilers}");
    if compilers > 0 {
        println!("WARNING: other builds are running: the numbers are skewed");
    }
    if cfg!(debug_assertions) {
        println!(
            "WARNING: debug build of the load generator; run `cargo run --release --bin disk`"
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("disk-clients")
        .enable_all()
        .build()
        .context("cannot build the client runtime")?;
    let (mut sigint, mut sigterm) = rt
        .block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })
        .context("cannot install signal handlers")?;

    let mut bench = Bench {
        args: &args,
        edge_bin,
        nginx_bin,
        tmp: tmp.path.clone(),
        origin: &origin,
        drop: dropping,
        notes: Vec::new(),
        anomalies: Vec::new(),
        builds: process::BuildWatch::start(Duration::from_millis(500)),
        hit_paths: Arc::new(hit_paths),
        hit_paths_file,
        hit_expect: expect_of(&hit_object),
        idx_paths: Arc::new(idx_paths),
        idx_expect: expect_of(&small_object),
        next_probe: BTreeMap::new(),
    };
    let mut range_targets = targets.clone();
    if targets.contains(&Target::Nginx) && slice_module != Some(false) {
        range_targets.push(Target::NginxSlice);
    }
    let started = Instant::now();
    let mut results = Results::default();
    let outcome = rt.block_on(async {
        tokio::select! {
            r = bench.all(&parts, &targets, &range_targets, &mut results) => r,
            _ = sigint.recv() => Err(anyhow!("interrupted (SIGINT)")),
            _ = sigterm.recv() => Err(anyhow!("terminated (SIGTERM)")),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    let load_after = load_average();
    let compilers_after = process::other_builds();

    let about = format!(
        "{} cores ({}), {} RAM, kernel {}, {}; caches on {}; {}; drop_caches {}; `disk {}`",
        machine.nproc,
        machine.cpu,
        machine.memory,
        machine.kernel,
        machine.os,
        diskutil::filesystem(&tmp.path),
        versions.join(", "),
        bench.drop.describe(),
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    if outcome.is_err() {
        println!("\n(partial results: the benchmark stopped early; the error is at the end)");
    }
    print_summary(
        &args,
        &about,
        &bench,
        &parts,
        &targets,
        &range_targets,
        &results,
    );
    println!(
        "\nload average before: {load_before}; after: {load_after} (includes the run's own load); other builds' compiler processes before / after: {compilers} / {compilers_after}; wall time {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if !bench.notes.is_empty() {
        println!("\nnotes:");
        for n in &bench.notes {
            println!("  {n}");
        }
    }
    if !bench.anomalies.is_empty() {
        println!("\nanomalies (the numbers they touch are suspect):");
        for a in &bench.anomalies {
            println!("  {a}");
        }
    }
    if let Some(path) = &args.json {
        let json = to_json(
            &args,
            &machine,
            &versions,
            [&load_before, &load_after],
            &bench,
            &results,
        );
        std::fs::write(path, json.render())
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nresults written to {}", path.display());
    }
    let mut tmp = tmp;
    if outcome.is_err() {
        // What ran before the failure is in the summary above; the configs and logs stay for
        // a look (and the caches' files: remove the directory afterwards).
        tmp.keep = true;
    }
    // The caches are stopped already; the origin before the directory.
    drop(bench);
    drop(origin);
    drop(tmp);
    outcome
}

impl Bench<'_> {
    async fn all(
        &mut self,
        parts: &[Part],
        targets: &[Target],
        range_targets: &[Target],
        res: &mut Results,
    ) -> anyhow::Result<()> {
        if parts.contains(&Part::Hits) {
            self.hits(targets, res).await?;
        }
        if parts.contains(&Part::Restart) {
            self.restarts(targets, res).await?;
        }
        if parts.contains(&Part::Ranges) {
            self.ranges(range_targets, res).await?;
        }
        Ok(())
    }

    /// Waits (up to `--wait-quiet-s`) for other builds to finish, then starts watching for
    /// them and for other processes' CPU.
    async fn quiet(&self) -> (String, process::OtherCpu) {
        let deadline = Instant::now() + Duration::from_secs(self.args.wait_quiet_s);
        let mut said = false;
        while process::other_builds() > 0 && Instant::now() < deadline {
            if !said {
                println!(
                    "(waiting for other builds to finish, at most {} s)",
                    self.args.wait_quiet_s
                );
                said = true;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        self.builds.take();
        (load_average(), process::OtherCpu::start())
    }

    fn quiet_since(&self, (load, cpu): (String, process::OtherCpu)) -> Quiet {
        Quiet {
            load,
            other_builds: self.builds.take(),
            other_cores: cpu.cores(),
        }
    }

    fn drop_caches(&mut self, at: &str) -> bool {
        if !self.drop.ok() {
            return false;
        }
        match diskutil::drop_page_cache() {
            Ok(()) => true,
            Err(e) => {
                self.anomalies
                    .push(format!("{at}: drop_caches failed this time: {e}"));
                false
            }
        }
    }

    fn edge_bin(&self) -> anyhow::Result<&Path> {
        self.edge_bin
            .as_deref()
            .ok_or_else(|| anyhow!("no streamedge binary"))
    }

    fn nginx_bin(&self) -> anyhow::Result<&Path> {
        self.nginx_bin
            .as_deref()
            .ok_or_else(|| anyhow!("no nginx binary"))
    }

    /// Starts streamedge with `yaml` (config and log in `conf_dir`); returns once it listens.
    fn start_edge(&self, conf_dir: &Path, e: &EdgeDisk) -> anyhow::Result<EdgeProcess> {
        let listen = fresh_listen()?;
        let yaml = edge_yaml(&listen, self.origin.addr, e);
        let mut edge = EdgeProcess::spawn_yaml(self.edge_bin()?, conf_dir, &yaml, listen, &[])?;
        edge.wait_listening(
            Duration::from_secs(self.args.ready_timeout_s),
            Duration::from_millis(20),
        )
        .map_err(start_error)?;
        Ok(edge)
    }

    /// Starts nginx in `dir` (kept: its cache survives a restart); returns once it listens.
    fn start_nginx(
        &self,
        dir: &Path,
        conf: impl FnOnce(SocketAddr) -> DiskConf,
    ) -> anyhow::Result<Nginx> {
        let http = free_port()?;
        let text = nginx::disk_config(dir, &conf(http));
        let mut n = Nginx::spawn_in(self.nginx_bin()?, dir, vec![http], &[], &text)?;
        n.wait_listening(Duration::from_secs(30), Duration::from_millis(20))?;
        Ok(n)
    }

    /// Checks a started cache after a measurement: streamedge's log at warn level and above,
    /// and that it still runs.
    fn check_edge(&mut self, at: &str, edge: &mut EdgeProcess) {
        if !edge.running() {
            self.anomalies.push(format!("{at}: streamedge exited"));
        }
        let log = std::fs::read_to_string(edge.log_path()).unwrap_or_default();
        let mut lines = Vec::new();
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            if MACHINE_LIMITS.iter().any(|m| line.contains(m)) {
                // Without its time stamp, the same line from every start is one note.
                let text = line.split_once("WARN ").map_or(line, |(_, t)| t);
                let note = format!("streamedge logged at start: {text}");
                if !self.notes.contains(&note) {
                    self.notes.push(note);
                }
            } else {
                lines.push(line);
            }
        }
        if !lines.is_empty() {
            let from = lines.len().saturating_sub(10);
            self.anomalies.push(format!(
                "{at}: streamedge logged (warn and above, tail of {}):\n    {}",
                edge.log_path().display(),
                lines[from..].join("\n    ")
            ));
        }
    }

    // ----- part 1 -----

    async fn hits(&mut self, targets: &[Target], res: &mut Results) -> anyhow::Result<()> {
        let a = self.args;
        println!(
            "\n===== part 1: {} objects of {} KiB served from disk =====",
            a.objects, a.object_kib
        );
        let mut caches = Vec::new();
        for &t in targets {
            let (cache, setup) = self.hits_setup(t).await?;
            caches.push(cache);
            res.hits_setups.push(setup);
        }
        for round in 0..a.rounds {
            println!("--- round {} of {} ---", round + 1, a.rounds);
            let n = caches.len();
            for k in 0..n {
                let i = (round + k) % n;
                let run = self.hits_run(round, &caches[i]).await?;
                res.hits.push(run);
            }
        }
        for mut c in caches {
            let at = format!("hits {}", c.target.slug());
            if let Running::Edge(e) = &mut c.running {
                let text = admin::metrics(e.admin).await.unwrap_or_default();
                println!(
                    "{at}: at the end: streamedge_cache_bytes {:.1} MiB (the memory tier), streamedge_disk_objects {}, streamedge_disk_bytes {:.1} MiB",
                    metric_sum(&text, "streamedge_cache_bytes") / MIB as f64,
                    metric_sum(&text, "streamedge_disk_objects"),
                    metric_sum(&text, "streamedge_disk_bytes") / MIB as f64
                );
                self.check_edge(&at, e);
            }
            c.running.stop();
        }
        Ok(())
    }

    /// Starts a cache and puts the hit set on its disk: every object asked once (a miss),
    /// then once more (the check pass: every answer should come from disk).
    async fn hits_setup(&mut self, target: Target) -> anyhow::Result<(HitsCache, HitsSetup)> {
        let a = self.args;
        let dir = self.tmp.join(format!("hits-{}", target.slug()));
        let set_mib = (a.objects as u64 * a.object_kib).div_ceil(1024);
        let running = match target {
            Target::Streamedge => {
                let disk = dir.join("disk");
                Running::Edge(self.start_edge(
                    &dir.join("conf"),
                    &EdgeDisk {
                        memory_mib: a.memory_mib,
                        max_object_mib: a.memory_mib / 2,
                        disk: &disk,
                        disk_max_mib: set_mib * 2 + 1024,
                        promote_after: Some(NEVER_PROMOTE),
                        slice_mib: None,
                    },
                )?)
            }
            _ => {
                let origin = self.origin.addr;
                Running::Nginx(self.start_nginx(&dir, |http| DiskConf {
                    http,
                    origin,
                    keys_zone_mib: 16,
                    max_size_mib: set_mib * 2 + 1024,
                    slice_mib: None,
                })?)
            }
        };
        let addr = running.addr();
        let fill = fetch_all(addr, self.hit_paths.clone(), self.hit_expect, 8).await;
        let (mut disk_objects, mut disk_bytes) = (None, None);
        if let Running::Edge(e) = &running {
            let (o, b) = wait_disk(
                e.admin,
                a.objects as u64,
                Duration::from_secs(10),
                Duration::from_secs(120),
            )
            .await;
            (disk_objects, disk_bytes) = (Some(o), Some(b));
        }
        // What the set takes on disk (before the filler below adds to it).
        let usage = diskutil::usage(&match &running {
            Running::Edge(_) => dir.join("disk"),
            Running::Nginx(n) => n.dir.join("cache"),
        });
        let mut filler = None;
        if matches!(running, Running::Edge(_)) {
            // Stored objects are written through: the last ones are in the memory tier too.
            // Objects outside the set, twice the memory tier, push them out of it.
            let n = (2 * a.memory_mib * KIB).div_ceil(a.object_kib) as usize + 2;
            let paths: Vec<String> = (0..n).map(|i| format!("/disk/filler-{i:05}.bin")).collect();
            filler = Some(fetch_all(addr, Arc::new(paths), self.hit_expect, 8).await);
        }
        let check = fetch_all(addr, self.hit_paths.clone(), self.hit_expect, 8).await;
        let at = format!("hits {}", target.slug());
        for (what, p) in [
            ("fill", Some(&fill)),
            ("filler", filler.as_ref()),
            ("check", Some(&check)),
        ] {
            if let Some(p) = p
                && p.errors > 0
            {
                self.anomalies.push(format!(
                    "{at}: {what} pass: {} errors (first: {})",
                    p.errors,
                    p.first_error.as_deref().unwrap_or("-")
                ));
            }
        }
        let from_disk = check
            .statuses
            .iter()
            .filter(|(k, _)| *k == "disk hit" || *k == "HIT")
            .map(|(_, v)| v)
            .sum::<usize>();
        if from_disk < a.objects {
            self.anomalies.push(format!(
                "{at}: the check pass after the fill got {from_disk} of {} answers from disk ({})",
                a.objects,
                tally(&check.statuses)
            ));
        }
        println!(
            "{:<11} filled {} objects in {:.1} s ({}); check pass: {}; on disk: {} files, {:.1} MiB{}",
            target.slug(),
            fill.ok,
            fill.wall.as_secs_f64(),
            tally(&fill.statuses),
            tally(&check.statuses),
            usage.files,
            usage.allocated as f64 / MIB as f64,
            match disk_objects {
                Some(o) => format!(
                    "; streamedge_disk_objects {o}, streamedge_disk_bytes {:.1} MiB",
                    disk_bytes.unwrap_or(0.0) / MIB as f64
                ),
                None => String::new(),
            }
        );
        Ok((
            HitsCache { target, running },
            HitsSetup {
                target,
                check,
                usage,
            },
        ))
    }

    async fn wrk(
        &self,
        addr: SocketAddr,
        secs: u64,
        label: &str,
        seed: usize,
    ) -> anyhow::Result<WrkResult> {
        let a = self.args;
        let cmd = vec![
            "wrk".into(),
            format!("-t{}", a.threads),
            format!("-c{}", a.conns),
            format!("-d{secs}s"),
            "--timeout".into(),
            "10s".into(),
            "-s".into(),
            format!("{WRK_DIR}/random-set.lua"),
            format!("http://{addr}/"),
            "--".into(),
            self.hit_paths_file.display().to_string(),
        ];
        let seed = (seed + 1).to_string();
        let env = [("RESULT_LABEL", label), ("SEED", seed.as_str())];
        let out = loadgen::run_tool(&[], cmd, &env, Duration::from_secs(secs + 60)).await?;
        loadgen::parse_wrk(&out)
    }

    async fn hits_run(&mut self, round: usize, c: &HitsCache) -> anyhow::Result<HitsRun> {
        let a = self.args;
        let at = format!("round {} hits {}", round + 1, c.target.slug());
        let addr = c.running.addr();
        let since = self.quiet().await;
        let origin0 = self.origin.total_requests();
        if a.warmup > 0 {
            self.wrk(addr, a.warmup, "warmup", round)
                .await
                .with_context(|| format!("{at}: warm-up"))?;
        }
        let warm = self
            .wrk(addr, a.duration, c.target.slug(), round)
            .await
            .with_context(|| at.clone())?;
        let mut cold = None;
        let mut cold_pass = None;
        if a.cold_duration > 0 && self.drop_caches(&at) {
            cold = Some(
                self.wrk(addr, a.cold_duration, "cold", round)
                    .await
                    .with_context(|| format!("{at}: after drop_caches"))?,
            );
        }
        if self.drop_caches(&at) {
            cold_pass =
                Some(fetch_all(addr, self.hit_paths.clone(), self.hit_expect, a.cold_conns).await);
        }
        let origin_requests = self.origin.total_requests() - origin0;
        let quiet = self.quiet_since(since);
        for (what, w) in [("warm", Some(&warm)), ("cold", cold.as_ref())] {
            if let Some(w) = w
                && w.errors > 0
            {
                self.anomalies.push(format!(
                    "{at}: {what} run: {} errors of {} requests",
                    w.errors,
                    w.requests + w.errors
                ));
            }
        }
        if let Some(p) = &cold_pass
            && p.errors > 0
        {
            self.anomalies.push(format!(
                "{at}: cold pass: {} errors (first: {})",
                p.errors,
                p.first_error.as_deref().unwrap_or("-")
            ));
        }
        if origin_requests > 0 {
            self.anomalies.push(format!(
                "{at}: {origin_requests} origin requests during the runs (every request should be a hit)"
            ));
        }
        let f2 = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.2}"));
        println!(
            "{:<7} {:<11} warm {:>7.0} req/s p99 {:>7.2} ms | after drop_caches {} req/s p99 {} ms | cold pass {} | origin req {}  {}",
            round + 1,
            c.target.slug(),
            warm.rps,
            warm.p99_ms,
            cold.as_ref()
                .map_or("-".into(), |w| format!("{:.0}", w.rps)),
            f2(cold.as_ref().map(|w| w.p99_ms)),
            cold_pass.as_ref().map_or("-".into(), |p| format!(
                "{:.2} s, {:.0} MiB/s, p99 {} ms ({})",
                p.wall.as_secs_f64(),
                p.mib_s(),
                f2(p.p(0.99)),
                tally(&p.statuses)
            )),
            origin_requests,
            quiet.tag()
        );
        Ok(HitsRun {
            target: c.target,
            warm,
            cold,
            cold_pass,
            origin_requests,
            quiet,
        })
    }

    // ----- parts 2 and 3 -----

    async fn restarts(&mut self, targets: &[Target], res: &mut Results) -> anyhow::Result<()> {
        let a = self.args;
        println!(
            "\n===== part 2: start with {} objects on disk; part 3: index memory =====",
            a.index_objects
        );
        let edge_disk = self.tmp.join("restart-streamedge").join("disk");
        let nginx_dir = self.tmp.join("restart-nginx");
        for &t in targets {
            let filled = match t {
                Target::Streamedge => self.fill_edge(&edge_disk).await?,
                _ => self.fill_nginx(&nginx_dir).await?,
            };
            res.filled.push((t, filled));
        }
        let colds: &[bool] = if self.drop.ok() {
            &[false, true]
        } else {
            &[false]
        };
        for round in 0..a.rounds {
            println!("--- round {} of {} ---", round + 1, a.rounds);
            let n = targets.len();
            for k in 0..n {
                let t = targets[(round + k) % n];
                for &cold in colds {
                    let r = match t {
                        Target::Streamedge => self.restart_edge(round, cold, &edge_disk).await?,
                        _ => self.restart_nginx(round, cold, &nginx_dir).await?,
                    };
                    res.restarts.push(r);
                }
                if t == Target::Streamedge {
                    res.idles
                        .push(self.idle_edge(round, Some(&edge_disk)).await?);
                    res.idles.push(self.idle_edge(round, None).await?);
                }
            }
        }
        Ok(())
    }

    fn idx_edge_config<'p>(&self, disk: &'p Path) -> EdgeDisk<'p> {
        let a = self.args;
        EdgeDisk {
            memory_mib: a.memory_mib,
            max_object_mib: a.memory_mib / 2,
            disk,
            disk_max_mib: (a.index_objects as u64 * (a.small_bytes as u64 + 16 * KIB))
                .div_ceil(MIB)
                + 1024,
            promote_after: Some(NEVER_PROMOTE),
            slice_mib: None,
        }
    }

    /// streamedge fills its disk: every object asked once, until `streamedge_disk_objects`
    /// counts them all (another pass for what did not make it, at most three); then stopped.
    async fn fill_edge(&mut self, disk: &Path) -> anyhow::Result<Filled> {
        let a = self.args;
        let want = a.index_objects as u64;
        let conf = self.idx_edge_config(disk);
        let mut edge = self.start_edge(&self.tmp.join("restart-streamedge").join("fill"), &conf)?;
        let mut filled = Filled::default();
        for pass in 1..=3 {
            let p = fetch_all(
                edge.http,
                self.idx_paths.clone(),
                self.idx_expect,
                a.fill_conns,
            )
            .await;
            self.report_fill("streamedge", &format!("fill pass {pass}"), &p);
            let mut p = p;
            p.times.clear();
            if pass == 1 {
                filled.pass = p;
            }
            filled.passes = pass;
            let (o, b) = wait_disk(
                edge.admin,
                want,
                Duration::from_secs(10),
                Duration::from_secs(120 + want / 500),
            )
            .await;
            (filled.disk_objects, filled.disk_bytes) = (Some(o), Some(b));
            println!(
                "streamedge  on disk: streamedge_disk_objects {o}, streamedge_disk_bytes {:.1} MiB",
                b / MIB as f64
            );
            if o >= want as f64 {
                break;
            }
        }
        if filled.disk_objects.unwrap_or(0.0) < want as f64 {
            self.anomalies.push(format!(
                "restart streamedge: {} of {want} objects on disk after {} passes",
                filled.disk_objects.unwrap_or(0.0),
                filled.passes
            ));
        }
        self.check_edge("restart streamedge fill", &mut edge);
        let t = Instant::now();
        edge.stop();
        filled.stop = t.elapsed();
        filled.usage = diskutil::usage(disk);
        println!(
            "streamedge  stopped in {:.2} s; on disk: {} files, {:.1} MiB ({:.1} MiB allocated)",
            filled.stop.as_secs_f64(),
            filled.usage.files,
            filled.usage.bytes as f64 / MIB as f64,
            filled.usage.allocated as f64 / MIB as f64
        );
        Ok(filled)
    }

    fn idx_nginx_conf(&self, http: SocketAddr) -> DiskConf {
        let n = self.args.index_objects as u64;
        DiskConf {
            http,
            origin: self.origin.addr,
            // About 8,000 keys per MiB; room for the probes' misses.
            keys_zone_mib: 8 + n / 6000,
            max_size_mib: (n * (self.args.small_bytes as u64 + 8 * KIB)).div_ceil(MIB) + 1024,
            slice_mib: None,
        }
    }

    /// Prints one fill pass and records its errors as an anomaly.
    fn report_fill(&mut self, target: &str, what: &str, p: &Pass) {
        println!(
            "{target:<11} {what}: {} objects in {:.1} s ({:.0}/s; {}), {} errors",
            p.ok,
            p.wall.as_secs_f64(),
            p.ok as f64 / p.wall.as_secs_f64().max(1e-9),
            tally(&p.statuses),
            p.errors
        );
        if p.errors > 0 {
            self.anomalies.push(format!(
                "restart {target}: {what}: {} errors (first: {})",
                p.errors,
                p.first_error.as_deref().unwrap_or("-")
            ));
        }
    }

    async fn fill_nginx(&mut self, dir: &Path) -> anyhow::Result<Filled> {
        let a = self.args;
        let mut n = self.start_nginx(dir, |http| self.idx_nginx_conf(http))?;
        let mut p = fetch_all(
            n.addr,
            self.idx_paths.clone(),
            self.idx_expect,
            a.fill_conns,
        )
        .await;
        self.report_fill("nginx", "fill", &p);
        p.times.clear();
        let t = Instant::now();
        n.stop();
        let mut filled = Filled {
            pass: p,
            passes: 1,
            stop: t.elapsed(),
            ..Filled::default()
        };
        filled.usage = diskutil::usage(&dir.join("cache"));
        println!(
            "nginx       stopped in {:.2} s; on disk: {} files, {:.1} MiB ({:.1} MiB allocated)",
            filled.stop.as_secs_f64(),
            filled.usage.files,
            filled.usage.bytes as f64 / MIB as f64,
            filled.usage.allocated as f64 / MIB as f64
        );
        Ok(filled)
    }

    /// The next `n` objects for a target's probes, never asked since the fill.
    fn probe_paths(&mut self, target: Target) -> Vec<String> {
        let total = self.idx_paths.len();
        let start = self.next_probe.entry(target.slug()).or_insert(0);
        // More than enough for one start: answered probes are 10 ms apart at least.
        let n = total.min(20_000);
        (0..n)
            .map(|i| self.idx_paths[(*start + i) % total].clone())
            .collect()
    }

    /// Probes a starting cache from `t0`: one new connection per request, each for an object
    /// not asked before, every 2 ms while it refuses connections and 10 ms apart once it
    /// answers, until an answer is a hit.
    /// The paths used are marked as asked.
    async fn probe(&mut self, target: Target, addr: SocketAddr, t0: Instant, r: &mut Restart) {
        let paths = self.probe_paths(target);
        let limit = Duration::from_secs(self.args.ready_timeout_s);
        let expect = self.idx_expect;
        let mut used = 0;
        while t0.elapsed() < limit && used < paths.len() {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(1), client::connect(addr)).await
            else {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            };
            let path = &paths[used];
            used += 1;
            let answer = tokio::time::timeout(
                Duration::from_secs(30),
                client::get(stream, addr, path, expect, t0),
            )
            .await
            .unwrap_or_else(|_| Err("timed out after 30 s".into()));
            let at = t0.elapsed();
            let what = match answer {
                Ok(s) => class(s.cache_status.as_deref()),
                Err(e) if e.starts_with("status ") => e,
                Err(_) => {
                    r.failed += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
            };
            if r.first_answer.is_none() {
                r.first_answer = Some((at, what.clone()));
            }
            if is_hit(&what) {
                r.first_hit = Some(at);
                break;
            }
            r.answers_before_hit += 1;
            // Fewer once it answers: the misses would load the cache while it starts.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        *self.next_probe.entry(target.slug()).or_insert(0) += used;
    }

    /// Waits for `streamedge_disk_index_ready` 1 from `t0`; the time, and
    /// `streamedge_disk_objects` then. Gives up when the page has no such metric for 10 s.
    async fn index_ready(
        admin: SocketAddr,
        t0: Instant,
        limit: Duration,
    ) -> (Option<Duration>, Option<f64>, Option<String>) {
        let mut without_metric: Option<Instant> = None;
        while t0.elapsed() < limit {
            if let Some(text) = admin::metrics(admin).await {
                if metric_sum(&text, "streamedge_disk_index_ready") >= 1.0 {
                    return (
                        Some(t0.elapsed()),
                        Some(metric_sum(&text, "streamedge_disk_objects")),
                        None,
                    );
                }
                if !text.contains("streamedge_disk_index_ready") {
                    let since = *without_metric.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(10) {
                        return (
                            None,
                            None,
                            Some("no streamedge_disk_index_ready metric".into()),
                        );
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (
            None,
            None,
            Some(format!("index not ready within {limit:?}")),
        )
    }

    async fn restart_edge(
        &mut self,
        round: usize,
        cold: bool,
        disk: &Path,
    ) -> anyhow::Result<Restart> {
        let a = self.args;
        let kind = if cold { "cold" } else { "warm" };
        let at = format!("round {} restart streamedge ({kind})", round + 1);
        let conf_dir = self
            .tmp
            .join("restart-streamedge")
            .join(format!("round-{}-{kind}", round + 1));
        let listen = fresh_listen()?;
        let yaml = edge_yaml(&listen, self.origin.addr, &self.idx_edge_config(disk));
        let mut r = Restart {
            round,
            target: Some(Target::Streamedge),
            cold,
            ..Restart::default()
        };
        if cold {
            self.drop_caches(&at);
        }
        let since = self.quiet().await;
        let limit = Duration::from_secs(a.ready_timeout_s);
        let t0 = Instant::now();
        let mut edge = EdgeProcess::spawn_yaml(self.edge_bin()?, &conf_dir, &yaml, listen, &[])?;
        let pid = edge.pid().unwrap_or(0);
        let watch = async {
            while !exited(pid) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let mut probe_r = Restart::default();
        let both = async {
            let ready = Self::index_ready(listen.admin, t0, limit);
            let probe = self.probe(Target::Streamedge, listen.http, t0, &mut probe_r);
            tokio::join!(ready, probe).0
        };
        let ready = tokio::select! {
            r = both => Some(r),
            _ = watch => None,
        };
        let Some((index_ready, indexed, note)) = ready else {
            return Err(start_error(anyhow!(
                "{at}: streamedge exited while starting; log in {}:\n{}",
                conf_dir.display(),
                process::tail(&edge.log_path())
            )));
        };
        r.first_answer = probe_r.first_answer;
        r.first_hit = probe_r.first_hit;
        r.answers_before_hit = probe_r.answers_before_hit;
        r.failed = probe_r.failed;
        r.index_ready = index_ready;
        r.indexed = indexed;
        r.note = note;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let m = process::memory(&[pid]);
        (r.rss_kib, r.hwm_kib) = (m.rss, m.hwm);
        r.quiet = self.quiet_since(since);
        self.check_edge(&at, &mut edge);
        edge.stop();
        if r.first_hit.is_none() || r.index_ready.is_none() {
            self.anomalies.push(format!(
                "{at}: first hit {}, index ready {}{}",
                r.first_hit.map_or("never".into(), |d| format!(
                    "after {:.3} s",
                    d.as_secs_f64()
                )),
                r.index_ready.map_or("never".into(), |d| format!(
                    "after {:.3} s",
                    d.as_secs_f64()
                )),
                r.note.as_ref().map_or(String::new(), |n| format!(" ({n})"))
            ));
        }
        print_restart(&r);
        Ok(r)
    }

    /// streamedge started over `disk` (or an empty one) and asked nothing: its RSS a second
    /// after its index is ready (the restarts' probes would add what they store in memory).
    async fn idle_edge(&mut self, round: usize, disk: Option<&Path>) -> anyhow::Result<Idle> {
        let loaded = disk.is_some();
        let what = if loaded { "idle" } else { "empty" };
        let dir = self
            .tmp
            .join(format!("restart-{what}"))
            .join(format!("round-{}", round + 1));
        let empty_disk = dir.join("disk");
        let disk = disk.unwrap_or(&empty_disk);
        let listen = fresh_listen()?;
        let yaml = edge_yaml(&listen, self.origin.addr, &self.idx_edge_config(disk));
        let t0 = Instant::now();
        let mut edge =
            EdgeProcess::spawn_yaml(self.edge_bin()?, &dir.join("conf"), &yaml, listen, &[])?;
        let limit = Duration::from_secs(self.args.ready_timeout_s);
        edge.wait_listening(limit, Duration::from_millis(20))
            .map_err(start_error)?;
        let (index_ready, indexed, _) = Self::index_ready(listen.admin, t0, limit).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let m = process::memory(&edge.pid().into_iter().collect::<Vec<_>>());
        self.check_edge(&format!("round {} {what} streamedge", round + 1), &mut edge);
        edge.stop();
        if !loaded {
            let _ = std::fs::remove_dir_all(&empty_disk);
        }
        println!(
            "{:<7} {:<11} {} disk, no requests: index ready after {}{}, RSS {:.1} MiB (peak {:.1} MiB)",
            round + 1,
            "streamedge",
            if loaded { "filled" } else { "empty" },
            index_ready.map_or("never".into(), |d| format!("{:.3} s", d.as_secs_f64())),
            indexed.map_or(String::new(), |o| format!(" ({o} objects)")),
            m.rss as f64 / 1024.0,
            m.hwm as f64 / 1024.0
        );
        Ok(Idle {
            loaded,
            rss_kib: m.rss,
            hwm_kib: m.hwm,
            index_ready,
            indexed,
        })
    }

    async fn restart_nginx(
        &mut self,
        round: usize,
        cold: bool,
        dir: &Path,
    ) -> anyhow::Result<Restart> {
        let a = self.args;
        let kind = if cold { "cold" } else { "warm" };
        let at = format!("round {} restart nginx ({kind})", round + 1);
        let http = free_port()?;
        let text = nginx::disk_config(dir, &self.idx_nginx_conf(http));
        let log = dir.join("error.log");
        let log_from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut r = Restart {
            round,
            target: Some(Target::Nginx),
            cold,
            ..Restart::default()
        };
        if cold {
            self.drop_caches(&at);
        }
        let since = self.quiet().await;
        let t0 = Instant::now();
        let mut n = Nginx::spawn_in(self.nginx_bin()?, dir, vec![http], &[], &text)?;
        let pid = n.pid().unwrap_or(0);
        let mut probe_r = Restart::default();
        let watch = async {
            while !exited(pid) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let probed = tokio::select! {
            _ = self.probe(Target::Nginx, http, t0, &mut probe_r) => true,
            _ = watch => false,
        };
        if !probed {
            bail!("{at}: nginx exited while starting:\n{}", n.error_log_tail());
        }
        r.first_answer = probe_r.first_answer;
        r.first_hit = probe_r.first_hit;
        r.answers_before_hit = probe_r.answers_before_hit;
        r.failed = probe_r.failed;
        if a.nginx_loader {
            // The master logs "cache loader process <pid> exited with code 0" at notice level.
            let limit = Duration::from_secs(a.ready_timeout_s.max(600));
            while t0.elapsed() < limit {
                let text = std::fs::read(&log).unwrap_or_default();
                let new = String::from_utf8_lossy(&text[(log_from as usize).min(text.len())..])
                    .into_owned();
                if new.contains("cache loader process") && new.contains("exited") {
                    r.index_ready = Some(t0.elapsed());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if r.index_ready.is_none() {
                r.note = Some(format!("cache loader not done within {limit:?}"));
            }
        }
        r.quiet = self.quiet_since(since);
        n.stop();
        if r.first_hit.is_none() {
            self.anomalies
                .push(format!("{at}: no hit within {} s", a.ready_timeout_s));
        }
        print_restart(&r);
        Ok(r)
    }

    // ----- part 4 -----

    async fn ranges(&mut self, targets: &[Target], res: &mut Results) -> anyhow::Result<()> {
        let a = self.args;
        let size = a.big_mib * MIB;
        let ranges = make_ranges(a, size);
        res.range_distinct = distinct_bytes(&ranges);
        res.range_sum = ranges.iter().map(|r| r.1).sum();
        res.range_slices = slice_bytes(&ranges, a.slice_mib * MIB, size);
        println!(
            "\n===== part 4: {} random ranges of a {} MiB object, twice: origin bytes =====",
            a.ranges, a.big_mib
        );
        println!(
            "the ranges: {:.1} MiB in all, {:.1} MiB distinct ({:.2}% of the object), in {:.1} MiB of {} MiB slices",
            res.range_sum as f64 / MIB as f64,
            res.range_distinct as f64 / MIB as f64,
            100.0 * res.range_distinct as f64 / size as f64,
            res.range_slices as f64 / MIB as f64,
            a.slice_mib
        );
        let origin = RangeOrigin::start(size, 1)?;
        for round in 0..a.rounds {
            println!("--- round {} of {} ---", round + 1, a.rounds);
            let n = targets.len();
            for k in 0..n {
                let t = targets[(round + k) % n];
                let run = self.range_run(round, t, &origin, &ranges).await?;
                res.ranges.push(run);
            }
        }
        Ok(())
    }

    async fn range_run(
        &mut self,
        round: usize,
        target: Target,
        origin: &RangeOrigin,
        ranges: &[(u64, u64)],
    ) -> anyhow::Result<RangeRun> {
        let a = self.args;
        let at = format!("round {} ranges {}", round + 1, target.slug());
        let dir = self
            .tmp
            .join(format!("ranges-{}-round-{}", target.slug(), round + 1));
        let size = origin.size;
        let cache_mib = (size * 2).div_ceil(MIB) + 1024;
        let (settled0, _) = origin
            .settle(Duration::from_millis(300), Duration::from_secs(60))
            .await;
        let since = self.quiet().await;
        let mut running = match target {
            Target::Streamedge => {
                let disk = dir.join("disk");
                let listen = fresh_listen()?;
                let yaml = edge_yaml(
                    &listen,
                    origin.addr,
                    &EdgeDisk {
                        memory_mib: a.range_memory_mib,
                        max_object_mib: 64.min(a.range_memory_mib),
                        disk: &disk,
                        disk_max_mib: cache_mib,
                        promote_after: None,
                        slice_mib: Some(a.slice_mib),
                    },
                );
                let mut e = EdgeProcess::spawn_yaml(
                    self.edge_bin()?,
                    &dir.join("conf"),
                    &yaml,
                    listen,
                    &[],
                )?;
                e.wait_listening(Duration::from_secs(60), Duration::from_millis(20))
                    .map_err(start_error)?;
                Running::Edge(e)
            }
            Target::Nginx | Target::NginxSlice => {
                let http = free_port()?;
                let text = nginx::disk_config(
                    &dir,
                    &DiskConf {
                        http,
                        origin: origin.addr,
                        keys_zone_mib: 16,
                        max_size_mib: cache_mib,
                        slice_mib: (target == Target::NginxSlice).then_some(a.slice_mib),
                    },
                );
                let mut n = Nginx::spawn_in(self.nginx_bin()?, &dir, vec![http], &[], &text)?;
                n.wait_listening(Duration::from_secs(30), Duration::from_millis(20))?;
                Running::Nginx(n)
            }
        };
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(300))
            .build()?;
        let url = format!("http://{}/big/object.bin", running.addr());
        let mut passes: [RangePass; 2] = Default::default();
        let mut before = settled0;
        for (i, pass) in passes.iter_mut().enumerate() {
            for &(first, len) in ranges {
                pass.requests += 1;
                let t = Instant::now();
                match range_get(&client, &url, first, len, size).await {
                    Ok(status) => {
                        pass.times.push(t.elapsed());
                        *pass.statuses.entry(status).or_insert(0) += 1;
                    }
                    Err((status, e)) => {
                        pass.errors += 1;
                        *pass.statuses.entry(status).or_insert(0) += 1;
                        pass.first_error
                            .get_or_insert(format!("bytes={first}-{}: {e}", first + len - 1));
                    }
                }
            }
            let (after, settled) = origin
                .settle(Duration::from_millis(500), Duration::from_secs(120))
                .await;
            pass.origin_bytes = after.body_bytes - before.body_bytes;
            pass.origin_requests = after.requests - before.requests;
            pass.settled = settled;
            before = after;
            if pass.errors > 0 {
                self.anomalies.push(format!(
                    "{at}: pass {}: {} of {} requests failed (first: {})",
                    i + 1,
                    pass.errors,
                    pass.requests,
                    pass.first_error.as_deref().unwrap_or("-")
                ));
            }
            if !settled {
                self.anomalies.push(format!(
                    "{at}: pass {}: the origin was still sending 120 s after the last answer",
                    i + 1
                ));
            }
        }
        let quiet = self.quiet_since(since);
        if let Running::Edge(e) = &mut running {
            self.check_edge(&at, e);
        }
        // Its idle connections closed first: nginx's graceful stop waits for them.
        drop(client);
        running.stop();
        let _ = std::fs::remove_dir_all(&dir);
        let f = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.1}"));
        for (i, p) in passes.iter().enumerate() {
            println!(
                "{:<7} {:<11} pass {}: origin {:>8.1} MiB in {:>4} requests ({:.2}x the distinct bytes) | answers p50 {} ms, max {} ms | {}{}",
                round + 1,
                target.slug(),
                i + 1,
                p.origin_bytes as f64 / MIB as f64,
                p.origin_requests,
                p.origin_bytes as f64 / distinct_bytes(ranges).max(1) as f64,
                f(p.p(0.5)),
                f(p.p(1.0)),
                tally(&p.statuses),
                if i == 1 {
                    format!("  {}", quiet.tag())
                } else {
                    String::new()
                }
            );
        }
        Ok(RangeRun {
            target,
            passes,
            quiet,
        })
    }
}

/// GET `url` with `Range: bytes=first-(first+len-1)`: must be a `206` with that
/// `Content-Range` and the object's bytes, checked as they arrive (a `200` is not read).
/// The answer's status and cache status, or that and what was wrong.
async fn range_get(
    client: &reqwest::Client,
    url: &str,
    first: u64,
    len: u64,
    size: u64,
) -> Result<String, (String, String)> {
    let last = first + len - 1;
    let mut resp = client
        .get(url)
        .header("Range", format!("bytes={first}-{last}"))
        .send()
        .await
        .map_err(|e| ("no answer".to_owned(), format!("{e}")))?;
    let cs = resp
        .headers()
        .get("cache-status")
        .or_else(|| resp.headers().get("x-cache-status"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = format!("{} {}", resp.status().as_u16(), class(cs.as_deref()));
    if resp.status().as_u16() != 206 {
        return Err((status.clone(), format!("status {}", resp.status())));
    }
    let want_cr = format!("bytes {first}-{last}/{size}");
    let cr = resp
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if cr != want_cr {
        return Err((
            status,
            format!("Content-Range {cr:?}, expected {want_cr:?}"),
        ));
    }
    let mut pos = first;
    let mut expected = Vec::new();
    loop {
        let chunk = resp.chunk().await.map_err(|e| {
            (
                status.clone(),
                format!("body after {} bytes: {e}", pos - first),
            )
        })?;
        let Some(chunk) = chunk else { break };
        if pos + chunk.len() as u64 > last + 1 {
            return Err((status, "body longer than the range".into()));
        }
        expected.resize(chunk.len(), 0);
        rangeorigin::fill(pos, &mut expected);
        if chunk[..] != expected[..] {
            return Err((status, format!("wrong bytes at offset {pos}")));
        }
        pos += chunk.len() as u64;
    }
    if pos != last + 1 {
        return Err((
            status,
            format!("body of {} bytes, expected {len}", pos - first),
        ));
    }
    Ok(status)
}

fn print_restart(r: &Restart) {
    let s = |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.3} s", d.as_secs_f64()));
    println!(
        "{:<7} {:<11} {} start: first answer {} ({}), first hit {} ({} answers before it, {} failed), index ready {}{}{}  {}",
        r.round + 1,
        r.target.map_or("-", Target::slug),
        if r.cold { "cold" } else { "warm" },
        s(r.first_answer.as_ref().map(|a| a.0)),
        r.first_answer.as_ref().map_or("-", |a| a.1.as_str()),
        s(r.first_hit),
        r.answers_before_hit,
        r.failed,
        s(r.index_ready),
        r.indexed
            .map_or(String::new(), |o| format!(" ({o} objects)")),
        if r.rss_kib > 0 {
            format!(
                ", RSS {:.1} MiB (peak {:.1})",
                r.rss_kib as f64 / 1024.0,
                r.hwm_kib as f64 / 1024.0
            )
        } else {
            String::new()
        },
        r.quiet.tag()
    );
}

// ----- the summary -----

fn fmt(x: Option<f64>, decimals: usize) -> String {
    match x {
        Some(v) => {
            let s = format!("{v:.decimals$}");
            // Thousands separators on the integer part.
            let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
            let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(c);
            }
            if frac.is_empty() {
                format!("{sign}{out}")
            } else {
                format!("{sign}{out}.{frac}")
            }
        }
        None => "-".into(),
    }
}

fn secs(x: Option<f64>) -> String {
    match x {
        Some(v) if v < 10.0 => format!("{v:.3} s"),
        Some(v) => format!("{v:.1} s"),
        None => "-".into(),
    }
}

fn print_summary(
    args: &Args,
    about: &str,
    bench: &Bench,
    parts: &[Part],
    targets: &[Target],
    range_targets: &[Target],
    res: &Results,
) {
    println!(
        "\n===== summary: medians over {} rounds (Markdown) =====",
        args.rounds
    );
    println!("\n{about}");
    let title = |t: Target| match t {
        Target::Streamedge => "streamedge".to_owned(),
        Target::Nginx => "nginx proxy_cache".to_owned(),
        Target::NginxSlice => format!("nginx proxy_cache + slice {}m", args.slice_mib),
    };
    let header = |ts: &[Target]| {
        let names: Vec<String> = ts.iter().map(|&t| title(t)).collect();
        println!("| | {} |", names.join(" | "));
        println!("|---|{}", "---:|".repeat(ts.len()));
    };
    let row = |ts: &[Target], name: &str, f: &dyn Fn(Target) -> String| {
        let cells: Vec<String> = ts.iter().map(|&t| f(t)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };

    if parts.contains(&Part::Hits) && !res.hits.is_empty() {
        println!(
            "\n**{} objects of {} KiB from disk** (streamedge: memory tier {} MiB, promote_after {}; wrk -t{} -c{}, uniform random over the set)\n",
            args.objects, args.object_kib, args.memory_mib, NEVER_PROMOTE, args.threads, args.conns
        );
        header(targets);
        let runs = |t: Target| res.hits.iter().filter(move |r| r.target == t);
        let med = |t: Target, f: &dyn Fn(&HitsRun) -> Option<f64>| {
            median(&runs(t).filter_map(f).collect::<Vec<_>>())
        };
        let setup = |t: Target| res.hits_setups.iter().find(|c| c.target == t);
        row(
            targets,
            "answers of a pass over the set after the fill",
            &|t| setup(t).map_or("-".into(), |c| tally(&c.check.statuses)),
        );
        row(targets, "on disk: files, MiB allocated", &|t| {
            setup(t).map_or("-".into(), |c| {
                format!(
                    "{}, {:.1}",
                    c.usage.files,
                    c.usage.allocated as f64 / MIB as f64
                )
            })
        });
        row(
            targets,
            &format!("req/s, page cache warm ({} s)", args.duration),
            &|t| fmt(med(t, &|r| Some(r.warm.rps)), 0),
        );
        row(targets, "p50 / p99 ms, page cache warm", &|t| {
            format!(
                "{} / {}",
                fmt(med(t, &|r| Some(r.warm.p50_ms)), 2),
                fmt(med(t, &|r| Some(r.warm.p99_ms)), 2)
            )
        });
        row(targets, "req/s min-max over the rounds", &|t| {
            let v: Vec<f64> = runs(t).map(|r| r.warm.rps).collect();
            if v.is_empty() {
                return "-".into();
            }
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            format!("{}-{}", fmt(Some(lo), 0), fmt(Some(hi), 0))
        });
        if bench.drop.ok() {
            row(
                targets,
                &format!("req/s, first {} s after drop_caches", args.cold_duration),
                &|t| fmt(med(t, &|r| r.cold.as_ref().map(|w| w.rps)), 0),
            );
            row(targets, "p50 / p99 ms, after drop_caches", &|t| {
                format!(
                    "{} / {}",
                    fmt(med(t, &|r| r.cold.as_ref().map(|w| w.p50_ms)), 2),
                    fmt(med(t, &|r| r.cold.as_ref().map(|w| w.p99_ms)), 2)
                )
            });
            row(
                targets,
                &format!(
                    "one pass over the set after drop_caches, {} connections: s (MiB/s)",
                    args.cold_conns
                ),
                &|t| {
                    format!(
                        "{} ({})",
                        secs(med(t, &|r| r
                            .cold_pass
                            .as_ref()
                            .map(|p| p.wall.as_secs_f64()))),
                        fmt(med(t, &|r| r.cold_pass.as_ref().map(Pass::mib_s)), 0)
                    )
                },
            );
            row(targets, "that pass: p50 / p99 ms per object", &|t| {
                format!(
                    "{} / {}",
                    fmt(med(t, &|r| r.cold_pass.as_ref().and_then(|p| p.p(0.5))), 2),
                    fmt(med(t, &|r| r.cold_pass.as_ref().and_then(|p| p.p(0.99))), 2)
                )
            });
        } else {
            row(targets, "after drop_caches", &|_| {
                format!("n/a: drop_caches {}", bench.drop.describe())
            });
        }
        row(targets, "errors (all rounds)", &|t| {
            runs(t)
                .map(|r| {
                    r.warm.errors
                        + r.cold.as_ref().map_or(0, |w| w.errors)
                        + r.cold_pass.as_ref().map_or(0, |p| p.errors)
                })
                .sum::<u64>()
                .to_string()
        });
        row(
            targets,
            "origin requests during the runs (all rounds)",
            &|t| runs(t).map(|r| r.origin_requests).sum::<u64>().to_string(),
        );
    }

    if parts.contains(&Part::Restart) && !res.restarts.is_empty() {
        println!(
            "\n**Start with {} objects of {} bytes on disk** (time from the process's start; a probe every 2 ms while it refuses connections, 10 ms apart once it answers, each on a new connection for an object not asked before)\n",
            fmt(Some(args.index_objects as f64), 0),
            args.small_bytes
        );
        header(targets);
        let filled = |t: Target| res.filled.iter().find(|f| f.0 == t).map(|f| &f.1);
        row(targets, "fill: objects/s (connections)", &|t| {
            filled(t).map_or("-".into(), |f| {
                format!(
                    "{} ({})",
                    fmt(
                        Some(f.pass.ok as f64 / f.pass.wall.as_secs_f64().max(1e-9)),
                        0
                    ),
                    args.fill_conns
                )
            })
        });
        row(targets, "on disk: files, MiB allocated", &|t| {
            filled(t).map_or("-".into(), |f| {
                format!(
                    "{}, {:.1}",
                    fmt(Some(f.usage.files as f64), 0),
                    f.usage.allocated as f64 / MIB as f64
                )
            })
        });
        row(
            targets,
            "streamedge_disk_objects, MiB after the fill",
            &|t| {
                filled(t)
                    .and_then(|f| f.disk_objects.zip(f.disk_bytes))
                    .map_or("-".into(), |(o, b)| {
                        format!("{}, {:.1}", fmt(Some(o), 0), b / MIB as f64)
                    })
            },
        );
        row(targets, "stop after the fill (graceful)", &|t| {
            secs(filled(t).map(|f| f.stop.as_secs_f64()))
        });
        let med = |t: Target, cold: bool, f: &dyn Fn(&Restart) -> Option<f64>| {
            median(
                &res.restarts
                    .iter()
                    .filter(|r| r.target == Some(t) && r.cold == cold)
                    .filter_map(f)
                    .collect::<Vec<_>>(),
            )
        };
        let colds: &[bool] = if bench.drop.ok() {
            &[false, true]
        } else {
            &[false]
        };
        for &cold in colds {
            let when = if cold {
                "after drop_caches"
            } else {
                "page cache warm"
            };
            row(targets, &format!("first answer, {when}"), &|t| {
                let first = res
                    .restarts
                    .iter()
                    .find(|r| r.target == Some(t) && r.cold == cold)
                    .and_then(|r| r.first_answer.as_ref())
                    .map_or(String::new(), |a| format!(" ({})", a.1));
                format!(
                    "{}{first}",
                    secs(med(t, cold, &|r| r
                        .first_answer
                        .as_ref()
                        .map(|a| a.0.as_secs_f64())))
                )
            });
            row(targets, &format!("**first hit**, {when}"), &|t| {
                secs(med(t, cold, &|r| r.first_hit.map(|d| d.as_secs_f64())))
            });
            row(targets, &format!("**index ready**, {when}"), &|t| match t {
                Target::Streamedge => {
                    secs(med(t, cold, &|r| r.index_ready.map(|d| d.as_secs_f64())))
                }
                _ if args.nginx_loader => format!(
                    "{} (cache loader done)",
                    secs(med(t, cold, &|r| r.index_ready.map(|d| d.as_secs_f64())))
                ),
                _ => "not measured (--nginx-loader)".into(),
            });
        }
        row(
            targets,
            "index ready over an empty disk (the same config)",
            &|t| match t {
                Target::Streamedge => secs(median(
                    &res.idles
                        .iter()
                        .filter(|e| !e.loaded)
                        .filter_map(|e| e.index_ready.map(|d| d.as_secs_f64()))
                        .collect::<Vec<_>>(),
                )),
                _ => "-".into(),
            },
        );
        row(
            targets,
            "objects indexed (streamedge_disk_objects)",
            &|t| match t {
                Target::Streamedge => fmt(med(t, false, &|r| r.indexed), 0),
                _ => "-".into(),
            },
        );

        if targets.contains(&Target::Streamedge) && !res.idles.is_empty() {
            let idle = |loaded: bool, f: &dyn Fn(&Idle) -> Option<f64>| {
                median(
                    &res.idles
                        .iter()
                        .filter(|e| e.loaded == loaded)
                        .filter_map(f)
                        .collect::<Vec<_>>(),
                )
            };
            let loaded_rss = idle(true, &|e| Some(e.rss_kib as f64 * 1024.0));
            let loaded_hwm = idle(true, &|e| Some(e.hwm_kib as f64 * 1024.0));
            let empty_rss = idle(false, &|e| Some(e.rss_kib as f64 * 1024.0));
            let empty_hwm = idle(false, &|e| Some(e.hwm_kib as f64 * 1024.0));
            let indexed = idle(true, &|e| e.indexed)
                .filter(|&n| n > 0.0)
                .unwrap_or(args.index_objects as f64);
            let mib = |x: Option<f64>| fmt(x.map(|v| v / MIB as f64), 1);
            let diff = loaded_rss.zip(empty_rss).map(|(l, e)| l - e);
            let diff_hwm = loaded_hwm.zip(empty_hwm).map(|(l, e)| l - e);
            println!(
                "\n**streamedge's memory per indexed object** (started and asked nothing, RSS 1 s after `streamedge_disk_index_ready` is 1, page cache warm; the same config over an empty disk as the baseline)\n"
            );
            println!("| | RSS | peak RSS (VmHWM) |");
            println!("|---|---:|---:|");
            println!(
                "| index over {} objects, MiB | {} | {} |",
                fmt(Some(indexed), 0),
                mib(loaded_rss),
                mib(loaded_hwm)
            );
            println!(
                "| empty disk, MiB | {} | {} |",
                mib(empty_rss),
                mib(empty_hwm)
            );
            println!("| difference, MiB | {} | {} |", mib(diff), mib(diff_hwm));
            println!(
                "| **per million objects**, MiB | **{}** | {} |",
                mib(diff.map(|d| d / indexed * 1e6)),
                mib(diff_hwm.map(|d| d / indexed * 1e6))
            );
            println!(
                "| per object, bytes | {} | {} |",
                fmt(diff.map(|d| d / indexed), 0),
                fmt(diff_hwm.map(|d| d / indexed), 0)
            );
        }
    }

    if parts.contains(&Part::Ranges) && !res.ranges.is_empty() {
        let distinct = res.range_distinct.max(1) as f64;
        println!(
            "\n**{} random ranges of {}-{} KiB of a {} MiB object, asked twice** (one client, one range at a time; {:.1} MiB asked per pass, {:.1} MiB distinct)\n",
            args.ranges,
            args.range_min_kib,
            args.range_max_kib,
            args.big_mib,
            res.range_sum as f64 / MIB as f64,
            distinct / MIB as f64
        );
        header(range_targets);
        let med = |t: Target, f: &dyn Fn(&RangeRun) -> Option<f64>| {
            median(
                &res.ranges
                    .iter()
                    .filter(|r| r.target == t)
                    .filter_map(f)
                    .collect::<Vec<_>>(),
            )
        };
        let mib = |x: Option<f64>| fmt(x.map(|v| v / MIB as f64), 1);
        for i in 0..2 {
            row(
                range_targets,
                &format!("origin MiB, pass {}", i + 1),
                &|t| mib(med(t, &|r| Some(r.passes[i].origin_bytes as f64))),
            );
        }
        row(
            range_targets,
            "**origin bytes ÷ distinct bytes asked**, both passes",
            &|t| {
                let total = med(t, &|r| {
                    Some((r.passes[0].origin_bytes + r.passes[1].origin_bytes) as f64)
                });
                format!("**{}**", fmt(total.map(|b| b / distinct), 2))
            },
        );
        row(
            range_targets,
            &format!(
                "origin bytes ÷ bytes of the {} MiB slices touched ({:.1} MiB)",
                args.slice_mib,
                res.range_slices as f64 / MIB as f64
            ),
            &|t| {
                let total = med(t, &|r| {
                    Some((r.passes[0].origin_bytes + r.passes[1].origin_bytes) as f64)
                });
                fmt(total.map(|b| b / res.range_slices.max(1) as f64), 2)
            },
        );
        row(range_targets, "origin requests, pass 1 / pass 2", &|t| {
            format!(
                "{} / {}",
                fmt(med(t, &|r| Some(r.passes[0].origin_requests as f64)), 0),
                fmt(med(t, &|r| Some(r.passes[1].origin_requests as f64)), 0)
            )
        });
        for i in 0..2 {
            row(
                range_targets,
                &format!("answers, pass {} (round 1)", i + 1),
                &|t| {
                    res.ranges
                        .iter()
                        .find(|r| r.target == t)
                        .map_or("-".into(), |r| tally(&r.passes[i].statuses))
                },
            );
            row(
                range_targets,
                &format!("latency p50 / max ms, pass {}", i + 1),
                &|t| {
                    format!(
                        "{} / {}",
                        fmt(med(t, &|r| r.passes[i].p(0.5)), 1),
                        fmt(med(t, &|r| r.passes[i].p(1.0)), 1)
                    )
                },
            );
        }
        row(range_targets, "errors (all rounds)", &|t| {
            res.ranges
                .iter()
                .filter(|r| r.target == t)
                .map(|r| r.passes[0].errors + r.passes[1].errors)
                .sum::<u64>()
                .to_string()
        });
    }
    let disturbed = res
        .hits
        .iter()
        .map(|r| &r.quiet)
        .chain(res.restarts.iter().map(|r| &r.quiet))
        .chain(res.ranges.iter().map(|r| &r.quiet))
        .filter(|q| q.other_builds > 0)
        .count();
    println!("\nmeasurements during which other builds ran: {disturbed}");
}

/// Every measurement, for the record.
fn to_json(
    args: &Args,
    machine: &Machine,
    versions: &[String],
    load: [&str; 2],
    bench: &Bench,
    res: &Results,
) -> Json {
    let num = |x: f64| Json::Num(x);
    let secs = |d: Option<Duration>| d.map_or(Json::Null, |d| Json::Num(d.as_secs_f64()));
    let int = |x: u64| Json::Int(x);
    let tally = |t: &BTreeMap<String, usize>| Json::tally(t);
    let pass = |p: &Pass| {
        Json::Obj(vec![
            ("seconds", num(p.wall.as_secs_f64())),
            ("ok", int(p.ok)),
            ("errors", int(p.errors)),
            ("mib_per_s", num(p.mib_s())),
            ("p50_ms", Json::opt_num(p.p(0.5))),
            ("p99_ms", Json::opt_num(p.p(0.99))),
            ("statuses", tally(&p.statuses)),
        ])
    };
    let wrk = |w: &WrkResult| {
        Json::Obj(vec![
            ("rps", num(w.rps)),
            ("p50_ms", num(w.p50_ms)),
            ("p99_ms", num(w.p99_ms)),
            ("max_ms", num(w.max_ms)),
            ("requests", int(w.requests)),
            ("errors", int(w.errors)),
        ])
    };
    let quiet = |q: &Quiet| {
        Json::Obj(vec![
            ("load_average", Json::str(q.load.clone())),
            ("other_builds", int(q.other_builds as u64)),
            ("other_cores", num(q.other_cores)),
        ])
    };
    let target = |t: Target| Json::str(t.slug());
    Json::Obj(vec![
        (
            "params",
            Json::Obj(vec![
                (
                    "command",
                    Json::str(std::env::args().collect::<Vec<_>>().join(" ")),
                ),
                ("rounds", int(args.rounds as u64)),
                ("objects", int(args.objects as u64)),
                ("object_kib", int(args.object_kib)),
                ("memory_mib", int(args.memory_mib)),
                ("index_objects", int(args.index_objects as u64)),
                ("small_bytes", int(args.small_bytes as u64)),
                ("ranges", int(args.ranges as u64)),
                ("big_mib", int(args.big_mib)),
                ("slice_mib", int(args.slice_mib)),
                ("seed", int(args.seed)),
                ("drop_caches", Json::str(bench.drop.describe())),
            ]),
        ),
        ("machine", machine.to_json(load)),
        (
            "versions",
            Json::Arr(versions.iter().map(|v| Json::str(v.clone())).collect()),
        ),
        (
            "hits_setup",
            Json::Arr(
                res.hits_setups
                    .iter()
                    .map(|h| {
                        Json::Obj(vec![
                            ("target", target(h.target)),
                            ("check", pass(&h.check)),
                            ("files", int(h.usage.files)),
                            ("allocated_bytes", int(h.usage.allocated)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "hits",
            Json::Arr(
                res.hits
                    .iter()
                    .map(|r| {
                        Json::Obj(vec![
                            ("target", target(r.target)),
                            ("warm", wrk(&r.warm)),
                            ("cold", r.cold.as_ref().map_or(Json::Null, wrk)),
                            ("cold_pass", r.cold_pass.as_ref().map_or(Json::Null, pass)),
                            ("origin_requests", int(r.origin_requests)),
                            ("quiet", quiet(&r.quiet)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "fills",
            Json::Arr(
                res.filled
                    .iter()
                    .map(|(t, f)| {
                        Json::Obj(vec![
                            ("target", target(*t)),
                            ("first_pass", pass(&f.pass)),
                            ("passes", int(f.passes as u64)),
                            ("disk_objects", Json::opt_num(f.disk_objects)),
                            ("disk_bytes", Json::opt_num(f.disk_bytes)),
                            ("files", int(f.usage.files)),
                            ("allocated_bytes", int(f.usage.allocated)),
                            ("stop_s", num(f.stop.as_secs_f64())),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "restarts",
            Json::Arr(
                res.restarts
                    .iter()
                    .map(|r| {
                        Json::Obj(vec![
                            ("round", int(r.round as u64 + 1)),
                            ("target", r.target.map_or(Json::Null, target)),
                            ("after_drop_caches", Json::Bool(r.cold)),
                            ("first_answer_s", secs(r.first_answer.as_ref().map(|a| a.0))),
                            (
                                "first_answer",
                                r.first_answer
                                    .as_ref()
                                    .map_or(Json::Null, |a| Json::str(a.1.clone())),
                            ),
                            ("first_hit_s", secs(r.first_hit)),
                            ("answers_before_hit", int(r.answers_before_hit as u64)),
                            ("index_ready_s", secs(r.index_ready)),
                            ("indexed", Json::opt_num(r.indexed)),
                            ("rss_kib", int(r.rss_kib)),
                            ("hwm_kib", int(r.hwm_kib)),
                            (
                                "note",
                                r.note.as_ref().map_or(Json::Null, |n| Json::str(n.clone())),
                            ),
                            ("quiet", quiet(&r.quiet)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "idle_starts",
            Json::Arr(
                res.idles
                    .iter()
                    .map(|e| {
                        Json::Obj(vec![
                            ("filled_disk", Json::Bool(e.loaded)),
                            ("index_ready_s", secs(e.index_ready)),
                            ("indexed", Json::opt_num(e.indexed)),
                            ("rss_kib", int(e.rss_kib)),
                            ("hwm_kib", int(e.hwm_kib)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "ranges",
            Json::Obj(vec![
                ("asked_bytes_per_pass", int(res.range_sum)),
                ("distinct_bytes", int(res.range_distinct)),
                ("slice_bytes", int(res.range_slices)),
                (
                    "runs",
                    Json::Arr(
                        res.ranges
                            .iter()
                            .map(|r| {
                                Json::Obj(vec![
                                    ("target", target(r.target)),
                                    (
                                        "passes",
                                        Json::Arr(
                                            r.passes
                                                .iter()
                                                .map(|p| {
                                                    Json::Obj(vec![
                                                        ("origin_bytes", int(p.origin_bytes)),
                                                        ("origin_requests", int(p.origin_requests)),
                                                        ("settled", Json::Bool(p.settled)),
                                                        ("requests", int(p.requests)),
                                                        ("errors", int(p.errors)),
                                                        ("p50_ms", Json::opt_num(p.p(0.5))),
                                                        ("max_ms", Json::opt_num(p.p(1.0))),
                                                        ("statuses", tally(&p.statuses)),
                                                    ])
                                                })
                                                .collect(),
                                        ),
                                    ),
                                    ("quiet", quiet(&r.quiet)),
                                ])
                            })
                            .collect(),
                    ),
                ),
            ]),
        ),
        (
            "anomalies",
            Json::Arr(
                bench
                    .anomalies
                    .iter()
                    .map(|a| Json::str(a.clone()))
                    .collect(),
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_classes() {
        assert_eq!(
            class(Some("streamedge; hit; ttl=3590; detail=disk")),
            "disk hit"
        );
        assert_eq!(class(Some("streamedge; hit; ttl=3590")), "memory hit");
        assert_eq!(
            class(Some("streamedge; fwd=uri-miss; stored")),
            "fwd=uri-miss"
        );
        assert_eq!(class(Some("HIT")), "HIT");
        assert_eq!(class(None), "no cache status");
        assert!(is_hit("disk hit") && is_hit("memory hit") && is_hit("HIT"));
        assert!(!is_hit("MISS") && !is_hit("fwd=uri-miss"));
    }

    #[test]
    fn bytes_the_ranges_touch() {
        // [0, 10) and [5, 20) overlap; [100, 110) apart.
        assert_eq!(distinct_bytes(&[(5, 15), (0, 10), (100, 10)]), 30);
        // Slices of 10 bytes of a 105-byte object: 0, 1 (the first two ranges), 10 (5 bytes).
        assert_eq!(slice_bytes(&[(5, 15), (0, 10), (100, 5)], 10, 105), 25);
    }
}
