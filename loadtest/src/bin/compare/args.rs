//! The command line: what to run against what, for how long, with which load.

use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;

use crate::model::{Scenario, Target};

/// streamedge, nginx and Varnish side by side on this machine, with a bare hyper + rustls
/// server as the floor: hits over HTTP/1.1 and over TLS + HTTP/2, the herd, a player mix, and
/// memory.
#[derive(Parser, Debug, Clone)]
#[command(name = "compare")]
pub(crate) struct Args {
    /// Rounds; in each, every scenario runs every target, in rotating order.
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// Measured seconds of each wrk / h2load run.
    #[arg(long, default_value_t = 10)]
    pub(crate) duration: u64,
    /// Unmeasured seconds of load before each measured run (0: none).
    #[arg(long, default_value_t = 2)]
    pub(crate) warmup: u64,
    /// wrk and h2load threads (-t).
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
    /// wrk connections (-c), HTTP/1.1 scenarios and the player mix.
    #[arg(long, default_value_t = 64)]
    pub(crate) conns: usize,
    /// h2load connections (-c), TLS + HTTP/2 scenarios.
    #[arg(long, default_value_t = 16)]
    pub(crate) h2_conns: usize,
    /// h2load concurrent streams per connection (-m).
    #[arg(long, default_value_t = 4)]
    pub(crate) h2_streams: usize,
    /// Cache size of every target, MiB (streamedge max_size, nginx max_size, varnish malloc).
    #[arg(long, default_value_t = 256)]
    pub(crate) cache_mib: u64,
    /// Scenarios to run, comma-separated:
    /// hit-1k,hit-1m,h2-1k,h2-1m,mix,herd,conns-h1,conns-h2.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "hit-1k,hit-1m,h2-1k,h2-1m,mix,herd,conns-h1,conns-h2"
    )]
    pub(crate) scenarios: Vec<String>,
    /// Targets, comma-separated: streamedge,nginx,varnish,bare (bare: hyper + rustls with
    /// streamedge's connection settings and the files in memory, hit scenarios only).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "streamedge,nginx,varnish,bare"
    )]
    pub(crate) targets: Vec<String>,
    /// Herd: concurrent clients on one cold object.
    #[arg(long, default_value_t = 200)]
    pub(crate) herd_clients: usize,
    /// Herd: object size in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub(crate) herd_size: usize,
    /// Herd: origin delay before the response head, ms.
    #[arg(long, default_value_t = 300)]
    pub(crate) herd_latency_ms: u64,
    /// Herd: time over which the origin trickles the body, ms (0: full speed).
    #[arg(long, default_value_t = 1000)]
    pub(crate) herd_body_ms: u64,
    /// Herd: bound on each client, ms.
    #[arg(long, default_value_t = 30_000)]
    pub(crate) herd_timeout_ms: u64,
    /// Many connections (conns-h1, conns-h2): keep-alive connections held open to each target.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) conns_clients: usize,
    /// Many connections: new connections per second (and at most 256 connecting at once).
    #[arg(long, default_value_t = 1000)]
    pub(crate) conns_rate: u64,
    /// Many connections: mean time between two requests of one connection, ms (each wait is
    /// drawn uniformly between 2/3 and 4/3 of it: 5-10 s by default).
    #[arg(long, default_value_t = 7500)]
    pub(crate) conns_interval_ms: u64,
    /// Many connections: seconds between the last connection opened and the memory reading
    /// with all of them open.
    #[arg(long, default_value_t = 3)]
    pub(crate) conns_settle_s: u64,
    /// Many connections: measured seconds of trickled requests, after that reading.
    #[arg(long, default_value_t = 30)]
    pub(crate) conns_duration: u64,
    /// Many connections: run them in the first R rounds only (a run takes about a minute per
    /// target, and a later one meets memory the allocator kept from the one before).
    #[arg(long, default_value_t = 1)]
    pub(crate) conns_rounds: usize,
    /// After the rounds, fetch this many times the cache size in distinct 1 MiB objects
    /// through every target and report memory again (0: skip).
    #[arg(long, default_value_t = 1.5)]
    pub(crate) fill_factor: f64,
    /// Pin every cache to CPU 1 and the load generators (wrk, h2load, this process with the
    /// origin and the herd clients) to CPU 0, with taskset.
    #[arg(long)]
    pub(crate) taskset: bool,
    /// The streamedge binary (default: target/release/streamedge next to this program,
    /// built first with `cargo build --release --bin streamedge`).
    #[arg(long, value_name = "PATH")]
    pub(crate) edge_bin: Option<PathBuf>,
    /// The bare server's binary (default: target/release/bare next to this program, built
    /// first with `cargo build --release -p streamedge-loadtest --bin bare`: this tree's, the
    /// yardstick of this tree's edge).
    #[arg(long, value_name = "PATH")]
    pub(crate) bare_bin: Option<PathBuf>,
    /// `server.runtime` of streamedge and of the bare server (which runs the edge's own model):
    /// work_stealing or per_core (default: the edge's default).
    #[arg(long, value_name = "MODEL")]
    pub(crate) runtime: Option<String>,
    /// Do not build the streamedge and bare binaries; use them as they are.
    #[arg(long)]
    pub(crate) no_build: bool,
    /// Seconds to wait after the fill before the settled memory reading.
    #[arg(long, default_value_t = 6)]
    pub(crate) settle_s: u64,
    /// Memory sampling interval, ms.
    #[arg(long, default_value_t = 200)]
    pub(crate) sample_ms: u64,
    /// Pause between two measurements, ms.
    #[arg(long, default_value_t = 1000)]
    pub(crate) pause_ms: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// Keep the temporary directory (configs, logs, certificate) and print its path.
    #[arg(long)]
    pub(crate) keep: bool,
}

pub(crate) fn parse_selection(args: &Args) -> anyhow::Result<(Vec<Scenario>, Vec<Target>)> {
    let mut scenarios = Vec::new();
    for s in &args.scenarios {
        let s = s.trim();
        match Scenario::ALL.iter().find(|x| x.slug() == s) {
            Some(&x) if !scenarios.contains(&x) => scenarios.push(x),
            Some(_) => {}
            None => bail!(
                "unknown scenario {s:?} (hit-1k, hit-1m, h2-1k, h2-1m, mix, herd, conns-h1, conns-h2)"
            ),
        }
    }
    scenarios.sort_by_key(|s| Scenario::ALL.iter().position(|x| x == s));
    let mut targets = Vec::new();
    for t in &args.targets {
        let t = match t.trim() {
            "streamedge" | "edge" => Target::Edge,
            "nginx" => Target::Nginx,
            "varnish" => Target::Varnish,
            "bare" => Target::Bare,
            other => bail!("unknown target {other:?} (streamedge, nginx, varnish, bare)"),
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
