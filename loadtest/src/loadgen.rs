//! Load generators as child processes: one run, bounded in time and killed if the benchmark
//! stops first, and wrk's `RESULT` line (loadtest/wrk/report.lua) read back.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use crate::process;

/// The wrk scripts (loadtest/wrk).
pub const WRK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/wrk");

/// SIGKILL to a load generator still running when dropped.
pub struct KillOnDrop(pub Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            process::signal("KILL", &pid.to_string());
        }
    }
}

/// Runs `prefix` + `cmd` with `env` added, and returns its stdout; an error if it fails or
/// takes longer than `limit` (it is killed then, and when this future is dropped).
pub async fn run_tool(
    prefix: &[String],
    cmd: Vec<String>,
    env: &[(&str, &str)],
    limit: Duration,
) -> anyhow::Result<String> {
    let full: Vec<String> = prefix.iter().cloned().chain(cmd).collect();
    let Some((bin, args)) = full.split_first() else {
        bail!("no command to run");
    };
    let mut c = Command::new(bin);
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c.spawn().with_context(|| format!("cannot run {bin}"))?;
    // Killed if this future is dropped (Ctrl-C, a timeout) before the tool is done.
    let mut guard = KillOnDrop(Some(child.id()));
    let out = tokio::time::timeout(
        limit,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .map_err(|_| anyhow!("{} did not finish within {limit:?}", full.join(" ")))?
    .map_err(|e| anyhow!("waiting for {bin}: {e}"))?
    .with_context(|| format!("cannot run {bin}"))?;
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

/// wrk's `RESULT key=value ...` line.
#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    pub rps: f64,
    pub mbps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub requests: u64,
    /// Socket errors, timeouts and statuses above 399.
    pub errors: u64,
    /// Every numeric value of the line, the script's own counters included (`hit`, ...).
    pub values: BTreeMap<String, f64>,
}

impl WrkResult {
    /// A value of the line (0 when absent).
    pub fn get(&self, key: &str) -> f64 {
        self.values.get(key).copied().unwrap_or(0.0)
    }
}

/// Finds and reads the `RESULT` line in wrk's output.
pub fn parse_wrk(out: &str) -> anyhow::Result<WrkResult> {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| anyhow!("no RESULT line in wrk's output:\n{out}"))?;
    let values: BTreeMap<String, f64> = line
        .split_whitespace()
        .filter_map(|p| p.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse::<f64>().ok()?)))
        .collect();
    let num = |k: &str| values.get(k).copied().unwrap_or(0.0);
    Ok(WrkResult {
        rps: num("rps"),
        mbps: num("mbps"),
        p50_ms: num("p50_ms"),
        p90_ms: num("p90_ms"),
        p99_ms: num("p99_ms"),
        max_ms: num("max_ms"),
        requests: num("requests") as u64,
        errors: num("errors") as u64,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_result_line() {
        let out = "Running 1s test\n  2 threads\nRESULT label=mix rps=1234.5 mbps=9.87 \
                   p50_ms=0.5 p90_ms=1.5 p99_ms=2.25 max_ms=9 requests=1200 errors=3 hit=1190\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.rps, 1234.5);
        assert_eq!(r.p99_ms, 2.25);
        assert_eq!((r.requests, r.errors), (1200, 3));
        assert_eq!(r.get("hit"), 1190.0);
        assert_eq!(r.get("miss"), 0.0);
        assert!(parse_wrk("no result").is_err());
    }
}
