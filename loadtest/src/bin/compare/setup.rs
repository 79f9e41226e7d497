//! Before the rounds: the certificate, and the origin's content with what every file should be
//! (the binary, versions and the temporary directory are the library's `setup`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use streamedge_loadtest::client::Expect;
use streamedge_loadtest::setup::{self, expect_of};
use streamedge_loadtest::{crowd, origin};

use crate::args::Args;
use crate::model::MIB;

pub(crate) fn write_certificate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .context("cannot make a certificate")?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).context("cannot write the certificate")?;
    std::fs::write(&key, generated.signing_key.serialize_pem()).context("cannot write the key")?;
    Ok((cert, key))
}

/// The origin's content: the 1 KB playlist, the 1 MiB segment, the demo rendition under
/// /vod/hls/ and /vod/dash/, cold objects under /herd/ (slow) and /fill/ (1 MiB, at full speed).
type Built = (origin::Content, HashMap<String, Expect>, Vec<String>);

pub(crate) fn build_content(args: &Args) -> anyhow::Result<Built> {
    // The fixed files: the same table the bare server loads.
    let (files, mix) = setup::bench_files()?;
    let expect = files
        .iter()
        .map(|(p, (b, _))| (p.clone(), expect_of(b)))
        .collect();
    let content = origin::Content {
        files,
        routes: vec![
            origin::Route {
                prefix: "/herd/".into(),
                object: crowd::make_object(args.herd_size),
                behaviour: origin::Behaviour {
                    latency: Duration::from_millis(args.herd_latency_ms),
                    body_time: Duration::from_millis(args.herd_body_ms),
                },
            },
            origin::Route {
                prefix: "/fill/".into(),
                object: {
                    let mut b = crowd::make_object(MIB as usize + 16).to_vec();
                    b.drain(..16);
                    Bytes::from(b)
                },
                behaviour: origin::Behaviour {
                    latency: Duration::ZERO,
                    body_time: Duration::ZERO,
                },
            },
        ],
    };
    Ok((content, expect, mix))
}
