//! streamedge: an HTTP caching edge node for HLS and DASH video.
//!
//! Players fetch manifests and segments over HTTPS (rustls, HTTP/1.1 and HTTP/2). The edge
//! answers from memory when it can; on a miss it fetches each object **once** from an origin
//! fleet, however many players asked, and streams the bytes to all of them as they arrive.
//!
//! A request goes through the phases of [`proxy`]:
//!
//! ```text
//! client ─TLS─▶ server ─▶ proxy::handle
//!                           admit    GET/HEAD for a served host, else 4xx
//!                           key      normalised path + query → CacheKey, media kind
//!                           lookup   fresh → respond | stale → revalidate / serve stale | miss
//!                           fill     join the in-flight fetch for the slot or lead a new one;
//!                                    the leader's detached task asks the ring's origin, and
//!                                    body chunks reach every waiter as they arrive
//!                           respond  Age, Cache-Status (RFC 9211), preconditions, Range
//!                           log      access line + metrics when the body ends
//! ```
//!
//! Modules: [`config`] (YAML → validated types), [`server`] (connections), [`tls`],
//! [`proxy`] (the phases), [`cache`] (store, policy, in-flight table), [`upstream`] (origins,
//! ring, health), [`compress`], [`metrics`], [`admin`], [`origin`] (the synthetic origin).

pub mod admin;
pub mod cache;
pub mod cmcd;
pub mod compress;
pub mod config;
pub mod error;
pub mod llhls;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod origin;
pub mod percent;
pub mod proxy;
pub mod server;
pub mod signing;
pub mod target;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::proxy::{Proxy, ProxyHandler, Runtime};
use crate::server::Server;

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

impl Listeners {
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        async fn bind(
            addr: Option<SocketAddr>,
            what: &str,
        ) -> std::io::Result<Option<TcpListener>> {
            match addr {
                None => Ok(None),
                Some(a) => TcpListener::bind(a).await.map(Some).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot listen on {a} ({what}): {e}"))
                }),
            }
        }
        Ok(Listeners {
            http: bind(config.listen.http, "listen.http").await?,
            https: bind(config.listen.https, "listen.https").await?,
            admin: bind(config.admin.as_ref().map(|a| a.listen), "admin.listen").await?,
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

/// Why an edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("tls: {0}")]
    Tls(String),
    #[error("origins: {0}")]
    Origins(String),
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
    mut reloads: Option<mpsc::Receiver<Config>>,
) -> Result<(), StartError> {
    tls::install_provider();
    metrics::install();
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let tls = match &config.tls {
        Some(t) => Some(tls::build(t).map_err(StartError::Tls)?),
        None => None,
    };
    let mut server_limits = config.server.clone();
    server_limits.max_connections = server::fit_connection_limit(server_limits.max_connections);
    let runtime = Runtime::new(config).map_err(StartError::Origins)?;
    let proxy = Arc::new(Proxy::new(runtime));

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = Server::new(&server_limits, stop_rx.clone());
    // The admin listener has its own connection budget: a saturated edge must still answer
    // /metrics and /healthz.
    let admin_limits = config::ServerConfig {
        max_connections: 256,
        ..server_limits.clone()
    };
    let admin_server = Server::new(&admin_limits, stop_rx);
    let listening = Arc::new(AtomicBool::new(false));
    let mut accept_loops = Vec::new();
    let handler = ProxyHandler(proxy.clone());
    if let Some(l) = listeners.http {
        accept_loops.push(tokio::spawn(server.clone().serve(l, None, handler.clone())));
    }
    if let (Some(l), Some(t)) = (listeners.https, tls.as_ref()) {
        let acceptor = tokio_rustls::TlsAcceptor::from(t.config.clone());
        accept_loops.push(tokio::spawn(server.clone().serve(
            l,
            Some(acceptor),
            handler.clone(),
        )));
    }
    if let Some(l) = listeners.admin {
        let admin = admin::AdminHandler {
            proxy: proxy.clone(),
            listening: listening.clone(),
        };
        accept_loops.push(tokio::spawn(admin_server.clone().serve(l, None, admin)));
    }
    listening.store(true, Ordering::Relaxed);

    let mut probes = proxy.runtime().upstream.spawn_probes();
    let upkeep = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                proxy.store.run_pending_tasks().await;
                metrics::upkeep(proxy.store.weighted_size(), proxy.store.entry_count());
            }
        }
    });

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(new) = next_reload(&mut reloads) => {
                match reload(&proxy, tls.as_ref(), new) {
                    Ok(()) => {
                        for p in probes.drain(..) {
                            p.abort();
                        }
                        probes = proxy.runtime().upstream.spawn_probes();
                        tracing::info!("configuration reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "reload failed; the running configuration stays"),
                }
            }
        }
    }

    tracing::info!("shutting down: no new connections, draining requests in flight");
    listening.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for l in accept_loops {
        let _ = l.await;
    }
    let drain = server_limits.drain_timeout;
    let (clients, _) = tokio::join!(server.drained(drain), admin_server.drained(drain));
    if !clients {
        tracing::warn!("drain timeout reached with requests still in flight");
    }
    for p in probes {
        p.abort();
    }
    upkeep.abort();
    Ok(())
}

async fn next_reload(reloads: &mut Option<mpsc::Receiver<Config>>) -> Option<Config> {
    match reloads {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Applies a new configuration: everything is built first, then swapped in at once.
fn reload(proxy: &Proxy, tls: Option<&tls::Tls>, new: Config) -> Result<(), String> {
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
        (
            "cache.max_object_size",
            old.cache.max_object_size != new.cache.max_object_size,
        ),
        (
            "server.max_connections",
            old.server.max_connections != new.server.max_connections,
        ),
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
