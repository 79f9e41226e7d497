//! The disk tier on a real directory: objects survive a reopen, damage of any kind is found
//! and never served, unfinished writes vanish, purges hold across a reopen, and the tier
//! stays within its size.

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use super::*;
use crate::cache::ContentKind;
use crate::cache::policy::Freshness;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "streamedge-disk-{tag}-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    fn cfg(&self, max: u64) -> DiskConfig {
        DiskConfig {
            path: self.0.clone(),
            max_size: max,
            min_ttl: Duration::from_secs(30),
            promote_after: 2,
            fsync: false,
            write_queue: 256 << 20,
        }
    }

    /// Every object file.
    fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in std::fs::read_dir(self.0.join("objects")).unwrap().flatten() {
            for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                out.push(f.path());
            }
        }
        out
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn object(body: Bytes, lifetime: u64) -> CachedObject {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::ETAG, "\"v1\"".parse().unwrap());
    headers.insert(http::header::CONTENT_TYPE, "video/mp2t".parse().unwrap());
    CachedObject {
        hit_head: Default::default(),
        status: StatusCode::OK,
        headers,
        body: Body::Memory(body),
        kind: ContentKind::Segment,
        freshness: Freshness {
            stored_at: tokio::time::Instant::now(),
            initial_age: Duration::from_secs(3),
            lifetime: Duration::from_secs(lifetime),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::from_secs(60),
            must_revalidate: false,
            no_cache: false,
            max_age: None,
        },
        vary: None,
        origin: "origin-a".into(),
        encodings: None,
        media: None,
    }
}

fn slot(path: &str) -> StoreKey {
    StoreKey::base(CacheKey::new(path, None))
}

