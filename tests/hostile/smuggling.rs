//! HTTP/1.1 request smuggling and parser hardening: ambiguous message framing, malformed header
//! sections and oversized heads are refused (or read the one safe way), and a request hidden
//! inside another never reaches the origin as a request.
//!
//! Every case runs as a GET and as a POST (forwarded to the origin with its body), over a raw
//! socket to the plain listener, and checks the answers on the wire, whether the edge closed
//! the connection, and exactly what the origin received.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Reply, TestEdge, TestOrigin, get, within};

const HOST: &str = "edge.test";
/// A chunked body of `hello`.
const CHUNKED_HELLO: &str = "5\r\nhello\r\n0\r\n\r\n";
/// The request a smuggling attempt hides after the body the edge reads.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: edge.test\r\n\r\n";
/// How long a connection may stay silent before we take it that the edge waits for more.
const QUIET: Duration = Duration::from_millis(1500);

/// One response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the edge wrote back on one connection.
#[derive(Debug)]
struct Conversation {
    answers: Vec<Answer>,
    /// The edge closed (or reset) the connection instead of waiting for more.
    closed: bool,
    /// Bytes after the last complete answer.
    rest: Vec<u8>,
}

impl Conversation {
    fn statuses(&self) -> Vec<u16> {
        self.answers.iter().map(|a| a.status).collect()
    }
}

/// Sends `request` on a fresh connection and reads until the edge closes it (or goes quiet).
async fn converse(addr: SocketAddr, request: &[u8]) -> Conversation {
    within(30, "raw HTTP/1.1 conversation", async {
        let mut s = TcpStream::connect(addr).await.expect("connect to the edge");
        // The edge may answer and close before it has read everything (an oversized head):
        // a failed write is part of the outcome, not a failure of the test.
        let _ = s.write_all(request).await;
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let closed = loop {
            match tokio::time::timeout(QUIET, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
                Err(_) => break false,
            }
        };
        let mut answers = Vec::new();
        let mut at = 0;
        while let Some((answer, used)) = parse_answer(&raw[at..]) {
            answers.push(answer);
            at += used;
        }
        Conversation {
            answers,
            closed,
            rest: raw[at..].to_vec(),
        }
    })
    .await
}

/// One complete response at the start of `raw`, and how many bytes it took.
fn parse_answer(raw: &[u8]) -> Option<(Answer, usize)> {
    let end = find(raw, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    let used = if status < 200 || status == 204 || status == 304 {
        0
    } else if answer
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let (body, used) = dechunk(rest)?;
        answer.body = body;
        used
    } else if let Some(len) = answer.header("content-length") {
        let len: usize = len.parse().ok()?;
        answer.body = rest.get(..len)?.to_vec();
        len
    } else {
        answer.body = rest.to_vec();
        rest.len()
    };
    Some((answer, end + 4 + used))
}

