//! Operating the edge as a process: signals (SIGTERM drain, SIGHUP reload that keeps the old
//! config on errors), the JSON access log, the Prometheus exposition checked by `promtool`,
//! the health endpoints, and the status page and its JSON.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use http::StatusCode;
use tokio::time::Instant;

fn write_config(dir: &TempDir, name: &str, origin: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(
        &path,
        format!(
            "listen:\n  http: \"127.0.0.1:0\"\nadmin:\n  listen: \"127.0.0.1:0\"\n  token: \"secret-one\"\n\
             origins:\n  - url: \"{origin}\"\n    name: o\n{extra}"
        ),
    )
    .unwrap();
    path
}

fn client() -> reqwest::Client {
    streamedge::tls::install_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_and_sigterm_drains_then_exits_zero() {
    let body = payload(200_000, 7);
    let origin = TestOrigin::start({
        let body = body.clone();
        move |parts| {
            if parts.uri.path() == "/slow.ts" {
                Reply::ok(body.clone()).trickle_over(20_000, Duration::from_millis(1200))
            } else {
                Reply::ok("#EXTM3U\n").header("content-type", "application/vnd.apple.mpegurl")
            }
        }
    })
    .await;
    let dir = TempDir::new("ops-json");
    let cfg = write_config(&dir, "edge.yaml", &origin.url(), "log:\n  access: json\n");
    let mut edge = EdgeProcess::start(&cfg);
    let c = client();

    let r = c
        .get(format!(
            "{}/a.m3u8?CMCD=bl%3D1500%2Cbs%2Csid%3D%22s1%22",
            edge.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
    let line = edge.wait_line("\"path\":\"/a.m3u8", 10);
    let v: serde_json_lite::Value = serde_json_lite::parse(&line);
    assert_eq!(v.field("method"), Some("GET"), "{line}");
    assert_eq!(v.field("status"), Some("200"), "{line}");
    assert_eq!(v.field("cache"), Some("miss"), "{line}");
    assert_eq!(v.field("kind"), Some("manifest"), "{line}");
    assert_eq!(v.field("cmcd_bl"), Some("1500"), "{line}");
    assert_eq!(v.field("cmcd_bs"), Some("true"), "{line}");
    assert_eq!(v.field("cmcd_sid"), Some("s1"), "{line}");
    assert_eq!(v.field("origin"), Some("o"), "{line}");
    assert!(v.field("ttfb_ms").is_some(), "{line}");

    // A slow response in flight when SIGTERM arrives still completes; then exit 0.
    let slow = tokio::spawn({
        let c = c.clone();
        let url = format!("{}/slow.ts", edge.http);
        async move { c.get(url).send().await.unwrap().bytes().await }
    });
    origin.wait_for_count(2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    edge.signal("TERM");
    let got = within(15, "slow body", slow)
        .await
        .unwrap()
        .expect("body completes");
    assert_eq!(got, body, "the drained response is complete");
    let code = tokio::task::spawn_blocking(move || edge.wait_exit(20))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_keeps_old_config_on_errors_and_applies_good_ones() {
    let one = TestOrigin::fixed(Reply::ok("from one").header("cache-control", "max-age=60")).await;
    let two = TestOrigin::fixed(Reply::ok("from two").header("cache-control", "max-age=60")).await;
    let dir = TempDir::new("ops-reload");
    let cfg = write_config(&dir, "edge.yaml", &one.url(), "");
    let edge = EdgeProcess::start(&cfg);
    let c = client();
    let get = |path: &str| {
        let c = c.clone();
        let url = format!("{}{path}", edge.http);
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/a").await, (200, "from one".to_owned()));

    // A broken file: the error names field and line, and the edge keeps serving as before.
    std::fs::write(
        &cfg,
        format!(
            "listen:\n  http: \"127.0.0.1:0\"\ncache:\n  max_sise: 1GiB\norigins:\n  - url: \"{}\"\n",
            two.url()
        ),
    )
    .unwrap();
    edge.signal("HUP");
    let err = edge.wait_line("cache.max_sise", 10);
    assert!(err.contains(":4:"), "error names line 4: {err}");
    assert!(err.contains("keeping the running configuration"), "{err}");
    assert_eq!(get("/b").await, (200, "from one".to_owned()));
    assert_eq!(two.count(), 0);

    // A good file with another origin and admin token: applied.
    let good = write_config(&dir, "edge.yaml", &two.url(), "");
    std::fs::write(
        &good,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("secret-one", "secret-two"),
    )
    .unwrap();
    edge.signal("HUP");
    edge.wait_line("configuration reloaded", 10);
    assert_eq!(get("/c").await, (200, "from two".to_owned()));
    assert_eq!(
        get("/a").await,
        (200, "from one".to_owned()),
        "the cache survives a reload"
    );
    let purge = |token: &'static str| {
        let c = c.clone();
        let url = format!("{}/purge?path=/a", edge.admin);
        async move {
            c.post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        purge("secret-one").await,
        401,
        "the old token no longer works"
    );
    assert_eq!(purge("secret-two").await, 200);
    assert_eq!(edge.count_lines("configuration reloaded"), 1);
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exposition_passes_promtool() {
    let origin = TestOrigin::start(|parts| match parts.uri.path() {
        "/missing" => Reply::ok("no").status(404),
        "/slow.ts" => Reply::ok(payload(50_000, 1)).delay(Duration::from_millis(200)),
        _ => Reply::ok("ok").header("cache-control", "max-age=60"),
    })
    .await;
    let edge = TestEdge::start(&origin).await;
    let c = edge.http_client();
    for path in ["/a", "/a", "/missing", "/x.m3u8"] {
        let _ = get(&c, &edge.http_url(path)).await;
    }
    let slow = edge.http_url("/slow.ts");
    let herd: Vec<_> = (0..5).map(|_| get(&c, &slow)).collect();
    futures_util::future::join_all(herd).await;
    let _ = get(&edge.h2_client(), &edge.https_url("/a")).await;
    let text = edge.metrics().await;
    for name in [
        "streamedge_requests_total",
        "streamedge_response_bytes_total",
        "streamedge_request_duration_seconds_bucket",
        "streamedge_time_to_first_byte_seconds_bucket",
        "streamedge_origin_requests_total",
        "streamedge_origin_fetch_duration_seconds_bucket",
        "streamedge_origin_up",
        "streamedge_collapsed_requests_total",
        "streamedge_fills_in_flight",
        "streamedge_client_connections_total",
        "streamedge_tls_handshakes_total",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
    assert!(
        !text.contains("quantile="),
        "histograms are rendered with buckets, not as summaries"
    );

    let promtool = which("promtool").expect(
        "promtool is required for this test (Debian package `prometheus`; .ci/run installs it)",
    );
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{report}"
    );
    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_origin_health_and_healthz_stays_up() {
    let origin = TestOrigin::start(|parts| {
        if parts.uri.path() == "/health" {
            Reply::ok("down").status(503)
        } else {
            Reply::ok("ok")
        }
    })
    .await;
    let edge = TestEdge::start_with(
        &[origin.url()],
        "health_check:\n  path: /health\n  interval: 50ms\n  timeout: 500ms\n  rise: 1\n  fall: 1\n",
    )
    .await;
    let c = edge.http_client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&c, &edge.admin_url("/readyz")).await;
        if r.status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "readyz never went to 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&c, &edge.admin_url("/healthz")).await.status, 200);
    // With its only origin down the edge answers at once instead of waiting for timeouts
    // (but for the one trial request a second that still goes through).
    let t = Instant::now();
    let first = get(&c, &edge.http_url("/anything")).await.status;
    let second = get(&c, &edge.http_url("/anything-else")).await.status;
    assert!(
        [first, second].contains(&StatusCode::SERVICE_UNAVAILABLE),
        "{first} {second}"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    origin.set_script(|_| Reply::ok("ok"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&c, &edge.admin_url("/readyz")).await.status != 200 {
        assert!(Instant::now() < deadline, "readyz never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    edge.stop().await;
    origin.stop().await;
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

/// Just enough JSON to read the flat fields of a tracing-subscriber JSON log line.
mod serde_json_lite {
    pub struct Value(String);

    pub fn parse(line: &str) -> Value {
        assert!(
            line.trim_start().starts_with('{'),
            "not a JSON line: {line}"
        );
        Value(line.to_owned())
    }

    impl Value {
        /// The value of `"name":` as text (strings unquoted), from the first occurrence.
        pub fn field(&self, name: &str) -> Option<&str> {
            let key = format!("\"{name}\":");
            let start = self.0.find(&key)? + key.len();
            let rest = &self.0[start..];
            if let Some(s) = rest.strip_prefix('"') {
                return s.find('"').map(|end| &s[..end]);
            }
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            Some(rest[..end].trim())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_timeouts_close_silent_connections() {
    use tokio::io::AsyncWriteExt;
    let origin = TestOrigin::fixed(Reply::ok("ok").header("cache-control", "max-age=60")).await;
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| {
            c.server.tls_handshake_timeout = Duration::from_millis(300);
            c.server.header_read_timeout = Duration::from_millis(300);
            c.server.idle_timeout = Duration::from_millis(400);
        })
        .start()
        .await;

    // A client that opens TLS but never sends a ClientHello.
    let mut silent = tokio::net::TcpStream::connect(edge.https).await.unwrap();
    let took = closed_within(&mut silent, 5).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");

    // A client that starts a request head and stalls (slowloris).
    let mut slow = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    slow.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut slow, 5).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");

    edge.stop().await;

    // A keep-alive connection that finished its request is closed after idle_timeout by the
    // edge's idle watchdog (the header-read timer is longer here, so only the watchdog can).
    let edge = TestEdge::builder(&[origin.url()])
        .config(|c| {
            c.server.header_read_timeout = Duration::from_secs(5);
            c.server.idle_timeout = Duration::from_millis(400);
        })
        .start()
        .await;
    let mut ka = tokio::net::TcpStream::connect(edge.http).await.unwrap();
    ka.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut ka, 5).await;
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(2500),
        "idle keep-alive connection closed after {took:?}"
    );
    edge.stop().await;
    origin.stop().await;
}

/// `/status.json` on the edge's admin listener, parsed.
async fn status_json(edge: &TestEdge) -> serde_json::Value {
    let r = get(&edge.http_client(), &edge.admin_url("/status.json")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_slice(&r.body).expect("status.json is JSON")
}

/// Polls `/status.json` (bounded) until `done` holds; returns that status.
async fn status_until(
    edge: &TestEdge,
    secs: u64,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    within(secs, what, async {
        loop {
            let s = status_json(edge).await;
            if done(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_is_self_contained_with_a_strict_policy() {
    let origin = TestOrigin::fixed(Reply::ok("ok")).await;
    let edge = TestEdge::start(&origin).await;
    let c = edge.http_client();
    let r = get(&c, &edge.admin_url("/status")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let csp = r.header("content-security-policy").expect("a CSP");
    for part in [
        "default-src 'none'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "connect-src 'self'",
        "img-src data:",
    ] {
        assert!(csp.contains(part), "{part} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    let page = String::from_utf8(r.body.to_vec()).expect("HTML is text");
    for id in [
        "requests_per_s",
        "bytes_per_s",
        "hit_ratio",
        "ttfb_p50_ms",
        "ttfb_p90_ms",
        "ttfb_p99_ms",
        "fills_in_flight",
        "requests_total",
        "hits_total",
        "bytes_total",
        "cache_memory_bytes",
        "cache_memory_max_bytes",
        "cache_memory_objects",
        "cache_disk_bytes",
        "cache_disk_objects",
        "history",
        "origins",
        "peers",
        "top",
        "updated",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "no element {id}");
    }
    // Nothing from elsewhere: no absolute or scheme-relative URL, every src/href inline.
    for external in ["http://", "https://", "\"//", "'//"] {
        assert!(!page.contains(external), "the page refers to {external}");
    }
    for attr in ["src=", "href="] {
        for (i, _) in page.match_indices(attr) {
            let value = &page[i + attr.len()..];
            assert!(
                value.starts_with("\"data:"),
                "{attr} not inline: {value:.40}"
            );
        }
    }
    assert!(page.contains("fetch(\"status.json\""));
    let wrong = send(c.post(edge.admin_url("/status.json"))).await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.header("allow"), Some("GET, HEAD"));
    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_counts_what_clients_got() {
    let sizes = [("/a.ts", 1000), ("/b.ts", 2000), ("/c.m3u8", 300)];
    let origin = TestOrigin::start(move |parts| match parts.uri.path() {
        "/health" => Reply::ok("ok"),
        "/slow.ts" => Reply::ok(payload(5000, 3)).delay(Duration::from_millis(1500)),
        path => {
            let size = sizes.iter().find(|(p, _)| *p == path).map_or(10, |s| s.1);
            Reply::ok(payload(size, 1)).header("cache-control", "max-age=60")
        }
    })
    .await;
    let dead = dead_port().await;
    let edge = TestEdge::start_fleet(
        &[("good", origin.url(), 1), ("dead", format!("http://{dead}"), 1)],
        "health_check:\n  path: /health\n  interval: 50ms\n  timeout: 500ms\n  rise: 1\n  fall: 1\n",
    )
    .await;

    // Before traffic: nothing counted; one origin down, the other up.
    let s = status_until(&edge, 10, "the dead origin to be reported down", |s| {
        s["origins"][1]["healthy"] == false
    })
    .await;
    assert_eq!(s["requests_total"], 0, "{s}");
    assert_eq!(s["hits_total"], 0);
    assert_eq!(s["bytes_total"], 0);
    assert_eq!(s["hit_ratio"], 0.0);
    assert_eq!(s["fills_in_flight"], 0);
    assert_eq!(s["top"], serde_json::json!([]));
    assert_eq!(s["history"].as_array().map(Vec::len), Some(60));
    assert_eq!(s["ttfb_ms"]["p50"], serde_json::Value::Null);
    assert_eq!(s["origins"][0]["name"], "good");
    assert_eq!(s["origins"][0]["address"], format!("{}/", origin.url()));
    assert_eq!(s["origins"][0]["healthy"], true);
    assert_eq!(s["origins"][1]["name"], "dead");
    assert_eq!(s["peers"], serde_json::json!([]));
    assert_eq!(s["cache"]["disk"], serde_json::Value::Null);
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));

    // 4 × a, 2 × b, 1 × c, one after the other: 3 misses, 4 hits.
    let c = edge.http_client();
    let (mut hits, mut bytes) = (0, 0);
    for path in [
        "/a.ts", "/a.ts", "/b.ts", "/a.ts", "/c.m3u8", "/b.ts", "/a.ts",
    ] {
        let r = get(&c, &edge.http_url(path)).await;
        assert_eq!(r.status, StatusCode::OK);
        hits += u64::from(r.cache_status().hit);
        bytes += r.body.len() as u64;
    }
    assert_eq!((hits, bytes), (4, 4 * 1000 + 2 * 2000 + 300));
    let s = status_json(&edge).await;
    assert_eq!(s["requests_total"], 7, "{s}");
    assert_eq!(s["hits_total"], hits);
    assert_eq!(s["bytes_total"], bytes);
    assert_eq!(s["hit_ratio"], 4.0 / 7.0);
    assert!(s["ttfb_ms"]["p50"].as_f64().is_some_and(|p| p > 0.0), "{s}");
    assert!(s["ttfb_ms"]["samples"].as_u64() >= Some(7), "{s}");

    // Rates and the top list count whole seconds: they follow within the next tick.
    let s = status_until(&edge, 3, "requests_per_s above 0", |s| {
        s["requests_per_s"].as_f64() > Some(0.0)
    })
    .await;
    assert!(s["bytes_per_s"].as_f64() > Some(0.0), "{s}");
    let s = status_until(&edge, 3, "all 7 requests in the top list", |s| {
        s["top"].as_array().map_or(0, |t| {
            t.iter().filter_map(|e| e["requests"].as_u64()).sum::<u64>()
        }) == 7
    })
    .await;
    assert_eq!(
        s["top"],
        serde_json::json!([
            {"key": "/a.ts", "requests": 4},
            {"key": "/b.ts", "requests": 2},
            {"key": "/c.m3u8", "requests": 1},
        ])
    );
    let history: u64 = s["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert!(history <= 7, "{s}");

    // The memory tier's size is settled by its maintenance, a few seconds at most.
    let s = status_until(&edge, 10, "the memory tier to count its objects", |s| {
        s["cache"]["memory"]["objects"].as_u64() >= Some(3)
    })
    .await;
    let memory = &s["cache"]["memory"];
    assert!(memory["bytes"].as_u64() >= Some(3300), "{s}");
    assert!(
        memory["max_bytes"].as_u64() > memory["bytes"].as_u64(),
        "{s}"
    );

    // A fill is in flight while the slow origin answers, and gone after.
    let slow = tokio::spawn({
        let c = c.clone();
        let url = edge.http_url("/slow.ts");
        async move { get(&c, &url).await }
    });
    status_until(&edge, 3, "a fill in flight", |s| {
        s["fills_in_flight"].as_u64() >= Some(1)
    })
    .await;
    let r = within(10, "the slow response", slow).await.unwrap();
    assert_eq!(r.body.len(), 5000);
    status_until(&edge, 3, "no fill in flight", |s| s["fills_in_flight"] == 0).await;
    let s = status_json(&edge).await;
    assert_eq!(s["requests_total"], 8);
    assert_eq!(s["bytes_total"], bytes + 5000);
    assert_eq!(s["origins"][0]["healthy"], true);
    assert_eq!(s["origins"][1]["healthy"], false);
    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_reports_the_disk_tier() {
    let origin =
        TestOrigin::fixed(Reply::ok(payload(10_000, 5)).header("cache-control", "max-age=3600"))
            .await;
    let dir = TempDir::new("status-disk");
    let edge = TestEdge::builder(&[origin.url()])
        .yaml(&format!(
            "cache:\n  disk:\n    path: \"{}\"\n    max_size: 64MiB\n",
            dir.path().join("cache").display()
        ))
        .start()
        .await;
    let s = status_until(&edge, 10, "the disk index to be ready", |s| {
        s["cache"]["disk"]["ready"] == true
    })
    .await;
    let disk = &s["cache"]["disk"];
    assert_eq!(disk["enabled"], true, "{s}");
    assert_eq!(disk["max_bytes"], 64 << 20);
    assert_eq!(disk["objects"], 0);
    let r = get(&edge.http_client(), &edge.http_url("/seg.ts")).await;
    assert_eq!(r.status, StatusCode::OK);
    let s = status_until(&edge, 10, "the object on disk", |s| {
        s["cache"]["disk"]["objects"] == 1
    })
    .await;
    assert!(s["cache"]["disk"]["bytes"].as_u64() >= Some(10_000), "{s}");
    edge.stop().await;
    origin.stop().await;
}
