//! The disk tier: complete objects in files under `cache.disk.path`, below the memory tier.
//!
//! - One file per slot (`objects/<xx>/<hash>`), written under `tmp/` and renamed into place
//!   once whole, with checksums over its head and every block of its body (`format`). A crash
//!   at any moment leaves old files, new files, or temporary files that start-up deletes.
//! - An in-memory index of hashes (`index`): lookups of absent slots never touch the disk,
//!   eviction is CLOCK within `max_size`, admission once full is a doorkeeper.
//! - Start-up serves at once: a scan thread rebuilds the index from the files' heads, and
//!   until it is done a lookup the index cannot answer opens the slot's file directly.
//! - All file I/O runs off the runtime's worker threads: writes and deletions on one writer
//!   thread fed by a bounded queue, reads in `spawn_blocking`.
//! - A file that fails a check is deleted and counted, never served; an I/O error (a full or
//!   read-only disk, EIO) turns the tier off (writes, or everything) while memory goes on.
//! - Purges by key remove the key's files; purges by target or prefix are kept as rules
//!   (`rules`) applied whenever a file is read, and by the next start-up scan.

mod file;
mod format;
mod index;
mod rules;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use http::header::HeaderName;
use sha2::{Digest, Sha256};

pub(crate) use file::DiskFile;
use file::{Bad, read_head};
use format::{Content, Damage, Header, now_ms};
use index::{Entry, Id, Index, REFERENCED, SOFT_PURGED, VERIFIED};
pub(crate) use rules::Pattern;
use rules::{Log, Rules, Verdict};

use super::{Body, CacheKey, CachedObject, StoreKey};
use crate::config::DiskConfig;

/// How long a lookup waits for the disk before it answers "not stored".
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// What the disk had for a slot.
pub(crate) enum DiskFound {
    /// An object whose body is on disk, and whether this hit promotes it to memory (decided
    /// once, under the index lock: a burst of hits promotes once).
    Object(Box<CachedObject>, bool),
    Vary(Arc<[HeaderName]>),
}

/// The disk tier's state and size, for the status page.
pub(crate) struct DiskUsage {
    /// Reads and writes on (an I/O error turns them off).
    pub enabled: bool,
    /// The start-up scan has rebuilt the index.
    pub ready: bool,
    pub objects: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

/// What is offered to the disk.
pub(crate) enum Offer<'a> {
    Object(&'a CachedObject),
    Vary(&'a Arc<[HeaderName]>),
}

enum Job {
    Write(Box<Write>),
    Delete(Vec<Id>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

struct Write {
    id: Id,
    base: u64,
    meta: Vec<u8>,
    body: Source,
}

enum Source {
    Memory(Bytes),
    File(Arc<DiskFile>),
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Memory(b) => b.len() as u64,
            Source::File(f) => f.len(),
        }
    }
}

/// State shared by the request path, the writer thread and the scan thread.
pub(super) struct Shared {
    cfg: DiskConfig,
    objects: PathBuf,
    tmp: PathBuf,
    index: Mutex<Index>,
    rules: RwLock<Rules>,
    log: Log,
    reads: AtomicBool,
    writes: AtomicBool,
    ready: AtomicBool,
    /// Bytes offered and not yet written.
    queued: AtomicU64,
    seq: AtomicU64,
}

/// The disk tier's face.
#[derive(Clone)]
pub(crate) struct Disk {
    shared: Arc<Shared>,
    tx: Sender<Job>,
}

impl Disk {
    /// Opens the tier: creates its directories, removes unfinished writes, loads the purge
    /// log, and starts the writer and the scan. A directory it cannot use leaves the tier off
    /// (logged); the edge serves from memory.
    pub fn open(cfg: &DiskConfig) -> Disk {
        let root = cfg.path.clone();
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            objects: root.join("objects"),
            tmp: root.join("tmp"),
            index: Mutex::new(Index::new(cfg.max_size)),
            rules: RwLock::new(Rules::default()),
            log: Log::new(&root),
            reads: AtomicBool::new(true),
            writes: AtomicBool::new(true),
            ready: AtomicBool::new(false),
            queued: AtomicU64::new(0),
            seq: AtomicU64::new(0),
        });
        // Unbounded: writes are bounded by the bytes they hold (`write_queue`); deletions must
        // never be lost (the index has already forgotten their files).
        let (tx, rx) = std::sync::mpsc::channel();
        match prepare(&shared) {
            Ok(rules) => *write(&shared.rules) = rules,
            Err(e) => {
                tracing::error!(path = %root.display(), error = %e, "disk tier unusable: serving from memory only");
                crate::metrics::disk_error("open");
                shared.reads.store(false, Ordering::Relaxed);
                shared.writes.store(false, Ordering::Relaxed);
            }
        }
        shared.publish();
        let writer = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("streamedge-disk-writer".into())
            .spawn(move || write_loop(&writer, &rx));
        if spawned.is_err() {
            shared.writes.store(false, Ordering::Relaxed);
        }
        if shared.reads.load(Ordering::Relaxed) {
            let scanner = shared.clone();
            let tx2 = tx.clone();
            let _ = std::thread::Builder::new()
                .name("streamedge-disk-scan".into())
                .spawn(move || scan(&scanner, &tx2));
        } else {
            shared.ready.store(true, Ordering::Relaxed);
        }
        Disk { shared, tx }
    }

