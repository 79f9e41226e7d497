//! A raw HTTP/1.1 client: sends exactly the bytes a test writes (reqwest would normalise the
//! very targets and headers these tests are about) and reads one response.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::within;

/// One response read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// A response header's value (first one, case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `request` (complete bytes, which should ask for `Connection: close`) and reads the
/// response until the edge closes the connection.
pub async fn send(addr: SocketAddr, request: &[u8]) -> RawResponse {
    within(15, "raw request", async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write request");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        parse(&buf)
    })
    .await
}

/// `GET {target}` with the given extra header lines (each ending in `\r\n`).
pub async fn get(addr: SocketAddr, target: &str, headers: &str) -> RawResponse {
    let req = format!("GET {target} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n");
    send(addr, req.as_bytes()).await
}

/// `GET {target}` with `Host: edge.test`.
pub async fn get_path(addr: SocketAddr, target: &str) -> RawResponse {
    get(addr, target, "Host: edge.test\r\n").await
}

fn parse(buf: &[u8]) -> RawResponse {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    RawResponse {
        status,
        head,
        body: buf[end + 4..].to_vec(),
    }
}
