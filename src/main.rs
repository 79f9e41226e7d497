//! The `streamedge` command: run an edge, check a config, run the synthetic origin, or (with
//! no arguments) the demo: origin and edge together on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use streamedge::config::{self, AccessLogFormat, Config};

#[derive(Parser)]
#[command(
    name = "streamedge",
    version,
    about = "An HTTP caching CDN edge for HLS and DASH video",
    long_about = "An HTTP caching CDN edge for HLS and DASH video.\n\n\
                  With no arguments it runs the demo: a synthetic origin and the edge in front of \
                  it on loopback (HTTP 127.0.0.1:8080, HTTPS 127.0.0.1:8443, admin 127.0.0.1:9090)."
)]
struct Cli {
    /// Run the edge with this YAML config (same as `streamedge run --config FILE`).
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge.
    Run,
    /// Validate a config file: exit 0, or print the field, line and column of the problem.
    Check,
    /// Run the synthetic origin: serves HLS/DASH files, and presents VOD renditions as live.
    Origin {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Directory of HLS/DASH files (default: the bundled demo media).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Delay added before every response's headers, in milliseconds.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Segments in a live playlist window.
        #[arg(long, default_value_t = 6)]
        live_window: usize,
    },
    /// Make a signed-URL token (see `signed_urls` in conf/edge.yaml).
    Sign {
        /// The signing key (one of a rule's `keys`).
        #[arg(long)]
        key: String,
        /// The path the token grants, or a prefix ending in `*` (e.g. /secure/live/*).
        #[arg(long)]
        acl: String,
        /// How long the token is valid, e.g. 1h or 30m.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

fn main() -> ExitCode {
    streamedge::tune_allocator();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("streamedge: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match (cli.command, cli.config) {
        (Some(Command::Check), Some(path)) => return check(&path),
        (Some(Command::Check), None) => {
            eprintln!("streamedge check: --config FILE is required");
            return ExitCode::from(2);
        }
        (Some(Command::Run), None) => {
            eprintln!("streamedge run: --config FILE is required");
            return ExitCode::from(2);
        }
        (Some(Command::Run) | None, Some(path)) => runtime.block_on(run(path)),
        (Some(Command::Sign { key, acl, ttl }), _) => return sign(&key, &acl, &ttl),
        (None, None) => runtime.block_on(demo()),
        (
            Some(Command::Origin {
                listen,
                dir,
                delay_ms,
                live_window,
            }),
            _,
        ) => runtime.block_on(origin(listen, dir, delay_ms, live_window)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamedge: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(c) => {
            println!(
                "{}: ok ({} origin{}, cache {})",
                path.display(),
                c.origins.len(),
                if c.origins.len() == 1 { "" } else { "s" },
                config::Size(c.cache.max_size)
            );
            for w in c.warnings() {
                eprintln!("{}: warning: {w}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn sign(key: &str, acl: &str, ttl: &str) -> ExitCode {
    let ttl = match config::parse_duration(ttl) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("streamedge sign: --ttl: {e}");
            return ExitCode::from(2);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "{}",
        streamedge::signing::make_token(key.as_bytes(), acl, now + ttl.as_secs())
    );
    ExitCode::SUCCESS
}

/// SIGTERM or Ctrl-C. The handler is installed when this is called (not when the future is
/// first polled), so a signal that arrives while the edge is still starting stops it cleanly.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        #[cfg(unix)]
        {
            let Some(mut term) = term else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    streamedge::tls::install_provider();
    let config = config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let _log = streamedge::logging::init(&config.log.level, config.log.access);
    let shutdown = shutdown_signal();
    let listeners = streamedge::Listeners::bind(&config).await?;
    announce(&listeners.addrs());
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(reload_on_sighup(path, reload_tx));
    streamedge::run_with_reload(listeners, config, shutdown, Some(reload_rx)).await?;
    Ok(())
}

/// SIGHUP re-reads the config file. A file with errors is reported (field, line, column) and
/// the running configuration stays.
async fn reload_on_sighup(path: PathBuf, tx: tokio::sync::mpsc::Sender<Config>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match config::load(&path) {
                Ok(c) => {
                    tracing::info!(file = %path.display(), "SIGHUP: reloading configuration");
                    if tx.send(c).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::error!("SIGHUP: {e}; keeping the running configuration"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, tx);
    }
}

fn announce(a: &streamedge::Addrs) {
    if let Some(h) = a.http {
        tracing::info!("listening on http://{h}");
    }
    if let Some(h) = a.https {
        tracing::info!("listening on https://{h}");
    }
    if let Some(h) = a.admin {
        tracing::info!("admin on http://{h} (/metrics, /healthz, /readyz)");
    }
}

async fn origin(
    listen: SocketAddr,
    dir: Option<PathBuf>,
    delay_ms: u64,
    live_window: usize,
) -> anyhow::Result<()> {
    let _log = streamedge::logging::init("info", AccessLogFormat::Text);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let opts = streamedge::origin::OriginOptions {
        dir,
        delay: Duration::from_millis(delay_ms),
        live_window,
        requests: None,
    };
    tracing::info!("origin on http://{listen}");
    for (label, path) in streamedge::origin::demo_paths() {
        tracing::info!("  {label}: http://{listen}{path}");
    }
    streamedge::origin::serve(listener, opts, shutdown_signal()).await?;
    Ok(())
}

/// The demo: the synthetic origin on a free loopback port, the edge in front of it.
async fn demo() -> anyhow::Result<()> {
    streamedge::tls::install_provider();
    let _log = streamedge::logging::init("info", AccessLogFormat::Text);
    let origin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin_addr = origin_listener.local_addr()?;
    let (stop_origin, origin_stopped) = tokio::sync::oneshot::channel::<()>();
    let origin_task = tokio::spawn(streamedge::origin::serve(
        origin_listener,
        streamedge::origin::OriginOptions::default(),
        async move {
            let _ = origin_stopped.await;
        },
    ));
    let config = Config::demo(origin_addr);
    let listeners = streamedge::Listeners::bind(&config).await?;
    let addrs = listeners.addrs();
    println!("streamedge demo: origin at http://{origin_addr}, edge in front of it");
    for (label, path) in streamedge::origin::demo_paths() {
        if let Some(h) = addrs.https {
            println!("  {label:<11} https://localhost:{}{path}", h.port());
        }
        if let Some(h) = addrs.http {
            println!("  {label:<11} http://{h}{path}");
        }
    }
    if let Some(a) = addrs.admin {
        println!("  metrics    http://{a}/metrics");
    }
    println!(
        "The HTTPS certificate is self-signed (made at start): use -k with curl, or the http URLs."
    );
    streamedge::run(listeners, config, shutdown_signal()).await?;
    let _ = stop_origin.send(());
    let _ = origin_task.await;
    Ok(())
}
