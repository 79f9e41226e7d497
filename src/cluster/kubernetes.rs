//! Members from Kubernetes: the EndpointSlices of a Service (`discovery.k8s.io/v1`, joined by
//! the `kubernetes.io/service-name` label), watched through the API. Every ready endpoint
//! address, with the slice's port, is a member. An API that fails keeps the last members:
//! discovery being down never takes members away, and never stops the node from serving.
//!
//! The API is read through kube-runtime's `watcher` rather than a list+watch loop of our own:
//! it keeps the resourceVersion, re-lists on 410 Gone, asks for bookmarks, pages large lists
//! and notices a watch connection that went silent — the protocol's corners, where a
//! hand-written loop goes wrong. What it does not tell is that a watch resumed without news,
//! hence the quiet period of `Outage`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::pin::pin;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, DefaultBackoff, Event};
use kube::{Api, Client};
use tokio::time::Instant;

use super::Publisher;
use super::dns::{host_of, member};
use crate::config::KubernetesDiscovery;

/// The label that joins a Service's EndpointSlices to it.
const SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// Watches the Service's EndpointSlices and publishes their ready members after each change.
pub(super) async fn watch(cfg: KubernetesDiscovery, publisher: Publisher) {
    let mut outage = Outage::new(&cfg);
    let client = connect(&mut outage).await;
    let namespace = cfg
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    outage.namespace = namespace.clone();
    let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
    let selector = format!("{SERVICE_LABEL}={}", cfg.service);
    // After an error the stream waits (0.8 s doubling to 30 s, jittered) before it asks again.
    let events = watcher::watcher(api, watcher::Config::default().labels(&selector));
    let mut events = pin!(events.default_backoff());
    let mut slices = Slices::default();
    // A re-list in progress: it replaces `slices` only once complete, so slices deleted
    // while the watch was down disappear, and a half-read list never shrinks the members.
    let mut listing: Option<Slices> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listing = Some(Slices::default()),
            Ok(Event::InitApply(slice)) => listing
                .get_or_insert_with(Slices::default)
                .apply(&slice, &cfg),
            Ok(Event::InitDone) => {
                slices = listing.take().unwrap_or_default();
                outage.answered(slices.0.len());
                publisher.publish(slices.members());
            }
            Ok(Event::Apply(slice)) => {
                slices.apply(&slice, &cfg);
                outage.answered(slices.0.len());
                publisher.publish(slices.members());
            }
            Ok(Event::Delete(slice)) => {
                slices.delete(&slice);
                outage.answered(slices.0.len());
                publisher.publish(slices.members());
            }
            Err(e) => outage.failed(&e),
        }
    }
}

/// A client from the environment: KUBECONFIG (or ~/.kube/config), else the pod's service
/// account. Retried with backoff until there is one.
async fn connect(outage: &mut Outage) -> Client {
    let mut backoff = DefaultBackoff::default();
    loop {
        let client = match kube::Config::infer().await {
            Ok(config) => Client::try_from(config).map_err(|e| describe(&e)),
            Err(e) => Err(describe(&e)),
        };
        match client {
            Ok(client) => return client,
            Err(e) => {
                outage.failed_with(&e);
            }
        }
        let wait = backoff.next().unwrap_or(Duration::from_secs(30));
        tokio::time::sleep(wait).await;
    }
}

/// Whether the API is failing, so that an outage is logged once, not at every retry.
struct Outage {
    service: String,
    namespace: String,
    /// The last error of the outage in progress.
    last_error: Option<Instant>,
}

/// The watcher resumes a watch without an event to show for it; an outage without an error
/// for this long is over (retries come at most 30 s apart, plus a connect timeout).
const QUIET: Duration = Duration::from_secs(120);

impl Outage {
    fn new(cfg: &KubernetesDiscovery) -> Outage {
        Outage {
            service: cfg.service.clone(),
            // Until the client knows the pod's.
            namespace: cfg.namespace.clone().unwrap_or_default(),
            last_error: None,
        }
    }

    fn failed(&mut self, e: &(dyn std::error::Error + 'static)) {
        self.failed_with(&describe(e));
    }

    /// Logs `error` if it begins an outage; returns whether it did.
    fn failed_with(&mut self, error: &str) -> bool {
        let now = Instant::now();
        let ongoing = self.last_error.is_some_and(|t| now - t < QUIET);
        self.last_error = Some(now);
        if !ongoing {
            tracing::warn!(
                service = %self.service,
                namespace = %self.namespace,
                error,
                "EndpointSlice discovery failed; keeping the last members and retrying"
            );
        }
        !ongoing
    }

    fn answered(&mut self, slices: usize) {
        if self.last_error.take().is_some() {
            tracing::info!(
                service = %self.service,
                namespace = %self.namespace,
                slices,
                "EndpointSlice discovery answers again"
            );
        }
    }
}

/// The error and those of its causes that its message does not already quote.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = cause.source();
    }
    s
}

