//! Running one edge: bound listeners, the proxy behind them, the admin listener, health
//! probes and upkeep; live reloads; and a graceful stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, RuntimeModel, ServerConfig};
use crate::proxy::{Proxy, ProxyHandler, Runtime};
use crate::server::Server;
use crate::tls::{self, TlsError};
use crate::upstream::UpstreamError;
use crate::{admin, metrics, server};

/// The bound sockets of one edge; bind first (port 0 in tests), then `run`.
pub struct Listeners {
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
    pub admin: Option<TcpListener>,
}

/// Where an edge listens, after binding.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

/// Connections a client listener queues before they are accepted (the kernel caps it at
/// `net.core.somaxconn`): a burst of thousands of players connecting at once must not meet
/// refused or dropped SYNs while the accept loops catch up.
const BACKLOG: u32 = 4096;

impl Listeners {
    /// Binds every configured listener. With `server.runtime: per_core` the client listeners
    /// are bound with `SO_REUSEPORT`, so that each core's runtime can accept on a copy of its own.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let reuse_port = config.server.runtime == RuntimeModel::PerCore;
        let named = |a: SocketAddr, what: &str, e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("cannot listen on {a} ({what}): {e}"))
        };
        let client = |addr: Option<SocketAddr>, what: &'static str| {
            addr.map(|a| {
                if reuse_port {
                    listen_shared(a)
                } else {
                    listen(a, false)
                }
                .map_err(|e| named(a, what, e))
            })
            .transpose()
        };
        let admin = match config.admin.as_ref().map(|a| a.listen) {
            None => None,
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(|e| named(a, "admin.listen", e))?,
            ),
        };
        Ok(Listeners {
            http: client(config.listen.http, "listen.http")?,
            https: client(config.listen.https, "listen.https")?,
            admin,
        })
    }

    pub fn addrs(&self) -> Addrs {
        let addr = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        Addrs {
            http: addr(&self.http),
            https: addr(&self.https),
            admin: addr(&self.admin),
        }
    }
}

/// A client listener on `addr` (SO_REUSEADDR, as tokio's own bind, and SO_REUSEPORT when
/// copies of it will share the port).
fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The first listener of an address its per-core copies will share: bound with SO_REUSEPORT
/// only once a probe without it found the address free, so that another process already
/// listening there (a second edge started by mistake) is an error, "address in use", as with
/// `work_stealing`, and not a silent share of the connections. For port 0, the port the
/// kernel picked for the probe.
fn listen_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let probe = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    probe.set_reuseaddr(true)?;
    probe.bind(addr)?;
    let addr = probe.local_addr()?;
    drop(probe);
    listen(addr, true)
}

/// Runs `serve` on one thread per CPU this process may use, each with a single-threaded
/// runtime, given that core's `SO_REUSEPORT` copies of the listeners (the first core gets the
/// listeners themselves; bind them with `server.runtime: per_core`, see [`Listeners::bind`]):
/// the kernel spreads new connections over the copies, and a connection stays on the core
/// that accepted it. Copies are bound before any thread starts, so a port that cannot be
/// shared fails here. Returns, per core, what resolves when its `serve` has finished.
/// Public so that the benchmarks' bare server runs exactly this model too.
pub fn per_core<F, Fut>(
    http: Option<TcpListener>,
    https: Option<TcpListener>,
    serve: F,
) -> std::io::Result<Vec<tokio::sync::oneshot::Receiver<()>>>
where
    F: Fn(usize, Option<TcpListener>, Option<TcpListener>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()>,
{
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let copies = |l: Option<TcpListener>| -> std::io::Result<Vec<Option<std::net::TcpListener>>> {
        let Some(l) = l else {
            return Ok((0..cores).map(|_| None).collect());
        };
        let addr = l.local_addr()?;
        let mut all = vec![Some(l.into_std()?)];
        for _ in 1..cores {
            all.push(Some(listen(addr, true)?.into_std()?));
        }
        Ok(all)
    };
    let (http, https) = (copies(http)?, copies(https)?);
    let mut done = Vec::with_capacity(cores);
    for (core, (http, https)) in http.into_iter().zip(https).enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (finished, rx) = tokio::sync::oneshot::channel();
        let serve = serve.clone();
        std::thread::Builder::new()
            .name(format!("edge-core-{core}"))
            .spawn(move || {
                runtime.block_on(async move {
                    // Registered with this core's runtime.
                    let register = |l: Option<std::net::TcpListener>| {
                        l.and_then(|l| match TcpListener::from_std(l) {
                            Ok(l) => Some(l),
                            Err(e) => {
                                tracing::error!(core, error = %e, "cannot register a per-core listener");
                                None
                            }
                        })
                    };
                    serve(core, register(http), register(https)).await;
                });
                let _ = finished.send(());
            })?;
        done.push(rx);
    }
    Ok(done)
}

