//! The fleet measured: three streamedge processes on 127.0.0.2, .3 and .4 in front of one
//! counting origin, as one fleet (`cluster.peers` lists all three, one secret) and as three
//! independent nodes, under the same player-mix workload spread over the three: origin
//! requests, client req/s, memory for the same hot set; then the time to first byte of a hit
//! served through a peer against a local hit. One command; see loadtest/README.md, "The
//! fleet".

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use streamedge_loadtest::admin::{self, metric_sum};
use streamedge_loadtest::client::{self, Expect, Sample};
use streamedge_loadtest::fleet::{Layout, Nodes};
use streamedge_loadtest::loadgen::{self, WRK_DIR, WrkResult};
use streamedge_loadtest::origin::{Content, Origin};
use streamedge_loadtest::process;
use streamedge_loadtest::report::{Json, Machine, load_average, median, ms, percentile};
use streamedge_loadtest::setup::{
    self, TempDir, edge_binary, expect_of, git_state, tool_version, which,
};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Three nodes as one fleet and as three independent nodes, under the same player mix: origin
/// requests, req/s, memory; and the TTFB of a hit through a peer against a local hit.
#[derive(Parser, Debug, Clone)]
#[command(name = "fleet")]
struct Args {
    /// Rounds; each runs every layout (in rotating order) and one TTFB comparison.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured seconds of each player-mix run.
    #[arg(long, default_value_t = 15)]
    duration: u64,
    /// Seconds of the same load before the measured run, on cold caches (its origin requests
    /// are counted, its req/s are not).
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// wrk threads (-t), spread over the three nodes: a multiple of 3.
    #[arg(long, default_value_t = 3)]
    threads: usize,
    /// wrk connections (-c), divided among the threads.
    #[arg(long, default_value_t = 63)]
    conns: usize,
    /// Cache size of every node, MiB.
    #[arg(long, default_value_t = 256)]
    cache_mib: u64,
    /// Copies of the demo rendition (32 objects, 0.54 MiB each) under /vod/title-NNN/: the
    /// hot set of the player mix.
    #[arg(long, default_value_t = 64)]
    titles: usize,
    /// Layouts of the player-mix runs, comma-separated: fleet (default secondary_ttl),
    /// fleet-ttl0 (secondary_ttl 0s), independent.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fleet,fleet-ttl0,independent"
    )]
    layouts: Vec<String>,
    /// Samples of each kind (local hit, peer hit) per round in the TTFB comparison (0: skip).
    #[arg(long, default_value_t = 2000)]
    ttfb_samples: usize,
    /// Seconds between the end of a run and the settled reading of memory (a forwarder's
    /// copies expire secondary_ttl + 1 s after they were stored; the cache gauges are updated
    /// every 5 s).
    #[arg(long, default_value_t = 10)]
    settle_s: u64,
    /// Pause between two runs, ms.
    #[arg(long, default_value_t = 1000)]
    pause_ms: u64,
    /// Before each run, wait up to this many seconds for other builds on the machine (cargo,
    /// rustc) to finish; every run reports how many it saw anyway.
    #[arg(long, default_value_t = 0)]
    wait_quiet_s: u64,
    /// The streamedge binary (default: target/release/streamedge next to this program, built
    /// first with `cargo build --release --bin streamedge`).
    #[arg(long, value_name = "PATH")]
    edge_bin: Option<PathBuf>,
    /// Do not build the streamedge binary; use it as it is.
    #[arg(long)]
    no_build: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Keep the temporary directory (configs, logs) and print its path.
    #[arg(long)]
    keep: bool,
}

const MIB: f64 = 1024.0 * 1024.0;

/// Warnings about the machine's limits a node logs at start (notes, not anomalies).
const MACHINE_LIMITS: &[&str] =
    &["server.max_connections is above what the open-file limit allows"];

/// The three nodes' configurations in the player-mix runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Config {
    Fleet,
    FleetTtl0,
    Independent,
}

impl Config {
    const ALL: [Config; 3] = [Config::Fleet, Config::FleetTtl0, Config::Independent];

    fn slug(self) -> &'static str {
        match self {
            Config::Fleet => "fleet",
            Config::FleetTtl0 => "fleet-ttl0",
            Config::Independent => "independent",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Config::Fleet => "fleet",
            Config::FleetTtl0 => "fleet, secondary_ttl 0s",
            Config::Independent => "independent",
        }
    }

    fn layout(self) -> Layout {
        match self {
            Config::Fleet => Layout::Fleet {
                secondary_ttl: None,
            },
            Config::FleetTtl0 => Layout::Fleet {
                secondary_ttl: Some(Duration::ZERO),
            },
            Config::Independent => Layout::Independent,
        }
    }
}

/// One node's memory and counters after a player-mix run.
#[derive(Debug, Clone, Default)]
struct NodeReading {
    /// VmHWM at the end of the run, KiB.
    peak_kib: u64,
    /// VmRSS right after the run, and after `--settle-s`, KiB.
    rss_kib: u64,
    rss_settled_kib: u64,
    /// `streamedge_cache_bytes` right after the run (the gauge is at most 5 s old) and settled.
    cache_bytes: f64,
    cache_bytes_settled: f64,
    cache_objects_settled: f64,
    /// Requests sent to peers (`streamedge_peer_requests_total`), fallbacks to the origin.
    peer_requests: f64,
    peer_fallbacks: f64,
}

/// One player-mix run of one layout.
struct MixRun {
    round: usize,
    config: Config,
    /// The measured wrk run.
    wrk: WrkResult,
    /// Origin requests from the nodes' start (cold caches) to the end, and in the measured run.
    origin_total: u64,
    origin_measured: u64,
    /// The most origin requests of one object.
    origin_max_per_object: u64,
    warmup_errors: u64,
    nodes: Vec<NodeReading>,
    quiet: Quiet,
}

/// What else ran on the machine during a run.
#[derive(Debug, Clone, Default)]
struct Quiet {
    /// The 1, 5 and 15 minute load averages at the start.
    load: String,
    /// The most compiler processes of other builds seen during the run.
    other_builds: usize,
    /// CPU cores the rest of the machine used during the run.
    other_cores: f64,
}

