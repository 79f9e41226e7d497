//! Purges, as the admin API and peers ask for them: one object (`path=`, on one host with
//! `host=` or on all), or every key under a `prefix=`; removed, or with `soft=1` marked stale
//! so it revalidates.

use super::context::Proxy;
use crate::target::{Target, canonical_host};

/// Applies the purge a query string describes; the number of objects it found, or what is
/// wrong with the query.
pub(crate) async fn purge(proxy: &Proxy, query: &str) -> Result<usize, String> {
    let mut path = None;
    let mut prefix = None;
    let mut host = None;
    let mut soft = false;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = crate::percent::decode_form(v);
        match k {
            "path" | "url" => path = Some(v),
            "prefix" => prefix = Some(v),
            "host" => host = Some(v),
            "soft" => soft = v == "1" || v == "true",
            _ => {}
        }
    }
    let host = host
        .map(|h| canonical_host(h.as_bytes(), 0))
        .transpose()
        .map_err(|e| e.to_string())?;
    let store = &proxy.store;
    match (path, prefix) {
        (Some(p), None) => {
            // The canonical form a client's request for it has, so the key matches.
            let target = Target::from_reference(None, &p).map_err(|e| format!("path: {e}"))?;
            let key =
                proxy
                    .runtime()
                    .keys
                    .key_on(host.as_deref(), &target.path, target.query.as_deref());
            let n = match (soft, host.is_some()) {
                (true, _) => store.soft_purge(&key).await,
                (false, true) => usize::from(store.purge(&key).await),
                (false, false) => store.purge_all_hosts(&key).await,
            };
            tracing::info!(key = %key, soft, found = n, "purge");
            Ok(n)
        }
        (None, Some(prefix)) if prefix.starts_with('/') => {
            let n = if soft {
                store.soft_purge_prefix(&prefix).await
            } else {
                store.purge_prefix(&prefix).await
            };
            tracing::info!(prefix, soft, found = n, "purge by prefix");
            Ok(n)
        }
        _ => Err(
            "give exactly one of path=/... or prefix=/... (and optionally host=... and soft=1)"
                .into(),
        ),
    }
}