/// Why an edge could not start, or a reload could not be applied (then the running
/// configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("per-core listeners: {0}")]
    PerCore(std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("origins: {0}")]
    Origins(#[from] UpstreamError),
}

/// Runs an edge on bound listeners until `shutdown` resolves, then stops accepting, lets
/// requests in flight finish (up to `server.drain_timeout`) and returns.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    run_with_reload(listeners, config, shutdown, None).await
}

/// `run`, plus live reconfiguration: every config received on `reloads` (already validated)
/// replaces origins, fetch and cache policy, key and signing rules, compression and prefetch
/// settings, the admin token and the TLS certificate. Listener addresses and cache sizes need
/// a restart; a reload that changes them says so in the log. A reload that cannot be applied
/// (e.g. an unreadable certificate) leaves the running configuration in place.
pub async fn run_with_reload(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()>,
    reloads: Option<mpsc::Receiver<Config>>,
) -> Result<(), StartError> {
    let mut edge = Edge::start(listeners, config)?;
    edge.serve_until(shutdown, reloads).await;
    edge.stop().await;
    Ok(())
}

/// A running edge and everything that has to be stopped with it.
struct Edge {
    proxy: Arc<Proxy>,
    tls: Option<tls::Tls>,
    limits: ServerConfig,
    server: Arc<Server>,
    admin_server: Arc<Server>,
    stop: watch::Sender<bool>,
    listening: Arc<AtomicBool>,
    accept_loops: Vec<JoinHandle<()>>,
    probes: Vec<JoinHandle<()>>,
    upkeep: JoinHandle<()>,
    /// Rolls the status page's numbers every second, while there is an admin listener.
    stats_ticker: Option<JoinHandle<()>>,
}

impl Edge {
    /// Builds the proxy and starts accepting on every listener.
    fn start(listeners: Listeners, config: Config) -> Result<Edge, StartError> {
        tls::install_provider();
        metrics::install();
        for w in config.warnings() {
            tracing::warn!("{w}");
        }
        let tls = config.tls.as_ref().map(tls::build).transpose()?;
        let mut limits = config.server.clone();
        limits.max_connections = server::fit_connection_limit(limits.max_connections);
        let proxy = Arc::new(Proxy::new(Runtime::new(config)?));
        let (stop, stop_rx) = watch::channel(false);
        let server = Server::new(&limits, stop_rx.clone());
        // The admin listener has its own connection budget: a saturated edge must still answer
        // /metrics and /healthz.
        let admin_limits = ServerConfig {
            max_connections: 256,
            ..limits.clone()
        };
        let mut edge = Edge {
            admin_server: Server::new(&admin_limits, stop_rx),
            listening: Arc::new(AtomicBool::new(false)),
            accept_loops: Vec::new(),
            probes: proxy.runtime().spawn_background(),
            upkeep: spawn_upkeep(proxy.clone()),
            stats_ticker: None,
            proxy,
            tls,
            limits,
            server,
            stop,
        };
        edge.accept(listeners)?;
        Ok(edge)
    }

