//! The disk tier and slices (issue 13), over real sockets. Edges with a disk tier run as
//! `streamedge` processes (`DiskEdge`) on a fixed loopback port, so that they can be restarted,
//! killed or given a failing disk, a restarted edge is the same edge to its clients, and their
//! metrics are their own (the recorder is process-wide, shared by in-process edges); slice tests
//! run the edge in-process in front of a Range-capable synthetic origin (`common::ranged`).
//!
//! `restart`: what a restart keeps (VOD objects, ranges, revalidated headers) and what it does not
//! (live playlists, short-lived and purged objects); `damage`: damaged files and kill -9 during
//! a fill; `faults`: a full disk and a disk that turns read-only (each edge in a mount namespace
//! of its own, on a tmpfs), and the tier reported off without a path; `tiers`: disk hits after
//! memory evictions, promotion back to memory, the disk's size limit; `slices`: large objects in
//! slices (ranges of a 1 GiB object, a full GET, version changes, purge).

#[path = "../common/mod.rs"]
mod common;

mod damage;
mod faults;
mod restart;
mod slices;
mod tiers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// The admin token of every `DiskEdge`.
pub const ADMIN: &str = "disk-admin-token";

/// A free TCP port on loopback (bound, then released for the edge to take, and keep across
/// restarts).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

/// A client for requests to an edge process: no proxy, a bounded wait, no idle connections kept
/// (a restarted edge is a new process behind the same port).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// The `cache:` section of a `DiskEdge`.
#[derive(Clone, Debug)]
pub struct Layout {
    /// `cache.max_size` (memory).
    pub memory: &'static str,
    pub max_object: &'static str,
    /// `cache.disk.max_size`.
    pub disk_max: &'static str,
}

impl Default for Layout {
    fn default() -> Layout {
        Layout {
            memory: "256MiB",
            max_object: "64MiB",
            disk_max: "1GiB",
        }
    }
}

/// A `streamedge` process with a disk tier under a temp dir, restartable on the same port with
/// the same config file.
pub struct DiskEdge {
    /// First, so that it is dropped (killed) before its directory is removed.
    process: Option<EdgeProcess>,
    dir: TempDir,
    config: PathBuf,
    /// The disk tier is a tmpfs of this size in a mount namespace of the edge's own.
    tmpfs: Option<String>,
    client: reqwest::Client,
    pub url: String,
}

impl DiskEdge {
    /// An edge in front of `origin` (a base URL) with the disk tier at `disk()`.
    pub fn start(origin: &str, layout: &Layout) -> DiskEdge {
        let mut edge = DiskEdge::configure(origin, layout, None);
        edge.launch();
        edge
    }

