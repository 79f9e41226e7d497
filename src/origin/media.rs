//! The bundled demo media, embedded in the binary so `streamedge origin` works from any directory.
//!
//! `media/make.sh` makes one set of CMAF files: two video renditions (for
//! players to switch between) and one audio rendition (see
//! `media/README.md`). The table serves it as two directories, `hls/` (the
//! playlists) and `dash/` (the MPD), each with the segments beside its
//! manifests, as a single-format origin would lay them out; the bytes are
//! embedded once and shared. The table is written out by hand because the
//! file list is small and fixed; a test checks it against the directory.

static INIT_0_M4S: &[u8] = include_bytes!("media/cmaf/init-0.m4s");
static INIT_1_M4S: &[u8] = include_bytes!("media/cmaf/init-1.m4s");
static INIT_2_M4S: &[u8] = include_bytes!("media/cmaf/init-2.m4s");
static MANIFEST_MPD: &[u8] = include_bytes!("media/cmaf/manifest.mpd");
static MASTER_M3U8: &[u8] = include_bytes!("media/cmaf/master.m3u8");
static MEDIA_0_M3U8: &[u8] = include_bytes!("media/cmaf/media_0.m3u8");
static MEDIA_1_M3U8: &[u8] = include_bytes!("media/cmaf/media_1.m3u8");
static MEDIA_2_M3U8: &[u8] = include_bytes!("media/cmaf/media_2.m3u8");
static SEG_0_001_M4S: &[u8] = include_bytes!("media/cmaf/seg-0-001.m4s");
static SEG_0_002_M4S: &[u8] = include_bytes!("media/cmaf/seg-0-002.m4s");
static SEG_0_003_M4S: &[u8] = include_bytes!("media/cmaf/seg-0-003.m4s");
static SEG_0_004_M4S: &[u8] = include_bytes!("media/cmaf/seg-0-004.m4s");
static SEG_0_005_M4S: &[u8] = include_bytes!("media/cmaf/seg-0-005.m4s");
static SEG_0_006_M4S: &[u8] = include_bytes!("media/cmaf/seg-0-006.m4s");
static SEG_1_001_M4S: &[u8] = include_bytes!("media/cmaf/seg-1-001.m4s");
static SEG_1_002_M4S: &[u8] = include_bytes!("media/cmaf/seg-1-002.m4s");
static SEG_1_003_M4S: &[u8] = include_bytes!("media/cmaf/seg-1-003.m4s");
static SEG_1_004_M4S: &[u8] = include_bytes!("media/cmaf/seg-1-004.m4s");
static SEG_1_005_M4S: &[u8] = include_bytes!("media/cmaf/seg-1-005.m4s");
static SEG_1_006_M4S: &[u8] = include_bytes!("media/cmaf/seg-1-006.m4s");
static SEG_2_001_M4S: &[u8] = include_bytes!("media/cmaf/seg-2-001.m4s");
static SEG_2_002_M4S: &[u8] = include_bytes!("media/cmaf/seg-2-002.m4s");
static SEG_2_003_M4S: &[u8] = include_bytes!("media/cmaf/seg-2-003.m4s");
static SEG_2_004_M4S: &[u8] = include_bytes!("media/cmaf/seg-2-004.m4s");
static SEG_2_005_M4S: &[u8] = include_bytes!("media/cmaf/seg-2-005.m4s");
static SEG_2_006_M4S: &[u8] = include_bytes!("media/cmaf/seg-2-006.m4s");

