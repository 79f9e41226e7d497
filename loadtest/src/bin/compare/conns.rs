//! Many connections (`conns-h1`, `conns-h2`): N keep-alive clients held open against one target
//! at once, HTTP/1.1 in the clear or TLS + HTTP/2, each trickling GETs of the 1 KB playlist at a
//! low rate; the target's memory before the connections, with all of them open, and at the end;
//! the latency of every request of a measured window.
//!
//! One task per client: it connects (TCP, and TLS with ALPN h2), asks once (the connection
//! counts as open when that answer is right), then asks again after a random wait, until told
//! to close. Connections open at `--conns-rate` per second, at most `CONNECTING` at once, so
//! that no accept backlog overflows; a connection that does not open, or a request that fails,
//! is counted (a result, not a crash), and its connection is dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use streamedge_loadtest::client::{self, Checksum, Expect};
use streamedge_loadtest::process;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::model::{ConnsRun, PATH_1K, Scenario, Target, scenario_index};

/// Connection attempts (connect, TLS handshake, first request) in flight at once.
const CONNECTING: usize = 256;
/// Bound on opening a connection (with its first request), and on every request.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on ending every client once told to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// From the last client ended to the reading after close.
const AFTER_CLOSE: Duration = Duration::from_secs(2);

/// Phases, as the clients see them (0 before the measured window): only requests sent in the
/// window are timed.
const MEASURING: u8 = 1;
const AFTER: u8 = 2;

/// How one run goes (from the command line).
pub(crate) struct Params {
    pub(crate) clients: usize,
    /// New connections per second.
    pub(crate) rate: u64,
    /// Mean wait between two requests of a connection; each wait is uniform in 2/3..4/3 of it.
    pub(crate) interval: Duration,
    /// From the last connection settled to the reading with all of them open.
    pub(crate) settle: Duration,
    /// The measured window.
    pub(crate) duration: Duration,
}

/// Where the clients connect, and how.
#[derive(Clone)]
pub(crate) enum Dial {
    /// HTTP/1.1 in the clear.
    H1(SocketAddr),
    /// TLS, ALPN h2 only, then HTTP/2.
    H2 { addr: SocketAddr, tls: TlsConnector },
}

/// A TLS client that trusts the run's certificate, offers only `h2`, and resumes no session:
/// every client is a new player, with a full handshake.
pub(crate) fn tls_connector(cert: &Path) -> anyhow::Result<TlsConnector> {
    let der = CertificateDer::from_pem_file(cert)
        .with_context(|| format!("cannot read the certificate {}", cert.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(der)
        .context("cannot trust the run's certificate")?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("cannot build the TLS client")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// What every client shares with the run.
#[derive(Default)]
struct Shared {
    phase: AtomicU8,
    /// Connections that opened (answered their first request).
    opened: AtomicUsize,
    /// Connections open now: opened, and no request failed since.
    live: AtomicUsize,
}

/// How a client ended.
enum Outcome {
    /// The connection did not open: why.
    NotOpened(String),
    /// It opened; the measured latencies, and the error that lost it, if one did.
    Ran {
        samples: Vec<Duration>,
        error: Option<String>,
    },
}

/// One client's connection.
enum Conn {
    H1 {
        stream: TcpStream,
        host: String,
    },
    H2 {
        send: h2::client::SendRequest<Bytes>,
        uri: http::Uri,
        /// The task that drives the connection (and answers the server's pings).
        _driver: AbortOnDrop,
    },
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn open(dial: &Dial) -> Result<Conn, String> {
    match dial {
        Dial::H1(addr) => {
            let stream = client::connect(*addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            Ok(Conn::H1 {
                stream,
                host: addr.to_string(),
            })
        }
        Dial::H2 { addr, tls } => {
            let tcp = client::connect(*addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
            let stream: TlsStream<TcpStream> = tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err("ALPN: the server did not choose h2".into());
            }
            let (send, conn) = h2::client::Builder::new()
                .handshake::<_, Bytes>(stream)
                .await
                .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            let uri = format!("https://{addr}{PATH_1K}")
                .parse()
                .map_err(|e| format!("{e}"))?;
            Ok(Conn::H2 {
                send,
                uri,
                _driver: AbortOnDrop(driver),
            })
        }
    }
}

/// GET of the 1 KB playlist on the connection; the whole body read and checked.
async fn get(conn: &mut Conn, expect: Expect) -> Result<(), String> {
    match conn {
        Conn::H1 { stream, host } => {
            let s = client::get_kept_alive(stream, host, PATH_1K, expect, Instant::now()).await?;
            if s.close {
                return Err("the server closes the connection (Connection: close)".into());
            }
            Ok(())
        }
        Conn::H2 { send, uri, .. } => {
            let req = http::Request::get(uri.clone())
                .body(())
                .map_err(|e| e.to_string())?;
            let mut send = send
                .clone()
                .ready()
                .await
                .map_err(|e| format!("HTTP/2 connection: {e}"))?;
            let (resp, _) = send
                .send_request(req, true)
                .map_err(|e| format!("send request: {e}"))?;
            let resp = resp.await.map_err(|e| format!("response head: {e}"))?;
            if resp.status() != http::StatusCode::OK {
                return Err(format!("status {}", resp.status().as_u16()));
            }
            let mut body = resp.into_body();
            let mut sum = Checksum::default();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(|e| format!("response body: {e}"))?;
                let _ = body.flow_control().release_capacity(chunk.len());
                sum.update(&chunk);
            }
            let len = sum.len;
            if len != expect.len {
                return Err(format!("body of {len} bytes, expected {}", expect.len));
            }
            if sum.finish() != expect.checksum {
                return Err("body checksum differs".into());
            }
            Ok(())
        }
    }
}

/// splitmix64: the clients' waits, without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 2/3..4/3 of `mean`.
    fn wait(&mut self, mean: Duration) -> Duration {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        mean.mul_f64(2.0 / 3.0 + u * 2.0 / 3.0)
    }
}

async fn client(
    dial: Dial,
    expect: Expect,
    interval: Duration,
    seed: u64,
    shared: Arc<Shared>,
    mut close: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) -> Outcome {
    let first = tokio::time::timeout(TIMEOUT, async {
        let mut conn = open(&dial).await?;
        get(&mut conn, expect)
            .await
            .map_err(|e| format!("first request: {e}"))?;
        Ok::<_, String>(conn)
    })
    .await;
    drop(permit);
    let mut conn = match first {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Outcome::NotOpened(e),
        Err(_) => {
            return Outcome::NotOpened(format!(
                "not open (connect, handshake and first request) within {TIMEOUT:?}"
            ));
        }
    };
    shared.opened.fetch_add(1, Ordering::Relaxed);
    shared.live.fetch_add(1, Ordering::Relaxed);
    let mut rng = Rng(seed);
    let mut samples = Vec::new();
    let mut next = Instant::now() + rng.wait(interval);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = close.changed() => break,
        }
        let measured = shared.phase.load(Ordering::Relaxed) == MEASURING;
        let sent = Instant::now();
        let error = match tokio::time::timeout(TIMEOUT, get(&mut conn, expect)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("no complete answer within {TIMEOUT:?}")),
        };
        if let Some(error) = error {
            shared.live.fetch_sub(1, Ordering::Relaxed);
            return Outcome::Ran {
                samples,
                error: Some(error),
            };
        }
        if measured {
            samples.push(sent.elapsed());
        }
        // From the send: the mean wait is the period of a connection's requests.
        next = sent + rng.wait(interval);
    }
    Outcome::Ran {
        samples,
        error: None,
    }
}

