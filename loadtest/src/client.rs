//! The herd's client: one HTTP/1.1 GET per TCP connection, written by hand so that every
//! client really holds its own connection and the first body byte is timed exactly; and the
//! same GET on a connection kept alive, for sequential requests timed one by one.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 << 10;
const READ_BUF: usize = 64 << 10;

/// What one client saw, timed from the release of the herd.
#[derive(Debug, Clone)]
pub struct Sample {
    /// First body byte.
    pub ttfb: Duration,
    /// Last body byte.
    pub done: Duration,
    /// `Cache-Status` (streamedge) or `X-Cache-Status` (nginx), if any.
    pub cache_status: Option<String>,
    /// The server said `Connection: close`: this connection takes no further request.
    pub close: bool,
}

/// What every body must be.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub len: u64,
    pub checksum: u64,
}

/// Opens the connection. Kept apart from [`get`] so that the whole herd is connected before
/// any request is written.
pub async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends `GET path` on `stream` and reads the whole response; times are measured from `t0`.
/// The caller bounds the time.
pub async fn get(
    mut stream: TcpStream,
    host: SocketAddr,
    path: &str,
    expect: Expect,
    t0: Instant,
) -> Result<Sample, String> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: streamedge-herd\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    exchange(&mut stream, &request, expect, t0, true).await
}

