//! A shield tier: edges whose origin is another streamedge tier. A herd on the edge tier is
//! one request to the shield and one to the origin, and `Cache-Status` lists the shield's
//! entry before the edge's.

use std::time::Duration;

use super::common::*;
use super::{NodeSpec, free_port, start_node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_on_the_edge_tier_is_one_origin_request_through_the_shield() {
    let body = payload(1 << 20, 3);
    let served = body.clone();
    let origin = TestOrigin::start(move |_| {
        Reply::ok(served.clone())
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(300))
    })
    .await;
    let shield = start_node(&NodeSpec {
        ip: "127.0.0.5".into(),
        port: free_port("127.0.0.5"),
        origins: vec![origin.url()],
        cluster: Some("  name: shield-1\n".into()),
        extra: String::new(),
    });
    let edges: Vec<_> = ["127.0.0.6", "127.0.0.7"]
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            start_node(&NodeSpec {
                ip: (*ip).into(),
                port: free_port(ip),
                origins: vec![shield.url.clone()],
                cluster: Some(format!("  name: edge-{i}\n")),
                extra: String::new(),
            })
        })
        .collect();
    let client = reqwest::Client::new();
    let mut herd = tokio::task::JoinSet::new();
    for i in 0..100 {
        let req = client.get(edges[i % 2].get_url("/vod/shielded.m4s"));
        let expected = body.clone();
        herd.spawn(async move { stream(req, expected).await });
    }
    within(60, "the herd", async {
        while let Some(r) = herd.join_next().await {
            assert!(r.expect("client task").complete(&body));
        }
    })
    .await;
    assert_eq!(origin.count(), 1, "one origin request through both tiers");
    let r = get(&client, &edges[0].get_url("/vod/shielded.m4s")).await;
    let status = r.header("cache-status").unwrap_or_default().to_owned();
    let entries: Vec<&str> = status.split(',').map(str::trim).collect();
    assert_eq!(entries.len(), 2, "{status}");
    assert!(entries[0].starts_with("shield-1; "), "{status}");
    assert!(entries[1].starts_with("edge-0; hit"), "{status}");
    origin.stop().await;
}
