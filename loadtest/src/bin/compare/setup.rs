//! Before the rounds: the streamedge binary (built if needed), versions, the temporary
//! directory, the certificate, and the origin's content with what every file should be.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use streamedge_loadtest::client::{Checksum, Expect};
use streamedge_loadtest::{crowd, origin};

use crate::args::Args;
use crate::model::{MIB, PATH_1K, PATH_1M};

/// The repository (the workspace root, one above this crate).
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const DEMO_MEDIA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../src/origin/media/cmaf");

/// A directory removed on drop unless kept.
pub(crate) struct TempDir {
    pub(crate) path: PathBuf,
    pub(crate) keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            println!("kept: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

pub(crate) fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

/// The streamedge binary: `--edge-bin`, or the release binary next to this program, built
/// first (unless `--no-build`).
pub(crate) fn edge_binary(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(b) = &args.edge_bin {
        return Ok(b.clone());
    }
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    // target/<profile>/compare → target/release/streamedge
    let target_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("cannot find the target directory from {}", exe.display()))?;
    let bin = target_dir.join("release").join("streamedge");
    if !args.no_build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        println!(
            "building the streamedge release binary (cargo build --release --bin streamedge) ..."
        );
        let mut build = Command::new(&cargo);
        build
            .args(["build", "--release", "--bin", "streamedge"])
            .current_dir(REPO)
            .env("CARGO_TARGET_DIR", target_dir);
        // `cargo run` gives this process the package's variables; build scripts that watch
        // one of them (ring watches CARGO_MANIFEST_DIR) would rebuild under a nested cargo,
        // and again at the next plain `cargo build`.
        for (name, _) in std::env::vars_os() {
            let n = name.to_string_lossy();
            if n.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&n.as_ref())
            {
                build.env_remove(&name);
            }
        }
        let status = build.status().context("cannot run cargo")?;
        if !status.success() {
            bail!(
                "cargo build --release --bin streamedge failed ({status}); --no-build uses the binary as it is"
            );
        }
    }
    if !bin.is_file() {
        bail!(
            "no streamedge binary at {} (build it: cargo build --release)",
            bin.display()
        );
    }
    Ok(bin)
}

/// `commit` or `commit + N changed files under src/`.
pub(crate) fn git_state() -> String {
    let git = |a: &[&str]| {
        Command::new("git")
            .args(a)
            .current_dir(REPO)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "no git".into();
    };
    let dirty = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "src",
        "Cargo.toml",
        "Cargo.lock",
    ])
    .map(|s| s.lines().count())
    .unwrap_or(0);
    if dirty == 0 {
        format!("commit {commit}")
    } else {
        format!("commit {commit} + {dirty} uncommitted file(s) in src/ or Cargo.*")
    }
}

/// The first line of `bin args`, without the tool's name and copyright.
pub(crate) fn tool_version(bin: &str, args: &[&str]) -> String {
    Command::new(bin)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
            t.push_str(&String::from_utf8_lossy(&o.stderr));
            let first = t.lines().next().unwrap_or_default().trim();
            let first = first.split(" Copyright").next().unwrap_or(first);
            first.strip_prefix(bin).unwrap_or(first).trim().to_owned()
        })
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn write_certificate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .context("cannot make a certificate")?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).context("cannot write the certificate")?;
    std::fs::write(&key, generated.signing_key.serialize_pem()).context("cannot write the key")?;
    Ok((cert, key))
}

pub(crate) fn expect_of(b: &[u8]) -> Expect {
    Expect {
        len: b.len() as u64,
        checksum: Checksum::of(b),
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("mpd") => "application/dash+xml",
        Some("m4s") => "video/iso.segment",
        _ => "application/octet-stream",
    }
}

/// The origin's content: the 1 KB playlist, the 1 MiB segment, the demo rendition under
/// /vod/hls/ and /vod/dash/, cold objects under /herd/ (slow) and /fill/ (1 MiB, at full speed).
type Built = (origin::Content, HashMap<String, Expect>, Vec<String>);

pub(crate) fn build_content(args: &Args) -> anyhow::Result<Built> {
    let mut files: HashMap<String, (Bytes, &'static str)> = HashMap::new();
    // A 1017-byte VOD media playlist, as in loadtest/wrk/README.md.
    let mut m3u8 = String::from(
        "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n",
    );
    for i in 1..=32 {
        m3u8.push_str(&format!("#EXTINF:2.000,\nseg-{i:05}.m4s\n"));
    }
    m3u8.push_str("#EXT-X-ENDLIST\n");
    files.insert(PATH_1K.into(), (Bytes::from(m3u8), content_type(PATH_1K)));
    // The 1 MiB segment: pseudo-random bytes, different from the herd object's.
    let mut seg = crowd::make_object((MIB as usize) + 8).to_vec();
    seg.drain(..8);
    files.insert(PATH_1M.into(), (Bytes::from(seg), content_type(PATH_1M)));

    let mut names: Vec<String> = std::fs::read_dir(DEMO_MEDIA)
        .with_context(|| format!("cannot read the demo media in {DEMO_MEDIA}"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let mut mix = Vec::new();
    for name in &names {
        let bytes = std::fs::read(Path::new(DEMO_MEDIA).join(name))
            .with_context(|| format!("cannot read {DEMO_MEDIA}/{name}"))?;
        let bytes = Bytes::from(bytes);
        // Playlists in the directory of their format, media under both.
        let dirs: &[&str] = if name.ends_with(".m3u8") {
            &["hls"]
        } else if name.ends_with(".mpd") {
            &["dash"]
        } else {
            &["hls", "dash"]
        };
        for d in dirs {
            let path = format!("/vod/{d}/{name}");
            files.insert(path.clone(), (bytes.clone(), content_type(name)));
            mix.push(path);
        }
    }
    if mix.is_empty() {
        bail!("no demo media in {DEMO_MEDIA}");
    }
    let expect = files
        .iter()
        .map(|(p, (b, _))| (p.clone(), expect_of(b)))
        .collect();
    let content = origin::Content {
        files,
        routes: vec![
            origin::Route {
                prefix: "/herd/".into(),
                object: crowd::make_object(args.herd_size),
                behaviour: origin::Behaviour {
                    latency: Duration::from_millis(args.herd_latency_ms),
                    body_time: Duration::from_millis(args.herd_body_ms),
                },
            },
            origin::Route {
                prefix: "/fill/".into(),
                object: {
                    let mut b = crowd::make_object(MIB as usize + 16).to_vec();
                    b.drain(..16);
                    Bytes::from(b)
                },
                behaviour: origin::Behaviour {
                    latency: Duration::ZERO,
                    body_time: Duration::ZERO,
                },
            },
        ],
    };
    Ok((content, expect, mix))
}
