//! Connection limits: a connection that never asks for anything is closed after
//! `header_read_timeout` (not `idle_timeout`), and `max_connections` is fitted under the
//! open-file limit so accept never runs out of descriptors.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_ask_are_closed_after_the_header_read_timeout() {
    let origin = TestOrigin::fixed(Reply::ok("ok")).await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| {
            c.server.header_read_timeout = Duration::from_millis(400);
            c.server.idle_timeout = Duration::from_secs(20);
        })
        .start()
        .await;
    let window = Duration::from_millis(350)..Duration::from_millis(3000);

    // Plain TCP, not a byte sent.
    let silent = TcpStream::connect(edge.http).await.unwrap();
    let took = closed_within(silent, 10).await;
    assert!(window.contains(&took), "silent TCP closed after {took:?}");

    // TLS done, then nothing: the clock started at accept, not after the handshake.
    let tls = crate::h2::tls(&edge).await;
    let took = closed_within(tls, 10).await;
    assert!(window.contains(&took), "silent TLS closed after {took:?}");

    // The HTTP/2 preface and SETTINGS, but never a request.
    let mut h2 = TcpStream::connect(edge.http).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let took = closed_within(h2, 10).await;
    assert!(
        window.contains(&took),
        "request-less HTTP/2 closed after {took:?}"
    );

    // A request that begins before the deadline is answered.
    let mut late = TcpStream::connect(edge.http).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    late.write_all(b"GET /a HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = within(5, "answer", late.read(&mut buf)).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    assert_eq!(origin.count(), 1);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_is_fitted_under_the_open_file_limit() {
    let origin = TestOrigin::fixed(Reply::ok("ok").header("cache-control", "max-age=60")).await;
    let dir = TempDir::new("nofile");
    let config = dir.path().join("edge.yaml");
    std::fs::write(
        &config,
        format!(
            "listen:\n  http: \"127.0.0.1:0\"\nadmin:\n  listen: \"127.0.0.1:0\"\n\
             server:\n  max_connections: 50000\n\
             origins:\n  - url: \"{}\"\n",
            origin.url()
        ),
    )
    .unwrap();
    let edge = EdgeProcess::start_with_file_limit(&config, 256);
    let line = edge.wait_line("lowered to fit", 10);
    assert!(line.contains("using=128"), "{line}");

    // Twice as many idle connections as fit: the rest wait in the backlog, accept never fails.
    let http: std::net::SocketAddr = edge.http.trim_start_matches("http://").parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..256 {
        idle.push(TcpStream::connect(http).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    streamedge::tls::install_provider();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // The admin listener has its own budget: metrics answer while the client side is full.
    let metrics = get(&client, &format!("{}/metrics", edge.admin)).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert_eq!(
        metric_sum(&text, "streamedge_accept_errors_total", &[]),
        0.0
    );
    let open = metric_sum(&text, "streamedge_client_connections_open", &[]);
    assert!(
        open <= 129.0,
        "{open} connections open (128 clients + this admin one)"
    );
    assert_eq!(edge.count_lines("accept failed"), 0);

    drop(idle);
    let r = get(&client, &format!("{}/a.ts", edge.http)).await;
    assert_eq!(r.status, StatusCode::OK);
    origin.stop().await;
}
