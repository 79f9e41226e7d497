//! One stored file opened for reading: its checked head, its block checksums, and reads of
//! its body a block at a time (each block checked before a byte of it is handed out).

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

use super::Shared;
use super::format::{self, Damage, HEADER_LEN, Header, Meta};
use super::index::Id;

/// Why a read failed: the file's bytes are wrong, or the disk said no.
#[derive(Debug)]
pub(super) enum Bad {
    Damage(Damage),
    Io(std::io::Error),
}

impl From<std::io::Error> for Bad {
    fn from(e: std::io::Error) -> Bad {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Bad::Damage(Damage("file shorter than its header says"))
        } else {
            Bad::Io(e)
        }
    }
}

impl From<Damage> for Bad {
    fn from(d: Damage) -> Bad {
        Bad::Damage(d)
    }
}

/// Reads a file's header and meta, and checks its length; the body is not read.
pub(super) fn read_head(file: &File) -> Result<(Header, Meta), Bad> {
    let mut first = vec![0u8; 4096];
    let n = read_up_to(file, &mut first, 0)?;
    first.truncate(n);
    let header = Header::decode(&first)?;
    if file.metadata()?.len() != header.file_len() {
        return Err(Bad::Damage(Damage("length differs from its header")));
    }
    let meta_end = header.body_offset() as usize;
    let meta = if meta_end <= first.len() {
        first[HEADER_LEN as usize..meta_end].to_vec()
    } else {
        let mut m = vec![0u8; header.meta_len as usize];
        file.read_exact_at(&mut m, HEADER_LEN)?;
        m
    };
    if crc32fast::hash(&meta) != header.meta_crc {
        return Err(Bad::Damage(Damage("meta checksum")));
    }
    Ok((header, format::decode_meta(&meta)?))
}

fn read_up_to(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Buffers of one block, reused. A fresh buffer of this size is mapped by the allocator and
/// page-faulted on every read (and unmapped after), which under load costs more than the read
/// itself and serialises the threads on the process's memory map; a block sent to a client
/// comes back here when the connection is done with it.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
}

static POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// Buffers kept for reuse at most (64 MiB of blocks).
const POOL_MAX: usize = 256;

impl Pooled {
    fn take(len: usize) -> Pooled {
        let pooled = if len <= format::BLOCK as usize {
            POOL.lock().ok().and_then(|mut p| p.pop())
        } else {
            None
        };
        let buf = pooled.unwrap_or_else(|| vec![0; len.max(format::BLOCK as usize)]);
        Pooled { buf, len }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if self.buf.len() == format::BLOCK as usize
            && let Ok(mut p) = POOL.lock()
            && p.len() < POOL_MAX
        {
            p.push(std::mem::take(&mut self.buf));
        }
    }
}

/// A stored body on disk, open: reads stay valid after the file is replaced or removed.
pub(crate) struct DiskFile {
    file: File,
    header: Header,
    crcs: Vec<u32>,
    id: Id,
    shared: Weak<Shared>,
}

impl std::fmt::Debug for DiskFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DiskFile({:032x}, {} bytes)",
            self.id, self.header.body_len
        )
    }
}

impl DiskFile {
    /// Opens the body of a file whose head was read: reads its checksum table.
    pub(super) fn open(
        file: File,
        header: Header,
        id: Id,
        shared: Weak<Shared>,
    ) -> Result<DiskFile, Bad> {
        let mut t = vec![0u8; (4 * header.blocks() + 12) as usize];
        file.read_exact_at(&mut t, header.table_offset())?;
        let crcs = format::read_trailer(&t, header.blocks())?;
        Ok(DiskFile {
            file,
            header,
            crcs,
            id,
            shared,
        })
    }

    pub fn len(&self) -> u64 {
        self.header.body_len
    }

    fn block_len(&self) -> u64 {
        u64::from(self.header.block)
    }

    /// Block `k`, checked against its checksum.
    pub(super) fn block(&self, k: u64) -> Result<Bytes, Bad> {
        let start = k * self.block_len();
        let len = self.block_len().min(self.len() - start) as usize;
        let mut buf = Pooled::take(len);
        self.file
            .read_exact_at(buf.as_mut(), self.header.body_offset() + start)?;
        if crc32fast::hash(buf.as_ref()) != self.crcs[k as usize] {
            return Err(Bad::Damage(Damage("body block checksum")));
        }
        Ok(Bytes::from_owner(buf))
    }

