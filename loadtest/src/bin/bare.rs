//! The bare server: the comparison's floor. hyper + rustls with streamedge's own connection
//! settings, answering GET and HEAD from the comparison origin's fixed files (loaded into memory
//! at start, with the origin's headers) and 404 otherwise: no cache, no origin, no edge logic.
//! What a hit costs on the edge's stack when the edge itself costs nothing.
//!
//! `bare --config FILE` reads a streamedge config and takes from it what streamedge's server
//! takes: `listen` (http, https), `tls` (built by streamedge's own `tls::build`) and `server`
//! (timeouts, connection and stream limits, drain, the runtime model); the rest is ignored. Each setting below
//! mirrors `src/server.rs`, `src/accept.rs` and `src/main.rs` of the edge; change them together.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use streamedge::config::{RuntimeModel, ServerConfig};
use streamedge_loadtest::{origin, setup};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// hyper + rustls with streamedge's connection settings, serving the comparison's fixed files
/// from memory.
#[derive(Parser, Debug)]
#[command(name = "bare")]
struct Args {
    /// A streamedge config: its listen, tls and server sections are used.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

/// Path → (the origin's response headers, body).
type Table = HashMap<String, (HeaderMap, Bytes)>;

fn main() -> ExitCode {
    // As streamedge's `main`: glibc's mmap threshold pinned at 256 KiB.
    streamedge::tune_allocator();
    let args = Args::parse();
    // As streamedge's `main`: the multi-threaded runtime with its default worker count (one
    // per CPU this process may use).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bare: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = streamedge::config::load(&args.config)?;
    let table = Arc::new(load_table()?);
    let tls = match &config.tls {
        Some(t) => Some(TlsAcceptor::from(streamedge::tls::build(t)?.config)),
        None => None,
    };
    // streamedge's own binding (backlog; SO_REUSEPORT with `server.runtime: per_core`).
    let streamedge::Listeners { http, https, admin } = streamedge::Listeners::bind(&config).await?;
    // The bare server has no admin listener.
    drop(admin);
    if https.is_some() && tls.is_none() {
        return Err(anyhow!("listen.https needs tls"));
    }
    let (stop, stop_rx) = watch::channel(false);
    let server = Arc::new(Bare::new(&config.server, table, stop_rx));
    let mut loops = Vec::new();
    if config.server.runtime == RuntimeModel::PerCore {
        // streamedge's own per-core model: a single-threaded runtime per CPU, each on its
        // copies of the listeners, running until its connections have drained.
        let (srv, drain) = (server.clone(), config.server.drain_timeout);
        let cores = streamedge::per_core(http, https, move |_, http, https| {
            let (server, tls) = (srv.clone(), tls.clone());
            async move {
                let serve = |l: Option<TcpListener>, tls| {
                    let server = server.clone();
                    async move {
                        if let Some(l) = l {
                            server.serve(l, tls).await;
                        }
                    }
                };
                tokio::join!(serve(http, None), serve(https, tls));
                server.drained(drain).await;
            }
        })?;
        for done in cores {
            loops.push(tokio::spawn(async move {
                let _ = done.await;
            }));
        }
    } else {
        if let Some(l) = http {
            loops.push(tokio::spawn(server.clone().serve(l, None)));
        }
        if let Some(l) = https {
            loops.push(tokio::spawn(server.clone().serve(l, tls)));
        }
    }
    let (mut term, mut int) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // As streamedge: stop accepting, let connections finish, at most `server.drain_timeout`.
    stop.send_replace(true);
    for l in loops {
        let _ = l.await;
    }
    server.drained(config.server.drain_timeout).await;
    Ok(())
}

/// The origin's fixed files with the headers the origin sends with them.
fn load_table() -> anyhow::Result<Table> {
    let (files, _) = setup::bench_files()?;
    Ok(files
        .into_iter()
        .map(|(path, (body, content_type))| {
            (path, (origin::headers(body.len(), content_type), body))
        })
        .collect())
}

/// The listener-independent state, as streamedge's `server::Server`.
struct Bare {
    limits: ServerConfig,
    connections: Arc<Semaphore>,
    auto: auto::Builder<TokioExecutor>,
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
    table: Arc<Table>,
    shutdown: watch::Receiver<bool>,
}

impl Bare {
    fn new(limits: &ServerConfig, table: Arc<Table>, shutdown: watch::Receiver<bool>) -> Bare {
        // streamedge's own builder: the same protocol settings, whatever they become.
        let make = || streamedge::http_builder(limits);
        Bare {
            limits: limits.clone(),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            auto: make(),
            h1: make().http1_only(),
            h2: make().http2_only(),
            table,
            shutdown,
        }
    }

    /// Waits until every connection has closed, at most `drain` (as streamedge's
    /// `Server::drained`).
    async fn drained(&self, drain: Duration) {
        let all = u32::try_from(self.limits.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(drain, self.connections.acquire_many(all)).await;
    }

    /// Accepts until shutdown, with one permit of `server.max_connections` per connection.
    async fn serve(self: Arc<Self>, listener: TcpListener, tls: Option<TlsAcceptor>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let stream = tokio::select! {
                biased;
                () = stopped(&mut shutdown) => return,
                r = listener.accept() => match r {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // streamedge's accept loop backs off on EMFILE and the like.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            // As streamedge's `Acceptor`.
            let _ = stream.set_nodelay(true);
            let permit = tokio::select! {
                p = self.connections.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                () = stopped(&mut shutdown) => return,
            };
            let server = self.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                server.connection(stream, tls).await;
                drop(permit);
            });
        }
    }

    /// In the clear: the auto builder (HTTP/1.1, or HTTP/2 by its preface). Over TLS: the
    /// handshake within `server.tls_handshake_timeout`, then HTTP/2 or HTTP/1.1 by ALPN.
    async fn connection(&self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        let Some(acceptor) = tls else {
            return self.drive(TokioIo::new(stream), &self.auto).await;
        };
        let handshake =
            tokio::time::timeout(self.limits.tls_handshake_timeout, acceptor.accept(stream)).await;
        let Ok(Ok(stream)) = handshake else {
            return;
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let builder = if h2 { &self.h2 } else { &self.h1 };
        self.drive(TokioIo::new(stream), builder).await;
    }

    /// Serves one connection until it ends, gracefully closed on shutdown.
    async fn drive<I>(&self, io: I, builder: &auto::Builder<TokioExecutor>)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let table = self.table.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let resp = respond(&table, &req);
            async move { Ok::<_, Infallible>(resp) }
        });
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = conn.as_mut() => return,
            () = stopped(&mut shutdown) => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    }
}

/// Resolves once shutdown has been signalled (as streamedge's `server::stopped`).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// GET and HEAD of a stored file: its headers (hyper adds `Date`) and body; 404 for any other
/// path, 405 for any other method.
fn respond(table: &Table, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let head = req.method() == Method::HEAD;
    if !head && req.method() != Method::GET {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"method not allowed\n")));
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let Some((headers, body)) = table.get(req.uri().path()) else {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    };
    let mut resp = Response::new(if head {
        Full::new(Bytes::new())
    } else {
        Full::new(body.clone())
    });
    *resp.headers_mut() = headers.clone();
    resp
}
