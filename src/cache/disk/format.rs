//! The disk tier's file format: one file per stored slot, self-describing and checksummed.
//!
//! ```text
//! header   32 bytes  magic "SEDISK01", meta length (u32), block size (u32), body length (u64),
//!                    meta CRC32, CRC32 of the 28 bytes before it
//! meta     the slot's key, when it was written, and the object's head (or a Vary index)
//! body     the object's bytes
//! table    one CRC32 per body block, then the table's own CRC32
//! end      magic "SEDKEND1"
//! ```
//! A file is written under a temporary name and renamed into place once complete, so a crash
//! leaves either the old file, the new one, or a temporary file that start-up removes. The
//! length a file must have follows from its header: a truncated file is found without reading
//! its body, a damaged header or meta by their checksums, damaged body bytes by their block's.
//! All integers are little-endian.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use super::super::policy::Freshness;
use super::super::{CacheKey, CachedObject, ContentKind, Encodings, MediaSummary, StoreKey};

pub(super) const MAGIC: &[u8; 8] = b"SEDISK01";
pub(super) const END: &[u8; 8] = b"SEDKEND1";
pub(super) const HEADER_LEN: u64 = 32;
/// Body bytes per checksum; also the unit disk hits are read and verified in.
pub(super) const BLOCK: u32 = 256 << 10;

/// What a file's header says about the rest of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub meta_len: u32,
    pub block: u32,
    pub body_len: u64,
    pub meta_crc: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut h = [0u8; HEADER_LEN as usize];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&self.meta_len.to_le_bytes());
        h[12..16].copy_from_slice(&self.block.to_le_bytes());
        h[16..24].copy_from_slice(&self.body_len.to_le_bytes());
        h[24..28].copy_from_slice(&self.meta_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..28]);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub fn decode(h: &[u8]) -> Result<Header, Damage> {
        if h.len() < HEADER_LEN as usize || &h[..8] != MAGIC {
            return Err(Damage("not a stored object (magic)"));
        }
        if crc32fast::hash(&h[..28]) != u32::from_le_bytes(le4(&h[28..32])) {
            return Err(Damage("header checksum"));
        }
        let header = Header {
            meta_len: u32::from_le_bytes(le4(&h[8..12])),
            block: u32::from_le_bytes(le4(&h[12..16])),
            body_len: u64::from_le_bytes(le8(&h[16..24])),
            meta_crc: u32::from_le_bytes(le4(&h[24..28])),
        };
        // Every integer read from a disk is hostile: only the block size this build writes,
        // bodies under 1 TiB, metas under 64 MiB (so no length below can overflow).
        if header.block != BLOCK || header.meta_len > 64 << 20 || header.body_len > 1 << 40 {
            return Err(Damage("header values"));
        }
        Ok(header)
    }

    pub fn body_offset(&self) -> u64 {
        HEADER_LEN + u64::from(self.meta_len)
    }

    pub fn blocks(&self) -> u64 {
        self.body_len.div_ceil(u64::from(self.block))
    }

    pub fn table_offset(&self) -> u64 {
        self.body_offset() + self.body_len
    }

    /// The length a complete file has.
    pub fn file_len(&self) -> u64 {
        self.table_offset() + 4 * self.blocks() + 4 + END.len() as u64
    }
}

/// Why a file cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Damage(pub &'static str);

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

fn le4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    a
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    a
}

/// The checksum table of a body and its trailer.
pub(super) fn trailer(block_crcs: &[u32]) -> Vec<u8> {
    let mut t = Vec::with_capacity(block_crcs.len() * 4 + 12);
    for c in block_crcs {
        t.extend_from_slice(&c.to_le_bytes());
    }
    let table_crc = crc32fast::hash(&t);
    t.extend_from_slice(&table_crc.to_le_bytes());
    t.extend_from_slice(END);
    t
}

/// The block checksums from a trailer read back, if it is intact.
pub(super) fn read_trailer(t: &[u8], blocks: u64) -> Result<Vec<u32>, Damage> {
    let n = usize::try_from(blocks).map_err(|_| Damage("block count"))?;
    if t.len() != n * 4 + 12 || &t[n * 4 + 4..] != END {
        return Err(Damage("trailer"));
    }
    if crc32fast::hash(&t[..n * 4]) != u32::from_le_bytes(le4(&t[n * 4..n * 4 + 4])) {
        return Err(Damage("checksum table"));
    }
    Ok(t[..n * 4]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(le4(c)))
        .collect())
}

