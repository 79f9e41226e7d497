//! streamedge's admin listener: its `/metrics` page read, and a metric summed over its series.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body of `GET /metrics` on the admin listener at `addr` (Prometheus text), or `None` if
/// it cannot be read within 5 s.
pub async fn metrics(addr: SocketAddr) -> Option<String> {
    let read = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(
            // HTTP/1.0: the body ends with the connection, never chunked.
            format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        (head.split(' ').nth(1) == Some("200")).then(|| body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()
        .flatten()
}

/// The sum of every series of metric `name` (with any labels) in Prometheus text; 0 if none.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            // The name must end here: `name 1` or `name{...} 1`, not `name_total 1`.
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                return None;
            }
            l.rsplit_once(' ')?.1.parse::<f64>().ok()
        })
        // From +0: an empty f64 sum is -0, printed "-0".
        .fold(0.0, |a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_series_of_one_metric() {
        let text = "# HELP streamedge_peer_up x\n# TYPE streamedge_peer_up gauge\n\
                    streamedge_peer_up{peer=\"a\"} 1\nstreamedge_peer_up{peer=\"b\"} 0\n\
                    streamedge_peer_up_total 7\nstreamedge_cache_bytes 1048576\n";
        assert_eq!(metric_sum(text, "streamedge_peer_up"), 1.0);
        assert_eq!(metric_sum(text, "streamedge_cache_bytes"), 1048576.0);
        assert_eq!(metric_sum(text, "streamedge_missing").to_string(), "0");
    }
}
