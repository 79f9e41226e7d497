//! What the comparison measures and reports: targets, scenarios, one run, one herd, the
//! endpoints of a target, and the results of all rounds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use streamedge_loadtest::process;
use streamedge_loadtest::report::{ms, percentile};

pub(crate) const MIB: u64 = 1 << 20;
pub(crate) use streamedge_loadtest::setup::{PATH_1K, PATH_1M};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Target {
    Direct,
    Edge,
    Nginx,
    Varnish,
    /// hyper + rustls with streamedge's connection settings, the files in memory, no cache:
    /// the floor of what a hit costs on the edge's stack (hit scenarios only).
    Bare,
}

impl Target {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct origin",
            Target::Edge => "streamedge",
            Target::Nginx => "nginx",
            Target::Varnish => "varnish",
            Target::Bare => "bare",
        }
    }
    pub(crate) fn slug(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Edge => "edge",
            Target::Nginx => "nginx",
            Target::Varnish => "varnish",
            Target::Bare => "bare",
        }
    }
    /// A cache: it can miss, so it takes part in the herd and the fill (the bare server,
    /// which has every file and nothing else, does not).
    pub(crate) fn caches(self) -> bool {
        matches!(self, Target::Edge | Target::Nginx | Target::Varnish)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    Hit1k,
    Hit1m,
    H2Hit1k,
    H2Hit1m,
    Mix,
    Herd,
    /// Many keep-alive clients trickling 1 KB hits, HTTP/1.1.
    ConnsH1,
    /// Many keep-alive clients trickling 1 KB hits, TLS + HTTP/2.
    ConnsH2,
}

impl Scenario {
    pub(crate) const ALL: [Scenario; 8] = [
        Scenario::Hit1k,
        Scenario::Hit1m,
        Scenario::H2Hit1k,
        Scenario::H2Hit1m,
        Scenario::Mix,
        Scenario::Herd,
        Scenario::ConnsH1,
        Scenario::ConnsH2,
    ];
    pub(crate) fn slug(self) -> &'static str {
        match self {
            Scenario::Hit1k => "hit-1k",
            Scenario::Hit1m => "hit-1m",
            Scenario::H2Hit1k => "h2-1k",
            Scenario::H2Hit1m => "h2-1m",
            Scenario::Mix => "mix",
            Scenario::Herd => "herd",
            Scenario::ConnsH1 => "conns-h1",
            Scenario::ConnsH2 => "conns-h2",
        }
    }
    pub(crate) fn title(self) -> &'static str {
        match self {
            Scenario::Hit1k => "1 KB manifest hit, HTTP/1.1",
            Scenario::Hit1m => "1 MiB segment hit, HTTP/1.1",
            Scenario::H2Hit1k => "1 KB manifest hit, TLS + HTTP/2",
            Scenario::H2Hit1m => "1 MiB segment hit, TLS + HTTP/2",
            Scenario::Mix => "player mix (VOD HLS + DASH demo rendition), HTTP/1.1",
            Scenario::Herd => "herd: cold object, concurrent clients",
            Scenario::ConnsH1 => {
                "many connections: keep-alive clients trickling 1 KB hits, HTTP/1.1"
            }
            Scenario::ConnsH2 => {
                "many connections: keep-alive clients trickling 1 KB hits, TLS + HTTP/2"
            }
        }
    }
    /// The goal for streamedge's req/s over nginx's (issue 15: nginx is the best-tuned peer
    /// on these rows; Varnish trailed it in every earlier run).
    pub(crate) fn goal_ratio(self) -> Option<f64> {
        match self {
            Scenario::Hit1k | Scenario::Mix => Some(1.25),
            Scenario::H2Hit1k => Some(1.2),
            Scenario::Hit1m | Scenario::H2Hit1m => Some(1.3),
            Scenario::Herd | Scenario::ConnsH1 | Scenario::ConnsH2 => None,
        }
    }
    /// The goal for streamedge's req/s over the bare server's (issue 15: small hits at 0.9x
    /// the floor of the stack).
    pub(crate) fn goal_bare_ratio(self) -> Option<f64> {
        match self {
            Scenario::Hit1k | Scenario::H2Hit1k => Some(0.9),
            _ => None,
        }
    }
    /// Measured with h2load (TLS + HTTP/2 hits).
    pub(crate) fn h2(self) -> bool {
        matches!(self, Scenario::H2Hit1k | Scenario::H2Hit1m)
    }
    /// Many connections held (`conns`), not a load generator.
    pub(crate) fn conns(self) -> bool {
        matches!(self, Scenario::ConnsH1 | Scenario::ConnsH2)
    }
    /// Over TLS (the target needs an https listener).
    pub(crate) fn tls(self) -> bool {
        self.h2() || self == Scenario::ConnsH2
    }
    pub(crate) fn path(self) -> Option<&'static str> {
        match self {
            Scenario::Hit1k | Scenario::H2Hit1k | Scenario::ConnsH1 | Scenario::ConnsH2 => {
                Some(PATH_1K)
            }
            Scenario::Hit1m | Scenario::H2Hit1m => Some(PATH_1M),
            Scenario::Mix | Scenario::Herd => None,
        }
    }
}

