//! Varnish (`varnishd -F`) as a child process in front of the origin: its own VCL and working
//! directory in a temporary directory, stopped (SIGTERM, then SIGKILL of its process group)
//! when dropped.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;

use crate::process::{free_port, stop_group, tail};

/// Compiling the VCL (varnishd runs the C compiler) takes a few seconds on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The varnishd binary: the Debian package's, else the first `varnishd` on `PATH`.
pub fn find() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/sbin/varnishd");
    if debian.is_file() {
        return Some(debian);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("varnishd"))
            .find(|p| p.is_file())
    })
}

/// A running varnishd (manager process; the cache process is its child).
pub struct Varnish {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub version: String,
    keep_dir: bool,
}

impl Varnish {
    /// Writes the VCL into `dir` (created) and starts `bin` on a free loopback port with
    /// `-s malloc,<cache_mib>m`; `prefix` goes before varnishd (e.g. `taskset -c 1`).
    /// Returns once varnishd accepts connections.
    pub fn start(
        bin: &Path,
        dir: &Path,
        origin: SocketAddr,
        cache_mib: u64,
        prefix: &[String],
    ) -> anyhow::Result<Varnish> {
        let version = version(bin)?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let vcl_path = dir.join("edge.vcl");
        std::fs::write(&vcl_path, vcl(origin))
            .with_context(|| format!("cannot write {}", vcl_path.display()))?;
        let addr = free_port()?;
        let log = std::fs::File::create(dir.join("varnishd.log"))
            .with_context(|| format!("cannot create {}/varnishd.log", dir.display()))?;
        let log2 = log.try_clone().context("cannot share the varnishd log")?;
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        command
            .arg("-F")
            .arg("-a")
            .arg(addr.to_string())
            .arg("-f")
            .arg(&vcl_path)
            .arg("-s")
            .arg(format!("malloc,{cache_mib}m"))
            .arg("-n")
            .arg(dir.join("work"))
            // The origin sends max-age; this is the fallback (see the VCL).
            .args(["-p", "default_ttl=3600"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: a Ctrl-C reaches only us (we stop varnishd), and the
            // SIGKILL fallback takes the cache process along with the manager.
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut varnish = Varnish {
            child: Some(child),
            addr,
            dir: dir.to_owned(),
            version,
            keep_dir: false,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = varnish.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                varnish.child = None;
                varnish.keep_dir = true;
                bail!(
                    "varnishd exited at start ({status}); VCL and log kept in {}:\n{}",
                    dir.display(),
                    tail(&dir.join("varnishd.log"))
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(varnish);
            }
            if Instant::now() > deadline {
                varnish.keep_dir = true;
                bail!(
                    "varnishd did not accept connections on {addr} within {START_TIMEOUT:?}; log in {}:\n{}",
                    dir.display(),
                    tail(&dir.join("varnishd.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The manager's process id while varnishd runs (the cache process is its child).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM to the manager (it stops the cache process), then SIGKILL to the process group.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_group(&mut child, "varnishd", "TERM", STOP_TIMEOUT);
        }
    }

    /// The last lines of varnishd's output (manager and child messages, panics).
    pub fn log_tail(&self) -> String {
        tail(&self.dir.join("varnishd.log"))
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        self.stop();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn version(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("-V")
        .output()
        .with_context(|| format!("cannot run {} -V", bin.display()))?;
    // varnishd prints `varnishd (varnish-7.1.1 revision ...)` on stderr.
    let text = String::from_utf8_lossy(&out.stderr);
    let first = text.lines().next().unwrap_or_default();
    Ok(first
        .split_once('(')
        .and_then(|(_, v)| v.split_whitespace().next())
        .unwrap_or(first)
        .to_owned())
}

/// The comparison's VCL (documented in loadtest/README.md, "The comparison").
pub fn vcl(origin: SocketAddr) -> String {
    let mut v = String::new();
    let _ = write!(
        v,
        r#"# Generated by the streamedge comparison (loadtest/src/bin/compare/).
vcl 4.1;

backend origin {{
    .host = "{host}";
    .port = "{port}";
    .connect_timeout = 2s;
    .first_byte_timeout = 30s;
    .between_bytes_timeout = 10s;
}}

sub vcl_recv {{
    # Video objects are public: a cookie must not turn a segment into a pass.
    unset req.http.Cookie;
}}

sub vcl_backend_response {{
    # Stream the body to the client (and to every request waiting on this object) as it
    # arrives from the origin instead of after the whole object is stored.
    set beresp.do_stream = true;
    # The origin sends Cache-Control: max-age=3600 (ttl 1h). Without it: 1h for segments,
    # 10m for manifests (VOD), as streamedge's defaults would be. Errors: 5s.
    if (beresp.status >= 400) {{
        set beresp.ttl = 5s;
    }} elsif (!beresp.http.Cache-Control && !beresp.http.Expires) {{
        if (bereq.url ~ "\.(m3u8|mpd)(\?|$)") {{
            set beresp.ttl = 10m;
        }} else {{
            set beresp.ttl = 1h;
        }}
    }}
    set beresp.grace = 10s;
}}

sub vcl_deliver {{
    if (obj.hits > 0) {{
        set resp.http.X-Cache-Status = "HIT";
    }} else {{
        set resp.http.X-Cache-Status = "MISS";
    }}
}}
"#,
        host = origin.ip(),
        port = origin.port()
    );
    v
}
