//! Log setup: level filter, text or JSON access lines, and a non-blocking stderr writer so a
//! request never waits on a write to the terminal or the log collector's pipe.
//!
//! Formatted lines go through a bounded channel to one writer thread that batches them into a
//! buffered stderr and flushes whenever the channel runs dry. When the channel is full (the log
//! consumer cannot keep up) lines are dropped and counted rather than slowing requests down.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::config::AccessLogFormat;

/// Lines buffered between the request path and the writer thread.
const CHANNEL_LINES: usize = 64 * 1024;

static DROPPED: AtomicU64 = AtomicU64::new(0);

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// The writer handed to tracing-subscriber: each event is formatted into a `Line` and sent on
/// drop.
#[derive(Clone)]
struct ChannelWriter {
    tx: SyncSender<Msg>,
}

struct Line {
    buf: Vec<u8>,
    tx: SyncSender<Msg>,
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
        let line = std::mem::take(&mut self.buf);
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Line(line)) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<'a> MakeWriter<'a> for ChannelWriter {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            buf: Vec::with_capacity(256),
            tx: self.tx.clone(),
        }
    }
}

fn writer_thread(rx: Receiver<Msg>) {
    let stderr = std::io::stderr();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stderr.lock());
    let mut reported = 0;
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(l) => {
                    let _ = out.write_all(&l);
                }
                Msg::Flush(ack) => {
                    let _ = out.flush();
                    let _ = ack.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let dropped = DROPPED.load(Ordering::Relaxed);
        if dropped > reported {
            let _ = writeln!(
                out,
                "streamedge: {} log lines dropped: the log consumer is too slow",
                dropped - reported
            );
            reported = dropped;
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

/// Keeps the writer thread reachable so pending lines can be flushed before exit.
pub struct LogGuard {
    tx: Option<SyncSender<Msg>>,
}

impl LogGuard {
    /// Writes out every line logged so far (bounded wait).
    pub fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (ack_tx, ack_rx) = mpsc::sync_channel(1);
            if tx.send(Msg::Flush(ack_tx)).is_ok() {
                let _ = ack_rx.recv_timeout(Duration::from_secs(2));
            }
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.flush();
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
    if access == AccessLogFormat::Off {
        targets = targets.with_target(
            "streamedge::access",
            tracing::level_filters::LevelFilter::OFF,
        );
    }
    let (tx, rx) = mpsc::sync_channel(CHANNEL_LINES);
    let spawned = std::thread::Builder::new()
        .name("streamedge-log".into())
        .spawn(move || writer_thread(rx));
    if spawned.is_err() {
        eprintln!("streamedge: cannot start the log writer thread; logging to stderr directly");
    }
    let writer = ChannelWriter { tx: tx.clone() };
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
        tx: (installed.is_ok() && spawned.is_ok()).then_some(tx),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_writer_in_order_and_full_channels_drop() {
        let (tx, rx) = mpsc::sync_channel(2);
        let w = ChannelWriter { tx };
        for i in 0..3 {
            let mut l = w.make_writer();
            write!(l, "line {i}").unwrap();
        }
        let got: Vec<String> = rx
            .try_iter()
            .map(|m| match m {
                Msg::Line(l) => String::from_utf8(l).unwrap(),
                Msg::Flush(_) => String::new(),
            })
            .collect();
        assert_eq!(got, vec!["line 0", "line 1"]);
        assert!(dropped_lines() >= 1);
    }
}
