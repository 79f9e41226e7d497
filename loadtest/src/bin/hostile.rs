//! The hostile-traffic figures, against the release binary as a process of its own (the same
//! scenarios `tests/hostile/` asserts, at full size):
//!
//! - **slow readers**: the cache is filled to `--cache-mib`, then 20 HTTP/1.1 clients ask for
//!   different 50 MiB objects and never read, then one HTTP/2 connection with a zero window
//!   asks for 20 more; the edge's peak RSS is compared with cache + in-flight budget + 64 MiB;
//! - **keep-alive race**: an origin that closes keep-alive connections idle for 2 s (as Node
//!   does after its `keepAliveTimeout`), and bursts of misses 2 s apart; client errors counted.
//!
//! `--baseline BIN` runs an older binary through the same scenarios, side by side.
//! See loadtest/README.md.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use streamedge_loadtest::{edgeproc, origin, process};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use origin::{Behaviour, Content, Origin, Route};

#[derive(Parser, Debug)]
#[command(name = "hostile")]
struct Args {
    /// The streamedge binary to measure.
    #[arg(long, default_value = "target/release/streamedge")]
    edge: PathBuf,
    /// An older binary to run through the same scenarios (without `max_in_flight`).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// cache.max_size in MiB.
    #[arg(long, default_value_t = 512)]
    cache_mib: u64,
    /// cache.max_in_flight in MiB.
    #[arg(long, default_value_t = 256)]
    in_flight_mib: u64,
    /// Bursts of the keep-alive scenario.
    #[arg(long, default_value_t = 30)]
    bursts: usize,
    /// Scratch directory for configs and logs.
    #[arg(long, default_value = "target/hostile")]
    dir: PathBuf,
}

const MIB: u64 = 1 << 20;
const BIG: usize = 50 << 20;
const FILL: usize = 4 << 20;

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostile: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut bins = vec![("streamedge", args.edge.clone(), true)];
    if let Some(b) = &args.baseline {
        bins.push(("baseline", b.clone(), false));
    }
    println!(
        "machine: {} cores; cache {} MiB, in-flight budget {} MiB",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.cache_mib,
        args.in_flight_mib
    );
    for (name, bin, current) in &bins {
        let mem = slow_readers(args, name, bin, *current).await?;
        println!("{name}: slow readers: {mem}");
        let race = keep_alive_race(args, name, bin, *current).await?;
        println!("{name}: keep-alive race: {race}");
    }
    Ok(())
}

fn big_origin() -> anyhow::Result<Origin> {
    let full_speed = Behaviour {
        latency: Duration::ZERO,
        body_time: Duration::ZERO,
    };
    let route = |prefix: &str, size: usize| Route {
        prefix: prefix.into(),
        object: Bytes::from(vec![b'x'; size]),
        behaviour: full_speed,
    };
    Origin::start_content(
        Content {
            files: HashMap::new(),
            routes: vec![route("/big/", BIG), route("/fill/", FILL)],
        },
        1,
    )
}

fn start_edge(
    args: &Args,
    name: &str,
    bin: &Path,
    current: bool,
    origin: SocketAddr,
    scenario: &str,
) -> anyhow::Result<edgeproc::EdgeProcess> {
    let extra = format!("max_in_flight: {}MiB", args.in_flight_mib);
    edgeproc::EdgeProcess::start(
        bin,
        &args.dir.join(format!("{name}-{scenario}")),
        &edgeproc::EdgeConfig {
            origin,
            cache_mib: args.cache_mib,
            tls: None,
            cache_extra: if current { &extra } else { "" },
            server_extra: "",
        },
        &[],
    )
}

fn peak_mib(edge: &edgeproc::EdgeProcess) -> u64 {
    edge.pid().map_or(0, |p| process::memory(&[p]).hwm / 1024)
}

async fn slow_readers(
    args: &Args,
    name: &str,
    bin: &Path,
    current: bool,
) -> anyhow::Result<String> {
    let origin = big_origin()?;
    let edge = start_edge(args, name, bin, current, origin.addr, "memory")?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let base = format!("http://{}", edge.http);
    for i in 0..(args.cache_mib * MIB / FILL as u64 + 4) {
        let body = client
            .get(format!("{base}/fill/{i}.ts"))
            .send()
            .await?
            .bytes()
            .await?;
        if body.len() != FILL {
            bail!("fill object {i}: {} bytes", body.len());
        }
    }
    let filled = peak_mib(&edge);

    let mut idle = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(edge.http).await?;
        s.write_all(format!("GET /big/h1-{i}.ts HTTP/1.1\r\nHost: edge\r\n\r\n").as_bytes())
            .await?;
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let h1 = peak_mib(&edge);

    let tcp = TcpStream::connect(edge.http).await?;
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    let (send, conn) = builder.handshake::<_, Bytes>(tcp).await?;
    let conn = tokio::spawn(conn);
    let mut heads = Vec::new();
    for i in 0..20 {
        let mut send = send.clone().ready().await?;
        let req = http::Request::get(format!("http://edge/big/h2-{i}.ts")).body(())?;
        heads.push(send.send_request(req, true)?.0);
    }
    let mut streams = Vec::new();
    for h in heads {
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(20), h).await {
            streams.push(r);
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let h2 = peak_mib(&edge);
    let served = client
        .get(format!("{base}/fill/0.ts"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    drop(streams);
    conn.abort();
    drop(idle);
    let bound = args.cache_mib + args.in_flight_mib + 64;
    Ok(format!(
        "peak RSS {filled} MiB with the cache full, {h1} MiB with 20 HTTP/1.1 clients not \
         reading 50 MiB objects, {h2} MiB with 20 zero-window HTTP/2 streams more (bound \
         {bound} MiB: {}); others served meanwhile: {served}",
        if h2 <= bound { "within" } else { "ABOVE" }
    ))
}

/// An origin that closes a keep-alive connection idle for 2 s, as Node does once its
/// `keepAliveTimeout` is up; every answer is a small uncacheable body.
async fn closing_origin() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    let mut r = http::Response::new(Full::new(Bytes::from_static(b"ok")));
                    r.headers_mut().insert(
                        http::header::CACHE_CONTROL,
                        http::HeaderValue::from_static("no-store"),
                    );
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(2))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn keep_alive_race(
    args: &Args,
    name: &str,
    bin: &Path,
    current: bool,
) -> anyhow::Result<String> {
    let origin = closing_origin().await?;
    let edge = start_edge(args, name, bin, current, origin, "keepalive")?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let (mut total, mut failed) = (0, 0);
    for burst in 0..args.bursts {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..16 {
            let url = format!("http://{}/race/{burst}-{i}.ts", edge.http);
            let client = client.clone();
            set.spawn(async move { client.get(url).send().await.map(|r| r.status()) });
        }
        while let Some(r) = set.join_next().await {
            total += 1;
            if !matches!(r.context("client task")?, Ok(s) if s.is_success()) {
                failed += 1;
            }
        }
        // Pauses around the origin's idle limit: the pool's connections die as they are reused.
        let jitter = (burst as u64 * 37) % 100;
        tokio::time::sleep(Duration::from_millis(1950 + jitter)).await;
    }
    Ok(format!(
        "{failed} of {total} requests failed ({:.1}%) in {} bursts of 16, 2 s apart",
        100.0 * failed as f64 / total as f64,
        args.bursts
    ))
}
