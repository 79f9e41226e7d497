use super::*;

const MINIMAL: &str =
    "listen:\n  http: \"127.0.0.1:8080\"\norigins:\n  - url: \"http://127.0.0.1:9000\"\n";

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.listen.http, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(c.cache.max_size, 1 << 30);
    assert_eq!(c.cache.max_object_size, 64 << 20);
    assert_eq!(c.origins.len(), 1);
    assert_eq!(c.origins[0].name, "127.0.0.1:9000");
    assert_eq!(c.origins[0].weight, 1);
    assert!(c.admin.is_none());
}

#[test]
fn sizes_and_durations() {
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert_eq!(parse_size("64MiB"), Ok(64 << 20));
    assert_eq!(parse_size("512KiB"), Ok(512 << 10));
    assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
    assert_eq!(parse_size("1024"), Ok(1024));
    assert!(parse_size("lots").is_err());
    assert!(parse_size("12 parsecs").is_err());
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    assert!(parse_duration("10").is_err());
    assert!(parse_duration("10 fortnights").is_err());
    assert_eq!(Size(1 << 30).to_string(), "1GiB");
    assert_eq!(Size(1000).to_string(), "1000B");
}

#[test]
fn unknown_key_names_field_line_and_column() {
    let y = "listen:\n  http: \"127.0.0.1:8080\"\ncache:\n  max_size: 1GiB\n  max_sise: 2GiB\norigins:\n  - url: \"http://127.0.0.1:9000\"\n";
    let e = parse(y).unwrap_err();
    assert_eq!(e.line, 5, "{e}");
    assert_eq!(e.field, "cache.max_sise", "{e}");
    assert!(e.message.contains("max_sise"), "{e}");
    assert!(e.to_string().starts_with("5:3: cache.max_sise:"), "{e}");
}

#[test]
fn bad_size_names_field() {
    let y = "listen:\n  http: \"127.0.0.1:8080\"\ncache:\n  max_size: lots\norigins:\n  - url: \"http://127.0.0.1:9000\"\n";
    let e = parse(y).unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (4, "cache.max_size"), "{e}");
    assert!(e.message.contains("lots"), "{e}");
}

#[test]
fn bad_origin_url_names_list_item() {
    let y = "listen:\n  http: \"127.0.0.1:8080\"\norigins:\n  - url: \"http://127.0.0.1:9000\"\n  - url: \"ftp://x\"\n    weight: 2\n";
    let e = parse(y).unwrap_err();
    assert_eq!(e.line, 5, "{e}");
    assert_eq!(e.field, "origins[1].url", "{e}");
    assert!(e.message.contains("http or https"), "{e}");
    let y = "listen:\n  http: \"127.0.0.1:8080\"\norigins:\n  - url: \"http://127.0.0.1:9000\"\n    weight: 0\n";
    let e = parse(y).unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (5, "origins[0].weight"), "{e}");
}

#[test]
fn https_needs_tls() {
    let y = "listen:\n  https: \"127.0.0.1:8443\"\norigins:\n  - url: \"http://127.0.0.1:9000\"\n";
    let e = parse(y).unwrap_err();
    assert_eq!(e.field, "listen.https");
    assert!(e.line > 0);
}

#[test]
fn bad_socket_address_and_type_errors_are_located() {
    let y = "listen:\n  http: \"localhost:80\"\norigins:\n  - url: \"http://127.0.0.1:9000\"\n";
    let e = parse(y).unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (2, "listen.http"), "{e}");
    let y = "listen:\n  http: \"127.0.0.1:8080\"\nfetch:\n  max_attempts: many\norigins:\n  - url: \"http://127.0.0.1:9000\"\n";
    let e = parse(y).unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (4, "fetch.max_attempts"), "{e}");
}

#[test]
fn object_size_must_fit_cache() {
    let y = "listen:\n  http: \"127.0.0.1:8080\"\ncache:\n  max_size: 1MiB\n  max_object_size: 2MiB\norigins:\n  - url: \"http://127.0.0.1:9000\"\n";
    let e = parse(y).unwrap_err();
    assert_eq!(
        (e.line, e.field.as_str()),
        (5, "cache.max_object_size"),
        "{e}"
    );
}

#[test]
fn field_path_from_indentation() {
    let y = "a:\n  b:\n    c: 1\n  d:\n    - x: 1\n      y: 2\n    - x: 3\n";
    assert_eq!(field_path_at(y, 3), "a.b.c");
    assert_eq!(field_path_at(y, 5), "a.d[0].x");
    assert_eq!(field_path_at(y, 6), "a.d[0].y");
    assert_eq!(field_path_at(y, 7), "a.d[1].x");
    assert_eq!(field_path_at(y, 99), "");
}

