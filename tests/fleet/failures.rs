//! A fleet when things go wrong: a node killed while clients keep asking through the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;

use super::common::*;
use super::{Fleet, client, entries, owner_in, peer_metric};

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
