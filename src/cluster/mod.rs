//! The fleet: which node owns a cache key. Each object has one owner among the live members,
//! by consistent hash of its key (the ring code the origins use); the other nodes forward to
//! the owner, and only the owner goes to the origin.
//!
//! Members come from the platform — the static list, DNS (`dns`), Kubernetes EndpointSlices
//! (`kubernetes`, a cargo feature) — merged, debounced and swapped in as one immutable `View`:
//! a request keeps the view it started with. A node serves from the first moment with the
//! static list (or alone), never waiting for discovery, and keeps its last known members when
//! a source fails. Peers have the health of origins: passive (connect failures) and, when
//! `probe_interval` is set, active probes.

mod dns;
#[cfg(feature = "kubernetes")]
mod kubernetes;
pub mod mark;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{ClusterConfig, FetchConfig};
use crate::metrics::Side;
use crate::upstream::Origin;
use crate::upstream::ring::OriginRing;
use mark::Marker;

/// The ring weight of every member: 4 × 160 virtual nodes. Measured over 200 port choices
/// for three loopback members, a member's share of the keys is then within 0.037 of a third
/// (within 0.080 with one weight unit). All nodes must use the same: it decides the owners.
const MEMBER_WEIGHT: u32 = 4;

/// Where a request goes.
pub(crate) enum Route {
    /// This node serves it: it owns the key, the owner is down, or there is no fleet.
    Local,
    /// The owner, another node.
    Peer(Arc<Origin>),
}

/// The members at one moment, with their ring.
pub(crate) struct View {
    /// Every member's identity, sorted; this node is among them.
    pub members: Vec<Arc<str>>,
    ring: OriginRing,
    /// Aligned with `members`: the peer, or `None` for this node.
    peers: Vec<Option<Arc<Origin>>>,
}

impl View {
    /// The owner of `key`: this node (or a down owner) → `Local`, else the peer.
    pub fn route(&self, key: &str) -> Route {
        match self.ring.owner(key).and_then(|i| self.peers[i].as_ref()) {
            Some(peer) if peer.health.could_admit() => Route::Peer(peer.clone()),
            _ => Route::Local,
        }
    }

    /// The other members.
    pub fn peers(&self) -> impl Iterator<Item = &Arc<Origin>> {
        self.peers.iter().flatten()
    }
}

/// This node's place in the fleet.
pub(crate) struct Cluster {
    cfg: ClusterConfig,
    marker: Marker,
    view: ArcSwap<View>,
    /// One peer (and its health) per member ever seen, so health survives view changes.
    known: Mutex<HashMap<Arc<str>, Arc<Origin>>>,
    fall: u32,
    cooldown: Duration,
}

impl Cluster {
    /// The cluster with the static members (and this node), before any discovery answered.
    pub fn new(cfg: &ClusterConfig, fetch: &FetchConfig) -> Cluster {
        let c = Cluster {
            marker: Marker::new(&cfg.secret),
            view: ArcSwap::from_pointee(View {
                members: Vec::new(),
                ring: OriginRing::new([]),
                peers: Vec::new(),
            }),
            known: Mutex::new(HashMap::new()),
            fall: fetch.passive_fall,
            cooldown: fetch.passive_cooldown,
            cfg: cfg.clone(),
        };
        c.set_members(cfg.peers.iter().cloned().collect());
        c
    }

    pub fn node(&self) -> &str {
        &self.cfg.node
    }

