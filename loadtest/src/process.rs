//! Child processes of the benchmarks: free ports, signals, stopping a process group, and the
//! memory and CPU time of a process tree read from /proc.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

/// A loopback port that was free a moment ago (the server binds it itself).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    free_port_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A port of `ip` that was free a moment ago (e.g. on 127.0.0.2: Linux routes all of 127/8
/// to loopback).
pub fn free_port_on(ip: IpAddr) -> anyhow::Result<SocketAddr> {
    let l =
        TcpListener::bind((ip, 0)).with_context(|| format!("cannot find a free port on {ip}"))?;
    l.local_addr()
        .with_context(|| format!("cannot find a free port on {ip}"))
}

/// `kill -s <sig> <target>`; a target of `-pid` is a process group.
pub fn signal(sig: &str, target: &str) {
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

/// Stops a child started in its own process group: `sig` to the child, then SIGKILL to the
/// whole group if it has not exited after `timeout`. Returns once the child is reaped.
pub fn stop_group(child: &mut Child, name: &str, sig: &str, timeout: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        // The leader is gone; take any process it left in its group along.
        signal("KILL", &format!("-{}", child.id()));
        return;
    }
    let pid = child.id();
    signal(sig, &pid.to_string());
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) => {
                signal("KILL", &format!("-{pid}"));
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break,
        }
    }
    eprintln!(
        "{name} (pid {pid}) did not stop within {timeout:?} after SIG{sig}; sending SIGKILL to its process group"
    );
    signal("KILL", &format!("-{pid}"));
    let _ = child.kill();
    let _ = child.wait();
}

pub fn running_as_root() -> bool {
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

/// The hard limit on open files of this process (children cannot raise theirs above it).
pub fn nofile_hard_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    let hard = line.split_whitespace().nth(1)?;
    if hard == "unlimited" {
        Some(u64::MAX)
    } else {
        hard.parse().ok()
    }
}

/// Raises this process's soft limit on open files to its hard limit (children inherit it) and
/// returns the soft limit then in force: streamedge's own function, as the edge does at start.
pub use streamedge::raise_nofile_limit;

/// The last 20 lines of a log file, indented (empty if there is none).
pub fn tail(path: &Path) -> String {
    tail_n(path, 20)
}

pub fn tail_n(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let lines: Vec<&str> = s.lines().collect();
            let from = lines.len().saturating_sub(n);
            lines[from..].iter().map(|l| format!("  {l}\n")).collect()
        }
        Err(_) => String::new(),
    }
}

/// `(ppid, utime + stime in clock ticks)` from /proc/<pid>/stat.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything, so split after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// Builds running on the machine besides this program's own (`cargo run` is its parent):
/// processes named `cargo`, `rustc`, `cc1` or `cc1plus` that are not its ancestors. Other
/// builds skew every number.
pub fn other_builds() -> usize {
    let mut ancestors = Vec::new();
    let mut pid = std::process::id();
    while pid > 1 && ancestors.len() < 64 {
        ancestors.push(pid);
        match stat(pid) {
            Some((ppid, _)) => pid = ppid,
            None => break,
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !ancestors.contains(pid))
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok())
        .filter(|c| matches!(c.trim(), "cargo" | "rustc" | "cc1" | "cc1plus"))
        .count()
}

/// Watches for other builds (`other_builds`) on a thread of its own until dropped.
pub struct BuildWatch {
    max: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BuildWatch {
    pub fn start(every: Duration) -> BuildWatch {
        let max = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, st) = (max.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("build-watch".into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    m.fetch_max(other_builds(), Ordering::Relaxed);
                    std::thread::sleep(every);
                }
            })
            .ok();
        BuildWatch { max, stop, thread }
    }

    /// The most compiler processes of other builds seen since the last call (or the start),
    /// and a new count from now.
    pub fn take(&self) -> usize {
        let now = other_builds();
        self.max.swap(now, Ordering::Relaxed).max(now)
    }
}

impl Drop for BuildWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `root` and all its descendants (nginx master and workers, varnishd manager and child).
pub fn tree(root: u32) -> Vec<u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                && let Some((ppid, _)) = stat(pid)
            {
                parent.insert(pid, ppid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|&(_, &pp)| pp == p).map(|(&c, _)| c));
        i += 1;
    }
    out
}

/// CPU seconds (user + system) used so far by the tree's live processes.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    // USER_HZ is 100 on every Linux this runs on.
    pids.iter()
        .filter_map(|&p| stat(p))
        .map(|(_, t)| t)
        .sum::<u64>() as f64
        / 100.0
}

/// Busy CPU seconds of the whole machine, all CPUs (`/proc/stat`: user, nice, system, irq,
/// softirq, steal).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find_map(|l| l.strip_prefix("cpu ")) else {
        return 0.0;
    };
    let f: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| f.get(i))
        .sum::<u64>() as f64
        / 100.0
}

