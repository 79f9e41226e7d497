//! streamedge in-process, on its own runtime thread, through the library API; stopped on drop.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::sync::oneshot;

/// How long a stop may take (the config's drain timeout plus slack).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Edge {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    stopped: mpsc::Receiver<Result<(), String>>,
    thread: Option<JoinHandle<()>>,
}

/// The edge's config: plain HTTP on a free loopback port, `origin` as the only origin.
pub fn config_yaml(origin: SocketAddr) -> String {
    format!(
        r#"listen:
  http: "127.0.0.1:0"
server:
  drain_timeout: 2s
cache:
  max_size: 256MiB
origins:
  - url: "http://{origin}"
    name: herd-origin
log:
  access: off
"#
    )
}

impl Edge {
    pub fn start(yaml: &str, threads: usize) -> anyhow::Result<Edge> {
        let config = streamedge::config::parse(yaml)
            .map_err(|e| anyhow!("edge config: {e}\n---\n{yaml}---"))?;
        streamedge::tls::install_provider();
        let (addr_tx, addr_rx) = mpsc::channel::<Result<SocketAddr, String>>();
        let (stopped_tx, stopped_rx) = mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("edge".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("edge-rt")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(format!("cannot build the edge runtime: {e}")));
                        return;
                    }
                };
                let result = rt.block_on(async move {
                    let listeners = match streamedge::Listeners::bind(&config).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = addr_tx.send(Err(format!("edge: {e}")));
                            return Ok(());
                        }
                    };
                    let addr = listeners
                        .addrs()
                        .http
                        .ok_or_else(|| "edge has no http listener".to_owned());
                    let ok = addr.is_ok();
                    let _ = addr_tx.send(addr);
                    if !ok {
                        return Ok(());
                    }
                    streamedge::run(listeners, config, async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .map_err(|e| format!("edge stopped with an error: {e}"))
                });
                let _ = stopped_tx.send(result);
            })
            .context("cannot start the edge thread")?;
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| anyhow!("edge did not start: {e}"))?
            .map_err(|e| anyhow!(e))?;
        Ok(Edge {
            addr,
            stop: Some(stop_tx),
            stopped: stopped_rx,
            thread: Some(thread),
        })
    }

    /// Asks the edge to stop and waits (bounded) for it.
    pub fn stop(&mut self) {
        let Some(stop) = self.stop.take() else {
            return;
        };
        let _ = stop.send(());
        match self.stopped.recv_timeout(STOP_TIMEOUT) {
            Ok(Ok(())) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Ok(Err(e)) => eprintln!("{e}"),
            // The thread ended without a word (e.g. a start error already reported).
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!("edge did not stop within {STOP_TIMEOUT:?}; leaving its thread behind");
            }
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.stop();
    }
}