/// A complete chunked body at the start of `raw` (no trailers), and how many bytes it took.
fn dechunk(raw: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + find(&raw[at..], b"\r\n")?;
        let size = std::str::from_utf8(&raw[at..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            return (raw.get(at..at + 2)? == b"\r\n").then_some((body, at + 2));
        }
        body.extend_from_slice(raw.get(at..at + size)?);
        at += size + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `METHOD path HTTP/1.1`, a valid Host, the `framing` header lines (each ending in CRLF), the
/// blank line, then `body`.
fn request(method: &Method, path: &str, framing: &str, body: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n{framing}\r\n{body}").into_bytes()
}

/// An origin that answers every request with its path, and an edge in front of it that
/// forwards POST (uncached, with its body: only when told to).
async fn setup() -> (TestOrigin, TestEdge) {
    let origin = TestOrigin::start(|parts| {
        Reply::ok(format!("origin saw {}", parts.uri.path())).header("cache-control", "max-age=60")
    })
    .await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| c.server.forward_unsafe_methods = true)
        .start()
        .await;
    (origin, edge)
}

/// After the attacks: nothing hidden ever reached the origin, and an ordinary client is served.
async fn finish(origin: TestOrigin, edge: TestEdge, expected_origin_requests: usize) {
    // Anything the edge were still forwarding would arrive within this pause.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = origin.requests();
    assert!(
        seen.iter()
            .all(|s| !s.path.contains("smuggled") && !s.path.contains("hidden")),
        "a hidden request reached the origin: {:?}",
        seen.iter().map(|s| &s.path).collect::<Vec<_>>()
    );
    assert_eq!(
        origin.count(),
        expected_origin_requests,
        "origin requests: {:?}",
        seen.iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect::<Vec<_>>()
    );
    let r = get(&edge.http_client(), &edge.http_url("/after/attacks.ts")).await;
    assert_eq!(r.status, StatusCode::OK, "the edge still serves");
    assert_eq!(r.body, "origin saw /after/attacks.ts");
    edge.stop().await;
    origin.stop().await;
}

/// Sends a request the edge must refuse: `status` on the wire, the connection closed, and
/// nothing reaches the origin.
async fn assert_refused(
    edge: &TestEdge,
    origin: &TestOrigin,
    case: &str,
    request: &[u8],
    status: u16,
) {
    let before = origin.count();
    let c = converse(edge.http, request).await;
    assert_eq!(c.statuses(), [status], "{case}: answers {c:?}");
    assert!(c.closed, "{case}: the edge kept the connection open: {c:?}");
    assert!(
        c.rest.is_empty(),
        "{case}: stray bytes after the answer: {c:?}"
    );
    assert_eq!(
        origin.count(),
        before,
        "{case}: the origin received {:?}",
        origin.requests().last()
    );
}

/// Sends a request the edge reads as a chunked `hello` body (GET or POST) followed by a hidden
/// request: one answer, the connection closed, and the origin sees exactly that one request.
async fn assert_read_as_chunked(
    edge: &TestEdge,
    origin: &TestOrigin,
    case: &str,
    method: &Method,
    path: &str,
    request: &[u8],
) {
    let before = origin.count();
    let c = converse(edge.http, request).await;
    assert_eq!(c.statuses(), [200], "{case}: answers {c:?}");
    assert_eq!(
        c.answers[0].body,
        format!("origin saw {path}").as_bytes(),
        "{case}"
    );
    assert!(
        c.closed,
        "{case}: with both Content-Length and Transfer-Encoding the connection must close \
         after the answer (RFC 9112 §6.3): {c:?}"
    );
    let seen = origin.requests();
    assert_eq!(seen.len(), before + 1, "{case}: origin saw {seen:?}");
    let s = &seen[before];
    assert_eq!((&s.method, s.path.as_str()), (method, path), "{case}");
    if method == Method::POST {
        assert_eq!(s.body, "hello", "{case}: the body the origin got");
        assert_eq!(
            s.headers.get("content-length").map(|v| v.as_bytes()),
            Some(&b"5"[..]),
            "{case}: the origin request is framed by its own length"
        );
    }
    assert!(
        s.headers.get("transfer-encoding").is_none(),
        "{case}: the client's framing leaked to the origin: {:?}",
        s.headers
    );
}

/// CL.TE and TE.CL: hyper reads the body as chunked (Transfer-Encoding overrides
/// Content-Length, RFC 9112 §6.1), drops the Content-Length and closes the connection after the
/// answer, so the bytes after the chunked body are never read as a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_read_as_chunked_then_closed() {
    let (origin, edge) = setup().await;
    let body = format!("{CHUNKED_HELLO}{SMUGGLED}");
    let mut n = 0;
    for method in [Method::GET, Method::POST] {
        for (order, framing) in [
            (
                "CL then TE, CL covers the hidden request",
                format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    body.len()
                ),
            ),
            (
                "TE then CL, CL covers the hidden request",
                format!(
                    "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                    body.len()
                ),
            ),
            (
                "CL then TE, CL shorter than the chunked body",
                "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n".to_owned(),
            ),
            (
                "TE then CL, CL zero",
                "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n".to_owned(),
            ),
        ] {
            n += 1;
            let path = format!("/cl-te/{n}.ts");
            let case = format!("{method} {order}");
            let req = request(&method, &path, &framing, &body);
            assert_read_as_chunked(&edge, &origin, &case, &method, &path, &req).await;
        }
    }
    finish(origin, edge, n).await;
}

