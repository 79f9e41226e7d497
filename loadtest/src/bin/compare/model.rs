//! What the comparison measures and reports: targets, scenarios, one run, one herd, the
//! endpoints of a target, and the results of all rounds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use streamedge_loadtest::process;
use streamedge_loadtest::report::percentile;

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
}

impl Scenario {
    pub(crate) const ALL: [Scenario; 6] = [
        Scenario::Hit1k,
        Scenario::Hit1m,
        Scenario::H2Hit1k,
        Scenario::H2Hit1m,
        Scenario::Mix,
        Scenario::Herd,
    ];
    pub(crate) fn slug(self) -> &'static str {
        match self {
            Scenario::Hit1k => "hit-1k",
            Scenario::Hit1m => "hit-1m",
            Scenario::H2Hit1k => "h2-1k",
            Scenario::H2Hit1m => "h2-1m",
            Scenario::Mix => "mix",
            Scenario::Herd => "herd",
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
        }
    }
    /// The goal for streamedge's req/s over nginx's.
    pub(crate) fn goal_ratio(self) -> Option<f64> {
        match self {
            Scenario::Hit1k => Some(1.5),
            Scenario::Hit1m | Scenario::Mix => Some(1.8),
            Scenario::H2Hit1k | Scenario::H2Hit1m => Some(1.3),
            Scenario::Herd => None,
        }
    }
    pub(crate) fn h2(self) -> bool {
        matches!(self, Scenario::H2Hit1k | Scenario::H2Hit1m)
    }
    pub(crate) fn path(self) -> Option<&'static str> {
        match self {
            Scenario::Hit1k | Scenario::H2Hit1k => Some(PATH_1K),
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
}

pub(crate) fn scenario_index(s: Scenario) -> usize {
    Scenario::ALL.iter().position(|&x| x == s).unwrap_or(0)
}
