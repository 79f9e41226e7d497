//! The bundled demo rendition, embedded in the binary so `streamedge origin` works from any directory.
//!
//! Made by `media/make.sh` (see `media/README.md`). The table is written out
//! by hand because the file list is small and fixed; a test checks it against
//! the directory so a regenerated rendition cannot silently drift from it.

/// (key relative to the served root, bytes)
pub(crate) const FILES: &[(&str, &[u8])] = &[
    ("cmaf/init-0.m4s", include_bytes!("media/cmaf/init-0.m4s")),
    ("cmaf/init-1.m4s", include_bytes!("media/cmaf/init-1.m4s")),
    (
        "cmaf/manifest.mpd",
        include_bytes!("media/cmaf/manifest.mpd"),
    ),
    ("cmaf/master.m3u8", include_bytes!("media/cmaf/master.m3u8")),
    (
        "cmaf/media_0.m3u8",
        include_bytes!("media/cmaf/media_0.m3u8"),
    ),
    (
        "cmaf/media_1.m3u8",
        include_bytes!("media/cmaf/media_1.m3u8"),
    ),
    (
        "cmaf/seg-0-001.m4s",
        include_bytes!("media/cmaf/seg-0-001.m4s"),
    ),
    (
        "cmaf/seg-0-002.m4s",
        include_bytes!("media/cmaf/seg-0-002.m4s"),
    ),
    (
        "cmaf/seg-0-003.m4s",
        include_bytes!("media/cmaf/seg-0-003.m4s"),
    ),
    (
        "cmaf/seg-0-004.m4s",
        include_bytes!("media/cmaf/seg-0-004.m4s"),
    ),
    (
        "cmaf/seg-0-005.m4s",
        include_bytes!("media/cmaf/seg-0-005.m4s"),
    ),
    (
        "cmaf/seg-0-006.m4s",
        include_bytes!("media/cmaf/seg-0-006.m4s"),
    ),
    (
        "cmaf/seg-1-001.m4s",
        include_bytes!("media/cmaf/seg-1-001.m4s"),
    ),
    (
        "cmaf/seg-1-002.m4s",
        include_bytes!("media/cmaf/seg-1-002.m4s"),
    ),
    (
        "cmaf/seg-1-003.m4s",
        include_bytes!("media/cmaf/seg-1-003.m4s"),
    ),
    (
        "cmaf/seg-1-004.m4s",
        include_bytes!("media/cmaf/seg-1-004.m4s"),
    ),
    (
        "cmaf/seg-1-005.m4s",
        include_bytes!("media/cmaf/seg-1-005.m4s"),
    ),
    (
        "cmaf/seg-1-006.m4s",
        include_bytes!("media/cmaf/seg-1-006.m4s"),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_media_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/origin/media/cmaf");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| format!("cmaf/{}", e.unwrap().file_name().to_str().unwrap()))
            .collect();
        on_disk.sort();
        let mut table: Vec<String> = FILES.iter().map(|(k, _)| (*k).to_owned()).collect();
        table.sort();
        assert_eq!(table, on_disk);
        let total: usize = FILES.iter().map(|(_, b)| b.len()).sum();
        assert!((200_000..=450_000).contains(&total), "{total} bytes");
    }
}