/// Content-Length values that could be read two ways are refused with 400 and a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_content_length_is_refused() {
    let (origin, edge) = setup().await;
    let cases = [
        (
            "two different lines",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
        ),
        ("a list", "Content-Length: 5, 6\r\n"),
        ("a list of equal values", "Content-Length: 5, 5\r\n"),
        ("a sign", "Content-Length: +5\r\n"),
        ("negative", "Content-Length: -5\r\n"),
        ("two numbers", "Content-Length: 5 6\r\n"),
        ("hexadecimal", "Content-Length: 0x5\r\n"),
        (
            "overflowing u64",
            "Content-Length: 18446744073709551621\r\n",
        ),
        ("empty", "Content-Length:\r\n"),
    ];
    for method in [Method::GET, Method::POST] {
        for (i, (what, framing)) in cases.iter().enumerate() {
            let req = request(&method, &format!("/cl/{i}.ts"), framing, "hello");
            let case = format!("{method} Content-Length {what}");
            assert_refused(&edge, &origin, &case, &req, 400).await;
        }
    }
    finish(origin, edge, 0).await;
}

/// Transfer-Encoding values whose final coding is not exactly `chunked`, or a header line that
/// is not a valid field, are refused with 400 and a close, also next to a Content-Length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obfuscated_transfer_encoding_is_refused() {
    let (origin, edge) = setup().await;
    let cases = [
        ("xchunked", "Transfer-Encoding: xchunked\r\n"),
        ("chunkedx", "Transfer-Encoding: chunkedx\r\n"),
        (
            "chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n",
        ),
        ("identity", "Transfer-Encoding: identity\r\n"),
        (
            "chunked then a second line identity",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        ),
        (
            "a space before the colon",
            "Transfer-Encoding : chunked\r\n",
        ),
        ("a tab before the colon", "Transfer-Encoding\t: chunked\r\n"),
        (
            "a vertical tab before chunked",
            "Transfer-Encoding: \x0bchunked\r\n",
        ),
        (
            "a form feed after chunked",
            "Transfer-Encoding: chunked\x0c\r\n",
        ),
        ("quoted", "Transfer-Encoding: \"chunked\"\r\n"),
    ];
    for method in [Method::GET, Method::POST] {
        for (i, (what, te)) in cases.iter().enumerate() {
            for (j, cl) in ["", "Content-Length: 15\r\n"].iter().enumerate() {
                let path = format!("/te/{i}/{j}.ts");
                let req = request(&method, &path, &format!("{cl}{te}"), CHUNKED_HELLO);
                let case = format!("{method} Transfer-Encoding {what} {cl:?}");
                assert_refused(&edge, &origin, &case, &req, 400).await;
            }
        }
        // Transfer-Encoding does not exist in HTTP/1.0.
        let req = format!(
            "{method} /te/http10.ts HTTP/1.0\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n{CHUNKED_HELLO}"
        );
        let case = format!("{method} HTTP/1.0 with Transfer-Encoding");
        assert_refused(&edge, &origin, &case, req.as_bytes(), 400).await;
    }
    finish(origin, edge, 0).await;
}

/// Optional whitespace around the value and letter case are not obfuscation: RFC 9110 §5.5
/// strips the whitespace and codings are case-insensitive, so these are `chunked`, read as
/// such (never as the Content-Length next to them), and the connection closes after the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_with_optional_whitespace_is_still_chunked() {
    let (origin, edge) = setup().await;
    let cases = [
        ("a tab before the value", "Transfer-Encoding:\tchunked\r\n"),
        (
            "a space before the value",
            "Transfer-Encoding:  chunked\r\n",
        ),
        ("no space before the value", "Transfer-Encoding:chunked\r\n"),
        (
            "whitespace after the value",
            "Transfer-Encoding: chunked \t\r\n",
        ),
        ("upper case", "Transfer-Encoding: CHUNKED\r\n"),
        ("lower-case name", "transfer-encoding: chunked\r\n"),
    ];
    let body = format!("{CHUNKED_HELLO}{SMUGGLED}");
    let mut n = 0;
    for method in [Method::GET, Method::POST] {
        for (what, te) in cases {
            n += 1;
            let path = format!("/te-ows/{n}.ts");
            let framing = format!("Content-Length: {}\r\n{te}", body.len());
            let req = request(&method, &path, &framing, &body);
            let case = format!("{method} Transfer-Encoding {what}");
            assert_read_as_chunked(&edge, &origin, &case, &method, &path, &req).await;
        }
    }
    finish(origin, edge, n).await;
}