/// One run against one target: baseline memory, N connections opened, the settle, the
/// reading with all of them open, the measured window of trickled requests, the reading at its
/// end, then every connection closed, and a last reading (what the target keeps).
pub(crate) async fn run(
    round: usize,
    scenario: Scenario,
    target: Target,
    pid: Option<u32>,
    dial: Dial,
    expect: Expect,
    p: &Params,
) -> ConnsRun {
    let mem = || {
        pid.map(|pid| process::memory(&process::tree(pid)))
            .unwrap_or_default()
    };
    let shared = Arc::new(Shared::default());
    let (close_tx, close_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let mut r = ConnsRun {
        round,
        scenario_index: scenario_index(scenario),
        target,
        wanted: p.clients,
        opened: 0,
        open_secs: 0.0,
        held_loaded: 0,
        held_end: 0,
        connect_errors: BTreeMap::new(),
        errors: BTreeMap::new(),
        mem_base: mem(),
        mem_loaded: process::Mem::default(),
        mem_end: process::Mem::default(),
        mem_after: process::Mem::default(),
        latencies: Vec::new(),
        secs: 0.0,
        cache_cpu: 0.0,
        client_cpu: 0.0,
        other_cpu: 0.0,
    };

    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / p.rate.max(1) as f64);
    let mut clients = JoinSet::new();
    for i in 0..p.clients {
        tokio::time::sleep_until(started + period.mul_f64(i as f64)).await;
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let seed = ((round as u64) << 32) ^ i as u64 ^ ((scenario_index(scenario) as u64) << 48);
        clients.spawn(client(
            dial.clone(),
            expect,
            p.interval,
            seed,
            shared.clone(),
            close_rx.clone(),
            permit,
        ));
    }
    // Every attempt has settled when every permit is back.
    let _ = gate.acquire_many(CONNECTING as u32).await;
    r.open_secs = started.elapsed().as_secs_f64();
    r.opened = shared.opened.load(Ordering::Relaxed);

    tokio::time::sleep(p.settle).await;
    r.held_loaded = shared.live.load(Ordering::Relaxed);
    r.mem_loaded = mem();

    let pids = pid.map(process::tree).unwrap_or_default();
    let me = [std::process::id()];
    let (cache0, client0) = (process::cpu_seconds(&pids), process::cpu_seconds(&me));
    let window = Instant::now();
    let others = process::OtherCpu::start();
    shared.phase.store(MEASURING, Ordering::Relaxed);
    tokio::time::sleep(p.duration).await;
    shared.phase.store(AFTER, Ordering::Relaxed);
    r.other_cpu = others.cores();
    r.secs = window.elapsed().as_secs_f64();
    r.cache_cpu = (process::cpu_seconds(&pids) - cache0) / r.secs;
    r.client_cpu = (process::cpu_seconds(&me) - client0) / r.secs;
    r.held_end = shared.live.load(Ordering::Relaxed);
    r.mem_end = mem();

    close_tx.send_replace(true);
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, clients.join_next()).await {
            Ok(Some(Ok(Outcome::NotOpened(e)))) => *r.connect_errors.entry(e).or_insert(0) += 1,
            Ok(Some(Ok(Outcome::Ran { samples, error }))) => {
                r.latencies.extend(samples);
                if let Some(e) = error {
                    *r.errors.entry(e).or_insert(0) += 1;
                }
            }
            Ok(Some(Err(e))) => *r.errors.entry(format!("client task: {e}")).or_insert(0) += 1,
            Ok(None) => break,
            Err(_) => {
                let n = clients.len();
                clients.abort_all();
                *r.errors
                    .entry(format!("client not ended {CLOSE_TIMEOUT:?} after close"))
                    .or_insert(0) += n;
                break;
            }
        }
    }
    r.latencies.sort();
    tokio::time::sleep(AFTER_CLOSE).await;
    r.mem_after = mem();
    r
}