    /// The name of this node's entries in `Cache-Status`.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn marker(&self) -> &Marker {
        &self.marker
    }

    pub fn secondary_ttl(&self) -> Duration {
        self.cfg.secondary_ttl
    }

    /// The members now; a request keeps the view it started with.
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Swaps in the view of `members` (this node is always one).
    fn set_members(&self, mut members: BTreeSet<String>) {
        members.insert(self.cfg.node.clone());
        let current = self.view.load();
        if current.members.len() == members.len()
            && current.members.iter().zip(&members).all(|(a, b)| **a == *b)
        {
            return;
        }
        let members: Vec<Arc<str>> = members.into_iter().map(Arc::from).collect();
        let ring = OriginRing::new(members.iter().map(|m| (&**m, MEMBER_WEIGHT)));
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let peers = members
            .iter()
            .map(|m| {
                (**m != *self.cfg.node).then(|| {
                    known
                        .entry(m.clone())
                        .or_insert_with(|| {
                            Arc::new(Origin::peer(m, self.fall, self.cooldown, self.probes()))
                        })
                        .clone()
                })
            })
            .collect();
        // Health is kept for current members only: pods come and go with new addresses.
        known.retain(|id, _| members.contains(id));
        drop(known);
        let me = members.iter().position(|m| **m == *self.cfg.node);
        let owned_share = owned_share(&ring, me);
        tracing::info!(
            members = members.len(),
            owned_share,
            "cluster members changed"
        );
        crate::metrics::cluster_members(members.len(), owned_share);
        self.view.store(Arc::new(View {
            members,
            ring,
            peers,
        }));
    }

    fn probes(&self) -> bool {
        !self.cfg.probe_interval.is_zero()
    }

    /// Starts discovery (DNS, Kubernetes) and the peer probes; they stop when the cluster is
    /// dropped (a reload) or when the handles are aborted.
    pub fn spawn(self: &Arc<Self>, client: reqwest::Client) -> Vec<JoinHandle<()>> {
        let (tx, rx) = watch::channel(Sources::default());
        let tx = Arc::new(tx);
        let mut tasks = vec![tokio::spawn(merge(Arc::downgrade(self), rx))];
        if let Some(d) = &self.cfg.dns {
            tasks.push(tokio::spawn(dns::watch(
                d.clone(),
                source(&tx, Source::Dns),
            )));
        }
        #[cfg(feature = "kubernetes")]
        if let Some(k) = &self.cfg.kubernetes {
            tasks.push(tokio::spawn(kubernetes::watch(
                k.clone(),
                source(&tx, Source::Kubernetes),
            )));
        }
        if self.probes() {
            tasks.push(tokio::spawn(probe_peers(Arc::downgrade(self), client)));
        }
        tasks
    }
}

/// The share of 4096 sample keys the member at `me` owns.
fn owned_share(ring: &OriginRing, me: Option<usize>) -> f64 {
    const SAMPLES: usize = 4096;
    let Some(me) = me else { return 0.0 };
    let owned = (0..SAMPLES)
        .filter(|i| ring.owner(&format!("/sample/{i}.m4s")) == Some(me))
        .count();
    owned as f64 / SAMPLES as f64
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Source {
    Dns,
    #[cfg(feature = "kubernetes")]
    Kubernetes,
}

/// The latest answer of every discovery source.
#[derive(Default, Clone)]
struct Sources(HashMap<Source, BTreeSet<String>>);

/// What a discovery source reports to: `publish` its latest members (identities already in
/// the one form of `config::member_id`).
pub struct Publisher {
    tx: Arc<watch::Sender<Sources>>,
    source: Source,
}

impl Publisher {
    pub fn publish(&self, members: BTreeSet<String>) {
        self.tx.send_if_modified(|s| {
            if s.0.get(&self.source) == Some(&members) {
                return false;
            }
            s.0.insert(self.source, members.clone());
            true
        });
    }
}

fn source(tx: &Arc<watch::Sender<Sources>>, source: Source) -> Publisher {
    Publisher {
        tx: tx.clone(),
        source,
    }
}

/// Merges the sources with the static list; a change is applied once the sources have been
/// quiet for `debounce`.
async fn merge(cluster: Weak<Cluster>, mut rx: watch::Receiver<Sources>) {
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        let Some(debounce) = cluster.upgrade().map(|c| c.cfg.debounce) else {
            return;
        };
        // Settle: every further change restarts the wait.
        loop {
            match tokio::time::timeout(debounce, rx.changed()).await {
                Err(_) => break,
                Ok(Err(_)) => return,
                Ok(Ok(())) => continue,
            }
        }
        let Some(c) = cluster.upgrade() else { return };
        let mut members: BTreeSet<String> = c.cfg.peers.iter().cloned().collect();
        for set in rx.borrow_and_update().0.values() {
            members.extend(set.iter().cloned());
        }
        c.set_members(members);
    }
}

/// Probes every peer of the current view each `probe_interval`.
async fn probe_peers(cluster: Weak<Cluster>, client: reqwest::Client) {
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let interval = c.cfg.probe_interval;
        let view = c.view();
        let marker = c.marker.clone();
        let node = c.cfg.node.clone();
        drop(c);
        let probes = view.peers().map(|peer| {
            let client = client.clone();
            let marker = marker.clone();
            let node = node.clone();
            async move {
                let ok = probe(&client, &marker, &node, peer, interval).await;
                crate::metrics::health_probe(Side::Peer, &peer.name, ok);
                if ok {
                    peer.health.success(true);
                } else {
                    peer.health.failure("probe");
                }
            }
        });
        futures_util::future::join_all(probes).await;
        tokio::time::sleep(interval).await;
    }
}