/// obs-fold (a header line that starts with a space or tab continues the previous one in old
/// HTTP) is refused with 400, including a fold that would hide a Transfer-Encoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_fold_is_refused() {
    let (origin, edge) = setup().await;
    let cases = [
        ("space", "X-Note: a\r\n b\r\nContent-Length: 5\r\n"),
        ("tab", "X-Note: a\r\n\tb\r\nContent-Length: 5\r\n"),
        (
            "folded Transfer-Encoding",
            "Content-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n",
        ),
        (
            "a folded line that looks like a header",
            "Content-Length: 5\r\nX-Note: a\r\n Transfer-Encoding: chunked\r\n",
        ),
        (
            "the first header line",
            " X-Note: a\r\nContent-Length: 5\r\n",
        ),
    ];
    for method in [Method::GET, Method::POST] {
        for (i, (what, framing)) in cases.iter().enumerate() {
            let req = request(&method, &format!("/fold/{i}.ts"), framing, "hello");
            let case = format!("{method} obs-fold {what}");
            assert_refused(&edge, &origin, &case, &req, 400).await;
        }
    }
    finish(origin, edge, 0).await;
}

/// Control bytes in the head are refused with 400: NUL, a bare CR (which some parsers take as
/// a line end, which would make the rest of the line a header), and a CR in the request line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_bytes_in_the_head_are_refused() {
    let (origin, edge) = setup().await;
    for method in [Method::GET, Method::POST] {
        let cases: [(&str, Vec<u8>); 6] = [
            (
                "NUL in a header value",
                request(&method, "/ctl/0.ts", "X-Note: a\0b\r\nContent-Length: 5\r\n", "hello"),
            ),
            (
                "NUL in a header name",
                request(&method, "/ctl/1.ts", "X-No\0te: a\r\nContent-Length: 5\r\n", "hello"),
            ),
            (
                "bare CR in a header value",
                request(&method, "/ctl/2.ts", "X-Note: a\rb\r\nContent-Length: 5\r\n", "hello"),
            ),
            (
                "bare CR hiding a Transfer-Encoding",
                request(
                    &method,
                    "/ctl/3.ts",
                    "Content-Length: 5\r\nX-Note: a\rTransfer-Encoding: chunked\r\n",
                    "hello",
                ),
            ),
            (
                "bare CR ending the request line",
                format!("{method} /ctl/4.ts HTTP/1.1\rHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello")
                    .into_bytes(),
            ),
            (
                "NUL in the request target",
                format!("{method} /ctl/5\0.ts HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello")
                    .into_bytes(),
            ),
        ];
        for (what, req) in cases {
            let case = format!("{method} {what}");
            assert_refused(&edge, &origin, &case, &req, 400).await;
        }
    }
    finish(origin, edge, 0).await;
}

