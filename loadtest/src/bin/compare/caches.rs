//! The caches under test, side by side in front of the origin: streamedge (the release binary as
//! a process), nginx and Varnish, each with its endpoint and version, and the bare server (a
//! process too, with the files in memory, no origin); and what their logs say at the end.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, anyhow};
use streamedge_loadtest::{edgeproc, nginx, process, varnish};

use crate::args::Args;
use crate::model::{Endpoint, Results, Target};

/// Warnings about the machine's limits streamedge logs at start (notes, not anomalies): with
/// the default `server.max_connections` (50,000) above what the open-file limit allows.
const MACHINE_LIMITS: &[&str] =
    &["server.max_connections is above what the open-file limit allows"];

/// Where and how the caches start.
#[derive(Clone, Copy)]
pub(crate) struct Setup<'a> {
    pub(crate) args: &'a Args,
    pub(crate) origin: SocketAddr,
    pub(crate) edge_bin: &'a Path,
    /// The bare server's binary (when it is a target).
    pub(crate) bare_bin: Option<&'a Path>,
    /// The temporary directory of these caches.
    pub(crate) dir: &'a Path,
    /// The certificate and key of every TLS listener.
    pub(crate) cert: &'a Path,
    pub(crate) key: &'a Path,
    /// Prefix of the caches' command lines (`taskset -c 1`), or empty.
    pub(crate) prefix: &'a [String],
    /// Connections every target must be able to hold at once (the many-connections
    /// scenarios), or 0: streamedge's and bare's `server.max_connections`, at least nginx's
    /// `worker_connections` (see `conns_capacity`).
    pub(crate) hold: usize,
}

/// The running caches, stopped when dropped: Varnish, then nginx, then streamedge, then the
/// bare server.
pub(crate) struct Caches {
    varnish: Option<varnish::Varnish>,
    nginx: Option<nginx::Nginx>,
    edge: Option<edgeproc::EdgeProcess>,
    bare: Option<edgeproc::EdgeProcess>,
    /// In the order of `--targets`.
    pub(crate) endpoints: Vec<Endpoint>,
    /// nginx's and Varnish's versions, in the order of `--targets`.
    pub(crate) versions: Vec<(&'static str, String)>,
}

impl Caches {
    pub(crate) fn start(s: &Setup<'_>, targets: &[Target]) -> anyhow::Result<Caches> {
        let mut c = Caches {
            varnish: None,
            nginx: None,
            edge: None,
            bare: None,
            endpoints: Vec::new(),
            versions: Vec::new(),
        };
        for &t in targets {
            match t {
                Target::Edge => {
                    let e = start_edge(s)?;
                    c.endpoints.push(Endpoint {
                        target: t,
                        http: e.http,
                        https: e.https,
                        admin: Some(e.admin),
                        pid: e.pid(),
                    });
                    c.edge = Some(e);
                }
                Target::Nginx => {
                    let n = start_nginx(s)?;
                    c.versions
                        .push(("nginx", n.version.trim_start_matches("nginx/").to_owned()));
                    c.endpoints.push(Endpoint {
                        target: t,
                        http: n.addr,
                        https: n.addrs.get(1).copied(),
                        admin: None,
                        pid: n.pid(),
                    });
                    c.nginx = Some(n);
                }
                Target::Varnish => {
                    let v = start_varnish(s)?;
                    c.versions.push((
                        "varnish",
                        v.version.trim_start_matches("varnish-").to_owned(),
                    ));
                    c.endpoints.push(Endpoint {
                        target: t,
                        http: v.addr,
                        https: None,
                        admin: None,
                        pid: v.pid(),
                    });
                    c.varnish = Some(v);
                }
                Target::Bare => {
                    let b = start_bare(s)?;
                    c.endpoints.push(Endpoint {
                        target: t,
                        http: b.http,
                        https: b.https,
                        admin: None,
                        pid: b.pid(),
                    });
                    c.bare = Some(b);
                }
                Target::Direct => {}
            }
        }
        Ok(c)
    }

