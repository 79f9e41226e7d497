//! A raw origin: answers each request with whatever bytes a test scripts (malformed heads,
//! conflicting lengths, nothing at all), per request and per position on its connection, and
//! counts what it received. The scriptable `TestOrigin` is a real HTTP server and cannot
//! misbehave at this level.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the raw origin does with one request.
pub enum Act {
    /// Write these bytes and keep the connection for the next request.
    Send(Vec<u8>),
    /// Wait, then write these bytes.
    Later(Duration, Vec<u8>),
    /// Close the connection without answering.
    Close,
}

/// A well-formed keep-alive answer.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

type Script = dyn Fn(&str, usize) -> Act + Send + Sync;

pub struct RawOrigin {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RawOrigin {
    /// `script(path, n)` decides for the `n`-th request (0-based) of a connection.
    pub async fn start(script: impl Fn(&str, usize) -> Act + Send + Sync + 'static) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let task = tokio::spawn({
            let requests = requests.clone();
            let connections = connections.clone();
            async move {
                let mut conns = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        Ok((s, _)) = listener.accept() => {
                            connections.fetch_add(1, Ordering::SeqCst);
                            conns.spawn(serve(s, script.clone(), requests.clone()));
                        }
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    }
                }
            }
        });
        RawOrigin {
            addr,
            requests,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut s: TcpStream, script: Arc<Script>, requests: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        // One request head (the edge sends GETs without bodies).
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        requests.fetch_add(1, Ordering::SeqCst);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        match script(&path, n) {
            Act::Send(bytes) => {
                if s.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Act::Later(d, bytes) => {
                tokio::time::sleep(d).await;
                if s.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Act::Close => return,
        }
        n += 1;
    }
}
