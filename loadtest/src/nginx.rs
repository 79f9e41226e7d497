//! nginx as a child process in front of the origin: its own config, cache and logs in a
//! temporary directory, stopped (SIGQUIT, then SIGKILL of its process group) when dropped.
//! Two configs: the herd's (`config`) and the comparison's operator-tuned one (`tuned_config`).

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::time::Instant;

use crate::process::{free_port, running_as_root, stop_group, tail};

const START_TIMEOUT: Duration = Duration::from_secs(10);
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A running nginx; stopped and its directory removed on drop.
pub struct Nginx {
    child: Option<Child>,
    /// The first listener (plain HTTP).
    pub addr: SocketAddr,
    /// Every listener, in the order the config was given them.
    pub addrs: Vec<SocketAddr>,
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
        Nginx::start_with(bin, "herd", 1, &[], |dir, addrs| {
            config(dir, addrs[0], origin, clients)
        })
    }

    /// Starts `bin` with the config `conf(dir, listeners)` makes, in a fresh temporary
    /// directory named after `tag`, on `listeners` free loopback ports (the first must be
    /// plain HTTP: readiness is checked there); `prefix` goes before nginx on the command
    /// line (e.g. `taskset -c 1`).
    pub fn start_with(
        bin: &Path,
        tag: &str,
        listeners: usize,
        prefix: &[String],
        conf: impl FnOnce(&Path, &[SocketAddr]) -> String,
    ) -> anyhow::Result<Nginx> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "streamedge-{tag}-nginx-{}-{stamp}",
            std::process::id()
        ));
        let addrs = (0..listeners.max(1))
            .map(|_| free_port())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let conf = conf(&dir, &addrs);
        let mut nginx = Nginx::spawn_in(bin, &dir, addrs, prefix, &conf)?;
        nginx.keep_dir = false;
        nginx.wait_listening(START_TIMEOUT, Duration::from_millis(50))?;
        Ok(nginx)
    }

    /// Starts `bin` with the config `conf` (written to `dir/nginx.conf`) in an existing
    /// directory `dir` that outlives it (with its `cache` and `tmp` subdirectories: a cache
    /// that is still there at the next start), and returns at once, without waiting for its
    /// listeners (`wait_listening`). `addrs`: its listeners, the first plain HTTP.
    pub fn spawn_in(
        bin: &Path,
        dir: &Path,
        addrs: Vec<SocketAddr>,
        prefix: &[String],
        conf: &str,
    ) -> anyhow::Result<Nginx> {
        let version = version(bin)?;
        for sub in ["cache", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        let addr = *addrs
            .first()
            .ok_or_else(|| anyhow::anyhow!("nginx needs a listener"))?;
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)
            .with_context(|| format!("cannot write {}", conf_path.display()))?;
        let stderr = std::fs::File::create(dir.join("stderr.log"))
            .with_context(|| format!("cannot create {}/stderr.log", dir.display()))?;
        let mut nginx = Nginx {
            child: None,
            addr,
            addrs,
            dir: dir.to_owned(),
            version,
            keep_dir: true,
        };
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .arg("-p")
            .arg(dir)
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
        Ok(nginx)
    }

    /// Waits until nginx accepts connections on its first listener, trying every `poll`; an
    /// error (its directory kept) if it exits first or `timeout` passes.
    pub fn wait_listening(&mut self, timeout: Duration, poll: Duration) -> anyhow::Result<()> {
        let (addr, dir) = (self.addr, self.dir.clone());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                self.keep_dir = true;
                bail!(
                    "nginx exited at start ({status}); config and logs kept in {}:\n{}{}",
                    dir.display(),
                    tail(&dir.join("stderr.log")),
                    tail(&dir.join("error.log"))
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.keep_dir = true;
                bail!(
                    "nginx did not accept connections on {addr} within {timeout:?}; logs in {}:\n{}",
                    dir.display(),
                    tail(&dir.join("error.log"))
                );
            }
            std::thread::sleep(poll);
        }
    }

    /// Graceful stop (SIGQUIT to the master), then SIGKILL to the whole process group if it
    /// has not exited after a timeout. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_group(&mut child, "nginx", "QUIT", QUIT_TIMEOUT);
        }
    }

    /// The master's process id while nginx runs (its workers are its children).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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

fn config(dir: &Path, listen: SocketAddr, origin: SocketAddr, clients: usize) -> String {
    let d = dir.display();
    let connections = (clients * 2 + 256).max(4096);
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Generated by the streamedge herd benchmark (loadtest/src/bin/herd.rs)."
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

/// What the comparison's nginx needs to know.
pub struct Tuned<'a> {
    pub http: SocketAddr,
    /// `listen ... ssl http2` with this certificate and key (PEM files).
    pub https: Option<(SocketAddr, &'a Path, &'a Path)>,
    pub origin: SocketAddr,
    /// `proxy_cache_path ... max_size`, in MiB.
    pub cache_mib: u64,
    /// `worker_processes`: `None` for `auto` (one per CPU of the machine).
    pub workers: Option<usize>,
    /// At least this many `worker_connections` (each worker must be able to hold every client
    /// connection of the many-connections scenarios: `reuseport` spreads them by hash); 0:
    /// the default, half the open-file limit.
    pub min_worker_connections: usize,
}

