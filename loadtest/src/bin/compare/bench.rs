//! The rounds: warm every target, then each scenario against each target in rotating order
//! (wrk, h2load or the herd clients), then the fill past the cache size; misbehaviour is
//! collected as anomalies.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use streamedge_loadtest::client::Expect;
use streamedge_loadtest::loadgen::{self, WRK_DIR};
use streamedge_loadtest::report::ms;
use streamedge_loadtest::{admin, client, crowd, origin, process};
use tokio::time::Instant;

use crate::args::Args;
use crate::caches::{Caches, Setup};
use crate::conns;
use crate::loadgen::{h2load_command, parse_h2load, parse_wrk, wrk_command};
use crate::model::{Endpoint, Herd, PATH_1K, Results, Run, Scenario, Target, scenario_index};
use crate::summary::{fmt_opt, mib};

/// Everything the benchmark needs while it runs.
pub(crate) struct Bench<'a> {
    pub(crate) args: &'a Args,
    pub(crate) origin: &'a origin::Origin,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) direct: SocketAddr,
    /// Every fixed file of the origin: path → expected length and checksum.
    pub(crate) expect: HashMap<String, Expect>,
    pub(crate) mix_paths: Vec<String>,
    pub(crate) mix_file: PathBuf,
    pub(crate) herd_expect: Expect,
    pub(crate) fill_expect: Expect,
    pub(crate) h2load: bool,
    /// Prefix for the load generators (`taskset -c 0`), or empty.
    pub(crate) gen_prefix: Vec<String>,
    pub(crate) sampler: &'a process::MemSampler,
    /// The run's temporary directory.
    pub(crate) tmp: PathBuf,
    /// The certificate of every TLS listener (the many-connections clients trust it).
    pub(crate) cert: PathBuf,
    /// How the caches start: each many-connections run starts a fresh target of its own.
    pub(crate) setup: Setup<'a>,
}

