//! A crowd of clients released at once: C connections opened first, then one GET on every
//! one at the same instant (the herd), timed from that instant; and the objects they fetch.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{self, Expect, Sample};

pub struct Outcome {
    /// Clients whose connection was open when the herd was released.
    pub connected: usize,
    pub results: Vec<Result<Sample, String>>,
}

/// Opens `clients` connections to `addr`, and once all are open (or failed) sends `GET path`
/// on every one at the same instant; times are measured from that instant.
pub async fn herd(
    addr: SocketAddr,
    path: &str,
    clients: usize,
    expect: Expect,
    timeout: Duration,
) -> Outcome {
    let connect_by = Instant::now() + timeout;
    let (ready_tx, mut ready_rx) = mpsc::channel::<bool>(clients);
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let (ready, mut go, path) = (ready_tx.clone(), go_rx.clone(), path.to_owned());
        tasks.spawn(async move {
            let stream = match tokio::time::timeout_at(connect_by, client::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let _ = ready.send(false).await;
                    return Err(format!("connect: {e}"));
                }
                Err(_) => {
                    let _ = ready.send(false).await;
                    return Err(format!("connect: timed out after {timeout:?}"));
                }
            };
            let _ = ready.send(true).await;
            drop(ready);
            let t0 = match tokio::time::timeout_at(connect_by, go.wait_for(Option::is_some)).await {
                Ok(Ok(t)) => t.unwrap_or_else(Instant::now),
                _ => return Err("the herd was never released".to_owned()),
            };
            match tokio::time::timeout(timeout, client::get(stream, addr, &path, expect, t0)).await
            {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {timeout:?}")),
            }
        });
    }
    drop(ready_tx);
    let mut connected = 0;
    let mut reported = 0;
    while reported < clients {
        match tokio::time::timeout_at(connect_by, ready_rx.recv()).await {
            Ok(Some(ok)) => {
                reported += 1;
                connected += usize::from(ok);
            }
            _ => break,
        }
    }
    let _ = go_tx.send(Some(Instant::now()));
    let mut results = Vec::with_capacity(clients);
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.unwrap_or_else(|e| Err(format!("client task failed: {e}"))));
    }
    Outcome { connected, results }
}

/// A reproducible pseudo-random object (xorshift64), so that misplaced bytes change the checksum.
pub fn make_object(size: usize) -> Bytes {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(size);
    Bytes::from(out)
}
