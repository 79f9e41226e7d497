//! The printed report: the header (machine, versions, parameters) and the summary tables.

use std::net::SocketAddr;

use streamedge_loadtest::process;
use streamedge_loadtest::report::Machine;

use crate::args::Args;
use crate::model::{Endpoint, Results, Scenario};
use crate::summary::{Summary, fmt_opt, mib};

pub(crate) fn print_header(
    args: &Args,
    machine: &Machine,
    versions: &[(&'static str, String)],
    endpoints: &[Endpoint],
    origin: SocketAddr,
    scenarios: &[Scenario],
    load: &str,
) {
    println!(
        "streamedge comparison: streamedge, nginx and Varnish in front of one origin; bare (hyper + rustls, files in memory) as the floor"
    );
    println!(
        "machine: {} cores ({}), {} RAM, kernel {}, {}",
        machine.nproc, machine.cpu, machine.memory, machine.kernel, machine.os
    );
    let v: Vec<String> = versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("versions: {}", v.join("; "));
    println!(
        "parameters: {} rounds, {} s measured after {} s warm-up per run; wrk -t{} -c{}; h2load -t{} -c{} -m{}; cache {} MiB each; herd {} clients, {} bytes, origin head after {} ms, body over {} ms; fill {}x",
        args.rounds,
        args.duration,
        args.warmup,
        args.threads,
        args.conns,
        args.threads,
        args.h2_conns,
        args.h2_streams,
        args.cache_mib,
        args.herd_clients,
        args.herd_size,
        args.herd_latency_ms,
        args.herd_body_ms,
        args.fill_factor
    );
    println!(
        "scenarios: {}",
        scenarios
            .iter()
            .map(|s| s.slug())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "pinning: {}",
        if args.taskset {
            "caches on CPU 1; wrk, h2load, origin and herd clients on CPU 0 (taskset)"
        } else {
            "none: load generators, origin and caches share all cores"
        }
    );
    println!("origin: http://{origin}");
    for e in endpoints {
        println!(
            "  {:<11} http://{}{}  pid {}",
            e.target.name(),
            e.http,
            e.https
                .map(|a| format!("  https://{a}"))
                .unwrap_or_default(),
            e.pid.map_or("-".into(), |p| p.to_string())
        );
    }
    println!("load average before: {load}");
    if cfg!(debug_assertions) {
        println!(
            "WARNING: debug build of the load generator; run `cargo run --release --bin compare`"
        );
    }
}

pub(crate) fn print_summary(
    args: &Args,
    scenarios: &[Scenario],
    endpoints: &[Endpoint],
    r: &Results,
    s: &Summary,
) {
    println!("\n===== summary: medians over {} rounds =====", args.rounds);
    for &sc in scenarios {
        if sc == Scenario::Herd {
            continue;
        }
        let how = if sc.h2() {
            format!(
                "h2load -t{} -c{} -m{} -D {}",
                args.threads, args.h2_conns, args.h2_streams, args.duration
            )
        } else if sc == Scenario::Mix {
            format!(
                "wrk -t{} -c{} -d{}s -s player-mix.lua, {} paths",
                args.threads, args.conns, args.duration, r.mix_paths
            )
        } else {
            format!(
                "wrk -t{} -c{} -d{}s -s report.lua",
                args.threads, args.conns, args.duration
            )
        };
        println!(
            "\n{} ({how}{})",
            sc.title(),
            sc.path().map(|p| format!(", GET {p}")).unwrap_or_default()
        );
        println!(
            "| target | req/s | vs nginx | vs bare | p50 ms | p99 ms | p99 vs best peer | cache CPU (cores) | req/s per cache core | per core vs nginx | per core vs bare | errors | origin req | req/s min-max |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let ratio = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}x"));
        for e in endpoints {
            let Some(m) = s.get(sc, e.target) else {
                println!("| {} | n/a | | | | | | | | | | | | |", e.target.name());
                continue;
            };
            let p99_vs = match (m.p99, s.best_peer_p99(sc, e.target)) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0}-{:.0} |",
                e.target.name(),
                fmt_opt(m.rps, 0),
                ratio(s.ratio(sc, e.target)),
                ratio(s.ratio_bare(sc, e.target)),
                fmt_opt(m.p50, 2),
                fmt_opt(m.p99, 2),
                p99_vs,
                fmt_opt(m.cache_cpu, 2),
                fmt_opt(s.per_core(sc, e.target), 0),
                ratio(s.per_core_ratio(sc, e.target)),
                ratio(s.per_core_ratio_bare(sc, e.target)),
                m.errors,
                m.origin_requests,
                m.rps_min,
                m.rps_max
            );
        }
    }
    if !s.herd.is_empty() {
        println!(
            "\n{} ({} clients, {} bytes, origin head after {} ms, body over {} ms)",
            Scenario::Herd.title(),
            args.herd_clients,
            args.herd_size,
            args.herd_latency_ms,
            args.herd_body_ms
        );
        println!(
            "| target | origin req/round | TTFB p50 ms | TTFB max ms | all done ms | clients ok | p50 / direct |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for h in &s.herd {
            println!(
                "| {} | {} | {} | {} | {} | {}/{} | {} |",
                h.target.name(),
                h.origin_requests
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                fmt_opt(h.ttfb_p50, 1),
                fmt_opt(h.ttfb_max, 1),
                fmt_opt(h.all_done, 1),
                h.ok,
                h.ok + h.failed,
                s.herd_ratio(h.target)
                    .map_or("-".into(), |x| format!("{x:.2}"))
            );
        }
        for e in endpoints.iter().filter(|e| !e.target.caches()) {
            println!(
                "| {} | n/a (no cache, no origin) | | | | | |",
                e.target.name()
            );
        }
    }
    println!(
        "\nmemory of each cache's processes (MiB; nginx: master + workers, varnish: manager + cache process)"
    );
    println!(
        "| target | peak RSS, rounds | peak PSS, rounds | peak RSS, with fill | peak PSS, with fill | VmHWM sum, with fill | RSS {s} s after fill | PSS {s} s after fill |",
        s = args.settle_s
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, p) in &r.mem_rounds {
        let f = r.mem_fill.iter().find(|(n, _)| n == name).map(|(_, p)| *p);
        let f = |g: fn(&process::Peaks) -> u64| f.as_ref().map_or("-".into(), |f| mib(g(f)));
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            mib(p.rss),
            mib(p.pss),
            f(|f| f.rss),
            f(|f| f.pss),
            f(|f| f.hwm),
            f(|f| f.last.rss),
            f(|f| f.last.pss),
        );
    }
    for (t, ok, n, origin, secs) in &r.fill {
        println!(
            "fill {}: {ok}/{n} objects ok, {origin} origin requests, {secs:.1} s",
            t.name()
        );
    }
    if !r.fill.is_empty() {
        for e in endpoints.iter().filter(|e| !e.target.caches()) {
            println!("fill {}: n/a (no cache, no origin)", e.target.name());
        }
    }
    if !r.edge_metrics.is_empty() {
        let m: Vec<String> = r
            .edge_metrics
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("streamedge metrics at the end: {}", m.join("; "));
    }
    if !s.goals.is_empty() {
        println!("\ngoals (streamedge)");
        println!("| goal | measured | met |");
        println!("|---|---:|---|");
        for (goal, measured, met) in &s.goals {
            let met = match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            };
            println!("| {goal} | {measured} | {met} |");
        }
    }
}
