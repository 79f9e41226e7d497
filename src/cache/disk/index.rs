//! The disk tier's in-memory index: which slots have a file, how large, and what to evict.
//!
//! Keys are 128-bit hashes of the slot (the file name is the same hash), never the key text:
//! an entry costs the hash, a 24-byte entry and the map's and the clock's share — 80 bytes
//! measured (76 MiB of RSS per million objects, loadtest `disk`), so ten million objects
//! index in under a gigabyte.
//! Eviction is CLOCK (second chance): a FIFO of ids where a hit since the last pass buys one
//! more round. Admission, once the tier is full, is a doorkeeper (a Bloom filter of recently
//! refused ids, as in TinyLFU): a newcomer is written only when it was offered before, so
//! objects asked for once do not push out ones asked for again and again.

use std::collections::{HashMap, VecDeque};

/// A slot's identity on disk.
pub(super) type Id = u128;

pub(super) const REFERENCED: u8 = 1;
/// Every block of the file was read and matched its checksum in this process.
pub(super) const VERIFIED: u8 = 2;
/// A soft purge newer than the file applies: serve only after revalidation.
pub(super) const SOFT_PURGED: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    /// Bytes of the file.
    pub len: u64,
    /// Hash of the slot's key without its variant: every variant and slice of a key shares it.
    pub base: u64,
    pub flags: u8,
    /// Disk hits since written or last promoted (saturating).
    pub hits: u8,
}

pub(super) struct Index {
    map: HashMap<Id, Entry>,
    clock: VecDeque<Id>,
    bytes: u64,
    max: u64,
    door: Doorkeeper,
}