    /// The stored file of a slot, if the tier has one that passes its checks.
    pub async fn lookup(&self, slot: &StoreKey) -> Option<DiskFound> {
        let sh = &self.shared;
        if !sh.reads.load(Ordering::Relaxed) {
            return None;
        }
        let id = id_of(slot);
        if sh.ready.load(Ordering::Acquire) && lock(&sh.index).get(id).is_none() {
            return None;
        }
        let sh = self.shared.clone();
        let slot = slot.clone();
        let read = tokio::task::spawn_blocking(move || load(&sh, &slot, id));
        // A disk that hangs must not hold requests: past this, the lookup is a miss (the
        // read finishes in the background).
        match tokio::time::timeout(LOOKUP_TIMEOUT, read).await {
            Ok(found) => found.ok().flatten(),
            Err(_) => {
                crate::metrics::disk_error("slow-read");
                None
            }
        }
    }

    /// The tier's state and size now (from the index: no I/O).
    pub fn usage(&self) -> DiskUsage {
        let sh = &self.shared;
        let (objects, bytes) = {
            let ix = lock(&sh.index);
            (ix.len(), ix.bytes())
        };
        DiskUsage {
            enabled: sh.reads.load(Ordering::Relaxed) && sh.writes.load(Ordering::Relaxed),
            ready: sh.ready.load(Ordering::Relaxed),
            objects,
            bytes,
            max_bytes: sh.cfg.max_size,
        }
    }

    /// Whether the index has a file for the slot (no I/O; before the start-up scan is done,
    /// only what was indexed so far).
    pub fn holds(&self, slot: &StoreKey) -> bool {
        self.shared.reads.load(Ordering::Relaxed)
            && lock(&self.shared.index).get(id_of(slot)).is_some()
    }

    /// The whole body of a disk object in memory (off the runtime's threads); `None` when it
    /// cannot be read (the file is then dropped or the tier stopped).
    pub async fn read_all(&self, file: &Arc<DiskFile>) -> Option<Bytes> {
        let f = file.clone();
        match tokio::task::spawn_blocking(move || f.read_all().map_err(|b| (f, b))).await {
            Ok(Ok(bytes)) => Some(bytes),
            Ok(Err((f, bad))) => {
                f.report(&bad);
                None
            }
            Err(_) => None,
        }
    }

