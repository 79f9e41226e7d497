//! HTTP/2 abuse: rapid reset, too many streams, CONTINUATION floods, HPACK bombs, PING and
//! SETTINGS floods and a client that never opens its flow-control window.
//!
//! Well-formed abuse goes through the `h2` crate over TLS (ALPN `h2`, trusting the edge's
//! certificate); what `h2` will not produce is written as raw frames to the plain listener,
//! which takes HTTP/2 with prior knowledge. After each attack an ordinary client is served,
//! and the origin counts what got through.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::common::{Reply, TestEdge, TestOrigin, get, payload, within};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// An origin that answers every path with a cacheable body naming it.
async fn origin() -> TestOrigin {
    TestOrigin::start(|parts| {
        Reply::ok(format!("origin saw {}", parts.uri.path())).header("cache-control", "max-age=60")
    })
    .await
}

/// An ordinary client is still served, over HTTPS and over plain HTTP.
async fn assert_serves(edge: &TestEdge, path: &str) {
    let r = get(&edge.https_client(), &edge.https_url(path)).await;
    assert_eq!(r.status, StatusCode::OK, "the edge still serves over HTTPS");
    assert_eq!(r.body, format!("origin saw {path}"));
    let r = get(&edge.http_client(), &edge.http_url(path)).await;
    assert_eq!(r.status, StatusCode::OK, "the edge still serves over HTTP");
}

// ---------------------------------------------------------------------------------------------
// Clients.

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// TLS to the edge's HTTPS listener, offering only `h2`.
pub(crate) async fn tls(edge: &TestEdge) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            edge.cert_der().to_vec(),
        ))
        .expect("the edge's certificate");
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    within(10, "TLS handshake with the edge", async {
        let tcp = TcpStream::connect(edge.https).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let s = connector.connect(name, tcp).await.expect("TLS handshake");
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        s
    })
    .await
}

/// An `h2` client over TLS; the connection task ends with the reason the edge gave, if any.
async fn h2_client(
    edge: &TestEdge,
    builder: &h2::client::Builder,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let io = tls(edge).await;
    let (send, conn) = within(10, "h2 handshake", builder.handshake(io))
        .await
        .expect("h2 handshake");
    (send, tokio::spawn(conn))
}

fn get_request(edge: &TestEdge, path: &str) -> http::Request<()> {
    http::Request::get(edge.https_url(path))
        .body(())
        .expect("request")
}

/// One frame as read off the wire.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    /// (last stream id, error code) of a GOAWAY.
    fn goaway(&self) -> Option<(u32, u32)> {
        (self.kind == GOAWAY).then(|| {
            (
                be32(&self.payload[0..4]) & 0x7fff_ffff,
                be32(&self.payload[4..8]),
            )
        })
    }

    /// The error code of a RST_STREAM.
    fn reset(&self) -> Option<u32> {
        (self.kind == RST_STREAM).then(|| be32(&self.payload[0..4]))
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in values {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

/// A raw HTTP/2 connection: frames are written by hand and every frame the edge sends is read
/// by a task of its own (so a flood never blocks on an unread socket).
struct Wire {
    writer: tokio::io::WriteHalf<Box<dyn Io>>,
    frames: mpsc::UnboundedReceiver<Frame>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Wire {
    fn drop(&mut self) {
        // The socket closes when both halves are gone.
        self.reader.abort();
    }
}

impl Wire {
    /// HTTP/2 with prior knowledge to the plain listener: the preface and our SETTINGS.
    async fn cleartext(edge: &TestEdge, our_settings: &[(u16, u32)]) -> Wire {
        let tcp = TcpStream::connect(edge.http).await.expect("connect");
        let mut wire = Wire::over(Box::new(tcp));
        assert!(wire.send(PREFACE).await);
        assert!(wire.send(&settings(our_settings)).await);
        wire
    }

    fn over(io: Box<dyn Io>) -> Wire {
        let (mut reader, writer) = tokio::io::split(io);
        let (tx, frames) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut head = [0u8; 9];
            while reader.read_exact(&mut head).await.is_ok() {
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; len];
                if reader.read_exact(&mut payload).await.is_err() {
                    break;
                }
                let f = Frame {
                    kind: head[3],
                    flags: head[4],
                    stream: be32(&head[5..9]) & 0x7fff_ffff,
                    payload,
                };
                if tx.send(f).is_err() {
                    break;
                }
            }
        });
        Wire {
            writer,
            frames,
            reader,
        }
    }

    /// Writes `bytes`; `false` when the edge has closed the connection.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        within(20, "write to the edge", async {
            self.writer.write_all(bytes).await.is_ok() && self.writer.flush().await.is_ok()
        })
        .await
    }

    /// The next frame, or `None` when the edge closed the connection.
    async fn next(&mut self, secs: u64, what: &str) -> Option<Frame> {
        within(secs, what, self.frames.recv()).await
    }

    /// Every frame until the edge closes the connection.
    async fn until_closed(&mut self, secs: u64, what: &str) -> Vec<Frame> {
        let mut all = Vec::new();
        within(secs, what, async {
            while let Some(f) = self.frames.recv().await {
                all.push(f);
            }
        })
        .await;
        all
    }

    /// Frames that arrive until the edge has been quiet for `quiet` (or closed the connection),
    /// and whether it closed.
    async fn until_quiet(&mut self, quiet: Duration) -> (Vec<Frame>, bool) {
        let mut all = Vec::new();
        within(30, "the edge to go quiet", async {
            loop {
                match tokio::time::timeout(quiet, self.frames.recv()).await {
                    Ok(Some(f)) => all.push(f),
                    Ok(None) => return (all, true),
                    Err(_) => return (all, false),
                }
            }
        })
        .await
    }
}

