//! The `streamedge` binary as a process of its own: started on a config file (or from a prepared
//! command, such as `unshare`), its stderr collected, its memory and metrics read, signalled,
//! and killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The `streamedge` binary running with a config file; its stderr lines are collected.
pub struct EdgeProcess {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    pub http: String,
    pub admin: String,
}

impl EdgeProcess {
    pub fn start(config: &Path) -> EdgeProcess {
        EdgeProcess::spawn(config, None, &[])
    }

    /// Started with at most `files` open file descriptors (RLIMIT_NOFILE, soft and hard).
    pub fn start_with_file_limit(config: &Path, files: u64) -> EdgeProcess {
        EdgeProcess::spawn(config, Some(files), &[])
    }

    /// Started with these environment variables set besides the test's own.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> EdgeProcess {
        EdgeProcess::spawn(config, None, env)
    }

    /// The built `streamedge` binary.
    pub fn binary() -> &'static str {
        env!("CARGO_BIN_EXE_streamedge")
    }

    /// Started from a prepared command that ends up exec'ing the binary (e.g. `unshare ... sh
    /// -c '... && exec streamedge run --config FILE'`, so that the child's pid is the edge's);
    /// its stderr is collected like `start`'s.
    pub fn start_command(mut command: Command) -> EdgeProcess {
        command
            .env_remove("STREAMEDGE_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        EdgeProcess::launch(command)
    }

    fn spawn(config: &Path, files: Option<u64>, env: &[(&str, &str)]) -> EdgeProcess {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(EdgeProcess::binary());
        command
            .arg("--config")
            .arg(config)
            .env_remove("STREAMEDGE_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(files) = files {
            // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: files,
                        rlim_max: files,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        EdgeProcess::launch(command)
    }

    /// Spawns `command` (stderr piped), collects its stderr lines and waits for its addresses.
    fn launch(mut command: Command) -> EdgeProcess {
        let mut child = command.spawn().expect("spawn streamedge");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut p = EdgeProcess {
            child,
            lines,
            http: String::new(),
            admin: String::new(),
        };
        p.http = p.wait_for_addr("listening on http://");
        p.admin = p.wait_for_addr("admin on http://");
        p
    }

    pub fn wait_line(&self, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {secs}s; got:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn find_line(&self, needle: &str) -> Option<String> {
        let lines = self.lines.lock().unwrap();
        lines.iter().find(|l| l.contains(needle)).cloned()
    }

    /// Every stderr line so far.
    pub fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and the process reaped.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL streamedge");
        self.child.wait().expect("reap streamedge");
    }

    /// SIGTERM, then waits (bounded) for the exit; returns how it ended.
    pub fn terminate(&mut self, secs: u64) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("streamedge did not exit within {secs}s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let client = super::client::base_client().build().expect("client");
        let r = super::get(&client, &format!("{}/metrics", self.admin)).await;
        assert_eq!(r.status, 200, "/metrics");
        String::from_utf8(r.body.to_vec()).expect("metrics are text")
    }

    /// One metric, summed over its series (`metric_sum`).
    pub async fn metric(&self, name: &str) -> f64 {
        super::metric_sum(&self.metrics().await, name, &[])
    }

    pub fn count_lines(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The address on the first stderr line with `needle`; fails at once (with the stderr) when
    /// the process exits first, e.g. on a config it refuses.
    fn wait_for_addr(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let line = loop {
            if let Some(l) = self.find_line(needle) {
                break l;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader thread collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "streamedge exited ({status}) before logging {needle:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within 20s; got:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let start = line.find(needle).unwrap() + needle.len();
        let addr: String = line[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        format!("http://{addr}")
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("streamedge did not exit within {secs}s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl EdgeProcess {
    /// A field of /proc/<pid>/status in KiB (`VmRSS`, `VmHWM`: the peak).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
