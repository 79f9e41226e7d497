//! Medians over the rounds, the herd's figures and the goals, met or not.

use std::collections::BTreeMap;
use std::time::Duration;

use streamedge_loadtest::report::{median, ms};

use crate::args::Args;
use crate::model::{ConnsRun, Endpoint, Herd, Results, Run, Scenario, Target, scenario_index};

/// Medians over the rounds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Med {
    pub(crate) rps: Option<f64>,
    pub(crate) p50: Option<f64>,
    pub(crate) p99: Option<f64>,
    pub(crate) errors: u64,
    pub(crate) origin_requests: u64,
    pub(crate) cache_cpu: Option<f64>,
    pub(crate) rps_min: f64,
    pub(crate) rps_max: f64,
}

pub(crate) struct HerdSummary {
    pub(crate) target: Target,
    pub(crate) origin_requests: Vec<u64>,
    pub(crate) ttfb_p50: Option<f64>,
    pub(crate) ttfb_max: Option<f64>,
    pub(crate) all_done: Option<f64>,
    pub(crate) ok: usize,
    pub(crate) failed: usize,
}

/// Many connections: one target, one protocol, medians over the rounds that ran them (sums
/// for counts; the fewest connections held).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnsMed {
    pub(crate) runs: usize,
    pub(crate) wanted: usize,
    pub(crate) held_loaded: usize,
    pub(crate) held_end: usize,
    pub(crate) connect_failures: usize,
    pub(crate) errors: usize,
    pub(crate) requests: usize,
    /// MiB.
    pub(crate) rss_base: Option<f64>,
    pub(crate) rss_loaded: Option<f64>,
    pub(crate) rss_end: Option<f64>,
    pub(crate) rss_after: Option<f64>,
    /// KiB per connection.
    pub(crate) kib_per_conn: Option<f64>,
    pub(crate) pss_kib_per_conn: Option<f64>,
    /// ms.
    pub(crate) p50: Option<f64>,
    pub(crate) p99: Option<f64>,
    pub(crate) max: Option<f64>,
    pub(crate) rps: Option<f64>,
    pub(crate) cache_cpu: Option<f64>,
    pub(crate) client_cpu: Option<f64>,
    pub(crate) other_cpu: Option<f64>,
}

impl ConnsMed {
    fn of(runs: &[&ConnsRun]) -> ConnsMed {
        let col = |f: &dyn Fn(&ConnsRun) -> Option<f64>| {
            median(&runs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
        };
        let mib = |kib: u64| Some(kib as f64 / 1024.0);
        ConnsMed {
            runs: runs.len(),
            wanted: runs.first().map_or(0, |r| r.wanted),
            held_loaded: runs.iter().map(|r| r.held_loaded).min().unwrap_or(0),
            held_end: runs.iter().map(|r| r.held_end).min().unwrap_or(0),
            connect_failures: runs.iter().map(|r| r.connect_failures()).sum(),
            errors: runs.iter().map(|r| r.request_errors()).sum(),
            requests: runs.iter().map(|r| r.latencies.len()).sum(),
            rss_base: col(&|r| mib(r.mem_base.rss)),
            rss_loaded: col(&|r| mib(r.mem_loaded.rss)),
            rss_end: col(&|r| mib(r.mem_end.rss)),
            rss_after: col(&|r| mib(r.mem_after.rss)),
            kib_per_conn: col(&|r| r.kib_per_conn()),
            pss_kib_per_conn: col(&|r| r.pss_kib_per_conn()),
            p50: col(&|r| r.p(0.5)),
            p99: col(&|r| r.p(0.99)),
            max: col(&|r| r.p(1.0)),
            rps: col(&|r| Some(r.rps())),
            cache_cpu: col(&|r| Some(r.cache_cpu)),
            client_cpu: col(&|r| Some(r.client_cpu)),
            other_cpu: col(&|r| Some(r.other_cpu)),
        }
    }
}

pub(crate) struct Summary {
    pub(crate) med: BTreeMap<(usize, Target), Med>,
    pub(crate) herd: Vec<HerdSummary>,
    /// Many connections: (scenario index, target) → medians.
    pub(crate) conns: BTreeMap<(usize, Target), ConnsMed>,
    pub(crate) goals: Vec<(String, String, Option<bool>)>,
}

impl Summary {
    pub(crate) fn of(
        args: &Args,
        scenarios: &[Scenario],
        endpoints: &[Endpoint],
        r: &Results,
    ) -> Summary {
        let mut med = BTreeMap::new();
        for (key, runs) in &r.runs {
            let col = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
            let rps: Vec<f64> = runs.iter().map(|x| x.rps).collect();
            med.insert(
                *key,
                Med {
                    rps: col(|x| x.rps),
                    p50: col(|x| x.p50_ms),
                    p99: col(|x| x.p99_ms),
                    errors: runs.iter().map(|x| x.errors).sum(),
                    origin_requests: runs.iter().map(|x| x.origin_requests).sum(),
                    cache_cpu: col(|x| x.cache_cpu),
                    rps_min: rps.iter().copied().fold(f64::INFINITY, f64::min),
                    rps_max: rps.iter().copied().fold(0.0, f64::max),
                },
            );
        }
        let mut herd = Vec::new();
        if scenarios.contains(&Scenario::Herd) {
            let mut ts = vec![Target::Direct];
            ts.extend(endpoints.iter().map(|e| e.target).filter(|t| t.caches()));
            for t in ts {
                let mine: Vec<&Herd> = r.herds.iter().filter(|h| h.target == t).collect();
                let m = |f: &dyn Fn(&Herd) -> Option<Duration>| {
                    median(&mine.iter().filter_map(|h| f(h).map(ms)).collect::<Vec<_>>())
                };
                herd.push(HerdSummary {
                    target: t,
                    origin_requests: mine.iter().map(|h| h.origin_requests).collect(),
                    ttfb_p50: m(&|h| h.ttfb_p(0.5)),
                    ttfb_max: m(&|h| h.ttfb_p(1.0)),
                    all_done: m(&|h| h.done.last().copied()),
                    ok: mine.iter().map(|h| h.ttfb.len()).sum(),
                    failed: mine.iter().map(|h| h.errors.values().sum::<usize>()).sum(),
                });
            }
        }
        let mut conns = BTreeMap::new();
        for &sc in scenarios.iter().filter(|s| s.conns()) {
            for e in endpoints {
                let key = (scenario_index(sc), e.target);
                let runs: Vec<&ConnsRun> = r
                    .conns
                    .iter()
                    .filter(|c| (c.scenario_index, c.target) == key)
                    .collect();
                if !runs.is_empty() {
                    conns.insert(key, ConnsMed::of(&runs));
                }
            }
        }
        let mut s = Summary {
            med,
            herd,
            conns,
            goals: Vec::new(),
        };
        s.goals = s.goals(args, scenarios, endpoints, r);
        s
    }