/// An HPACK integer with an `n`-bit prefix, the rest of the first byte being `flags`.
fn hpack_int(out: &mut Vec<u8>, flags: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A string literal, without Huffman coding.
fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// A GET for `path`: `:method GET`, `:scheme http` (static table), `:path` and `:authority`
/// as literals without indexing.
fn request_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86];
    hpack_int(&mut b, 0x00, 4, 4);
    hpack_str(&mut b, path.as_bytes());
    hpack_int(&mut b, 0x00, 4, 1);
    hpack_str(&mut b, b"edge.test");
    b
}

// ---------------------------------------------------------------------------------------------
// Attacks.

/// CVE-2023-44487: 2,000 streams, each opened with HEADERS and reset with RST_STREAM at once,
/// in one burst, each for a different object. h2 counts streams the peer resets before the
/// server accepted them and answers more than 20 with GOAWAY(ENHANCE_YOUR_CALM) and a close
/// (after 21 streams here); the edge survives, and the resets do not turn into origin fetches
/// (none does in practice). A client library that opens and cancels in a loop fares the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_burst_is_cut_off() {
    let origin = origin().await;
    let edge = TestEdge::start(&origin).await;

    let mut wire = Wire::cleartext(&edge, &[]).await;
    let mut burst = Vec::new();
    for i in 0..2_000u32 {
        let stream = 2 * i + 1;
        burst.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            stream,
            &request_block(&format!("/rapid/{i}.ts")),
        ));
        burst.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
    }
    // The edge may close before it has read the whole burst.
    let _ = wire.send(&burst).await;
    let frames = wire
        .until_closed(10, "the edge to close the resetting connection")
        .await;
    let goaway = frames.iter().find_map(Frame::goaway);
    let (last_stream, code) = goaway.unwrap_or_else(|| panic!("no GOAWAY in {frames:?}"));
    assert_eq!(code, ENHANCE_YOUR_CALM, "GOAWAY reason");
    assert!(last_stream < 2 * 2_000, "GOAWAY last stream {last_stream}");

    // Only streams up to the GOAWAY's last stream id can have been processed at all; in
    // practice none gets as far as the origin (each is reset before its fill starts).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fetched = origin.count();
    let processed = (last_stream as usize).div_ceil(2);
    assert!(
        fetched <= processed.min(20),
        "{fetched} of 2,000 reset streams reached the origin (GOAWAY after {processed})"
    );
    assert_serves(&edge, "/after/rapid.ts").await;
    assert_eq!(origin.count(), fetched + 1);

    // The same through a well-behaved client library: open and cancel in a loop.
    let (mut send, conn) = h2_client(&edge, &h2::client::Builder::new()).await;
    let before = origin.count();
    let mut opened = 0;
    for i in 0..2_000 {
        let Ok(ready) = within(10, "h2 ready", send.clone().ready()).await else {
            break;
        };
        send = ready;
        let Ok((response, mut stream)) =
            send.send_request(get_request(&edge, &format!("/rapid-h2/{i}.ts")), true)
        else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        drop(response);
        opened += 1;
    }
    drop(send);
    let ended = within(10, "the h2 connection to end", conn)
        .await
        .expect("connection task");
    // h2 cuts this client off too (after a few hundred to about a thousand streams here; the
    // GOAWAY usually reaches the client as a broken pipe on its next write).
    assert!(
        opened == 2_000 || ended.is_err(),
        "opened {opened}, connection ended with {ended:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fetched = origin.count() - before;
    assert!(
        fetched <= 20,
        "{fetched} of {opened} cancelled streams reached the origin"
    );
    assert_serves(&edge, "/after/rapid-h2.ts").await;

    edge.stop().await;
    origin.stop().await;
}

