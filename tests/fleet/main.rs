//! A fleet of real `streamedge` processes on 127.0.0.2, .3 and .4 (Linux routes all of 127/8
//! to loopback) in front of one counting origin: each object has one owner, the others forward
//! to it, and the origin is asked once per object for the whole fleet. `routing`: owners,
//! herds, secondary copies, marks, purge; `failures`: a node killed under load, member lists
//! that disagree; `dns`: members from a real DNS server; `kubernetes` (with the feature):
//! members from EndpointSlices, through a stand-in API server; `shield`: a shield tier.

#[path = "../common/mod.rs"]
mod common;

mod dns;
mod failures;
#[cfg(feature = "kubernetes")]
mod kube_api;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod routing;
mod shield;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;

/// The fleet's shared secret in these tests.
pub const SECRET: &str = "fleet-test-secret-0123456789";

/// A free TCP port on `ip` (bound, then released for the node to take).
pub fn free_port(ip: &str) -> u16 {
    let l = std::net::TcpListener::bind(format!("{ip}:0")).expect("bind a free port");
    l.local_addr().unwrap().port()
}

/// One TCP port free on every address of `ips`, for nodes that must all listen on the same
/// port (members found by A records share the configured port).
pub fn common_port(ips: &[&str]) -> u16 {
    for _ in 0..100 {
        let port = free_port(ips[0]);
        if ips[1..]
            .iter()
            .all(|ip| std::net::TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on all of {ips:?} in 100 tries");
}

/// A client for the tests' own requests: no proxy from the environment, a bounded wait.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// The `Cache-Status` entries of a response, split.
pub fn entries(r: &Resp) -> Vec<String> {
    r.header("cache-status")
        .unwrap_or_default()
        .split(',')
        .map(|e| e.trim().to_owned())
        .collect()
}

/// The name a node gives itself in `Cache-Status` (the default: its address).
pub fn name_of(url: &str) -> String {
    format!("streamedge/{}", url.trim_start_matches("http://"))
}

/// Which member (an index into `urls`) answered a response first: the one the first
/// `Cache-Status` entry names. A node that serves a key itself lists its own entry only; a
/// node that forwards it lists the owner's entry first, so this is the key's owner as the
/// node asked sees it.
pub fn owner_in(r: &Resp, urls: &[String]) -> usize {
    let e = entries(r);
    let first = e[0].split(';').next().unwrap_or_default().trim();
    urls.iter()
        .position(|u| name_of(u) == first)
        .unwrap_or_else(|| panic!("Cache-Status {e:?} names none of {urls:?}"))
}

/// The value of a peer metric for one peer (by its member URL).
pub fn peer_metric(metrics: &str, name: &str, peer_url: &str) -> f64 {
    metric_sum(metrics, name, &[&format!("peer=\"{peer_url}\"")])
}

/// Waits until each of `nodes` sees `members` members with every peer up.
pub async fn wait_members(nodes: &[&Node], members: usize) {
    within(20, &format!("every node to see {members} members"), async {
        loop {
            let mut all = true;
            for node in nodes {
                let m = node.metrics().await;
                let seen = metric_sum(&m, "streamedge_cluster_members", &[]);
                let up = metric_sum(&m, "streamedge_peer_up", &[]);
                all &= seen == members as f64 && up == (members - 1) as f64;
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// One node of a fleet: the process and where it listens.
pub struct Node {
    pub process: EdgeProcess,
    /// `http://ip:port`, its identity on the ring.
    pub url: String,
    pub admin: String,
    _dir: TempDir,
}

impl Node {
    pub fn get_url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    pub async fn purge(&self, query: &str) -> Resp {
        send(
            reqwest::Client::new()
                .post(format!("{}/purge?{query}", self.admin))
                .bearer_auth("admin-token"),
        )
        .await
    }
}

/// What one node's config says besides the fleet.
pub struct NodeSpec {
    pub ip: String,
    pub port: u16,
    pub origins: Vec<String>,
    /// The `cluster` section (without `node` and `secret`), or `None` for a node alone.
    pub cluster: Option<String>,
    pub extra: String,
}

impl NodeSpec {
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }
}

pub fn start_node(spec: &NodeSpec) -> Node {
    start_node_with_env(spec, &[])
}

/// A node whose process has these environment variables besides the test's own.
pub fn start_node_with_env(spec: &NodeSpec, env: &[(&str, &str)]) -> Node {
    streamedge::tls::install_provider();
    let dir = TempDir::new("fleet");
    let origins: String = spec
        .origins
        .iter()
        .map(|o| format!("  - url: \"{o}\"\n"))
        .collect();
    let cluster = match &spec.cluster {
        Some(c) => format!(
            "cluster:\n  node: \"{}\"\n  secret: \"{SECRET}\"\n{c}",
            spec.url()
        ),
        None => String::new(),
    };
    let yaml = format!(
        "listen:\n  http: \"{ip}:{port}\"\nadmin:\n  listen: \"{ip}:0\"\n  token: \"admin-token\"\n\
         log:\n  access: off\norigins:\n{origins}{cluster}{extra}",
        ip = spec.ip,
        port = spec.port,
        extra = spec.extra,
    );
    let path = dir.path().join("edge.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let process = EdgeProcess::start_with_env(Path::new(&path), env);
    Node {
        url: spec.url(),
        admin: process.admin.clone(),
        process,
        _dir: dir,
    }
}

/// Three nodes that list each other, in front of `origin`.
pub struct Fleet {
    pub nodes: Vec<Node>,
}

impl Fleet {
    pub const IPS: [&'static str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

    /// `cluster_extra` is added to every node's `cluster` section (e.g. `secondary_ttl`).
    pub async fn start(origin: &TestOrigin, cluster_extra: &str) -> Fleet {
        let ports: Vec<u16> = Fleet::IPS.iter().map(|ip| free_port(ip)).collect();
        let peers: String = Fleet::IPS
            .iter()
            .zip(&ports)
            .map(|(ip, p)| format!("    - \"http://{ip}:{p}\"\n"))
            .collect();
        let cluster =
            format!("  peers:\n{peers}  debounce: 100ms\n  probe_interval: 500ms\n{cluster_extra}");
        let nodes = Fleet::IPS
            .iter()
            .zip(&ports)
            .map(|(ip, port)| {
                start_node(&NodeSpec {
                    ip: (*ip).to_owned(),
                    port: *port,
                    origins: vec![origin.url()],
                    cluster: Some(cluster.clone()),
                    extra: String::new(),
                })
            })
            .collect();
        let fleet = Fleet { nodes };
        fleet.wait_members(3).await;
        fleet
    }

    /// Waits until every node sees `n` members and every peer up.
    pub async fn wait_members(&self, n: usize) {
        wait_members(&self.nodes.iter().collect::<Vec<_>>(), n).await;
    }
}

/// The socket address of a node URL.
pub fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .parse()
        .expect("node address")
}