/// Sends `GET path` with `Host: host` on a connection kept open for the next request, and
/// reads the whole response (which must have a length: `Content-Length` or chunked); times
/// are measured from `t0`. After an error the connection is in an unknown state: drop it.
/// The caller bounds the time.
pub async fn get_kept_alive(
    stream: &mut TcpStream,
    host: &str,
    path: &str,
    expect: Expect,
    t0: Instant,
) -> Result<Sample, String> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: streamedge-bench\r\nAccept: */*\r\n\r\n"
    );
    exchange(stream, &request, expect, t0, false).await
}

/// Writes `request` and reads its response; a body that ends with the connection only if
/// `until_close` is allowed.
async fn exchange(
    stream: &mut TcpStream,
    request: &str,
    expect: Expect,
    t0: Instant,
    until_close: bool,
) -> Result<Sample, String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write request: {e}"))?;

    let mut buf = vec![0u8; READ_BUF];
    let mut head = Vec::with_capacity(1024);
    let body_start = loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read head: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed before the response head ({} bytes read)",
                head.len()
            ));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = find(&head, b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > MAX_HEAD {
            return Err("response head larger than 64 KiB".into());
        }
    };
    let leftover = head.split_off(body_start);
    let parsed = parse_head(&head)?;
    if parsed.status != 200 {
        return Err(format!("status {}", parsed.status));
    }
    let framing = if parsed.chunked {
        Framing::Chunked(Chunked::default())
    } else if let Some(len) = parsed.content_length {
        if len != expect.len {
            return Err(format!("Content-Length {len}, expected {}", expect.len));
        }
        Framing::Length(len)
    } else if until_close {
        Framing::UntilClose
    } else {
        return Err(
            "response without Content-Length or chunked body on a kept-alive connection".into(),
        );
    };

    let mut body = BodyReader {
        framing,
        sum: Checksum::default(),
        ttfb: None,
        t0,
    };
    let mut finished = body.feed(&leftover)?;
    while !finished {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read body after {} bytes: {e}", body.sum.len))?;
        if n == 0 {
            if matches!(body.framing, Framing::UntilClose) {
                break;
            }
            return Err(format!(
                "connection closed after {} of {} body bytes",
                body.sum.len, expect.len
            ));
        }
        finished = body.feed(&buf[..n])?;
    }
    let done = t0.elapsed();
    let (len, checksum) = (body.sum.len, body.sum.finish());
    if len != expect.len {
        return Err(format!("body of {len} bytes, expected {}", expect.len));
    }
    if checksum != expect.checksum {
        return Err(format!(
            "body checksum {checksum:016x}, expected {:016x}",
            expect.checksum
        ));
    }
    Ok(Sample {
        ttfb: body.ttfb.unwrap_or(done),
        done,
        cache_status: parsed.cache_status,
        close: parsed.close,
    })
}

struct Head {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    cache_status: Option<String>,
    close: bool,
}

fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8".to_owned())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut parsed = Head {
        status,
        content_length: None,
        chunked: false,
        cache_status: None,
        close: false,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            parsed.content_length = Some(
                value
                    .parse()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            parsed.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            parsed.close = value.to_ascii_lowercase().contains("close");
        } else if name.eq_ignore_ascii_case("cache-status")
            || name.eq_ignore_ascii_case("x-cache-status")
        {
            parsed.cache_status = Some(value.to_owned());
        }
    }
    Ok(parsed)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

enum Framing {
    /// Body bytes still to come.
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

struct BodyReader {
    framing: Framing,
    sum: Checksum,
    ttfb: Option<Duration>,
    t0: Instant,
}

impl BodyReader {
    /// Takes bytes off the wire; true once the body is complete.
    fn feed(&mut self, bytes: &[u8]) -> Result<bool, String> {
        let (sum, ttfb, t0) = (&mut self.sum, &mut self.ttfb, self.t0);
        let mut data = |d: &[u8]| {
            if !d.is_empty() {
                if ttfb.is_none() {
                    *ttfb = Some(t0.elapsed());
                }
                sum.update(d);
            }
        };
        match &mut self.framing {
            Framing::Length(rest) => {
                let take = (*rest).min(bytes.len() as u64) as usize;
                data(&bytes[..take]);
                *rest -= take as u64;
                if take < bytes.len() {
                    return Err(format!(
                        "{} bytes after the declared body",
                        bytes.len() - take
                    ));
                }
                Ok(*rest == 0)
            }
            Framing::Chunked(c) => c.feed(bytes, &mut data),
            Framing::UntilClose => {
                data(bytes);
                Ok(false)
            }
        }
    }
}

/// A chunked transfer-coding decoder (RFC 9112 section 7.1), fed in arbitrary slices.
#[derive(Default)]
struct Chunked {
    state: ChunkState,
    /// The size line (or trailer line) read so far.
    line: Vec<u8>,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

impl Chunked {
    fn feed(&mut self, mut bytes: &[u8], data: &mut impl FnMut(&[u8])) -> Result<bool, String> {
        while !bytes.is_empty() {
            match self.state {
                ChunkState::Size | ChunkState::Trailer | ChunkState::DataEnd => {
                    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(bytes);
                        if self.line.len() > 4096 {
                            return Err("chunk line longer than 4 KiB".into());
                        }
                        return Ok(false);
                    };
                    self.line.extend_from_slice(&bytes[..nl]);
                    bytes = &bytes[nl + 1..];
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = match self.state {
                        ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
                        ChunkState::DataEnd => return Err("no CRLF after chunk data".into()),
                        ChunkState::Trailer if line.is_empty() => ChunkState::Done,
                        ChunkState::Trailer => ChunkState::Trailer,
                        _ => {
                            let hex = line.split(|&b| b == b';').next().unwrap_or_default();
                            let hex = std::str::from_utf8(hex).unwrap_or_default().trim();
                            match u64::from_str_radix(hex, 16) {
                                Ok(0) => ChunkState::Trailer,
                                Ok(n) => ChunkState::Data(n),
                                Err(_) => return Err(format!("bad chunk size {hex:?}")),
                            }
                        }
                    };
                }
                ChunkState::Data(rest) => {
                    let take = rest.min(bytes.len() as u64) as usize;
                    data(&bytes[..take]);
                    bytes = &bytes[take..];
                    self.state = if rest == take as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(rest - take as u64)
                    };
                }
                ChunkState::Done => return Err("bytes after the last chunk".into()),
            }
        }
        Ok(self.state == ChunkState::Done)
    }
}

/// A cheap position-sensitive checksum over 8-byte words: a rotate-xor chain and a sum.
#[derive(Default)]
pub struct Checksum {
    rx: u64,
    sum: u64,
    pending: [u8; 8],
    npending: usize,
    pub len: u64,
}

impl Checksum {
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.npending > 0 {
            let take = (8 - self.npending).min(bytes.len());
            self.pending[self.npending..self.npending + take].copy_from_slice(&bytes[..take]);
            self.npending += take;
            bytes = &bytes[take..];
            if self.npending < 8 {
                return;
            }
            self.word(u64::from_le_bytes(self.pending));
            self.npending = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            self.word(u64::from_le_bytes(a));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.npending = rest.len();
    }

    fn word(&mut self, w: u64) {
        self.rx = self.rx.rotate_left(7) ^ w;
        self.sum = self.sum.wrapping_add(w);
    }

    pub fn finish(mut self) -> u64 {
        if self.npending > 0 {
            self.pending[self.npending..].fill(0);
            self.word(u64::from_le_bytes(self.pending));
        }
        self.rx ^ self.sum.rotate_left(32) ^ self.len
    }

    pub fn of(bytes: &[u8]) -> u64 {
        let mut c = Checksum::default();
        c.update(bytes);
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_does_not_depend_on_slicing() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let whole = Checksum::of(&data);
        for step in [1, 3, 8, 13, 999] {
            let mut c = Checksum::default();
            data.chunks(step).for_each(|s| c.update(s));
            assert_eq!(c.finish(), whole, "step {step}");
        }
        let mut swapped = data.clone();
        swapped.swap(0, 8);
        assert_ne!(Checksum::of(&swapped), whole);
    }

    #[test]
    fn chunked_decoding_in_pieces() {
        let wire = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\n";
        for step in [1, 2, 5, wire.len()] {
            let mut c = Chunked::default();
            let mut out = Vec::new();
            let mut done = false;
            for piece in wire.chunks(step) {
                done = c.feed(piece, &mut |d| out.extend_from_slice(d)).unwrap();
            }
            assert!(done);
            assert_eq!(out, b"Wikipedia");
        }
    }
}
