//! A fleet when things go wrong: a node killed while clients keep asking through the others,
//! and nodes whose member lists disagree.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;

use super::common::*;
use super::{Fleet, Node, NodeSpec, client, entries, free_port, owner_in, peer_metric, start_node};

fn body_of(path: &str) -> Bytes {
    Bytes::from(format!("body of {path}"))
}

fn segment_origin_reply(path: &str) -> Reply {
    Reply::ok(body_of(path)).header("cache-control", "max-age=60")
}

/// One client loop: asks for `keys` through `base` in turn until `stop`; returns what went
/// wrong and how many requests it made after `killed` was set.
async fn client_loop(
    base: String,
    keys: Vec<String>,
    stop: Arc<AtomicBool>,
    killed: Arc<AtomicBool>,
) -> (Vec<String>, usize) {
    let client = client();
    let mut errors = Vec::new();
    let mut after_kill = 0;
    while !stop.load(Ordering::SeqCst) {
        for key in &keys {
            let after = killed.load(Ordering::SeqCst);
            match client.get(format!("{base}{key}")).send().await {
                Ok(r) => {
                    let status = r.status();
                    match r.bytes().await {
                        Ok(body) if status == 200 && body == body_of(key) => {}
                        Ok(body) => errors.push(format!("{key} via {base}: {status} {body:?}")),
                        Err(e) => {
                            errors.push(format!("{key} via {base}: body: {}", error_chain(&e)))
                        }
                    }
                }
                Err(e) => errors.push(format!("{key} via {base}: {}", error_chain(&e))),
            }
            if after {
                after_kill += 1;
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
        }
    }
    (errors, after_kill)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_costs_no_client_error_and_only_its_keys_are_fetched_again() {
    let origin = TestOrigin::start(|parts| segment_origin_reply(parts.uri.path())).await;
    // No secondary copies: a forwarding node keeps nothing of what the owner answers, so the
    // dead node's keys are nowhere else in the fleet when it dies.
    let mut fleet = Fleet::start(&origin, "  secondary_ttl: 0s\n").await;
    let urls: Vec<String> = fleet.nodes.iter().map(|n| n.url.clone()).collect();
    let client = client();
    let keys: Vec<String> = (0..60).map(|i| format!("/vod/load-{i}.ts")).collect();
    let mut owner = Vec::new();
    for key in &keys {
        let r = get(&client, &fleet.nodes[0].get_url(key)).await;
        assert_eq!(r.status, 200, "{key}");
        assert_eq!(r.body, body_of(key));
        owner.push(owner_in(&r, &urls));
        assert_eq!(origin.count_path(key), 1, "{key} fetched by its owner");
    }
    const DEAD: usize = 2;
    for n in 0..3 {
        assert!(
            owner.contains(&n),
            "node {n} owns none of 60 keys: {owner:?}"
        );
    }

    // Four client loops, two through each survivor. The two loops on one survivor take every
    // other key, so a survivor never has two requests for one key at once (see the bound on
    // origin requests below); both survivors ask for every key.
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let mut loops = JoinSet::new();
    for survivor in &urls[..2] {
        for half in 0..2 {
            let mine: Vec<String> = keys.iter().skip(half).step_by(2).cloned().collect();
            loops.spawn(client_loop(
                survivor.clone(),
                mine,
                stop.clone(),
                killed.clone(),
            ));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dead = &mut fleet.nodes[DEAD].process;
    dead.child.kill().expect("SIGKILL the node");
    dead.child.wait().expect("reap the node");
    killed.store(true, Ordering::SeqCst);
    // The survivors find out by their probes and by failed connections.
    within(10, "both survivors to see the dead node down", async {
        loop {
            let mut down = true;
            for node in &fleet.nodes[..2] {
                let m = node.metrics().await;
                down &= peer_metric(&m, "streamedge_peer_up", &urls[DEAD]) == 0.0;
            }
            if down {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut errors = Vec::new();
    within(20, "the client loops to end", async {
        while let Some(done) = loops.join_next().await {
            let (e, after_kill) = done.expect("client loop");
            errors.extend(e);
            assert!(
                after_kill >= keys.len() / 2,
                "a loop made only {after_kill} requests after the kill"
            );
        }
    })
    .await;
    assert!(
        errors.is_empty(),
        "{} client errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    // Afterwards: every key through both survivors.
    for node in &fleet.nodes[..2] {
        for key in &keys {
            let r = get(&client, &node.get_url(key)).await;
            assert_eq!(r.status, 200, "{key} via {}", node.url);
            assert_eq!(r.body, body_of(key), "{key} via {}", node.url);
            assert!(entries(&r).len() <= 2, "{:?}", entries(&r));
        }
    }
    let mut fallbacks = 0.0;
    for node in &fleet.nodes[..2] {
        let m = node.metrics().await;
        fallbacks += metric_sum(&m, "streamedge_peer_fallbacks_total", &[]);
    }
    assert!(
        fallbacks >= 1.0,
        "requests were routed to the dead node and went to the origin instead"
    );
    for (key, &owner) in keys.iter().zip(&owner) {
        let again = origin.count_path(key) - 1;
        if owner == DEAD {
            // Exactly once per survivor. At least: neither kept a copy (secondary_ttl 0s) and
            // the owner is gone, so each survivor answering it afterwards fetched it itself
            // (as the fallback of a failed peer request, or as its own once the peer was down).
            // At most: what a survivor fetches from the origin it stores with the origin's
            // max-age, and a survivor never had two requests for one key at once; two at once
            // at the moment the peer is marked down could cost one more (the peer request's
            // fallback and a local fill are in separate collapsing lanes, by design).
            assert_eq!(again, 2, "{key}, owned by the dead node: once per survivor");
        } else {
            assert_eq!(
                again, 0,
                "{key}, owned by survivor {owner}: not fetched again"
            );
        }
    }
    origin.stop().await;
}

/// A node on `ip:port` whose `cluster.peers` are `peers`, in front of `origin`.
fn node_listing(origin: &TestOrigin, ip: &str, port: u16, peers: &[&String]) -> Node {
    let list: String = peers.iter().map(|p| format!("    - \"{p}\"\n")).collect();
    start_node(&NodeSpec {
        ip: ip.to_owned(),
        port,
        origins: vec![origin.url()],
        cluster: Some(format!(
            "  peers:\n{list}  debounce: 100ms\n  probe_interval: 200ms\n  secondary_ttl: 0s\n"
        )),
        extra: String::new(),
    })
}

/// What a round of requests through A and B saw.
#[derive(Default)]
struct Round {
    /// Responses through each node (A, B) that a peer answered (two `Cache-Status` entries).
    from_peer: [usize; 2],
    /// Keys A sent to B that B's own ring gives to C: the requests a node that forwarded
    /// marked requests again would send on.
    relayable: usize,
}

/// Every key through A and through B at once; each answer must be a 200 with the right body
/// within 5 s and carry at most two `Cache-Status` entries (the owner's and the node's).
async fn round(nodes: [&Node; 2], urls: &[String], keys: &[String]) -> Round {
    let client = client();
    let mut round = Round::default();
    for key in keys {
        let ask = |n: usize| {
            let req = client.get(nodes[n].get_url(key));
            async move {
                let r = tokio::time::timeout(Duration::from_secs(5), send(req))
                    .await
                    .unwrap_or_else(|_| panic!("{key} via node {n}: no answer within 5s"));
                assert_eq!(r.status, 200, "{key} via node {n}");
                assert_eq!(r.body, body_of(key), "{key} via node {n}");
                let e = entries(&r);
                assert!(e.len() <= 2, "{key} via node {n} went further: {e:?}");
                (owner_in(&r, urls), e.len())
            }
        };
        let ((a_owner, a_len), (b_owner, b_len)) = tokio::join!(ask(0), ask(1));
        round.from_peer[0] += usize::from(a_len == 2);
        round.from_peer[1] += usize::from(b_len == 2);
        if a_owner == 1 && b_owner == 2 {
            round.relayable += 1;
        }
    }
    round
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_member_lists_differ_never_forward_a_request_twice() {
    let origin = TestOrigin::start(|parts| segment_origin_reply(parts.uri.path())).await;
    let ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let ports: Vec<u16> = ips.iter().map(|ip| free_port(ip)).collect();
    let urls: Vec<String> = ips
        .iter()
        .zip(&ports)
        .map(|(ip, port)| format!("http://{ip}:{port}"))
        .collect();
    let (a, b, c) = (&urls[0], &urls[1], &urls[2]);
    // A knows A and B; B also lists C, where nothing listens yet: its probes mark C down.
    let node_a = node_listing(&origin, ips[0], ports[0], &[a, b]);
    let node_b = node_listing(&origin, ips[1], ports[1], &[a, b, c]);
    within(20, "A to see 2 members, B 3 with C down", async {
        loop {
            let ma = node_a.metrics().await;
            let mb = node_b.metrics().await;
            if metric_sum(&ma, "streamedge_cluster_members", &[]) == 2.0
                && peer_metric(&ma, "streamedge_peer_up", b) == 1.0
                && metric_sum(&mb, "streamedge_cluster_members", &[]) == 3.0
                && peer_metric(&mb, "streamedge_peer_up", a) == 1.0
                && peer_metric(&mb, "streamedge_peer_up", c) == 0.0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let keys: Vec<String> = (0..200).map(|i| format!("/vod/lists-{i}.ts")).collect();
    let first = round([&node_a, &node_b], &urls, &keys[..100]).await;

    // With C down, B serves C's keys itself, and consistent hashing leaves no key that A gives
    // to B while B gives it to A (both rings place A and B alike): no request could be
    // forwarded twice even without the mark. Once C is up, B's ring sends on to C about a
    // sixth of the keys A forwards to B (C's keys that A's ring gives to B). Only the mark
    // stops B there: a marked request is served by the node that receives it, never routed
    // by its ring again, so each request crosses at most one node-to-node hop.
    let node_c = node_listing(&origin, ips[2], ports[2], &[a, b, c]);
    within(20, "B to see C up", async {
        while peer_metric(&node_b.metrics().await, "streamedge_peer_up", c) != 1.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let second = round([&node_a, &node_b], &urls, &keys).await;
    assert!(
        second.relayable > 0,
        "no key that A forwards to B and B's ring gives to C among {}",
        keys.len()
    );

    // Every request a node served for a peer was sent by a peer: served ≤ the others' sends.
    let nodes = [&node_a, &node_b, &node_c];
    let mut metrics = Vec::new();
    for node in nodes {
        metrics.push(node.metrics().await);
    }
    for (x, node) in nodes.iter().enumerate() {
        let served = metric_sum(&metrics[x], "streamedge_peer_served_requests_total", &[]);
        let sent: f64 = (0..3)
            .filter(|&y| y != x)
            .map(|y| peer_metric(&metrics[y], "streamedge_peer_requests_total", &node.url))
            .sum();
        assert!(
            served <= sent,
            "{} served {served} peer requests, the others sent it {sent}",
            node.url
        );
    }
    // And a node forwards only its clients' requests: never more than its clients got from a
    // peer, plus those whose peer failed and that it fetched itself. A node that forwarded a
    // marked request again would count that forward with no client of its own behind it.
    let clients_from_peer = [
        first.from_peer[0] + second.from_peer[0],
        first.from_peer[1] + second.from_peer[1],
        0,
    ];
    for (x, node) in nodes.iter().enumerate() {
        let forwarded = metric_sum(&metrics[x], "streamedge_peer_forwarded_requests_total", &[]);
        let fallbacks = metric_sum(&metrics[x], "streamedge_peer_fallbacks_total", &[]);
        assert!(
            forwarded <= clients_from_peer[x] as f64 + fallbacks,
            "{} forwarded {forwarded} requests; its clients got {} from a peer, {fallbacks} fell back",
            node.url,
            clients_from_peer[x]
        );
    }
    assert!(
        metric_sum(&metrics[1], "streamedge_peer_served_requests_total", &[]) > 0.0,
        "B served requests A forwarded"
    );
    origin.stop().await;
}
