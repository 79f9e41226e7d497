//! The disk under a benchmark: the kernel's page cache dropped (when this VM allows it), the
//! filesystem a directory is on, and what a directory holds.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Writes back dirty pages (`sync`) and drops the clean page cache, dentries and inodes
/// (`echo 3 > /proc/sys/vm/drop_caches`). An error says why not (not root, a read-only
/// `/proc/sys` in a container, ...).
pub fn drop_page_cache() -> Result<(), String> {
    let _ = Command::new("sync")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").map_err(|e| e.to_string())
}

/// The filesystem `path` is on: `ext4 /dev/vda at /`, from /proc/mounts (the longest mount
/// point above it).
pub fn filesystem(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dev, at, fs) = (f.first()?, f.get(1)?, f.get(2)?);
            path.starts_with(at)
                .then(|| (at.len(), format!("{fs} {dev} at {at}")))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, s)| s)
        .unwrap_or_else(|| "unknown".into())
}

/// What a directory tree holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub files: u64,
    /// Sum of the files' lengths.
    pub bytes: u64,
    /// Blocks allocated to them (`du`), in bytes.
    pub allocated: u64,
}

/// The regular files under `dir`, recursively (zero if it does not exist).
pub fn usage(dir: &Path) -> Usage {
    let mut u = Usage::default();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                u.files += 1;
                u.bytes += m.len();
                u.allocated += m.blocks() * 512;
            }
        }
    }
    u
}
