//! The load generators: wrk (with loadtest/wrk/report.lua and player-mix.lua) and h2load,
//! their command lines and their output parsed into a `Run` (running them, and wrk's `RESULT`
//! line, are the library's `loadgen`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow};
use streamedge_loadtest::loadgen;
use streamedge_loadtest::report::{ms, percentile};

use crate::args::Args;
use crate::model::Run;

pub(crate) fn wrk_command(a: &Args, secs: u64) -> Vec<String> {
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

pub(crate) fn h2load_command(a: &Args, secs: u64) -> Vec<String> {
    vec![
        "h2load".into(),
        format!("-t{}", a.threads),
        format!("-c{}", a.h2_conns),
        format!("-m{}", a.h2_streams),
        "-D".into(),
        secs.to_string(),
    ]
}

/// The `RESULT key=value ...` line of loadtest/wrk/report.lua, as a `Run`.
pub(crate) fn parse_wrk(out: &str) -> anyhow::Result<Run> {
    let r = loadgen::parse_wrk(out)?;
    Ok(Run {
        rps: r.rps,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
        requests: r.requests,
        errors: r.errors,
        mbps: r.mbps,
        ..Run::default()
    })
}

/// h2load's summary, and latency percentiles from its per-request log (microseconds in the
/// third column).
pub(crate) fn parse_h2load(out: &str, log: Option<&Path>) -> anyhow::Result<Run> {
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
