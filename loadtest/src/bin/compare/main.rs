//! The side-by-side comparison: streamedge, nginx (`proxy_cache`) and Varnish in front of one
//! origin on loopback, measured in interleaved rounds with wrk, h2load and the herd clients,
//! with each cache's peak memory. One command; see loadtest/README.md, "The comparison".

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::Parser;
use streamedge_loadtest::{client, crowd, edgeproc, nginx, origin, process, report, varnish};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use client::{Checksum, Expect};
use report::{Json, Machine, load_average, median, ms, percentile};

const MIB: u64 = 1 << 20;
/// The repository (the workspace root, one above this crate).
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const WRK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/wrk");
const DEMO_MEDIA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../src/origin/media/cmaf");
const PATH_1K: &str = "/vod/bench/1k.m3u8";
const PATH_1M: &str = "/vod/bench/1m.m4s";

/// streamedge, nginx and Varnish side by side on this machine: hits over HTTP/1.1 and over
/// TLS + HTTP/2, the herd, a player mix, and memory.
#[derive(Parser, Debug, Clone)]
#[command(name = "compare")]
struct Args {
    /// Rounds; in each, every scenario runs every target, in rotating order.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured seconds of each wrk / h2load run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Unmeasured seconds of load before each measured run (0: none).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// wrk and h2load threads (-t).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// wrk connections (-c), HTTP/1.1 scenarios and the player mix.
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// h2load connections (-c), TLS + HTTP/2 scenarios.
    #[arg(long, default_value_t = 16)]
    h2_conns: usize,
    /// h2load concurrent streams per connection (-m).
    #[arg(long, default_value_t = 4)]
    h2_streams: usize,
    /// Cache size of every target, MiB (streamedge max_size, nginx max_size, varnish malloc).
    #[arg(long, default_value_t = 256)]
    cache_mib: u64,
    /// Scenarios to run, comma-separated: hit-1k,hit-1m,h2-1k,h2-1m,mix,herd.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "hit-1k,hit-1m,h2-1k,h2-1m,mix,herd"
    )]
    scenarios: Vec<String>,
    /// Targets, comma-separated: streamedge,nginx,varnish.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "streamedge,nginx,varnish"
    )]
    targets: Vec<String>,
    /// Herd: concurrent clients on one cold object.
    #[arg(long, default_value_t = 200)]
    herd_clients: usize,
    /// Herd: object size in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    herd_size: usize,
    /// Herd: origin delay before the response head, ms.
    #[arg(long, default_value_t = 300)]
    herd_latency_ms: u64,
    /// Herd: time over which the origin trickles the body, ms (0: full speed).
    #[arg(long, default_value_t = 1000)]
    herd_body_ms: u64,
    /// Herd: bound on each client, ms.
    #[arg(long, default_value_t = 30_000)]
    herd_timeout_ms: u64,
    /// After the rounds, fetch this many times the cache size in distinct 1 MiB objects
    /// through every target and report memory again (0: skip).
    #[arg(long, default_value_t = 1.5)]
    fill_factor: f64,
    /// Pin every cache to CPU 1 and the load generators (wrk, h2load, this process with the
    /// origin and the herd clients) to CPU 0, with taskset.
    #[arg(long)]
    taskset: bool,
    /// The streamedge binary (default: target/release/streamedge next to this program,
    /// built first with `cargo build --release --bin streamedge`).
    #[arg(long, value_name = "PATH")]
    edge_bin: Option<PathBuf>,
    /// Do not build the streamedge binary; use it as it is.
    #[arg(long)]
    no_build: bool,
    /// Seconds to wait after the fill before the settled memory reading.
    #[arg(long, default_value_t = 6)]
    settle_s: u64,
    /// Memory sampling interval, ms.
    #[arg(long, default_value_t = 200)]
    sample_ms: u64,
    /// Pause between two measurements, ms.
    #[arg(long, default_value_t = 1000)]
    pause_ms: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Keep the temporary directory (configs, logs, certificate) and print its path.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Target {
    Direct,
    Edge,
    Nginx,
    Varnish,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct origin",
            Target::Edge => "streamedge",
            Target::Nginx => "nginx",
            Target::Varnish => "varnish",
        }
    }
    fn slug(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Edge => "edge",
            Target::Nginx => "nginx",
            Target::Varnish => "varnish",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Hit1k,
    Hit1m,
    H2Hit1k,
    H2Hit1m,
    Mix,
    Herd,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::Hit1k,
        Scenario::Hit1m,
        Scenario::H2Hit1k,
        Scenario::H2Hit1m,
        Scenario::Mix,
        Scenario::Herd,
    ];
    fn slug(self) -> &'static str {
        match self {
            Scenario::Hit1k => "hit-1k",
            Scenario::Hit1m => "hit-1m",
            Scenario::H2Hit1k => "h2-1k",
            Scenario::H2Hit1m => "h2-1m",
            Scenario::Mix => "mix",
            Scenario::Herd => "herd",
        }
    }
    fn title(self) -> &'static str {
        match self {
            Scenario::Hit1k => "1 KB manifest hit, HTTP/1.1",
            Scenario::Hit1m => "1 MiB segment hit, HTTP/1.1",
            Scenario::H2Hit1k => "1 KB manifest hit, TLS + HTTP/2",
            Scenario::H2Hit1m => "1 MiB segment hit, TLS + HTTP/2",
            Scenario::Mix => "player mix (VOD HLS + DASH demo rendition), HTTP/1.1",
            Scenario::Herd => "herd: cold object, concurrent clients",
        }
    }
    /// The goal for streamedge's req/s over nginx's.
    fn goal_ratio(self) -> Option<f64> {
        match self {
            Scenario::Hit1k => Some(1.5),
            Scenario::Hit1m | Scenario::Mix => Some(1.8),
            Scenario::H2Hit1k | Scenario::H2Hit1m => Some(1.3),
            Scenario::Herd => None,
        }
    }
    fn h2(self) -> bool {
        matches!(self, Scenario::H2Hit1k | Scenario::H2Hit1m)
    }
    fn path(self) -> Option<&'static str> {
        match self {
            Scenario::Hit1k | Scenario::H2Hit1k => Some(PATH_1K),
            Scenario::Hit1m | Scenario::H2Hit1m => Some(PATH_1M),
            Scenario::Mix | Scenario::Herd => None,
        }
    }
}

/// One load-generator run (wrk or h2load) against one target.
#[derive(Debug, Clone, Default)]
struct Run {
    round: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
    mbps: f64,
    /// Origin requests during the measured run (0 for a pure hit benchmark).
    origin_requests: u64,
    /// CPU seconds of the cache's processes during the measured run, per wall second.
    cache_cpu: f64,
    /// h2load: negotiated protocol and cipher.
    note: String,
}

/// One herd: one target, one cold URL.
struct Herd {
    round: usize,
    target: Target,
    path: String,
    origin_requests: u64,
    connected: usize,
    ttfb: Vec<Duration>,
    done: Vec<Duration>,
    cache_status: BTreeMap<String, usize>,
    errors: BTreeMap<String, usize>,
}

impl Herd {
    fn ttfb_p(&self, p: f64) -> Option<Duration> {
        (!self.ttfb.is_empty()).then(|| percentile(&self.ttfb, p))
    }
}

/// What a target is reached at, and its process tree.
#[derive(Debug, Clone)]
struct Endpoint {
    target: Target,
    http: SocketAddr,
    https: Option<SocketAddr>,
    /// streamedge's admin listener (/metrics).
    admin: Option<SocketAddr>,
    pid: Option<u32>,
}

/// Everything the benchmark needs while it runs.
struct Bench<'a> {
    args: &'a Args,
    origin: &'a origin::Origin,
    endpoints: Vec<Endpoint>,
    direct: SocketAddr,
    /// Every fixed file of the origin: path → expected length and checksum.
    expect: HashMap<String, Expect>,
    mix_paths: Vec<String>,
    mix_file: PathBuf,
    herd_expect: Expect,
    fill_expect: Expect,
    h2load: bool,
    /// Prefix for the load generators (`taskset -c 0`), or empty.
    gen_prefix: Vec<String>,
    sampler: &'a process::MemSampler,
    /// The run's temporary directory.
    tmp: PathBuf,
}