    /// Offers a slot to the disk: written (later, by the writer thread) when the policy and
    /// the admission filter allow and the queue has room.
    pub fn offer(&self, slot: &StoreKey, offer: Offer<'_>, stale_retention: std::time::Duration) {
        let sh = &self.shared;
        if !sh.writes.load(Ordering::Relaxed) {
            crate::metrics::disk_write("dropped");
            // An older copy on disk must not outlive the one replacing it.
            self.remove(slot);
            return;
        }
        let (content, body) = match offer {
            Offer::Vary(names) => (Content::Vary(names.clone()), Source::Memory(Bytes::new())),
            Offer::Object(obj) => {
                if !sh.eligible(obj, stale_retention) {
                    self.remove(slot);
                    return;
                }
                let body = match &obj.body {
                    Body::Memory(b) => Source::Memory(b.clone()),
                    Body::Disk(f) => Source::File(f.clone()),
                };
                (Content::Object(Box::new(obj.clone())), body)
            }
        };
        let id = id_of(slot);
        let len = body.len();
        if !lock(&sh.index).admit(id, len) {
            crate::metrics::disk_write("refused");
            return;
        }
        if sh.queued.load(Ordering::Relaxed) + len > sh.cfg.write_queue {
            crate::metrics::disk_write("dropped");
            self.remove(slot);
            return;
        }
        let meta = format::encode_meta(slot, now_ms(), &content);
        let job = Job::Write(Box::new(Write {
            id,
            base: base_of(&slot.key),
            meta,
            body,
        }));
        sh.queued.fetch_add(len, Ordering::Relaxed);
        if self.tx.send(job).is_err() {
            sh.queued.fetch_sub(len, Ordering::Relaxed);
            crate::metrics::disk_write("dropped");
            self.remove(slot);
        }
    }

    /// Removes one slot's file.
    pub fn remove(&self, slot: &StoreKey) {
        let id = id_of(slot);
        if lock(&self.shared.index).remove(id).is_some() {
            let _ = self.tx.send(Job::Delete(vec![id]));
            self.shared.publish_usage();
        }
    }

    /// Purges a key (host included) and all its variants and slices: their files go, or are
    /// marked stale (soft), at once. Returns how many files the index had.
    pub async fn purge_key(&self, key: &CacheKey, soft: bool) -> usize {
        let n = self.purge_indexed(base_of(key), soft);
        self.remember(Pattern::Key(key.as_repr()), soft).await;
        n
    }

    fn purge_indexed(&self, base: u64, soft: bool) -> usize {
        let sh = &self.shared;
        let mut index = lock(&sh.index);
        let ids = index.with_base(base);
        let n = ids.len();
        if soft {
            for id in &ids {
                if let Some(e) = index.get_mut(*id) {
                    e.flags |= SOFT_PURGED;
                }
            }
            return n;
        }
        for id in &ids {
            index.remove(*id);
        }
        drop(index);
        let _ = self.tx.send(Job::Delete(ids));
        sh.publish_usage();
        n
    }

    /// Purges a target under every host, or every target under a prefix: kept as a rule
    /// (the index has no key texts), applied to each file when it is next read.
    pub async fn purge_matching(&self, pattern: Pattern<'_>, soft: bool) {
        self.remember(pattern, soft).await;
    }

    /// Keeps a purge as a rule, logged (and synced) before this returns, so that files the
    /// index cannot name, and files still queued for writing, are purged too.
    async fn remember(&self, pattern: Pattern<'_>, soft: bool) {
        let at = now_ms();
        write(&self.shared.rules).add(pattern, at, soft);
        let (kind, text) = pattern.owned();
        let sh = self.shared.clone();
        let logged =
            tokio::task::spawn_blocking(move || sh.log.append(Pattern::of(kind, &text), at, soft))
                .await;
        if !matches!(logged, Ok(Ok(()))) {
            tracing::warn!("disk tier: could not log a purge; it holds until a restart");
            crate::metrics::disk_error("purge-log");
        }
    }

