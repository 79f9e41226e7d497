//! Log setup: level filter, text or JSON access lines, and a non-blocking stderr writer so a
//! request never waits on a write to the terminal or the log collector's pipe.
//!
//! Formatted lines are appended to a shared buffer; one writer thread swaps it out every few
//! milliseconds and writes it to stderr in one go. Requests never wake the writer (a wake-up
//! per line cost a third of the hit throughput). If the consumer stalls and the buffer reaches
//! its bound, lines are dropped and counted rather than slowing requests down.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::config::AccessLogFormat;

/// How often buffered lines are written out.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Bytes buffered before lines are dropped.
const MAX_BUFFERED: usize = 16 << 20;

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Lines waiting for the writer thread.
struct Shared {
    pending: Mutex<Vec<u8>>,
    /// Serialises writes to stderr between the writer thread and explicit flushes.
    out: Mutex<()>,
    stopped: AtomicBool,
}

impl Shared {
    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes out everything buffered so far.
    fn drain(&self, reported: &mut u64) {
        let _out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let batch = std::mem::replace(&mut *self.lock_pending(), Vec::with_capacity(64 * 1024));
        let stderr = std::io::stderr();
        let mut err = stderr.lock();
        if !batch.is_empty() {
            let _ = err.write_all(&batch);
        }
        let dropped = DROPPED.load(Ordering::Relaxed);
        if dropped > *reported {
            let _ = writeln!(
                err,
                "streamedge: {} log lines dropped: the log consumer is too slow",
                dropped - *reported
            );
            *reported = dropped;
        }
        let _ = err.flush();
    }
}

/// The writer handed to tracing-subscriber: each event is formatted into a `Line`, which is
/// appended to the shared buffer when dropped.
#[derive(Clone)]
struct BufferWriter {
    shared: Arc<Shared>,
}

struct Line {
    buf: Vec<u8>,
    shared: Arc<Shared>,
}

impl Write for Line {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut pending = self.shared.lock_pending();
        if pending.len() + self.buf.len() > MAX_BUFFERED {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.extend_from_slice(&self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for BufferWriter {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            buf: Vec::with_capacity(256),
            shared: self.shared.clone(),
        }
    }
}

fn writer_thread(shared: Arc<Shared>) {
    let mut reported = 0;
    while !shared.stopped.load(Ordering::Relaxed) {
        std::thread::sleep(FLUSH_EVERY);
        shared.drain(&mut reported);
    }
}

/// Keeps the writer reachable so pending lines are written before exit.
pub struct LogGuard {
    shared: Option<Arc<Shared>>,
}

impl LogGuard {
    /// Writes out every line logged so far.
    pub fn flush(&self) {
        if let Some(shared) = &self.shared {
            let mut reported = DROPPED.load(Ordering::Relaxed);
            shared.drain(&mut reported);
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.flush();
        if let Some(shared) = &self.shared {
            shared.stopped.store(true, Ordering::Relaxed);
        }
    }
}

/// Lines dropped because the writer could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Installs the global subscriber. `STREAMEDGE_LOG` (e.g. `info,streamedge=debug`) overrides
/// `level`. Call once; later calls do nothing.
pub fn init(level: &str, access: AccessLogFormat) -> LogGuard {
    let spec = std::env::var("STREAMEDGE_LOG").unwrap_or_else(|_| level.to_owned());
    let mut targets: Targets = spec.parse().unwrap_or_else(|_| {
        eprintln!("streamedge: invalid log level {spec:?}, using info");
        Targets::new().with_default(tracing::Level::INFO)
    });
    if cfg!(feature = "kubernetes") && !spec.contains("kube") {
        // kube's client logs every failed request (at error) and its watcher every refused
        // retry; Kubernetes discovery logs an outage once. Named in STREAMEDGE_LOG
        // (`info,kube_client=debug`), they log as asked.
        targets = targets
            .with_target("kube_client", tracing::level_filters::LevelFilter::OFF)
            .with_target("kube_runtime", tracing::level_filters::LevelFilter::ERROR);
    }
    if access == AccessLogFormat::Off {
        targets = targets.with_target(
            "streamedge::access",
            tracing::level_filters::LevelFilter::OFF,
        );
    }
    let shared = Arc::new(Shared {
        pending: Mutex::new(Vec::with_capacity(64 * 1024)),
        out: Mutex::new(()),
        stopped: AtomicBool::new(false),
    });
    let spawned = std::thread::Builder::new()
        .name("streamedge-log".into())
        .spawn({
            let shared = shared.clone();
            move || writer_thread(shared)
        });
    if spawned.is_err() {
        eprintln!("streamedge: cannot start the log writer thread; logging to stderr directly");
    }
    let writer = BufferWriter {
        shared: shared.clone(),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(targets);
    let installed = match (access, spawned.is_ok()) {
        (AccessLogFormat::Json, true) => registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(writer))
            .try_init(),
        (AccessLogFormat::Json, false) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        (_, true) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(writer),
            )
            .try_init(),
        (_, false) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    LogGuard {
        shared: (installed.is_ok() && spawned.is_ok()).then_some(shared),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_buffered_in_order_and_bounded() {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::new()),
            out: Mutex::new(()),
            stopped: AtomicBool::new(false),
        });
        let w = BufferWriter {
            shared: shared.clone(),
        };
        for i in 0..3 {
            let mut l = w.make_writer();
            writeln!(l, "line {i}").unwrap();
        }
        assert_eq!(&*shared.lock_pending(), b"line 0\nline 1\nline 2\n");
        shared.lock_pending().resize(MAX_BUFFERED, b'x');
        let before = dropped_lines();
        let mut l = w.make_writer();
        writeln!(l, "one too many").unwrap();
        drop(l);
        assert_eq!(dropped_lines(), before + 1);
        assert_eq!(shared.lock_pending().len(), MAX_BUFFERED);
    }
}