#[derive(Default)]
struct Results {
    runs: BTreeMap<(usize, Target), Vec<Run>>, // (scenario index, target) → rounds
    herds: Vec<Herd>,
    anomalies: Vec<String>,
    /// Worth reading, but not errors (the peers' logs).
    notes: Vec<String>,
    mem_rounds: Vec<(String, process::Peaks)>,
    mem_fill: Vec<(String, process::Peaks)>,
    fill: Vec<(Target, usize, usize, u64, f64)>, // target, ok, objects, origin requests, seconds
    edge_metrics: Vec<(String, String)>,
    mix_paths: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("compare: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A directory removed on drop unless kept.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            println!("kept: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn parse_selection(args: &Args) -> anyhow::Result<(Vec<Scenario>, Vec<Target>)> {
    let mut scenarios = Vec::new();
    for s in &args.scenarios {
        let s = s.trim();
        match Scenario::ALL.iter().find(|x| x.slug() == s) {
            Some(&x) if !scenarios.contains(&x) => scenarios.push(x),
            Some(_) => {}
            None => bail!("unknown scenario {s:?} (hit-1k, hit-1m, h2-1k, h2-1m, mix, herd)"),
        }
    }
    scenarios.sort_by_key(|s| Scenario::ALL.iter().position(|x| x == s));
    let mut targets = Vec::new();
    for t in &args.targets {
        let t = match t.trim() {
            "streamedge" | "edge" => Target::Edge,
            "nginx" => Target::Nginx,
            "varnish" => Target::Varnish,
            other => bail!("unknown target {other:?} (streamedge, nginx, varnish)"),
        };
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    if scenarios.is_empty() || targets.is_empty() {
        bail!("nothing to run: --scenarios and --targets must name at least one each");
    }
    Ok((scenarios, targets))
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

/// Runs the comparison; `Ok(false)` when it ran but saw errors (see "anomalies").
fn run(args: Args) -> anyhow::Result<bool> {
    let (scenarios, targets) = parse_selection(&args)?;
    if args.rounds == 0 || args.duration == 0 || args.threads == 0 || args.conns < args.threads {
        bail!("--rounds, --duration and --threads must be at least 1, and --conns >= --threads");
    }
    if args.h2_conns < args.threads {
        bail!("--h2-conns must be >= --threads (h2load needs a connection per thread)");
    }
    if which("wrk").is_none()
        && scenarios
            .iter()
            .any(|s| matches!(s, Scenario::Hit1k | Scenario::Hit1m | Scenario::Mix))
    {
        bail!("wrk is not installed (Debian package `wrk`)");
    }
    let h2load = which("h2load").is_some();
    if !h2load && scenarios.iter().any(|s| s.h2()) {
        eprintln!(
            "h2load is not installed (Debian package `nghttp2-client`): the TLS + HTTP/2 scenarios are skipped"
        );
    }
    // Described before --taskset pins this process (which would make it see one core).
    let machine = Machine::describe();
    let threads = machine.nproc.max(1);
    if args.taskset {
        if which("taskset").is_none() {
            bail!("--taskset: taskset is not installed (Debian package `util-linux`)");
        }
        // This process (origin, herd clients) joins the load generators on CPU 0; the threads
        // it starts from here on inherit that.
        let ok = Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            bail!("--taskset: cannot pin this process to CPU 0");
        }
    }
    let cache_prefix: Vec<String> = if args.taskset {
        vec!["taskset".into(), "-c".into(), "1".into()]
    } else {
        Vec::new()
    };
    let gen_prefix: Vec<String> = if args.taskset {
        vec!["taskset".into(), "-c".into(), "0".into()]
    } else {
        Vec::new()
    };

    let edge_bin = edge_binary(&args)?;
    let git = git_state();

    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let tmp = TempDir {
        path: std::env::temp_dir()
            .join(format!("streamedge-compare-{}-{stamp}", std::process::id())),
        keep: args.keep,
    };
    std::fs::create_dir_all(&tmp.path)
        .with_context(|| format!("cannot create {}", tmp.path.display()))?;

    // One certificate for every TLS listener.
    let (cert, key) = write_certificate(&tmp.path)?;
    let (content, expect, mix_paths) = build_content(&args)?;
    let mix_file = tmp.path.join("mix-paths.txt");
    std::fs::write(&mix_file, mix_paths.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", mix_file.display()))?;
    let herd_expect = expect_of(&content.routes[0].object);
    let fill_expect = expect_of(&content.routes[1].object);

    // Declared in this order so that they stop in reverse: sampler, Varnish, nginx, edge,
    // origin, then the directory.
    let origin = origin::Origin::start_content(content, threads)?;
    let mut edge = None;
    let mut nginx_proc = None;
    let mut varnish_proc = None;
    let mut endpoints = Vec::new();
    let mut versions: Vec<(&'static str, String)> = vec![(
        "streamedge",
        format!("{} ({})", env!("CARGO_PKG_VERSION"), git),
    )];
    for &t in &targets {
        match t {
            Target::Edge => {
                let e = edgeproc::EdgeProcess::start(
                    &edge_bin,
                    &tmp.path.join("streamedge"),
                    &edgeproc::EdgeConfig {
                        origin: origin.addr,
                        cache_mib: args.cache_mib,
                        tls: Some((&cert, &key)),
                        cache_extra: "",
                    },
                    &cache_prefix,
                )?;
                endpoints.push(Endpoint {
                    target: t,
                    http: e.http,
                    https: e.https,
                    admin: Some(e.admin),
                    pid: e.pid(),
                });
                edge = Some(e);
            }
            Target::Nginx => {
                let bin = nginx::find().ok_or_else(|| {
                    anyhow!("nginx is not installed (Debian package `nginx`); or leave it out with --targets")
                })?;
                let (o, cache_mib) = (origin.addr, args.cache_mib);
                // Pinned to one CPU, nginx gets one worker, as its operator would configure
                // (`auto` counts the machine's CPUs, not the ones it may use).
                let workers = args.taskset.then_some(1);
                let n = nginx::Nginx::start_with(&bin, "compare", 2, &cache_prefix, |dir, a| {
                    nginx::tuned_config(
                        dir,
                        &nginx::Tuned {
                            http: a[0],
                            https: Some((a[1], &cert, &key)),
                            origin: o,
                            cache_mib,
                            workers,
                        },
                    )
                })
                .context("nginx did not start")?;
                versions.push(("nginx", n.version.trim_start_matches("nginx/").to_owned()));
                endpoints.push(Endpoint {
                    target: t,
                    http: n.addr,
                    https: n.addrs.get(1).copied(),
                    admin: None,
                    pid: n.pid(),
                });
                nginx_proc = Some(n);
            }
            Target::Varnish => {
                let bin = varnish::find().ok_or_else(|| {
                    anyhow!("varnishd is not installed (Debian package `varnish`); or leave it out with --targets")
                })?;
                let v = varnish::Varnish::start(
                    &bin,
                    &tmp.path.join("varnish"),
                    origin.addr,
                    args.cache_mib,
                    &cache_prefix,
                )
                .context("varnishd did not start")?;
                versions.push((
                    "varnish",
                    v.version.trim_start_matches("varnish-").to_owned(),
                ));
                endpoints.push(Endpoint {
                    target: t,
                    http: v.addr,
                    https: None,
                    admin: None,
                    pid: v.pid(),
                });
                varnish_proc = Some(v);
            }
            Target::Direct => {}
        }
    }
    versions.push(("wrk", tool_version("wrk", &["-v"])));
    if h2load {
        versions.push(("h2load", tool_version("h2load", &["--version"])));
    }
    let sampler = process::MemSampler::start(
        endpoints
            .iter()
            .filter_map(|e| Some((e.target.name().to_owned(), e.pid?)))
            .collect(),
        Duration::from_millis(args.sample_ms.max(10)),
    );

    let load_before = load_average();
    print_header(
        &args,
        &machine,
        &versions,
        &endpoints,
        origin.addr,
        &scenarios,
        &load_before,
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("compare-clients")
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

    let bench = Bench {
        args: &args,
        origin: &origin,
        endpoints: endpoints.clone(),
        direct: origin.addr,
        expect,
        mix_paths,
        mix_file,
        herd_expect,
        fill_expect,
        h2load,
        gen_prefix,
        sampler: &sampler,
        tmp: tmp.path.clone(),
    };
    let started = Instant::now();
    let outcome = rt.block_on(async {
        tokio::select! {
            r = bench.all(&scenarios) => r,
            _ = sigint.recv() => Err(anyhow!("interrupted (SIGINT)")),
            _ = sigterm.recv() => Err(anyhow!("terminated (SIGTERM)")),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    let mut results = outcome?;
    let elapsed = started.elapsed();
    let load_after = load_average();

    // Misbehaviour the numbers alone do not show.
    if let Some(e) = edge.as_mut() {
        if !e.running() {
            results
                .anomalies
                .push("streamedge exited during the run".into());
        }
        let log = process::tail_n(&e.log_path(), 30);
        if !log.trim().is_empty() {
            results
                .anomalies
                .push(format!("streamedge log (warn and above, tail):\n{log}"));
        }
    }
    if let Some(n) = &nginx_proc {
        let log = n.error_log_tail();
        if !log.trim().is_empty() {
            results
                .notes
                .push(format!("nginx error.log (tail):\n{log}"));
        }
    }
    if let Some(v) = &varnish_proc {
        let log = v.log_tail();
        if log.contains("Panic") || log.contains("died") {
            results
                .anomalies
                .push(format!("varnishd log (tail):\n{log}"));
        } else {
            // Start-up chatter aside.
            let rest: Vec<&str> = log
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("Debug:")
                        && !l.starts_with("Info:")
                        && *l != "Child launched OK"
                })
                .collect();
            if !rest.is_empty() {
                results
                    .notes
                    .push(format!("varnishd log (tail):\n  {}", rest.join("\n  ")));
            }
        }
    }

    let summary = Summary::of(&args, &scenarios, &endpoints, &results);
    print_summary(&args, &scenarios, &endpoints, &results, &summary);
    println!(
        "\nload average before: {load_before}; after: {load_after} (includes the run's own load); wall time {:.0} s",
        elapsed.as_secs_f64()
    );
    if !results.notes.is_empty() {
        println!("\nnotes:");
        for n in &results.notes {
            println!("  {n}");
        }
    }
    let clean = results.anomalies.is_empty();
    if !clean {
        println!("\nanomalies:");
        for a in &results.anomalies {
            println!("  {a}");
        }
    }
    if let Some(path) = &args.json {
        let json = to_json(
            &args,
            &machine,
            &versions,
            [&load_before, &load_after],
            &scenarios,
            &endpoints,
            &results,
            &summary,
        );
        std::fs::write(path, json.render())
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nresults written to {}", path.display());
    }
    drop(sampler);
    drop(varnish_proc);
    drop(nginx_proc);
    drop(edge);
    drop(origin);
    drop(tmp);
    Ok(clean)
}

/// The streamedge binary: `--edge-bin`, or the release binary next to this program, built
/// first (unless `--no-build`).
fn edge_binary(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(b) = &args.edge_bin {
        return Ok(b.clone());
    }
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    // target/<profile>/compare → target/release/streamedge
    let target_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("cannot find the target directory from {}", exe.display()))?;
    let bin = target_dir.join("release").join("streamedge");
    if !args.no_build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        println!(
            "building the streamedge release binary (cargo build --release --bin streamedge) ..."
        );
        let mut build = Command::new(&cargo);
        build
            .args(["build", "--release", "--bin", "streamedge"])
            .current_dir(REPO)
            .env("CARGO_TARGET_DIR", target_dir);
        // `cargo run` gives this process the package's variables; build scripts that watch
        // one of them (ring watches CARGO_MANIFEST_DIR) would rebuild under a nested cargo,
        // and again at the next plain `cargo build`.
        for (name, _) in std::env::vars_os() {
            let n = name.to_string_lossy();
            if n.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&n.as_ref())
            {
                build.env_remove(&name);
            }
        }
        let status = build.status().context("cannot run cargo")?;
        if !status.success() {
            bail!(
                "cargo build --release --bin streamedge failed ({status}); --no-build uses the binary as it is"
            );
        }
    }
    if !bin.is_file() {
        bail!(
            "no streamedge binary at {} (build it: cargo build --release)",
            bin.display()
        );
    }
    Ok(bin)
}

/// `commit` or `commit + N changed files under src/`.
fn git_state() -> String {
    let git = |a: &[&str]| {
        Command::new("git")
            .args(a)
            .current_dir(REPO)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "no git".into();
    };
    let dirty = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "src",
        "Cargo.toml",
        "Cargo.lock",
    ])
    .map(|s| s.lines().count())
    .unwrap_or(0);
    if dirty == 0 {
        format!("commit {commit}")
    } else {
        format!("commit {commit} + {dirty} uncommitted file(s) in src/ or Cargo.*")
    }
}