/// The documented example must stay valid and mention every section.
#[test]
fn documented_example_parses() {
    let text = include_str!("../../conf/edge.yaml");
    let c = parse(text).unwrap_or_else(|e| panic!("conf/edge.yaml: {e}"));
    assert_eq!(c.origins.len(), 2);
    assert_eq!(c.origins[1].weight, 2);
    assert!(matches!(c.tls, Some(TlsConfig::Pem { .. })));
    assert_eq!(
        c.admin.as_ref().and_then(|a| a.token.as_deref()),
        Some("change-me")
    );
    assert!(c.health_check.is_some());
    assert_eq!(c.cache.ttl.segment, Duration::from_secs(86400));
    for key in [
        "listen:",
        "tls:",
        "admin:",
        "server:",
        "cache:",
        "origins:",
        "fetch:",
        "health_check:",
        "log:",
        "self_signed",
        "ca_file",
        "passive_cooldown",
    ] {
        assert!(text.contains(key), "conf/edge.yaml does not document {key}");
    }
}

/// Every key the parser accepts is documented in conf/edge.yaml: the parser's own list of
/// expected fields (from an unknown-field error) is checked against the file, per section.
#[test]
fn every_key_is_documented() {
    let doc = include_str!("../../conf/edge.yaml");
    let base = "listen:\n  http: \"127.0.0.1:1\"\norigins:\n  - url: \"http://127.0.0.1:2\"\n";
    let probes = [
        format!("{base}zz_bogus: 1\n"),
        "listen:\n  http: \"127.0.0.1:1\"\n  zz_bogus: 1\norigins:\n  - url: \"http://127.0.0.1:2\"\n".to_owned(),
        format!("{base}tls:\n  zz_bogus: 1\n"),
        format!("{base}admin:\n  listen: \"127.0.0.1:3\"\n  zz_bogus: 1\n"),
        format!("{base}server:\n  zz_bogus: 1\n"),
        format!("{base}cache:\n  zz_bogus: 1\n"),
        format!("{base}cache:\n  ttl:\n    zz_bogus: 1\n"),
        "listen:\n  http: \"127.0.0.1:1\"\norigins:\n  - url: \"http://127.0.0.1:2\"\n    zz_bogus: 1\n".to_owned(),
        format!("{base}fetch:\n  zz_bogus: 1\n"),
        format!("{base}health_check:\n  zz_bogus: 1\n"),
        format!("{base}log:\n  zz_bogus: 1\n"),
        format!("{base}compression:\n  zz_bogus: 1\n"),
        format!("{base}prefetch:\n  zz_bogus: 1\n"),
        format!("{base}cache_key:\n  - prefix: /\n    zz_bogus: 1\n"),
        format!("{base}signed_urls:\n  - prefix: /\n    zz_bogus: 1\n"),
        format!("{base}cache:\n  stale_if_error:\n    zz_bogus: 1\n"),
        format!("{base}cache:\n  disk:\n    path: /x\n    max_size: 1GiB\n    zz_bogus: 1\n"),
        format!("{base}cache:\n  slice:\n    zz_bogus: 1\n"),
        format!("{base}cluster:\n  node: \"http://127.0.0.2:1\"\n  zz_bogus: 1\n"),
        format!("{base}cluster:\n  node: \"http://127.0.0.2:1\"\n  dns:\n    name: x\n    zz_bogus: 1\n"),
        format!("{base}cluster:\n  node: \"http://127.0.0.2:1\"\n  kubernetes:\n    service: x\n    zz_bogus: 1\n"),
    ];
    for yaml in probes {
        let e = parse(&yaml).unwrap_err();
        let list = e
            .message
            .split("expected one of")
            .nth(1)
            .unwrap_or_else(|| panic!("no field list in {e}"));
        let list = list.split(" at line").next().unwrap_or(list);
        for field in list.split(',') {
            let field = field.trim().trim_matches('`');
            assert!(
                doc.contains(&format!("{field}:")) || doc.contains(&format!("`{field}:")),
                "conf/edge.yaml does not document `{field}` ({})",
                e.field
            );
        }
    }
}

#[test]
fn docker_config_parses() {
    let c = parse(include_str!("../../conf/docker.yaml")).unwrap();
    assert_eq!(c.listen.http, Some("0.0.0.0:8080".parse().unwrap()));
}

#[test]
fn demo_config_is_valid() {
    let c = Config::demo("127.0.0.1:9000".parse().unwrap());
    assert!(matches!(c.tls, Some(TlsConfig::SelfSigned { .. })));
    assert!(c.admin.is_some());
}

