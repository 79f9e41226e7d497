//! The results as JSON (`--json FILE`).

use streamedge_loadtest::process;
use streamedge_loadtest::report::{Json, Machine};

use crate::args::Args;
use crate::model::{Endpoint, Results, Scenario, scenario_index};
use crate::summary::Summary;

#[allow(clippy::too_many_arguments)]
pub(crate) fn to_json(
    args: &Args,
    machine: &Machine,
    versions: &[(&'static str, String)],
    load: [&str; 2],
    scenarios: &[Scenario],
    endpoints: &[Endpoint],
    r: &Results,
    s: &Summary,
) -> Json {
    let scen = scenarios
        .iter()
        .filter(|&&x| x != Scenario::Herd && !x.conns())
        .map(|&sc| {
            let targets = endpoints
                .iter()
                .filter_map(|e| {
                    let m = s.get(sc, e.target)?;
                    let runs = r.runs.get(&(scenario_index(sc), e.target))?;
                    Some(Json::Obj(vec![
                        ("target", Json::str(e.target.slug())),
                        ("rps", Json::opt_num(m.rps)),
                        ("p50_ms", Json::opt_num(m.p50)),
                        ("p99_ms", Json::opt_num(m.p99)),
                        ("vs_nginx", Json::opt_num(s.ratio(sc, e.target))),
                        ("vs_bare", Json::opt_num(s.ratio_bare(sc, e.target))),
                        ("errors", Json::Int(m.errors)),
                        ("origin_requests", Json::Int(m.origin_requests)),
                        ("cache_cpu_cores", Json::opt_num(m.cache_cpu)),
                        (
                            "rps_per_cache_core",
                            Json::opt_num(s.per_core(sc, e.target)),
                        ),
                        (
                            "per_core_vs_nginx",
                            Json::opt_num(s.per_core_ratio(sc, e.target)),
                        ),
                        (
                            "per_core_vs_bare",
                            Json::opt_num(s.per_core_ratio_bare(sc, e.target)),
                        ),
                        (
                            "rounds",
                            Json::Arr(
                                runs.iter()
                                    .map(|x| {
                                        Json::Obj(vec![
                                            ("round", Json::Int(x.round as u64 + 1)),
                                            ("rps", Json::Num(x.rps)),
                                            ("p50_ms", Json::Num(x.p50_ms)),
                                            ("p99_ms", Json::Num(x.p99_ms)),
                                            ("requests", Json::Int(x.requests)),
                                            ("errors", Json::Int(x.errors)),
                                            ("mbps", Json::Num(x.mbps)),
                                            ("origin_requests", Json::Int(x.origin_requests)),
                                            ("cache_cpu_cores", Json::Num(x.cache_cpu)),
                                            ("note", Json::str(x.note.clone())),
                                        ])
                                    })
                                    .collect(),
                            ),
                        ),
                    ]))
                })
                .collect();
            Json::Obj(vec![
                ("scenario", Json::str(sc.slug())),
                ("title", Json::str(sc.title())),
                ("path", sc.path().map_or(Json::Null, Json::str)),
                ("targets", Json::Arr(targets)),
            ])
        })
        .collect();
    let herd = s
        .herd
        .iter()
        .map(|h| {
            let rounds = r
                .herds
                .iter()
                .filter(|x| x.target == h.target)
                .map(|x| {
                    Json::Obj(vec![
                        ("round", Json::Int(x.round as u64 + 1)),
                        ("path", Json::str(x.path.clone())),
                        ("origin_requests", Json::Int(x.origin_requests)),
                        ("connected", Json::Int(x.connected as u64)),
                        ("ok", Json::Int(x.ttfb.len() as u64)),
                        ("ttfb_p50_ms", Json::opt_ms(x.ttfb_p(0.5))),
                        ("ttfb_max_ms", Json::opt_ms(x.ttfb_p(1.0))),
                        ("all_done_ms", Json::opt_ms(x.done.last().copied())),
                        ("cache_status", Json::tally(&x.cache_status)),
                        ("errors", Json::tally(&x.errors)),
                    ])
                })
                .collect();
            Json::Obj(vec![
                ("target", Json::str(h.target.slug())),
                (
                    "origin_requests_per_round",
                    Json::Arr(h.origin_requests.iter().map(|&n| Json::Int(n)).collect()),
                ),
                ("ttfb_p50_ms", Json::opt_num(h.ttfb_p50)),
                ("ttfb_max_ms", Json::opt_num(h.ttfb_max)),
                ("all_done_ms", Json::opt_num(h.all_done)),
                ("ttfb_p50_vs_direct", Json::opt_num(s.herd_ratio(h.target))),
                ("clients_ok", Json::Int(h.ok as u64)),
                ("clients_failed", Json::Int(h.failed as u64)),
                ("rounds", Json::Arr(rounds)),
            ])
        })
        .collect();
    let mem_obj = |m: &process::Mem| {
        Json::Obj(vec![
            ("rss_kib", Json::Int(m.rss)),
            ("pss_kib", Json::Int(m.pss)),
        ])
    };
    let conns = scenarios
        .iter()
        .filter(|x| x.conns())
        .map(|&sc| {
            let targets = endpoints
                .iter()
                .filter_map(|e| {
                    let m = s.conns_get(sc, e.target)?;
                    let rounds = r
                        .conns
                        .iter()
                        .filter(|c| c.scenario_index == scenario_index(sc) && c.target == e.target)
                        .map(|c| {
                            Json::Obj(vec![
                                ("round", Json::Int(c.round as u64 + 1)),
                                ("wanted", Json::Int(c.wanted as u64)),
                                ("opened", Json::Int(c.opened as u64)),
                                ("open_s", Json::Num(c.open_secs)),
                                ("held_loaded", Json::Int(c.held_loaded as u64)),
                                ("held_end", Json::Int(c.held_end as u64)),
                                ("memory_baseline", mem_obj(&c.mem_base)),
                                ("memory_loaded", mem_obj(&c.mem_loaded)),
                                ("memory_end", mem_obj(&c.mem_end)),
                                ("memory_after_close", mem_obj(&c.mem_after)),
                                ("kib_per_conn", Json::opt_num(c.kib_per_conn())),
                                ("pss_kib_per_conn", Json::opt_num(c.pss_kib_per_conn())),
                                ("requests", Json::Int(c.latencies.len() as u64)),
                                ("measured_s", Json::Num(c.secs)),
                                ("p50_ms", Json::opt_num(c.p(0.5))),
                                ("p99_ms", Json::opt_num(c.p(0.99))),
                                ("max_ms", Json::opt_num(c.p(1.0))),
                                ("connect_errors", Json::tally(&c.connect_errors)),
                                ("errors", Json::tally(&c.errors)),
                                ("cache_cpu_cores", Json::Num(c.cache_cpu)),
                                ("client_cpu_cores", Json::Num(c.client_cpu)),
                                ("other_cpu_cores", Json::Num(c.other_cpu)),
                            ])
                        })
                        .collect();
                    Some(Json::Obj(vec![
                        ("target", Json::str(e.target.slug())),
                        ("runs", Json::Int(m.runs as u64)),
                        ("wanted", Json::Int(m.wanted as u64)),
                        ("held_loaded", Json::Int(m.held_loaded as u64)),
                        ("held_end", Json::Int(m.held_end as u64)),
                        ("connect_failures", Json::Int(m.connect_failures as u64)),
                        ("errors", Json::Int(m.errors as u64)),
                        ("rss_baseline_mib", Json::opt_num(m.rss_base)),
                        ("rss_loaded_mib", Json::opt_num(m.rss_loaded)),
                        ("rss_end_mib", Json::opt_num(m.rss_end)),
                        ("rss_after_close_mib", Json::opt_num(m.rss_after)),
                        ("kib_per_conn", Json::opt_num(m.kib_per_conn)),
                        (
                            "kib_per_conn_vs_nginx",
                            Json::opt_num(s.conns_mem_ratio(sc, e.target)),
                        ),
                        ("pss_kib_per_conn", Json::opt_num(m.pss_kib_per_conn)),
                        ("requests", Json::Int(m.requests as u64)),
                        ("rps", Json::opt_num(m.rps)),
                        ("p50_ms", Json::opt_num(m.p50)),
                        ("p99_ms", Json::opt_num(m.p99)),
                        ("max_ms", Json::opt_num(m.max)),
                        (
                            "p99_vs_nginx",
                            Json::opt_num(s.conns_p99_ratio(sc, e.target)),
                        ),
                        ("cache_cpu_cores", Json::opt_num(m.cache_cpu)),
                        ("client_cpu_cores", Json::opt_num(m.client_cpu)),
                        ("other_cpu_cores", Json::opt_num(m.other_cpu)),
                        ("rounds", Json::Arr(rounds)),
                    ]))
                })
                .collect();
            Json::Obj(vec![
                ("scenario", Json::str(sc.slug())),
                ("title", Json::str(sc.title())),
                ("path", sc.path().map_or(Json::Null, Json::str)),
                ("targets", Json::Arr(targets)),
            ])
        })
        .collect();
    let mem = |v: &[(String, process::Peaks)]| {
        Json::Arr(
            v.iter()
                .map(|(n, p)| {
                    Json::Obj(vec![
                        ("target", Json::str(n.clone())),
                        ("peak_rss_kib", Json::Int(p.rss)),
                        ("peak_pss_kib", Json::Int(p.pss)),
                        ("vmhwm_sum_kib", Json::Int(p.hwm)),
                        ("last_rss_kib", Json::Int(p.last.rss)),
                        ("last_pss_kib", Json::Int(p.last.pss)),
                        ("samples", Json::Int(p.samples)),
                    ])
                })
                .collect(),
        )
    };
    Json::Obj(vec![
        ("benchmark", Json::str("compare")),
        ("machine", machine.to_json(load)),
        (
            "versions",
            Json::Obj(
                versions
                    .iter()
                    .map(|(k, v)| (*k, Json::str(v.clone())))
                    .collect(),
            ),
        ),
        (
            "params",
            Json::Obj(vec![
                ("rounds", Json::Int(args.rounds as u64)),
                ("duration_s", Json::Int(args.duration)),
                ("warmup_s", Json::Int(args.warmup)),
                ("threads", Json::Int(args.threads as u64)),
                ("conns", Json::Int(args.conns as u64)),
                ("h2_conns", Json::Int(args.h2_conns as u64)),
                ("h2_streams", Json::Int(args.h2_streams as u64)),
                ("cache_mib", Json::Int(args.cache_mib)),
                ("herd_clients", Json::Int(args.herd_clients as u64)),
                ("herd_size", Json::Int(args.herd_size as u64)),
                ("herd_latency_ms", Json::Int(args.herd_latency_ms)),
                ("herd_body_ms", Json::Int(args.herd_body_ms)),
                ("conns_clients", Json::Int(args.conns_clients as u64)),
                ("conns_rate", Json::Int(args.conns_rate)),
                ("conns_interval_ms", Json::Int(args.conns_interval_ms)),
                ("conns_settle_s", Json::Int(args.conns_settle_s)),
                ("conns_duration_s", Json::Int(args.conns_duration)),
                ("conns_rounds", Json::Int(args.conns_rounds as u64)),
                ("fill_factor", Json::Num(args.fill_factor)),
                ("settle_s", Json::Int(args.settle_s)),
                ("taskset", Json::Bool(args.taskset)),
                ("release_build", Json::Bool(!cfg!(debug_assertions))),
            ]),
        ),
        ("scenarios", Json::Arr(scen)),
        ("herd", Json::Arr(herd)),
        ("conns", Json::Arr(conns)),
        (
            "memory",
            Json::Obj(vec![
                ("rounds", mem(&r.mem_rounds)),
                ("after_fill", mem(&r.mem_fill)),
            ]),
        ),
        (
            "fill",
            Json::Arr(
                r.fill
                    .iter()
                    .map(|(t, ok, n, o, secs)| {
                        Json::Obj(vec![
                            ("target", Json::str(t.slug())),
                            ("ok", Json::Int(*ok as u64)),
                            ("objects", Json::Int(*n as u64)),
                            ("origin_requests", Json::Int(*o)),
                            ("seconds", Json::Num(*secs)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "streamedge_metrics",
            Json::Arr(
                r.edge_metrics
                    .iter()
                    .map(|(k, v)| {
                        Json::Obj(vec![
                            ("metric", Json::str(k.clone())),
                            ("value", Json::str(v.clone())),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "goals",
            Json::Arr(
                s.goals
                    .iter()
                    .map(|(g, m, met)| {
                        Json::Obj(vec![
                            ("goal", Json::str(g.clone())),
                            ("measured", Json::str(m.clone())),
                            ("met", met.map_or(Json::Null, Json::Bool)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "anomalies",
            Json::Arr(r.anomalies.iter().map(|a| Json::str(a.clone())).collect()),
        ),
        (
            "notes",
            Json::Arr(r.notes.iter().map(|a| Json::str(a.clone())).collect()),
        ),
    ])
}
