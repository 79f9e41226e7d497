use super::*;
use http::HeaderValue;

fn cfg() -> CacheConfig {
    crate::config::parse(
        "listen:\n  http: \"127.0.0.1:1\"\norigins:\n  - url: \"http://127.0.0.1:2\"\n",
    )
    .unwrap()
    .cache
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// One exchange to decide on: a response to a request without credentials, received now,
/// unless a test says otherwise.
struct Case {
    req: HeaderMap,
    resp: HeaderMap,
    status: u16,
    kind: ContentKind,
    request_time: SystemTime,
    response_time: SystemTime,
    media: Option<MediaTiming>,
}

fn case(resp: &[(&str, &str)], kind: ContentKind) -> Case {
    let now = SystemTime::now();
    Case {
        req: HeaderMap::new(),
        resp: headers(resp),
        status: 200,
        kind,
        request_time: now,
        response_time: now,
        media: None,
    }
}

impl Case {
    fn decide(&self) -> Result<Freshness, Refusal> {
        decide(
            &Exchange {
                request_headers: &self.req,
                status: StatusCode::from_u16(self.status).unwrap(),
                headers: &self.resp,
                kind: self.kind,
                request_time: self.request_time,
                response_time: self.response_time,
                received_at: Instant::now(),
                media: self.media,
            },
            &cfg(),
        )
        .store
    }
}

fn decide_for(status: u16, resp: &[(&str, &str)], kind: ContentKind) -> Result<Freshness, Refusal> {
    Case {
        status,
        ..case(resp, kind)
    }
    .decide()
}

#[test]
fn parses_directives_case_insensitively_with_quotes() {
    let cc =
        CacheControl::parse("Max-Age=60, S-MAXAGE=\"120\", no-cache=\"Set-Cookie, X\", Public");
    assert_eq!(cc.max_age, Some(60));
    assert_eq!(cc.s_maxage, Some(120));
    assert!(cc.no_cache && cc.public);
    assert!(!cc.private);
}

#[test]
fn invalid_and_conflicting_values_are_stale() {
    assert_eq!(CacheControl::parse("max-age=abc").max_age, Some(0));
    assert_eq!(
        CacheControl::parse("max-age=60, max-age=120").max_age,
        Some(0)
    );
    assert_eq!(
        CacheControl::parse("max-age=60, max-age=60").max_age,
        Some(60)
    );
    assert_eq!(CacheControl::parse("max-age").max_age, Some(0));
    assert_eq!(
        CacheControl::parse("max-age=99999999999999999999").max_age,
        Some(DELTA_MAX)
    );
}

#[test]
fn precedence_s_maxage_max_age_expires() {
    let f = decide_for(
        200,
        &[("cache-control", "max-age=10, s-maxage=20")],
        ContentKind::Other,
    )
    .unwrap();
    assert_eq!(f.lifetime, Duration::from_secs(20));
    assert!(f.must_revalidate, "s-maxage implies proxy-revalidate");
    let date = httpdate::fmt_http_date(SystemTime::now());
    let exp = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(100));
    let f = decide_for(
        200,
        &[
            ("cache-control", "max-age=10"),
            ("date", &date),
            ("expires", &exp),
        ],
        ContentKind::Other,
    )
    .unwrap();
    assert_eq!(f.lifetime, Duration::from_secs(10));
    let f = decide_for(
        200,
        &[("date", &date), ("expires", &exp)],
        ContentKind::Other,
    )
    .unwrap();
    assert!((99..=100).contains(&f.lifetime.as_secs()));
    assert_eq!(
        decide_for(200, &[("expires", "0")], ContentKind::Other),
        Err(Refusal::NoFreshness)
    );
}

#[test]
fn targeted_field_wins() {
    let f = decide_for(
        200,
        &[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=30"),
        ],
        ContentKind::Other,
    )
    .unwrap();
    assert_eq!(f.lifetime, Duration::from_secs(30));
}