/// `server.h2_max_concurrent_streams` is advertised in the edge's SETTINGS, streams beyond it
/// are refused with RST_STREAM(REFUSED_STREAM) before they reach the origin, and a client
/// that honours the setting never has more than that many requests at the origin at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_max_concurrent_are_refused() {
    let origin = TestOrigin::start(|parts| {
        Reply::ok(format!("origin saw {}", parts.uri.path()))
            .header("cache-control", "max-age=60")
            .delay(Duration::from_secs(1))
    })
    .await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| c.server.h2_max_concurrent_streams = 8)
        .start()
        .await;

    // Raw: 12 streams at once.
    let mut wire = Wire::cleartext(&edge, &[]).await;
    let first = wire.next(5, "the edge's SETTINGS").await.expect("SETTINGS");
    assert_eq!((first.kind, first.flags & ACK), (SETTINGS, 0), "{first:?}");
    let advertised = first
        .payload
        .chunks(6)
        .find(|s| u16::from_be_bytes([s[0], s[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS)
        .map(|s| be32(&s[2..]));
    assert_eq!(advertised, Some(8), "SETTINGS {first:?}");
    let mut burst = frame(SETTINGS, ACK, 0, &[]);
    for i in 0..12u32 {
        let block = request_block(&format!("/mcs/raw-{i}.ts"));
        burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &block));
    }
    assert!(wire.send(&burst).await);
    let mut refused = Vec::new();
    let mut answered = Vec::new();
    within(10, "8 answers and 4 refusals", async {
        while answered.len() < 8 || refused.len() < 4 {
            let f = wire.next(10, "a frame").await.expect("connection open");
            if f.reset() == Some(REFUSED_STREAM) {
                refused.push(f.stream);
            } else if f.kind == HEADERS {
                answered.push(f.stream);
            } else if let Some(reason) = f.reset().or(f.goaway().map(|g| g.1)) {
                panic!("unexpected reset/GOAWAY {reason:#x}: {f:?}");
            }
        }
    })
    .await;
    answered.sort_unstable();
    assert_eq!(answered, [1, 3, 5, 7, 9, 11, 13, 15]);
    assert_eq!(refused, [17, 19, 21, 23]);
    assert_eq!(origin.count(), 8, "refused streams never reach the origin");
    for i in 8..12 {
        assert_eq!(origin.count_path(&format!("/mcs/raw-{i}.ts")), 0);
    }
    drop(wire);

    // The h2 crate honours the limit once it has the edge's SETTINGS (streams it opens before
    // that are refused like the raw ones): one request first, then 20, 8 at a time.
    let (send, conn) = h2_client(&edge, &h2::client::Builder::new()).await;
    let mut first = within(10, "h2 ready", send.clone().ready())
        .await
        .expect("ready");
    let (response, _) = first
        .send_request(get_request(&edge, "/mcs/h2-first.ts"), true)
        .expect("send");
    let response = within(10, "first response", response)
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let before = origin.count();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let send = send.clone();
        let req = get_request(&edge, &format!("/mcs/h2-{i}.ts"));
        tasks.spawn(async move {
            let mut send = send.ready().await.expect("ready");
            let (response, _) = send.send_request(req, true).expect("send");
            let mut body = response.await.expect("response").into_body();
            let mut len = 0;
            while let Some(chunk) = body.data().await {
                let chunk = chunk.expect("body");
                len += chunk.len();
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            len
        });
    }
    within(5, "8 requests at the origin", async {
        while origin.count() < before + 8 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin.count(), before + 8, "at most 8 streams at once");
    let mut done = 0;
    within(20, "20 requests, 8 at a time", async {
        while let Some(len) = tasks.join_next().await {
            assert!(len.expect("request task") > 0);
            done += 1;
        }
    })
    .await;
    assert_eq!(done, 20);
    assert_eq!(origin.count(), before + 20);
    drop((send, first, response));
    conn.abort();

    assert_serves(&edge, "/after/mcs.ts").await;
    edge.stop().await;
    origin.stop().await;
}

/// A header block that never ends: HEADERS without END_HEADERS, then 10,000 CONTINUATION
/// frames (empty, or 1 kB of headers each). h2 allows 5 CONTINUATION frames per block at the
/// 16 KiB header-list limit and answers the flood with
/// GOAWAY(ENHANCE_YOUR_CALM, "too_many_continuations") and a close; nothing reaches the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_gets_goaway() {
    let origin = origin().await;
    let edge = TestEdge::start(&origin).await;

    for (what, fragment) in [
        ("empty CONTINUATION frames", Vec::new()),
        // Each fragment a literal header without indexing, 1,000 bytes.
        ("CONTINUATION frames of headers", {
            let mut b = Vec::new();
            hpack_int(&mut b, 0x00, 4, 0);
            hpack_str(&mut b, b"x-flood");
            hpack_str(&mut b, &[b'a'; 990]);
            b
        }),
    ] {
        let mut wire = Wire::cleartext(&edge, &[]).await;
        let mut flood = frame(HEADERS, END_STREAM, 1, &request_block("/cont/a.ts"));
        let one = frame(CONTINUATION, 0, 1, &fragment);
        for _ in 0..10_000 {
            flood.extend_from_slice(&one);
        }
        let _ = wire.send(&flood).await;
        let frames = wire
            .until_closed(10, &format!("{what}: the edge to close"))
            .await;
        let goaway = frames
            .iter()
            .find(|f| f.kind == GOAWAY)
            .unwrap_or_else(|| panic!("{what}: no GOAWAY in {frames:?}"));
        assert_eq!(goaway.goaway(), Some((0, ENHANCE_YOUR_CALM)), "{what}");
        assert_eq!(&goaway.payload[8..], b"too_many_continuations", "{what}");
        assert!(
            frames.iter().all(|f| f.kind != HEADERS),
            "{what}: the edge answered the unfinished block: {frames:?}"
        );
    }
    assert_eq!(origin.count(), 0);
    assert_serves(&edge, "/after/continuation.ts").await;
    assert_eq!(origin.count(), 1);
    edge.stop().await;
    origin.stop().await;
}