/// The comparison's config: what an operator would write for a video edge on this machine
/// (documented in loadtest/README.md, "The comparison").
pub fn tuned_config(dir: &Path, t: &Tuned) -> String {
    let d = dir.display();
    let (http, origin, cache_mib) = (t.http, t.origin, t.cache_mib);
    let workers = t
        .workers
        .map_or_else(|| "auto".to_owned(), |n| n.to_string());
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Generated by the streamedge comparison (loadtest/src/bin/compare/)."
    );
    operator_head(&mut c, dir, &workers, "warn", t.min_worker_connections);
    let _ = write!(
        c,
        r#"
    proxy_cache_path {d}/cache levels=1:2 keys_zone=edge:16m max_size={cache_mib}m inactive=1h use_temp_path=off;

    upstream origin {{
        server {origin};
        keepalive 64;
    }}

    server {{
        listen {http} backlog=4096 reuseport;
"#
    );
    if let Some((https, cert, key)) = t.https {
        let _ = write!(
            c,
            r#"        listen {https} ssl http2 backlog=4096 reuseport;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_timeout 1h;
"#,
            cert = cert.display(),
            key = key.display()
        );
    }
    let _ = write!(
        c,
        r#"        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache edge;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 30s;
            proxy_cache_valid 200 206 1h;
            proxy_cache_valid 404 5s;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"#
    );
    c
}

/// The main context and the first part of `http` of the operator-tuned configs (the
/// comparison's and the disk benchmark's): `worker_processes`, as many open files as allowed,
/// temporary paths in `dir`, sendfile, an open-file cache, long keep-alive; `worker_connections`
/// half the open files, or `min_connections` if more.
fn operator_head(
    c: &mut String,
    dir: &Path,
    workers: &str,
    error_level: &str,
    min_connections: usize,
) {
    let d = dir.display();
    let _ = writeln!(
        c,
        "daemon off;\nmaster_process on;\nworker_processes {workers};"
    );
    if running_as_root() {
        // Workers would otherwise run as nobody and could not write the cache directory.
        let _ = writeln!(c, "user root;");
    }
    let _ = writeln!(
        c,
        "pid {d}/nginx.pid;\nerror_log {d}/error.log {error_level};"
    );
    // As many files as the hard limit allows (a worker cannot go beyond it), at most 65536.
    let nofile = crate::process::nofile_hard_limit()
        .unwrap_or(65536)
        .min(65536);
    let _ = writeln!(c, "worker_rlimit_nofile {nofile};");
    let _ = writeln!(
        c,
        "events {{ worker_connections {}; }}",
        worker_connections(nofile, min_connections)
    );
    let _ = write!(
        c,
        r#"http {{
    access_log off;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;

    # Cached objects are files: sendfile() them, fill packets, keep their descriptors open.
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    open_file_cache max=10000 inactive=60s;
    open_file_cache_valid 60s;
    open_file_cache_min_uses 1;
    open_file_cache_errors on;
    # Players keep their connections; do not close them every 1000 requests (the default).
    keepalive_timeout 75s;
    keepalive_requests 100000;
"#
    );
}

/// The operator-tuned configs' `worker_connections`: half of `worker_rlimit_nofile` (the other
/// half for upstream connections and cached files), at least 1024, or `min_connections` if more.
pub fn worker_connections(nofile: u64, min_connections: usize) -> u64 {
    (nofile / 2).max(1024).max(min_connections as u64)
}

/// What the disk benchmark's nginx needs to know.
pub struct DiskConf {
    pub http: SocketAddr,
    pub origin: SocketAddr,
    /// `keys_zone` size in MiB (about 8,000 keys per MiB).
    pub keys_zone_mib: u64,
    /// `proxy_cache_path ... max_size`, in MiB.
    pub max_size_mib: u64,
    /// `slice` size in MiB: with it, the slice module (each slice cached on its own, its range
    /// in the cache key and asked of the origin); without, whole objects.
    pub slice_mib: Option<u64>,
}

/// The disk benchmark's config (loadtest/README.md, "The disk tier"): the comparison's
/// operator tuning (one worker per core, sendfile, `open_file_cache`) with a disk cache of
/// `max_size_mib`, optionally `slice`; the error log at `notice`, so that the cache loader's
/// exit is logged.
pub fn disk_config(dir: &Path, t: &DiskConf) -> String {
    let d = dir.display();
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Generated by the streamedge disk benchmark (loadtest/src/bin/disk.rs)."
    );
    operator_head(&mut c, dir, "auto", "notice", 0);
    let (http, origin) = (t.http, t.origin);
    let slice = match t.slice_mib {
        Some(mib) => format!(
            r#"            # One cache entry per {mib} MiB slice, fetched with a Range of its own.
            slice {mib}m;
            proxy_cache_key $uri$is_args$args$slice_range;
            proxy_set_header Range $slice_range;
"#
        ),
        None => String::new(),
    };
    let _ = write!(
        c,
        r#"
    proxy_cache_path {d}/cache levels=1:2 keys_zone=disk:{zone}m max_size={max}m inactive=1h use_temp_path=off;

    upstream origin {{
        server {origin};
        keepalive 64;
    }}

    server {{
        listen {http} backlog=4096 reuseport;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache disk;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 30s;
            proxy_cache_valid 200 206 1h;
            proxy_cache_valid 404 5s;
{slice}            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"#,
        zone = t.keys_zone_mib,
        max = t.max_size_mib,
    );
    c
}