    /// Waits until everything offered so far is written (shutdown), at most `limit`.
    pub async fn flush(&self, limit: std::time::Duration) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sender = self.tx.clone();
        if sender.send(Job::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A slot's identity: the first 128 bits of SHA-256 over its key, host and variant (stable
/// across builds, so files stay named by it).
fn id_of(slot: &StoreKey) -> Id {
    id_parts(
        slot.key.as_repr(),
        slot.key.host_len(),
        slot.variant.as_deref(),
    )
}

fn id_parts(repr: &str, host_len: u32, variant: Option<&str>) -> Id {
    let mut h = Sha256::new();
    h.update(repr.as_bytes());
    h.update([0xff]);
    h.update(host_len.to_le_bytes());
    match variant {
        Some(v) => {
            h.update([1]);
            h.update(v.as_bytes());
        }
        None => h.update([0]),
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_be_bytes(b)
}

/// The hash every slot of a key shares (its variants and slices), from the key's text.
fn base_of(key: &CacheKey) -> u64 {
    (id_parts(key.as_repr(), key.host_len(), None) >> 64) as u64
}

impl Shared {
    fn path_of(&self, id: Id) -> PathBuf {
        self.objects
            .join(format!("{:02x}", (id >> 120) as u8))
            .join(format!("{id:032x}"))
    }

    /// The disk policy: complete 200s (and slices) kept long enough to be worth a write;
    /// never a live playlist.
    fn eligible(&self, obj: &CachedObject, stale_retention: std::time::Duration) -> bool {
        let status_ok = matches!(obj.status.as_u16(), 200 | 206);
        let live = obj.media.is_some_and(|m| m.live);
        let keep = obj
            .freshness
            .retention(obj.has_validator(), stale_retention);
        status_ok && !live && keep >= self.cfg.min_ttl && obj.body.len() <= self.cfg.max_size
    }

    fn publish(&self) {
        crate::metrics::disk_state(
            self.reads.load(Ordering::Relaxed) && self.writes.load(Ordering::Relaxed),
            self.ready.load(Ordering::Relaxed),
        );
        self.publish_usage();
    }

    fn publish_usage(&self) {
        let (n, bytes) = {
            let ix = lock(&self.index);
            (ix.len(), ix.bytes())
        };
        crate::metrics::disk_usage(n, bytes);
    }

    /// A read that failed: damage drops the file; an I/O error stops the tier.
    fn failed_read(&self, id: Id, bad: &Bad) {
        match bad {
            Bad::Damage(d) => self.drop_damaged(id, &self.path_of(id), *d),
            Bad::Io(e) => self.io_error("read", e),
        }
    }

    fn drop_damaged(&self, id: Id, path: &Path, d: Damage) {
        tracing::warn!(file = %path.display(), damage = %d, "disk tier: damaged file dropped");
        crate::metrics::disk_corrupt();
        lock(&self.index).remove(id);
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            self.io_error("delete", &e);
        }
        self.publish_usage();
    }

    /// An I/O error: writes stop on any (a full or read-only disk, EIO); reads stop too when
    /// the device itself fails.
    fn io_error(&self, op: &'static str, e: &std::io::Error) {
        crate::metrics::disk_error(op);
        let device = matches!(
            e.raw_os_error(),
            Some(libc::EIO | libc::ENXIO | libc::ENODEV)
        );
        let was_writing = self.writes.swap(false, Ordering::Relaxed);
        let was_reading = device && self.reads.swap(false, Ordering::Relaxed);
        if was_writing || was_reading {
            tracing::error!(op, error = %e, reads_stopped = was_reading, "disk tier off after an I/O error; serving from memory and origins");
        }
        self.publish();
    }
}

/// Creates the directories, removes unfinished writes, reads the purge log.
fn prepare(sh: &Shared) -> std::io::Result<Rules> {
    std::fs::create_dir_all(&sh.objects)?;
    for b in 0..=255u8 {
        std::fs::create_dir_all(sh.objects.join(format!("{b:02x}")))?;
    }
    let _ = std::fs::remove_dir_all(&sh.tmp);
    std::fs::create_dir_all(&sh.tmp)?;
    sh.log.load()
}

/// Loads a slot's file (blocking): head, rules, checksums (every block, the first time this
/// process reads a file it did not write), hit count.
fn load(sh: &Arc<Shared>, slot: &StoreKey, id: Id) -> Option<DiskFound> {
    let path = sh.path_of(id);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            lock(&sh.index).remove(id);
            return None;
        }
        Err(e) => {
            sh.io_error("read", &e);
            return None;
        }
    };
    let opened = read_head(&file).and_then(|(header, meta)| {
        let body = DiskFile::open(file, header, id, Arc::downgrade(sh))?;
        Ok((header, meta, body))
    });
    let (header, meta, body) = match opened {
        Ok(x) => x,
        Err(bad) => {
            sh.failed_read(id, &bad);
            return None;
        }
    };
    if meta.slot != *slot {
        return None;
    }
    let mut verdict = read(&sh.rules).verdict(slot, meta.written_ms);
    let (flags, promote) = {
        let mut ix = lock(&sh.index);
        if ix.get(id).is_none() {
            let evicted = ix.insert(id, entry(&header, slot, 0));
            drop(ix);
            delete_files(sh, &evicted);
            ix = lock(&sh.index);
        }
        let e = ix.get_mut(id)?;
        e.flags |= REFERENCED;
        e.hits = e.hits.saturating_add(1);
        let promote = sh.cfg.promote_after != 0 && u32::from(e.hits) >= sh.cfg.promote_after;
        if promote {
            e.hits = 0;
        }
        (e.flags, promote)
    };
    if flags & SOFT_PURGED != 0 && verdict == Verdict::Keep {
        verdict = Verdict::Stale;
    }
    if verdict == Verdict::Purged {
        lock(&sh.index).remove(id);
        delete_files(sh, &[id]);
        return None;
    }
    if flags & VERIFIED == 0 {
        if let Err(bad) = body.verify() {
            sh.failed_read(id, &bad);
            return None;
        }
        if let Some(e) = lock(&sh.index).get_mut(id) {
            e.flags |= VERIFIED;
        }
    }
    crate::metrics::disk_hit();
    Some(match meta.content {
        Content::Vary(names) => DiskFound::Vary(names),
        Content::Object(mut obj) => {
            if verdict == Verdict::Stale {
                obj = Box::new(obj.expired());
            }
            obj.body = Body::Disk(Arc::new(body));
            DiskFound::Object(obj, promote)
        }
    })
}