    pub(crate) fn get(&self, s: Scenario, t: Target) -> Option<&Med> {
        self.med.get(&(scenario_index(s), t))
    }

    /// The target's req/s over nginx's.
    pub(crate) fn ratio(&self, s: Scenario, t: Target) -> Option<f64> {
        self.ratio_to(s, t, Target::Nginx)
    }

    /// The target's req/s over the bare server's: how close to the floor of its stack.
    pub(crate) fn ratio_bare(&self, s: Scenario, t: Target) -> Option<f64> {
        self.ratio_to(s, t, Target::Bare)
    }

    fn ratio_to(&self, s: Scenario, t: Target, base: Target) -> Option<f64> {
        let n = self.get(s, base)?.rps?;
        let x = self.get(s, t)?.rps?;
        (n > 0.0).then_some(x / n)
    }

    /// Requests per CPU-second of the cache's own processes: throughput with the load
    /// generators' share of the machine taken out.
    pub(crate) fn per_core(&self, s: Scenario, t: Target) -> Option<f64> {
        let m = self.get(s, t)?;
        let (rps, cpu) = (m.rps?, m.cache_cpu?);
        (cpu > 0.0).then_some(rps / cpu)
    }

    pub(crate) fn per_core_ratio(&self, s: Scenario, t: Target) -> Option<f64> {
        self.per_core_ratio_to(s, t, Target::Nginx)
    }

    pub(crate) fn per_core_ratio_bare(&self, s: Scenario, t: Target) -> Option<f64> {
        self.per_core_ratio_to(s, t, Target::Bare)
    }

    fn per_core_ratio_to(&self, s: Scenario, t: Target, base: Target) -> Option<f64> {
        let n = self.per_core(s, base)?;
        (n > 0.0).then_some(self.per_core(s, t)? / n)
    }

    /// The lowest p99 among the other caches (the bare server is a yardstick, not a peer).
    pub(crate) fn best_peer_p99(&self, s: Scenario, t: Target) -> Option<f64> {
        [Target::Edge, Target::Nginx, Target::Varnish]
            .into_iter()
            .filter(|&x| x != t)
            .filter_map(|x| self.get(s, x)?.p99)
            .reduce(f64::min)
    }

    pub(crate) fn conns_get(&self, s: Scenario, t: Target) -> Option<&ConnsMed> {
        self.conns.get(&(scenario_index(s), t))
    }

    /// Many connections: the target's memory per connection over nginx's.
    pub(crate) fn conns_mem_ratio(&self, s: Scenario, t: Target) -> Option<f64> {
        let n = self.conns_get(s, Target::Nginx)?.kib_per_conn?;
        let x = self.conns_get(s, t)?.kib_per_conn?;
        (n > 0.0).then_some(x / n)
    }