/// HPACK bomb: a header block inserts a 4,000-byte value into the dynamic table and then
/// refers to it 4,000 times (one byte each): 4 kB on the wire, 16 MB decoded. h2 stops decoding
/// past four times the 16 KiB header-list limit and closes the connection with
/// GOAWAY(ENHANCE_YOUR_CALM, "header_list_way_too_large"). A block just over the limit gets a
/// 431 on that stream and the connection stays; a connection that keeps sending those gets 431s
/// or REFUSED_STREAM resets and, after 1,024 resets, GOAWAY(ENHANCE_YOUR_CALM,
/// "too_many_internal_resets"). Nothing reaches the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bomb_is_refused() {
    let origin = origin().await;
    let edge = TestEdge::start(&origin).await;
    // Literal with incremental indexing, new name: lands in the dynamic table at index 62.
    let mut insert = Vec::new();
    insert.push(0x40);
    hpack_str(&mut insert, b"x-bomb");
    hpack_str(&mut insert, &[b'b'; 4_000]);
    let refs = [0xbe_u8; 4_000]; // indexed field 62

    // The bomb.
    let mut wire = Wire::cleartext(&edge, &[]).await;
    let mut block = request_block("/bomb/0.ts");
    block.extend_from_slice(&insert);
    block.extend_from_slice(&refs);
    assert!(
        wire.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
            .await
    );
    let frames = wire
        .until_closed(10, "the edge to close the bombing connection")
        .await;
    let goaway = frames.iter().find(|f| f.kind == GOAWAY).expect("GOAWAY");
    assert_eq!(goaway.goaway(), Some((0, ENHANCE_YOUR_CALM)), "{goaway:?}");
    assert_eq!(&goaway.payload[8..], b"header_list_way_too_large");
    assert!(frames.iter().all(|f| f.kind != HEADERS), "{frames:?}");

    // Just over the limit: 5 entries of 4 kB, 20 kB decoded.
    let mut wire = Wire::cleartext(&edge, &[]).await;
    let mut block = request_block("/bomb/1.ts");
    block.extend_from_slice(&insert);
    block.extend_from_slice(&refs[..4]);
    assert!(
        wire.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
            .await
    );
    let head = within(10, "the edge's answer to an oversized block", async {
        loop {
            let f = wire
                .next(10, "a frame")
                .await
                .expect("connection stays open");
            assert!(
                f.goaway().is_none(),
                "GOAWAY for one oversized block: {f:?}"
            );
            assert!(f.reset().is_none(), "a reset instead of a 431: {f:?}");
            if f.kind == HEADERS && f.stream == 1 {
                break f;
            }
        }
    })
    .await;
    assert_eq!(head.flags & END_STREAM, END_STREAM, "431 without a body");
    assert!(
        is_status_431(&head.payload),
        "the response head is not a 431: {:02x?}",
        head.payload
    );

    // Keep sending them on the same connection (each block now only refers to the entry): h2
    // answers 431 or REFUSED_STREAM and, after 1,024 streams it had to reset, GOAWAY.
    let mut blocks = Vec::new();
    for i in 1..3_000u32 {
        let mut b = request_block(&format!("/bomb/{}.ts", i + 1));
        b.extend_from_slice(&refs[..5]);
        blocks.extend(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &b));
    }
    let _ = wire.send(&blocks).await;
    let (frames, closed) = wire.until_quiet(Duration::from_secs(2)).await;
    let resets = frames.iter().filter_map(Frame::reset).collect::<Vec<_>>();
    assert!(
        closed,
        "the connection stays open after {} resets",
        resets.len()
    );
    let goaway = frames.iter().find(|f| f.kind == GOAWAY).expect("GOAWAY");
    assert_eq!(goaway.goaway().map(|g| g.1), Some(ENHANCE_YOUR_CALM));
    assert_eq!(&goaway.payload[8..], b"too_many_internal_resets");
    assert!(
        resets.iter().all(|&r| r == REFUSED_STREAM),
        "resets other than REFUSED_STREAM: {resets:?}"
    );
    assert!(
        frames
            .iter()
            .filter(|f| f.kind == HEADERS)
            .all(|f| is_status_431(&f.payload)),
        "an oversized block got an answer other than 431"
    );

    assert_eq!(origin.count(), 0, "no bomb reached the origin");
    assert_serves(&edge, "/after/bomb.ts").await;
    edge.stop().await;
    origin.stop().await;
}

