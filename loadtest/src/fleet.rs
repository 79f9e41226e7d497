//! Three streamedge processes on 127.0.0.2, .3 and .4 (Linux routes all of 127/8 to loopback)
//! in front of one origin, with the same config and cache size each: as a **fleet** (every node
//! lists all three as `cluster.peers`, with one shared secret) or as three **independent**
//! nodes (no `cluster` section). Each is stopped when dropped.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

use crate::admin::{self, metric_sum};
use crate::edgeproc::{self, EdgeConfig, EdgeProcess, Listen};
use crate::process::free_port_on;

/// The nodes' addresses.
pub const IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
];

/// The fleet's shared secret (`cluster.secret`).
pub const SECRET: &str = "streamedge-bench-fleet-secret";

/// How the three nodes are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One fleet; `secondary_ttl`: `cluster.secondary_ttl`, or `None` for the default (2 s).
    Fleet { secondary_ttl: Option<Duration> },
    /// Three nodes that know nothing of each other.
    Independent,
}

/// One node: the process, and how it is named.
pub struct Node {
    pub process: EdgeProcess,
    /// `http://ip:port`: its identity on the ring.
    pub id: String,
    /// The name of its entries in `Cache-Status` (`streamedge/ip:port` in a fleet).
    pub name: String,
}

impl Node {
    pub fn http(&self) -> SocketAddr {
        self.process.http
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}

/// The three nodes, in the order of `IPS`.
pub struct Nodes {
    pub layout: Layout,
    pub nodes: Vec<Node>,
}

/// The `cluster` section of the node `node`, with `peers` and the shared secret.
pub fn cluster_yaml(node: &str, peers: &[String], secondary_ttl: Option<Duration>) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    let mut y = format!(
        "cluster:\n  node: \"{node}\"\n  peers: [{}]\n  secret: \"{SECRET}\"\n",
        peers.join(", ")
    );
    if let Some(ttl) = secondary_ttl {
        y.push_str(&format!("  secondary_ttl: {}ms\n", ttl.as_millis()));
    }
    y
}

impl Nodes {
    /// Starts the three nodes (configs and logs in `dir/node-<ip>`) in front of `origin`, each
    /// with a cache of `cache_mib` MiB; returns once each accepts connections (a fleet is not
    /// necessarily formed yet: see `wait_ready`).
    pub fn start(
        bin: &Path,
        dir: &Path,
        origin: SocketAddr,
        cache_mib: u64,
        layout: Layout,
        prefix: &[String],
    ) -> anyhow::Result<Nodes> {
        let mut listens = Vec::new();
        for ip in IPS {
            let ip = IpAddr::V4(ip);
            listens.push(Listen {
                http: free_port_on(ip)?,
                https: None,
                admin: free_port_on(ip)?,
            });
        }
        let ids: Vec<String> = listens
            .iter()
            .map(|l| format!("http://{}", l.http))
            .collect();
        let config = EdgeConfig {
            origin,
            cache_mib,
            tls: None,
            cache_extra: "",
            server_extra: "",
        };
        let mut nodes = Nodes {
            layout,
            nodes: Vec::new(),
        };
        for (listen, id) in listens.into_iter().zip(&ids) {
            let mut yaml = edgeproc::config_yaml(&config, listen.http, None, listen.admin);
            let name = match layout {
                Layout::Fleet { secondary_ttl } => {
                    yaml.push_str(&cluster_yaml(id, &ids, secondary_ttl));
                    format!("streamedge/{}", listen.http)
                }
                Layout::Independent => "streamedge".to_owned(),
            };
            let node_dir = dir.join(format!("node-{}", listen.http.ip()));
            // On an error, the nodes started so far are stopped as `nodes` drops.
            let process = EdgeProcess::start_yaml(bin, &node_dir, &yaml, listen, prefix)?;
            nodes.nodes.push(Node {
                process,
                id: id.clone(),
                name,
            });
        }
        Ok(nodes)
    }

    /// Waits until every node of a fleet sees the three members and both its peers up (at
    /// once for independent nodes).
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        if self.layout == Layout::Independent {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for n in &self.nodes {
                let text = admin::metrics(n.process.admin).await.unwrap_or_default();
                seen.push((
                    metric_sum(&text, "streamedge_cluster_members"),
                    metric_sum(&text, "streamedge_peer_up"),
                ));
            }
            let n = self.nodes.len() as f64;
            if seen
                .iter()
                .all(|&(members, up)| members == n && up == n - 1.0)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the fleet did not form within {timeout:?}: (members, peers up) per node {seen:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the node whose `Cache-Status` name is `name`.
    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Stops every node (SIGTERM, then SIGKILL to its process group). Idempotent.
    pub fn stop(&mut self) {
        for n in &mut self.nodes {
            n.process.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_section() {
        let peers = vec![
            "http://127.0.0.2:1".to_owned(),
            "http://127.0.0.3:2".to_owned(),
        ];
        let y = cluster_yaml(&peers[0], &peers, Some(Duration::ZERO));
        assert_eq!(
            y,
            format!(
                "cluster:\n  node: \"http://127.0.0.2:1\"\n  peers: [\"http://127.0.0.2:1\", \"http://127.0.0.3:2\"]\n  secret: \"{SECRET}\"\n  secondary_ttl: 0ms\n"
            )
        );
        assert!(!cluster_yaml(&peers[0], &peers, None).contains("secondary_ttl"));
    }
}