/// The members of each EndpointSlice of the Service, by slice name.
#[derive(Default, Debug)]
struct Slices(BTreeMap<String, BTreeSet<String>>);

impl Slices {
    /// A slice added or changed: its members replace what it named before.
    fn apply(&mut self, slice: &EndpointSlice, cfg: &KubernetesDiscovery) {
        let name = slice.metadata.name.clone().unwrap_or_default();
        self.0.insert(name, members(slice, cfg));
    }

    fn delete(&mut self, slice: &EndpointSlice) {
        self.0
            .remove(slice.metadata.name.as_deref().unwrap_or_default());
    }

    /// Every slice's members together.
    fn members(&self) -> BTreeSet<String> {
        self.0.values().flatten().cloned().collect()
    }
}

/// The members one EndpointSlice names: each address of each endpoint that is ready (a
/// missing `ready` means ready, as the API documents) and not terminating, with the slice's
/// port named `port_name`, or its first port. A slice without that port names none.
fn members(slice: &EndpointSlice, cfg: &KubernetesDiscovery) -> BTreeSet<String> {
    let Some(port) = port(slice.ports.as_deref().unwrap_or_default(), cfg) else {
        return BTreeSet::new();
    };
    slice
        .endpoints
        .iter()
        .filter(|e| {
            let c = e.conditions.as_ref();
            c.and_then(|c| c.ready) != Some(false) && c.and_then(|c| c.terminating) != Some(true)
        })
        .flat_map(|e| &e.addresses)
        .filter_map(|address| {
            // IPv4, IPv6 (bracketed in the URL) or, for addressType FQDN, a host name.
            let host = match address.parse::<IpAddr>() {
                Ok(ip) => host_of(ip),
                Err(_) => address.clone(),
            };
            member(&cfg.scheme, &host, port)
        })
        .collect()
}