impl Index {
    pub fn new(max: u64) -> Index {
        Index {
            map: HashMap::new(),
            clock: VecDeque::new(),
            bytes: 0,
            max,
            door: Doorkeeper::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn get(&self, id: Id) -> Option<&Entry> {
        self.map.get(&id)
    }

    pub fn get_mut(&mut self, id: Id) -> Option<&mut Entry> {
        self.map.get_mut(&id)
    }

    /// Whether an object of `len` bytes may be written: always while it fits without
    /// evicting; once the tier is full, only on its second offer.
    pub fn admit(&mut self, id: Id, len: u64) -> bool {
        if self.map.contains_key(&id) || self.bytes + len <= self.max {
            return true;
        }
        if self.door.contains(id) {
            return true;
        }
        self.door.insert(id);
        false
    }

    /// Records a file; returns the ids evicted to make room (their files are to be removed).
    pub fn insert(&mut self, id: Id, entry: Entry) -> Vec<Id> {
        match self.map.insert(id, entry) {
            Some(old) => self.bytes = self.bytes - old.len + entry.len,
            None => {
                self.bytes += entry.len;
                self.clock.push_back(id);
            }
        }
        self.evict()
    }

    /// Records a file found by the start-up scan, unless the slot was written since.
    pub fn insert_found(&mut self, id: Id, entry: Entry) -> Option<Vec<Id>> {
        if self.map.contains_key(&id) {
            return None;
        }
        Some(self.insert(id, entry))
    }

    pub fn remove(&mut self, id: Id) -> Option<Entry> {
        let e = self.map.remove(&id)?;
        self.bytes -= e.len;
        if self.clock.len() > 2 * self.map.len() + 1024 {
            let map = &self.map;
            self.clock.retain(|id| map.contains_key(id));
        }
        Some(e)
    }

    /// Every id stored under a base (a key's variants and slices).
    pub fn with_base(&self, base: u64) -> Vec<Id> {
        self.map
            .iter()
            .filter(|(_, e)| e.base == base)
            .map(|(id, _)| *id)
            .collect()
    }

    fn evict(&mut self) -> Vec<Id> {
        let mut gone = Vec::new();
        // Each pass clears at most every reference bit once, so this ends.
        let mut budget = 2 * self.clock.len() + 1;
        while self.bytes > self.max && budget > 0 {
            budget -= 1;
            let Some(id) = self.clock.pop_front() else {
                break;
            };
            let Some(e) = self.map.get_mut(&id) else {
                continue;
            };
            if e.flags & REFERENCED != 0 {
                e.flags &= !REFERENCED;
                self.clock.push_back(id);
                continue;
            }
            let len = e.len;
            self.map.remove(&id);
            self.bytes -= len;
            gone.push(id);
        }
        gone
    }
}

/// A Bloom filter of ids offered and refused, cleared after as many insertions as it was
/// sized for so that old refusals age out.
struct Doorkeeper {
    bits: Vec<u64>,
    inserted: usize,
}

const DOOR_BITS: usize = 1 << 21;

impl Doorkeeper {
    fn new() -> Doorkeeper {
        Doorkeeper {
            bits: vec![0; DOOR_BITS / 64],
            inserted: 0,
        }
    }

    fn probes(id: Id) -> [usize; 3] {
        let h = id as u64 ^ (id >> 64) as u64;
        let mask = DOOR_BITS as u64 - 1;
        [
            (h & mask) as usize,
            ((h >> 21) & mask) as usize,
            ((h >> 42) & mask) as usize,
        ]
    }

    fn contains(&self, id: Id) -> bool {
        Self::probes(id)
            .iter()
            .all(|&b| self.bits[b / 64] & (1 << (b % 64)) != 0)
    }

    fn insert(&mut self, id: Id) {
        if self.inserted >= DOOR_BITS / 8 {
            self.bits.iter_mut().for_each(|w| *w = 0);
            self.inserted = 0;
        }
        for b in Self::probes(id) {
            self.bits[b / 64] |= 1 << (b % 64);
        }
        self.inserted += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(len: u64) -> Entry {
        Entry {
            len,
            base: 0,
            flags: 0,
            hits: 0,
        }
    }

    #[test]
    fn evicts_oldest_unreferenced_first() {
        let mut ix = Index::new(300);
        assert!(ix.insert(1, entry(100)).is_empty());
        assert!(ix.insert(2, entry(100)).is_empty());
        assert!(ix.insert(3, entry(100)).is_empty());
        ix.get_mut(1).unwrap().flags |= REFERENCED;
        // 1 was hit: it gets a second chance, 2 goes.
        assert_eq!(ix.insert(4, entry(100)), vec![2]);
        assert_eq!(ix.bytes(), 300);
        assert!(ix.get(1).is_some() && ix.get(2).is_none());
    }

    #[test]
    fn replacing_a_file_counts_its_new_size() {
        let mut ix = Index::new(1000);
        ix.insert(1, entry(100));
        ix.insert(1, entry(400));
        assert_eq!((ix.len(), ix.bytes()), (1, 400));
        ix.remove(1);
        assert_eq!((ix.len(), ix.bytes()), (0, 0));
    }

    #[test]
    fn a_full_tier_admits_a_newcomer_on_its_second_offer() {
        let mut ix = Index::new(200);
        assert!(ix.admit(1, 100));
        ix.insert(1, entry(100));
        assert!(ix.admit(2, 100));
        ix.insert(2, entry(100));
        assert!(!ix.admit(3, 100), "first offer to a full tier is refused");
        assert!(ix.admit(3, 100), "the second is admitted");
        assert!(ix.admit(1, 100), "a stored slot may always be rewritten");
    }

    #[test]
    fn the_scan_never_overwrites_a_newer_write() {
        let mut ix = Index::new(1000);
        ix.insert(7, entry(10));
        assert!(ix.insert_found(7, entry(99)).is_none());
        assert_eq!(ix.get(7).unwrap().len, 10);
    }

    #[test]
    fn removed_ids_do_not_pile_up_in_the_clock() {
        let mut ix = Index::new(u64::MAX);
        for round in 0..20u128 {
            for i in 0..1000u128 {
                ix.insert(round * 1000 + i, entry(1));
                ix.remove(round * 1000 + i);
            }
        }
        assert!(ix.clock.len() <= 1024 + 1);
    }

    #[test]
    fn variants_share_their_base() {
        let mut ix = Index::new(1000);
        ix.insert(
            1,
            Entry {
                base: 9,
                ..entry(1)
            },
        );
        ix.insert(
            2,
            Entry {
                base: 9,
                ..entry(1)
            },
        );
        ix.insert(
            3,
            Entry {
                base: 8,
                ..entry(1)
            },
        );
        let mut v = ix.with_base(9);
        v.sort();
        assert_eq!(v, vec![1, 2]);
    }
}