    /// Misbehaviour the numbers alone do not show: streamedge gone or logging warnings, a
    /// Varnish panic (anomalies); the rest of nginx's and Varnish's logs (notes).
    pub(crate) fn check_logs(&mut self, results: &mut Results) {
        if let Some(e) = self.edge.as_mut() {
            if let Some(status) = e.exit_status() {
                results
                    .anomalies
                    .push(format!("streamedge exited during the run ({status})"));
            }
            let log = process::tail_n(&e.log_path(), 30);
            // The machine's limits, logged at start, are a note (as in the fleet and disk
            // benchmarks); anything else is an anomaly.
            let (limits, rest): (Vec<&str>, Vec<&str>) = log
                .lines()
                .filter(|l| !l.trim().is_empty())
                .partition(|l| MACHINE_LIMITS.iter().any(|m| l.contains(m)));
            if !limits.is_empty() {
                results.notes.push(format!(
                    "streamedge logged at start:\n{}",
                    limits.join("\n")
                ));
            }
            if !rest.is_empty() {
                results.anomalies.push(format!(
                    "streamedge log (warn and above, tail):\n{}",
                    rest.join("\n")
                ));
            }
        }
        if let Some(b) = self.bare.as_mut() {
            if let Some(status) = b.exit_status() {
                results
                    .anomalies
                    .push(format!("bare exited during the run ({status})"));
            }
            // It writes nothing unless it fails.
            let log = process::tail_n(&b.log_path(), 30);
            if !log.trim().is_empty() {
                results
                    .anomalies
                    .push(format!("bare server log (tail):\n{log}"));
            }
        }
        if let Some(n) = &self.nginx {
            let log = n.error_log_tail();
            if !log.trim().is_empty() {
                results
                    .notes
                    .push(format!("nginx error.log (tail):\n{log}"));
            }
        }
        if let Some(v) = &self.varnish {
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
    }
}

/// Server keys for streamedge and bare: `server.max_connections` when they must hold `hold`
/// connections (the default, 50,000, is lowered to what the open-file limit allows, with a
/// warning), and `server.runtime` when `--runtime` asks for one.
fn server_extra(hold: usize, runtime: Option<&str>) -> String {
    let mut keys = Vec::new();
    if hold > 0 {
        keys.push(format!("max_connections: {hold}"));
    }
    if let Some(r) = runtime {
        keys.push(format!("runtime: {r}"));
    }
    keys.join(", ")
}

fn start_edge(s: &Setup<'_>) -> anyhow::Result<edgeproc::EdgeProcess> {
    edgeproc::EdgeProcess::start(
        s.edge_bin,
        &s.dir.join("streamedge"),
        &edgeproc::EdgeConfig {
            origin: s.origin,
            cache_mib: s.args.cache_mib,
            tls: Some((s.cert, s.key)),
            cache_extra: "",
            server_extra: &server_extra(s.hold, s.args.runtime.as_deref()),
        },
        s.prefix,
    )
}

/// The bare server with the edge's config (its own ports; the same certificate and server
/// settings), so that it reads listen, tls and server exactly as streamedge does.
fn start_bare(s: &Setup<'_>) -> anyhow::Result<edgeproc::EdgeProcess> {
    let bin = s.bare_bin.ok_or_else(|| anyhow!("no bare server binary"))?;
    edgeproc::EdgeProcess::start(
        bin,
        &s.dir.join("bare"),
        &edgeproc::EdgeConfig {
            origin: s.origin,
            cache_mib: s.args.cache_mib,
            tls: Some((s.cert, s.key)),
            cache_extra: "",
            server_extra: &server_extra(s.hold, s.args.runtime.as_deref()),
        },
        s.prefix,
    )
}

fn start_nginx(s: &Setup<'_>) -> anyhow::Result<nginx::Nginx> {
    let bin = nginx::find().ok_or_else(|| {
        anyhow!("nginx is not installed (Debian package `nginx`); or leave it out with --targets")
    })?;
    let (o, cache_mib) = (s.origin, s.args.cache_mib);
    // Pinned to one CPU, nginx gets one worker, as its operator would configure
    // (`auto` counts the machine's CPUs, not the ones it may use).
    let workers = s.args.taskset.then_some(1);
    nginx::Nginx::start_with(&bin, "compare", 2, s.prefix, |dir, a| {
        nginx::tuned_config(
            dir,
            &nginx::Tuned {
                http: a[0],
                https: Some((a[1], s.cert, s.key)),
                origin: o,
                cache_mib,
                workers,
                min_worker_connections: s.hold,
            },
        )
    })
    .context("nginx did not start")
}

fn start_varnish(s: &Setup<'_>) -> anyhow::Result<varnish::Varnish> {
    let bin = varnish::find().ok_or_else(|| {
        anyhow!(
            "varnishd is not installed (Debian package `varnish`); or leave it out with --targets"
        )
    })?;
    varnish::Varnish::start(
        &bin,
        &s.dir.join("varnish"),
        s.origin,
        s.args.cache_mib,
        s.prefix,
    )
    .context("varnishd did not start")
}
