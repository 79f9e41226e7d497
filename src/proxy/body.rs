//! Response bodies the edge makes itself: empty, and bytes already in memory (stored
//! objects, their slices, error texts), handed out a frame at a time.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

use crate::server::{BoxError, ResponseBody};

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
    /// Bytes still to go.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

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
