//! Large objects in slices: objects above `cache.max_object_size` (or under a `slice.prefixes`
//! entry) are fetched from the origin as `Range` requests of `slice.size`, each slice cached on
//! its own. A client range fetches only the slices it touches, a full GET streams slice by
//! slice, a version change between slices never mixes bytes of two versions in one answer, and
//! purge removes every slice. The origin is `common::ranged`'s synthetic one (a 1 GiB object
//! costs it no memory, and it counts the body bytes it sends).

use std::collections::BTreeSet;
use std::time::Duration;

use http::StatusCode;
use tokio::task::JoinSet;

use super::common::ranged::{RangedOrigin, Version, check_versions};
use super::common::*;

const SLICE: u64 = 4 << 20;

const SLICED: &str = "cache:\n  max_size: 512MiB\n  max_object_size: 64MiB\n  slice:\n    \
size: 4MiB\n    prefixes: [\"/big/\"]\nprefetch:\n  enabled: false\n";

/// The slices `[a, b]` (inclusive) touches.
fn slices_of(a: u64, b: u64) -> impl Iterator<Item = u64> {
    a / SLICE..=b / SLICE
}

/// Every origin request for `path` asked for one slice: a range that starts on a slice boundary
/// and is one slice long, or ends at the object's end.
fn assert_slice_aligned(origin: &RangedOrigin, path: &str, len: u64) {
    let seen = origin.seen(path);
    assert!(!seen.is_empty(), "{path}: the origin was asked");
    for s in &seen {
        let spec = s
            .range
            .as_deref()
            .unwrap_or_else(|| panic!("{path}: an origin request without Range: {s:?}"));
        let (a, b) = spec
            .strip_prefix("bytes=")
            .and_then(|r| r.split_once('-'))
            .unwrap_or_else(|| panic!("{path}: not a byte range: {spec}"));
        let a: u64 = a.parse().unwrap_or_else(|_| panic!("{path}: {spec}"));
        let b: u64 = b.parse().unwrap_or_else(|_| panic!("{path}: {spec}"));
        assert_eq!(a % SLICE, 0, "{path}: {spec} starts on a slice boundary");
        assert!(
            b >= a && (b + 1 - a == SLICE || (b + 1 >= len && b + 1 - a < SLICE)),
            "{path}: {spec} is one slice, or the last one ({len} bytes)"
        );
    }
}

/// Deterministic ranges (xorshift): `(first, last)` inclusive, at most `max` bytes long.
fn random_ranges(n: usize, len: u64, max: u64, mut x: u64) -> Vec<(u64, u64)> {
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let a = next() % len;
            let b = (a + next() % max).min(len - 1);
            (a, b)
        })
        .collect()
}

