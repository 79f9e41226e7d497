//! The "herd" benchmark: C clients ask for the same cold object at the same moment, straight
//! from the origin, through streamedge and through nginx (`proxy_cache_lock on`), and the
//! origin requests and times to first byte are printed side by side. See loadtest/README.md.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use streamedge_loadtest::{client, crowd, edge, nginx, origin, report};

use client::{Checksum, Expect};
use crowd::{herd, make_object};
use report::{Json, Machine, load_average, median, ms, percentile};

/// Side by side: one cold object, C concurrent clients, through the origin, streamedge and nginx.
#[derive(Parser, Debug, Clone)]
#[command(name = "herd")]
struct Args {
    /// Concurrent clients per herd, each on its own HTTP/1.1 connection.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Rounds; every round asks each target for a fresh (cold) URL, targets in rotating order.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Object size in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    size: usize,
    /// Origin delay before the response head, in milliseconds.
    #[arg(long, default_value_t = 300)]
    latency_ms: u64,
    /// Time over which the origin trickles the body, in milliseconds (0: full speed).
    #[arg(long, default_value_t = 1000)]
    body_ms: u64,
    /// Leave nginx out.
    #[arg(long)]
    no_nginx: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Bound on each client (connect, then request and whole body), in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Pause between two herds, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pause_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Direct,
    Edge,
    Nginx,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct origin",
            Target::Edge => "streamedge",
            Target::Nginx => "nginx",
        }
    }

    /// The URL path segment.
    fn slug(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Edge => "edge",
            Target::Nginx => "nginx",
        }
    }
}

/// One herd: one target, one cold URL.
struct Herd {
    round: usize,
    target: Target,
    path: String,
    origin_requests: u64,
    /// Clients whose connection was open when the herd was released.
    connected: usize,
    ttfb: Vec<Duration>,
    done: Vec<Duration>,
    cache_status: BTreeMap<String, usize>,
    errors: BTreeMap<String, usize>,
}

impl Herd {
    fn ok(&self) -> usize {
        self.ttfb.len()
    }
    fn failed(&self) -> usize {
        self.errors.values().sum()
    }
    fn ttfb_p(&self, p: f64) -> Option<Duration> {
        (!self.ttfb.is_empty()).then(|| percentile(&self.ttfb, p))
    }
    /// Until the last client had its whole body.
    fn all_done(&self) -> Option<Duration> {
        self.done.last().copied()
    }
}

/// Medians over the rounds of one target.
struct Summary {
    target: Target,
    origin_requests: Vec<u64>,
    ttfb_p50: Option<f64>,
    ttfb_p90: Option<f64>,
    ttfb_max: Option<f64>,
    all_done_p50: Option<f64>,
    ok: usize,
    failed: usize,
}

impl Summary {
    fn of(target: Target, herds: &[Herd]) -> Summary {
        let mine: Vec<&Herd> = herds.iter().filter(|h| h.target == target).collect();
        let med = |f: &dyn Fn(&Herd) -> Option<Duration>| {
            median(&mine.iter().filter_map(|h| f(h).map(ms)).collect::<Vec<_>>())
        };
        Summary {
            target,
            origin_requests: mine.iter().map(|h| h.origin_requests).collect(),
            ttfb_p50: med(&|h| h.ttfb_p(0.5)),
            ttfb_p90: med(&|h| h.ttfb_p(0.9)),
            ttfb_max: med(&|h| h.ttfb_p(1.0)),
            all_done_p50: med(&|h| h.all_done()),
            ok: mine.iter().map(|h| h.ok()).sum(),
            failed: mine.iter().map(|h| h.failed()).sum(),
        }
    }