/// `:status 431` in the edge's HPACK block: a literal value `431` (h2 writes statuses outside
/// the static table as literals with the static name `:status`), Huffman-coded or plain.
fn is_status_431(block: &[u8]) -> bool {
    // Huffman: '4' 011010, '3' 011001, '1' 00001, padded with 1s to 3 bytes.
    let huffman: &[u8] = &[0x83, 0x69, 0x90, 0xff];
    let plain: &[u8] = &[0x03, b'4', b'3', b'1'];
    block.windows(4).any(|w| w == huffman || w == plain)
}

/// 20,000 PINGs as fast as the socket takes them: the edge acknowledges every one (it answers
/// each before it reads the next, so the flood is paced by its own writes) and stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_is_answered() {
    let origin = origin().await;
    let edge = TestEdge::start(&origin).await;

    let mut wire = Wire::cleartext(&edge, &[]).await;
    let mut flood = frame(SETTINGS, ACK, 0, &[]);
    for i in 0..20_000u64 {
        flood.extend(frame(PING, 0, 0, &i.to_be_bytes()));
    }
    let sent = wire.send(&flood).await;
    let (frames, closed) = wire.until_quiet(Duration::from_millis(1_000)).await;
    let acks: Vec<u64> = frames
        .iter()
        .filter(|f| f.kind == PING && f.flags & ACK != 0)
        .map(|f| u64::from_be_bytes(f.payload[..8].try_into().unwrap()))
        .collect();
    assert!(sent, "the edge stopped reading the PINGs");
    assert!(!closed, "the edge closed the connection");
    assert_eq!(acks.len(), 20_000, "PING ACKs");
    assert!(
        acks.iter().enumerate().all(|(i, &p)| p == i as u64),
        "ACKs out of order"
    );

    // The same connection still serves a request.
    let block = request_block("/ping/a.ts");
    assert!(
        wire.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
            .await
    );
    let mut data = Vec::new();
    within(10, "an answer after the PING flood", async {
        loop {
            let f = wire.next(10, "a frame").await.expect("connection open");
            if f.kind == DATA && f.stream == 1 {
                data.extend_from_slice(&f.payload);
                if f.flags & END_STREAM != 0 {
                    break;
                }
            }
        }
    })
    .await;
    assert_eq!(data, b"origin saw /ping/a.ts");
    assert_eq!(origin.count(), 1);
    // Closed by us: a connection left open would hold the edge's drain on stop.
    drop(wire);
    assert_serves(&edge, "/after/ping.ts").await;
    edge.stop().await;
    origin.stop().await;
}