#[test]
fn out_of_range_values_are_errors_not_clamped() {
    let cases = [
        (
            "server:\n  h2_max_concurrent_streams: 0\n",
            "server.h2_max_concurrent_streams",
        ),
        ("server:\n  max_connections: 0\n", "server.max_connections"),
        ("cache:\n  max_waiters: 0\n", "cache.max_waiters"),
        ("fetch:\n  passive_fall: 0\n", "fetch.passive_fall"),
        ("health_check:\n  interval: 1ms\n", "health_check.interval"),
        (
            "health_check:\n  expect_status: []\n",
            "health_check.expect_status",
        ),
        (
            "health_check:\n  expect_status: [99]\n",
            "health_check.expect_status",
        ),
        ("prefetch:\n  segments: 17\n", "prefetch.segments"),
        ("prefetch:\n  concurrency: 0\n", "prefetch.concurrency"),
        ("log:\n  level: loud\n", "log.level"),
        (
            "cache:\n  disk:\n    path: /c\n    max_size: 1GiB\n    promote_after: 256\n",
            "cache.disk.promote_after",
        ),
        (
            "cache:\n  disk:\n    path: relative\n    max_size: 1GiB\n",
            "cache.disk.path",
        ),
        (
            "cache:\n  disk:\n    path: /c\n    max_size: 512KiB\n",
            "cache.disk.max_size",
        ),
        ("cache:\n  slice:\n    size: 1KiB\n", "cache.slice.size"),
        (
            "cache:\n  slice:\n    prefixes: [vod]\n",
            "cache.slice.prefixes",
        ),
    ];
    for (section, field) in cases {
        let e = parse(&format!("{MINIMAL}{section}")).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        assert!(e.line > 4, "{field}: no position in {e}");
    }
    let ok = parse(&format!(
        "{MINIMAL}log:\n  level: \"info,streamedge=debug\"\n"
    ))
    .unwrap();
    assert_eq!(ok.log.level, "info,streamedge=debug");
    let never = parse(&format!(
        "{MINIMAL}cache:\n  disk:\n    path: /c\n    max_size: 1GiB\n    promote_after: 0\n"
    ))
    .unwrap();
    assert_eq!(never.cache.disk.map(|d| d.promote_after), Some(0));
}

#[test]
fn cluster_errors_name_the_field_and_line() {
    let base = "listen:\n  http: \"127.0.0.1:1\"\norigins:\n  - url: \"http://127.0.0.1:2\"\n";
    let secret = "  secret: \"0123456789abcdef\"\n";
    let cases = [
        (
            format!("{base}cluster:\n  node: \"http://127.0.0.2:1\"\n"),
            "cluster.secret",
            6,
        ),
        (
            format!("{base}cluster:\n  node: \"http://127.0.0.2:1\"\n  secret: short\n"),
            "cluster.secret",
            7,
        ),
        (
            format!("{base}cluster:\n  node: \"ftp://a\"\n{secret}"),
            "cluster.node",
            6,
        ),
        (
            format!(
                "{base}cluster:\n  node: \"http://a:1\"\n{secret}  peers: [\"http://b:1/x\"]\n"
            ),
            "cluster.peers",
            8,
        ),
        (
            format!(
                "{base}cluster:\n  node: \"http://a:1\"\n{secret}  dns:\n    name: p\n    srv: true\n    port: 1\n"
            ),
            "cluster.dns.port",
            11,
        ),
        (
            format!("{base}cluster:\n  node: \"http://a:1\"\n{secret}  name: \"two words\"\n"),
            "cluster.name",
            8,
        ),
    ];
    for (yaml, field, line) in cases {
        let e = parse(&yaml).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        assert_eq!(e.line, line, "{e}");
    }
    let ok = parse(&format!(
        "{base}cluster:\n  node: \"HTTP://A:80/\"\n{secret}  peers: [\"http://a\", \"http://b:8080\"]\n"
    ))
    .unwrap();
    let c = ok.cluster.unwrap();
    assert_eq!(c.node, "http://a:80");
    assert_eq!(c.peers, ["http://a:80", "http://b:8080"]);
    assert_eq!(c.name, "streamedge/a:80");
}

#[test]
fn kubernetes_discovery_is_accepted_with_the_feature_only() {
    let base = "listen:\n  http: \"127.0.0.1:1\"\norigins:\n  - url: \"http://127.0.0.1:2\"\n";
    let yaml = format!(
        "{base}cluster:\n  node: \"http://a:1\"\n  secret: \"0123456789abcdef\"\n  \
         kubernetes:\n    service: edge-peers\n    port_name: http\n"
    );
    let parsed = parse(&yaml);
    if cfg!(feature = "kubernetes") {
        let k = parsed
            .expect("accepted with the feature")
            .cluster
            .and_then(|c| c.kubernetes)
            .expect("cluster.kubernetes");
        assert_eq!(k.service, "edge-peers");
        assert_eq!(k.port_name.as_deref(), Some("http"));
        assert_eq!(k.namespace, None, "default: the pod's");
        assert_eq!(k.scheme, "http");
    } else {
        let e = parsed.unwrap_err();
        assert_eq!(e.field, "cluster.kubernetes", "{e}");
        assert!(e.message.contains("--features kubernetes"), "{e}");
    }
}

#[test]
fn runtime_model_is_one_of_two() {
    assert_eq!(
        parse(MINIMAL).unwrap().server.runtime,
        RuntimeModel::PerCore
    );
    let y = format!("{MINIMAL}server:\n  runtime: work_stealing\n");
    assert_eq!(
        parse(&y).unwrap().server.runtime,
        RuntimeModel::WorkStealing
    );
    let y = format!("{MINIMAL}server:\n  runtime: percore\n");
    let e = parse(&y).unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (6, "server.runtime"), "{e}");
    assert!(e.message.contains("per_core"), "the choices are named: {e}");
}