    fn origin_requests_text(&self) -> String {
        let min = self.origin_requests.iter().min().copied().unwrap_or(0);
        let max = self.origin_requests.iter().max().copied().unwrap_or(0);
        if min == max {
            min.to_string()
        } else {
            let m: Vec<f64> = self.origin_requests.iter().map(|&n| n as f64).collect();
            format!("{} ({min}-{max})", median(&m).unwrap_or(0.0))
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("herd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the benchmark; `Ok(false)` when it ran but some client failed.
fn run(args: Args) -> anyhow::Result<bool> {
    if args.clients == 0 || args.rounds == 0 || args.size == 0 {
        bail!("--clients, --rounds and --size must be at least 1");
    }
    check_fd_limit(args.clients)?;
    // The edge's own warnings (origin errors, drain timeouts) are worth seeing; the rest is noise.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .try_init();

    let machine = Machine::describe();
    let threads = machine.nproc.max(1);
    let object = make_object(args.size);
    let expect = Expect {
        len: object.len() as u64,
        checksum: Checksum::of(&object),
    };

    // The clients' runtime, and SIGINT / SIGTERM caught from here on (instead of ending the
    // process), so that a nginx started below is always stopped.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("herd-clients")
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

    // Declared in this order so that they stop in reverse: nginx, edge, then the origin.
    let origin = origin::Origin::start(
        object,
        origin::Behaviour {
            latency: Duration::from_millis(args.latency_ms),
            body_time: Duration::from_millis(args.body_ms),
        },
        threads,
    )?;
    let edge = edge::Edge::start(&edge::config_yaml(origin.addr), threads)?;
    let mut nginx = if args.no_nginx {
        eprintln!("nginx: left out (--no-nginx)");
        None
    } else {
        match nginx::find() {
            None => {
                eprintln!(
                    "nginx: not installed (no /usr/sbin/nginx, none on PATH); skipping it. \
                     Install the Debian package `nginx` to compare."
                );
                None
            }
            Some(bin) => Some(
                nginx::Nginx::start(&bin, origin.addr, args.clients)
                    .context("nginx did not start (--no-nginx leaves it out)")?,
            ),
        }
    };

    let load_before = load_average();
    let mut targets = vec![(Target::Direct, origin.addr), (Target::Edge, edge.addr)];
    if let Some(n) = &nginx {
        targets.push((Target::Nginx, n.addr));
    }
    let nginx_version = nginx.as_ref().map(|n| n.version.clone());
    print_header(&args, &machine, &targets, nginx_version.as_deref());
    println!("load average before: {load_before}\n");

    let herds = rt.block_on(async {
        tokio::select! {
            r = bench(&args, &targets, &origin, expect) => r,
            _ = sigint.recv() => Err(anyhow!("interrupted (SIGINT)")),
            _ = sigterm.recv() => Err(anyhow!("terminated (SIGTERM)")),
        }
    });
    // Stop the clients before the servers they talk to.
    rt.shutdown_timeout(Duration::from_secs(2));
    let herds = herds?;
    let load_after = load_average();

    let summaries: Vec<Summary> = targets
        .iter()
        .map(|&(t, _)| Summary::of(t, &herds))
        .collect();
    let ratio = ttfb_ratio(&summaries, Target::Edge);
    print_summary(&args, &summaries, ratio);
    println!("load average after: {load_after}");
    let clean = report_anomalies(&args, &herds);
    if let Some(n) = nginx.as_mut() {
        let log = n.error_log_tail();
        if !log.is_empty() {
            println!("\nnginx error.log (tail):\n{log}");
        }
        n.stop();
    }

    if let Some(path) = &args.json {
        let json = to_json(
            &args,
            &machine,
            nginx_version.as_deref(),
            [load_before.as_str(), load_after.as_str()],
            &herds,
            &summaries,
            ratio,
        );
        std::fs::write(path, json.render())
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nresults written to {}", path.display());
    }
    drop(nginx);
    drop(edge);
    drop(origin);
    Ok(clean)
}

/// Every round, every target (rotating order), one herd on a fresh URL.
async fn bench(
    args: &Args,
    targets: &[(Target, SocketAddr)],
    origin: &origin::Origin,
    expect: Expect,
) -> anyhow::Result<Vec<Herd>> {
    let timeout = Duration::from_millis(args.timeout_ms);
    // One request per target first, so that no herd pays for first connections or page faults.
    for &(target, addr) in targets {
        let path = format!("/herd/warmup/{}/obj.bin", target.slug());
        let outcome = herd(addr, &path, 1, expect, timeout).await;
        if let Some(Err(e)) = outcome.results.first() {
            bail!(
                "warm-up request to {} ({addr}{path}) failed: {e}",
                target.name()
            );
        }
    }
    println!(
        "{:<7} {:<14} {:>7} {:>9} {:>10} {:>10} {:>10} {:>10}  cache status",
        "round", "target", "origin", "ok", "TTFB p50", "TTFB p90", "TTFB max", "all done"
    );
    let mut herds = Vec::new();
    for round in 0..args.rounds {
        for k in 0..targets.len() {
            let (target, addr) = targets[(round + k) % targets.len()];
            let path = format!("/herd/{}/{}/obj.bin", target.slug(), round + 1);
            let outcome = herd(addr, &path, args.clients, expect, timeout).await;
            let mut h = Herd {
                round,
                target,
                origin_requests: origin.requests(&path),
                path,
                connected: outcome.connected,
                ttfb: Vec::new(),
                done: Vec::new(),
                cache_status: BTreeMap::new(),
                errors: BTreeMap::new(),
            };
            for r in outcome.results {
                match r {
                    Ok(s) => {
                        h.ttfb.push(s.ttfb);
                        h.done.push(s.done);
                        let status = s.cache_status.unwrap_or_else(|| "-".into());
                        *h.cache_status.entry(status).or_insert(0) += 1;
                    }
                    Err(e) => *h.errors.entry(e).or_insert(0) += 1,
                }
            }
            h.ttfb.sort();
            h.done.sort();
            print_herd(&h, args.clients);
            herds.push(h);
            tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        }
    }
    Ok(herds)
}

/// Every client holds a socket here, and the in-process edge and origin hold its other end.
fn check_fd_limit(clients: usize) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<usize>().ok());
    let needed = clients * 2 + 256;
    match soft {
        Some(soft) if soft < needed => bail!(
            "--clients {clients} needs about {needed} open files, the limit is {soft}; \
             raise it (ulimit -n {needed}) or use fewer clients"
        ),
        _ => Ok(()),
    }
}

fn fmt_ms(d: Option<f64>) -> String {
    d.map_or_else(|| "-".into(), |v| format!("{v:.1} ms"))
}

fn print_header(
    args: &Args,
    machine: &Machine,
    targets: &[(Target, SocketAddr)],
    nginx_version: Option<&str>,
) {
    println!(
        "herd benchmark: {} concurrent clients, one cold object per herd",
        args.clients
    );
    println!(
        "machine: {} cores, {}, {} RAM, kernel {}, {}",
        machine.nproc, machine.cpu, machine.memory, machine.kernel, machine.os
    );
    println!(
        "object: {} bytes; origin: head after {} ms, body over {} ms; {} rounds; client timeout {} ms",
        args.size, args.latency_ms, args.body_ms, args.rounds, args.timeout_ms
    );
    for (t, addr) in targets {
        let extra = match t {
            Target::Nginx => format!(" ({})", nginx_version.unwrap_or("nginx")),
            Target::Edge => format!(" (streamedge {})", env!("CARGO_PKG_VERSION")),
            Target::Direct => String::new(),
        };
        println!("  {:<14} http://{addr}{extra}", t.name());
    }
    if cfg!(debug_assertions) {
        println!(
            "WARNING: debug build; run with `cargo run --release --bin herd` for real numbers"
        );
    }
}

fn print_herd(h: &Herd, clients: usize) {
    let status: Vec<String> = h
        .cache_status
        .iter()
        .map(|(k, v)| format!("{v}x {}", short_status(k)))
        .collect();
    println!(
        "{:<7} {:<14} {:>7} {:>9} {:>10} {:>10} {:>10} {:>10}  {}",
        h.round + 1,
        h.target.name(),
        h.origin_requests,
        format!("{}/{clients}", h.ok()),
        fmt_ms(h.ttfb_p(0.5).map(ms)),
        fmt_ms(h.ttfb_p(0.9).map(ms)),
        fmt_ms(h.ttfb_p(1.0).map(ms)),
        fmt_ms(h.all_done().map(ms)),
        status.join(", ")
    );
}

/// `Cache-Status` without the cache name and the parameters that are the same for every
/// response of a herd: `streamedge; fwd=uri-miss; fwd-status=200; stored; collapsed; ttl=3600`
/// becomes `fwd=uri-miss; stored; collapsed`.
fn short_status(s: &str) -> String {
    let parts: Vec<&str> = s
        .split(';')
        .map(str::trim)
        .filter(|p| *p != "streamedge" && !p.starts_with("ttl=") && !p.starts_with("fwd-status="))
        .collect();
    parts.join("; ")
}

/// A target's TTFB p50 over the direct origin's (medians over the rounds).
fn ttfb_ratio(summaries: &[Summary], target: Target) -> Option<f64> {
    let p50 = |t: Target| summaries.iter().find(|s| s.target == t)?.ttfb_p50;
    let (t, d) = (p50(target)?, p50(Target::Direct)?);
    (d > 0.0).then_some(t / d)
}

fn print_summary(args: &Args, summaries: &[Summary], ratio: Option<f64>) {
    println!(
        "\nsummary: medians over {} rounds of {} clients",
        args.rounds, args.clients
    );
    println!(
        "{:<14} {:>16} {:>10} {:>10} {:>10} {:>13} {:>11} {:>12}",
        "target",
        "origin req/round",
        "TTFB p50",
        "TTFB p90",
        "TTFB max",
        "all-done p50",
        "clients ok",
        "p50 / direct"
    );
    for s in summaries {
        let r = ttfb_ratio(summaries, s.target).map_or_else(|| "-".into(), |r| format!("{r:.2}"));
        println!(
            "{:<14} {:>16} {:>10} {:>10} {:>10} {:>13} {:>11} {:>12}",
            s.target.name(),
            s.origin_requests_text(),
            fmt_ms(s.ttfb_p50),
            fmt_ms(s.ttfb_p90),
            fmt_ms(s.ttfb_max),
            fmt_ms(s.all_done_p50),
            format!("{}/{}", s.ok, s.ok + s.failed),
            r
        );
    }
    match ratio {
        Some(r) => println!(
            "\nstreamedge TTFB p50 / direct origin TTFB p50 = {r:.3} (goal <= 1.10: {})",
            if r <= 1.10 { "met" } else { "NOT met" }
        ),
        None => println!("\nstreamedge TTFB p50 / direct origin TTFB p50: no data"),
    }
}

/// Prints what a reader should not overlook; false if any client failed.
fn report_anomalies(args: &Args, herds: &[Herd]) -> bool {
    let mut notes = Vec::new();
    for h in herds {
        let at = format!("round {} {} ({})", h.round + 1, h.target.name(), h.path);
        let expected = match h.target {
            Target::Direct => args.clients as u64,
            Target::Edge | Target::Nginx => 1,
        };
        if h.origin_requests != expected {
            notes.push(format!(
                "{at}: {} origin requests, expected {expected}",
                h.origin_requests
            ));
        }
        if h.connected < args.clients {
            notes.push(format!(
                "{at}: only {} of {} connections open at release",
                h.connected, args.clients
            ));
        }
        for (e, n) in &h.errors {
            notes.push(format!("{at}: {n} client(s) failed: {e}"));
        }
    }
    if !notes.is_empty() {
        println!("\nanomalies:");
        for n in &notes {
            println!("  {n}");
        }
    }
    herds.iter().all(|h| h.errors.is_empty())
}

fn to_json(
    args: &Args,
    machine: &Machine,
    nginx_version: Option<&str>,
    load: [&str; 2],
    herds: &[Herd],
    summaries: &[Summary],
    ratio: Option<f64>,
) -> Json {
    let targets = summaries
        .iter()
        .map(|s| {
            let rounds = herds
                .iter()
                .filter(|h| h.target == s.target)
                .map(|h| {
                    Json::Obj(vec![
                        ("round", Json::Int(h.round as u64 + 1)),
                        ("path", Json::str(h.path.clone())),
                        ("origin_requests", Json::Int(h.origin_requests)),
                        ("connected", Json::Int(h.connected as u64)),
                        ("ok", Json::Int(h.ok() as u64)),
                        ("failed", Json::Int(h.failed() as u64)),
                        ("ttfb_p50_ms", Json::opt_ms(h.ttfb_p(0.5))),
                        ("ttfb_p90_ms", Json::opt_ms(h.ttfb_p(0.9))),
                        ("ttfb_max_ms", Json::opt_ms(h.ttfb_p(1.0))),
                        ("all_done_ms", Json::opt_ms(h.all_done())),
                        ("cache_status", Json::tally(&h.cache_status)),
                        ("errors", Json::tally(&h.errors)),
                    ])
                })
                .collect();
            Json::Obj(vec![
                ("target", Json::str(s.target.slug())),
                (
                    "origin_requests_per_round",
                    Json::Arr(s.origin_requests.iter().map(|&n| Json::Int(n)).collect()),
                ),
                ("ttfb_p50_ms", Json::opt_num(s.ttfb_p50)),
                ("ttfb_p90_ms", Json::opt_num(s.ttfb_p90)),
                ("ttfb_max_ms", Json::opt_num(s.ttfb_max)),
                ("all_done_p50_ms", Json::opt_num(s.all_done_p50)),
                (
                    "ttfb_p50_vs_direct",
                    Json::opt_num(ttfb_ratio(summaries, s.target)),
                ),
                ("clients_ok", Json::Int(s.ok as u64)),
                ("clients_failed", Json::Int(s.failed as u64)),
                ("rounds", Json::Arr(rounds)),
            ])
        })
        .collect();
    Json::Obj(vec![
        ("benchmark", Json::str("herd")),
        ("machine", machine.to_json(load)),
        (
            "versions",
            Json::Obj(vec![
                ("streamedge", Json::str(env!("CARGO_PKG_VERSION"))),
                ("nginx", nginx_version.map_or(Json::Null, Json::str)),
                ("release_build", Json::Bool(!cfg!(debug_assertions))),
            ]),
        ),
        (
            "params",
            Json::Obj(vec![
                ("clients", Json::Int(args.clients as u64)),
                ("rounds", Json::Int(args.rounds as u64)),
                ("size", Json::Int(args.size as u64)),
                ("latency_ms", Json::Int(args.latency_ms)),
                ("body_ms", Json::Int(args.body_ms)),
                ("timeout_ms", Json::Int(args.timeout_ms)),
                ("pause_ms", Json::Int(args.pause_ms)),
            ]),
        ),
        ("targets", Json::Arr(targets)),
        ("edge_ttfb_p50_vs_direct", Json::opt_num(ratio)),
        (
            "goal_met",
            ratio.map_or(Json::Null, |r| Json::Bool(r <= 1.10)),
        ),
    ])
}
