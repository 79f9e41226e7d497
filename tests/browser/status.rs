//! The admin listener's status page (`/status`) in the same headless Chromium: it loads with no
//! console error, and its numbers move while traffic flows through the edge.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use streamedge::origin::OriginOptions;

use crate::common::TestEdge;
use crate::{Browser, DemoOrigin};

/// The page's fields the test reads (element ids; the page is `src/admin/status.html`).
const IDS: &[&str] = &[
    "updated",
    "requests_per_s",
    "bytes_per_s",
    "hit_ratio",
    "ttfb_p50_ms",
    "fills_in_flight",
    "top",
    "origins",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_node_live() {
    let origin = DemoOrigin::start(OriginOptions::default(), SystemTime::now()).await;
    let edge = TestEdge::builder(&[origin.url()]).start().await;
    let page = json!({
        "name": "status",
        "url": edge.admin_url("/status"),
        "ids": IDS,
        "samples": 7,
    });
    let browser = Browser::launch("status", vec![page]).await;
    // Traffic while the page samples: VOD segments, misses first, then hits.
    let client = edge.https_client();
    let base = edge.https_url("/vod/hls/");
    let traffic = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(9);
        let mut n = 0u64;
        while tokio::time::Instant::now() < deadline {
            for seg in 1..=6 {
                let url = format!("{base}seg-0-00{seg}.m4s");
                let r = client.get(&url).send().await.expect("GET through the edge");
                assert!(r.status().is_success());
                r.bytes().await.expect("body");
                n += 1;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n
    });
    let report = browser.finish(60).await;
    let sent = traffic.await.unwrap();
    let r = &report.results["status"];
    assert!(r.get("driver_error").is_none(), "{r}");
    assert_eq!(r["console_errors"], json!([]), "console errors on the page");
    let samples = r["samples"].as_array().expect("samples");
    let field = |s: &Value, id: &str| s[id].as_str().unwrap_or("").to_owned();
    for id in IDS {
        assert!(
            samples.iter().all(|s| !s[*id].is_null()),
            "the page has no element #{id}: {r}"
        );
    }
    let updates: std::collections::HashSet<String> =
        samples.iter().map(|s| field(s, "updated")).collect();
    assert!(
        updates.len() >= 4,
        "the page updates every second ({} distinct of {}): {samples:?}",
        updates.len(),
        samples.len()
    );
    let rates: Vec<f64> = samples
        .iter()
        .filter_map(|s| field(s, "requests_per_s").trim().parse::<f64>().ok())
        .collect();
    assert!(
        rates.iter().any(|&x| x > 0.0),
        "requests per second moved with {sent} requests sent: {samples:?}"
    );
    let top = field(samples.last().unwrap(), "top");
    assert!(
        top.contains("seg-0-00"),
        "the most requested objects are listed: {top}"
    );
    eprintln!(
        "status page: {sent} requests sent; last sample {}",
        samples.last().unwrap()
    );
    edge.stop().await;
}
