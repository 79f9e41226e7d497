//! nginx as a child process in front of the origin: its own config, cache and logs in a
//! temporary directory, stopped (SIGQUIT, then SIGKILL of its process group) when dropped.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

const START_TIMEOUT: Duration = Duration::from_secs(10);
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A running nginx; stopped and its directory removed on drop.
pub struct Nginx {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub version: String,
    keep_dir: bool,
}

/// The nginx binary: the Debian package's, else the first `nginx` on `PATH`.
pub fn find() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/sbin/nginx");
    if debian.is_file() {
        return Some(debian);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nginx"))
            .find(|p| p.is_file())
    })
}

impl Nginx {
    /// Writes a config into a fresh temporary directory and starts `bin` on a free loopback
    /// port in front of `origin`; returns once nginx accepts connections.
    pub fn start(bin: &Path, origin: SocketAddr, clients: usize) -> anyhow::Result<Nginx> {
        let version = version(bin)?;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("streamedge-herd-{}-{stamp}", std::process::id()));
        for sub in ["cache", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        let addr = free_port()?;
        let conf = config(&dir, addr, origin, clients);
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)
            .with_context(|| format!("cannot write {}", conf_path.display()))?;

        let stderr = std::fs::File::create(dir.join("stderr.log"))
            .with_context(|| format!("cannot create {}/stderr.log", dir.display()))?;
        let mut nginx = Nginx {
            child: None,
            addr,
            dir: dir.clone(),
            version,
            keep_dir: false,
        };
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own process group: a Ctrl-C in the terminal reaches only us (we stop nginx),
            // and the SIGKILL fallback can take the workers along with the master.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        nginx.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = nginx.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                nginx.child = None;
                nginx.keep_dir = true;
                bail!(
                    "nginx exited at start ({status}); config and logs kept in {}:\n{}{}",
                    dir.display(),
                    tail(&dir.join("stderr.log")),
                    tail(&dir.join("error.log"))
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(nginx);
            }
            if Instant::now() > deadline {
                nginx.keep_dir = true;
                bail!(
                    "nginx did not accept connections on {addr} within {START_TIMEOUT:?}; logs in {}:\n{}",
                    dir.display(),
                    tail(&dir.join("error.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Graceful stop (SIGQUIT to the master), then SIGKILL to the whole process group if it
    /// has not exited after a timeout. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let pid = child.id();
        signal("QUIT", &pid.to_string());
        let deadline = Instant::now() + QUIT_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => break,
            }
        }
        eprintln!(
            "nginx (pid {pid}) did not quit within {QUIT_TIMEOUT:?}; sending SIGKILL to its process group"
        );
        signal("KILL", &format!("-{pid}"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The last lines of nginx's error log (empty if there is none).
    pub fn error_log_tail(&self) -> String {
        tail(&self.dir.join("error.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `kill -s <sig> <target>`; a target of `-pid` is a process group.
fn signal(sig: &str, target: &str) {
    let result = Command::new("kill")
        .args(["-s", sig, "--", target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(e) = result {
        eprintln!("cannot run kill -s {sig} {target}: {e}");
    }
}

fn version(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("-v")
        .output()
        .with_context(|| format!("cannot run {} -v", bin.display()))?;
    // nginx prints its version on stderr.
    let text = String::from_utf8_lossy(&out.stderr);
    Ok(text
        .trim()
        .strip_prefix("nginx version: ")
        .unwrap_or(text.trim())
        .to_owned())
}

/// A loopback port that was free a moment ago (nginx binds it itself).
fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot find a free port for nginx")?;
    l.local_addr().context("cannot find a free port for nginx")
}

fn running_as_root() -> bool {
    // The effective uid is the second field of `Uid:` in /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn config(dir: &Path, listen: SocketAddr, origin: SocketAddr, clients: usize) -> String {
    let d = dir.display();
    let connections = (clients * 2 + 256).max(4096);
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Generated by the streamedge herd benchmark (loadtest/herd.rs)."
    );
    let _ = writeln!(c, "daemon off;\nmaster_process on;\nworker_processes auto;");
    if running_as_root() {
        // Workers would otherwise run as nobody and could not write the cache directory.
        let _ = writeln!(c, "user root;");
    }
    let _ = writeln!(c, "pid {d}/nginx.pid;\nerror_log {d}/error.log warn;");
    let _ = writeln!(c, "worker_rlimit_nofile {};", connections * 2);
    let _ = writeln!(c, "events {{ worker_connections {connections}; }}");
    let _ = write!(
        c,
        r#"http {{
    access_log off;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;

    proxy_cache_path {d}/cache keys_zone=edge:64m max_size=2g inactive=1h use_temp_path=off;

    upstream origin {{
        server {origin};
        keepalive 32;
    }}

    server {{
        listen {listen} backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_cache edge;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 30s;
            proxy_cache_valid 200 1h;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"#
    );
    c
}

fn tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let lines: Vec<&str> = s.lines().collect();
            let from = lines.len().saturating_sub(20);
            lines[from..].iter().map(|l| format!("  {l}\n")).collect()
        }
        Err(_) => String::new(),
    }
}
