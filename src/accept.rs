//! Accepting TCP connections, for the edge's listeners and the synthetic origin alike: back off
//! while accept fails (at the file-descriptor limit, typically), stop when shutdown comes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A listener and what its accept failures have been.
pub(crate) struct Acceptor {
    listener: TcpListener,
    /// Names the listener in warnings: "client" (the edge) or "origin".
    name: &'static str,
    /// Called on every failure, so the edge can count them without this module knowing metrics.
    on_error: fn(),
    errors: AcceptErrors,
}

impl Acceptor {
    pub(crate) fn new(listener: TcpListener, name: &'static str, on_error: fn()) -> Acceptor {
        Acceptor {
            listener,
            name,
            on_error,
            errors: AcceptErrors::default(),
        }
    }

    /// The next connection, with `TCP_NODELAY` set; `None` once `shutdown` has resolved, which
    /// is looked at first, so nothing is accepted after it.
    pub(crate) async fn next(
        &mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Option<(TcpStream, SocketAddr)> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let error = tokio::select! {
                biased;
                () = &mut shutdown => return None,
                r = self.listener.accept() => match r {
                    Ok((stream, peer)) => {
                        self.errors.recovered();
                        // Playlists and small segments are latency-bound; don't let Nagle
                        // hold the last packet of a response.
                        let _ = stream.set_nodelay(true);
                        return Some((stream, peer));
                    }
                    Err(e) => e,
                },
            };
            // EMFILE and friends: back off (up to a second) instead of spinning, and say so
            // once in a while instead of every time.
            let pause = self.errors.failed(&error, self.name);
            (self.on_error)();
            tokio::select! {
                biased;
                () = &mut shutdown => return None,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// Accept failures (EMFILE, ENFILE, ENOBUFS...): a growing pause, and a warning at most every
/// ten seconds with the count since the last one.
#[derive(Default)]
struct AcceptErrors {
    streak: u32,
    unreported: u64,
    last_warning: Option<Instant>,
}

impl AcceptErrors {
    fn failed(&mut self, e: &io::Error, listener: &str) -> Duration {
        self.streak = self.streak.saturating_add(1);
        self.unreported += 1;
        if self
            .last_warning
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(listener, error = %e, failures = self.unreported, "accept failed (at the file-descriptor limit?); backing off");
            self.unreported = 0;
            self.last_warning = Some(Instant::now());
        }
        Duration::from_millis(10 << self.streak.min(7)).min(Duration::from_secs(1))
    }

    fn recovered(&mut self) {
        self.streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_and_warn_now_and_then() {
        let mut errors = AcceptErrors::default();
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<Duration> = (0..10).map(|_| errors.failed(&e, "client")).collect();
        assert_eq!(pauses[0], Duration::from_millis(20));
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert_eq!(pauses[9], Duration::from_secs(1));
        assert_eq!(errors.unreported, 9, "one warning for ten failures");
        tokio::time::advance(Duration::from_secs(10)).await;
        errors.failed(&e, "client");
        assert_eq!(errors.unreported, 0, "a warning again after ten seconds");
        errors.recovered();
        assert_eq!(errors.failed(&e, "client"), Duration::from_millis(20));
    }

    #[tokio::test]
    async fn stops_at_shutdown_before_accepting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut acceptor = Acceptor::new(listener, "client", || {});
        let _pending = TcpStream::connect(addr).await.unwrap();
        assert!(acceptor.next(async {}).await.is_none());
        let (stream, _) = acceptor.next(std::future::pending()).await.unwrap();
        assert!(stream.nodelay().unwrap());
    }
}