#[test]
fn refusals() {
    assert_eq!(
        decide_for(
            200,
            &[("cache-control", "no-store, max-age=60")],
            ContentKind::Segment
        ),
        Err(Refusal::NoStore)
    );
    assert_eq!(
        decide_for(
            200,
            &[("cache-control", "private, max-age=60")],
            ContentKind::Segment
        ),
        Err(Refusal::Private)
    );
    assert_eq!(
        decide_for(
            200,
            &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
            ContentKind::Segment
        ),
        Err(Refusal::SetCookie)
    );
    assert_eq!(
        decide_for(
            200,
            &[("cache-control", "max-age=60"), ("vary", "*")],
            ContentKind::Segment
        ),
        Err(Refusal::VaryStar)
    );
    assert_eq!(
        decide_for(
            206,
            &[("cache-control", "max-age=60")],
            ContentKind::Segment
        ),
        Err(Refusal::Status)
    );
    assert_eq!(
        decide_for(200, &[], ContentKind::Other),
        Err(Refusal::NoFreshness)
    );
    assert!(Refusal::Private.forbids_sharing());
    assert!(!Refusal::NoFreshness.forbids_sharing());
}

#[test]
fn defaults_by_kind_and_negative() {
    let c = cfg();
    assert_eq!(
        decide_for(200, &[], ContentKind::Segment).unwrap().lifetime,
        c.ttl.segment
    );
    assert_eq!(
        decide_for(200, &[], ContentKind::Manifest)
            .unwrap()
            .lifetime,
        c.ttl.manifest
    );
    assert_eq!(
        decide_for(404, &[], ContentKind::Segment).unwrap().lifetime,
        c.ttl.negative
    );
    assert_eq!(
        decide_for(500, &[], ContentKind::Segment),
        Err(Refusal::NoFreshness)
    );
    assert_eq!(
        decide_for(503, &[("cache-control", "max-age=5")], ContentKind::Segment)
            .unwrap()
            .lifetime,
        Duration::from_secs(5)
    );
}

#[test]
fn heuristic_from_last_modified() {
    let now = SystemTime::now();
    let lm = httpdate::fmt_http_date(now - Duration::from_secs(10_000));
    let date = httpdate::fmt_http_date(now);
    let f = decide_for(
        200,
        &[("last-modified", &lm), ("date", &date)],
        ContentKind::Other,
    )
    .unwrap();
    assert!(
        (999..=1001).contains(&f.lifetime.as_secs()),
        "{:?}",
        f.lifetime
    );
    // Not for statuses outside the heuristic set.
    assert_eq!(
        decide_for(302, &[("last-modified", &lm)], ContentKind::Other),
        Err(Refusal::NoFreshness)
    );
}

#[test]
fn age_arithmetic() {
    let now = SystemTime::now();
    let date = httpdate::fmt_http_date(now - Duration::from_secs(10));
    let resp = [
        ("cache-control", "max-age=100"),
        ("age", "30"),
        ("date", &date),
    ];
    let f = Case {
        request_time: now - Duration::from_secs(2),
        response_time: now,
        ..case(&resp, ContentKind::Other)
    }
    .decide()
    .unwrap();
    // max(apparent 10, age 30 + delay 2) = 32
    assert_eq!(f.initial_age.as_secs(), 32);
    assert!(f.is_fresh(f.stored_at));
    assert_eq!(f.ttl_secs(f.stored_at), 68);
    assert_eq!(f.ttl_secs(f.stored_at + Duration::from_millis(68_200)), -1);
    assert_eq!(f.ttl_secs(f.stored_at + Duration::from_secs(68)), -1);
    assert_eq!(f.ttl_secs(f.stored_at + Duration::from_millis(70_500)), -3);
    assert!(!f.is_fresh(f.stored_at + Duration::from_secs(69)));
}

#[test]
fn date_resolution_is_not_age() {
    // Received 0.9 s into the second the origin stamped: not 0.9 s old.
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let response_time = date + Duration::from_millis(900);
    let date = httpdate::fmt_http_date(date);
    let resp = [("cache-control", "max-age=1"), ("date", &date)];
    let f = Case {
        request_time: response_time,
        response_time,
        ..case(&resp, ContentKind::Manifest)
    }
    .decide()
    .unwrap();
    assert_eq!(f.initial_age, Duration::ZERO);
    assert!(f.is_fresh(f.stored_at + Duration::from_millis(900)));
}

#[test]
fn authorization_needs_explicit_permission() {
    let run = |cc: &str| {
        Case {
            req: headers(&[("authorization", "Bearer x")]),
            ..case(&[("cache-control", cc)], ContentKind::Segment)
        }
        .decide()
    };
    assert_eq!(run("max-age=60"), Err(Refusal::Authorization));
    assert!(run("max-age=60, public").is_ok());
    assert!(run("s-maxage=60").is_ok());
}