/// 20,000 SETTINGS frames: the edge acknowledges every one and stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_is_answered() {
    let origin = origin().await;
    let edge = TestEdge::start(&origin).await;

    let mut wire = Wire::cleartext(&edge, &[]).await;
    let mut flood = frame(SETTINGS, ACK, 0, &[]);
    for i in 0..20_000u32 {
        flood.extend(settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535 + i % 2)]));
    }
    let sent = wire.send(&flood).await;
    let (frames, closed) = wire.until_quiet(Duration::from_millis(1_000)).await;
    let acks = frames
        .iter()
        .filter(|f| f.kind == SETTINGS && f.flags & ACK != 0)
        .count();
    assert!(sent, "the edge stopped reading the SETTINGS");
    assert!(
        !closed,
        "the edge closed the connection: {:?}",
        frames.last()
    );
    // One more ACK for the client's first SETTINGS.
    assert_eq!(acks, 20_001, "SETTINGS ACKs");
    assert_eq!(origin.count(), 0);
    drop(wire);
    assert_serves(&edge, "/after/settings.ts").await;
    edge.stop().await;
    origin.stop().await;
}

/// A client that announces SETTINGS_INITIAL_WINDOW_SIZE = 0 and never opens the window gets
/// its response head and not one byte of body; the edge neither crashes nor stalls: the fill
/// completes, other clients get the whole object from the cache, and the origin is asked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_window_client_stalls_only_itself() {
    let body = payload(512 * 1024, 7);
    let origin =
        TestOrigin::fixed(Reply::ok(body.clone()).header("cache-control", "max-age=60")).await;
    let edge = TestEdge::start(&origin).await;

    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    let (send, conn) = h2_client(&edge, &builder).await;
    let mut send = within(10, "h2 ready", send.ready()).await.expect("ready");
    let (response, _) = send
        .send_request(get_request(&edge, "/zero/seg.ts"), true)
        .expect("send");
    let response = within(10, "response head", response)
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut stalled = response.into_body();
    let nothing = tokio::time::timeout(Duration::from_millis(500), stalled.data()).await;
    assert!(
        nothing.is_err(),
        "body bytes through a closed window: {nothing:?}"
    );

    // Others are served the whole object, from the one origin fetch.
    for _ in 0..3 {
        let r = get(&edge.https_client(), &edge.https_url("/zero/seg.ts")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body == body, "a complete, identical body");
    }
    let r = get(&edge.http_client(), &edge.http_url("/zero/seg.ts")).await;
    assert!(r.body == body);
    assert!(r.cache_status().hit, "stored: {:?}", r.cache_status());
    assert_eq!(origin.count(), 1, "the origin is asked once");
    assert_serves_other(&edge).await;

    // Still stalled, still open.
    let nothing = tokio::time::timeout(Duration::from_millis(200), stalled.data()).await;
    assert!(
        nothing.is_err(),
        "body bytes through a closed window: {nothing:?}"
    );
    assert!(
        !conn.is_finished(),
        "the edge dropped the stalled connection"
    );
    drop(stalled);
    drop(send);
    conn.abort();

    edge.stop().await;
    origin.stop().await;
}

/// Another object is served while a stalled client holds its stream.
async fn assert_serves_other(edge: &TestEdge) {
    let r = get(&edge.https_client(), &edge.https_url("/zero/other.ts")).await;
    assert_eq!(r.status, StatusCode::OK);
}