    fn accept(&mut self, listeners: Listeners) -> Result<(), StartError> {
        let handler = ProxyHandler(self.proxy.clone());
        let tls = self
            .tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
        let https = listeners.https.filter(|_| tls.is_some());
        if self.limits.runtime == RuntimeModel::PerCore {
            self.accept_per_core(listeners.http, https.zip(tls), handler)
                .map_err(StartError::PerCore)?;
        } else {
            if let Some(l) = listeners.http {
                let serving = self.server.clone().serve(l, None, handler.clone());
                self.accept_loops.push(tokio::spawn(serving));
            }
            if let (Some(l), Some(acceptor)) = (https, tls) {
                let serving = self.server.clone().serve(l, Some(acceptor), handler);
                self.accept_loops.push(tokio::spawn(serving));
            }
        }
        if let Some(l) = listeners.admin {
            let admin = admin::AdminHandler {
                proxy: self.proxy.clone(),
                listening: self.listening.clone(),
            };
            let serving = self.admin_server.clone().serve(l, None, admin);
            self.accept_loops.push(tokio::spawn(serving));
            self.stats_ticker = Some(spawn_stats_ticker(self.proxy.clone()));
        }
        self.listening.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// `server.runtime: per_core` (see [`per_core`]): each core's runtime serves the
    /// connections it accepted, with everything they start (fills, revalidations, prefetches),
    /// and keeps running after shutdown until the connections have drained (at most
    /// `server.drain_timeout`); its end counts as its accept loop's for `stop`.
    fn accept_per_core(
        &mut self,
        http: Option<TcpListener>,
        https: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
        handler: ProxyHandler,
    ) -> std::io::Result<()> {
        let (https, tls) = https.unzip();
        let (server, drain) = (self.server.clone(), self.limits.drain_timeout);
        let cores = per_core(http, https, move |_, http, https| {
            let (server, handler, tls) = (server.clone(), handler.clone(), tls.clone());
            async move {
                let serve = |l: Option<TcpListener>, tls| {
                    let (server, handler) = (server.clone(), handler.clone());
                    async move {
                        if let Some(l) = l {
                            server.serve(l, tls, handler).await;
                        }
                    }
                };
                tokio::join!(serve(http, None), serve(https, tls));
                // The connections this runtime accepted run only while it does.
                server.drained(drain).await;
            }
        })?;
        for done in cores {
            self.accept_loops.push(tokio::spawn(async move {
                let _ = done.await;
            }));
        }
        Ok(())
    }

    /// Applies reloads until `shutdown` resolves.
    async fn serve_until(
        &mut self,
        shutdown: impl Future<Output = ()>,
        mut reloads: Option<mpsc::Receiver<Config>>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                Some(new) = next_reload(&mut reloads) => {
                    match reload(&self.proxy, self.tls.as_ref(), new) {
                        Ok(()) => {
                            for p in self.probes.drain(..) {
                                p.abort();
                            }
                            self.probes = self.proxy.runtime().spawn_background();
                            tracing::info!("configuration reloaded");
                        }
                        Err(e) => tracing::error!(error = %e, "reload failed; the running configuration stays"),
                    }
                }
            }
        }
    }

    /// Stops accepting, drains requests in flight (up to `server.drain_timeout`), stops the
    /// background tasks.
    async fn stop(self) {
        tracing::info!("shutting down: no new connections, draining requests in flight");
        self.listening.store(false, Ordering::Relaxed);
        let _ = self.stop.send(true);
        for l in self.accept_loops {
            let _ = l.await;
        }
        let drain = self.limits.drain_timeout;
        let (clients, _) =
            tokio::join!(self.server.drained(drain), self.admin_server.drained(drain));
        if !clients {
            tracing::warn!("drain timeout reached with requests still in flight");
        }
        // Objects already offered to the disk tier are written before the process goes.
        self.proxy.store.flush(drain).await;
        for p in self.probes {
            p.abort();
        }
        self.upkeep.abort();
        if let Some(t) = self.stats_ticker {
            t.abort();
        }
    }
}

/// Cache maintenance and metric upkeep every few seconds.
fn spawn_upkeep(proxy: Arc<Proxy>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            proxy.store.run_pending_tasks().await;
            metrics::upkeep(proxy.store.weighted_size(), proxy.store.entry_count());
        }
    })
}

/// Closes each second of the status page's numbers (rates, history, top keys).
fn spawn_stats_ticker(proxy: Arc<Proxy>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now() + Duration::from_secs(1);
        let mut tick = tokio::time::interval_at(start, Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            proxy.stats.tick();
        }
    })
}

async fn next_reload(reloads: &mut Option<mpsc::Receiver<Config>>) -> Option<Config> {
    match reloads {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Applies a new configuration: everything is built first, then swapped in at once.
fn reload(proxy: &Proxy, tls: Option<&tls::Tls>, new: Config) -> Result<(), StartError> {
    let old = proxy.runtime();
    let old = &old.config;
    let restart_needed = [
        ("listen.http", old.listen.http != new.listen.http),
        ("listen.https", old.listen.https != new.listen.https),
        (
            "admin.listen",
            old.admin.as_ref().map(|a| a.listen) != new.admin.as_ref().map(|a| a.listen),
        ),
        ("cache.max_size", old.cache.max_size != new.cache.max_size),
        ("cache.disk", old.cache.disk != new.cache.disk),
        (
            "cache.max_object_size",
            old.cache.max_object_size != new.cache.max_object_size,
        ),
        (
            "server.max_connections",
            old.server.max_connections != new.server.max_connections,
        ),
        ("server.runtime", old.server.runtime != new.server.runtime),
        (
            "tls (added or removed)",
            old.tls.is_some() != new.tls.is_some(),
        ),
    ];
    for (field, changed) in restart_needed {
        if changed {
            tracing::warn!(
                field,
                "changed in the config file: takes effect after a restart"
            );
        }
    }
    for w in new.warnings() {
        tracing::warn!("{w}");
    }
    let runtime = Runtime::new(new)?;
    if let (Some(tls), Some(cfg)) = (tls, runtime.config.tls.as_ref()) {
        tls.resolver.reload(cfg)?;
    }
    proxy.replace_runtime(runtime);
    Ok(())
}