fn entry(header: &Header, slot: &StoreKey, flags: u8) -> Entry {
    Entry {
        len: allocated(header.file_len()),
        base: base_of(&slot.key),
        flags,
        hits: 0,
    }
}

/// The bytes a file counts for: what a filesystem allocates for it (4 KiB blocks). Tiny
/// objects then cannot make the index grow past `max_size / 4 KiB` entries: its memory
/// follows from the configuration, not from what origins send.
fn allocated(file_len: u64) -> u64 {
    file_len.next_multiple_of(4096)
}

fn delete_files(sh: &Shared, ids: &[Id]) {
    for id in ids {
        if let Err(e) = std::fs::remove_file(sh.path_of(*id))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            sh.io_error("delete", &e);
        }
    }
    if !ids.is_empty() {
        sh.publish_usage();
    }
}

/// The writer thread: writes, deletions and flushes in the order they were queued.
fn write_loop(sh: &Shared, rx: &Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        match job {
            Job::Write(w) => {
                let len = w.body.len();
                if sh.writes.load(Ordering::Relaxed) {
                    write_one(sh, &w);
                } else {
                    crate::metrics::disk_write("dropped");
                }
                sh.queued.fetch_sub(len, Ordering::Relaxed);
            }
            Job::Delete(ids) => delete_files(sh, &ids),
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn write_one(sh: &Shared, w: &Write) {
    let tmp = sh.tmp.join(format!(
        "{:032x}.{}",
        w.id,
        sh.seq.fetch_add(1, Ordering::Relaxed)
    ));
    match write_file(sh, w, &tmp) {
        Ok(header) => {
            let evicted = lock(&sh.index).insert(
                w.id,
                Entry {
                    len: allocated(header.file_len()),
                    base: w.base,
                    flags: VERIFIED,
                    hits: 0,
                },
            );
            crate::metrics::disk_write("written");
            if !evicted.is_empty() {
                crate::metrics::disk_evictions(evicted.len() as u64);
            }
            delete_files(sh, &evicted);
            sh.publish_usage();
        }
        Err(bad) => {
            let _ = std::fs::remove_file(&tmp);
            crate::metrics::disk_write("failed");
            match bad {
                Bad::Io(e) => sh.io_error("write", &e),
                // The source of a copy was damaged: it goes, the copy is not made.
                Bad::Damage(d) => tracing::warn!(damage = %d, "disk tier: copy source damaged"),
            }
        }
    }
}

/// Writes one file under `tmp` and renames it into place.
fn write_file(sh: &Shared, w: &Write, tmp: &Path) -> Result<Header, Bad> {
    use std::io::Write as _;
    let header = Header {
        meta_len: w.meta.len() as u32,
        block: format::BLOCK,
        body_len: w.body.len(),
        meta_crc: crc32fast::hash(&w.meta),
    };
    let f = File::create(tmp)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &f);
    out.write_all(&header.encode())?;
    out.write_all(&w.meta)?;
    let mut crcs = Vec::with_capacity(header.blocks() as usize);
    match &w.body {
        Source::Memory(b) => {
            for block in b.chunks(format::BLOCK as usize) {
                crcs.push(crc32fast::hash(block));
                out.write_all(block)?;
            }
        }
        Source::File(src) => {
            for k in 0..header.blocks() {
                let block = src.block(k).inspect_err(|bad| src.report(bad))?;
                crcs.push(crc32fast::hash(&block));
                out.write_all(&block)?;
            }
        }
    }
    out.write_all(&format::trailer(&crcs))?;
    out.flush()?;
    drop(out);
    if sh.cfg.fsync {
        f.sync_data()?;
    }
    drop(f);
    std::fs::rename(tmp, sh.path_of(w.id))?;
    Ok(header)
}

/// The start-up scan: indexes every file by its head (dropping damaged, foreign and purged
/// ones), then marks the index ready and forgets the purge rules it applied.
fn scan(sh: &Arc<Shared>, tx: &Sender<Job>) {
    let started = now_ms();
    let t0 = tokio::time::Instant::now();
    let mut found = 0u64;
    for b in 0..=255u8 {
        let dir = sh.objects.join(format!("{b:02x}"));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if scan_file(sh, tx, &e.path()) {
                found += 1;
            }
        }
        sh.publish_usage();
    }
    let mut rules = write(&sh.rules);
    rules.forget_before(started);
    if let Err(e) = sh.log.rewrite(&rules) {
        tracing::warn!(error = %e, "disk tier: could not rewrite the purge log");
    }
    drop(rules);
    sh.ready.store(true, Ordering::Release);
    sh.publish();
    tracing::info!(
        files = found,
        took_ms = t0.elapsed().as_millis() as u64,
        "disk tier indexed"
    );
}

