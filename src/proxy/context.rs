//! The state a request reads: the shared proxy (store, in-flight table), the runtime a config
//! reload may replace, and one request's view of both.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use super::headers::{ClientAddress, origin_request_headers};
use crate::cache::CacheKey;
use crate::cache::Store;
use crate::cache::fill::FillTable;
use crate::cache::key::KeyRules;
use crate::cluster::{Cluster, Route};
use crate::config::Config;
use crate::stats::Stats;
use crate::upstream::{Origin, Upstream, UpstreamError};

/// Everything a request reads that a config reload may replace.
pub struct Runtime {
    pub config: Arc<Config>,
    pub upstream: Arc<Upstream>,
    pub keys: KeyRules,
    /// Prefetches in flight at once.
    pub prefetch_slots: Arc<Semaphore>,
    /// The fleet this node belongs to, if any.
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// This node's name in `Cache-Status`.
    pub cache_name: Arc<str>,
}

impl Runtime {
    pub fn new(config: Config) -> Result<Runtime, UpstreamError> {
        let upstream = Arc::new(Upstream::new(&config)?);
        let cluster = config
            .cluster
            .as_ref()
            .map(|c| Arc::new(Cluster::new(c, &config.fetch)));
        Ok(Runtime {
            cache_name: cluster
                .as_ref()
                .map_or("streamedge".into(), |c| c.name().into()),
            cluster,
            keys: KeyRules::new(config.key_rules.clone()),
            prefetch_slots: Arc::new(Semaphore::new(config.prefetch.concurrency)),
            upstream,
            config: Arc::new(config),
        })
    }
}

impl Runtime {
    /// The peer that owns `key`, when it is another node of the fleet (and up). LL-HLS
    /// requests for a playlist all go to the owner of the plain playlist, which collapses them.
    pub(crate) fn owner_peer(&self, key: &CacheKey) -> Option<Arc<Origin>> {
        let cluster = self.cluster.as_ref()?;
        let plain = key.without_directives();
        match cluster.view().route(plain.as_ref().unwrap_or(key).as_str()) {
            Route::Peer(owner) => Some(owner),
            Route::Local => None,
        }
    }

    /// Starts what runs beside the requests: origin health probes, fleet discovery and peer
    /// probes. A reload aborts them and starts the new runtime's.
    pub fn spawn_background(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = self.upstream.spawn_probes();
        if let Some(c) = &self.cluster {
            tasks.extend(c.spawn(self.upstream.client()));
        }
        tasks
    }
}

/// The shared state of the request path: the cache, the in-flight table, the runtime.
pub struct Proxy {
    pub store: Store,
    pub fills: Arc<FillTable>,
    /// The live numbers of the status page (kept across reloads).
    pub stats: Stats,
    runtime: ArcSwap<Runtime>,
}

impl Proxy {
    pub fn new(runtime: Runtime) -> Proxy {
        Proxy {
            store: Store::new(&runtime.config.cache),
            fills: FillTable::new(runtime.config.cache.max_in_flight),
            stats: Stats::new(),
            runtime: ArcSwap::from_pointee(runtime),
        }
    }

    /// The current runtime; a request keeps the one it started with.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Swaps in a new runtime (config reload); requests in flight finish on the old one.
    pub fn replace_runtime(&self, runtime: Runtime) -> Arc<Runtime> {
        self.runtime.swap(Arc::new(runtime))
    }
}

/// One request's view of the edge: the proxy and the runtime it started with.
#[derive(Clone)]
pub(super) struct Ctx {
    pub proxy: Arc<Proxy>,
    pub rt: Arc<Runtime>,
    /// The address the request came from (a proxy's, when one is in front).
    pub client_ip: std::net::IpAddr,
    /// The node that forwarded this request, when it carries a genuine forwarding mark: this
    /// node serves it itself.
    pub from_peer: Option<Arc<str>>,
}

impl Ctx {
    /// The peer to ask for `key`: its owner, unless that is this node or the request came
    /// from a peer (which this node then serves itself).
    pub fn owner_peer(&self, key: &CacheKey) -> Option<Arc<Origin>> {
        match self.from_peer {
            Some(_) => None,
            None => self.rt.owner_peer(key),
        }
    }

    /// Headers for an origin fetch on behalf of this request.
    pub fn origin_headers(&self, parts: &http::request::Parts, private: bool) -> http::HeaderMap {
        let address = ClientAddress::new(
            &parts.headers,
            self.client_ip,
            &self.rt.config.server.trusted_proxies,
        );
        origin_request_headers(
            &parts.headers,
            private,
            &self.rt.config.fetch,
            Some(&address),
        )
    }
}
