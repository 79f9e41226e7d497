//! Starting fill tasks: for a request's miss or revalidation, and prefetches — the newest
//! segments (LL-HLS: parts and the preload hint) of a live playlist a fill just read, and a
//! player's CMCD `nor` — fetched ahead of the players through the in-flight table, so a
//! player asking meanwhile joins the prefetch.

use std::sync::Arc;

use http::HeaderMap;
use tokio::time::Instant;

use super::admit::reference_key;
use super::context::{Proxy, Runtime};
use super::headers::origin_request_headers;
use super::task::{self, FillJob};
use crate::cache::fill::{FillWriter, Joined, Lane};
use crate::cache::{CacheKey, StoreKey};
use crate::media;

/// Starts the fill task for `job`; `writer` is its fill's writing end.
pub fn spawn_fill(proxy: Arc<Proxy>, rt: Arc<Runtime>, writer: FillWriter, job: FillJob) {
    crate::metrics::fill_started();
    tokio::spawn(async move {
        let ran = task::run(&proxy, &rt, writer, &job).await;
        if let Some(info) = &ran.live_playlist {
            prefetch_from_playlist(&proxy, &rt, &job.key, info);
        }
        let failure = ran.failure;
        if job.prefetch.is_some() {
            crate::metrics::prefetch(if failure.is_some() {
                "failed"
            } else {
                "fetched"
            });
        }
        crate::metrics::fill_ended(failure.map(task::FillFailure::label));
        drop(job);
    });
}

/// Prefetches the newest segments (LL-HLS: parts and the preload hint) of a live playlist.
fn prefetch_from_playlist(
    proxy: &Arc<Proxy>,
    rt: &Arc<Runtime>,
    playlist: &CacheKey,
    info: &media::ManifestInfo,
) {
    let cfg = &rt.config.prefetch;
    if !cfg.enabled {
        return;
    }
    let mut candidates: Vec<&str> = if info.preload_hint.is_some() || !info.parts.is_empty() {
        info.parts
            .iter()
            .map(String::as_str)
            .chain(info.preload_hint.as_deref())
            .collect()
    } else {
        info.segments.iter().map(|(_, u)| u.as_str()).collect()
    };
    let skip = candidates.len().saturating_sub(cfg.segments);
    candidates.drain(..skip);
    for uri in candidates {
        if let Some(reference) = media::resolve(playlist.path(), uri)
            && let Some(key) = reference_key(rt, playlist.host(), &reference)
        {
            prefetch(proxy, rt, key);
        }
    }
}

/// Starts a fill for `key` unless it is cached or in flight, within the prefetch concurrency
/// bound.
pub fn prefetch(proxy: &Arc<Proxy>, rt: &Arc<Runtime>, key: CacheKey) {
    let slot = StoreKey::base(key.clone());
    let proxy = proxy.clone();
    let rt = rt.clone();
    tokio::spawn(async move {
        if let Some(obj) = proxy.store.get(&slot).await
            && obj.freshness.is_fresh(Instant::now())
        {
            crate::metrics::prefetch("already_cached");
            return;
        }
        let Ok(permit) = rt.prefetch_slots.clone().try_acquire_owned() else {
            crate::metrics::prefetch("skipped");
            return;
        };
        let owner = rt.owner_peer(&key);
        let lane = Lane::asking_peer(owner.is_some());
        match proxy
            .fills
            .join_in(&slot, lane, rt.config.cache.max_waiters)
        {
            Ok(Joined::Leader(reader, writer)) => {
                drop(reader);
                let origin_headers =
                    origin_request_headers(&HeaderMap::new(), false, &rt.config.fetch, None);
                let mut job = FillJob::new(
                    key,
                    slot,
                    HeaderMap::new(),
                    origin_headers,
                    rt.config.fetch.first_byte_timeout,
                );
                job.prefetch = Some(permit);
                let job = job.asking(owner);
                spawn_fill(proxy.clone(), rt.clone(), writer, job);
            }
            Ok(Joined::Follower(_)) => crate::metrics::prefetch("in_flight"),
            Err(_) => crate::metrics::prefetch("skipped"),
        }
    });
}