/// What a file holds besides the body.
#[derive(Debug)]
pub(super) enum Content {
    /// An object; its `body` is left empty by `decode`.
    Object(Box<CachedObject>),
    /// The `Vary` names of a key whose variants are stored in files of their own.
    Vary(Arc<[HeaderName]>),
}

/// A file's meta, decoded.
#[derive(Debug)]
pub(super) struct Meta {
    pub slot: StoreKey,
    /// When the file was written (milliseconds since the Unix epoch): purges older than the
    /// file do not apply to it.
    pub written_ms: u64,
    pub content: Content,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Encodes a slot's meta. An object's freshness is stored against the wall clock, since the
/// tokio clock it is kept on in memory does not survive the process.
pub(super) fn encode_meta(slot: &StoreKey, written_ms: u64, content: &Content) -> Vec<u8> {
    let mut w = Vec::with_capacity(512);
    put_str(&mut w, slot.key.as_repr());
    put_u32(&mut w, slot.key.host_len());
    put_opt_str(&mut w, slot.variant.as_deref());
    put_u64(&mut w, written_ms);
    match content {
        Content::Vary(names) => {
            w.push(1);
            put_names(&mut w, names);
        }
        Content::Object(o) => {
            w.push(0);
            put_u16(&mut w, o.status.as_u16());
            w.push(kind_code(o.kind));
            put_u32(&mut w, o.headers.len() as u32);
            for (name, value) in &o.headers {
                put_bytes(&mut w, name.as_str().as_bytes());
                put_bytes(&mut w, value.as_bytes());
            }
            put_freshness(&mut w, &o.freshness);
            match &o.vary {
                Some(names) => {
                    w.push(1);
                    put_names(&mut w, names);
                }
                None => w.push(0),
            }
            put_str(&mut w, &o.origin);
            match &o.media {
                Some(m) => {
                    w.push(1);
                    w.push(u8::from(m.live));
                    put_opt_dur(&mut w, m.target_duration);
                    put_opt_dur(&mut w, m.part_target);
                }
                None => w.push(0),
            }
            let enc = o.encodings.as_deref();
            put_opt_bytes(&mut w, enc.and_then(|e| e.br.as_deref()));
            put_opt_bytes(&mut w, enc.and_then(|e| e.gzip.as_deref()));
        }
    }
    w
}

pub(super) fn decode_meta(bytes: &[u8]) -> Result<Meta, Damage> {
    let mut r = Reader { b: bytes };
    let repr = r.string()?;
    let host_len = r.u32()?;
    let key = CacheKey::from_stored(&repr, host_len).ok_or(Damage("key"))?;
    let variant = r.opt_string()?.map(Arc::from);
    let written_ms = r.u64()?;
    let slot = StoreKey { key, variant };
    let content = match r.u8()? {
        1 => Content::Vary(r.names()?),
        0 => Content::Object(Box::new(object(&mut r, written_ms)?)),
        _ => return Err(Damage("record type")),
    };
    if !r.b.is_empty() {
        return Err(Damage("meta length"));
    }
    Ok(Meta {
        slot,
        written_ms,
        content,
    })
}

fn object(r: &mut Reader<'_>, written_ms: u64) -> Result<CachedObject, Damage> {
    let status = StatusCode::from_u16(r.u16()?).map_err(|_| Damage("status"))?;
    let kind = kind_of(r.u8()?)?;
    let n = r.u32()?;
    let mut headers = HeaderMap::with_capacity(n.min(256) as usize);
    for _ in 0..n {
        let name = HeaderName::from_bytes(r.bytes()?).map_err(|_| Damage("header name"))?;
        let value = HeaderValue::from_bytes(r.bytes()?).map_err(|_| Damage("header value"))?;
        headers.append(name, value);
    }
    let freshness = r.freshness(written_ms)?;
    let vary = match r.u8()? {
        1 => Some(r.names()?),
        _ => None,
    };
    let origin: Arc<str> = Arc::from(r.string()?);
    let media = match r.u8()? {
        1 => Some(MediaSummary {
            live: r.u8()? == 1,
            target_duration: r.opt_dur()?,
            part_target: r.opt_dur()?,
        }),
        _ => None,
    };
    let br = r.opt_bytes()?;
    let gzip = r.opt_bytes()?;
    let encodings = (br.is_some() || gzip.is_some()).then(|| Arc::new(Encodings { br, gzip }));
    Ok(CachedObject {
        hit_head: Default::default(),
        status,
        headers,
        body: super::super::Body::empty(),
        kind,
        freshness,
        vary,
        origin,
        encodings,
        media,
    })
}

fn kind_code(k: ContentKind) -> u8 {
    match k {
        ContentKind::Manifest => 0,
        ContentKind::Segment => 1,
        ContentKind::Other => 2,
    }
}

fn kind_of(c: u8) -> Result<ContentKind, Damage> {
    Ok(match c {
        0 => ContentKind::Manifest,
        1 => ContentKind::Segment,
        2 => ContentKind::Other,
        _ => return Err(Damage("kind")),
    })
}

/// Freshness against the wall clock: the age it had when the file was written is kept, and
/// the time since is added on reading (the in-memory `stored_at` is the tokio clock's).
fn put_freshness(w: &mut Vec<u8>, f: &Freshness) {
    let age = f.age(tokio::time::Instant::now());
    put_u64(w, age.as_millis() as u64);
    put_u64(w, f.lifetime.as_millis() as u64);
    put_u64(w, f.stale_while_revalidate.as_millis() as u64);
    put_u64(w, f.stale_if_error.as_millis() as u64);
    w.push(u8::from(f.must_revalidate) | (u8::from(f.no_cache) << 1));
    put_opt_dur(w, f.max_age);
}

fn put_u16(w: &mut Vec<u8>, v: u16) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(w: &mut Vec<u8>, v: u32) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_u32(w, b.len() as u32);
    w.extend_from_slice(b);
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_bytes(w, s.as_bytes());
}

