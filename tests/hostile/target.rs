//! One canonical request target: signed prefixes cannot be dodged with another spelling of the
//! path, a token's scope cannot be escaped, and the origin receives exactly the path that was
//! checked and keyed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use crate::raw;

const KEY: &str = "hostile-test-key-0123456789";

fn signed_config() -> String {
    format!(
        "signed_urls:\n  - prefix: /vod/\n    keys: [\"{KEY}\"]\n  - prefix: /secure/\n    \
         keys: [\"{KEY}\"]\n    path_segment: true\n"
    )
}

fn token(acl: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    streamedge::signing::make_token(KEY.as_bytes(), acl, exp)
}

/// An origin that answers any path with a body naming it (a lenient origin: whatever it
/// decodes, it serves).
async fn origin() -> TestOrigin {
    TestOrigin::start(|parts| {
        Reply::ok(format!("secret {}", parts.uri.path())).header("cache-control", "max-age=60")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_prefixes_cannot_be_dodged_by_spelling_the_path_differently() {
    let origin = origin().await;
    let edge = TestEdge::start_with(&[origin.url()], &signed_config()).await;
    let attacks = [
        "/%76od/hls/master.m3u8",
        "/%76%6F%64/hls/master.m3u8",
        "/vod%2Fhls/master.m3u8",
        "/vod%2fhls/master.m3u8",
        "//vod/hls/master.m3u8",
        "///vod//hls/master.m3u8",
        "/vod;x/hls/master.m3u8",
        "/vod;/hls/master.m3u8",
        "/%2fvod/hls/master.m3u8",
        "/%2Fvod/hls/master.m3u8",
        "/vod%00/hls/master.m3u8",
        "/vod%5chls/master.m3u8",
        "/vod\\hls/master.m3u8",
        "/./vod/hls/master.m3u8",
        "/x/../vod/hls/master.m3u8",
        "/x/%2e%2e/vod/hls/master.m3u8",
        "/x/.%2E/vod/hls/master.m3u8",
        "/x/%2e./vod/hls/master.m3u8",
        "/vod/%2e/hls/master.m3u8",
        "/%252fvod/hls/master.m3u8",
        "/vod%252Fhls/master.m3u8",
        "/%c0%aevod/hls/master.m3u8",
        "/secure/a.ts",
        "/%73ecure/a.ts",
        "//secure/a.ts",
        "/secure;x/a.ts",
        "/%2fsecure/a.ts",
        "/secure%00/a.ts",
        "/secure%2Fa.ts",
    ];
    for attack in attacks {
        let r = raw::get_path(edge.http, attack).await;
        assert!(
            r.status == 403 || r.status == 400,
            "{attack}: answered {} without a token",
            r.status
        );
        assert_eq!(origin.count(), 0, "{attack} reached the origin");
    }
    // The same attacks over HTTP/2 (the target arrives as :path).
    let client = edge.h2_client();
    for attack in ["/%76od/hls/master.m3u8", "/x/%2e%2e/vod/hls/master.m3u8"] {
        let r = get(&client, &edge.https_url(attack)).await;
        assert_eq!(r.status.as_u16(), 403, "h2 {attack}");
    }
    assert_eq!(origin.count(), 0);

    // A valid token still works, and the origin receives the checked path without it.
    let t = token("/vod/*");
    let r = raw::get_path(edge.http, &format!("/%76od/hls/master.m3u8?token={t}")).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body, b"secret /vod/hls/master.m3u8");
    assert_eq!(origin.last_request().path, "/vod/hls/master.m3u8");
    assert_eq!(origin.last_request().query, None);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_scope_cannot_be_escaped() {
    let origin = origin().await;
    let edge = TestEdge::start_with(&[origin.url()], &signed_config()).await;
    let t = token("/secure/a/*");
    let in_path = t.replace('/', "%2F");
    let attacks = [
        format!("/secure/a/%2e%2e/b/x.ts?token={t}"),
        format!("/secure/a/%2E%2E/b/x.ts?token={t}"),
        format!("/secure/a/.%2e/b/x.ts?token={t}"),
        format!("/secure/a/../b/x.ts?token={t}"),
        format!("/secure/a/..\\b/x.ts?token={t}"),
        format!("/secure/a/..%5cb/x.ts?token={t}"),
        format!("/secure/a/..%2fb/x.ts?token={t}"),
        format!("/secure/a/%2e%2e%2fb/x.ts?token={t}"),
        format!("/secure/a/x/../../b/x.ts?token={t}"),
        format!("/secure/a;/../b/x.ts?token={t}"),
        format!("/secure/a/%252e%252e/b/x.ts?token={t}"),
        format!("/secure/token={in_path}/a/../b/x.ts"),
        format!("/secure/token={in_path}/a/..%2Fb/x.ts"),
        format!("/secure/token={in_path}/a/%2e%2e/b/x.ts"),
    ];
    for attack in &attacks {
        let r = raw::get_path(edge.http, attack).await;
        assert!(
            r.status == 403 || r.status == 400,
            "{attack}: answered {}",
            r.status
        );
    }
    assert_eq!(origin.count(), 0, "no escape reached the origin");

    // In scope, by query and by path segment: the origin gets the clean path.
    let r = raw::get_path(edge.http, &format!("/secure/a/x.ts?token={t}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.last_request().path, "/secure/a/x.ts");
    let r = raw::get_path(edge.http, &format!("/secure/token={in_path}/a/y.ts")).await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.last_request().path, "/secure/a/y.ts");
    assert_eq!(origin.count(), 2);

    edge.stop().await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spellings_of_one_path_are_one_object_and_the_origin_gets_the_canonical_one() {
    let origin = origin().await;
    let edge = TestEdge::start(&origin).await;
    let spellings = [
        "/live/seg%5f1.ts",
        "/live/seg_1.ts",
        "/%6Cive/seg_1.ts",
        "//live//seg_1.ts",
        "/live/./seg_1.ts",
        "/x/../live/seg_1.ts",
        "/x/%2E%2E/live/seg_1.ts",
    ];
    for (i, s) in spellings.iter().enumerate() {
        let r = raw::get_path(edge.http, s).await;
        assert_eq!(r.status, 200, "{s}");
        assert_eq!(r.body, b"secret /live/seg_1.ts", "{s}");
        let cs = r.header("cache-status").unwrap_or_default().to_owned();
        assert_eq!(cs.contains("hit"), i > 0, "{s}: {cs}");
    }
    assert_eq!(origin.count(), 1, "one object, fetched once");
    assert_eq!(origin.last_request().path, "/live/seg_1.ts");

    // Escapes the origin must see stay escaped, in upper case; raw characters that must not
    // appear in a URL are escaped; the query keeps its meaning.
    let r = raw::get_path(edge.http, "/caf%c3%a9/a%3fb%23c/\"x\".ts?q=%7e1%2c2&r=a'b").await;
    assert_eq!(r.status, 200);
    let seen = origin.last_request();
    assert_eq!(seen.path, "/caf%C3%A9/a%3Fb%23c/%22x%22.ts");
    assert_eq!(seen.query.as_deref(), Some("q=~1%2C2&r=a%27b"));

    // Paths that cannot be made unambiguous are refused before any origin sees them.
    let before = origin.count();
    for bad in [
        "/a/../../etc/passwd",
        "/a%zz",
        "/a%2",
        "/a%0d%0aX-Injected:%20yes",
        "/a%7f",
    ] {
        let r = raw::get_path(edge.http, bad).await;
        assert_eq!(r.status, 400, "{bad}");
    }
    assert_eq!(origin.count(), before);

    tokio::time::sleep(Duration::from_millis(10)).await;
    edge.stop().await;
    origin.stop().await;
}