/// One TTFB comparison: every sample of a local hit and of a hit through a peer.
struct TtfbRun {
    round: usize,
    local: Timings,
    peer: Timings,
    /// Objects owned by each node.
    owned: [usize; 3],
    quiet: Quiet,
}

#[derive(Default)]
struct Timings {
    ttfb: Vec<Duration>,
    done: Vec<Duration>,
    errors: u64,
    /// Answers whose `Cache-Status` was not the expected one, with the first seen.
    unexpected: u64,
    example: Option<String>,
}

impl Timings {
    fn p(&self, p: f64) -> Option<f64> {
        (!self.ttfb.is_empty()).then(|| ms(percentile(&self.ttfb, p)))
    }

    fn done_p50(&self) -> Option<f64> {
        (!self.done.is_empty()).then(|| ms(percentile(&self.done, 0.5)))
    }
}

/// Everything the runs need.
struct Bench<'a> {
    args: &'a Args,
    bin: PathBuf,
    origin: &'a Origin,
    tmp: PathBuf,
    mix_paths: Vec<String>,
    mix_file: PathBuf,
    expect: HashMap<String, Expect>,
    /// The objects of the TTFB comparison (the first title).
    ttfb_paths: Vec<String>,
    anomalies: Vec<String>,
    notes: Vec<String>,
    builds: process::BuildWatch,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("fleet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_layouts(args: &Args) -> anyhow::Result<Vec<Config>> {
    let mut configs = Vec::new();
    for l in &args.layouts {
        let l = l.trim();
        match Config::ALL.iter().find(|c| c.slug() == l) {
            Some(&c) if !configs.contains(&c) => configs.push(c),
            Some(_) => {}
            None => bail!("unknown layout {l:?} (fleet, fleet-ttl0, independent)"),
        }
    }
    Ok(configs)
}