    /// Checks every block once (a file found on disk, before its first use).
    pub(super) fn verify(&self) -> Result<(), Bad> {
        (0..self.header.blocks()).try_for_each(|k| self.block(k).map(drop))
    }

    /// Bytes `a..b` of the body, a frame per block they touch.
    fn span(&self, a: u64, b: u64) -> Result<Vec<Bytes>, Bad> {
        let bl = self.block_len();
        let mut frames = Vec::with_capacity(BATCH as usize);
        let mut pos = a;
        while pos < b {
            let k = pos / bl;
            let start = k * bl;
            let upto = b.min(start + bl);
            frames.push(
                self.block(k)?
                    .slice((pos - start) as usize..(upto - start) as usize),
            );
            pos = upto;
        }
        Ok(frames)
    }

    /// The whole body in memory (promotion to the memory tier; fills answering from a disk
    /// object). Blocking.
    pub(super) fn read_all(&self) -> Result<Bytes, Bad> {
        let mut out = BytesMut::with_capacity(self.len() as usize);
        for k in 0..self.header.blocks() {
            out.extend_from_slice(&self.block(k)?);
        }
        Ok(out.freeze())
    }

    /// Hands a failed read to the tier: a damaged file is dropped, an I/O error stops it.
    pub(super) fn report(&self, bad: &Bad) {
        if let Some(shared) = self.shared.upgrade() {
            shared.failed_read(self.id, bad);
        }
    }

    /// Bytes `a..b` of the body as a response body, read a batch of blocks at a time off the
    /// runtime's threads, with one batch read ahead.
    pub fn stream(self: &Arc<Self>, a: u64, b: u64) -> DiskStream {
        DiskStream {
            file: self.clone(),
            pos: a,
            end: b.min(self.len()),
            ready: VecDeque::new(),
            next: None,
            ahead: None,
        }
    }

    /// Starts the read of the next batch of blocks from `pos` (one wake-up of a blocking
    /// thread per batch, not per block).
    fn read_next(self: &Arc<Self>, pos: u64, end: u64) -> Option<(u64, Read)> {
        if pos >= end {
            return None;
        }
        let block_end = (pos / self.block_len() + BATCH) * self.block_len();
        let upto = block_end.min(end);
        let file = self.clone();
        Some((
            upto,
            tokio::task::spawn_blocking(move || file.span(pos, upto)),
        ))
    }
}

/// Blocks read per trip to a blocking thread.
const BATCH: u64 = 2;

type Read = JoinHandle<Result<Vec<Bytes>, Bad>>;

/// A disk body being sent: frames of at most one block, read a batch ahead.
pub(crate) struct DiskStream {
    file: Arc<DiskFile>,
    /// Where the bytes not yet read or being read start, and the end.
    pos: u64,
    end: u64,
    /// Frames read and not yet sent.
    ready: VecDeque<Bytes>,
    /// The read of the bytes at `pos`, and where it ends.
    next: Option<(u64, Read)>,
    ahead: Option<(u64, Read)>,
}

impl http_body::Body for DiskStream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if let Some(frame) = this.ready.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        if this.next.is_none() {
            this.next = this.file.read_next(this.pos, this.end);
        }
        let Some((upto, handle)) = this.next.as_mut() else {
            return Poll::Ready(None);
        };
        let upto = *upto;
        let result = ready!(Pin::new(handle).poll(cx));
        this.next = this.ahead.take();
        let bad = match result {
            Ok(Ok(frames)) => {
                this.pos = upto;
                if this.next.is_none() {
                    this.next = this.file.read_next(this.pos, this.end);
                }
                let after = this.next.as_ref().map_or(this.pos, |(u, _)| *u);
                this.ahead = this.file.read_next(after, this.end);
                this.ready.extend(frames);
                return match this.ready.pop_front() {
                    Some(frame) => Poll::Ready(Some(Ok(Frame::data(frame)))),
                    None => Poll::Ready(None),
                };
            }
            Ok(Err(bad)) => bad,
            Err(join) => Bad::Io(std::io::Error::other(join.to_string())),
        };
        this.file.report(&bad);
        this.pos = this.end;
        this.next = None;
        this.ahead = None;
        let e = match bad {
            Bad::Damage(d) => std::io::Error::new(std::io::ErrorKind::InvalidData, d.to_string()),
            Bad::Io(e) => e,
        };
        Poll::Ready(Some(Err(e)))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end && self.ready.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        let ready: u64 = self.ready.iter().map(|b| b.len() as u64).sum();
        SizeHint::with_exact(self.end.saturating_sub(self.pos) + ready)
    }
}