/// hyper (httparse) accepts a bare LF as a line end, as RFC 9112 §2.2 allows. The safe
/// behaviour is that it is one line end everywhere: the request is read whole, served once,
/// and a POST's body reaches the origin intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_line_endings_are_read_as_line_ends() {
    let (origin, edge) = setup().await;
    let c = converse(
        edge.http,
        format!("GET /lf/a.ts HTTP/1.1\nHost: {HOST}\nConnection: close\n\n").as_bytes(),
    )
    .await;
    assert_eq!(c.statuses(), [200], "{c:?}");
    assert_eq!(c.answers[0].body, b"origin saw /lf/a.ts");
    assert!(c.closed, "Connection: close on a bare-LF line was honoured");

    let c = converse(
        edge.http,
        format!(
            "POST /lf/b.ts HTTP/1.1\nHost: {HOST}\nContent-Length: 5\nConnection: close\n\nhello"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(c.statuses(), [200], "{c:?}");
    assert!(c.closed);

    // Mixed line ends in one head, with a pipelined request after the body.
    let c = converse(
        edge.http,
        format!(
            "POST /lf/c.ts HTTP/1.1\r\nHost: {HOST}\nContent-Length: 5\r\n\nhello\
             GET /lf/d.ts HTTP/1.1\nHost: {HOST}\r\nConnection: close\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(c.statuses(), [200, 200], "{c:?}");
    assert_eq!(c.answers[1].body, b"origin saw /lf/d.ts");

    let seen = origin.requests();
    let got: Vec<(String, &str, &[u8])> = seen
        .iter()
        .map(|s| (s.method.to_string(), s.path.as_str(), &s.body[..]))
        .collect();
    assert_eq!(
        got,
        [
            ("GET".to_owned(), "/lf/a.ts", &b""[..]),
            ("POST".to_owned(), "/lf/b.ts", &b"hello"[..]),
            ("POST".to_owned(), "/lf/c.ts", &b"hello"[..]),
            ("GET".to_owned(), "/lf/d.ts", &b""[..]),
        ]
    );
    finish(origin, edge, 4).await;
}

/// A header section over the edge's limits gets 431 and a close, and reaches no origin: more
/// header lines than hyper's 100, and one header larger than the 256 KiB read buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_section_gets_431() {
    let (origin, edge) = setup().await;
    let many: String = (0..150).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let huge = format!("X-Filler: {}\r\n", "a".repeat(300 * 1024));
    for method in [Method::GET, Method::POST] {
        let req = request(&method, "/big/many.ts", &many, "");
        assert_refused(
            &edge,
            &origin,
            &format!("{method} 150 header lines"),
            &req,
            431,
        )
        .await;

        let req = request(&method, "/big/huge.ts", &huge, "");
        let before = origin.count();
        let c = converse(edge.http, &req).await;
        // The edge answers before it has read the rest of the head, so its close may reach
        // us as a reset that discards the answer: the status, when it arrives, is 431.
        assert!(
            c.statuses().is_empty() || c.statuses() == [431],
            "{method} 300 KiB header: {c:?}"
        );
        assert!(c.closed, "{method} 300 KiB header: connection left open");
        assert_eq!(
            origin.count(),
            before,
            "{method} 300 KiB header reached the origin"
        );
    }
    finish(origin, edge, 0).await;
}

/// A request target longer than hyper's 65,534-byte limit gets 414 and a close, and reaches no
/// origin; a target that does not fit the 256 KiB read buffer at all gets 431.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_target_gets_414() {
    let (origin, edge) = setup().await;
    for method in [Method::GET, Method::POST] {
        let path = format!("/long/{}.ts", "a".repeat(70_000));
        let req = request(&method, &path, "Content-Length: 0\r\n", "");
        assert_refused(&edge, &origin, &format!("{method} 70 kB target"), &req, 414).await;

        let path = format!("/long/{}.ts", "a".repeat(300 * 1024));
        let req = request(&method, &path, "Content-Length: 0\r\n", "");
        let before = origin.count();
        let c = converse(edge.http, &req).await;
        assert!(
            c.statuses().is_empty() || c.statuses() == [431],
            "{method} 300 KiB target: {c:?}"
        );
        assert!(c.closed, "{method} 300 KiB target: connection left open");
        assert_eq!(
            origin.count(),
            before,
            "{method} 300 KiB target reached the origin"
        );
    }
    // Just under the limit is a request like any other.
    let path = format!("/long/{}.ts", "b".repeat(60_000));
    let req = request(&Method::GET, &path, "Connection: close\r\n", "");
    let c = converse(edge.http, &req).await;
    assert_eq!(c.statuses(), [200], "60 kB target");
    assert_eq!(origin.count_path(&path), 1);
    finish(origin, edge, 1).await;
}

/// A body that holds a whole request, with a real request pipelined after it: the hidden one
/// is body bytes (dropped for a GET, forwarded as the body of a POST), never a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_hidden_in_a_body_never_reaches_the_origin() {
    let (origin, edge) = setup().await;
    let hidden = "GET /hidden.ts HTTP/1.1\r\nHost: edge.test\r\n\r\n";
    let next = format!("GET /body/next.ts HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");

    // GET with a Content-Length body.
    let framing = format!("Content-Length: {}\r\n", hidden.len());
    let mut req = request(&Method::GET, "/body/get.ts", &framing, hidden);
    req.extend_from_slice(next.as_bytes());
    let c = converse(edge.http, &req).await;
    // hyper reads past the unread body and serves the pipelined request after it.
    assert_eq!(c.statuses(), [200, 200], "GET with a body: {c:?}");
    assert_eq!(c.answers[0].body, b"origin saw /body/get.ts");
    assert_eq!(c.answers[1].body, b"origin saw /body/next.ts");
    assert!(c.closed);

    // GET with a chunked body.
    let chunked = format!("{:x}\r\n{hidden}\r\n0\r\n\r\n", hidden.len());
    let mut req = request(
        &Method::GET,
        "/body/get-chunked.ts",
        "Transfer-Encoding: chunked\r\n",
        &chunked,
    );
    req.extend_from_slice(next.as_bytes());
    let c = converse(edge.http, &req).await;
    assert_eq!(c.statuses(), [200, 200], "GET with a chunked body: {c:?}");
    assert_eq!(c.answers[0].body, b"origin saw /body/get-chunked.ts");
    assert_eq!(c.answers[1].body, b"origin saw /body/next.ts");

    // POST: the hidden request is the body the origin gets, byte for byte.
    let mut req = request(&Method::POST, "/body/post.ts", &framing, hidden);
    req.extend_from_slice(next.as_bytes());
    let c = converse(edge.http, &req).await;
    assert_eq!(c.statuses(), [200, 200], "POST then GET: {c:?}");
    assert_eq!(c.answers[1].body, b"origin saw /body/next.ts");

    let seen = origin.requests();
    let post: Vec<_> = seen.iter().filter(|s| s.method == Method::POST).collect();
    assert_eq!(post.len(), 1, "{seen:?}");
    assert_eq!(post[0].path, "/body/post.ts");
    assert_eq!(post[0].body, hidden.as_bytes());
    assert!(
        seen.iter()
            .filter(|s| s.method == Method::GET)
            .all(|s| s.body.is_empty()),
        "a GET body was forwarded: {seen:?}"
    );
    // get.ts, get-chunked.ts, post.ts, and next.ts once (then a cache hit).
    assert_eq!(origin.count_path("/body/next.ts"), 1);
    finish(origin, edge, 4).await;
}