/// Indexes one file found by the scan; true when it was kept.
fn scan_file(sh: &Arc<Shared>, tx: &Sender<Job>, path: &Path) -> bool {
    let Some(id) = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| u128::from_str_radix(n, 16).ok())
    else {
        let _ = std::fs::remove_file(path);
        return false;
    };
    if lock(&sh.index).get(id).is_some() {
        return true;
    }
    let Ok(file) = File::open(path) else {
        return false;
    };
    let (header, meta) = match read_head(&file) {
        Ok(x) => x,
        Err(Bad::Damage(d)) => {
            sh.drop_damaged(id, path, d);
            return false;
        }
        Err(Bad::Io(e)) => {
            crate::metrics::disk_error("scan");
            tracing::warn!(file = %path.display(), error = %e, "disk tier: unreadable file skipped");
            return false;
        }
    };
    if id_of(&meta.slot) != id {
        sh.drop_damaged(id, path, Damage("name does not match its key"));
        return false;
    }
    let flags = match read(&sh.rules).verdict(&meta.slot, meta.written_ms) {
        Verdict::Purged => {
            let _ = std::fs::remove_file(path);
            return false;
        }
        Verdict::Stale => SOFT_PURGED,
        Verdict::Keep => 0,
    };
    let inserted = lock(&sh.index).insert_found(id, entry(&header, &meta.slot, flags));
    if let Some(evicted) = inserted
        && !evicted.is_empty()
    {
        crate::metrics::disk_evictions(evicted.len() as u64);
        let _ = tx.send(Job::Delete(evicted));
    }
    true
}

#[cfg(test)]
mod tests;