#[test]
fn edge_header_beats_cdn_cache_control() {
    let f = decide_for(
        200,
        &[
            ("cache-control", "max-age=1"),
            ("cdn-cache-control", "max-age=30"),
            ("streamedge-cache-control", "max-age=300"),
        ],
        ContentKind::Other,
    )
    .unwrap();
    assert_eq!(f.lifetime, Duration::from_secs(300));
}

#[test]
fn stale_defaults_by_kind() {
    let c = cfg();
    let f = decide_for(
        200,
        &[("cache-control", "max-age=10")],
        ContentKind::Segment,
    )
    .unwrap();
    assert_eq!(f.stale_if_error, c.stale_if_error.segment);
    let f = decide_for(
        200,
        &[("cache-control", "max-age=10, stale-if-error=5")],
        ContentKind::Segment,
    )
    .unwrap();
    assert_eq!(f.stale_if_error, Duration::from_secs(5));
}

#[test]
fn live_manifest_cap() {
    let cc = "max-age=60, stale-while-revalidate=60, stale-if-error=600";
    let f = Case {
        media: Some(MediaTiming {
            lifetime: Some(Duration::from_secs(1)),
            cap: Some(Duration::from_secs(2)),
        }),
        ..case(&[("cache-control", cc)], ContentKind::Manifest)
    }
    .decide()
    .unwrap();
    assert_eq!(
        f.lifetime,
        Duration::from_secs(2),
        "explicit max-age capped at the target duration"
    );
    let t = f.stored_at + Duration::from_secs(3);
    assert!(
        !f.within_cap(t),
        "past the cap: not served in normal operation"
    );
    assert!(!f.may_serve_stale_while_revalidate(t));
    assert!(
        f.may_serve_stale_on_error(t),
        "in place of a failed origin, within stale-if-error, the cap does not apply"
    );
    // stale-if-error=600 from the origin, but a live manifest gets at most the configured
    // manifest window (10 s by default) past its 2 s.
    assert_eq!(f.stale_if_error, Duration::from_secs(10));
    assert!(f.may_serve_stale_on_error(f.stored_at + Duration::from_secs(12)));
    assert!(!f.may_serve_stale_on_error(f.stored_at + Duration::from_secs(13)));
    assert_eq!(
        f.retention(true, Duration::from_secs(600)),
        Duration::from_secs(12),
        "kept for as long as it may stand in for a failed origin"
    );
}

#[test]
fn stale_windows() {
    let f = decide_for(
        200,
        &[(
            "cache-control",
            "max-age=10, stale-while-revalidate=20, stale-if-error=60",
        )],
        ContentKind::Other,
    )
    .unwrap();
    let t = f.stored_at + Duration::from_secs(15);
    assert!(!f.is_fresh(t));
    assert!(f.may_serve_stale_while_revalidate(t));
    assert!(!f.may_serve_stale_while_revalidate(f.stored_at + Duration::from_secs(31)));
    assert!(f.may_serve_stale_on_error(f.stored_at + Duration::from_secs(60)));
    let f = decide_for(
        200,
        &[(
            "cache-control",
            "max-age=10, must-revalidate, stale-if-error=60",
        )],
        ContentKind::Other,
    )
    .unwrap();
    assert!(!f.may_serve_stale_on_error(f.stored_at + Duration::from_secs(20)));
}

#[test]
fn retention_never_passes_the_age_an_object_may_be_served_at() {
    let mut f = decide_for(
        200,
        &[
            ("cache-control", "max-age=60, stale-if-error=3600"),
            ("etag", "\"v\""),
        ],
        ContentKind::Segment,
    )
    .unwrap();
    let long = Duration::from_secs(600);
    assert_eq!(f.retention(true, long), Duration::from_secs(60 + 3600));
    // A forwarding node's copy: served for two seconds at most, kept no longer.
    f.limit_age(f.initial_age + Duration::from_secs(2));
    assert_eq!(f.retention(true, long), Duration::from_secs(2));
    // A copy fresh for less than its cap: kept no longer than the cap either.
    let mut g = decide_for(
        200,
        &[("cache-control", "max-age=1, stale-if-error=3600")],
        ContentKind::Segment,
    )
    .unwrap();
    g.limit_age(g.initial_age + Duration::from_secs(2));
    assert_eq!(g.stale_if_error, Duration::from_secs(1));
    assert_eq!(g.retention(true, long), Duration::from_secs(2));
    assert!(
        !f.may_serve_stale_on_error(f.stored_at + Duration::from_secs(3)),
        "not even in place of a failed origin"
    );
}
