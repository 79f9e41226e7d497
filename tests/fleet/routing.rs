//! Routing by owner: one origin request per object for the fleet, collapsed herds across
//! nodes, short secondary copies, marks that cannot be forged, and fleet-wide purge.

use std::time::Duration;

use bytes::Bytes;

use super::common::*;
use super::{Fleet, Node, entries};

fn segment_origin_reply(path: &str) -> Reply {
    Reply::ok(format!("body of {path}")).header("cache-control", "max-age=60")
}

fn name_of(node: &Node) -> String {
    super::name_of(&node.url)
}

/// A path whose owner is `owner` (asked through `via`, which forwards it).
async fn key_owned_by(fleet: &Fleet, via: usize, owner: usize, tag: &str) -> String {
    let client = reqwest::Client::new();
    for i in 0..200 {
        let path = format!("/vod/{tag}-{i}.ts");
        let r = get(&client, &fleet.nodes[via].get_url(&path)).await;
        assert_eq!(r.status, 200, "{path}");
        let e = entries(&r);
        if e.len() == 2 && e[0].starts_with(&name_of(&fleet.nodes[owner])) {
            return path;
        }
    }
    panic!("no key owned by node {owner} among 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_reaches_the_origin_once_in_the_whole_fleet() {
    let origin = TestOrigin::start(|parts| segment_origin_reply(parts.uri.path())).await;
    let fleet = Fleet::start(&origin, "  secondary_ttl: 0s\n").await;
    let client = reqwest::Client::new();
    let mut forwarded = 0;
    for i in 0..100 {
        let path = format!("/vod/seg-{i}.ts");
        // Through every node, in an order that changes with the key.
        for n in 0..3 {
            let node = &fleet.nodes[(i + n) % 3];
            let r = get(&client, &node.get_url(&path)).await;
            assert_eq!(r.status, 200, "{path} via {}", node.url);
            assert_eq!(r.body, Bytes::from(format!("body of {path}")));
            assert!(r.header("streamedge-peer").is_none(), "no mark to clients");
            let e = entries(&r);
            assert!(e.len() <= 2, "{path}: {e:?}");
            if e.len() == 2 {
                forwarded += 1;
                // The owner's entry first, then this node's (RFC 9211 order).
                assert!(e[1].starts_with(&name_of(node)), "{e:?}");
                assert!(!e[0].starts_with(&name_of(node)), "{e:?}");
            } else {
                assert!(e[0].starts_with(&name_of(node)), "{e:?}");
            }
        }
        assert_eq!(
            origin.count_path(&path),
            1,
            "{path} reached the origin once"
        );
    }
    // Two of every three requests were another node's keys.
    assert_eq!(forwarded, 200, "requests through a non-owner");
    assert!(
        origin
            .requests()
            .iter()
            .all(|seen| !seen.headers.contains_key("streamedge-peer")),
        "the forwarding mark never reaches the origin"
    );
    let mut shares = 0.0;
    for node in &fleet.nodes {
        let m = node.metrics().await;
        assert_eq!(metric_sum(&m, "streamedge_cluster_members", &[]), 3.0);
        shares += metric_sum(&m, "streamedge_cluster_owned_share", &[]);
        assert!(metric_sum(&m, "streamedge_peer_requests_total", &[]) > 0.0);
    }
    assert!(
        (shares - 1.0).abs() < 0.01,
        "owned shares sum to one: {shares}"
    );
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_spread_over_the_fleet_makes_one_origin_request() {
    let body = payload(2 << 20, 7);
    let served = body.clone();
    let origin = TestOrigin::start(move |_| {
        Reply::ok(served.clone())
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(300))
            .trickle_over(64 << 10, Duration::from_millis(500))
    })
    .await;
    let fleet = Fleet::start(&origin, "").await;
    let urls: Vec<String> = fleet
        .nodes
        .iter()
        .map(|n| n.get_url("/vod/herd.m4s"))
        .collect();
    let client = reqwest::Client::new();
    let mut herd = tokio::task::JoinSet::new();
    for i in 0..200 {
        let req = client.get(&urls[i % 3]);
        let expected = body.clone();
        herd.spawn(async move { stream(req, expected).await });
    }
    let mut complete = 0;
    within(60, "the herd", async {
        while let Some(r) = herd.join_next().await {
            let r = r.expect("client task");
            assert!(r.complete(&body), "a client got a short or wrong body");
            complete += 1;
        }
    })
    .await;
    assert_eq!(complete, 200);
    assert_eq!(origin.count(), 1, "one origin request for the whole fleet");
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarding_node_keeps_its_copy_for_the_secondary_ttl_only() {
    let origin = TestOrigin::start(|parts| segment_origin_reply(parts.uri.path())).await;
    let fleet = Fleet::start(&origin, "  secondary_ttl: 1s\n").await;
    let path = key_owned_by(&fleet, 0, 1, "secondary").await;
    let served = |m: &str| metric_sum(m, "streamedge_peer_served_requests_total", &[]);
    let owner_before = served(&fleet.nodes[1].metrics().await);
    let client = reqwest::Client::new();
    let r = get(&client, &fleet.nodes[0].get_url(&path)).await;
    let e = entries(&r);
    assert!(
        e.last().unwrap().contains("; hit"),
        "the forwarder's own copy: {e:?}"
    );
    assert_eq!(served(&fleet.nodes[1].metrics().await), owner_before);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = get(&client, &fleet.nodes[0].get_url(&path)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        served(&fleet.nodes[1].metrics().await),
        owner_before + 1.0,
        "after the secondary TTL the owner is asked again"
    );
    assert_eq!(origin.count_path(&path), 1, "the owner kept the object");
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_forwarding_mark_is_not_trusted() {
    let origin = TestOrigin::start(|parts| segment_origin_reply(parts.uri.path())).await;
    let fleet = Fleet::start(&origin, "  secondary_ttl: 0s\n").await;
    let path = key_owned_by(&fleet, 0, 1, "forged").await;
    let fresh = format!("{path}-fresh.ts");
    // A mark of the right form from a node of the fleet, made without the secret.
    let forged = format!(
        "{} {} {}",
        fleet.nodes[0].url,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        "ab".repeat(32)
    );
    let client = reqwest::Client::new();
    for node in [0, 2] {
        let r = send(
            client
                .get(fleet.nodes[node].get_url(&path))
                .header("streamedge-peer", &forged),
        )
        .await;
        assert_eq!(r.status, 200);
        let m = fleet.nodes[node].metrics().await;
        assert_eq!(
            metric_sum(&m, "streamedge_peer_marks_rejected_total", &[]),
            1.0,
            "node {node} counted the forged mark"
        );
    }
    let r = send(
        client
            .get(fleet.nodes[0].get_url(&fresh))
            .header("streamedge-peer", &forged),
    )
    .await;
    assert_eq!(r.status, 200);
    // Routed like any client request: through its owner, at most one origin request.
    assert_eq!(origin.count_path(&fresh), 1);
    // A forged purge between nodes is no purge: the method is refused, the object stays.
    let purge = send(
        client
            .post(fleet.nodes[1].get_url("/.well-known/streamedge/purge?prefix=/"))
            .header("streamedge-peer", &forged),
    )
    .await;
    assert_eq!(purge.status, 405, "{:?}", purge.body);
    let r = get(&client, &fleet.nodes[1].get_url(&path)).await;
    assert!(entries(&r)[0].contains("; hit"), "{:?}", entries(&r));
    assert_eq!(origin.count_path(&path), 1);
    // A forged probe is a plain request for that path.
    let probe = send(
        client
            .get(fleet.nodes[1].get_url("/.well-known/streamedge/peer"))
            .header("streamedge-peer", &forged),
    )
    .await;
    assert_ne!(probe.body, Bytes::from(format!("{}\n", fleet.nodes[1].url)));
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_any_node_reaches_the_owner() {
    let origin = TestOrigin::start(|parts| segment_origin_reply(parts.uri.path())).await;
    let fleet = Fleet::start(&origin, "").await;
    let path = key_owned_by(&fleet, 0, 1, "purge").await;
    let client = reqwest::Client::new();
    let r = get(&client, &fleet.nodes[1].get_url(&path)).await;
    assert!(entries(&r)[0].contains("; hit"), "the owner has it");
    // Purged through the third node, which never saw it.
    let answer = fleet.nodes[2].purge(&format!("path={path}")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let text = String::from_utf8_lossy(&answer.body).to_string();
    assert!(text.contains("peers confirmed: 2 of 2"), "{text}");
    for node in &fleet.nodes {
        let r = get(&client, &node.get_url(&path)).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        origin.count_path(&path),
        2,
        "fetched again once, by its owner, after the purge"
    );
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_fails_before_any_byte_sends_the_request_to_the_origin() {
    let origin = TestOrigin::start(|parts| segment_origin_reply(parts.uri.path())).await;
    // A member nothing listens on, and no probes: the first requests find out by failing.
    let dead = format!("http://127.0.0.9:{}", super::free_port("127.0.0.9"));
    let ip = "127.0.0.8";
    let port = super::free_port(ip);
    let node = super::start_node(&super::NodeSpec {
        ip: ip.into(),
        port,
        origins: vec![origin.url()],
        cluster: Some(format!(
            "  peers: [\"http://{ip}:{port}\", \"{dead}\"]\n  probe_interval: 0s\n"
        )),
        extra: String::new(),
    });
    let client = reqwest::Client::new();
    for i in 0..40 {
        let path = format!("/vod/fallback-{i}.ts");
        let r = get(&client, &node.get_url(&path)).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body, Bytes::from(format!("body of {path}")));
        assert_eq!(
            entries(&r).len(),
            1,
            "served by this node: {:?}",
            entries(&r)
        );
        assert_eq!(origin.count_path(&path), 1);
    }
    let m = node.metrics().await;
    let fallbacks = metric_sum(&m, "streamedge_peer_fallbacks_total", &[]);
    assert!(
        fallbacks >= 1.0,
        "some keys were the dead peer's: {fallbacks}"
    );
    assert_eq!(
        metric_sum(&m, "streamedge_peer_up", &[]),
        0.0,
        "passive health took the dead peer out"
    );
    origin.stop().await;
}