    /// Like `start`, but the disk path is a tmpfs of `size` (e.g. `2m`) mounted in a mount
    /// namespace of the edge's own (`unshare`), so the test can fill it or remount it read-only
    /// (`remount_ro`) without touching the machine's mounts. `None` (with a message) where
    /// this is not permitted.
    pub fn start_in_tmpfs(origin: &str, layout: &Layout, size: &str) -> Option<DiskEdge> {
        let mut edge = DiskEdge::configure(origin, layout, Some(size.to_owned()));
        std::fs::create_dir_all(edge.disk()).expect("create the disk dir");
        let probe = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size={size} tmpfs '{}'",
                edge.disk().display()
            ))
            .output();
        match probe {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "SKIPPED: no tmpfs in a mount namespace here (unshare/mount: {}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return None;
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run unshare: {e}");
                return None;
            }
        }
        edge.launch();
        Some(edge)
    }

    fn configure(origin: &str, layout: &Layout, tmpfs: Option<String>) -> DiskEdge {
        streamedge::tls::install_provider();
        let dir = TempDir::new("disk");
        let port = free_port();
        let disk = dir.path().join("cache");
        let yaml = format!(
            "listen:\n  http: \"127.0.0.1:{port}\"\n\
             admin:\n  listen: \"127.0.0.1:0\"\n  token: \"{ADMIN}\"\n\
             log:\n  access: off\n\
             prefetch:\n  enabled: false\n\
             origins:\n  - url: \"{origin}\"\n\
             cache:\n  max_size: {memory}\n  max_object_size: {max_object}\n\
             \x20 disk:\n    path: \"{disk}\"\n    max_size: {disk_max}\n    min_ttl: 30s\n\
             \x20   promote_after: 2\n    fsync: false\n",
            memory = layout.memory,
            max_object = layout.max_object,
            disk = disk.display(),
            disk_max = layout.disk_max,
        );
        let config = dir.path().join("edge.yaml");
        std::fs::write(&config, yaml).expect("write config");
        DiskEdge {
            process: None,
            dir,
            config,
            tmpfs,
            client: client(),
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn launch(&mut self) {
        assert!(self.process.is_none(), "the edge is running");
        let process = match &self.tmpfs {
            None => {
                let mut command = Command::new(EdgeProcess::binary());
                command.arg("run").arg("--config").arg(&self.config);
                EdgeProcess::start_command(command)
            }
            Some(size) => {
                // `exec`: the child's pid is the edge's (unshare execs sh, sh execs the edge),
                // for signals and nsenter.
                let mut command = Command::new("unshare");
                command
                    .args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(format!(
                        "mount -t tmpfs -o size={size} tmpfs '{}' && exec '{}' run --config '{}'",
                        self.disk().display(),
                        EdgeProcess::binary(),
                        self.config.display()
                    ));
                EdgeProcess::start_command(command)
            }
        };
        assert_eq!(process.http, self.url, "the edge listens where configured");
        wait_healthz(&process);
        self.process = Some(process);
        self.client = client();
    }

    /// The disk tier's path (`cache.disk.path`).
    pub fn disk(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn process(&self) -> &EdgeProcess {
        self.process.as_ref().expect("the edge is running")
    }

    pub fn process_mut(&mut self) -> &mut EdgeProcess {
        self.process.as_mut().expect("the edge is running")
    }

    /// SIGTERM; the edge must exit 0 (bounded).
    pub fn stop(&mut self) {
        let mut p = self.process.take().expect("the edge is running");
        let status = p.terminate(30);
        if !status.success() {
            std::thread::sleep(Duration::from_millis(100)); // the last stderr lines
            panic!("{status} after SIGTERM; stderr:\n{}", p.stderr());
        }
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill9(&mut self) {
        self.process.take().expect("the edge is running").kill9();
    }

    /// A new process with the same config (after `stop` or `kill9`).
    pub fn start_again(&mut self) {
        self.launch();
    }

    /// `stop`, then `start_again`.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    pub fn get_url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub async fn get(&self, path: &str) -> Resp {
        get(&self.client, &self.get_url(path)).await
    }

    pub async fn get_range(&self, path: &str, range: &str) -> Resp {
        send(self.client.get(self.get_url(path)).header("range", range)).await
    }

    pub async fn metric(&self, name: &str) -> f64 {
        self.process().metric(name).await
    }

    /// Waits (bounded) until metric `name` satisfies `ok`; returns its value then.
    pub async fn wait_metric(&self, name: &str, what: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let mut last = None;
        let waited = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                let text = self.process().metrics().await;
                // Absent is not 0: the edge must report it.
                if text.lines().any(|l| l.starts_with(name)) {
                    let v = metric_sum(&text, name, &[]);
                    last = Some(v);
                    if ok(v) {
                        return v;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        match waited {
            Ok(v) => v,
            Err(_) => panic!(
                "{name} never became {what} within 15s (last: {}); stderr:\n{}",
                last.map_or("not reported".to_owned(), |v| v.to_string()),
                self.process().stderr()
            ),
        }
    }

    /// Waits until the disk tier holds at least `n` objects (`streamedge_disk_objects`).
    pub async fn wait_disk_objects(&self, n: usize) {
        self.wait_metric("streamedge_disk_objects", &format!(">= {n}"), |v| {
            v >= n as f64
        })
        .await;
    }

    /// `POST /purge?{query}` on the admin listener.
    pub async fn purge(&self, query: &str) -> Resp {
        send(
            self.client
                .post(format!("{}/purge?{query}", self.process().admin))
                .bearer_auth(ADMIN),
        )
        .await
    }

    /// `mount -o remount,ro` of the disk tier's tmpfs, inside the edge's mount namespace
    /// (retried while the filesystem is busy).
    pub async fn remount_ro(&self) {
        assert!(self.tmpfs.is_some(), "remount_ro needs start_in_tmpfs");
        let pid = self.process().pid().to_string();
        let mut last = String::new();
        for _ in 0..50 {
            let out = Command::new("nsenter")
                .args(["-t", &pid, "-m", "mount", "-o", "remount,ro"])
                .arg(self.disk())
                .output()
                .expect("run nsenter");
            if out.status.success() {
                return;
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("remount,ro of the disk tier failed: {last}");
    }
}

/// Waits (bounded) until the admin listener answers `/healthz`: the edge has started, and (the
/// edge installs its SIGTERM handler once started, after logging its addresses) a SIGTERM from
/// now on is a graceful stop.
fn wait_healthz(process: &EdgeProcess) {
    use std::io::{Read, Write};
    let addr = process.admin.trim_start_matches("http://").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answered = std::net::TcpStream::connect(&addr).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head)?;
            Ok(head.ends_with(b"200"))
        });
        if answered.unwrap_or(false) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz did not answer 200 within 10s; stderr:\n{}",
            process.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The regular files under `dir`, recursively, sorted (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The object files of a disk tier at `disk` (`<disk>/objects/...`).
pub fn object_files(disk: &Path) -> Vec<PathBuf> {
    files_under(&disk.join("objects"))
}

/// A hit from the disk tier: `hit` with `detail=disk`.
pub fn is_disk_hit(r: &Resp) -> bool {
    let cs = r.cache_status();
    cs.hit && cs.detail.as_deref() == Some("disk")
}

/// A hit from memory: `hit` without a detail.
pub fn is_memory_hit(r: &Resp) -> bool {
    let cs = r.cache_status();
    cs.hit && cs.detail.is_none()
}

/// An object of a `static_origin`: path, body, response headers.
pub type Object = (String, bytes::Bytes, Vec<(&'static str, String)>);

/// An origin of VOD objects: `path -> (body, headers)`, everything else 404 (and `/healthz`
/// 200, for the edge's probes).
pub async fn static_origin(objects: Vec<Object>) -> TestOrigin {
    TestOrigin::start(move |parts| {
        let path = parts.uri.path();
        if path == "/healthz" {
            return Reply::ok("ok");
        }
        match objects.iter().find(|(p, _, _)| p == path) {
            Some((_, body, headers)) => headers
                .iter()
                .fold(Reply::ok(body.clone()), |r, (n, v)| r.header(n, v)),
            None => Reply::ok("not here").status(404),
        }
    })
    .await
}