impl Bench<'_> {
    pub(crate) async fn all(&self, scenarios: &[Scenario]) -> anyhow::Result<Results> {
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
                if scenario.conns() {
                    if round < self.args.conns_rounds {
                        self.conns_round(round, si, scenario, &mut results).await?;
                    }
                    continue;
                }
                let n = self.endpoints.len();
                for k in 0..n {
                    let e = &self.endpoints[(round + si + k) % n];
                    if scenario.tls() && e.https.is_none() {
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

    /// GETs every path twice; the second answer must come from the cache (the bare server has
    /// no cache: its answers are only checked for length and checksum).
    pub(crate) async fn warm(&self, e: &Endpoint, paths: &[String]) -> Result<(), String> {
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
                if pass == 1 && e.target.caches() {
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

    pub(crate) async fn measure(
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
    pub(crate) async fn load(
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
    pub(crate) async fn tool(
        &self,
        cmd: Vec<String>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let limit = Duration::from_secs(self.args.duration.max(self.args.warmup) + 60);
        loadgen::run_tool(&self.gen_prefix, cmd, env, limit).await
    }

    pub(crate) async fn herd_round(
        &self,
        round: usize,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let a = self.args;
        let timeout = Duration::from_millis(a.herd_timeout_ms);
        let mut targets = vec![(Target::Direct, self.direct)];
        targets.extend(
            self.endpoints
                .iter()
                .filter(|e| e.target.caches())
                .map(|e| (e.target, e.http)),
        );
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

    /// Many connections: one run per target (Varnish has no TLS: not for conns-h2), in the
    /// rotating order of the other scenarios, each against a target started for it alone (so
    /// that its memory before is that of a fresh process, not memory its allocator kept from an
    /// earlier run), stopped afterwards.
    pub(crate) async fn conns_round(
        &self,
        round: usize,
        si: usize,
        scenario: Scenario,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let a = self.args;
        let p = conns::Params {
            clients: a.conns_clients,
            rate: a.conns_rate,
            interval: Duration::from_millis(a.conns_interval_ms),
            settle: Duration::from_secs(a.conns_settle_s),
            duration: Duration::from_secs(a.conns_duration),
        };
        let tls = if scenario.tls() {
            Some(conns::tls_connector(&self.cert)?)
        } else {
            None
        };
        let expect = self.expect[PATH_1K];
        let n = self.endpoints.len();
        for k in 0..n {
            let main = &self.endpoints[(round + si + k) % n];
            if scenario.tls() && main.https.is_none() {
                continue; // Varnish has no TLS
            }
            let target = main.target;
            let at = format!("round {} {} {}", round + 1, scenario.slug(), target.name());
            let dir = self.tmp.join(format!(
                "{}-{}-{}",
                scenario.slug(),
                round + 1,
                target.slug()
            ));
            let setup = Setup {
                dir: &dir,
                ..self.setup
            };
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut caches = tokio::task::block_in_place(|| Caches::start(&setup, &[target]))
                .with_context(|| format!("{at}: cannot start a fresh {}", target.name()))?;
            let e = caches.endpoints[0].clone();
            let dial = match (&tls, e.https) {
                (Some(tls), Some(addr)) => conns::Dial::H2 {
                    addr,
                    tls: tls.clone(),
                },
                _ => conns::Dial::H1(e.http),
            };
            // The object is cached (checked) before the baseline reading.
            if let Err(err) = self.warm(&e, &[PATH_1K.to_owned()]).await {
                results.anomalies.push(format!("{at}: warm-up: {err}"));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let r = conns::run(round, scenario, target, e.pid, dial, expect, &p).await;
            let mut logs = Results::default();
            caches.check_logs(&mut logs);
            tokio::task::block_in_place(|| drop(caches));
            for (err, n) in &r.connect_errors {
                results
                    .anomalies
                    .push(format!("{at}: {n} connection(s) did not open: {err}"));
            }
            for (err, n) in &r.errors {
                results
                    .anomalies
                    .push(format!("{at}: {n} connection(s) lost: {err}"));
            }
            results
                .anomalies
                .extend(logs.anomalies.iter().map(|x| format!("{at}: {x}")));
            results
                .notes
                .extend(logs.notes.iter().map(|x| format!("{at}: {x}")));
            println!(
                "{:<7} {:<8} {:<11} held {}/{} (opened in {:.1} s), RSS {} -> {} MiB: {} KiB/conn, {} MiB after close; {} req ({:.0}/s) p50 {} ms p99 {} ms max {} ms; lost {}; cache CPU {:.2}, client CPU {:.2}, other CPU {:.2}",
                round + 1,
                scenario.slug(),
                target.name(),
                r.held_loaded,
                r.wanted,
                r.open_secs,
                mib(r.mem_base.rss),
                mib(r.mem_loaded.rss),
                fmt_opt(r.kib_per_conn(), 1),
                mib(r.mem_after.rss),
                r.latencies.len(),
                r.rps(),
                fmt_opt(r.p(0.5), 2),
                fmt_opt(r.p(0.99), 2),
                fmt_opt(r.p(1.0), 2),
                r.request_errors(),
                r.cache_cpu,
                r.client_cpu,
                r.other_cpu,
            );
            results.conns.push(r);
            tokio::time::sleep(Duration::from_millis(a.pause_ms)).await;
        }
        Ok(())
    }

    /// Distinct 1 MiB objects, `fill_factor` times the cache size, through every target (8
    /// at a time), so that every cache must evict; then memory is read again.
    pub(crate) async fn fill(&self, results: &mut Results) {
        let objects = ((self.args.cache_mib as f64) * self.args.fill_factor).ceil() as usize;
        println!(
            "\n--- fill: {objects} distinct 1 MiB objects through every target ({:.1}x the cache size) ---",
            self.args.fill_factor
        );
        for e in self.endpoints.iter().filter(|e| e.target.caches()) {
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
pub(crate) async fn edge_metrics(addr: SocketAddr) -> Vec<(String, String)> {
    let Some(text) = admin::metrics(addr).await else {
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