fn payload(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// A disk whose index is complete (start-up scan done).
async fn opened(cfg: &DiskConfig) -> Disk {
    let d = Disk::open(cfg);
    for _ in 0..500 {
        if d.shared.ready.load(Ordering::Acquire) {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the disk tier's scan did not finish");
}

async fn body_of(d: &Disk, s: &StoreKey) -> Option<(CachedObject, Bytes)> {
    match d.lookup(s).await? {
        DiskFound::Object(obj, _) => {
            let Body::Disk(f) = &obj.body else {
                panic!("a disk object with a memory body")
            };
            let bytes = d.read_all(f).await?;
            Some((*obj, bytes))
        }
        DiskFound::Vary(_) => panic!("expected an object"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_survive_a_reopen_with_their_head_and_age() {
    let dir = Dir::new("reopen");
    let cfg = dir.cfg(64 << 20);
    let big = payload(1_000_000, 7);
    {
        let d = opened(&cfg).await;
        d.offer(
            &slot("/v/a.ts"),
            Offer::Object(&object(big.clone(), 3600)),
            Duration::ZERO,
        );
        d.offer(
            &slot("/v/b.ts"),
            Offer::Object(&object(payload(10, 1), 3600)),
            Duration::ZERO,
        );
        d.flush(Duration::from_secs(5)).await;
    }
    let d = opened(&cfg).await;
    let (obj, bytes) = body_of(&d, &slot("/v/a.ts")).await.expect("stored");
    assert_eq!(bytes, big);
    assert_eq!(obj.headers.get("etag").unwrap(), "\"v1\"");
    assert_eq!(&*obj.origin, "origin-a");
    let age = obj.freshness.age(tokio::time::Instant::now());
    assert!(
        age >= Duration::from_secs(3) && age < Duration::from_secs(10),
        "{age:?}"
    );
    assert!(obj.freshness.is_fresh(tokio::time::Instant::now()));
    assert_eq!(
        body_of(&d, &slot("/v/b.ts")).await.unwrap().1,
        payload(10, 1)
    );
    assert!(d.lookup(&slot("/v/none.ts")).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_truncated_and_unfinished_files_are_never_served() {
    let dir = Dir::new("damage");
    let cfg = dir.cfg(64 << 20);
    let paths = ["/d/flip.ts", "/d/cut.ts", "/d/head.ts", "/d/ok.ts"];
    {
        let d = opened(&cfg).await;
        for (i, p) in paths.iter().enumerate() {
            d.offer(
                &slot(p),
                Offer::Object(&object(payload(600_000, i as u8), 3600)),
                Duration::ZERO,
            );
        }
        d.flush(Duration::from_secs(5)).await;
    }
    std::fs::write(dir.0.join("tmp").join("unfinished.0"), b"half a file").unwrap();
    let id = |p: &str| id_of(&slot(p));
    let path = |p: &str| {
        dir.0
            .join("objects")
            .join(format!("{:02x}", (id(p) >> 120) as u8))
            .join(format!("{:032x}", id(p)))
    };
    // A flipped byte in the middle of the body, a cut, a flipped byte in the meta.
    let mut bytes = std::fs::read(path("/d/flip.ts")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(path("/d/flip.ts"), &bytes).unwrap();
    let bytes = std::fs::read(path("/d/cut.ts")).unwrap();
    std::fs::write(path("/d/cut.ts"), &bytes[..bytes.len() - 100]).unwrap();
    let mut bytes = std::fs::read(path("/d/head.ts")).unwrap();
    bytes[40] ^= 1;
    std::fs::write(path("/d/head.ts"), &bytes).unwrap();

    let d = opened(&cfg).await;
    assert!(!dir.0.join("tmp").join("unfinished.0").exists());
    for p in &paths[..3] {
        assert!(body_of(&d, &slot(p)).await.is_none(), "{p} was served");
        assert!(!path(p).exists(), "{p} was not deleted");
    }
    assert_eq!(
        body_of(&d, &slot("/d/ok.ts")).await.unwrap().1,
        payload(600_000, 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_found_while_streaming_ends_the_body_with_an_error() {
    use http_body_util::BodyExt;
    let dir = Dir::new("stream");
    let cfg = dir.cfg(64 << 20);
    let d = opened(&cfg).await;
    let body = payload(1 << 20, 9);
    d.offer(
        &slot("/s.ts"),
        Offer::Object(&object(body.clone(), 3600)),
        Duration::ZERO,
    );
    d.flush(Duration::from_secs(5)).await;
    let Some(DiskFound::Object(obj, _)) = d.lookup(&slot("/s.ts")).await else {
        panic!("not stored");
    };
    let Body::Disk(f) = &obj.body else { panic!() };
    // Whole and ranged reads give the stored bytes.
    let all = f.stream(0, f.len()).collect().await.unwrap().to_bytes();
    assert_eq!(all, body);
    let part = f
        .stream(300_000, 700_000)
        .collect()
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(part, body.slice(300_000..700_000));
    // Damage the last block under the open file: the stream fails there, the file goes.
    let files = dir.files();
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let at = bytes.len() - 200;
    bytes[at] ^= 0xff;
    std::fs::write(&files[0], &bytes).unwrap();
    let f2 = match d.lookup(&slot("/s.ts")).await {
        Some(DiskFound::Object(o, _)) => match o.body {
            Body::Disk(f) => f,
            Body::Memory(_) => panic!(),
        },
        _ => panic!("verified files are not re-read whole"),
    };
    let mut s = f2.stream(0, f2.len());
    let mut got = 0;
    let mut failed = false;
    while let Some(frame) = s.frame().await {
        match frame {
            Ok(fr) => got += fr.into_data().unwrap().len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        failed && got < body.len(),
        "damage went unnoticed ({got} bytes)"
    );
    assert!(dir.files().is_empty());
    assert!(d.lookup(&slot("/s.ts")).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_hold_across_a_reopen() {
    let dir = Dir::new("purge");
    let cfg = dir.cfg(64 << 20);
    {
        let d = opened(&cfg).await;
        for p in ["/p/1.ts", "/p/2.ts", "/q/1.ts", "/soft.ts"] {
            d.offer(
                &slot(p),
                Offer::Object(&object(payload(100, 0), 3600)),
                Duration::ZERO,
            );
        }
        d.flush(Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        d.purge_matching(Pattern::Prefix("/p/"), false).await;
        d.purge_matching(Pattern::Target("/soft.ts"), true).await;
        assert!(d.lookup(&slot("/p/1.ts")).await.is_none());
        assert_eq!(d.purge_key(&CacheKey::new("/q/1.ts", None), false).await, 1);
        assert!(d.lookup(&slot("/q/1.ts")).await.is_none());
    }
    let d = opened(&cfg).await;
    assert!(d.lookup(&slot("/p/2.ts")).await.is_none());
    assert!(d.lookup(&slot("/q/1.ts")).await.is_none());
    let (soft, _) = body_of(&d, &slot("/soft.ts"))
        .await
        .expect("a soft purge keeps the file");
    assert!(!soft.freshness.is_fresh(tokio::time::Instant::now()));
    // A copy written after the purge is not affected by it.
    d.offer(
        &slot("/p/1.ts"),
        Offer::Object(&object(payload(100, 0), 3600)),
        Duration::ZERO,
    );
    d.flush(Duration::from_secs(5)).await;
    assert!(d.lookup(&slot("/p/1.ts")).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_stays_within_its_size_and_skips_short_lived_objects() {
    let dir = Dir::new("size");
    let cfg = dir.cfg(4 << 20);
    let d = opened(&cfg).await;
    for i in 0..12 {
        let s = slot(&format!("/e/{i}.ts"));
        d.offer(
            &s,
            Offer::Object(&object(payload(500_000, i), 3600)),
            Duration::ZERO,
        );
    }
    let mut short = object(payload(10, 0), 5);
    short.freshness.stale_if_error = Duration::ZERO;
    d.offer(&slot("/short.ts"), Offer::Object(&short), Duration::ZERO);
    d.flush(Duration::from_secs(5)).await;
    let on_disk: u64 = dir
        .files()
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(on_disk <= 4 << 20, "{on_disk} bytes on disk");
    assert!(
        dir.files().len() >= 6,
        "evicted too much: {}",
        dir.files().len()
    );
    assert!(d.lookup(&slot("/short.ts")).await.is_none());
    // Once full, a newcomer is refused on its first offer and written on its second.
    assert!(d.lookup(&slot("/e/11.ts")).await.is_none());
    let again = object(payload(500_000, 11), 3600);
    d.offer(&slot("/e/11.ts"), Offer::Object(&again), Duration::ZERO);
    d.flush(Duration::from_secs(5)).await;
    assert!(d.lookup(&slot("/e/11.ts")).await.is_some());
    let on_disk: u64 = dir
        .files()
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(on_disk <= 4 << 20, "{on_disk} bytes on disk");
}

#[test]
fn meta_round_trips_with_vary_and_encodings() {
    let mut obj = object(Bytes::new(), 100);
    obj.vary = Some(vec![http::header::ACCEPT_ENCODING].into());
    obj.encodings = Some(Arc::new(crate::cache::Encodings {
        br: Some(Bytes::from_static(b"br")),
        gzip: None,
    }));
    let s = StoreKey {
        key: CacheKey::new("/m.m3u8", Some("a=1")),
        variant: Some("gzip".into()),
    };
    let meta = format::encode_meta(&s, now_ms(), &Content::Object(Box::new(obj)));
    let back = format::decode_meta(&meta).unwrap();
    assert_eq!(back.slot, s);
    let Content::Object(o) = back.content else {
        panic!()
    };
    assert_eq!(
        o.vary.as_deref(),
        Some(&[http::header::ACCEPT_ENCODING][..])
    );
    assert_eq!(o.encodings.unwrap().br.as_deref(), Some(&b"br"[..]));
    for cut in 0..meta.len() {
        assert!(format::decode_meta(&meta[..cut]).is_err());
    }
}

#[test]
fn header_integers_from_disk_are_bounded() {
    let good = format::Header {
        meta_len: 10,
        block: format::BLOCK,
        body_len: 100,
        meta_crc: 0,
    };
    assert_eq!(format::Header::decode(&good.encode()), Ok(good));
    for bad in [
        format::Header { block: 0, ..good },
        format::Header {
            block: u32::MAX,
            ..good
        },
        format::Header {
            body_len: u64::MAX,
            ..good
        },
        format::Header {
            meta_len: u32::MAX,
            ..good
        },
    ] {
        assert!(format::Header::decode(&bad.encode()).is_err(), "{bad:?}");
    }
    let mut flipped = good.encode();
    flipped[17] ^= 1;
    assert!(format::Header::decode(&flipped).is_err(), "checksum");
}

#[test]
fn a_purge_wins_over_a_write_of_the_same_millisecond_and_cannot_forge_log_lines() {
    let mut r = rules::Rules::default();
    r.add(Pattern::Key("/k"), 100, false);
    assert_eq!(r.verdict(&slot("/k"), 100), rules::Verdict::Purged);
    assert_eq!(r.verdict(&slot("/k"), 101), rules::Verdict::Keep);
    let dir = Dir::new("forge");
    let log = rules::Log::new(&dir.0);
    log.append(Pattern::Prefix("/x\n1 hard prefix /"), 5, false)
        .unwrap();
    let loaded = log.load().unwrap();
    assert_eq!(loaded.verdict(&slot("/anything"), 0), rules::Verdict::Keep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_objects_cannot_grow_the_index_past_the_configured_size() {
    let dir = Dir::new("tiny");
    let d = opened(&dir.cfg(1 << 20)).await;
    for i in 0..600u32 {
        let s = slot(&format!("/t/{i}.ts"));
        let obj = object(payload(10, i as u8), 3600);
        // Offered twice: the second offer passes the doorkeeper once the tier is full.
        d.offer(&s, Offer::Object(&obj), Duration::ZERO);
        d.offer(&s, Offer::Object(&obj), Duration::ZERO);
    }
    d.flush(Duration::from_secs(10)).await;
    let n = lock(&d.shared.index).len();
    assert!(n <= 256, "{n} objects indexed in 1 MiB of 4 KiB files");
    assert!(n >= 200, "the tier still fills: {n}");
}