fn put_opt_bytes(w: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            w.push(1);
            put_bytes(w, b);
        }
        None => w.push(0),
    }
}

fn put_opt_str(w: &mut Vec<u8>, s: Option<&str>) {
    put_opt_bytes(w, s.map(str::as_bytes));
}

fn put_opt_dur(w: &mut Vec<u8>, d: Option<Duration>) {
    match d {
        Some(d) => {
            w.push(1);
            put_u64(w, d.as_millis() as u64);
        }
        None => w.push(0),
    }
}

fn put_names(w: &mut Vec<u8>, names: &[HeaderName]) {
    put_u32(w, names.len() as u32);
    for n in names {
        put_str(w, n.as_str());
    }
}

/// A cursor over meta bytes; every read is bounds-checked (the bytes come from a disk).
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Damage> {
        if self.b.len() < n {
            return Err(Damage("meta truncated"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Damage> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Damage> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Damage> {
        Ok(u32::from_le_bytes(le4(self.take(4)?)))
    }

    fn u64(&mut self) -> Result<u64, Damage> {
        Ok(u64::from_le_bytes(le8(self.take(8)?)))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Damage> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, Damage> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Damage("utf-8"))
    }

    fn opt_bytes(&mut self) -> Result<Option<Bytes>, Damage> {
        Ok(match self.u8()? {
            1 => Some(Bytes::copy_from_slice(self.bytes()?)),
            _ => None,
        })
    }

    fn opt_string(&mut self) -> Result<Option<String>, Damage> {
        Ok(match self.u8()? {
            1 => Some(self.string()?),
            _ => None,
        })
    }

    fn opt_dur(&mut self) -> Result<Option<Duration>, Damage> {
        Ok(match self.u8()? {
            1 => Some(Duration::from_millis(self.u64()?)),
            _ => None,
        })
    }

    fn names(&mut self) -> Result<Arc<[HeaderName]>, Damage> {
        let n = self.u32()?;
        let mut names = Vec::with_capacity(n.min(64) as usize);
        for _ in 0..n {
            names.push(HeaderName::from_bytes(self.bytes()?).map_err(|_| Damage("vary name"))?);
        }
        Ok(names.into())
    }

    fn freshness(&mut self, written_ms: u64) -> Result<Freshness, Damage> {
        let age_then = Duration::from_millis(self.u64()?);
        let lifetime = Duration::from_millis(self.u64()?);
        let stale_while_revalidate = Duration::from_millis(self.u64()?);
        let stale_if_error = Duration::from_millis(self.u64()?);
        let flags = self.u8()?;
        let max_age = self.opt_dur()?;
        // Time since writing counts as age; a clock set back counts as none.
        let since = Duration::from_millis(now_ms().saturating_sub(written_ms));
        Ok(Freshness {
            stored_at: tokio::time::Instant::now(),
            initial_age: age_then + since,
            lifetime,
            stale_while_revalidate,
            stale_if_error,
            must_revalidate: flags & 1 != 0,
            no_cache: flags & 2 != 0,
            max_age,
        })
    }
}