/// (key relative to the served root, bytes)
pub(crate) static FILES: &[(&str, &[u8])] = &[
    ("hls/master.m3u8", MASTER_M3U8),
    ("hls/media_0.m3u8", MEDIA_0_M3U8),
    ("hls/media_1.m3u8", MEDIA_1_M3U8),
    ("hls/media_2.m3u8", MEDIA_2_M3U8),
    ("hls/init-0.m4s", INIT_0_M4S),
    ("hls/init-1.m4s", INIT_1_M4S),
    ("hls/init-2.m4s", INIT_2_M4S),
    ("hls/seg-0-001.m4s", SEG_0_001_M4S),
    ("hls/seg-0-002.m4s", SEG_0_002_M4S),
    ("hls/seg-0-003.m4s", SEG_0_003_M4S),
    ("hls/seg-0-004.m4s", SEG_0_004_M4S),
    ("hls/seg-0-005.m4s", SEG_0_005_M4S),
    ("hls/seg-0-006.m4s", SEG_0_006_M4S),
    ("hls/seg-1-001.m4s", SEG_1_001_M4S),
    ("hls/seg-1-002.m4s", SEG_1_002_M4S),
    ("hls/seg-1-003.m4s", SEG_1_003_M4S),
    ("hls/seg-1-004.m4s", SEG_1_004_M4S),
    ("hls/seg-1-005.m4s", SEG_1_005_M4S),
    ("hls/seg-1-006.m4s", SEG_1_006_M4S),
    ("hls/seg-2-001.m4s", SEG_2_001_M4S),
    ("hls/seg-2-002.m4s", SEG_2_002_M4S),
    ("hls/seg-2-003.m4s", SEG_2_003_M4S),
    ("hls/seg-2-004.m4s", SEG_2_004_M4S),
    ("hls/seg-2-005.m4s", SEG_2_005_M4S),
    ("hls/seg-2-006.m4s", SEG_2_006_M4S),
    ("dash/manifest.mpd", MANIFEST_MPD),
    ("dash/init-0.m4s", INIT_0_M4S),
    ("dash/init-1.m4s", INIT_1_M4S),
    ("dash/init-2.m4s", INIT_2_M4S),
    ("dash/seg-0-001.m4s", SEG_0_001_M4S),
    ("dash/seg-0-002.m4s", SEG_0_002_M4S),
    ("dash/seg-0-003.m4s", SEG_0_003_M4S),
    ("dash/seg-0-004.m4s", SEG_0_004_M4S),
    ("dash/seg-0-005.m4s", SEG_0_005_M4S),
    ("dash/seg-0-006.m4s", SEG_0_006_M4S),
    ("dash/seg-1-001.m4s", SEG_1_001_M4S),
    ("dash/seg-1-002.m4s", SEG_1_002_M4S),
    ("dash/seg-1-003.m4s", SEG_1_003_M4S),
    ("dash/seg-1-004.m4s", SEG_1_004_M4S),
    ("dash/seg-1-005.m4s", SEG_1_005_M4S),
    ("dash/seg-1-006.m4s", SEG_1_006_M4S),
    ("dash/seg-2-001.m4s", SEG_2_001_M4S),
    ("dash/seg-2-002.m4s", SEG_2_002_M4S),
    ("dash/seg-2-003.m4s", SEG_2_003_M4S),
    ("dash/seg-2-004.m4s", SEG_2_004_M4S),
    ("dash/seg-2-005.m4s", SEG_2_005_M4S),
    ("dash/seg-2-006.m4s", SEG_2_006_M4S),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_media_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/origin/media/cmaf");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().to_owned())
            .collect();
        on_disk.sort();
        for name in &on_disk {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let is_segment = name.ends_with(".m4s");
            for d in ["hls", "dash"] {
                let key = format!("{d}/{name}");
                let listed = FILES.iter().find(|(k, _)| *k == key);
                let wanted = is_segment || (d == "hls") == name.ends_with(".m3u8");
                assert_eq!(listed.is_some(), wanted, "{key}");
                if let Some((_, b)) = listed {
                    assert_eq!(*b, &bytes[..], "{key}");
                }
            }
        }
        let segments = on_disk.iter().filter(|n| n.ends_with(".m4s")).count();
        assert_eq!(FILES.len(), on_disk.len() + segments);
        // Embedded once: both directories point at the same bytes.
        let hls = FILES
            .iter()
            .find(|(k, _)| *k == "hls/seg-0-001.m4s")
            .unwrap()
            .1;
        let dash = FILES
            .iter()
            .find(|(k, _)| *k == "dash/seg-0-001.m4s")
            .unwrap()
            .1;
        assert_eq!(hls.as_ptr(), dash.as_ptr());
        let total: u64 = on_disk
            .iter()
            .map(|n| std::fs::metadata(dir.join(n)).unwrap().len())
            .sum();
        assert!((700_000..=1_000_000).contains(&total), "{total} bytes");
    }
}
