//! Every player on the demo streams through one edge, side by side: hls.js (VOD with two video
//! renditions, starting on the lower so that ABR has to switch, and live), dash.js (VOD and
//! live) and Shaka Player (live DASH).

use std::time::SystemTime;

use serde_json::json;
use streamedge::origin::OriginOptions;

use crate::common::TestEdge;
use crate::{Browser, DemoOrigin, assert_played, player_case, stalls_after_start};

/// Seconds each player must play, and the deadline for it.
const PLAY_S: f64 = 8.0;
const DEADLINE_S: f64 = 45.0;
/// A stall in the first seconds of playing is a player finding its place (Shaka jumps a gap
/// between audio and video there now and then); after that, none is allowed.
const SETTLE_S: f64 = 2.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_player_plays_the_demo_streams_through_the_edge_over_h2() {
    let origin = DemoOrigin::start(OriginOptions::default(), SystemTime::now()).await;
    let edge = TestEdge::builder(&[origin.url()]).start().await;
    let mut hls_vod = player_case(
        "hls-vod",
        "hls",
        &edge.https_url("/vod/hls/master.m3u8"),
        PLAY_S,
        DEADLINE_S,
    );
    // Start on the lowest rendition: a player on loopback then has to switch up.
    hls_vod["config"] = json!({"startLevel": 0});
    let cases = vec![
        hls_vod,
        player_case(
            "hls-live",
            "hls",
            &edge.https_url("/live/hls/master.m3u8"),
            PLAY_S,
            DEADLINE_S,
        ),
        player_case(
            "dash-vod",
            "dash",
            &edge.https_url("/vod/dash/manifest.mpd"),
            PLAY_S,
            DEADLINE_S,
        ),
        player_case(
            "dash-live",
            "dash",
            &edge.https_url("/live/dash/manifest.mpd"),
            PLAY_S,
            DEADLINE_S,
        ),
        player_case(
            "shaka-live",
            "shaka",
            &edge.https_url("/live/dash/manifest.mpd"),
            PLAY_S,
            DEADLINE_S,
        ),
    ];
    let browser = Browser::launch("players", cases).await;
    let report = browser.finish(120).await;
    for (name, r) in &report.results {
        assert_played(r, PLAY_S);
        assert_eq!(
            stalls_after_start(r, SETTLE_S),
            0,
            "{name}: stalls after its first {SETTLE_S} s: {}",
            r["log"]
        );
    }
    let hls_vod = &report.results["hls-vod"];
    assert!(
        hls_vod["manifest_levels"].as_u64().unwrap_or(0) >= 2,
        "the demo VOD offers two video renditions: {hls_vod}"
    );
    assert!(
        hls_vod["levels"].as_array().map_or(0, Vec::len) >= 2,
        "hls.js switched rendition (ABR): {}",
        hls_vod["levels"]
    );
    edge.stop().await;
}