    /// Many connections: the target's p99 over nginx's.
    pub(crate) fn conns_p99_ratio(&self, s: Scenario, t: Target) -> Option<f64> {
        let n = self.conns_get(s, Target::Nginx)?.p99?;
        let x = self.conns_get(s, t)?.p99?;
        (n > 0.0).then_some(x / n)
    }

    pub(crate) fn herd_ratio(&self, t: Target) -> Option<f64> {
        let p = |t: Target| self.herd.iter().find(|h| h.target == t)?.ttfb_p50;
        let (x, d) = (p(t)?, p(Target::Direct)?);
        (d > 0.0).then_some(x / d)
    }

    pub(crate) fn goals(
        &self,
        args: &Args,
        scenarios: &[Scenario],
        endpoints: &[Endpoint],
        r: &Results,
    ) -> Vec<(String, String, Option<bool>)> {
        let mut g = Vec::new();
        let edge = Target::Edge;
        if !endpoints.iter().any(|e| e.target == edge) {
            return g;
        }
        for &s in scenarios {
            if let Some(goal) = s.goal_ratio() {
                let ratio = self.ratio(s, edge);
                g.push((
                    format!("{}: req/s >= {goal}x nginx", s.slug()),
                    ratio.map_or("no data".into(), |x| format!("{x:.2}x")),
                    ratio.map(|x| x >= goal),
                ));
            }
            if let Some(goal) = s.goal_bare_ratio()
                && endpoints.iter().any(|e| e.target == Target::Bare)
            {
                let ratio = self.ratio_bare(s, edge);
                g.push((
                    format!("{}: req/s >= {goal}x bare", s.slug()),
                    ratio.map_or("no data".into(), |x| format!("{x:.2}x")),
                    ratio.map(|x| x >= goal),
                ));
            }
        }
        for &s in scenarios {
            if s == Scenario::Herd {
                continue;
            }
            let (mine, best) = (
                self.get(s, edge).and_then(|m| m.p99),
                self.best_peer_p99(s, edge),
            );
            if let (Some(m), Some(b)) = (mine, best) {
                g.push((
                    format!("{}: p99 no worse than the best peer", s.slug()),
                    format!("{m:.2} ms vs {b:.2} ms"),
                    Some(m <= b),
                ));
            }
        }
        for &s in scenarios.iter().filter(|s| s.conns()) {
            let Some(m) = self.conns_get(s, edge) else {
                continue;
            };
            let all = m.held_loaded == m.wanted
                && m.held_end == m.wanted
                && m.connect_failures == 0
                && m.errors == 0;
            g.push((
                format!("{}: every connection held, no error", s.slug()),
                format!(
                    "{}/{} held, {} did not open, {} lost",
                    m.held_end.min(m.held_loaded),
                    m.wanted,
                    m.connect_failures,
                    m.errors
                ),
                Some(all),
            ));
            let n = self.conns_get(s, Target::Nginx);
            if let (Some(x), Some(y)) = (m.kib_per_conn, n.and_then(|n| n.kib_per_conn)) {
                g.push((
                    format!("{}: memory per connection <= nginx's", s.slug()),
                    format!("{x:.1} KiB vs {y:.1} KiB"),
                    Some(x <= y),
                ));
            }
            if let (Some(x), Some(y)) = (m.p99, n.and_then(|n| n.p99)) {
                g.push((
                    format!("{}: p99 <= 1.5x nginx's", s.slug()),
                    format!("{x:.2} ms vs {y:.2} ms"),
                    Some(x <= 1.5 * y),
                ));
            }
        }
        if let Some(h) = self.herd.iter().find(|h| h.target == edge) {
            let all_one =
                !h.origin_requests.is_empty() && h.origin_requests.iter().all(|&n| n == 1);
            g.push((
                "herd: one origin request per herd".into(),
                format!("{:?}", h.origin_requests),
                Some(all_one),
            ));
            let ratio = self.herd_ratio(edge);
            g.push((
                "herd: TTFB p50 within 10% of direct".into(),
                ratio.map_or("no data".into(), |x| format!("{x:.3}x direct")),
                ratio.map(|x| x <= 1.10),
            ));
        }
        let limit = (args.cache_mib + 64) * 1024;
        let peak = r
            .mem_fill
            .iter()
            .chain(&r.mem_rounds)
            .filter(|(n, _)| n == edge.name())
            .map(|(_, p)| p.rss.max(p.hwm))
            .max();
        if let Some(p) = peak {
            g.push((
                format!(
                    "peak RSS <= cache size + 64 MiB ({} MiB)",
                    args.cache_mib + 64
                ),
                format!("{:.1} MiB", p as f64 / 1024.0),
                Some(p <= limit),
            ));
        }
        g
    }
}

pub(crate) fn fmt_opt(x: Option<f64>, prec: usize) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}
