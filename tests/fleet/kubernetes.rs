//! Members from Kubernetes EndpointSlices (the `kubernetes` feature): three real `streamedge`
//! processes on 127.0.0.11-.13 watch the slices of one Service through a kubeconfig, and their
//! membership follows the slices — a slice that adds a ready node grows it, an endpoint that
//! turns not ready or a deleted slice shrinks it, the API going away keeps the last members
//! while the nodes go on serving, and a re-list after the API's return applies what changed
//! meanwhile.
//!
//! No Kubernetes API server can run on these machines: `kube_api::FakeApi`, a small HTTP
//! server in the test, stands in for it, speaking the list and watch protocol the nodes' kube
//! client uses.

use std::time::Duration;

use bytes::Bytes;

use super::common::*;
use super::kube_api::{FakeApi, endpoint};
use super::{Node, NodeSpec, client, common_port, start_node_with_env};

const NAMESPACE: &str = "edge-test";
const SERVICE: &str = "streamedge-peers";
const IPS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
/// The EndpointSlice log line of an outage, and of its end.
const FAILED: &str = "EndpointSlice discovery failed";
const ANSWERS: &str = "EndpointSlice discovery answers again";

async fn members(node: &Node) -> f64 {
    metric_sum(&node.metrics().await, "streamedge_cluster_members", &[])
}

/// Waits until each node sees its number of members (and, with `peers_up`, every peer up).
async fn wait_members(nodes: &[Node], expected: [usize; 3], peers_up: bool, what: &str) {
    within(20, what, async {
        loop {
            let mut all = true;
            for (node, n) in nodes.iter().zip(expected) {
                let m = node.metrics().await;
                all &= metric_sum(&m, "streamedge_cluster_members", &[]) == n as f64;
                if peers_up {
                    all &= metric_sum(&m, "streamedge_peer_up", &[]) == (n - 1) as f64;
                }
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Each key asked at every one of `nodes` reaches the origin once, and every request but the
/// owner's was forwarded to the owner.
async fn assert_routed_once(nodes: &[Node], origin: &TestOrigin, tag: &str) {
    let client = client();
    let mut forwarded = 0;
    for i in 0..30 {
        let path = format!("/vod/{tag}-{i}.ts");
        for n in 0..nodes.len() {
            let node = &nodes[(i + n) % nodes.len()];
            let r = get(&client, &node.get_url(&path)).await;
            assert_eq!(r.status, 200, "{path} via {}", node.url);
            assert_eq!(r.body, Bytes::from(format!("body of {path}")));
            let entries = r
                .header("cache-status")
                .unwrap_or_default()
                .split(',')
                .count();
            if entries == 2 {
                forwarded += 1;
            }
        }
        assert_eq!(
            origin.count_path(&path),
            1,
            "{path} reached the origin once"
        );
    }
    assert_eq!(
        forwarded,
        30 * (nodes.len() - 1),
        "requests through a non-owner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_follows_the_endpointslices_and_outlives_the_api() {
    let origin = TestOrigin::start(|parts| {
        Reply::ok(format!("body of {}", parts.uri.path())).header("cache-control", "max-age=60")
    })
    .await;
    let mut api = FakeApi::start(NAMESPACE).await;
    // One port for all: an EndpointSlice has one port for all its endpoints.
    let port = common_port(&IPS);
    let [a, b, c] = IPS;
    // Node a ready, node b without conditions (ready, says the API); a slice of another
    // Service that the label selector must leave out.
    api.apply(
        "streamedge-peers-1",
        SERVICE,
        &[endpoint(a, Some(true)), endpoint(b, None)],
        port,
    );
    api.apply(
        "other-1",
        "other",
        &[endpoint("127.0.0.19", Some(true))],
        port,
    );

    let dir = TempDir::new("kubeconfig");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).expect("write kubeconfig");
    let kubeconfig = kubeconfig.to_str().expect("utf-8 path").to_owned();
    // No namespace: the kubeconfig context's. The slices list the port `metrics` first.
    let cluster = format!(
        "  kubernetes:\n    service: {SERVICE}\n    port_name: http\n  debounce: 100ms\n  \
         probe_interval: 500ms\n"
    );
    let nodes: Vec<Node> = IPS
        .iter()
        .map(|ip| {
            let spec = NodeSpec {
                ip: (*ip).to_owned(),
                port,
                origins: vec![origin.url()],
                cluster: Some(cluster.clone()),
                extra: String::new(),
            };
            start_node_with_env(&spec, &[("KUBECONFIG", &kubeconfig)])
        })
        .collect();
    // c is not in the slices yet; every node counts itself.
    wait_members(&nodes, [2, 2, 3], false, "a and b from the first slice").await;

    // A second slice adds c, ready.
    api.apply(
        "streamedge-peers-2",
        SERVICE,
        &[endpoint(c, Some(true))],
        port,
    );
    wait_members(&nodes, [3, 3, 3], true, "c joins with a new slice").await;
    assert_routed_once(&nodes, &origin, "three").await;

    // c turns not ready: a and b drop it.
    api.apply(
        "streamedge-peers-2",
        SERVICE,
        &[endpoint(c, Some(false))],
        port,
    );
    wait_members(&nodes, [2, 2, 3], false, "c not ready").await;
    api.apply(
        "streamedge-peers-2",
        SERVICE,
        &[endpoint(c, Some(true))],
        port,
    );
    wait_members(&nodes, [3, 3, 3], false, "c ready again").await;
    // Its slice is deleted: gone again.
    api.delete("streamedge-peers-2");
    wait_members(&nodes, [2, 2, 3], false, "c's slice deleted").await;
    api.apply(
        "streamedge-peers-2",
        SERVICE,
        &[endpoint(c, Some(true))],
        port,
    );
    wait_members(&nodes, [3, 3, 3], true, "c's slice back").await;
    for node in &nodes {
        assert_eq!(node.process.count_lines(FAILED), 0, "no failure yet");
    }

    // The API goes away: several retries later every node keeps its members and serves.
    api.stop().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let client = client();
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(members(node).await, 3.0, "{} keeps its members", node.url);
        let path = format!("/vod/outage-{i}.ts");
        let r = get(&client, &node.get_url(&path)).await;
        assert_eq!(r.status, 200, "{} serves while the API is away", node.url);
        assert_eq!(r.body, Bytes::from(format!("body of {path}")));
        node.process.wait_line(FAILED, 5);
        assert_eq!(
            node.process.count_lines(FAILED),
            1,
            "an outage is logged once"
        );
        assert_eq!(
            node.process.count_lines("kube_client"),
            0,
            "kube's own retries are quiet"
        );
    }

    // While it is away, c's slice goes. The API returns without the events of that time:
    // the watch from the old version is answered 410 Gone, the nodes list again, and the
    // new list drops c.
    api.delete("streamedge-peers-2");
    let before = api.requests().len();
    api.restart().await;
    wait_members(&nodes, [2, 2, 3], false, "a re-list after the API's return").await;
    let relists = api.requests()[before..]
        .iter()
        .filter(|r| !r.contains("watch=") && r.contains("labelSelector="))
        .count();
    assert!(relists >= 2, "a and b listed again: {:?}", api.requests());
    // A node whose members did not change (c) may still be waiting out its watcher's backoff,
    // which grows through the outage up to kube's 30 s cap: it answers again by then.
    for node in &nodes {
        node.process.wait_line(ANSWERS, 35);
        assert_eq!(node.process.count_lines(FAILED), 1);
    }
    assert_routed_once(&nodes[..2], &origin, "two").await;
    api.stop().await;
    drop(nodes);
    origin.stop().await;
}
