//! Range requests: single ranges, 416, multipart, ranges on a miss, and an origin's 206
//! (RFC 9110 §14).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use super::bench::*;
use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_ranges_are_served_206_from_a_stored_object() {
    let body = payload(1000, 11);
    let served = body.clone();
    let b =
        Bench::new(move |_| Reply::ok(served.clone()).header("cache-control", "max-age=60")).await;
    b.get("/bytes").await;
    for (spec, a, e) in [
        ("bytes=0-99", 0, 100),
        ("bytes=900-", 900, 1000),
        ("bytes=-100", 900, 1000),
        ("bytes=990-5000", 990, 1000),
        ("bytes=-5000", 0, 1000),
        ("bytes=500-500", 500, 501),
    ] {
        let r = b.get_with("/bytes", &[("range", spec)]).await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{spec}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {a}-{}/1000", e - 1).as_str()),
            "{spec}"
        );
        assert_eq!(
            r.header("content-length"),
            Some((e - a).to_string().as_str())
        );
        assert_eq!(r.body, body.slice(a..e), "{spec}");
        assert_hit(&r, spec);
    }
    // Invalid syntax or another unit: ignored, the whole object.
    for spec in ["bytes=5-1", "items=0-1", "bytes=x-y"] {
        let r = b.get_with("/bytes", &[("range", spec)]).await;
        assert_eq!(r.status, StatusCode::OK, "{spec}");
        assert_eq!(r.body, body);
    }
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsatisfiable_ranges_are_416_with_the_length() {
    let b =
        Bench::new(|_| Reply::ok(payload(1000, 12)).header("cache-control", "max-age=60")).await;
    // On a miss (answered from the fill's head) and from the store.
    for path in ["/u1", "/u1", "/u2"] {
        for spec in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
            let r = b.get_with(path, &[("range", spec)]).await;
            assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{path} {spec}");
            assert_eq!(r.header("content-range"), Some("bytes */1000"), "{spec}");
            assert!(r.body.is_empty());
        }
    }
    assert_eq!(
        b.origin.count(),
        2,
        "the 416s did not stop the objects being stored"
    );
    b.stop().await;
}

/// Splits a `multipart/byteranges` body into (Content-Range, bytes) parts.
fn multipart_parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("a boundary")
        .trim_matches('"');
    let delimiter = format!("\r\n--{boundary}");
    let text = body.to_vec();
    let mut parts = Vec::new();
    let mut pos = 0;
    let find = |from: usize, needle: &[u8]| {
        text[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + from)
    };
    while let Some(start) = find(pos, delimiter.as_bytes()) {
        let after = start + delimiter.len();
        if text[after..].starts_with(b"--") {
            break;
        }
        let head_end = find(after, b"\r\n\r\n").expect("part head");
        let head = String::from_utf8_lossy(&text[after..head_end]).to_string();
        let range = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("content-range:")
                    .then(|| l["content-range:".len()..].trim().to_owned())
            })
            .expect("Content-Range in the part");
        let data_start = head_end + 4;
        let data_end = find(data_start, delimiter.as_bytes()).expect("next delimiter");
        parts.push((range, text[data_start..data_end].to_vec()));
        pos = data_end;
    }
    parts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiple_ranges_are_multipart_from_the_store_and_whole_on_a_miss() {
    let body = Bytes::from("abcdefghijklmnopqrstuvwxyz".repeat(40));
    let served = body.clone();
    let b = Bench::new(move |_| {
        Reply::ok(served.clone())
            .header("cache-control", "max-age=60")
            .header("content-type", "text/plain")
    })
    .await;
    let ranges = [("range", "bytes=0-9,500-509,-5")];
    let miss = b.get_with("/multi", &ranges).await;
    assert_eq!(
        miss.status,
        StatusCode::OK,
        "a miss answers multiple ranges with the whole"
    );
    assert_eq!(miss.body, body);

    let r = b.get_with("/multi", &ranges).await;
    assert_hit(&r, "multipart from the store");
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    let ct = r.header("content-type").unwrap().to_owned();
    assert!(ct.starts_with("multipart/byteranges"), "{ct}");
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    let parts = multipart_parts(&ct, &r.body);
    assert_eq!(
        parts,
        vec![
            ("bytes 0-9/1040".to_owned(), body[0..10].to_vec()),
            ("bytes 500-509/1040".to_owned(), body[500..510].to_vec()),
            ("bytes 1035-1039/1040".to_owned(), body[1035..1040].to_vec()),
        ]
    );
    // Overlapping ranges coalesce into one.
    let r = b.get_with("/multi", &[("range", "bytes=0-5,3-9")]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.header("content-range"), Some("bytes 0-9/1040"));
    assert_eq!(r.body, body.slice(0..10));
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_on_a_miss_streams_the_slice_as_its_bytes_arrive() {
    // The origin sends the first half at once and the second half two seconds later: slices of
    // the first half must be complete while the object is still being filled (not stored).
    const LEN: usize = 256 << 10;
    let body = payload(LEN, 13);
    let served = body.clone();
    let b = Bench::new(move |_| {
        Reply::ok(served.clone())
            .header("cache-control", "max-age=60")
            .trickle(LEN / 2, Duration::from_secs(2))
    })
    .await;
    let ranged = |spec: &str| {
        send(
            b.client
                .get(b.edge.http_url("/slow.bin"))
                .header("range", spec),
        )
    };
    let (first, mid) = tokio::join!(ranged("bytes=0-1023"), ranged("bytes=65536-66559"));
    let in_flight = b
        .get_with("/slow.bin", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(
        in_flight.status,
        StatusCode::GATEWAY_TIMEOUT,
        "the slices were answered before the whole object arrived"
    );
    for (r, (a, e)) in [(first, (0, 1024)), (mid, (65_536, 66_560))] {
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {a}-{}/{LEN}", e - 1).as_str())
        );
        assert_eq!(r.body, body.slice(a..e));
    }
    // A slice of the second half joins the same fill and ends when its bytes arrive.
    let late = ranged("bytes=200000-200999").await;
    assert_eq!(late.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(late.body, body.slice(200_000..201_000));
    assert_eq!(b.origin.count(), 1, "one fill for every range");
    let origin_range = b.origin.last_request();
    // A range on a miss asks the origin for the slice it falls in (see `cache.slice`); this
    // origin ignores ranges and answers the whole object, which is streamed and stored whole.
    assert_eq!(
        header(&origin_range, "range"),
        Some("bytes=0-4194303"),
        "the fill asks for the slice the range falls in"
    );

    // The whole object was stored: a later range is a hit.
    within(5, "the fill to be stored", async {
        loop {
            let r = b
                .get_with("/slow.bin", &[("cache-control", "only-if-cached")])
                .await;
            if r.status == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let r = b.get_with("/slow.bin", &[("range", "bytes=-10")]).await;
    assert_hit(&r, "range from the stored object");
    assert_eq!(r.body, body.slice(LEN - 10..));
    assert_eq!(b.origin.count(), 1);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_206_is_never_stored_as_the_whole_object() {
    let b = Bench::new(|_| {
        Reply::ok("0123456789")
            .status(206)
            .header("content-range", "bytes 0-9/100")
            .header("cache-control", "max-age=60")
    })
    .await;
    for _ in 0..2 {
        let r = b.get("/partial").await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
        assert_not_stored(&r, "origin 206");
    }
    assert_eq!(b.origin.count(), 2);
    let r = b
        .get_with("/partial", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(
        r.status,
        StatusCode::GATEWAY_TIMEOUT,
        "nothing stored for the key"
    );
    b.stop().await;
}