/// hyper accepts any transfer codings before a final `chunked` (`gzip, chunked`, even `foo,
/// chunked`) and decodes only the chunked layer; forwarded as they were, the still-coded bytes
/// would reach the origin as a plain body. RFC 9112 §6.1: a server that receives a transfer
/// coding it does not understand SHOULD answer 501 (Not Implemented); the edge does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_codings_other_than_chunked_are_not_implemented() {
    let (origin, edge) = setup().await;
    let before = origin.count();
    // The six conversations run at once: each ends when the edge has been quiet for a while.
    let mut conversations = tokio::task::JoinSet::new();
    for (i, te) in ["gzip, chunked", "foo, chunked", "identity, chunked"]
        .into_iter()
        .enumerate()
    {
        for method in [Method::GET, Method::POST] {
            let path = format!("/coding/{i}.ts");
            let framing = format!("Transfer-Encoding: {te}\r\n");
            let req = request(&method, &path, &framing, CHUNKED_HELLO);
            let addr = edge.http;
            conversations.spawn(async move { (method, te, converse(addr, &req).await) });
        }
    }
    while let Some(done) = conversations.join_next().await {
        let (method, te, c) = done.expect("conversation task");
        assert_eq!(
            c.statuses(),
            [501],
            "{method} Transfer-Encoding: {te}: {c:?}"
        );
    }
    assert_eq!(origin.count(), before, "no such request reaches the origin");
    finish(origin, edge, 0).await;
}
