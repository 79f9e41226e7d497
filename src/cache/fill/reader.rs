//! One request's view of a fill: waits for the head, replays what is buffered, is woken for
//! each new chunk, and reads the body as an HTTP body (optionally a byte range).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Frame, SizeHint};
use tokio::sync::watch;

use super::{Fill, FillHead};
use crate::error::EdgeError;

/// One request's view of a fill.
pub struct FillReader {
    pub(super) fill: Arc<Fill>,
    pub(super) rx: watch::Receiver<u64>,
    /// Next byte to read.
    pub(super) offset: u64,
    pub(super) id: u64,
    pub(super) leader: bool,
}

/// What a reader gets once the fill has a head.
pub enum HeadOutcome {
    Ready(Arc<FillHead>),
    /// The response may not be shared with this request: fetch on its own.
    NotShared,
}

impl FillReader {
    /// Waits for the response head (or the fill's failure). Never polls: woken by the writer.
    pub async fn head(&mut self) -> Result<HeadOutcome, EdgeError> {
        loop {
            self.rx.borrow_and_update();
            {
                let st = self.fill.lock();
                if let Some(head) = &st.head {
                    if !head.shareable && !self.leader {
                        return Ok(HeadOutcome::NotShared);
                    }
                    return Ok(HeadOutcome::Ready(head.clone()));
                }
                if let Some(Err(e)) = &st.end {
                    return Err(e.clone());
                }
                if let Some(Ok(())) = &st.end {
                    return Err(EdgeError::Internal("fill ended without a response".into()));
                }
            }
            if self.rx.changed().await.is_err() {
                return Err(EdgeError::Internal("fill went away".into()));
            }
        }
    }

    /// The next chunk: `None` at a clean end, `Err` when the origin failed mid-body.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, EdgeError>> {
        loop {
            self.rx.borrow_and_update();
            if let Some(item) = self.poll_state() {
                return item;
            }
            if self.rx.changed().await.is_err() {
                return Some(Err(EdgeError::Internal("fill went away".into())));
            }
        }
    }

    /// The buffered bytes from this reader's offset to the end of their chunk.
    fn poll_state(&mut self) -> Option<Option<Result<Bytes, EdgeError>>> {
        let mut st = self.fill.lock();
        match st.read_at(self.offset) {
            Err(e) => Some(Some(Err(e))),
            Ok(Some(chunk)) => {
                let was = self.offset;
                self.offset += chunk.len() as u64;
                st.positions.insert(self.id, self.offset);
                st.fastest = st.fastest.max(self.offset);
                // Streaming or ended: what every reader has now passed can go.
                let freed = if (st.streaming || st.end.is_some()) && st.holds_oldest(was) {
                    st.trim()
                } else {
                    0
                };
                let poke = st.writer_waiting;
                drop(st);
                self.fill.budget.release(freed);
                if poke {
                    self.fill.poke_writer();
                }
                Some(Some(Ok(chunk)))
            }
            Ok(None) => match &st.end {
                Some(Ok(())) => Some(None),
                Some(Err(e)) => Some(Some(Err(e.clone()))),
                None => None,
            },
        }
    }

    /// The body of this reader as an HTTP body, optionally restricted to `[start, end)`.
    pub fn into_body(self, range: Option<(u64, u64)>) -> FillBody {
        FillBody {
            state: BodyState::Idle(Box::new(self)),
            skip: range.map_or(0, |r| r.0),
            remaining: range.map(|r| r.1 - r.0),
        }
    }
}

impl Drop for FillReader {
    fn drop(&mut self) {
        let (freed, poke) = {
            let mut st = self.fill.lock();
            st.positions.remove(&self.id);
            if self.offset >= st.fastest {
                st.fastest = st.positions.values().max().copied().unwrap_or(0);
            }
            let freed = if (st.streaming || st.end.is_some()) && st.holds_oldest(self.offset) {
                st.trim()
            } else {
                0
            };
            (freed, st.writer_waiting || st.streaming)
        };
        self.fill.budget.release(freed);
        self.fill.joined.fetch_sub(1, Ordering::Relaxed);
        if poke {
            self.fill.poke_writer();
        }
    }
}

/// The error a client body ends with when the origin failed mid-response.
#[derive(Debug, thiserror::Error)]
#[error("origin response broke off: {0}")]
pub struct BodyError(pub EdgeError);

type NextChunk = BoxFuture<'static, (Box<FillReader>, Option<Result<Bytes, EdgeError>>)>;

enum BodyState {
    Idle(Box<FillReader>),
    Waiting(NextChunk),
    Done,
}

/// A response body reading from a fill.
pub struct FillBody {
    state: BodyState,
    skip: u64,
    remaining: Option<u64>,
}

impl FillBody {
    /// Applies the byte range to a chunk; `None` when the chunk is entirely skipped.
    fn clip(&mut self, mut chunk: Bytes) -> Option<Bytes> {
        if self.skip > 0 {
            let n = self.skip.min(chunk.len() as u64);
            self.skip -= n;
            chunk = chunk.slice(n as usize..);
        }
        if let Some(rem) = self.remaining.as_mut() {
            if (chunk.len() as u64) > *rem {
                chunk.truncate(*rem as usize);
            }
            *rem -= chunk.len() as u64;
        }
        (!chunk.is_empty()).then_some(chunk)
    }
}

impl http_body::Body for FillBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            if self.remaining == Some(0) {
                self.state = BodyState::Done;
                return Poll::Ready(None);
            }
            match std::mem::replace(&mut self.state, BodyState::Done) {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Idle(mut reader) => {
                    // Fast path: data already buffered needs no future.
                    if let Some(item) = reader.poll_state() {
                        self.state = BodyState::Idle(reader);
                        match item {
                            None => {
                                self.state = BodyState::Done;
                                return Poll::Ready(None);
                            }
                            Some(Err(e)) => {
                                self.state = BodyState::Done;
                                return Poll::Ready(Some(Err(BodyError(e))));
                            }
                            Some(Ok(chunk)) => match self.clip(chunk) {
                                Some(c) => return Poll::Ready(Some(Ok(Frame::data(c)))),
                                None => continue,
                            },
                        }
                    }
                    self.state = BodyState::Waiting(Box::pin(async move {
                        let item = reader.next_chunk().await;
                        (reader, item)
                    }));
                }
                BodyState::Waiting(mut fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.state = BodyState::Waiting(fut);
                        return Poll::Pending;
                    }
                    Poll::Ready((reader, item)) => match item {
                        None => return Poll::Ready(None),
                        Some(Err(e)) => return Poll::Ready(Some(Err(BodyError(e)))),
                        Some(Ok(chunk)) => {
                            self.state = BodyState::Idle(reader);
                            if let Some(c) = self.clip(chunk) {
                                return Poll::Ready(Some(Ok(Frame::data(c))));
                            }
                        }
                    },
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done) || self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