/// One load-generator run (wrk or h2load) against one target.
#[derive(Debug, Clone, Default)]
pub(crate) struct Run {
    pub(crate) round: usize,
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) mbps: f64,
    /// Origin requests during the measured run (0 for a pure hit benchmark).
    pub(crate) origin_requests: u64,
    /// CPU seconds of the cache's processes during the measured run, per wall second.
    pub(crate) cache_cpu: f64,
    /// h2load: negotiated protocol and cipher.
    pub(crate) note: String,
}

/// One herd: one target, one cold URL.
pub(crate) struct Herd {
    pub(crate) round: usize,
    pub(crate) target: Target,
    pub(crate) path: String,
    pub(crate) origin_requests: u64,
    pub(crate) connected: usize,
    pub(crate) ttfb: Vec<Duration>,
    pub(crate) done: Vec<Duration>,
    pub(crate) cache_status: BTreeMap<String, usize>,
    pub(crate) errors: BTreeMap<String, usize>,
}

impl Herd {
    pub(crate) fn ttfb_p(&self, p: f64) -> Option<Duration> {
        (!self.ttfb.is_empty()).then(|| percentile(&self.ttfb, p))
    }
}

/// What a target is reached at, and its process tree.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) target: Target,
    pub(crate) http: SocketAddr,
    pub(crate) https: Option<SocketAddr>,
    /// streamedge's admin listener (/metrics).
    pub(crate) admin: Option<SocketAddr>,
    pub(crate) pid: Option<u32>,
}

#[derive(Default)]
pub(crate) struct Results {
    pub(crate) runs: BTreeMap<(usize, Target), Vec<Run>>, // (scenario index, target) → rounds
    pub(crate) herds: Vec<Herd>,
    pub(crate) anomalies: Vec<String>,
    /// Worth reading, but not errors (the peers' logs).
    pub(crate) notes: Vec<String>,
    pub(crate) mem_rounds: Vec<(String, process::Peaks)>,
    pub(crate) mem_fill: Vec<(String, process::Peaks)>,
    pub(crate) fill: Vec<(Target, usize, usize, u64, f64)>, // target, ok, objects, origin requests, seconds
    pub(crate) edge_metrics: Vec<(String, String)>,
    pub(crate) mix_paths: usize,
    /// The many-connections runs, in the order they ran.
    pub(crate) conns: Vec<ConnsRun>,
}

/// One many-connections run: one target, N connections of one protocol held open, each
/// trickling GETs of the 1 KB playlist.
#[derive(Debug, Clone)]
pub(crate) struct ConnsRun {
    pub(crate) round: usize,
    pub(crate) scenario_index: usize,
    pub(crate) target: Target,
    /// Connections asked for.
    pub(crate) wanted: usize,
    /// Connections that opened and answered their first request.
    pub(crate) opened: usize,
    /// Seconds from the first connection attempt to the last one settled.
    pub(crate) open_secs: f64,
    /// Connections open at the loaded reading and at the end reading.
    pub(crate) held_loaded: usize,
    pub(crate) held_end: usize,
    /// Why connections did not open (connect, TLS, first request): message → count.
    pub(crate) connect_errors: BTreeMap<String, usize>,
    /// Requests that failed on an open connection (which then counts as lost).
    pub(crate) errors: BTreeMap<String, usize>,
    /// The target's process tree: before the connections, with all of them open and idle
    /// between trickled requests (after the settle), at the end of the measured window, and
    /// 2 s after every connection closed.
    pub(crate) mem_base: process::Mem,
    pub(crate) mem_loaded: process::Mem,
    pub(crate) mem_end: process::Mem,
    pub(crate) mem_after: process::Mem,
    /// Latency of every request of the measured window (write to last body byte), sorted.
    pub(crate) latencies: Vec<Duration>,
    /// Length of the measured window, seconds.
    pub(crate) secs: f64,
    /// CPU of the target's processes and of this process (the clients) during the window,
    /// in cores.
    pub(crate) cache_cpu: f64,
    pub(crate) client_cpu: f64,
    /// Cores other processes of the machine used during the window (the machine's busy time
    /// less this program's, with its targets): what else ran while latency was measured.
    pub(crate) other_cpu: f64,
}

impl ConnsRun {
    /// (RSS with the connections open − RSS before) / connections open, KiB.
    pub(crate) fn kib_per_conn(&self) -> Option<f64> {
        per_conn(self.mem_loaded.rss, self.mem_base.rss, self.held_loaded)
    }
    /// The same with PSS.
    pub(crate) fn pss_kib_per_conn(&self) -> Option<f64> {
        per_conn(self.mem_loaded.pss, self.mem_base.pss, self.held_loaded)
    }
    /// Latency percentile of the measured window, ms.
    pub(crate) fn p(&self, p: f64) -> Option<f64> {
        (!self.latencies.is_empty()).then(|| ms(percentile(&self.latencies, p)))
    }
    pub(crate) fn connect_failures(&self) -> usize {
        self.connect_errors.values().sum()
    }
    pub(crate) fn request_errors(&self) -> usize {
        self.errors.values().sum()
    }
    pub(crate) fn rps(&self) -> f64 {
        if self.secs > 0.0 {
            self.latencies.len() as f64 / self.secs
        } else {
            0.0
        }
    }
}

fn per_conn(loaded: u64, base: u64, n: usize) -> Option<f64> {
    (n > 0).then(|| (loaded as f64 - base as f64) / n as f64)
}

pub(crate) fn scenario_index(s: Scenario) -> usize {
    Scenario::ALL.iter().position(|&x| x == s).unwrap_or(0)
}