/// Runs the benchmark; `Ok(false)` when it ran but saw errors (see "anomalies").
fn run(args: Args) -> anyhow::Result<bool> {
    let configs = parse_layouts(&args)?;
    if args.rounds == 0 || args.duration == 0 || args.titles == 0 {
        bail!("--rounds, --duration and --titles must be at least 1");
    }
    if args.threads == 0 || !args.threads.is_multiple_of(3) || args.conns < args.threads {
        bail!("--threads must be a multiple of 3 (one third per node) and --conns >= --threads");
    }
    if configs.is_empty() && args.ttfb_samples == 0 {
        bail!("nothing to run: no --layouts and --ttfb-samples 0");
    }
    if !configs.is_empty() && which("wrk").is_none() {
        bail!("wrk is not installed (Debian package `wrk`)");
    }
    let machine = Machine::describe();
    let bin = edge_binary(args.edge_bin.as_deref(), args.no_build)?;
    let versions = vec![
        (
            "streamedge",
            format!("{} ({})", env!("CARGO_PKG_VERSION"), git_state()),
        ),
        ("wrk", tool_version("wrk", &["-v"])),
    ];

    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let tmp = TempDir {
        path: std::env::temp_dir().join(format!("streamedge-fleet-{}-{stamp}", std::process::id())),
        keep: args.keep,
    };
    std::fs::create_dir_all(&tmp.path)
        .with_context(|| format!("cannot create {}", tmp.path.display()))?;

    // The player mix: the demo rendition under /vod/title-NNN/, one copy per title.
    let media = setup::demo_media()?;
    let mut files = setup::Files::new();
    let mut mix_paths = Vec::new();
    let mut ttfb_paths = Vec::new();
    for t in 0..args.titles {
        let paths = setup::add_rendition(&format!("/vod/title-{t:03}"), &media, &mut files);
        if t == 0 {
            ttfb_paths = paths.clone();
        }
        mix_paths.extend(paths);
    }
    let hot_set: usize = files.values().map(|(b, _)| b.len()).sum();
    let expect = files
        .iter()
        .map(|(p, (b, _))| (p.clone(), expect_of(b)))
        .collect();
    let mix_file = tmp.path.join("mix-paths.txt");
    std::fs::write(&mix_file, mix_paths.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", mix_file.display()))?;

    let threads = machine.nproc.max(1);
    let origin = Origin::start_content(
        Content {
            files,
            routes: Vec::new(),
        },
        threads,
    )?;

    let load_before = load_average();
    let compilers = process::other_builds();
    println!("streamedge fleet: three nodes on 127.0.0.2-.4 as one fleet and as independent nodes");
    println!(
        "machine: {} cores ({}), {} RAM, kernel {}, {}",
        machine.nproc, machine.cpu, machine.memory, machine.kernel, machine.os
    );
    let v: Vec<String> = versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("versions: {}", v.join("; "));
    println!(
        "parameters: {} rounds; player mix: wrk -t{} -c{} (a third of the threads per node), {} s warm-up on cold caches + {} s measured; {} titles = {} objects, {:.1} MiB hot set; cache {} MiB per node; TTFB: {} samples of each kind per round; settle {} s",
        args.rounds,
        args.threads,
        args.conns,
        args.warmup,
        args.duration,
        args.titles,
        mix_paths.len(),
        hot_set as f64 / MIB,
        args.cache_mib,
        args.ttfb_samples,
        args.settle_s
    );
    println!(
        "layouts: {}",
        configs
            .iter()
            .map(|c| c.title())
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!("origin: http://{}", origin.addr);
    println!("load average before: {load_before}; other builds' compiler processes: {compilers}");
    if compilers > 0 {
        println!("WARNING: other builds are running: the numbers are skewed");
    }
    if cfg!(debug_assertions) {
        println!(
            "WARNING: debug build of the load generator; run `cargo run --release --bin fleet`"
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("fleet-clients")
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
        bin,
        origin: &origin,
        tmp: tmp.path.clone(),
        mix_paths,
        mix_file,
        expect,
        ttfb_paths,
        anomalies: Vec::new(),
        notes: Vec::new(),
        builds: process::BuildWatch::start(Duration::from_millis(500)),
    };
    let started = Instant::now();
    // Every node started in a run belongs to that run's future: dropping it (an error,
    // Ctrl-C) stops them.
    let outcome = rt.block_on(async {
        tokio::select! {
            r = bench.all(&configs) => r,
            _ = sigint.recv() => Err(anyhow!("interrupted (SIGINT)")),
            _ = sigterm.recv() => Err(anyhow!("terminated (SIGTERM)")),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    let (mixes, ttfbs) = outcome?;
    let load_after = load_average();
    let compilers_after = process::other_builds();

    let summary = Summary::of(&configs, &mixes, &ttfbs, bench.mix_paths.len());
    print_summary(&args, &mixes, &ttfbs, &summary);
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
    let clean = bench.anomalies.is_empty();
    if !clean {
        println!("\nanomalies:");
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
            [compilers, compilers_after],
            &mixes,
            &ttfbs,
            &summary,
            &bench.anomalies,
        );
        std::fs::write(path, json.render())
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nresults written to {}", path.display());
    }
    drop(bench);
    drop(origin);
    drop(tmp);
    Ok(clean)
}

impl Bench<'_> {
    async fn all(&mut self, configs: &[Config]) -> anyhow::Result<(Vec<MixRun>, Vec<TtfbRun>)> {
        let (mut mixes, mut ttfbs) = (Vec::new(), Vec::new());
        for round in 0..self.args.rounds {
            println!("\n--- round {} of {} ---", round + 1, self.args.rounds);
            let n = configs.len();
            for k in 0..n {
                let config = configs[(round + k) % n];
                mixes.push(self.mix(round, config).await?);
                tokio::time::sleep(Duration::from_millis(self.args.pause_ms)).await;
            }
            if self.args.ttfb_samples > 0 {
                ttfbs.push(self.ttfb(round).await?);
                tokio::time::sleep(Duration::from_millis(self.args.pause_ms)).await;
            }
        }
        Ok((mixes, ttfbs))
    }

    /// Waits (up to `--wait-quiet-s`) for other builds to finish, then starts watching for
    /// them and for other processes' CPU; see `quiet_since`.
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

    /// What else ran on the machine since `quiet`.
    fn quiet_since(&self, (load, cpu): (String, process::OtherCpu)) -> Quiet {
        Quiet {
            load,
            other_builds: self.builds.take(),
            other_cores: cpu.cores(),
        }
    }

    fn start(&self, round: usize, name: &str, layout: Layout) -> anyhow::Result<Nodes> {
        let dir = self.tmp.join(format!("round-{}-{name}", round + 1));
        Nodes::start(
            &self.bin,
            &dir,
            self.origin.addr,
            self.args.cache_mib,
            layout,
            &[],
        )
    }

    /// The player mix on the three nodes, one third of wrk's threads on each.
    async fn wrk(&self, nodes: &Nodes, secs: u64, label: &str) -> anyhow::Result<WrkResult> {
        let a = self.args;
        let hosts: Vec<String> = nodes.nodes.iter().map(|n| n.http().to_string()).collect();
        let cmd = vec![
            "wrk".into(),
            format!("-t{}", a.threads),
            format!("-c{}", a.conns),
            format!("-d{secs}s"),
            "--timeout".into(),
            "10s".into(),
            "-s".into(),
            format!("{WRK_DIR}/player-mix.lua"),
            format!("http://{}/", hosts[0]),
            "--".into(),
            self.mix_file.display().to_string(),
        ];
        let env = [
            ("HOSTS", hosts.join(",")),
            ("RESULT_LABEL", label.to_owned()),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = loadgen::run_tool(&[], cmd, &env, Duration::from_secs(secs + 60)).await?;
        loadgen::parse_wrk(&out)
    }

    fn origin_counts(&self) -> Vec<u64> {
        self.mix_paths
            .iter()
            .map(|p| self.origin.requests(p))
            .collect()
    }

    /// Reads every node's /metrics (empty text for a node that does not answer).
    async fn metrics(&self, nodes: &Nodes) -> Vec<String> {
        let mut out = Vec::new();
        for n in &nodes.nodes {
            out.push(admin::metrics(n.process.admin).await.unwrap_or_default());
        }
        out
    }

    async fn mix(&mut self, round: usize, config: Config) -> anyhow::Result<MixRun> {
        let a = self.args;
        let at = format!("round {} {}", round + 1, config.slug());
        let since = self.quiet().await;
        let mut nodes = self.start(round, config.slug(), config.layout())?;
        nodes.wait_ready(Duration::from_secs(30)).await?;
        let before = self.origin_counts();
        let total0 = self.origin.total_requests();
        let mut warmup_errors = 0;
        if a.warmup > 0 {
            let w = self
                .wrk(&nodes, a.warmup, &format!("{}-warmup", config.slug()))
                .await
                .with_context(|| format!("{at}: warm-up"))?;
            warmup_errors = w.errors;
        }
        let total1 = self.origin.total_requests();
        let wrk = self
            .wrk(&nodes, a.duration, config.slug())
            .await
            .with_context(|| at.clone())?;
        let total2 = self.origin.total_requests();
        let after = self.origin_counts();
        let quiet = self.quiet_since(since);

        let mut readings: Vec<NodeReading> = nodes
            .nodes
            .iter()
            .map(|n| {
                let m = process::memory(&n.pid().into_iter().collect::<Vec<_>>());
                NodeReading {
                    peak_kib: m.hwm,
                    rss_kib: m.rss,
                    ..NodeReading::default()
                }
            })
            .collect();
        for (r, text) in readings.iter_mut().zip(self.metrics(&nodes).await) {
            r.cache_bytes = metric_sum(&text, "streamedge_cache_bytes");
        }
        tokio::time::sleep(Duration::from_secs(a.settle_s)).await;
        for ((r, text), n) in readings
            .iter_mut()
            .zip(self.metrics(&nodes).await)
            .zip(&nodes.nodes)
        {
            let m = process::memory(&n.pid().into_iter().collect::<Vec<_>>());
            r.rss_settled_kib = m.rss;
            r.peak_kib = r.peak_kib.max(m.hwm);
            r.cache_bytes_settled = metric_sum(&text, "streamedge_cache_bytes");
            r.cache_objects_settled = metric_sum(&text, "streamedge_cache_objects");
            r.peer_requests = metric_sum(&text, "streamedge_peer_requests_total");
            r.peer_fallbacks = metric_sum(&text, "streamedge_peer_fallbacks_total");
        }
        self.check_nodes(&at, &mut nodes);
        nodes.stop();

        let run = MixRun {
            round,
            config,
            origin_total: total2 - total0,
            origin_measured: total2 - total1,
            origin_max_per_object: before
                .iter()
                .zip(&after)
                .map(|(b, a)| a - b)
                .max()
                .unwrap_or(0),
            warmup_errors,
            nodes: readings,
            wrk,
            quiet,
        };
        if run.wrk.errors > 0 || run.warmup_errors > 0 {
            self.anomalies.push(format!(
                "{at}: {} errors of {} requests in the measured run, {} in the warm-up",
                run.wrk.errors,
                run.wrk.requests + run.wrk.errors,
                run.warmup_errors
            ));
        }
        let fallbacks: f64 = run.nodes.iter().map(|n| n.peer_fallbacks).sum();
        if fallbacks > 0.0 {
            self.anomalies.push(format!(
                "{at}: {fallbacks} requests fell back from their owner to the origin"
            ));
        }
        let sum = |f: fn(&NodeReading) -> f64| run.nodes.iter().map(f).sum::<f64>();
        println!(
            "{:<7} {:<12} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>7.2} ms  errors {:<3} origin req {} ({:.2}/object, max {}, {} measured)  peak RSS {:.0} MiB  cache {:.1} → {:.1} MiB settled  peer req {:.0}  [load {}, other builds {}, other CPU {:.2} cores]",
            round + 1,
            config.slug(),
            run.wrk.rps,
            run.wrk.p50_ms,
            run.wrk.p99_ms,
            run.wrk.errors,
            run.origin_total,
            run.origin_total as f64 / self.mix_paths.len() as f64,
            run.origin_max_per_object,
            run.origin_measured,
            sum(|n| n.peak_kib as f64) / 1024.0,
            sum(|n| n.cache_bytes) / MIB,
            sum(|n| n.cache_bytes_settled) / MIB,
            sum(|n| n.peer_requests),
            run.quiet.load,
            run.quiet.other_builds,
            run.quiet.other_cores,
        );
        Ok(run)
    }

    /// Every node still running and silent at warn level: what they logged is an anomaly,
    /// except the machine's limits noted at start (a note, once).
    fn check_nodes(&mut self, at: &str, nodes: &mut Nodes) {
        for n in &mut nodes.nodes {
            if !n.process.running() {
                self.anomalies
                    .push(format!("{at}: node {} exited during the run", n.id));
            }
            let log = std::fs::read_to_string(n.process.log_path()).unwrap_or_default();
            let mut other = Vec::new();
            for line in log.lines().filter(|l| !l.trim().is_empty()) {
                if MACHINE_LIMITS.iter().any(|m| line.contains(m)) {
                    // Without its time stamp, the same line from every node is one note.
                    let text = line.split_once("WARN ").map_or(line, |(_, t)| t);
                    let note = format!("a node logged at start: {text}");
                    if !self.notes.contains(&note) {
                        self.notes.push(note);
                    }
                } else {
                    other.push(line);
                }
            }
            if !other.is_empty() {
                let from = other.len().saturating_sub(10);
                self.anomalies.push(format!(
                    "{at}: node {} logged (warn and above, tail):\n  {}",
                    n.id,
                    other[from..].join("\n  ")
                ));
            }
        }
    }

    /// The TTFB comparison on a fleet of its own with `secondary_ttl: 0s`, so that every
    /// request to a node that does not own the object is forwarded to its owner.
    async fn ttfb(&mut self, round: usize) -> anyhow::Result<TtfbRun> {
        let at = format!("round {} ttfb", round + 1);
        let since = self.quiet().await;
        let mut nodes = self.start(
            round,
            "ttfb",
            Layout::Fleet {
                secondary_ttl: Some(Duration::ZERO),
            },
        )?;
        nodes.wait_ready(Duration::from_secs(30)).await?;
        let mut conns: Vec<Option<TcpStream>> = vec![None, None, None];
        // The owner of every object: asked through node 0, a forwarded answer names the owner
        // first. The owner stores it (node 0 keeps no copy).
        let mut owners = Vec::new();
        for p in &self.ttfb_paths {
            let s = self
                .one(&nodes, &mut conns, 0, p)
                .await
                .map_err(|e| anyhow!("{at}: GET {p} through node 0: {e}"))?;
            let status = s.cache_status.unwrap_or_default();
            let first = status.split(';').next().unwrap_or_default().trim();
            let owner = if status.contains(',') {
                nodes.by_name(first)
            } else {
                (first == nodes.nodes[0].name).then_some(0)
            }
            .ok_or_else(|| anyhow!("{at}: GET {p}: no owner in Cache-Status {status:?}"))?;
            owners.push(owner);
        }
        let mut owned = [0usize; 3];
        for &o in &owners {
            owned[o] += 1;
        }
        let n = self.ttfb_paths.len();
        let samples = self.args.ttfb_samples;
        // Unmeasured first: connections between the nodes, the owners' second look.
        let warmup = (samples / 10).max(2 * n);
        let mut run = TtfbRun {
            round,
            local: Timings::default(),
            peer: Timings::default(),
            owned,
            quiet: Quiet::default(),
        };
        let mut scratch = (Timings::default(), Timings::default());
        for i in 0..warmup + samples {
            let k = i % n;
            let path = &self.ttfb_paths[k];
            let owner = owners[k];
            // Each non-owner in turn, and local first or peer first in turn.
            let via = (owner + 1 + (i / n) % 2) % 3;
            let local_first = (i + i / n).is_multiple_of(2);
            let (local, peer) = if i < warmup {
                (&mut scratch.0, &mut scratch.1)
            } else {
                (&mut run.local, &mut run.peer)
            };
            for is_local in [local_first, !local_first] {
                let (node, t) = if is_local {
                    (owner, &mut *local)
                } else {
                    (via, &mut *peer)
                };
                match self.one(&nodes, &mut conns, node, path).await {
                    Ok(s) => {
                        let status = s.cache_status.clone().unwrap_or_default();
                        let owner_hit = format!("{}; hit", nodes.nodes[owner].name);
                        let ok = if is_local {
                            status.starts_with(&owner_hit) && !status.contains(',')
                        } else {
                            let mut parts = status.split(',').map(str::trim);
                            parts.next().is_some_and(|p| p.starts_with(&owner_hit))
                                && parts.next().is_some_and(|p| {
                                    p.starts_with(&format!("{}; fwd=", nodes.nodes[via].name))
                                })
                        };
                        if !ok {
                            t.unexpected += 1;
                            t.example.get_or_insert(format!("GET {path}: {status}"));
                        }
                        t.ttfb.push(s.ttfb);
                        t.done.push(s.done);
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.example.get_or_insert(format!("GET {path}: {e}"));
                    }
                }
            }
        }
        run.quiet = self.quiet_since(since);
        self.check_nodes(&at, &mut nodes);
        nodes.stop();
        for (kind, t) in [("local", &mut run.local), ("peer", &mut run.peer)] {
            t.ttfb.sort();
            t.done.sort();
            if t.errors > 0 || t.unexpected > 0 {
                self.anomalies.push(format!(
                    "{at}: {kind} hits: {} errors, {} answers with another Cache-Status than expected (first: {})",
                    t.errors,
                    t.unexpected,
                    t.example.as_deref().unwrap_or("-")
                ));
            }
        }
        let f = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.3}"));
        println!(
            "{:<7} {:<12} local hit TTFB p50 {} p90 {} p99 {} ms; peer hit p50 {} p90 {} p99 {} ms; p50 +{} ms; objects owned {:?}  [load {}, other builds {}, other CPU {:.2} cores]",
            round + 1,
            "ttfb",
            f(run.local.p(0.5)),
            f(run.local.p(0.9)),
            f(run.local.p(0.99)),
            f(run.peer.p(0.5)),
            f(run.peer.p(0.9)),
            f(run.peer.p(0.99)),
            f(run.peer.p(0.5).zip(run.local.p(0.5)).map(|(p, l)| p - l)),
            run.owned,
            run.quiet.load,
            run.quiet.other_builds,
            run.quiet.other_cores
        );
        Ok(run)
    }

    /// One GET on the kept-alive connection to node `i` (opened first if needed), timed from
    /// the request's write; a connection that failed or was closed is dropped.
    async fn one(
        &self,
        nodes: &Nodes,
        conns: &mut [Option<TcpStream>],
        i: usize,
        path: &str,
    ) -> Result<Sample, String> {
        let addr = nodes.nodes[i].http();
        let expect = *self
            .expect
            .get(path)
            .ok_or_else(|| format!("no such object {path}"))?;
        let slot = &mut conns[i];
        let mut stream = match slot.take() {
            Some(s) => s,
            None => client::connect(addr)
                .await
                .map_err(|e| format!("connect to {addr}: {e}"))?,
        };
        let host = addr.to_string();
        let t0 = Instant::now();
        let sample = tokio::time::timeout(
            Duration::from_secs(10),
            client::get_kept_alive(&mut stream, &host, path, expect, t0),
        )
        .await
        .map_err(|_| "timed out after 10 s".to_owned())??;
        if !sample.close {
            *slot = Some(stream);
        }
        Ok(sample)
    }
}

/// Medians over the rounds.
struct Summary {
    /// Distinct objects of the player mix.
    objects: usize,
    mix: Vec<MixSummary>,
    local: TtfbSummary,
    peer: TtfbSummary,
    /// Median over the rounds of each round's peer p50 − local p50.
    delta_p50: Option<f64>,
}

struct MixSummary {
    config: Config,
    rounds: usize,
    rps: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    errors: u64,
    origin_total: Option<f64>,
    origin_measured: Option<f64>,
    origin_max: u64,
    /// Sums over the three nodes (medians of the sums), MiB.
    peak: Option<f64>,
    rss: Option<f64>,
    rss_settled: Option<f64>,
    cache: Option<f64>,
    cache_settled: Option<f64>,
    objects_settled: Option<f64>,
    peer_requests: Option<f64>,
    /// Per node (medians), MiB: peak RSS, RSS after, cache after, cache settled.
    nodes: Vec<[Option<f64>; 4]>,
}

#[derive(Default)]
struct TtfbSummary {
    samples: usize,
    p50: Option<f64>,
    p90: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
    done_p50: Option<f64>,
    errors: u64,
}

impl Summary {
    fn of(configs: &[Config], mixes: &[MixRun], ttfbs: &[TtfbRun], objects: usize) -> Summary {
        let mix = configs
            .iter()
            .map(|&config| {
                let runs: Vec<&MixRun> = mixes.iter().filter(|m| m.config == config).collect();
                let med = |f: &dyn Fn(&MixRun) -> f64| {
                    median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>())
                };
                let sum_mib = |f: fn(&NodeReading) -> f64| {
                    move |r: &MixRun| r.nodes.iter().map(f).sum::<f64>() / MIB
                };
                let nodes = (0..3)
                    .map(|i| {
                        let per = |f: fn(&NodeReading) -> f64| {
                            median(
                                &runs
                                    .iter()
                                    .filter_map(|r| r.nodes.get(i).map(f))
                                    .collect::<Vec<_>>(),
                            )
                            .map(|v| v / MIB)
                        };
                        [
                            per(|n| n.peak_kib as f64 * 1024.0),
                            per(|n| n.rss_kib as f64 * 1024.0),
                            per(|n| n.cache_bytes),
                            per(|n| n.cache_bytes_settled),
                        ]
                    })
                    .collect();
                MixSummary {
                    config,
                    rounds: runs.len(),
                    rps: med(&|r| r.wrk.rps),
                    p50: med(&|r| r.wrk.p50_ms),
                    p99: med(&|r| r.wrk.p99_ms),
                    errors: runs.iter().map(|r| r.wrk.errors + r.warmup_errors).sum(),
                    origin_total: med(&|r| r.origin_total as f64),
                    origin_measured: med(&|r| r.origin_measured as f64),
                    origin_max: runs
                        .iter()
                        .map(|r| r.origin_max_per_object)
                        .max()
                        .unwrap_or(0),
                    peak: med(&sum_mib(|n| n.peak_kib as f64 * 1024.0)),
                    rss: med(&sum_mib(|n| n.rss_kib as f64 * 1024.0)),
                    rss_settled: med(&sum_mib(|n| n.rss_settled_kib as f64 * 1024.0)),
                    cache: med(&sum_mib(|n| n.cache_bytes)),
                    cache_settled: med(&sum_mib(|n| n.cache_bytes_settled)),
                    objects_settled: med(&|r| {
                        r.nodes.iter().map(|n| n.cache_objects_settled).sum::<f64>()
                    }),
                    peer_requests: med(&|r| r.nodes.iter().map(|n| n.peer_requests).sum::<f64>()),
                    nodes,
                }
            })
            .collect();
        let ttfb = |pick: fn(&TtfbRun) -> &Timings| {
            let med = |f: &dyn Fn(&Timings) -> Option<f64>| {
                median(&ttfbs.iter().filter_map(|r| f(pick(r))).collect::<Vec<_>>())
            };
            TtfbSummary {
                samples: ttfbs.iter().map(|r| pick(r).ttfb.len()).sum(),
                p50: med(&|t| t.p(0.5)),
                p90: med(&|t| t.p(0.9)),
                p99: med(&|t| t.p(0.99)),
                max: med(&|t| t.p(1.0)),
                done_p50: med(&|t| t.done_p50()),
                errors: ttfbs.iter().map(|r| pick(r).errors).sum(),
            }
        };
        let deltas: Vec<f64> = ttfbs
            .iter()
            .filter_map(|r| Some(r.peer.p(0.5)? - r.local.p(0.5)?))
            .collect();
        Summary {
            objects,
            mix,
            local: ttfb(|r| &r.local),
            peer: ttfb(|r| &r.peer),
            delta_p50: median(&deltas),
        }
    }

    fn get(&self, c: Config) -> Option<&MixSummary> {
        self.mix.iter().find(|m| m.config == c)
    }

    /// The goals, with the measured value and whether it is met.
    fn goals(&self) -> Vec<(String, String, Option<bool>)> {
        let mut goals = Vec::new();
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let indep = self.get(Config::Independent);
        for c in [Config::Fleet, Config::FleetTtl0] {
            let (Some(f), Some(i)) = (self.get(c), indep) else {
                continue;
            };
            if let Some(x) = ratio(i.origin_total, f.origin_total) {
                goals.push((
                    format!("origin requests ÷3: independent / {}", c.title()),
                    format!(
                        "÷{x:.2} ({:.0} / {:.0})",
                        i.origin_total.unwrap_or(0.0),
                        f.origin_total.unwrap_or(0.0)
                    ),
                    Some(x >= 3.0 - 1e-9),
                ));
            }
            if let Some(x) = ratio(f.cache, i.cache) {
                goals.push((
                    format!(
                        "memory for the same hot set: cache bytes, {} / independent, end of run",
                        c.title()
                    ),
                    format!("{x:.2}"),
                    None,
                ));
            }
            if let Some(x) = ratio(f.cache_settled, i.cache_settled) {
                goals.push((
                    format!(
                        "memory for the same hot set: cache bytes, {} / independent, settled",
                        c.title()
                    ),
                    format!("{x:.2}"),
                    None,
                ));
            }
            if let Some(x) = ratio(f.peak, i.peak) {
                goals.push((
                    format!("peak RSS of the three nodes, {} / independent", c.title()),
                    format!("{x:.2}"),
                    None,
                ));
            }
            if let Some(x) = ratio(f.rps, i.rps) {
                goals.push((
                    format!("client req/s, {} / independent", c.title()),
                    format!("{x:.2}"),
                    None,
                ));
            }
        }
        if let Some(d) = self.delta_p50 {
            goals.push((
                "TTFB p50 of a hit through a peer − a local hit (goal ≤ +1 ms on loopback)".into(),
                format!("{d:+.3} ms"),
                Some(d <= 1.0),
            ));
        }
        goals
    }
}

fn fmt(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn print_summary(args: &Args, mixes: &[MixRun], ttfbs: &[TtfbRun], s: &Summary) {
    println!("\n===== summary: medians over {} rounds =====", args.rounds);
    if !s.mix.is_empty() {
        println!(
            "\nplayer mix over three nodes (wrk -t{} -c{} -d{}s -s player-mix.lua with HOSTS = the three nodes, {} paths; origin requests counted from cold caches: {} s warm-up + {} s measured)",
            args.threads, args.conns, args.duration, s.objects, args.warmup, args.duration
        );
        let header: Vec<&str> = s.mix.iter().map(|m| m.config.title()).collect();
        println!("| | {} |", header.join(" | "));
        println!("|---|{}", "---:|".repeat(header.len()));
        let row = |name: &str, f: &dyn Fn(&MixSummary) -> String| {
            let cells: Vec<String> = s.mix.iter().map(f).collect();
            println!("| {name} | {} |", cells.join(" | "));
        };
        let objects = s.objects as f64;
        row("origin requests, total", &|m| fmt(m.origin_total, 0));
        row("origin requests per object", &|m| {
            fmt(m.origin_total.map(|o| o / objects), 2)
        });
        row("most origin requests for one object", &|m| {
            m.origin_max.to_string()
        });
        row("origin requests in the measured run", &|m| {
            fmt(m.origin_measured, 0)
        });
        row("client req/s", &|m| fmt(m.rps, 0));
        row("latency p50 / p99 ms", &|m| {
            format!("{} / {}", fmt(m.p50, 2), fmt(m.p99, 2))
        });
        row("errors (all rounds)", &|m| m.errors.to_string());
        row("requests sent to peers", &|m| fmt(m.peer_requests, 0));
        row("peak RSS (VmHWM), sum of nodes, MiB", &|m| fmt(m.peak, 1));
        row("RSS after the run, sum, MiB", &|m| fmt(m.rss, 1));
        row(&format!("RSS {} s later, sum, MiB", args.settle_s), &|m| {
            fmt(m.rss_settled, 1)
        });
        row("streamedge_cache_bytes after the run, sum, MiB", &|m| {
            fmt(m.cache, 1)
        });
        row(
            &format!("streamedge_cache_bytes {} s later, sum, MiB", args.settle_s),
            &|m| fmt(m.cache_settled, 1),
        );
        row(
            &format!("streamedge_cache_objects {} s later, sum", args.settle_s),
            &|m| fmt(m.objects_settled, 0),
        );
        row("rounds", &|m| m.rounds.to_string());

        println!("\nper node (MiB; medians over the rounds)");
        println!(
            "| layout | node | peak RSS | RSS after the run | cache bytes after the run | cache bytes {} s later |",
            args.settle_s
        );
        println!("|---|---|---:|---:|---:|---:|");
        for m in &s.mix {
            for (i, n) in m.nodes.iter().enumerate() {
                println!(
                    "| {} | {} | {} | {} | {} | {} |",
                    m.config.title(),
                    streamedge_loadtest::fleet::IPS[i],
                    fmt(n[0], 1),
                    fmt(n[1], 1),
                    fmt(n[2], 1),
                    fmt(n[3], 1)
                );
            }
        }
        println!("\nruns");
        println!(
            "| round | layout | req/s | origin requests (measured) | peak RSS sum MiB | cache MiB after / settled | load at start | other builds | other CPU (cores) |"
        );
        println!("|---:|---|---:|---:|---:|---:|---|---:|---:|");
        for r in mixes {
            let sum = |f: fn(&NodeReading) -> f64| r.nodes.iter().map(f).sum::<f64>();
            println!(
                "| {} | {} | {:.0} | {} ({}) | {:.1} | {:.1} / {:.1} | {} | {} | {:.2} |",
                r.round + 1,
                r.config.title(),
                r.wrk.rps,
                r.origin_total,
                r.origin_measured,
                sum(|n| n.peak_kib as f64) / 1024.0,
                sum(|n| n.cache_bytes) / MIB,
                sum(|n| n.cache_bytes_settled) / MIB,
                r.quiet.load,
                r.quiet.other_builds,
                r.quiet.other_cores,
            );
        }
    }
    if !ttfbs.is_empty() {
        println!(
            "\nTTFB of a hit, one kept-alive connection per node, requests one at a time, local and peer interleaved (the objects of the first title; fleet with secondary_ttl 0s: a request to a non-owner is always forwarded)"
        );
        println!(
            "| hit | samples | TTFB p50 ms | p90 ms | p99 ms | max ms | last byte p50 ms | errors |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for (name, t) in [
            ("local (asked of the owner)", &s.local),
            ("through a peer (asked of a non-owner)", &s.peer),
        ] {
            println!(
                "| {name} | {} | {} | {} | {} | {} | {} | {} |",
                t.samples,
                fmt(t.p50, 3),
                fmt(t.p90, 3),
                fmt(t.p99, 3),
                fmt(t.max, 3),
                fmt(t.done_p50, 3),
                t.errors
            );
        }
        let per_round: Vec<String> = ttfbs
            .iter()
            .filter_map(|r| Some(format!("{:+.3}", r.peer.p(0.5)? - r.local.p(0.5)?)))
            .collect();
        println!(
            "p50 difference per round: {} ms; objects owned per node: {}; other builds during each: {}; other CPU during each: {} cores",
            per_round.join(", "),
            ttfbs
                .iter()
                .map(|r| format!("{:?}", r.owned))
                .collect::<Vec<_>>()
                .join(", "),
            ttfbs
                .iter()
                .map(|r| r.quiet.other_builds.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            ttfbs
                .iter()
                .map(|r| format!("{:.2}", r.quiet.other_cores))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let quiet: Vec<&Quiet> = mixes
        .iter()
        .map(|r| &r.quiet)
        .chain(ttfbs.iter().map(|r| &r.quiet))
        .collect();
    let builds = quiet.iter().filter(|q| q.other_builds > 0).count();
    let cores: Vec<f64> = quiet.iter().map(|q| q.other_cores).collect();
    println!(
        "\nruns during which other builds ran on the machine: {builds} of {}; CPU other processes used during a run: median {} cores, most {} cores",
        quiet.len(),
        fmt(median(&cores), 2),
        fmt(cores.iter().copied().reduce(f64::max), 2)
    );
    let goals = s.goals();
    if !goals.is_empty() {
        println!("\ngoals");
        println!("| goal | measured | met |");
        println!("|---|---:|---|");
        for (goal, measured, met) in goals {
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
    other_builds: [usize; 2],
    mixes: &[MixRun],
    ttfbs: &[TtfbRun],
    s: &Summary,
    anomalies: &[String],
) -> Json {
    let timings = |t: &Timings| {
        Json::Obj(vec![
            ("samples", Json::Int(t.ttfb.len() as u64)),
            ("ttfb_p50_ms", Json::opt_num(t.p(0.5))),
            ("ttfb_p90_ms", Json::opt_num(t.p(0.9))),
            ("ttfb_p99_ms", Json::opt_num(t.p(0.99))),
            ("ttfb_max_ms", Json::opt_num(t.p(1.0))),
            ("last_byte_p50_ms", Json::opt_num(t.done_p50())),
            ("errors", Json::Int(t.errors)),
            ("unexpected_cache_status", Json::Int(t.unexpected)),
        ])
    };
    let ttfb_summary = |t: &TtfbSummary| {
        Json::Obj(vec![
            ("samples", Json::Int(t.samples as u64)),
            ("ttfb_p50_ms", Json::opt_num(t.p50)),
            ("ttfb_p90_ms", Json::opt_num(t.p90)),
            ("ttfb_p99_ms", Json::opt_num(t.p99)),
            ("ttfb_max_ms", Json::opt_num(t.max)),
            ("last_byte_p50_ms", Json::opt_num(t.done_p50)),
            ("errors", Json::Int(t.errors)),
        ])
    };
    Json::Obj(vec![
        (
            "params",
            Json::Obj(vec![
                ("rounds", Json::Int(args.rounds as u64)),
                ("duration_s", Json::Int(args.duration)),
                ("warmup_s", Json::Int(args.warmup)),
                ("threads", Json::Int(args.threads as u64)),
                ("conns", Json::Int(args.conns as u64)),
                ("cache_mib", Json::Int(args.cache_mib)),
                ("titles", Json::Int(args.titles as u64)),
                ("objects", Json::Int(s.objects as u64)),
                ("ttfb_samples", Json::Int(args.ttfb_samples as u64)),
                ("settle_s", Json::Int(args.settle_s)),
            ]),
        ),
        ("machine", machine.to_json(load)),
        (
            "other_builds_before_after",
            Json::Arr(other_builds.iter().map(|&n| Json::Int(n as u64)).collect()),
        ),
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
            "mix_runs",
            Json::Arr(
                mixes
                    .iter()
                    .map(|r| {
                        Json::Obj(vec![
                            ("round", Json::Int(r.round as u64 + 1)),
                            ("layout", Json::str(r.config.slug())),
                            ("rps", Json::Num(r.wrk.rps)),
                            ("p50_ms", Json::Num(r.wrk.p50_ms)),
                            ("p99_ms", Json::Num(r.wrk.p99_ms)),
                            ("requests", Json::Int(r.wrk.requests)),
                            ("errors", Json::Int(r.wrk.errors)),
                            ("warmup_errors", Json::Int(r.warmup_errors)),
                            ("load_average_at_start", Json::str(r.quiet.load.clone())),
                            ("other_builds", Json::Int(r.quiet.other_builds as u64)),
                            ("other_cpu_cores", Json::Num(r.quiet.other_cores)),
                            ("origin_requests", Json::Int(r.origin_total)),
                            ("origin_requests_measured", Json::Int(r.origin_measured)),
                            ("origin_max_per_object", Json::Int(r.origin_max_per_object)),
                            (
                                "nodes",
                                Json::Arr(
                                    r.nodes
                                        .iter()
                                        .map(|n| {
                                            Json::Obj(vec![
                                                ("peak_rss_kib", Json::Int(n.peak_kib)),
                                                ("rss_kib", Json::Int(n.rss_kib)),
                                                ("rss_settled_kib", Json::Int(n.rss_settled_kib)),
                                                ("cache_bytes", Json::Num(n.cache_bytes)),
                                                (
                                                    "cache_bytes_settled",
                                                    Json::Num(n.cache_bytes_settled),
                                                ),
                                                (
                                                    "cache_objects_settled",
                                                    Json::Num(n.cache_objects_settled),
                                                ),
                                                ("peer_requests", Json::Num(n.peer_requests)),
                                                ("peer_fallbacks", Json::Num(n.peer_fallbacks)),
                                            ])
                                        })
                                        .collect(),
                                ),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "ttfb_runs",
            Json::Arr(
                ttfbs
                    .iter()
                    .map(|r| {
                        Json::Obj(vec![
                            ("round", Json::Int(r.round as u64 + 1)),
                            ("load_average_at_start", Json::str(r.quiet.load.clone())),
                            ("other_builds", Json::Int(r.quiet.other_builds as u64)),
                            ("other_cpu_cores", Json::Num(r.quiet.other_cores)),
                            ("local", timings(&r.local)),
                            ("peer", timings(&r.peer)),
                            (
                                "owned",
                                Json::Arr(r.owned.iter().map(|&o| Json::Int(o as u64)).collect()),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "summary",
            Json::Obj(vec![
                (
                    "mix",
                    Json::Arr(
                        s.mix
                            .iter()
                            .map(|m| {
                                Json::Obj(vec![
                                    ("layout", Json::str(m.config.slug())),
                                    ("rps", Json::opt_num(m.rps)),
                                    ("p50_ms", Json::opt_num(m.p50)),
                                    ("p99_ms", Json::opt_num(m.p99)),
                                    ("errors", Json::Int(m.errors)),
                                    ("origin_requests", Json::opt_num(m.origin_total)),
                                    ("origin_requests_measured", Json::opt_num(m.origin_measured)),
                                    ("peak_rss_mib", Json::opt_num(m.peak)),
                                    ("rss_mib", Json::opt_num(m.rss)),
                                    ("rss_settled_mib", Json::opt_num(m.rss_settled)),
                                    ("cache_mib", Json::opt_num(m.cache)),
                                    ("cache_settled_mib", Json::opt_num(m.cache_settled)),
                                    ("peer_requests", Json::opt_num(m.peer_requests)),
                                ])
                            })
                            .collect(),
                    ),
                ),
                ("ttfb_local", ttfb_summary(&s.local)),
                ("ttfb_peer", ttfb_summary(&s.peer)),
                ("ttfb_p50_delta_ms", Json::opt_num(s.delta_p50)),
                (
                    "goals",
                    Json::Arr(
                        s.goals()
                            .into_iter()
                            .map(|(g, m, met)| {
                                Json::Obj(vec![
                                    ("goal", Json::str(g)),
                                    ("measured", Json::str(m)),
                                    ("met", met.map_or(Json::Null, Json::Bool)),
                                ])
                            })
                            .collect(),
                    ),
                ),
            ]),
        ),
        (
            "anomalies",
            Json::Arr(anomalies.iter().map(|a| Json::str(a.clone())).collect()),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_parse() {
        let mut args = Args::parse_from(["fleet"]);
        assert_eq!(parse_layouts(&args).unwrap(), Config::ALL.to_vec());
        args.layouts = vec!["independent".into(), "fleet".into(), "fleet".into()];
        assert_eq!(
            parse_layouts(&args).unwrap(),
            vec![Config::Independent, Config::Fleet]
        );
        args.layouts = vec!["shield".into()];
        assert!(parse_layouts(&args).is_err());
    }
}