/// The port of the slice's endpoints: the TCP port named `port_name`, or the first TCP port
/// (a Service's UDP port cannot carry HTTP).
fn port(ports: &[EndpointPort], cfg: &KubernetesDiscovery) -> Option<u16> {
    let mut tcp = ports
        .iter()
        .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"));
    let p = match &cfg.port_name {
        Some(name) => tcp.find(|p| p.name.as_deref().unwrap_or_default() == name),
        None => tcp.next(),
    }?;
    p.port
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cfg(port_name: Option<&str>) -> KubernetesDiscovery {
        KubernetesDiscovery {
            service: "edge".into(),
            namespace: None,
            port_name: port_name.map(str::to_owned),
            scheme: "http".into(),
        }
    }

    fn endpoint(
        address: &str,
        ready: Option<bool>,
        terminating: Option<bool>,
        conditions: bool,
    ) -> Endpoint {
        Endpoint {
            addresses: vec![address.to_owned()],
            conditions: conditions.then_some(EndpointConditions {
                ready,
                serving: ready,
                terminating,
            }),
            ..Default::default()
        }
    }

    fn tcp(name: Option<&str>, port: Option<i32>) -> EndpointPort {
        EndpointPort {
            name: name.map(str::to_owned),
            port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }
    }

    fn slice(name: &str, ports: Vec<EndpointPort>, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints,
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ports: Some(ports),
        }
    }

    fn set(members: &[&str]) -> BTreeSet<String> {
        members.iter().map(|m| (*m).to_owned()).collect()
    }

    #[test]
    fn ready_endpoints_are_members_and_the_others_not() {
        let s = slice(
            "edge-abc",
            vec![tcp(Some("http"), Some(8080))],
            vec![
                endpoint("10.1.0.1", Some(true), Some(false), true),
                endpoint("10.1.0.2", Some(false), Some(false), true),
                // Missing `ready` means ready; missing conditions too.
                endpoint("10.1.0.3", None, None, true),
                endpoint("10.1.0.4", None, None, false),
                // Terminating: going away, even when still marked ready
                // (publishNotReadyAddresses).
                endpoint("10.1.0.5", Some(true), Some(true), true),
                endpoint("10.1.0.6", Some(false), Some(true), true),
            ],
        );
        assert_eq!(
            members(&s, &cfg(None)),
            set(&[
                "http://10.1.0.1:8080",
                "http://10.1.0.3:8080",
                "http://10.1.0.4:8080"
            ])
        );
    }

    #[test]
    fn every_address_of_an_endpoint_is_a_member() {
        let mut e = endpoint("10.1.0.1", Some(true), None, true);
        e.addresses.push("10.1.0.9".into());
        let s = slice("a", vec![tcp(None, Some(80))], vec![e]);
        assert_eq!(
            members(&s, &cfg(None)),
            set(&["http://10.1.0.1:80", "http://10.1.0.9:80"])
        );
    }

    #[test]
    fn the_port_is_the_named_one_or_the_first() {
        let ports = vec![
            tcp(Some("metrics"), Some(9090)),
            tcp(Some("http"), Some(8080)),
        ];
        let s = slice(
            "a",
            ports,
            vec![endpoint("10.1.0.1", Some(true), None, true)],
        );
        assert_eq!(
            members(&s, &cfg(Some("http"))),
            set(&["http://10.1.0.1:8080"])
        );
        assert_eq!(members(&s, &cfg(None)), set(&["http://10.1.0.1:9090"]));
        // No port of that name: the slice names no member.
        assert!(members(&s, &cfg(Some("https"))).is_empty());
        // A UDP port is never the members' port.
        let mut udp = tcp(Some("dns"), Some(53));
        udp.protocol = Some("UDP".into());
        let s = slice(
            "b",
            vec![udp, tcp(None, Some(8080))],
            vec![endpoint("10.1.0.1", Some(true), None, true)],
        );
        assert_eq!(members(&s, &cfg(None)), set(&["http://10.1.0.1:8080"]));
        assert!(members(&s, &cfg(Some("dns"))).is_empty());
    }

    #[test]
    fn addresses_without_a_port_are_skipped() {
        let ready = || vec![endpoint("10.1.0.1", Some(true), None, true)];
        // A slice of a Service without ports (a headless Service may have none).
        assert!(members(&slice("a", vec![], ready()), &cfg(None)).is_empty());
        let mut s = slice("a", vec![], ready());
        s.ports = None;
        assert!(members(&s, &cfg(None)).is_empty());
        // A port entry without a number ("all ports"), or out of range.
        assert!(members(&slice("a", vec![tcp(None, None)], ready()), &cfg(None)).is_empty());
        assert!(members(&slice("a", vec![tcp(None, Some(0))], ready()), &cfg(None)).is_empty());
        assert!(
            members(
                &slice("a", vec![tcp(None, Some(70000))], ready()),
                &cfg(None)
            )
            .is_empty()
        );
    }

    #[test]
    fn ipv6_and_fqdn_addresses_take_the_one_form() {
        let mut s = slice(
            "v6",
            vec![tcp(Some("http"), Some(8080))],
            vec![
                endpoint("fd00::1", Some(true), None, true),
                endpoint("FD00:0:0::2", Some(true), None, true),
            ],
        );
        s.address_type = "IPv6".into();
        let mut https = cfg(Some("http"));
        https.scheme = "https".into();
        assert_eq!(
            members(&s, &https),
            set(&["https://[fd00::1]:8080", "https://[fd00::2]:8080"])
        );
        let mut s = slice(
            "fqdn",
            vec![tcp(None, Some(8080))],
            vec![endpoint("Edge-0.example.internal", Some(true), None, true)],
        );
        s.address_type = "FQDN".into();
        assert_eq!(
            members(&s, &cfg(None)),
            set(&["http://edge-0.example.internal:8080"])
        );
    }

    #[test]
    fn the_slices_of_a_service_are_joined_and_a_deleted_one_leaves() {
        let cfg = cfg(Some("http"));
        let port = || vec![tcp(Some("http"), Some(8080))];
        let a = slice(
            "edge-a",
            port(),
            vec![
                endpoint("10.1.0.1", Some(true), None, true),
                endpoint("10.1.0.2", Some(true), None, true),
            ],
        );
        let b = slice(
            "edge-b",
            port(),
            vec![
                endpoint("10.1.0.2", Some(true), None, true),
                endpoint("10.1.0.3", Some(true), None, true),
            ],
        );
        let mut slices = Slices::default();
        slices.apply(&a, &cfg);
        slices.apply(&b, &cfg);
        assert_eq!(
            slices.members(),
            set(&[
                "http://10.1.0.1:8080",
                "http://10.1.0.2:8080",
                "http://10.1.0.3:8080"
            ])
        );
        // A change replaces what the slice named; the other slice still names 10.1.0.2.
        let a2 = slice(
            "edge-a",
            port(),
            vec![
                endpoint("10.1.0.1", Some(true), None, true),
                endpoint("10.1.0.2", Some(false), None, true),
            ],
        );
        slices.apply(&a2, &cfg);
        assert_eq!(slices.members().len(), 3);
        slices.delete(&b);
        assert_eq!(slices.members(), set(&["http://10.1.0.1:8080"]));
        slices.delete(&a2);
        assert!(slices.members().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_logged_once() {
        let mut o = Outage::new(&cfg(None));
        assert!(o.failed_with("refused"), "the first error is logged");
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(30)).await;
            assert!(!o.failed_with("refused"), "retries are not");
        }
        o.answered(1);
        assert!(
            o.failed_with("refused"),
            "an error after an answer is a new outage"
        );
        // A watch resumed without news, then failed again much later: a new outage too.
        tokio::time::advance(QUIET + Duration::from_secs(1)).await;
        assert!(o.failed_with("refused"));
        assert!(!o.failed_with("refused"));
    }

    #[test]
    fn errors_are_described_with_their_causes_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error, bool);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                if self.1 {
                    write!(f, "list failed: {}", self.0)
                } else {
                    f.write_str("list failed")
                }
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(describe(&Outer(io(), false)), "list failed: refused");
        assert_eq!(describe(&Outer(io(), true)), "list failed: refused");
    }
}
