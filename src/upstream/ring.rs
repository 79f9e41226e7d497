//! The consistent-hash ring of origins: which origin owns a cache key, and the failover order.
//!
//! Pure and I/O-free. Built on consistent_hash_ring with `weight × VNODES_PER_WEIGHT` virtual
//! nodes per origin, keyed by origin name so the mapping does not depend on list order. Every
//! edge of a fleet must agree on the owner of a key: the golden test pins the mapping.

use std::collections::HashMap;

use consistent_hash_ring::{Ring, RingBuilder};

/// Virtual nodes per unit of weight (≥ 160 keeps the skew within a few percent).
pub const VNODES_PER_WEIGHT: usize = 160;

pub struct OriginRing {
    ring: Ring<String>,
    index: HashMap<String, usize>,
}

impl OriginRing {
    /// Builds the ring from `(name, weight)` pairs; indexes in `candidates` refer to this order.
    pub fn new<'a>(origins: impl IntoIterator<Item = (&'a str, u32)>) -> OriginRing {
        let mut index = HashMap::new();
        let mut builder = RingBuilder::default();
        for (i, (name, weight)) in origins.into_iter().enumerate() {
            index.insert(name.to_owned(), i);
            builder = builder.weighted_node(
                name.to_owned(),
                (weight.max(1) as usize) * VNODES_PER_WEIGHT,
            );
        }
        OriginRing {
            ring: builder.build(),
            index,
        }
    }

    /// Origins for `key` in failover order, each once. Empty for an empty ring.
    pub fn candidates<'a>(&'a self, key: &str) -> impl Iterator<Item = usize> + 'a {
        self.ring
            .replicas(key)
            .filter_map(move |name| self.index.get(name).copied())
    }

    /// The owner of `key`.
    pub fn owner(&self, key: &str) -> Option<usize> {
        self.candidates(key).next()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("/live/stream_{}/seg_{i}.m4s", i % 7))
            .collect()
    }

    fn shares(ring: &OriginRing, n_origins: usize, keys: &[String]) -> Vec<f64> {
        let mut counts = vec![0usize; n_origins];
        for k in keys {
            counts[ring.owner(k).unwrap()] += 1;
        }
        counts
            .iter()
            .map(|c| *c as f64 / keys.len() as f64)
            .collect()
    }

    #[test]
    fn equal_weights_balance() {
        let ring = OriginRing::new([("a", 1), ("b", 1), ("c", 1)]);
        let s = shares(&ring, 3, &keys(30_000));
        for share in s {
            assert!((share - 1.0 / 3.0).abs() < 0.05, "share {share}");
        }
    }

    #[test]
    fn unequal_weights_balance() {
        let ring = OriginRing::new([("a", 2), ("b", 1), ("c", 1)]);
        let s = shares(&ring, 3, &keys(30_000));
        assert!((s[0] - 0.5).abs() < 0.05, "{s:?}");
        assert!((s[1] - 0.25).abs() < 0.05, "{s:?}");
        assert!((s[2] - 0.25).abs() < 0.05, "{s:?}");
    }

    #[test]
    fn removing_an_origin_moves_only_its_keys() {
        let all = OriginRing::new([("a", 1), ("b", 1), ("c", 1)]);
        let two = OriginRing::new([("a", 1), ("c", 1)]);
        let names = ["a", "b", "c"];
        let names_two = ["a", "c"];
        let mut moved = 0;
        for k in keys(20_000) {
            let before = names[all.owner(&k).unwrap()];
            let after = names_two[two.owner(&k).unwrap()];
            if before != "b" {
                assert_eq!(before, after, "key {k} moved off a surviving origin");
            } else {
                moved += 1;
            }
        }
        assert!(moved > 5000 && moved < 8500, "b owned {moved} keys");
    }

    #[test]
    fn failover_order_visits_each_origin_once() {
        let ring = OriginRing::new([("a", 1), ("b", 3), ("c", 1)]);
        for k in keys(100) {
            let mut c: Vec<usize> = ring.candidates(&k).collect();
            assert_eq!(c.len(), 3);
            c.sort();
            assert_eq!(c, vec![0, 1, 2]);
        }
        assert!(OriginRing::new([]).owner("x").is_none());
    }

    #[test]
    fn list_order_does_not_change_the_mapping() {
        let r1 = OriginRing::new([("a", 1), ("b", 1), ("c", 1)]);
        let r2 = OriginRing::new([("c", 1), ("a", 1), ("b", 1)]);
        let n1 = ["a", "b", "c"];
        let n2 = ["c", "a", "b"];
        for k in keys(1000) {
            assert_eq!(n1[r1.owner(&k).unwrap()], n2[r2.owner(&k).unwrap()]);
        }
    }

    /// Every edge of a fleet must agree on owners: a change of hashing must fail this test.
    #[test]
    fn golden_mapping() {
        let ring = OriginRing::new([("origin-a", 1), ("origin-b", 1), ("origin-c", 2)]);
        let names = ["origin-a", "origin-b", "origin-c"];
        let got: Vec<(&str, &str)> = [
            "/live/channel1/index.m3u8",
            "/live/channel1/seg_1000.ts",
            "/live/channel1/seg_1001.ts",
            "/vod/movie/master.m3u8",
            "/vod/movie/720p/seg_00042.m4s",
            "/dash/manifest.mpd",
        ]
        .iter()
        .map(|k| (*k, names[ring.owner(k).unwrap()]))
        .collect();
        assert_eq!(got, GOLDEN.to_vec());
    }

    const GOLDEN: [(&str, &str); 6] = [
        ("/live/channel1/index.m3u8", "origin-a"),
        ("/live/channel1/seg_1000.ts", "origin-b"),
        ("/live/channel1/seg_1001.ts", "origin-c"),
        ("/vod/movie/master.m3u8", "origin-c"),
        ("/vod/movie/720p/seg_00042.m4s", "origin-a"),
        ("/dash/manifest.mpd", "origin-a"),
    ];
}
