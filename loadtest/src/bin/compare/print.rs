//! The printed report: the header (machine, versions, parameters) and the summary tables.

use std::net::SocketAddr;

use streamedge_loadtest::report::Machine;
use streamedge_loadtest::{nginx, process};

use crate::args::Args;
use crate::model::{Endpoint, PATH_1K, Results, Scenario, Target};
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
        "streamedge and bare server.runtime: {}",
        args.runtime.as_deref().unwrap_or("the edge's default")
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

/// The many-connections parameters, and each target's limits that let it hold them.
pub(crate) fn print_conns_header(args: &Args, hold: usize, targets: &[Target]) {
    let mean = args.conns_interval_ms as f64 / 1000.0;
    println!(
        "many connections: {} keep-alive connections per target, opened at {}/s (at most 256 connecting at once); each asks GET {PATH_1K} every {:.1}-{:.1} s (uniform; about {:.0} req/s in all); memory read before, {} s after the last connection opened, and at the end of {} s measured; in the first {} round(s)",
        args.conns_clients,
        args.conns_rate,
        mean * 2.0 / 3.0,
        mean * 4.0 / 3.0,
        args.conns_clients as f64 / mean,
        args.conns_settle_s,
        args.conns_duration,
        args.conns_rounds.min(args.rounds),
    );
    let nofile = process::nofile_hard_limit().unwrap_or(65536).min(65536);
    let mut limits = Vec::new();
    for t in targets {
        match t {
            Target::Edge | Target::Bare => limits.push(format!(
                "{}: server.max_connections {hold} (open files: raised to {nofile})",
                t.name()
            )),
            Target::Nginx => limits.push(format!(
                "nginx: worker_connections {} per worker ({} workers), worker_rlimit_nofile {nofile}",
                nginx::worker_connections(nofile, hold),
                if args.taskset { "1" } else { "auto" }
            )),
            Target::Varnish => limits.push(format!(
                "varnish: open files {nofile}; idle connections wait in its waiter (no thread each); HTTP/1.1 only"
            )),
            Target::Direct => {}
        }
    }
    println!("  limits: {}", limits.join("; "));
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
        if sc == Scenario::Herd || sc.conns() {
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
    for &sc in scenarios.iter().filter(|s| s.conns()) {
        if !endpoints
            .iter()
            .any(|e| s.conns_get(sc, e.target).is_some())
        {
            continue;
        }
        let mean = args.conns_interval_ms as f64 / 1000.0;
        println!(
            "\n{} ({} connections opened at {}/s, GET {PATH_1K} every {:.1}-{:.1} s each, {} s measured; medians over {} round(s))",
            sc.title(),
            args.conns_clients,
            args.conns_rate,
            mean * 2.0 / 3.0,
            mean * 4.0 / 3.0,
            args.conns_duration,
            args.conns_rounds.min(args.rounds),
        );
        println!(
            "| target | connections held | held at end | did not open | RSS baseline MiB | RSS loaded MiB | RSS end MiB | RSS after close MiB | KiB per connection | vs nginx | PSS KiB per connection | requests | req/s | p50 ms | p99 ms | max ms | p99 vs nginx | errors | cache CPU (cores) | client CPU (cores) | other CPU (cores) |"
        );
        println!(
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let ratio = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}x"));
        for e in endpoints {
            let Some(m) = s.conns_get(sc, e.target) else {
                println!(
                    "| {} | n/a{} | | | | | | | | | | | | | | | | | | | |",
                    e.target.name(),
                    if sc.tls() && e.https.is_none() {
                        " (no TLS)"
                    } else {
                        ""
                    }
                );
                continue;
            };
            println!(
                "| {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                e.target.name(),
                m.held_loaded,
                m.wanted,
                m.held_end,
                m.connect_failures,
                fmt_opt(m.rss_base, 1),
                fmt_opt(m.rss_loaded, 1),
                fmt_opt(m.rss_end, 1),
                fmt_opt(m.rss_after, 1),
                fmt_opt(m.kib_per_conn, 1),
                ratio(s.conns_mem_ratio(sc, e.target)),
                fmt_opt(m.pss_kib_per_conn, 1),
                m.requests,
                fmt_opt(m.rps, 0),
                fmt_opt(m.p50, 2),
                fmt_opt(m.p99, 2),
                fmt_opt(m.max, 2),
                ratio(s.conns_p99_ratio(sc, e.target)),
                m.errors,
                fmt_opt(m.cache_cpu, 2),
                fmt_opt(m.client_cpu, 2),
                fmt_opt(m.other_cpu, 2),
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