/// A range of `path` through the edge: 206 with exactly `v`'s bytes over `[a, b]`.
async fn assert_range(
    edge: &TestEdge,
    client: &reqwest::Client,
    path: &str,
    v: &Version,
    (a, b): (u64, u64),
) -> CacheStatus {
    let req = client
        .get(edge.http_url(path))
        .header("range", format!("bytes={a}-{b}"));
    let c = within(30, "a range", check_versions(req, &[v])).await;
    assert_eq!(c.status, StatusCode::PARTIAL_CONTENT, "{path} {a}-{b}");
    assert_eq!(
        c.headers.get("content-range").and_then(|h| h.to_str().ok()),
        Some(format!("bytes {a}-{b}/{}", v.len).as_str()),
        "{path} {a}-{b}"
    );
    assert!(
        c.complete_as(0),
        "{path} {a}-{b}: {} bytes, matches {:?}, error {:?}",
        c.len,
        c.matching,
        c.error
    );
    CacheStatus::of(&c.headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1gib_object_is_cached_in_slices_and_ranges_fetch_only_their_slices() {
    let origin = RangedOrigin::start().await;
    let path = "/vod/movie-1g.mp4";
    let v = Version::new(1, 1 << 30);
    origin.put(path, v.clone());
    let edge = TestEdge::start_with(&[origin.url()], SLICED).await;
    let client = edge.http_client();

    // Far from the start early on, so that an edge fetching the whole object fails at once
    // rather than streaming a gigabyte.
    let mut ranges = vec![
        (0, 999),
        (7 * SLICE, 7 * SLICE + (1 << 20) - 1),
        (SLICE - 100, SLICE + 99), // across a slice boundary
        (v.len - 100, v.len - 1),  // the last bytes
    ];
    ranges.extend(random_ranges(16, v.len, 1 << 20, 0x5EED));
    let mut touched = BTreeSet::new();
    for (i, &(a, b)) in ranges.iter().enumerate() {
        let cs = assert_range(&edge, &client, path, &v, (a, b)).await;
        // A hit only when every slice the range needs was stored already (RFC 9211 `partial`
        // when some had to be fetched).
        let new = slices_of(a, b).any(|n| !touched.contains(&n));
        assert_eq!(cs.hit, !new, "{path} {a}-{b}: {cs:?}");
        if new && i > 0 {
            assert_eq!(cs.fwd.as_deref(), Some("partial"), "{path} {a}-{b}: {cs:?}");
        }
        touched.extend(slices_of(a, b));
        if i < 2 {
            // Time for a fetch beyond the slices to show.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Checked after every range, so a whole-object fetch fails at once.
        let sent = origin.bytes_sent(path);
        assert!(
            sent <= touched.len() as u64 * SLICE,
            "{path}: {sent} origin bytes for {} slices touched so far",
            touched.len()
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = origin.bytes_sent(path);
    assert!(
        sent <= touched.len() as u64 * SLICE,
        "{path}: {sent} origin bytes for {} slices",
        touched.len()
    );
    assert_slice_aligned(&origin, path, v.len);
    let asked = origin.count_path(path);
    eprintln!(
        "{} ranges touched {} slices: {asked} origin requests, {sent} bytes",
        ranges.len(),
        touched.len()
    );

    for &(a, b) in &ranges {
        let cs = assert_range(&edge, &client, path, &v, (a, b)).await;
        assert!(cs.hit, "{path} {a}-{b} again: {cs:?}");
    }
    assert_eq!(
        origin.bytes_sent(path),
        sent,
        "no origin bytes the second time"
    );
    assert_eq!(origin.count_path(path), asked);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_get_of_a_sliced_object_streams_it_whole() {
    let origin = RangedOrigin::start().await;
    let path = "/big/movie-40m.mp4";
    let v = Version::new(2, (40 << 20) + 12_345);
    origin.put(path, v.clone());
    let edge = TestEdge::start_with(&[origin.url()], SLICED).await;
    let client = edge.http_client();

    let c = within(
        30,
        "a full GET",
        check_versions(client.get(edge.http_url(path)), &[&v]),
    )
    .await;
    assert_eq!(c.status, StatusCode::OK);
    assert!(
        c.complete_as(0),
        "{} of {} bytes, matches {:?}, error {:?}",
        c.len,
        v.len,
        c.matching,
        c.error
    );
    let sent = origin.bytes_sent(path);
    assert!(
        sent <= v.len,
        "{sent} origin bytes for a {}-byte object",
        v.len
    );
    assert_slice_aligned(&origin, path, v.len);
    let asked = origin.count_path(path);
    let slices = v.len.div_ceil(SLICE) as usize;
    assert!(
        asked >= slices,
        "fetched slice by slice: {asked} origin requests for {slices} slices"
    );

    let c = within(
        30,
        "a full GET again",
        check_versions(client.get(edge.http_url(path)), &[&v]),
    )
    .await;
    assert!(
        c.complete_as(0),
        "again: {} bytes, error {:?}",
        c.len,
        c.error
    );
    assert!(
        CacheStatus::of(&c.headers).hit,
        "{:?}",
        c.headers.get("cache-status")
    );
    // The partial last slice, from the cache.
    let cs = assert_range(&edge, &client, path, &v, (v.len - 20_000, v.len - 1)).await;
    assert!(cs.hit, "{cs:?}");
    assert_eq!(origin.bytes_sent(path), sent);
    assert_eq!(origin.count_path(path), asked);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_change_between_slices_never_mixes_versions() {
    let origin = RangedOrigin::start().await;
    let path = "/big/v.mp4";
    let len = 40 << 20;
    let (v1, v2) = (Version::new(11, len), Version::new(12, len));
    origin.put(path, v1.clone());
    // The third origin request for it is the last one answered from v1.
    origin.switch_after(path, 3, v2.clone());
    let edge = TestEdge::start_with(&[origin.url()], SLICED).await;
    let client = edge.http_client();
    let both = [&v1, &v2];
    let range = |a: u64, b: u64| {
        client
            .get(edge.http_url(path))
            .header("range", format!("bytes={a}-{b}"))
    };

    let c = check_versions(range(0, 999), &both).await;
    assert!(c.complete_as(0), "slice 0 from v1: {c:?}");
    // v1 too, unless the edge asked more than once per slice so far.
    let c = check_versions(range(SLICE + 10, SLICE + 2009), &both).await;
    assert!(
        c.complete_as(0) || c.complete_as(1),
        "slice 1, whole: {c:?}"
    );

    // Slices 0 and 1 are cached from v1; the origin changes while the rest is fetched.
    let c = within(
        30,
        "a full GET across the change",
        check_versions(client.get(edge.http_url(path)), &both),
    )
    .await;
    c.assert_one_version("a full GET across the change");
    eprintln!(
        "full GET across the change: {} {} bytes, versions {:?}, error {:?}",
        c.status, c.len, c.matching, c.error
    );
    let c = check_versions(range(SLICE - 100, SLICE + 99), &both).await;
    c.assert_one_version("a range over slices 0 and 1");

    // Once the change is known, v2 whole (the first answer may still be cut, never mixed).
    let mut whole = false;
    for attempt in 0..2 {
        let c = within(
            30,
            "a full GET after the change",
            check_versions(client.get(edge.http_url(path)), &both),
        )
        .await;
        c.assert_one_version(&format!("full GET {attempt} after the change"));
        if c.complete_as(1) {
            whole = true;
            break;
        }
    }
    assert!(whole, "a full GET after the change is v2, whole");
    for (a, b) in [(0, 999), (5 * SLICE + 7, 5 * SLICE + 70_000)] {
        let c = check_versions(range(a, b), &both).await;
        assert!(c.complete_as(1), "{a}-{b} from v2 now: {:?}", c.matching);
    }

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ranges_across_a_version_change_never_mix() {
    let origin = RangedOrigin::start().await;
    let path = "/big/w.mp4";
    let len = 24 << 20;
    let (v1, v2) = (Version::new(21, len), Version::new(22, len));
    origin.put(path, v1.clone());
    origin.switch_after(path, 2, v2.clone());
    let edge = TestEdge::start_with(&[origin.url()], SLICED).await;
    let client = edge.http_client();

    // Twelve ranges at once, each across a slice boundary.
    let mut set = JoinSet::new();
    for (i, k) in (1..6).cycle().take(12).enumerate() {
        let (a, b) = (k * SLICE - 1000 - i as u64 * 100, k * SLICE + 5000);
        let req = client
            .get(edge.http_url(path))
            .header("range", format!("bytes={a}-{b}"));
        let both = [v1.clone(), v2.clone()];
        set.spawn(async move {
            let c = check_versions(req, &[&both[0], &both[1]]).await;
            c.assert_one_version(&format!("range {a}-{b}"));
        });
    }
    within(60, "the concurrent ranges", async {
        while let Some(r) = set.join_next().await {
            r.expect("a range check");
        }
    })
    .await;

    let mut whole = false;
    for attempt in 0..2 {
        let c = within(
            30,
            "a full GET",
            check_versions(client.get(edge.http_url(path)), &[&v1, &v2]),
        )
        .await;
        c.assert_one_version(&format!("full GET {attempt}"));
        if c.complete_as(1) {
            whole = true;
            break;
        }
    }
    assert!(whole, "a full GET after the change is v2, whole");

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_every_slice() {
    let origin = RangedOrigin::start().await;
    let path = "/big/p.mp4";
    let v = Version::new(31, (40 << 20) + 1000);
    origin.put(path, v.clone());
    let edge = TestEdge::start_with(&[origin.url()], SLICED).await;
    let client = edge.http_client();

    let ranges = [
        (0, 999),
        (3 * SLICE + 5, 3 * SLICE + 9_999),
        (7 * SLICE, 7 * SLICE + 99),
    ];
    for &r in &ranges {
        assert_range(&edge, &client, path, &v, r).await;
    }
    let c = within(
        30,
        "a full GET",
        check_versions(client.get(edge.http_url(path)), &[&v]),
    )
    .await;
    assert!(c.complete_as(0), "{} bytes, error {:?}", c.len, c.error);
    for &r in &ranges {
        assert!(
            assert_range(&edge, &client, path, &v, r).await.hit,
            "{r:?} cached"
        );
    }

    let p = edge.purge(&format!("path={path}")).await;
    assert_eq!(p.status, StatusCode::OK, "purge: {:?}", p.body);
    origin.remove(path);
    let asked = origin.count_path(path);

    let r = get(&client, &edge.http_url(path)).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "the whole object after the purge"
    );
    for (a, b) in ranges {
        let r = send(
            client
                .get(edge.http_url(path))
                .header("range", format!("bytes={a}-{b}")),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{a}-{b} after the purge");
    }
    assert!(
        origin.count_path(path) > asked,
        "the origin was asked again"
    );

    edge.stop().await;
    origin.stop().await;
}