/// CPU seconds of this program: itself, its live descendants, and the children it has reaped
/// (`cutime` and `cstime`: the load generators and caches it waited for).
fn own_cpu_seconds() -> f64 {
    let me = std::process::id();
    let reaped = std::fs::read_to_string(format!("/proc/{me}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            // rest starts at field 3: cutime is field 16, cstime 17.
            Some(f.get(13)?.parse::<u64>().ok()? + f.get(14)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    cpu_seconds(&tree(me)) + reaped as f64 / 100.0
}

/// The CPU the rest of the machine used while this program ran something: busy CPU time of
/// the machine minus this program's own (with its children), from `start` to `cores`.
#[derive(Debug, Clone, Copy)]
pub struct OtherCpu {
    at: Instant,
    busy: f64,
    own: f64,
}

impl OtherCpu {
    pub fn start() -> OtherCpu {
        OtherCpu {
            at: Instant::now(),
            busy: machine_busy_seconds(),
            own: own_cpu_seconds(),
        }
    }

    /// Cores used by other processes since `start` (at least 0). Call it while the children
    /// that ran are still alive or already reaped, not in between.
    pub fn cores(&self) -> f64 {
        let wall = self.at.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        let busy = machine_busy_seconds() - self.busy;
        let own = own_cpu_seconds() - self.own;
        ((busy - own) / wall).max(0.0)
    }
}

/// Memory of a set of processes, in KiB, summed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    /// VmRSS: resident pages, shared ones counted in every process that maps them.
    pub rss: u64,
    /// Pss (proportional set size): shared pages divided among the processes sharing them.
    pub pss: u64,
    /// VmHWM: each process's own peak RSS.
    pub hwm: u64,
}

fn status_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub fn memory(pids: &[u32]) -> Mem {
    let mut m = Mem::default();
    for &p in pids {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/status")) {
            m.rss += status_kib(&s, "VmRSS:");
            m.hwm += status_kib(&s, "VmHWM:");
        }
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
            m.pss += status_kib(&s, "Pss:");
        }
    }
    m
}

/// Peaks of one process tree, as sampled.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peaks {
    /// Highest sum of VmRSS over the tree seen in one sample.
    pub rss: u64,
    /// Highest sum of Pss seen in one sample.
    pub pss: u64,
    /// Sum over every process ever seen in the tree of its last VmHWM (an upper bound of the
    /// tree's peak; exact for a single process).
    pub hwm: u64,
    /// The latest sample.
    pub last: Mem,
    pub samples: u64,
}

#[derive(Default)]
struct Tracked {
    root: u32,
    peaks: Peaks,
    hwm_by_pid: HashMap<u32, u64>,
}

/// Samples the memory of named process trees on a thread of its own until dropped.
pub struct MemSampler {
    state: Arc<Mutex<Vec<(String, Tracked)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MemSampler {
    pub fn start(trees: Vec<(String, u32)>, every: Duration) -> MemSampler {
        let state = Arc::new(Mutex::new(
            trees
                .into_iter()
                .map(|(name, root)| {
                    (
                        name,
                        Tracked {
                            root,
                            ..Tracked::default()
                        },
                    )
                })
                .collect::<Vec<_>>(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("mem-sampler".into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    sample(&s);
                    std::thread::sleep(every);
                }
            })
            .ok();
        MemSampler {
            state,
            stop,
            thread,
        }
    }

    /// Takes a sample now and returns every tree's peaks so far.
    pub fn peaks(&self) -> Vec<(String, Peaks)> {
        sample(&self.state);
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.iter().map(|(n, t)| (n.clone(), t.peaks)).collect()
    }

    /// Starts the peaks over (e.g. before a phase measured on its own); the VmHWM sums stay,
    /// since the kernel's own high-water marks cannot be reset from here.
    pub fn reset_sampled_peaks(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for (_, t) in state.iter_mut() {
            t.peaks.rss = 0;
            t.peaks.pss = 0;
        }
    }
}

fn sample(state: &Mutex<Vec<(String, Tracked)>>) {
    let roots: Vec<u32> = {
        let s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.iter().map(|(_, t)| t.root).collect()
    };
    // Read /proc without the lock held.
    let readings: Vec<(Mem, Vec<(u32, u64)>)> = roots
        .iter()
        .map(|&root| {
            let mut sum = Mem::default();
            let mut hwms = Vec::new();
            for p in tree(root) {
                let m = memory(&[p]);
                sum.rss += m.rss;
                sum.pss += m.pss;
                sum.hwm += m.hwm;
                hwms.push((p, m.hwm));
            }
            (sum, hwms)
        })
        .collect();
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    for ((_, t), (mem, hwms)) in s.iter_mut().zip(readings) {
        if mem.rss == 0 {
            continue; // the process is gone
        }
        t.peaks.rss = t.peaks.rss.max(mem.rss);
        t.peaks.pss = t.peaks.pss.max(mem.pss);
        for (pid, hwm) in hwms {
            if hwm > 0 {
                t.hwm_by_pid.insert(pid, hwm);
            }
        }
        t.peaks.hwm = t.hwm_by_pid.values().sum();
        t.peaks.last = mem;
        t.peaks.samples += 1;
    }
}

impl Drop for MemSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
