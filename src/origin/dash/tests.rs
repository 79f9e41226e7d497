//! The dynamic views of MPDs: the demo's, Period-per-loop windows, `$Number$` aliases and the
//! continuous timeline, what cannot loop, and the XML scanner under them.

use super::render::LiveManifest;
use super::template::{Rep, TemplateAttrs, alias_for};
use super::xml::{scan, unescape};
use super::*;

const S: Micros = clock::MICROS_PER_SEC;

const STATIC_MPD: &str = include_str!("../media/cmaf/manifest.mpd");

fn date(us: Micros) -> String {
    format!("t{us}")
}

fn live(mpd: &LiveMpd, elapsed: Micros, window: usize) -> LiveManifest {
    mpd.live(elapsed, window, "EPOCH", date)
}

fn periods(body: &str) -> Vec<(String, String)> {
    let tags = scan(body).unwrap();
    tags.iter()
        .filter(|t| t.local_name() == "Period" && t.kind == Kind::Open)
        .map(|t| {
            (
                t.attr("id").unwrap().to_owned(),
                t.attr("start").unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn demo_mpd_goes_live() {
    let mpd = LiveMpd::parse(STATIC_MPD, "dash/").unwrap();
    assert_eq!(mpd.loop_duration(), 12 * S);
    assert_eq!(mpd.segment, 2 * S);
    assert_eq!(mpd.preroll(6), 12 * S);
    assert_eq!(mpd.preroll(7), 24 * S);

    let m = live(&mpd, 30 * S, 6);
    let root = &scan(&m.body).unwrap()[0];
    assert_eq!(root.attr("type"), Some("dynamic"));
    assert_eq!(root.attr("availabilityStartTime"), Some("EPOCH"));
    assert_eq!(root.attr("timeShiftBufferDepth"), Some("PT12S"));
    assert_eq!(root.attr("suggestedPresentationDelay"), Some("PT6S"));
    assert_eq!(root.attr("minimumUpdatePeriod"), Some("PT2S"));
    assert_eq!(root.attr("minBufferTime"), Some("PT4.0S"));
    assert_eq!(
        root.attr("profiles"),
        Some("urn:mpeg:dash:profile:isoff-live:2011")
    );
    assert_eq!(root.attr("mediaPresentationDuration"), None);
    // Window [18 s, 30 s]: loops 1 and 2.
    assert_eq!((m.first_loop, m.last_loop), (1, 2));
    assert_eq!(
        periods(&m.body),
        [
            ("loop-1".into(), "PT12S".into()),
            ("loop-2".into(), "PT24S".into())
        ]
    );
    // Loop 2 began at 24 s; loop 0 left the window at 24 s too.
    assert_eq!(m.published_at, 24 * S);
    assert_eq!(root.attr("publishTime"), Some("t24000000"));
    // Each Period is a verbatim copy: same templates (one per
    // Representation: two video, one audio), no offset added.
    assert_eq!(
        m.body
            .matches("media=\"seg-$RepresentationID$-$Number%03d$.m4s\"")
            .count(),
        6
    );
    assert_eq!(m.body.matches("startNumber=\"1\"").count(), 6);
    assert!(!m.body.contains("presentationTimeOffset"));
    assert!(m.body.contains("<ServiceDescription id=\"0\">"));
    assert!(m.body.trim_end().ends_with("</MPD>"));
    assert!(
        m.body
            .starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<MPD ")
    );
}

#[test]
fn periods_follow_the_time_shift_window() {
    let mpd = LiveMpd::parse(STATIC_MPD, "").unwrap();
    let ids = |e: Micros, w: usize| {
        let m = live(&mpd, e, w);
        (m.first_loop, m.last_loop, m.published_at)
    };
    assert_eq!(ids(12 * S, 6), (0, 1, 12 * S));
    assert_eq!(ids(23 * S, 6), (0, 1, 12 * S));
    assert_eq!(ids(24 * S, 6), (1, 2, 24 * S));
    // Short buffer (4 s): loop 1 alone from 28 s.
    assert_eq!(ids(27 * S, 2), (1, 2, 24 * S));
    assert_eq!(ids(28 * S, 2), (2, 2, 28 * S));
    // Long buffer (40 s) at 100 s: [60, 100] covers loops 5..=8, and
    // loop 4 left it just now.
    assert_eq!(ids(100 * S, 20), (5, 8, 100 * S));
    // Before the buffer has filled (no pre-roll): from loop 0.
    assert_eq!(ids(5 * S, 6), (0, 0, 0));
    let m = live(&mpd, 3600 * S, 6);
    assert_eq!(periods(&m.body).last().unwrap().1, "PT3600S");
}

#[test]
fn aliases_map_numbers_to_files_and_loops() {
    let mpd = LiveMpd::parse(STATIC_MPD, "dash/").unwrap();
    let a = mpd.aliases();
    // In document order: the video AdaptationSet's two Representations, then audio.
    assert_eq!(a.len(), 3);
    assert_eq!(a[0].init.as_deref(), Some("dash/init-0.m4s"));
    assert_eq!(a[1].init.as_deref(), Some("dash/init-2.m4s"));
    assert_eq!(a[2].init.as_deref(), Some("dash/init-1.m4s"));
    assert_eq!(
        a[2].keys().collect::<Vec<_>>(),
        (1..=6)
            .map(|i| format!("dash/seg-1-00{i}.m4s"))
            .collect::<Vec<_>>()
    );
    let resolve = |k: &str| a.iter().find_map(|a| a.resolve(k));
    let file = |k: &str, l| Some((k.to_owned(), l));
    assert_eq!(resolve("dash/seg-0-003.m4s"), file("dash/seg-0-003.m4s", 0));
    assert_eq!(resolve("dash/seg-0-006.m4s"), file("dash/seg-0-006.m4s", 0));
    assert_eq!(resolve("dash/seg-0-007.m4s"), file("dash/seg-0-001.m4s", 1));
    assert_eq!(resolve("dash/seg-2-008.m4s"), file("dash/seg-2-002.m4s", 1));
    assert_eq!(
        resolve("dash/seg-1-1234.m4s"),
        file("dash/seg-1-004.m4s", 205)
    );
    assert_eq!(resolve("dash/seg-0-000.m4s"), None); // before startNumber
    assert_eq!(resolve("dash/seg-0-07.m4s"), None); // narrower than %03d
    assert_eq!(resolve("dash/seg-3-007.m4s"), None); // no such Representation
    assert_eq!(resolve("seg-0-007.m4s"), None);
    assert_eq!(resolve("dash/seg-0-99999999999999999999999.m4s"), None);
    assert_eq!(resolve("dash/seg-0-+07.m4s"), None);
    assert_eq!(resolve("dash/init-0.m4s"), None);
}

#[test]
fn continuous_timeline() {
    let mut mpd = LiveMpd::parse(STATIC_MPD, "dash/").unwrap();
    assert!(mpd.can_be_continuous());
    mpd.use_continuous_timeline();
    let a = live(&mpd, 30 * S, 6);
    let b = live(&mpd, 3600 * S, 6);
    // Nothing in it depends on time: players compute the live edge.
    assert_eq!(a, b);
    assert_eq!((a.first_loop, a.last_loop, a.published_at), (0, 0, 0));
    assert_eq!(mpd.loops(3600 * S, 6), (0, 0));
    assert_eq!(periods(&a.body), [("live".into(), "PT0S".into())]);
    let tags = scan(&a.body).unwrap();
    let period = tags.iter().find(|t| t.local_name() == "Period").unwrap();
    assert_eq!(period.attr("duration"), None);
    assert_eq!(tags[0].attr("type"), Some("dynamic"));
    assert_eq!(tags[0].attr("timeShiftBufferDepth"), Some("PT12S"));
    assert_eq!(a.body.matches("startNumber=\"1\"").count(), 3);
}

#[test]
fn continuity_needs_every_representation_numbered_exactly() {
    let mpd = |inner: &str| {
        format!(
            "<MPD type=\"static\" mediaPresentationDuration=\"PT10S\"><Period>{inner}</Period></MPD>"
        )
    };
    let numbered = "<AdaptationSet><SegmentTemplate media=\"$RepresentationID$-$Number$.m4s\" \
                    initialization=\"$RepresentationID$.mp4\" duration=\"2\"/>\
                    <Representation id=\"a\"/><Representation id=\"b\"/></AdaptationSet>";
    let m = LiveMpd::parse(&mpd(numbered), "").unwrap();
    assert!(m.can_be_continuous());
    assert_eq!(
        m.aliases()[1].resolve("b-6.m4s"),
        Some(("b-1.m4s".into(), 1))
    );
    assert_eq!(m.aliases()[1].init.as_deref(), Some("b.mp4"));
    // 10 s in 3 s segments does not tile.
    let uneven = numbered.replace("duration=\"2\"", "duration=\"3\"");
    assert!(
        !LiveMpd::parse(&mpd(&uneven), "")
            .unwrap()
            .can_be_continuous()
    );
    // A Representation the template scheme does not cover.
    let mixed = numbered.replace(
        "</AdaptationSet>",
        "</AdaptationSet><AdaptationSet><Representation id=\"c\"><BaseURL>c.mp4</BaseURL></Representation></AdaptationSet>",
    );
    assert!(
        !LiveMpd::parse(&mpd(&mixed), "")
            .unwrap()
            .can_be_continuous()
    );
    let no_init = numbered.replace("initialization=\"$RepresentationID$.mp4\"", "");
    assert!(
        !LiveMpd::parse(&mpd(&no_init), "")
            .unwrap()
            .can_be_continuous()
    );
}

#[test]
fn alias_template_forms() {
    let rep = Rep {
        id: "v1".into(),
        bandwidth: "5000".into(),
        template: TemplateAttrs::default(),
    };
    let t = |media: &str| TemplateAttrs {
        media: Some(media.into()),
        initialization: None,
        duration: Some(4),
        timescale: Some(1),
        start_number: Some(0),
    };
    let a = alias_for(&rep, &t("$Bandwidth$/$$x$Number$.m4s"), "d/", 10 * S).unwrap();
    assert_eq!(a.count, 3);
    assert!(!a.exact);
    assert_eq!(
        a.resolve("d/5000/$x4.m4s"),
        Some(("d/5000/$x1.m4s".into(), 1))
    );
    for bad in [
        "$RepresentationID$-$Time$.m4s",
        "$Number$-$Number$",
        "a$Number",
        "../$Number$.m4s",
        "http://x/$Number$.m4s",
        "/abs/$Number$.m4s",
        "$Number%5d$.m4s",
        "a%20b-$Number$.m4s",
        "plain.mp4",
    ] {
        assert!(alias_for(&rep, &t(bad), "", S).is_none(), "{bad}");
    }
}

#[test]
fn refuses_what_does_not_loop() {
    let one = |body: &str| {
        format!("<MPD type=\"static\" mediaPresentationDuration=\"PT10S\">{body}</MPD>")
    };
    assert!(LiveMpd::parse(&one("<Period><AdaptationSet/></Period>"), "").is_some());
    assert!(LiveMpd::parse(&one("<Period/>"), "").is_none());
    assert!(LiveMpd::parse(&one("<Period></Period><Period></Period>"), "").is_none());
    assert!(LiveMpd::parse(&one(""), "").is_none());
    assert!(LiveMpd::parse(&one("<Period><A></Period>"), "").is_none());
    let dynamic = "<MPD type=\"dynamic\"><Period><A/></Period></MPD>";
    assert!(LiveMpd::parse(dynamic, "").is_none());
    let no_duration = "<MPD><Period><A/></Period></MPD>";
    assert!(LiveMpd::parse(no_duration, "").is_none());
    let period_duration = "<MPD><Period duration=\"PT4S\"><A/></Period></MPD>";
    assert_eq!(
        LiveMpd::parse(period_duration, "").unwrap().loop_duration(),
        4 * S
    );
    for garbage in [
        "",
        "<",
        "<MPD",
        "<MPD a=b>",
        "<MPD a=\"b>",
        "<?xml",
        "text",
        "<MPD></X>",
    ] {
        assert!(LiveMpd::parse(garbage, "").is_none(), "{garbage}");
    }
}

#[test]
fn timeline_durations_and_base_urls() {
    let mpd = "<MPD type=\"static\" mediaPresentationDuration=\"PT8S\"><BaseURL>x/</BaseURL><Period>\
               <AdaptationSet><SegmentTemplate timescale=\"90000\" media=\"$Number$.ts\">\
               <SegmentTimeline><S d=\"360000\" r=\"1\"/></SegmentTimeline></SegmentTemplate>\
               <Representation id=\"a\"/></AdaptationSet></Period></MPD>";
    let m = LiveMpd::parse(mpd, "").unwrap();
    assert_eq!(m.segment, 4 * S);
    assert!(m.aliases().is_empty());
    let body = live(&m, 20 * S, 3).body;
    assert!(body.contains(
        "<BaseURL>x/</BaseURL>\n<Period id=\"loop-1\" start=\"PT8S\" duration=\"PT8S\">"
    ));
}

#[test]
fn scanner_keeps_comments_and_quotes_out() {
    let tags = scan("<?xml?><!-- <X> --><A b='1>2' c=\"&amp;\"><![CDATA[<Y>]]><B/></A>").unwrap();
    let names: Vec<_> = tags.iter().map(|t| (t.name, t.kind)).collect();
    assert_eq!(
        names,
        [("A", Kind::Open), ("B", Kind::Empty), ("A", Kind::Close)]
    );
    assert_eq!(tags[0].attr("b"), Some("1>2"));
    assert_eq!(unescape(tags[0].attr("c").unwrap()), "&");
}
