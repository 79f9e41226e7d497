//! The state a request reads: the shared proxy (store, in-flight table), the runtime a config
//! reload may replace, and one request's view of both.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use super::headers::{ClientAddress, origin_request_headers};
use crate::cache::Store;
use crate::cache::fill::FillTable;
use crate::cache::key::KeyRules;
use crate::config::Config;
use crate::upstream::{Upstream, UpstreamError};

/// Everything a request reads that a config reload may replace.
pub struct Runtime {
    pub config: Arc<Config>,
    pub upstream: Arc<Upstream>,
    pub keys: KeyRules,
    /// Prefetches in flight at once.
    pub prefetch_slots: Arc<Semaphore>,
}

impl Runtime {
    pub fn new(config: Config) -> Result<Runtime, UpstreamError> {
        let upstream = Arc::new(Upstream::new(&config)?);
        Ok(Runtime {
            keys: KeyRules::new(config.key_rules.clone()),
            prefetch_slots: Arc::new(Semaphore::new(config.prefetch.concurrency)),
            upstream,
            config: Arc::new(config),
        })
    }
}

/// The shared state of the request path: the cache, the in-flight table, the runtime.
pub struct Proxy {
    pub store: Store,
    pub fills: Arc<FillTable>,
    runtime: ArcSwap<Runtime>,
}

impl Proxy {
    pub fn new(runtime: Runtime) -> Proxy {
        Proxy {
            store: Store::new(&runtime.config.cache),
            fills: FillTable::new(runtime.config.cache.max_in_flight),
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
    pub peer: std::net::IpAddr,
}

impl Ctx {
    /// Headers for an origin fetch on behalf of this request.
    pub fn origin_headers(&self, parts: &http::request::Parts, private: bool) -> http::HeaderMap {
        let address = ClientAddress::new(
            &parts.headers,
            self.peer,
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
