//! Response bodies the edge makes itself: empty, bytes already in memory (stored objects,
//! their slices, error texts) handed out a frame at a time, stored bodies on disk read a
//! block at a time, and bodies one after another (multipart ranges).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::Body as _;
use http_body_util::{BodyExt, Empty, Full};

use crate::cache::Body;
use crate::server::{BoxError, ResponseBody};

/// Bytes `a..b` of a stored body: a slice of memory, or its disk file's blocks as they are
/// read (each checked; a damaged block ends the body with an error, never with wrong bytes).
pub fn stored(body: &Body, a: u64, b: u64) -> ResponseBody {
    match body {
        Body::Memory(bytes) => full(bytes.slice(a as usize..b as usize)),
        Body::Disk(f) => f.stream(a, b).map_err(BoxError::from).boxed_unsync(),
    }
}

/// Bodies sent one after another, with their total length known.
pub struct Chain {
    parts: VecDeque<ResponseBody>,
    remaining: u64,
}

impl Chain {
    pub fn new(parts: Vec<ResponseBody>) -> Chain {
        Chain {
            remaining: parts.iter().filter_map(|p| p.size_hint().exact()).sum(),
            parts: parts.into(),
        }
    }

    pub fn remaining(&self) -> u64 {
        self.remaining
    }
}

impl http_body::Body for Chain {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        loop {
            let Some(front) = self.parts.front_mut() else {
                return Poll::Ready(None);
            };
            match ready!(Pin::new(front).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        self.remaining = self.remaining.saturating_sub(d.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    self.parts.pop_front();
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.parts.iter().all(|p| p.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

pub fn empty() -> ResponseBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body already in memory. Large ones go out a frame at a time, so the connection takes
/// each only when it has room: a client that stops reading is seen to stop (`send_timeout`).
pub fn full(b: Bytes) -> ResponseBody {
    if b.len() <= FRAME {
        return Full::new(b).map_err(|never| match never {}).boxed_unsync();
    }
    Frames::new(vec![b]).boxed_unsync()
}

/// The largest frame a body in memory is handed out in.
const FRAME: usize = 256 << 10;

/// Bytes in memory (slices of a stored body, boundaries), without copying, one frame at a time.
pub struct Frames {
    parts: std::collections::VecDeque<Bytes>,
    remaining: u64,
}

impl Frames {
    pub fn new(parts: Vec<Bytes>) -> Frames {
        Frames {
            remaining: parts.iter().map(|p| p.len() as u64).sum(),
            parts: parts.into_iter().filter(|p| !p.is_empty()).collect(),
        }
    }
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let Some(mut part) = self.parts.pop_front() else {
            return std::task::Poll::Ready(None);
        };
        if part.len() > FRAME {
            let rest = part.split_off(FRAME);
            self.parts.push_front(rest);
        }
        self.remaining -= part.len() as u64;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}
