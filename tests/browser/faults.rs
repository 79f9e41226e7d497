//! Playback under origin faults: the origin that serves the live stream killed mid-playback
//! while a second one is there (no stall, no error: the edge fails over before the first byte),
//! and the only origin down for a few seconds during VOD playback (it goes on from the cache)
//! and during live playback (a player may wait, and plays on by itself once it is back).

use std::time::{Duration, SystemTime};

use serde_json::Value;
use streamedge::origin::{OriginOptions, RequestLog};

use crate::common::TestEdge;
use crate::{
    Browser, DemoOrigin, assert_played, assert_played_through, player_case, stalls_since, wall_ms,
};

/// How long the only origin stays down.
const OUTAGE: Duration = Duration::from_secs(5);

/// Seconds from `since_ms` (wall clock) until the player's playhead moved again, from the
/// driver's one-second timeline (`[wall ms, played s, stalls]`): 0 if it never stopped.
fn resumed_after(r: &Value, since_ms: u64) -> Option<f64> {
    let timeline: Vec<(u64, f64)> = r["progress"]
        .as_array()?
        .iter()
        .filter_map(|p| Some((p[0].as_u64()?, p[1].as_f64()?)))
        .collect();
    for w in timeline.windows(2) {
        let ((t0, a), (t1, b)) = (w[0], w[1]);
        if t1 >= since_ms && b - a >= 0.2 {
            return Some(t0.saturating_sub(since_ms) as f64 / 1000.0);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vod_plays_on_from_the_cache_while_the_only_origin_restarts() {
    let mut origin = DemoOrigin::start(OriginOptions::default(), SystemTime::now()).await;
    let edge = TestEdge::builder(&[origin.url()]).start().await;
    // 20 s of a 12 s VOD: each player loops over what it fetched before the outage.
    let mut hls = player_case(
        "hls-vod",
        "hls",
        &edge.https_url("/vod/hls/master.m3u8"),
        20.0,
        60.0,
    );
    hls["loop"] = true.into();
    let mut dash = player_case(
        "dash-vod",
        "dash",
        &edge.https_url("/vod/dash/manifest.mpd"),
        20.0,
        60.0,
    );
    dash["loop"] = true.into();
    let mut browser = Browser::launch("vod-origin-restart", vec![hls, dash]).await;
    browser.playing("hls-vod", 30).await;
    browser.playing("dash-vod", 30).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let down = wall_ms();
    origin.kill().await;
    tokio::time::sleep(OUTAGE).await;
    origin.restart().await;
    let report = browser.finish(90).await;
    for (name, r) in &report.results {
        assert_played(r, 20.0);
        assert_eq!(
            stalls_since(r, down),
            0,
            "{name} stalled while the origin was down or after: {}",
            r["log"]
        );
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_players_recover_by_themselves_after_the_only_origin_restarts() {
    let mut origin = DemoOrigin::start(OriginOptions::default(), SystemTime::now()).await;
    let edge = TestEdge::builder(&[origin.url()]).start().await;
    let cases = vec![
        player_case(
            "hls-live",
            "hls",
            &edge.https_url("/live/hls/master.m3u8"),
            24.0,
            70.0,
        ),
        player_case(
            "dash-live",
            "dash",
            &edge.https_url("/live/dash/manifest.mpd"),
            24.0,
            70.0,
        ),
        player_case(
            "shaka-live",
            "shaka",
            &edge.https_url("/live/dash/manifest.mpd"),
            24.0,
            70.0,
        ),
    ];
    let mut browser = Browser::launch("live-origin-restart", cases).await;
    for name in ["hls-live", "dash-live", "shaka-live"] {
        browser.playing(name, 30).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    origin.kill().await;
    tokio::time::sleep(OUTAGE).await;
    origin.restart().await;
    let back = wall_ms();
    let report = browser.finish(120).await;
    // The outage reached the players: stale playlists in place of the origin, or errors.
    let felt: u64 = report
        .results
        .values()
        .map(|r| {
            let stale = r["cache_status"]["stale-if-error"].as_u64().unwrap_or(0);
            let errors = r["statuses"].as_object().map_or(0, |m| {
                m.iter()
                    .filter(|(code, _)| code.starts_with('5'))
                    .filter_map(|(_, n)| n.as_u64())
                    .sum()
            });
            stale + errors
        })
        .sum();
    assert!(felt > 0, "the players never met the outage");
    for (name, r) in &report.results {
        // Errors are allowed here (segments the origin could not give); playing on is not.
        assert_played_through(r, 24.0);
        let resumed = resumed_after(r, back);
        eprintln!("{name}: playing again {resumed:?} s after the origin came back");
        let resumed = resumed.unwrap_or_else(|| panic!("{name} did not play on: {r}"));
        assert!(
            resumed <= 10.0,
            "{name} took {resumed} s to play on after the origin came back"
        );
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_players_do_not_notice_the_owning_origin_die_when_another_is_up() {
    // Two origins serving the same live stream (same start), each keeping a request log.
    let start = SystemTime::now();
    let logs = [RequestLog::new(), RequestLog::new()];
    let mut origins = Vec::new();
    for log in &logs {
        let opts = OriginOptions {
            requests: Some(log.clone()),
            ..OriginOptions::default()
        };
        origins.push(DemoOrigin::start(opts, start).await);
    }
    let edge = TestEdge::builder(&[origins[0].url(), origins[1].url()])
        .start()
        .await;
    let cases = vec![
        player_case(
            "hls-live",
            "hls",
            &edge.https_url("/live/hls/master.m3u8"),
            20.0,
            60.0,
        ),
        player_case(
            "dash-live",
            "dash",
            &edge.https_url("/live/dash/manifest.mpd"),
            20.0,
            60.0,
        ),
        player_case(
            "shaka-live",
            "shaka",
            &edge.https_url("/live/dash/manifest.mpd"),
            20.0,
            60.0,
        ),
    ];
    let mut browser = Browser::launch("live-failover", cases).await;
    for name in ["hls-live", "dash-live", "shaka-live"] {
        browser.playing(name, 30).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The owner of the live stream: the origin that served the most live manifest requests
    // (the ring gives each object one origin; the players ask for playlists and the MPD most).
    let manifests = |log: &RequestLog| -> Vec<String> {
        log.entries()
            .into_iter()
            .map(|e| e.target)
            .filter(|t| t.starts_with("/live/") && (t.ends_with(".m3u8") || t.ends_with(".mpd")))
            .collect()
    };
    let owner = (0..2).max_by_key(|&i| manifests(&logs[i]).len()).unwrap();
    let owned = manifests(&logs[owner]);
    assert!(!owned.is_empty(), "no origin served a live manifest");
    let live_before = logs[owner]
        .entries()
        .iter()
        .filter(|e| e.target.starts_with("/live/"))
        .count();
    eprintln!("killing origin {owner}: it had served {live_before} live requests");
    let killed = wall_ms();
    origins[owner].kill().await;
    let report = browser.finish(90).await;
    for (name, r) in &report.results {
        assert_played(r, 20.0);
        assert_eq!(
            stalls_since(r, killed),
            0,
            "{name} stalled when the owning origin died: {}",
            r["log"]
        );
    }
    let survivor = 1 - owner;
    let taken_over: Vec<&String> = owned
        .iter()
        .filter(|t| logs[survivor].count(t) > 0)
        .collect();
    assert!(
        !taken_over.is_empty(),
        "the other origin took over the dead one's manifests ({owned:?})"
    );
    edge.stop().await;
}
