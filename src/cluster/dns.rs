//! Members from DNS: the A/AAAA records of a name (a Kubernetes headless Service has one per
//! ready pod) with the configured port, or its SRV records (target and port each), asked again
//! every `interval`. A failed lookup keeps the last answer: discovery being down never takes
//! members away, and never stops the node from serving.

use std::collections::BTreeSet;
use std::net::IpAddr;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};

use super::Publisher;
use crate::config::{DnsDiscovery, member_id};

/// Asks DNS every `interval` and publishes what it answered.
pub(super) async fn watch(cfg: DnsDiscovery, publisher: Publisher) {
    let resolver = match resolver(&cfg) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, name = %cfg.name, "DNS discovery cannot start; serving with the other members");
            return;
        }
    };
    let mut failing = false;
    loop {
        match lookup(&resolver, &cfg).await {
            Ok(members) => {
                if failing {
                    tracing::info!(name = %cfg.name, members = members.len(), "DNS discovery answers again");
                    failing = false;
                }
                publisher.publish(members);
            }
            Err(e) if !failing => {
                tracing::warn!(name = %cfg.name, error = %e, "DNS discovery failed; keeping the last members");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(cfg.interval).await;
    }
}

fn resolver(cfg: &DnsDiscovery) -> Result<TokioResolver, String> {
    let mut opts = ResolverOpts::default();
    // Every lookup asks the server: membership must follow the records, not a cache.
    opts.cache_size = 0;
    opts.timeout = cfg.interval.min(std::time::Duration::from_secs(5));
    opts.attempts = 2;
    let builder = match cfg.server {
        Some(server) => {
            let mut ns = NameServerConfig::udp_and_tcp(server.ip());
            for c in &mut ns.connections {
                c.port = server.port();
            }
            let mut config = ResolverConfig::default();
            config.add_name_server(ns);
            Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        }
        None => Resolver::builder_tokio().map_err(|e| e.to_string())?,
    };
    builder
        .with_options(opts)
        .build()
        .map_err(|e| e.to_string())
}

/// The members DNS names now.
async fn lookup(resolver: &TokioResolver, cfg: &DnsDiscovery) -> Result<BTreeSet<String>, String> {
    // A trailing dot: the name as written, no search domains.
    let name = format!("{}.", cfg.name);
    let mut members = BTreeSet::new();
    if cfg.srv {
        let answer = resolver.srv_lookup(name).await.map_err(|e| e.to_string())?;
        for record in answer.answers() {
            if let hickory_resolver::proto::rr::RData::SRV(srv) = &record.data {
                let host = srv.target.to_utf8();
                let host = host.trim_end_matches('.');
                if let Some(id) = member(&cfg.scheme, host, srv.port) {
                    members.insert(id);
                }
            }
        }
    } else {
        let answer = resolver.lookup_ip(name).await.map_err(|e| e.to_string())?;
        for ip in answer.iter() {
            if let Some(id) = member(&cfg.scheme, &host_of(ip), cfg.port) {
                members.insert(id);
            }
        }
    }
    Ok(members)
}

pub(super) fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

pub(super) fn member(scheme: &str, host: &str, port: u16) -> Option<String> {
    member_id(&format!("{scheme}://{host}:{port}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_take_the_one_form() {
        assert_eq!(
            member("http", &host_of("127.0.0.3".parse().unwrap()), 8080).as_deref(),
            Some("http://127.0.0.3:8080")
        );
        assert_eq!(
            member("http", &host_of("::1".parse().unwrap()), 8080).as_deref(),
            Some("http://[::1]:8080")
        );
        assert_eq!(
            member("https", "Edge-0.Edge.NS.svc.cluster.local", 8443).as_deref(),
            Some("https://edge-0.edge.ns.svc.cluster.local:8443")
        );
    }
}
