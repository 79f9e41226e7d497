//! The served files: the embedded demo media or a `--dir`, held in memory with their validators.
//!
//! A `--dir` is read completely at start-up, not on first request: the use
//! case is a small demo directory, and serving `Bytes` from memory keeps the
//! hot path free of file-system calls and locks. To keep an accidental
//! `--dir /` from eating the machine, loading stops at [`MAX_DIR_BYTES`].
//! Hidden entries (`.git`, `.DS_Store`) and symbolic links are skipped, the
//! latter so nothing outside the directory can be reached through one.

use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;

use super::{clock, media};

pub(crate) const MAX_DIR_BYTES: u64 = 1 << 30;
const MAX_DEPTH: usize = 32;

/// A file as loaded: path relative to the served root (`/`-separated), bytes
/// and modification time.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) key: String,
    pub(crate) body: Bytes,
    pub(crate) modified: SystemTime,
}

/// A servable entity with its precomputed headers.
#[derive(Debug, Clone)]
pub(crate) struct Entity {
    pub(crate) body: Bytes,
    pub(crate) content_type: HeaderValue,
    pub(crate) etag: HeaderValue,
    /// Whole seconds, as HTTP dates carry, so `If-Modified-Since` compares
    /// against what the client actually saw.
    pub(crate) modified: SystemTime,
    pub(crate) last_modified: HeaderValue,
}

impl Entity {
    pub(crate) fn new(body: Bytes, content_type: &'static str, modified: SystemTime) -> Entity {
        let modified = clock::truncate_to_seconds(representable(modified));
        Entity {
            etag: etag(&body),
            content_type: HeaderValue::from_static(content_type),
            last_modified: http_date(modified),
            modified,
            body,
        }
    }
}

impl Entity {
    /// The same resource with other bytes (a retimed segment).
    pub(crate) fn with_body(&self, body: Bytes) -> Entity {
        Entity {
            etag: etag(&body),
            body,
            content_type: self.content_type.clone(),
            modified: self.modified,
            last_modified: self.last_modified.clone(),
        }
    }
}

pub(crate) fn content_type(key: &str) -> &'static str {
    let ext = match key.rsplit_once('.') {
        Some((_, ext)) if !ext.contains('/') => ext.to_ascii_lowercase(),
        _ => return "application/octet-stream",
    };
    match ext.as_str() {
        "m3u8" => "application/vnd.apple.mpegurl",
        "mpd" => "application/dash+xml",
        "ts" => "video/mp2t",
        "m4s" => "video/iso.segment",
        "mp4" => "video/mp4",
        "m4a" => "audio/mp4",
        "aac" => "audio/aac",
        "vtt" => "text/vtt",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// Strong validator: FNV-1a over the bytes plus the length. Not a security
/// hash, just a stable fingerprint that changes when the bytes do, computed
/// once per file (or per rendering of a live playlist).
pub(crate) fn etag(bytes: &[u8]) -> HeaderValue {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let text = format!("\"{:x}-{h:016x}\"", bytes.len());
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// The latest instant an HTTP date can express (httpdate panics past it).
const LAST_HTTP_DATE: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z

pub(crate) fn http_date(t: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(representable(t)))
        .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// `t` clamped to what an HTTP date can say: file times can be anything.
fn representable(t: SystemTime) -> SystemTime {
    let last = UNIX_EPOCH + std::time::Duration::from_secs(LAST_HTTP_DATE);
    t.clamp(UNIX_EPOCH, last)
}

/// The bundled demo media; all of it "modified" at `start`.
pub(crate) fn embedded(start: SystemTime) -> Vec<Loaded> {
    media::FILES
        .iter()
        .map(|(key, bytes)| Loaded {
            key: (*key).to_owned(),
            body: Bytes::from_static(bytes),
            modified: start,
        })
        .collect()
}

/// Reads every regular file under `root` (blocking; run it off the runtime).
pub(crate) fn load_dir(root: &Path) -> io::Result<Vec<Loaded>> {
    let mut out = Vec::new();
    let mut total = 0;
    walk(root, "", 0, &mut out, &mut total)?;
    Ok(out)
}

fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    out: &mut Vec<Loaded>,
    total: &mut u64,
) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        // `DirEntry::file_type` does not follow symbolic links.
        let kind = entry.file_type()?;
        let key = format!("{prefix}{name}");
        if kind.is_dir() {
            if depth < MAX_DEPTH {
                walk(&entry.path(), &format!("{key}/"), depth + 1, out, total)?;
            }
        } else if kind.is_file() {
            let meta = entry.metadata()?;
            *total += meta.len();
            if *total > MAX_DIR_BYTES {
                return Err(io::Error::other(format!(
                    "{}: more than {MAX_DIR_BYTES} bytes of files; the origin keeps everything in memory \
                     and is meant for small demo directories",
                    dir.display()
                )));
            }
            let body = Bytes::from(std::fs::read(entry.path())?);
            out.push(Loaded {
                key,
                body,
                modified: meta.modified().unwrap_or(UNIX_EPOCH),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let cases = [
            ("a/master.m3u8", "application/vnd.apple.mpegurl"),
            ("x.MPD", "application/dash+xml"),
            ("s.ts", "video/mp2t"),
            ("seg-0-001.m4s", "video/iso.segment"),
            ("v.mp4", "video/mp4"),
            ("a.m4a", "audio/mp4"),
            ("a.aac", "audio/aac"),
            ("subs.vtt", "text/vtt"),
            ("meta.json", "application/json"),
            ("README", "application/octet-stream"),
            ("dir.m3u8/file", "application/octet-stream"),
            ("archive.tar.gz", "application/octet-stream"),
            ("trailing.", "application/octet-stream"),
        ];
        for (key, want) in cases {
            assert_eq!(content_type(key), want, "{key}");
        }
    }

    #[test]
    fn any_file_time_makes_a_date() {
        let far = UNIX_EPOCH + std::time::Duration::from_secs(1 << 40);
        assert_eq!(http_date(far), "Fri, 31 Dec 9999 23:59:59 GMT");
        let before = UNIX_EPOCH - std::time::Duration::from_secs(1000);
        assert_eq!(http_date(before), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            Entity::new(Bytes::new(), "x", far).modified,
            representable(far)
        );
    }

    #[test]
    fn etags_are_strong_and_distinct() {
        let a = etag(b"hello");
        assert_eq!(a, etag(b"hello"));
        assert_ne!(a, etag(b"hellp"));
        assert_ne!(etag(b""), etag(b"\0"));
        let text = a.to_str().unwrap();
        assert!(text.starts_with("\"5-") && text.ends_with('"') && !text.starts_with("W/"));
    }

    #[test]
    fn loads_a_directory_without_hidden_files_or_links() {
        let root = std::env::temp_dir().join(format!("streamedge-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join("a.m3u8"), "#EXTM3U\n").unwrap();
        std::fs::write(root.join("sub/deeper/b.ts"), [0u8; 10]).unwrap();
        std::fs::write(root.join(".hidden"), "x").unwrap();
        std::fs::write(root.join(".git/config"), "x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();

        let mut keys: Vec<_> = load_dir(&root)
            .unwrap()
            .into_iter()
            .map(|l| (l.key, l.body.len()))
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [("a.m3u8".to_owned(), 8), ("sub/deeper/b.ts".to_owned(), 10)]
        );
        std::fs::remove_dir_all(&root).unwrap();
        assert!(load_dir(&root).is_err());
    }
}
