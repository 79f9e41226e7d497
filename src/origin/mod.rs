//! The synthetic origin (`streamedge origin`): serves HLS/DASH files, simulates live.
//! (Placeholder with the final API; the implementation lands from its own branch.)

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub struct OriginOptions {
    pub dir: Option<PathBuf>,
    pub delay: Duration,
    pub live_window: usize,
}

impl Default for OriginOptions {
    fn default() -> Self {
        OriginOptions {
            dir: None,
            delay: Duration::ZERO,
            live_window: 6,
        }
    }
}

pub async fn serve(
    _listener: tokio::net::TcpListener,
    _opts: OriginOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    shutdown.await;
    Ok(())
}

pub fn demo_paths() -> Vec<(&'static str, &'static str)> {
    Vec::new()
}
