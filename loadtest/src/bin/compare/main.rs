//! The side-by-side comparison: streamedge, nginx (`proxy_cache`) and Varnish in front of one
//! origin on loopback, and the bare hyper + rustls server (`src/bin/bare.rs`) as the floor of
//! a hit, measured in interleaved rounds with wrk, h2load and the herd clients, with each
//! target's peak memory. One command; see loadtest/README.md, "The comparison".
//!
//! # Layout
//!
//! - `args`: the command line
//! - `model`: targets, scenarios, runs, herds, endpoints, results
//! - `setup`: the binary, versions, temporary directory, certificate, the origin's content
//! - `caches`: streamedge, nginx and Varnish started in front of the origin, and the bare
//!   server; their logs
//! - `bench`: the rounds (warm, measure, herd, many connections, fill)
//! - `conns`: the many-connections clients (HTTP/1.1, TLS + HTTP/2) and one run of them
//! - `loadgen`: wrk and h2load command lines and their output
//! - `summary`: medians and goals
//! - `print`, `json`: the report, printed and as JSON

mod args;
mod bench;
mod caches;
mod conns;
mod json;
mod loadgen;
mod model;
mod print;
mod setup;
mod summary;

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use streamedge_loadtest::report::{Machine, load_average};
use streamedge_loadtest::setup::{
    TempDir, edge_binary, expect_of, git_state, release_binary, tool_version, which,
};
use streamedge_loadtest::{origin, process};
use tokio::time::Instant;

use crate::args::{Args, parse_selection};
use crate::bench::Bench;
use crate::caches::{Caches, Setup};
use crate::json::to_json;
use crate::model::{Scenario, Target};
use crate::print::{print_conns_header, print_header, print_summary};
use crate::setup::{build_content, write_certificate};
use crate::summary::Summary;

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

/// Runs the comparison; `Ok(false)` when it ran but saw errors (see "anomalies").
fn run(args: Args) -> anyhow::Result<bool> {
    let (scenarios, targets) = parse_selection(&args)?;
    if args.rounds == 0 || args.duration == 0 || args.threads == 0 || args.conns < args.threads {
        bail!("--rounds, --duration and --threads must be at least 1, and --conns >= --threads");
    }
    if args.h2_conns < args.threads {
        bail!("--h2-conns must be >= --threads (h2load needs a connection per thread)");
    }
    let hold = if scenarios.iter().any(|s| s.conns()) {
        conns_capacity(&args)?
    } else {
        0
    };
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

    let edge_bin = edge_binary(args.edge_bin.as_deref(), args.no_build)?;
    let bare_bin = match (&args.bare_bin, targets.contains(&Target::Bare)) {
        (_, false) => None,
        (Some(b), true) => Some(b.clone()),
        (None, true) => Some(release_binary(
            "streamedge-loadtest",
            "bare",
            args.no_build,
        )?),
    };
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

    // Declared in this order so that they stop in reverse: sampler, the caches (Varnish,
    // nginx, streamedge), origin, then the directory.
    let origin = origin::Origin::start_content(content, threads)?;
    let setup = Setup {
        args: &args,
        origin: origin.addr,
        edge_bin: &edge_bin,
        bare_bin: bare_bin.as_deref(),
        dir: &tmp.path,
        cert: &cert,
        key: &key,
        prefix: &cache_prefix,
        hold: 0,
    };
    let mut caches = Caches::start(&setup, &targets)?;
    let endpoints = caches.endpoints.clone();
    let mut versions: Vec<(&'static str, String)> = vec![(
        "streamedge",
        format!("{} ({})", env!("CARGO_PKG_VERSION"), git),
    )];
    versions.extend(caches.versions.iter().cloned());
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
    if hold > 0 {
        print_conns_header(&args, hold, &targets);
    }

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
        cert: cert.clone(),
        // The many-connections runs start targets of their own, that can hold them.
        setup: Setup { hold, ..setup },
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

    caches.check_logs(&mut results);

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
    drop(caches);
    drop(origin);
    drop(tmp);
    Ok(clean)
}

/// Before the many-connections scenarios: raises this process's open-file limit (the clients
/// hold `--conns-clients` sockets; the targets, its children, inherit the limit) and returns
/// how many connections every target must be able to hold: the clients and 256 more (the
/// warm-up's and the admin's), streamedge's and bare's `server.max_connections`.
fn conns_capacity(args: &Args) -> anyhow::Result<usize> {
    if args.conns_clients == 0 || args.conns_rate == 0 || args.conns_interval_ms == 0 {
        bail!("--conns-clients, --conns-rate and --conns-interval-ms must be at least 1");
    }
    if args.conns_duration == 0 || args.conns_rounds == 0 {
        bail!("--conns-duration and --conns-rounds must be at least 1");
    }
    let limit = process::raise_nofile_limit().unwrap_or(1024);
    let hold = args.conns_clients + 256;
    // This process: one socket per client, and the origin's and the warm-up's.
    let mine = args.conns_clients as u64 + 512;
    // streamedge keeps 512 + 1/16 of its limit (at most half) for origins, listeners and
    // files, and lowers `server.max_connections` to the rest (`fit_connection_limit` in
    // src/server.rs); it raises its soft limit to the same hard limit as ours.
    let edge = limit - (512 + limit / 16).min(limit / 2);
    if mine > limit || hold as u64 > edge {
        bail!(
            "--conns-clients {} needs {mine} open files here and {hold} connections in streamedge, which keeps {} of its {limit} files in reserve: lower it, or raise the hard limit (ulimit -Hn)",
            args.conns_clients,
            limit - edge
        );
    }
    Ok(hold)
}
