//! What a benchmark does before it measures: the streamedge binary (built first if needed), the
//! versions it reports, its temporary directory, and the demo rendition the player mix asks for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;

use crate::client::{Checksum, Expect};
use crate::crowd;

/// The repository (the workspace root, one above this crate).
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The demo rendition (CMAF: HLS playlists, a DASH MPD, init and media segments).
pub const DEMO_MEDIA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../src/origin/media/cmaf");

/// What the origin serves at a fixed path: path → (body, Content-Type).
pub type Files = HashMap<String, (Bytes, &'static str)>;

/// The comparison's ~1 KB manifest (a 1017-byte VOD media playlist).
pub const PATH_1K: &str = "/vod/bench/1k.m3u8";
/// The comparison's 1 MiB segment.
pub const PATH_1M: &str = "/vod/bench/1m.m4s";

/// A directory removed on drop unless kept.
pub struct TempDir {
    pub path: PathBuf,
    pub keep: bool,
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

pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

/// The streamedge binary: `edge_bin`, or the release binary next to this program, built
/// first (unless `no_build`).
pub fn edge_binary(edge_bin: Option<&Path>, no_build: bool) -> anyhow::Result<PathBuf> {
    if let Some(b) = edge_bin {
        return Ok(b.to_owned());
    }
    release_binary("streamedge", "streamedge", no_build)
}

/// The release binary `bin` of the workspace's `package`, next to this program
/// (target/release/<bin>), built first with `cargo build --release -p <package> --bin <bin>`
/// unless `no_build`.
pub fn release_binary(package: &str, bin: &str, no_build: bool) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    // target/<profile>/<benchmark> → target/release/<bin>
    let target_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("cannot find the target directory from {}", exe.display()))?;
    let path = target_dir.join("release").join(bin);
    if !no_build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        println!(
            "building the {bin} release binary (cargo build --release -p {package} --bin {bin}) ..."
        );
        let mut build = Command::new(&cargo);
        build
            .args(["build", "--release", "-p", package, "--bin", bin])
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
                "cargo build --release -p {package} --bin {bin} failed ({status}); --no-build uses the binary as it is"
            );
        }
    }
    if !path.is_file() {
        bail!(
            "no {bin} binary at {} (build it: cargo build --release -p {package} --bin {bin})",
            path.display()
        );
    }
    Ok(path)
}

/// `commit` or `commit + N changed files under src/`.
pub fn git_state() -> String {
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
pub fn tool_version(bin: &str, args: &[&str]) -> String {
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

pub fn expect_of(b: &[u8]) -> Expect {
    Expect {
        len: b.len() as u64,
        checksum: Checksum::of(b),
    }
}

pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("mpd") => "application/dash+xml",
        Some("m4s") => "video/iso.segment",
        _ => "application/octet-stream",
    }
}

/// The files of the demo rendition (read once), sorted by name: the 320x180 video and the
/// audio, as the player mix has always been measured (RESULTS.md); the demo's second video
/// rendition (representation 2, for players' ABR) is left out so figures stay comparable.
pub fn demo_media() -> anyhow::Result<Vec<(String, Bytes)>> {
    let second_rendition =
        |n: &str| n.starts_with("seg-2-") || n == "init-2.m4s" || n == "media_2.m3u8";
    let mut names: Vec<String> = std::fs::read_dir(DEMO_MEDIA)
        .with_context(|| format!("cannot read the demo media in {DEMO_MEDIA}"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.starts_with('.') && !second_rendition(n))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no demo media in {DEMO_MEDIA}");
    }
    names
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(Path::new(DEMO_MEDIA).join(&name))
                .with_context(|| format!("cannot read {DEMO_MEDIA}/{name}"))?;
            Ok((name, Bytes::from(bytes)))
        })
        .collect()
}

/// The demo rendition under `root` (e.g. `/vod`): playlists under `<root>/hls/`, the MPD under
/// `<root>/dash/`, init and media segments under both, added to `files`. Returns the player
/// mix's paths, in order.
pub fn add_rendition(root: &str, media: &[(String, Bytes)], files: &mut Files) -> Vec<String> {
    let mut mix = Vec::new();
    for (name, bytes) in media {
        // Playlists in the directory of their format, media under both.
        let dirs: &[&str] = if name.ends_with(".m3u8") {
            &["hls"]
        } else if name.ends_with(".mpd") {
            &["dash"]
        } else {
            &["hls", "dash"]
        };
        for d in dirs {
            let path = format!("{root}/{d}/{name}");
            files.insert(path.clone(), (bytes.clone(), content_type(name)));
            mix.push(path);
        }
    }
    mix
}

/// The comparison's fixed files, as its origin serves them to the caches and the bare server
/// serves them from memory: the 1 KB playlist, the 1 MiB segment and the demo rendition under
/// `/vod`. Returns the files and the player mix's paths, in order.
pub fn bench_files() -> anyhow::Result<(Files, Vec<String>)> {
    let mut files = Files::new();
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
    let mut seg = crowd::make_object((1 << 20) + 8).to_vec();
    seg.drain(..8);
    files.insert(PATH_1M.into(), (Bytes::from(seg), content_type(PATH_1M)));
    let mix = add_rendition("/vod", &demo_media()?, &mut files);
    Ok((files, mix))
}