/// The path peers answer probes on (marked requests only).
pub(crate) const PROBE_PATH: &str = "/.well-known/streamedge/peer";
/// The path peers take fleet-wide purges on (marked requests only).
pub(crate) const PURGE_PATH: &str = "/.well-known/streamedge/purge";

async fn probe(
    client: &reqwest::Client,
    marker: &Marker,
    node: &str,
    peer: &Origin,
    timeout: Duration,
) -> bool {
    let url = format!("{}{PROBE_PATH}", peer.base.as_str().trim_end_matches('/'));
    let mark = marker.mark(node, &http::Method::GET, PROBE_PATH);
    let sent = client
        .get(url)
        .header(mark::HEADER, mark)
        .header(http::header::USER_AGENT, "streamedge-peer-probe")
        .send();
    matches!(
        tokio::time::timeout(timeout.max(Duration::from_millis(500)), sent).await,
        Ok(Ok(r)) if r.status().is_success()
    )
}

/// Sends a purge (the admin API's query string) to every peer; returns the peers that did
/// not confirm it.
pub(crate) async fn purge_peers(
    cluster: &Cluster,
    client: &reqwest::Client,
    query: &str,
) -> Vec<String> {
    let view = cluster.view();
    let target = format!("{PURGE_PATH}?{query}");
    let sends = view.peers().map(|peer| {
        let url = format!("{}{target}", peer.base.as_str().trim_end_matches('/'));
        let mark = cluster
            .marker
            .mark(&cluster.cfg.node, &http::Method::POST, &target);
        let sent = client
            .post(url)
            .header(mark::HEADER, mark)
            .header(http::header::USER_AGENT, "streamedge-peer-purge")
            .send();
        async move {
            match tokio::time::timeout(Duration::from_secs(5), sent).await {
                Ok(Ok(r)) if r.status().is_success() => None,
                Ok(Ok(r)) => Some(format!("{}: {}", peer.name, r.status())),
                Ok(Err(e)) => Some(format!("{}: {e}", peer.name)),
                Err(_) => Some(format!("{}: timed out", peer.name)),
            }
        }
    });
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_share_the_keys_evenly() {
        for port in 8000..8020u16 {
            let members: Vec<String> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
                .iter()
                .map(|ip| format!("http://{ip}:{port}"))
                .collect();
            let ring = OriginRing::new(members.iter().map(|m| (m.as_str(), MEMBER_WEIGHT)));
            let shares: Vec<f64> = (0..3).map(|me| owned_share(&ring, Some(me))).collect();
            for s in &shares {
                assert!((s - 1.0 / 3.0).abs() < 0.05, "port {port}: {shares:?}");
            }
            assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn the_view_always_holds_this_node_and_keeps_peer_health_for_members_only() {
        let cfg = crate::config::parse(
            "listen:\n  http: \"127.0.0.1:1\"\norigins:\n  - url: \"http://127.0.0.1:2\"\n\
             cluster:\n  node: \"http://127.0.0.2:80\"\n  secret: \"0123456789abcdef\"\n\
             \x20 peers: [\"http://127.0.0.3:80\"]\n",
        )
        .unwrap();
        let c = Cluster::new(cfg.cluster.as_ref().unwrap(), &cfg.fetch);
        let members = |c: &Cluster| -> Vec<String> {
            c.view().members.iter().map(|m| m.to_string()).collect()
        };
        assert_eq!(members(&c), ["http://127.0.0.2:80", "http://127.0.0.3:80"]);
        let first = c.view().peers().next().unwrap().clone();
        c.set_members(
            [
                "http://127.0.0.3:80".to_owned(),
                "http://127.0.0.4:80".to_owned(),
            ]
            .into(),
        );
        assert_eq!(
            members(&c),
            [
                "http://127.0.0.2:80",
                "http://127.0.0.3:80",
                "http://127.0.0.4:80"
            ]
        );
        assert!(
            Arc::ptr_eq(&first, c.view().peers().next().unwrap()),
            "a member's health survives a view change"
        );
        c.set_members(["http://127.0.0.4:80".to_owned()].into());
        assert_eq!(
            c.known.lock().unwrap().len(),
            1,
            "only current peers are kept"
        );
    }
}
