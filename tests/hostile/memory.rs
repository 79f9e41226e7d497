//! Memory that slow readers cannot pin: the edge binary's peak RSS stays within
//! `cache.max_size` + `cache.max_in_flight` + 64 MiB while clients ask for large objects and
//! never read them, over HTTP/1.1 and over one HTTP/2 connection with a zero window; and a
//! client that takes nothing for `send_timeout` is disconnected.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const MIB: u64 = 1 << 20;
const CACHE: u64 = 64 * MIB;
const IN_FLIGHT: u64 = 32 * MIB;
const BIG: usize = 50 << 20;

/// An origin with 50 MiB objects under /big/ (any name), 4 MiB ones under /fill/, and small ones.
async fn origin() -> TestOrigin {
    let big = payload(BIG, 1);
    let fill = payload(4 << 20, 2);
    TestOrigin::start(move |parts| {
        let path = parts.uri.path();
        let body: Bytes = if path.starts_with("/big/") {
            big.clone()
        } else if path.starts_with("/fill/") {
            fill.clone()
        } else {
            Bytes::from_static(b"small")
        };
        Reply::ok(body).header("cache-control", "max-age=600")
    })
    .await
}

fn start_edge(dir: &TempDir, origin: &TestOrigin) -> EdgeProcess {
    let config = dir.path().join("edge.yaml");
    std::fs::write(
        &config,
        format!(
            "listen:\n  http: \"127.0.0.1:0\"\nadmin:\n  listen: \"127.0.0.1:0\"\n\
             cache:\n  max_size: {}MiB\n  max_object_size: 60MiB\n  max_in_flight: {}MiB\n\
             server:\n  send_timeout: 60s\n\
             log:\n  access: off\n\
             origins:\n  - url: \"{}\"\n",
            CACHE / MIB,
            IN_FLIGHT / MIB,
            origin.url()
        ),
    )
    .unwrap();
    EdgeProcess::start(&config)
}

fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

/// Fills the cache to its size with objects read whole.
async fn fill_cache(client: &reqwest::Client, edge: &str) {
    for i in 0..(CACHE / (4 * MIB) + 2) {
        let r = get(client, &format!("{edge}/fill/{i}.ts")).await;
        assert_eq!(r.body.len(), 4 << 20);
    }
}

fn bound_kib() -> u64 {
    (CACHE + IN_FLIGHT + 64 * MIB) / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_cannot_pin_memory() {
    let origin = origin().await;
    let dir = TempDir::new("memory");
    let edge = start_edge(&dir, &origin);
    streamedge::tls::install_provider();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    fill_cache(&client, &edge.http).await;
    let after_fill = edge.memory_kib("VmHWM");

    // 20 HTTP/1.1 clients, each asking for a different 50 MiB object, none reading.
    let mut idle = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(addr(&edge.http)).await.unwrap();
        s.write_all(format!("GET /big/h1-{i}.ts HTTP/1.1\r\nHost: edge.test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let h1_peak = edge.memory_kib("VmHWM");

    // Others are still served meanwhile, from the cache and from the origin.
    let r = get(&client, &format!("{}/small/a.ts", edge.http)).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get(&client, &format!("{}/fill/1.ts", edge.http)).await;
    assert_eq!(r.body.len(), 4 << 20);

    // One HTTP/2 connection with a zero window and 20 streams for other 50 MiB objects.
    let tcp = TcpStream::connect(addr(&edge.http)).await.unwrap();
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    let (send, conn) = builder.handshake::<_, Bytes>(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut stalled = Vec::new();
    for i in 0..20 {
        let mut send = within(10, "h2 ready", send.clone().ready()).await.unwrap();
        let req = http::Request::get(format!("http://edge.test/big/h2-{i}.ts"))
            .body(())
            .unwrap();
        let (response, _) = send.send_request(req, true).unwrap();
        stalled.push(response);
    }
    let mut heads = Vec::new();
    for r in stalled {
        heads.push(within(20, "h2 response head", r).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let h2_peak = edge.memory_kib("VmHWM");
    let r = get(&client, &format!("{}/small/b.ts", edge.http)).await;
    assert_eq!(r.status, StatusCode::OK);

    let metrics = get(&client, &format!("{}/metrics", edge.admin)).await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    let held = metric_sum(&metrics, "streamedge_fill_buffered_bytes", &[]);
    eprintln!(
        "peak RSS: {} MiB after filling the cache, {} MiB with 20 idle HTTP/1.1 readers, \
         {} MiB with 20 zero-window HTTP/2 streams more (bound {} MiB); in flight now {:.1} MiB",
        after_fill / 1024,
        h1_peak / 1024,
        h2_peak / 1024,
        bound_kib() / 1024,
        held / MIB as f64
    );
    assert!(
        h2_peak <= bound_kib(),
        "peak RSS {h2_peak} KiB is above cache + in-flight + 64 MiB = {} KiB",
        bound_kib()
    );
    assert!(held <= (IN_FLIGHT + 8 * MIB) as f64, "in flight {held}");
    drop(heads);
    conn.abort();
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_takes_nothing_for_send_timeout_is_disconnected() {
    let origin = origin().await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| c.server.send_timeout = Duration::from_millis(500))
        .start()
        .await;
    // Warm the object so the stalled client gets a hit (the whole body is in memory).
    let r = get(&edge.http_client(), &edge.http_url("/big/slow.ts")).await;
    assert_eq!(r.body.len(), BIG);

    // Two clients that ask and then take nothing: one for the stored object, one for a miss.
    let mut stalled = Vec::new();
    for path in ["/big/slow.ts", "/big/miss.ts"] {
        let mut s = TcpStream::connect(edge.http).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: edge.test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        stalled.push((path, s));
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    for (path, mut s) in stalled {
        // Whatever was in flight arrives, then the edge's close.
        let mut got = 0;
        let mut buf = vec![0u8; 1 << 20];
        within(
            10,
            &format!("{path}: the stalled connection to close"),
            async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
            },
        )
        .await;
        assert!(got < BIG / 2, "{path}: read {got} bytes before the close");
    }
    let closed = metric_sum(
        &edge.metrics().await,
        "streamedge_client_send_timeouts_total",
        &[],
    );
    assert!(closed >= 2.0, "{closed}");

    // A slow but steady reader is not cut off.
    let mut s = TcpStream::connect(edge.http).await.unwrap();
    s.write_all(b"GET /big/slow.ts HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 256 << 10];
    within(60, "a slow read of the whole object", async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(got > BIG, "the whole object arrived: {got}");
    edge.stop().await;
    origin.stop().await;
}