/// The first line of `bin args`, without the tool's name and copyright.
fn tool_version(bin: &str, args: &[&str]) -> String {
    Command::new(bin)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
            t.push_str(&String::from_utf8_lossy(&o.stderr));
            let first = t.lines().next().unwrap_or_default().trim();
            let first = first.split(" Copyright").next().unwrap_or(first);
            first.strip_prefix(bin).unwrap_or(first).trim().to_owned()
        })
        .unwrap_or_else(|| "unknown".into())
}

fn write_certificate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .context("cannot make a certificate")?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).context("cannot write the certificate")?;
    std::fs::write(&key, generated.signing_key.serialize_pem()).context("cannot write the key")?;
    Ok((cert, key))
}

fn expect_of(b: &[u8]) -> Expect {
    Expect {
        len: b.len() as u64,
        checksum: Checksum::of(b),
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("mpd") => "application/dash+xml",
        Some("m4s") => "video/iso.segment",
        _ => "application/octet-stream",
    }
}

/// The origin's content: the 1 KB playlist, the 1 MiB segment, the demo rendition under
/// /vod/hls/ and /vod/dash/, cold objects under /herd/ (slow) and /fill/ (1 MiB, at full speed).
type Built = (origin::Content, HashMap<String, Expect>, Vec<String>);

