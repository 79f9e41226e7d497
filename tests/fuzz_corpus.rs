//! The fuzz corpus as regression tests: every saved input in `tests/fuzz/corpus/<target>/` runs
//! through its fuzz target (`tests/fuzz/fuzz_targets/<target>.rs`, whose body is a plain
//! `run(data)`), with every property check the target makes, on stable and without libFuzzer.

// Each target declares its own `mod common;` (it is its own crate under cargo-fuzz), so here
// the shared input decoder is compiled once per target.
#![allow(clippy::duplicate_mod)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

#[path = "fuzz/fuzz_targets/cache_control.rs"]
mod cache_control;
#[path = "fuzz/fuzz_targets/cache_key.rs"]
mod cache_key;
#[path = "fuzz/fuzz_targets/cmcd.rs"]
mod cmcd;
#[path = "fuzz/fuzz_targets/config.rs"]
mod config;
#[path = "fuzz/fuzz_targets/manifest.rs"]
mod manifest;
#[path = "fuzz/fuzz_targets/range.rs"]
mod range;
#[path = "fuzz/fuzz_targets/request_target.rs"]
mod request_target;
#[path = "fuzz/fuzz_targets/signing.rs"]
mod signing;

/// Runs `run` on every file of the target's corpus directory; fails naming each input that
/// panicked (or broke a property), after trying them all.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let shown = format!("tests/fuzz/corpus/{target}");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{shown}: {e}"));
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap_or_else(|e| panic!("{shown}: {e}")).path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{shown}: no inputs");

    let mut failed = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{shown}/{name}: {e}"));
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            failed.push(format!("{shown}/{name}: {why}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} inputs failed:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn cache_control_corpus() {
    replay("cache_control", cache_control::run);
}

#[test]
fn cache_key_corpus() {
    replay("cache_key", cache_key::run);
}

#[test]
fn cmcd_corpus() {
    replay("cmcd", cmcd::run);
}

#[test]
fn config_corpus() {
    replay("config", config::run);
}

#[test]
fn manifest_corpus() {
    replay("manifest", manifest::run);
}

#[test]
fn range_corpus() {
    replay("range", range::run);
}

#[test]
fn signing_corpus() {
    replay("signing", signing::run);
}

#[test]
fn request_target_corpus() {
    replay("request_target", request_target::run);
}
