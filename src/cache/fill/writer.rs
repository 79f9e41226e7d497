//! The writing end of a fill: appends chunks, paces itself to its readers and to the memory
//! budget, and ends the fill — with its body, a stored object's body, or an error.

use std::sync::Arc;

use bytes::Bytes;

use super::{Fill, FillHead, RECHECK, TIGHT_WINDOW, WINDOW};
use crate::error::EdgeError;

/// What the writer learns from pushing a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Continue,
    /// The fill streams and has no readers left, or it was given up for lack of memory before
    /// anyone read it: stop fetching.
    Stop,
}

/// The writing end of a fill, owned by the detached task that talks to the origin.
/// Dropping it without `finish` fails the fill, so readers never hang.
pub struct FillWriter {
    pub(super) fill: Arc<Fill>,
    pub(super) in_table: bool,
    pub(super) finished: bool,
}

impl FillWriter {
    #[cfg(test)]
    pub fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    pub fn set_head(&self, head: FillHead) {
        let head = Arc::new(head);
        self.fill.update(|st| st.head = Some(head));
    }

    /// No more requests join this fill (they look in the store or start their own). Called
    /// before the last bytes of a body go out: a client that has them all and asks again must
    /// not find this fill still open.
    pub fn leave_table(&mut self) {
        if std::mem::take(&mut self.in_table)
            && let Some(table) = self.fill.table.upgrade()
        {
            table.remove(&self.fill);
        }
    }

    /// Stops accepting new readers and stops buffering the whole body (object too large to
    /// store). Readers already joined keep streaming.
    pub fn stream_only(&mut self) {
        self.leave_table();
        let freed = {
            let mut st = self.fill.lock();
            st.streaming = true;
            st.trim()
        };
        self.fill.budget.release(freed);
        self.fill.tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Whether the fill gave up keeping the whole body (too large, or shed for memory).
    pub fn is_streaming(&self) -> bool {
        self.fill.lock().streaming
    }

    /// Appends a chunk and wakes the readers, then waits while the fill is too far ahead of
    /// the reader it is paced to, or memory is short and its readers do not keep up.
    pub async fn push(&self, chunk: Bytes) -> Push {
        if chunk.is_empty() {
            return Push::Continue;
        }
        let len = chunk.len() as u64;
        {
            let mut st = self.fill.lock();
            if st.abandoned {
                return Push::Stop;
            }
            let at = st.received;
            st.chunks.push((at, chunk));
            st.received += len;
            st.held += len;
        }
        self.fill.budget.add(len);
        self.fill.tx.send_modify(|v| *v = v.wrapping_add(1));
        self.settle().await
    }

    async fn settle(&self) -> Push {
        let budget = &self.fill.budget;
        let mut progress = self.fill.progress.subscribe();
        loop {
            progress.borrow_and_update();
            let over = budget.over();
            if over && let Some(table) = self.fill.table.upgrade() {
                table.shed();
            }
            let freed;
            {
                let mut st = self.fill.lock();
                if st.abandoned {
                    return Push::Stop;
                }
                freed = if st.streaming { st.trim() } else { 0 };
                let paced_to = if st.streaming {
                    match st.positions.values().min() {
                        Some(&min) => Some(min),
                        None => return Push::Stop,
                    }
                } else {
                    st.offset_of_fastest()
                };
                let window = if budget.over() { TIGHT_WINDOW } else { WINDOW };
                let lag = paced_to.map_or(0, |at| st.received.saturating_sub(at));
                if lag <= window {
                    st.writer_waiting = false;
                    drop(st);
                    budget.release(freed);
                    return Push::Continue;
                }
                st.writer_waiting = true;
            }
            budget.release(freed);
            let freed_elsewhere = budget.freed.notified();
            tokio::select! {
                r = progress.changed() => if r.is_err() { return Push::Stop },
                _ = freed_elsewhere => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// Ends the fill successfully. Store the object in the cache *before* calling this, so a
    /// request that no longer finds the fill finds the object.
    pub fn finish(mut self) {
        self.end(Ok(()));
    }

    /// Ends the fill with `body` as its whole content: a stored object's body (shared with the
    /// cache, so not counted again), read from by every reader at its own offset. What the
    /// fill buffered itself is given back.
    pub fn finish_with(mut self, body: Bytes) {
        let freed = {
            let mut st = self.fill.lock();
            st.received = body.len() as u64;
            st.chunks = vec![(0, body)];
            std::mem::take(&mut st.held)
        };
        self.fill.budget.release(freed);
        self.end(Ok(()));
    }

    /// The whole body, for storing (only meaningful when not streaming).
    pub fn body(&self) -> Bytes {
        let st = self.fill.lock();
        match st.chunks.len() {
            0 => Bytes::new(),
            1 => st.chunks[0].1.clone(),
            _ => {
                let mut buf = bytes::BytesMut::with_capacity(st.received as usize);
                for (_, c) in &st.chunks {
                    buf.extend_from_slice(c);
                }
                buf.freeze()
            }
        }
    }

    /// The whole body when `last` is its final chunk, not pushed yet.
    pub fn body_with(&self, last: &Bytes) -> Bytes {
        let st = self.fill.lock();
        if st.chunks.is_empty() {
            return last.clone();
        }
        let mut buf = bytes::BytesMut::with_capacity(st.received as usize + last.len());
        for (_, c) in &st.chunks {
            buf.extend_from_slice(c);
        }
        buf.extend_from_slice(last);
        buf.freeze()
    }

    /// Ends the fill with an error: readers without a head get it as their answer, readers
    /// mid-body see their body fail.
    pub fn fail(mut self, err: EdgeError) {
        self.end(Err(err));
    }

    fn end(&mut self, result: Result<(), EdgeError>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.leave_table();
        // Once ended no reader can join: what every reader has passed can go.
        self.fill.update(|st| st.end = Some(result));
        let freed = self.fill.lock().trim();
        self.fill.budget.release(freed);
    }
}

impl Drop for FillWriter {
    fn drop(&mut self) {
        self.end(Err(EdgeError::Internal(
            "origin fetch ended unexpectedly".into(),
        )));
    }
}