fn build_content(args: &Args) -> anyhow::Result<Built> {
    let mut files: HashMap<String, (Bytes, &'static str)> = HashMap::new();
    // A 1017-byte VOD media playlist, as in loadtest/wrk/README.md.
    let mut m3u8 = String::from(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n",
    );
    for i in 1..=32 {
        m3u8.push_str(&format!("#EXTINF:2.000,\nseg-{i:05}.m4s\n"));
    }
    m3u8.push_str("#EXT-X-ENDLIST\n");
    files.insert(PATH_1K.into(), (Bytes::from(m3u8), content_type(PATH_1K)));
    // The 1 MiB segment: pseudo-random bytes, different from the herd object's.
    let mut seg = crowd::make_object((MIB as usize) + 8).to_vec();
    seg.drain(..8);
    files.insert(PATH_1M.into(), (Bytes::from(seg), content_type(PATH_1M)));

    let mut names: Vec<String> = std::fs::read_dir(DEMO_MEDIA)
        .with_context(|| format!("cannot read the demo media in {DEMO_MEDIA}"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let mut mix = Vec::new();
    for name in &names {
        let bytes = std::fs::read(Path::new(DEMO_MEDIA).join(name))
            .with_context(|| format!("cannot read {DEMO_MEDIA}/{name}"))?;
        let bytes = Bytes::from(bytes);
        // Playlists in the directory of their format, media under both.
        let dirs: &[&str] = if name.ends_with(".m3u8") {
            &["hls"]
        } else if name.ends_with(".mpd") {
            &["dash"]
        } else {
            &["hls", "dash"]
        };
        for d in dirs {
            let path = format!("/vod/{d}/{name}");
            files.insert(path.clone(), (bytes.clone(), content_type(name)));
            mix.push(path);
        }
    }
    if mix.is_empty() {
        bail!("no demo media in {DEMO_MEDIA}");
    }
    let expect = files
        .iter()
        .map(|(p, (b, _))| (p.clone(), expect_of(b)))
        .collect();
    let content = origin::Content {
        files,
        routes: vec![
            origin::Route {
                prefix: "/herd/".into(),
                object: crowd::make_object(args.herd_size),
                behaviour: origin::Behaviour {
                    latency: Duration::from_millis(args.herd_latency_ms),
                    body_time: Duration::from_millis(args.herd_body_ms),
                },
            },
            origin::Route {
                prefix: "/fill/".into(),
                object: {
                    let mut b = crowd::make_object(MIB as usize + 16).to_vec();
                    b.drain(..16);
                    Bytes::from(b)
                },
                behaviour: origin::Behaviour {
                    latency: Duration::ZERO,
                    body_time: Duration::ZERO,
                },
            },
        ],
    };
    Ok((content, expect, mix))
}

impl Bench<'_> {
    async fn all(&self, scenarios: &[Scenario]) -> anyhow::Result<Results> {
        let mut results = Results {
            mix_paths: self.mix_paths.len(),
            ..Results::default()
        };
        // Every target answers every fixed file once (and so has it cached) before the rounds.
        for e in &self.endpoints {
            let paths: Vec<String> = self.expect.keys().cloned().collect();
            if let Err(err) = self.warm(e, &paths).await {
                bail!("{} does not serve the content: {err}", e.target.name());
            }
        }
        for round in 0..self.args.rounds {
            println!("\n--- round {} of {} ---", round + 1, self.args.rounds);
            for (si, &scenario) in scenarios.iter().enumerate() {
                if scenario.h2() && !self.h2load {
                    continue;
                }
                if scenario == Scenario::Herd {
                    self.herd_round(round, &mut results).await?;
                    continue;
                }
                let n = self.endpoints.len();
                for k in 0..n {
                    let e = &self.endpoints[(round + si + k) % n];
                    if scenario.h2() && e.https.is_none() {
                        continue; // Varnish has no TLS
                    }
                    let run = self.measure(round, scenario, e, &mut results).await?;
                    let key = (scenario_index(scenario), e.target);
                    results.runs.entry(key).or_default().push(run);
                    tokio::time::sleep(Duration::from_millis(self.args.pause_ms)).await;
                }
            }
        }
        results.mem_rounds = self.sampler.peaks();
        if self.args.fill_factor > 0.0 {
            self.fill(&mut results).await;
            // Let every cache finish its evictions (streamedge's gauges and moka's pending
            // maintenance run every 5 s) before the settled reading.
            tokio::time::sleep(Duration::from_secs(self.args.settle_s)).await;
            results.mem_fill = self.sampler.peaks();
        }
        if let Some(admin) = self.endpoints.iter().find_map(|e| e.admin) {
            results.edge_metrics = edge_metrics(admin).await;
        }
        Ok(results)
    }

    /// GETs every path twice; the second answer must come from the cache.
    async fn warm(&self, e: &Endpoint, paths: &[String]) -> Result<(), String> {
        let timeout = Duration::from_secs(30);
        for pass in 0..2 {
            for p in paths {
                let expect = self.expect[p];
                let stream = client::connect(e.http)
                    .await
                    .map_err(|err| format!("connect: {err}"))?;
                let s = tokio::time::timeout(
                    timeout,
                    client::get(stream, e.http, p, expect, Instant::now()),
                )
                .await
                .map_err(|_| format!("GET {p}: timed out"))?
                .map_err(|err| format!("GET {p}: {err}"))?;
                if pass == 1 {
                    let status = s.cache_status.unwrap_or_default();
                    let hit = status.contains("hit") || status.contains("HIT");
                    if !hit {
                        return Err(format!(
                            "GET {p}: the second answer is not a cache hit ({status:?})"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    async fn measure(
        &self,
        round: usize,
        scenario: Scenario,
        e: &Endpoint,
        results: &mut Results,
    ) -> anyhow::Result<Run> {
        let a = self.args;
        // Warm: the objects are cached (checked), then unmeasured load.
        let paths: Vec<String> = match scenario.path() {
            Some(p) => vec![p.to_owned()],
            None => self.mix_paths.clone(),
        };
        if let Err(err) = self.warm(e, &paths).await {
            results.anomalies.push(format!(
                "round {} {} {}: warm-up: {err}",
                round + 1,
                scenario.slug(),
                e.target.name()
            ));
        }
        if a.warmup > 0 {
            let _ = self.load(scenario, e, a.warmup, None).await;
        }
        let pids = e.pid.map(process::tree).unwrap_or_default();
        let cpu0 = process::cpu_seconds(&pids);
        let origin0 = self.origin.total_requests();
        let wall = Instant::now();
        let log = self.tmp.join("h2load.log");
        let mut run = self
            .load(
                scenario,
                e,
                a.duration,
                scenario.h2().then_some(log.as_path()),
            )
            .await
            .with_context(|| {
                format!(
                    "round {} {} {}",
                    round + 1,
                    scenario.slug(),
                    e.target.name()
                )
            })?;
        let _ = std::fs::remove_file(&log);
        run.round = round;
        run.origin_requests = self.origin.total_requests() - origin0;
        let pids = e.pid.map(process::tree).unwrap_or(pids);
        run.cache_cpu = (process::cpu_seconds(&pids) - cpu0) / wall.elapsed().as_secs_f64();
        if run.errors > 0 {
            results.anomalies.push(format!(
                "round {} {} {}: {} errors of {} requests",
                round + 1,
                scenario.slug(),
                e.target.name(),
                run.errors,
                run.requests + run.errors
            ));
        }
        println!(
            "{:<7} {:<7} {:<11} {:>10.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  errors {:<4} origin req {:<4} cache CPU {:.2}{}",
            round + 1,
            scenario.slug(),
            e.target.name(),
            run.rps,
            run.p50_ms,
            run.p99_ms,
            run.errors,
            run.origin_requests,
            run.cache_cpu,
            if run.note.is_empty() {
                String::new()
            } else {
                format!("  [{}]", run.note)
            }
        );
        Ok(run)
    }

    /// One wrk or h2load run of `secs` seconds; `log`: h2load's per-request log (measured
    /// runs; its latencies give the percentiles).
    async fn load(
        &self,
        scenario: Scenario,
        e: &Endpoint,
        secs: u64,
        log: Option<&Path>,
    ) -> anyhow::Result<Run> {
        let a = self.args;
        if scenario.h2() {
            let https = e
                .https
                .ok_or_else(|| anyhow!("{} has no TLS listener", e.target.name()))?;
            let path = scenario.path().unwrap_or(PATH_1K);
            let mut cmd = h2load_command(a, secs);
            if let Some(log) = log {
                cmd.push(format!("--log-file={}", log.display()));
            }
            cmd.push(format!("https://{https}{path}"));
            let out = self.tool(cmd, &[]).await?;
            parse_h2load(&out, log)
        } else {
            let mut cmd = wrk_command(a, secs);
            let url = match scenario.path() {
                Some(p) => {
                    cmd.push(format!("{WRK_DIR}/report.lua"));
                    format!("http://{}{p}", e.http)
                }
                None => {
                    cmd.push(format!("{WRK_DIR}/player-mix.lua"));
                    format!("http://{}/", e.http)
                }
            };
            cmd.push(url);
            if scenario == Scenario::Mix {
                cmd.push("--".into());
                cmd.push(self.mix_file.display().to_string());
            }
            let out = self.tool(cmd, &[("RESULT_LABEL", scenario.slug())]).await?;
            parse_wrk(&out)
        }
    }

    /// Runs a load generator (with the `--taskset` prefix) and returns its stdout.
    async fn tool(&self, cmd: Vec<String>, env: &[(&str, &str)]) -> anyhow::Result<String> {
        let full: Vec<String> = self.gen_prefix.iter().cloned().chain(cmd).collect();
        let mut c = Command::new(&full[0]);
        c.args(&full[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c
            .spawn()
            .with_context(|| format!("cannot run {}", full[0]))?;
        // Killed if this future is dropped (Ctrl-C, a timeout) before the tool is done.
        let mut guard = KillOnDrop(Some(child.id()));
        let limit = Duration::from_secs(self.args.duration.max(self.args.warmup) + 60);
        let out = tokio::time::timeout(
            limit,
            tokio::task::spawn_blocking(move || child.wait_with_output()),
        )
        .await
        .map_err(|_| anyhow!("{} did not finish within {limit:?}", full.join(" ")))?
        .map_err(|e| anyhow!("waiting for {}: {e}", full[0]))?
        .with_context(|| format!("cannot run {}", full[0]))?;
        guard.0 = None;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "{} failed ({}):\n{}{}",
                full.join(" "),
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    async fn herd_round(&self, round: usize, results: &mut Results) -> anyhow::Result<()> {
        let a = self.args;
        let timeout = Duration::from_millis(a.herd_timeout_ms);
        let mut targets = vec![(Target::Direct, self.direct)];
        targets.extend(self.endpoints.iter().map(|e| (e.target, e.http)));
        if round == 0 {
            // One request per target first, so that no herd pays for a first connection.
            for &(t, addr) in &targets {
                let path = format!("/herd/warmup/{}/obj.bin", t.slug());
                let out = crowd::herd(addr, &path, 1, self.herd_expect, timeout).await;
                if let Some(Err(e)) = out.results.first() {
                    bail!("herd warm-up request to {} failed: {e}", t.name());
                }
            }
        }
        for k in 0..targets.len() {
            let (target, addr) = targets[(round + k) % targets.len()];
            let path = format!("/herd/{}/{}/obj.bin", target.slug(), round + 1);
            let out = crowd::herd(addr, &path, a.herd_clients, self.herd_expect, timeout).await;
            let mut h = Herd {
                round,
                target,
                origin_requests: self.origin.requests(&path),
                path,
                connected: out.connected,
                ttfb: Vec::new(),
                done: Vec::new(),
                cache_status: BTreeMap::new(),
                errors: BTreeMap::new(),
            };
            for r in out.results {
                match r {
                    Ok(s) => {
                        h.ttfb.push(s.ttfb);
                        h.done.push(s.done);
                        let status = short_status(s.cache_status.as_deref().unwrap_or("-"));
                        *h.cache_status.entry(status).or_insert(0) += 1;
                    }
                    Err(e) => *h.errors.entry(e).or_insert(0) += 1,
                }
            }
            h.ttfb.sort();
            h.done.sort();
            let expected = if target == Target::Direct {
                a.herd_clients as u64
            } else {
                1
            };
            let at = format!("round {} herd {} ({})", round + 1, target.name(), h.path);
            if h.origin_requests != expected {
                results.anomalies.push(format!(
                    "{at}: {} origin requests, expected {expected}",
                    h.origin_requests
                ));
            }
            for (e, n) in &h.errors {
                results
                    .anomalies
                    .push(format!("{at}: {n} client(s) failed: {e}"));
            }
            let tally: Vec<String> = h
                .cache_status
                .iter()
                .map(|(k, v)| format!("{v}x {k}"))
                .collect();
            println!(
                "{:<7} {:<7} {:<13} origin req {:<4} ok {:>4}/{:<4} TTFB p50 {:>8.1} ms  max {:>8.1} ms  all done {:>8.1} ms  {}",
                round + 1,
                "herd",
                target.name(),
                h.origin_requests,
                h.ttfb.len(),
                a.herd_clients,
                h.ttfb_p(0.5).map(ms).unwrap_or(f64::NAN),
                h.ttfb_p(1.0).map(ms).unwrap_or(f64::NAN),
                h.done.last().copied().map(ms).unwrap_or(f64::NAN),
                tally.join(", ")
            );
            results.herds.push(h);
            tokio::time::sleep(Duration::from_millis(a.pause_ms)).await;
        }
        Ok(())
    }

    /// Distinct 1 MiB objects, `fill_factor` times the cache size, through every target (8
    /// at a time), so that every cache must evict; then memory is read again.
    async fn fill(&self, results: &mut Results) {
        let objects = ((self.args.cache_mib as f64) * self.args.fill_factor).ceil() as usize;
        println!(
            "\n--- fill: {objects} distinct 1 MiB objects through every target ({:.1}x the cache size) ---",
            self.args.fill_factor
        );
        for e in &self.endpoints {
            let t0 = Instant::now();
            let origin0 = self.origin.total_requests();
            let sem = Arc::new(tokio::sync::Semaphore::new(8));
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..objects {
                let (sem, addr, expect) = (sem.clone(), e.http, self.fill_expect);
                let path = format!("/fill/{}/{i}.bin", e.target.slug());
                tasks.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let stream = client::connect(addr).await.map_err(|e| e.to_string())?;
                    tokio::time::timeout(
                        Duration::from_secs(30),
                        client::get(stream, addr, &path, expect, Instant::now()),
                    )
                    .await
                    .map_err(|_| "timed out".to_owned())?
                    .map(|_| ())
                });
            }
            let mut ok = 0;
            let mut errors: BTreeMap<String, usize> = BTreeMap::new();
            while let Some(r) = tasks.join_next().await {
                match r {
                    Ok(Ok(())) => ok += 1,
                    Ok(Err(err)) => *errors.entry(err).or_insert(0) += 1,
                    Err(err) => *errors.entry(err.to_string()).or_insert(0) += 1,
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            let origin_requests = self.origin.total_requests() - origin0;
            for (err, n) in errors {
                results.anomalies.push(format!(
                    "fill {}: {n} request(s) failed: {err}",
                    e.target.name()
                ));
            }
            println!(
                "fill    {:<11} {ok}/{objects} ok in {secs:.1} s, origin requests {origin_requests}",
                e.target.name()
            );
            results
                .fill
                .push((e.target, ok, objects, origin_requests, secs));
        }
    }
}

/// SIGKILL to a load generator still running when dropped.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            process::signal("KILL", &pid.to_string());
        }
    }
}

fn scenario_index(s: Scenario) -> usize {
    Scenario::ALL.iter().position(|&x| x == s).unwrap_or(0)
}

fn wrk_command(a: &Args, secs: u64) -> Vec<String> {
    vec![
        "wrk".into(),
        format!("-t{}", a.threads),
        format!("-c{}", a.conns),
        format!("-d{secs}s"),
        "--timeout".into(),
        "10s".into(),
        "-s".into(),
    ]
}

fn h2load_command(a: &Args, secs: u64) -> Vec<String> {
    vec![
        "h2load".into(),
        format!("-t{}", a.threads),
        format!("-c{}", a.h2_conns),
        format!("-m{}", a.h2_streams),
        "-D".into(),
        secs.to_string(),
    ]
}

/// The `RESULT key=value ...` line of loadtest/wrk/report.lua.
fn parse_wrk(out: &str) -> anyhow::Result<Run> {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| anyhow!("no RESULT line in wrk's output:\n{out}"))?;
    let kv: HashMap<&str, &str> = line
        .split_whitespace()
        .filter_map(|p| p.split_once('='))
        .collect();
    let num = |k: &str| kv.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Ok(Run {
        rps: num("rps"),
        p50_ms: num("p50_ms"),
        p99_ms: num("p99_ms"),
        requests: num("requests") as u64,
        errors: num("errors") as u64,
        mbps: num("mbps"),
        ..Run::default()
    })
}

/// h2load's summary, and latency percentiles from its per-request log (microseconds in the
/// third column).
fn parse_h2load(out: &str, log: Option<&Path>) -> anyhow::Result<Run> {
    let after = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let finished =
        after("finished in").ok_or_else(|| anyhow!("no summary in h2load's output:\n{out}"))?;
    // "10.00s, 12345.67 req/s, 12.34MB/s"
    let fields: Vec<&str> = finished.split(',').map(str::trim).collect();
    let rps = fields
        .get(1)
        .and_then(|f| f.strip_suffix(" req/s"))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let secs = fields
        .first()
        .and_then(|f| f.strip_suffix('s'))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    // "requests: 1777 total, 1785 started, 1777 done, 1777 succeeded, 0 failed, 0 errored, 0 timeout"
    let counts: HashMap<String, u64> = after("requests:")
        .unwrap_or_default()
        .split(',')
        .filter_map(|p| {
            let mut it = p.split_whitespace();
            let n = it.next()?.parse().ok()?;
            Some((it.next()?.to_owned(), n))
        })
        .collect();
    let c = |k: &str| counts.get(k).copied().unwrap_or(0);
    let mut run = Run {
        rps,
        requests: c("succeeded"),
        // `errored` and `timeout` are the two kinds of `failed`.
        errors: c("failed"),
        note: [
            after("Application protocol:"),
            after("TLS Protocol:"),
            after("Cipher:"),
        ]
        .iter()
        .flatten()
        .copied()
        .collect::<Vec<_>>()
        .join(" "),
        ..Run::default()
    };
    if run.errors > 0 {
        run.note.push_str(&format!(
            "; failed {} (errored {}, timeout {})",
            c("failed"),
            c("errored"),
            c("timeout")
        ));
    }
    if let Some(traffic) = after("traffic:")
        && secs > 0.0
    {
        // "1.74GB (1864434539) total, ..."
        if let Some(bytes) = traffic
            .split_once('(')
            .and_then(|(_, r)| r.split_once(')'))
            .and_then(|(n, _)| n.parse::<f64>().ok())
        {
            run.mbps = bytes * 8.0 / secs / 1e6;
        }
    }
    if let Some(log) = log {
        let text = std::fs::read_to_string(log)
            .with_context(|| format!("cannot read h2load's log {}", log.display()))?;
        let mut lat: Vec<Duration> = text
            .lines()
            .filter_map(|l| l.split('\t').nth(2)?.trim().parse::<u64>().ok())
            .map(Duration::from_micros)
            .collect();
        lat.sort();
        if !lat.is_empty() {
            run.p50_ms = ms(percentile(&lat, 0.5));
            run.p99_ms = ms(percentile(&lat, 0.99));
        }
    }
    Ok(run)
}

/// `Cache-Status` without the cache name and the parameters that differ between runs.
fn short_status(s: &str) -> String {
    let parts: Vec<&str> = s
        .split(';')
        .map(str::trim)
        .filter(|p| *p != "streamedge" && !p.starts_with("ttl=") && !p.starts_with("fwd-status="))
        .collect();
    parts.join("; ")
}

/// A few of streamedge's own counters at the end (cache bytes and objects, evictions, origin
/// and fill failures), from its admin listener.
async fn edge_metrics(admin: SocketAddr) -> Vec<(String, String)> {
    let text = async {
        let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
        s.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    };
    let Ok(Some(text)) = tokio::time::timeout(Duration::from_secs(5), text).await else {
        return vec![("error".into(), "cannot read /metrics".into())];
    };
    let wanted = [
        "streamedge_cache_bytes",
        "streamedge_cache_objects",
        "streamedge_cache_evictions_total",
        "streamedge_origin_errors_total",
        "streamedge_fill_failures_total",
        "streamedge_tls_handshake_errors_total",
    ];
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| wanted.iter().any(|w| l.starts_with(w)))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Medians over the rounds.
#[derive(Debug, Clone, Default)]
struct Med {
    rps: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    errors: u64,
    origin_requests: u64,
    cache_cpu: Option<f64>,
    rps_min: f64,
    rps_max: f64,
}

struct HerdSummary {
    target: Target,
    origin_requests: Vec<u64>,
    ttfb_p50: Option<f64>,
    ttfb_max: Option<f64>,
    all_done: Option<f64>,
    ok: usize,
    failed: usize,
}

struct Summary {
    med: BTreeMap<(usize, Target), Med>,
    herd: Vec<HerdSummary>,
    goals: Vec<(String, String, Option<bool>)>,
}

impl Summary {
    fn of(args: &Args, scenarios: &[Scenario], endpoints: &[Endpoint], r: &Results) -> Summary {
        let mut med = BTreeMap::new();
        for (key, runs) in &r.runs {
            let col = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
            let rps: Vec<f64> = runs.iter().map(|x| x.rps).collect();
            med.insert(
                *key,
                Med {
                    rps: col(|x| x.rps),
                    p50: col(|x| x.p50_ms),
                    p99: col(|x| x.p99_ms),
                    errors: runs.iter().map(|x| x.errors).sum(),
                    origin_requests: runs.iter().map(|x| x.origin_requests).sum(),
                    cache_cpu: col(|x| x.cache_cpu),
                    rps_min: rps.iter().copied().fold(f64::INFINITY, f64::min),
                    rps_max: rps.iter().copied().fold(0.0, f64::max),
                },
            );
        }
        let mut herd = Vec::new();
        if scenarios.contains(&Scenario::Herd) {
            let mut ts = vec![Target::Direct];
            ts.extend(endpoints.iter().map(|e| e.target));
            for t in ts {
                let mine: Vec<&Herd> = r.herds.iter().filter(|h| h.target == t).collect();
                let m = |f: &dyn Fn(&Herd) -> Option<Duration>| {
                    median(&mine.iter().filter_map(|h| f(h).map(ms)).collect::<Vec<_>>())
                };
                herd.push(HerdSummary {
                    target: t,
                    origin_requests: mine.iter().map(|h| h.origin_requests).collect(),
                    ttfb_p50: m(&|h| h.ttfb_p(0.5)),
                    ttfb_max: m(&|h| h.ttfb_p(1.0)),
                    all_done: m(&|h| h.done.last().copied()),
                    ok: mine.iter().map(|h| h.ttfb.len()).sum(),
                    failed: mine.iter().map(|h| h.errors.values().sum::<usize>()).sum(),
                });
            }
        }
        let mut s = Summary {
            med,
            herd,
            goals: Vec::new(),
        };
        s.goals = s.goals(args, scenarios, endpoints, r);
        s
    }

    fn get(&self, s: Scenario, t: Target) -> Option<&Med> {
        self.med.get(&(scenario_index(s), t))
    }

    fn ratio(&self, s: Scenario, t: Target) -> Option<f64> {
        let n = self.get(s, Target::Nginx)?.rps?;
        let x = self.get(s, t)?.rps?;
        (n > 0.0).then_some(x / n)
    }

    /// Requests per CPU-second of the cache's own processes: throughput with the load
    /// generators' share of the machine taken out.
    fn per_core(&self, s: Scenario, t: Target) -> Option<f64> {
        let m = self.get(s, t)?;
        let (rps, cpu) = (m.rps?, m.cache_cpu?);
        (cpu > 0.0).then_some(rps / cpu)
    }

    fn per_core_ratio(&self, s: Scenario, t: Target) -> Option<f64> {
        let n = self.per_core(s, Target::Nginx)?;
        (n > 0.0).then_some(self.per_core(s, t)? / n)
    }

    /// The lowest p99 among the other targets.
    fn best_peer_p99(&self, s: Scenario, t: Target) -> Option<f64> {
        [Target::Edge, Target::Nginx, Target::Varnish]
            .into_iter()
            .filter(|&x| x != t)
            .filter_map(|x| self.get(s, x)?.p99)
            .reduce(f64::min)
    }

    fn herd_ratio(&self, t: Target) -> Option<f64> {
        let p = |t: Target| self.herd.iter().find(|h| h.target == t)?.ttfb_p50;
        let (x, d) = (p(t)?, p(Target::Direct)?);
        (d > 0.0).then_some(x / d)
    }

    fn goals(
        &self,
        args: &Args,
        scenarios: &[Scenario],
        endpoints: &[Endpoint],
        r: &Results,
    ) -> Vec<(String, String, Option<bool>)> {
        let mut g = Vec::new();
        let edge = Target::Edge;
        if !endpoints.iter().any(|e| e.target == edge) {
            return g;
        }
        for &s in scenarios {
            if let Some(goal) = s.goal_ratio() {
                let ratio = self.ratio(s, edge);
                g.push((
                    format!("{}: req/s >= {goal}x nginx", s.slug()),
                    ratio.map_or("no data".into(), |x| format!("{x:.2}x")),
                    ratio.map(|x| x >= goal),
                ));
            }
        }
        for &s in scenarios {
            if s == Scenario::Herd {
                continue;
            }
            let (mine, best) = (
                self.get(s, edge).and_then(|m| m.p99),
                self.best_peer_p99(s, edge),
            );
            if let (Some(m), Some(b)) = (mine, best) {
                g.push((
                    format!("{}: p99 no worse than the best peer", s.slug()),
                    format!("{m:.2} ms vs {b:.2} ms"),
                    Some(m <= b),
                ));
            }
        }
        if let Some(h) = self.herd.iter().find(|h| h.target == edge) {
            let all_one =
                !h.origin_requests.is_empty() && h.origin_requests.iter().all(|&n| n == 1);
            g.push((
                "herd: one origin request per herd".into(),
                format!("{:?}", h.origin_requests),
                Some(all_one),
            ));
            let ratio = self.herd_ratio(edge);
            g.push((
                "herd: TTFB p50 within 10% of direct".into(),
                ratio.map_or("no data".into(), |x| format!("{x:.3}x direct")),
                ratio.map(|x| x <= 1.10),
            ));
        }
        let limit = (args.cache_mib + 64) * 1024;
        let peak = r
            .mem_fill
            .iter()
            .chain(&r.mem_rounds)
            .filter(|(n, _)| n == edge.name())
            .map(|(_, p)| p.rss.max(p.hwm))
            .max();
        if let Some(p) = peak {
            g.push((
                format!(
                    "peak RSS <= cache size + 64 MiB ({} MiB)",
                    args.cache_mib + 64
                ),
                format!("{:.1} MiB", p as f64 / 1024.0),
                Some(p <= limit),
            ));
        }
        g
    }
}

fn fmt_opt(x: Option<f64>, prec: usize) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn print_header(
    args: &Args,
    machine: &Machine,
    versions: &[(&'static str, String)],
    endpoints: &[Endpoint],
    origin: SocketAddr,
    scenarios: &[Scenario],
    load: &str,
) {
    println!("streamedge comparison: streamedge, nginx and Varnish in front of one origin");
    println!(
        "machine: {} cores ({}), {} RAM, kernel {}, {}",
        machine.nproc, machine.cpu, machine.memory, machine.kernel, machine.os
    );
    let v: Vec<String> = versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("versions: {}", v.join("; "));
    println!(
        "parameters: {} rounds, {} s measured after {} s warm-up per run; wrk -t{} -c{}; h2load -t{} -c{} -m{}; cache {} MiB each; herd {} clients, {} bytes, origin head after {} ms, body over {} ms; fill {}x",
        args.rounds,
        args.duration,
        args.warmup,
        args.threads,
        args.conns,
        args.threads,
        args.h2_conns,
        args.h2_streams,
        args.cache_mib,
        args.herd_clients,
        args.herd_size,
        args.herd_latency_ms,
        args.herd_body_ms,
        args.fill_factor
    );
    println!(
        "scenarios: {}",
        scenarios
            .iter()
            .map(|s| s.slug())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "pinning: {}",
        if args.taskset {
            "caches on CPU 1; wrk, h2load, origin and herd clients on CPU 0 (taskset)"
        } else {
            "none: load generators, origin and caches share all cores"
        }
    );
    println!("origin: http://{origin}");
    for e in endpoints {
        println!(
            "  {:<11} http://{}{}  pid {}",
            e.target.name(),
            e.http,
            e.https
                .map(|a| format!("  https://{a}"))
                .unwrap_or_default(),
            e.pid.map_or("-".into(), |p| p.to_string())
        );
    }
    println!("load average before: {load}");
    if cfg!(debug_assertions) {
        println!(
            "WARNING: debug build of the load generator; run `cargo run --release --bin compare`"
        );
    }
}

fn print_summary(
    args: &Args,
    scenarios: &[Scenario],
    endpoints: &[Endpoint],
    r: &Results,
    s: &Summary,
) {
    println!("\n===== summary: medians over {} rounds =====", args.rounds);
    for &sc in scenarios {
        if sc == Scenario::Herd {
            continue;
        }
        let how = if sc.h2() {
            format!(
                "h2load -t{} -c{} -m{} -D {}",
                args.threads, args.h2_conns, args.h2_streams, args.duration
            )
        } else if sc == Scenario::Mix {
            format!(
                "wrk -t{} -c{} -d{}s -s player-mix.lua, {} paths",
                args.threads, args.conns, args.duration, r.mix_paths
            )
        } else {
            format!(
                "wrk -t{} -c{} -d{}s -s report.lua",
                args.threads, args.conns, args.duration
            )
        };
        println!(
            "\n{} ({how}{})",
            sc.title(),
            sc.path().map(|p| format!(", GET {p}")).unwrap_or_default()
        );
        println!(
            "| target | req/s | vs nginx | p50 ms | p99 ms | p99 vs best peer | cache CPU (cores) | req/s per cache core | per core vs nginx | errors | origin req | req/s min-max |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for e in endpoints {
            let Some(m) = s.get(sc, e.target) else {
                println!("| {} | n/a | | | | | | | | | | |", e.target.name());
                continue;
            };
            let p99_vs = match (m.p99, s.best_peer_p99(sc, e.target)) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0}-{:.0} |",
                e.target.name(),
                fmt_opt(m.rps, 0),
                s.ratio(sc, e.target)
                    .map_or("-".into(), |x| format!("{x:.2}x")),
                fmt_opt(m.p50, 2),
                fmt_opt(m.p99, 2),
                p99_vs,
                fmt_opt(m.cache_cpu, 2),
                fmt_opt(s.per_core(sc, e.target), 0),
                s.per_core_ratio(sc, e.target)
                    .map_or("-".into(), |x| format!("{x:.2}x")),
                m.errors,
                m.origin_requests,
                m.rps_min,
                m.rps_max
            );
        }
    }
    if !s.herd.is_empty() {
        println!(
            "\n{} ({} clients, {} bytes, origin head after {} ms, body over {} ms)",
            Scenario::Herd.title(),
            args.herd_clients,
            args.herd_size,
            args.herd_latency_ms,
            args.herd_body_ms
        );
        println!(
            "| target | origin req/round | TTFB p50 ms | TTFB max ms | all done ms | clients ok | p50 / direct |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for h in &s.herd {
            println!(
                "| {} | {} | {} | {} | {} | {}/{} | {} |",
                h.target.name(),
                h.origin_requests
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                fmt_opt(h.ttfb_p50, 1),
                fmt_opt(h.ttfb_max, 1),
                fmt_opt(h.all_done, 1),
                h.ok,
                h.ok + h.failed,
                s.herd_ratio(h.target)
                    .map_or("-".into(), |x| format!("{x:.2}"))
            );
        }
    }
    println!(
        "\nmemory of each cache's processes (MiB; nginx: master + workers, varnish: manager + cache process)"
    );
    println!(
        "| target | peak RSS, rounds | peak PSS, rounds | peak RSS, with fill | peak PSS, with fill | VmHWM sum, with fill | RSS {s} s after fill | PSS {s} s after fill |",
        s = args.settle_s
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, p) in &r.mem_rounds {
        let f = r.mem_fill.iter().find(|(n, _)| n == name).map(|(_, p)| *p);
        let f = |g: fn(&process::Peaks) -> u64| f.as_ref().map_or("-".into(), |f| mib(g(f)));
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            mib(p.rss),
            mib(p.pss),
            f(|f| f.rss),
            f(|f| f.pss),
            f(|f| f.hwm),
            f(|f| f.last.rss),
            f(|f| f.last.pss),
        );
    }
    for (t, ok, n, origin, secs) in &r.fill {
        println!(
            "fill {}: {ok}/{n} objects ok, {origin} origin requests, {secs:.1} s",
            t.name()
        );
    }
    if !r.edge_metrics.is_empty() {
        let m: Vec<String> = r
            .edge_metrics
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("streamedge metrics at the end: {}", m.join("; "));
    }
    if !s.goals.is_empty() {
        println!("\ngoals (streamedge)");
        println!("| goal | measured | met |");
        println!("|---|---:|---|");
        for (goal, measured, met) in &s.goals {
            let met = match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            };
            println!("| {goal} | {measured} | {met} |");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn to_json(
    args: &Args,
    machine: &Machine,
    versions: &[(&'static str, String)],
    load: [&str; 2],
    scenarios: &[Scenario],
    endpoints: &[Endpoint],
    r: &Results,
    s: &Summary,
) -> Json {
    let scen = scenarios
        .iter()
        .filter(|&&x| x != Scenario::Herd)
        .map(|&sc| {
            let targets = endpoints
                .iter()
                .filter_map(|e| {
                    let m = s.get(sc, e.target)?;
                    let runs = r.runs.get(&(scenario_index(sc), e.target))?;
                    Some(Json::Obj(vec![
                        ("target", Json::str(e.target.slug())),
                        ("rps", Json::opt_num(m.rps)),
                        ("p50_ms", Json::opt_num(m.p50)),
                        ("p99_ms", Json::opt_num(m.p99)),
                        ("vs_nginx", Json::opt_num(s.ratio(sc, e.target))),
                        ("errors", Json::Int(m.errors)),
                        ("origin_requests", Json::Int(m.origin_requests)),
                        ("cache_cpu_cores", Json::opt_num(m.cache_cpu)),
                        (
                            "rps_per_cache_core",
                            Json::opt_num(s.per_core(sc, e.target)),
                        ),
                        (
                            "per_core_vs_nginx",
                            Json::opt_num(s.per_core_ratio(sc, e.target)),
                        ),
                        (
                            "rounds",
                            Json::Arr(
                                runs.iter()
                                    .map(|x| {
                                        Json::Obj(vec![
                                            ("round", Json::Int(x.round as u64 + 1)),
                                            ("rps", Json::Num(x.rps)),
                                            ("p50_ms", Json::Num(x.p50_ms)),
                                            ("p99_ms", Json::Num(x.p99_ms)),
                                            ("requests", Json::Int(x.requests)),
                                            ("errors", Json::Int(x.errors)),
                                            ("mbps", Json::Num(x.mbps)),
                                            ("origin_requests", Json::Int(x.origin_requests)),
                                            ("cache_cpu_cores", Json::Num(x.cache_cpu)),
                                            ("note", Json::str(x.note.clone())),
                                        ])
                                    })
                                    .collect(),
                            ),
                        ),
                    ]))
                })
                .collect();
            Json::Obj(vec![
                ("scenario", Json::str(sc.slug())),
                ("title", Json::str(sc.title())),
                ("path", sc.path().map_or(Json::Null, Json::str)),
                ("targets", Json::Arr(targets)),
            ])
        })
        .collect();
    let herd = s
        .herd
        .iter()
        .map(|h| {
            let rounds = r
                .herds
                .iter()
                .filter(|x| x.target == h.target)
                .map(|x| {
                    Json::Obj(vec![
                        ("round", Json::Int(x.round as u64 + 1)),
                        ("path", Json::str(x.path.clone())),
                        ("origin_requests", Json::Int(x.origin_requests)),
                        ("connected", Json::Int(x.connected as u64)),
                        ("ok", Json::Int(x.ttfb.len() as u64)),
                        ("ttfb_p50_ms", Json::opt_ms(x.ttfb_p(0.5))),
                        ("ttfb_max_ms", Json::opt_ms(x.ttfb_p(1.0))),
                        ("all_done_ms", Json::opt_ms(x.done.last().copied())),
                        ("cache_status", Json::tally(&x.cache_status)),
                        ("errors", Json::tally(&x.errors)),
                    ])
                })
                .collect();
            Json::Obj(vec![
                ("target", Json::str(h.target.slug())),
                (
                    "origin_requests_per_round",
                    Json::Arr(h.origin_requests.iter().map(|&n| Json::Int(n)).collect()),
                ),
                ("ttfb_p50_ms", Json::opt_num(h.ttfb_p50)),
                ("ttfb_max_ms", Json::opt_num(h.ttfb_max)),
                ("all_done_ms", Json::opt_num(h.all_done)),
                ("ttfb_p50_vs_direct", Json::opt_num(s.herd_ratio(h.target))),
                ("clients_ok", Json::Int(h.ok as u64)),
                ("clients_failed", Json::Int(h.failed as u64)),
                ("rounds", Json::Arr(rounds)),
            ])
        })
        .collect();
    let mem = |v: &[(String, process::Peaks)]| {
        Json::Arr(
            v.iter()
                .map(|(n, p)| {
                    Json::Obj(vec![
                        ("target", Json::str(n.clone())),
                        ("peak_rss_kib", Json::Int(p.rss)),
                        ("peak_pss_kib", Json::Int(p.pss)),
                        ("vmhwm_sum_kib", Json::Int(p.hwm)),
                        ("last_rss_kib", Json::Int(p.last.rss)),
                        ("last_pss_kib", Json::Int(p.last.pss)),
                        ("samples", Json::Int(p.samples)),
                    ])
                })
                .collect(),
        )
    };
    Json::Obj(vec![
        ("benchmark", Json::str("compare")),
        ("machine", machine.to_json(load)),
        (
            "versions",
            Json::Obj(
                versions
                    .iter()
                    .map(|(k, v)| (*k, Json::str(v.clone())))
                    .collect(),
            ),
        ),
        (
            "params",
            Json::Obj(vec![
                ("rounds", Json::Int(args.rounds as u64)),
                ("duration_s", Json::Int(args.duration)),
                ("warmup_s", Json::Int(args.warmup)),
                ("threads", Json::Int(args.threads as u64)),
                ("conns", Json::Int(args.conns as u64)),
                ("h2_conns", Json::Int(args.h2_conns as u64)),
                ("h2_streams", Json::Int(args.h2_streams as u64)),
                ("cache_mib", Json::Int(args.cache_mib)),
                ("herd_clients", Json::Int(args.herd_clients as u64)),
                ("herd_size", Json::Int(args.herd_size as u64)),
                ("herd_latency_ms", Json::Int(args.herd_latency_ms)),
                ("herd_body_ms", Json::Int(args.herd_body_ms)),
                ("fill_factor", Json::Num(args.fill_factor)),
                ("settle_s", Json::Int(args.settle_s)),
                ("taskset", Json::Bool(args.taskset)),
                ("release_build", Json::Bool(!cfg!(debug_assertions))),
            ]),
        ),
        ("scenarios", Json::Arr(scen)),
        ("herd", Json::Arr(herd)),
        (
            "memory",
            Json::Obj(vec![
                ("rounds", mem(&r.mem_rounds)),
                ("after_fill", mem(&r.mem_fill)),
            ]),
        ),
        (
            "fill",
            Json::Arr(
                r.fill
                    .iter()
                    .map(|(t, ok, n, o, secs)| {
                        Json::Obj(vec![
                            ("target", Json::str(t.slug())),
                            ("ok", Json::Int(*ok as u64)),
                            ("objects", Json::Int(*n as u64)),
                            ("origin_requests", Json::Int(*o)),
                            ("seconds", Json::Num(*secs)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "streamedge_metrics",
            Json::Arr(
                r.edge_metrics
                    .iter()
                    .map(|(k, v)| {
                        Json::Obj(vec![
                            ("metric", Json::str(k.clone())),
                            ("value", Json::str(v.clone())),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "goals",
            Json::Arr(
                s.goals
                    .iter()
                    .map(|(g, m, met)| {
                        Json::Obj(vec![
                            ("goal", Json::str(g.clone())),
                            ("measured", Json::str(m.clone())),
                            ("met", met.map_or(Json::Null, Json::Bool)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "anomalies",
            Json::Arr(r.anomalies.iter().map(|a| Json::str(a.clone())).collect()),
        ),
        (
            "notes",
            Json::Arr(r.notes.iter().map(|a| Json::str(a.clone())).collect()),
        ),
    ])
}
