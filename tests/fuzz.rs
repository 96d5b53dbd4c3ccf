//! The fuzz targets: every parser the exporter has, given inputs no test
//! author would write, on stable Rust under plain `cargo test`.
//!
//! The engine is `proptest`: each target first replays its corpus
//! (`fuzz/corpus/<target>/`, in the repository: seeds and every input a
//! long run ever failed on), then runs generated cases, many of them
//! mutations of the corpus. `PROPTEST_CASES` sets how many (the suite's
//! default keeps every target under a few seconds); `scripts/fuzz.sh
//! TARGET SECONDS` runs one target for as long as asked, with a new seed
//! each round. A failing case is shrunk to a minimal one, printed, and
//! belongs in the target's corpus with a regression test.
//!
//! What every target holds: no panic, in bounded work, and the property
//! of its parser (named on each).
mod support;

use std::io::Read as _;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};

use compute_optimizer_exporter::expose::deflate::{
    DeflateFailed, FINAL_EMPTY_BLOCK, deflate_into, deflate_once, final_block_header, piece,
    stored, sync_flushed,
};
use compute_optimizer_exporter::expose::exposition::{Exposition, Segment};
use compute_optimizer_exporter::expose::openmetrics::{
    Format, OPENMETRICS_0_0_1_CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, negotiate,
};
use compute_optimizer_exporter::web::server::accepts_gzip;

/// Cases per target in the suite, unless `PROPTEST_CASES` says otherwise.
const SUITE_CASES: u32 = 64;

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SUITE_CASES);
    runner_of(cases)
}

/// The suite's seed: the same cases every run, so the suite fails on a
/// change, never on a draw. `scripts/fuzz.sh` sets `FUZZ_RANDOM_SEED` for a
/// new seed each round (as does `PROPTEST_RNG_SEED`, for a chosen one).
fn runner_of(cases: u32) -> TestRunner {
    let mut config = RunnerConfig {
        cases,
        // Failures are shrunk and printed; they are kept in the corpus by
        // hand, with a test, not in a file the runner writes.
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    if std::env::var_os("FUZZ_RANDOM_SEED").is_none()
        && std::env::var_os("PROPTEST_RNG_SEED").is_none()
    {
        config.rng_seed = proptest::test_runner::RngSeed::Fixed(0x05ee_dc0e);
    }
    TestRunner::new(config)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

/// Every input of `target`'s corpus, by file name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = root().join("fuzz/corpus").join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: an empty corpus", dir.display());
    files
}

/// Runs `property` over a strategy, failing the test with the shrunk case.
fn check<S: Strategy>(strategy: S, property: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    if let Err(e) = runner().run(&strategy, property) {
        panic!("{e}");
    }
}

/// Text of the kinds the exporter compresses, and of none: exposition
/// lines, runs of one byte, random bytes, and the empty text.
fn text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..3_000),
        (0usize..400, any::<u16>()).prop_map(|(n, seed)| {
            (0..n)
                .map(|i| {
                    format!(
                        "aws_compute_optimizer_enrollment_status{{account_id=\"{:012}\",status=\"Active\"}} {}\n",
                        u64::from(seed) * 7919 + i as u64,
                        i % 2
                    )
                })
                .collect::<String>()
                .into_bytes()
        }),
        (any::<u8>(), 0usize..70_000).prop_map(|(b, n)| vec![b; n]),
        Just(Vec::new()),
    ]
}

/// One way of making a piece: libdeflate's walked output, zlib at a level,
/// or stored blocks.
#[derive(Debug, Clone, Copy)]
enum Maker {
    Walked,
    Zlib(u32),
    Stored,
}

fn maker() -> impl Strategy<Value = Maker> {
    prop_oneof![
        Just(Maker::Walked),
        (0u32..=9).prop_map(Maker::Zlib),
        Just(Maker::Stored),
    ]
}

fn make(maker: Maker, text: &[u8]) -> Vec<u8> {
    match maker {
        Maker::Walked => piece(text),
        Maker::Zlib(level) => sync_flushed(text, flate2::Compression::new(level)),
        Maker::Stored => stored(text),
    }
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Deflate splicing: texts compressed into pieces by every maker, spliced
/// in any order behind a gzip header and before the final empty block and
/// the trailer, inflate to the concatenation of the texts in that order.
#[test]
fn deflate_pieces_splice_in_any_order() {
    let cases = prop::collection::vec((text(), maker()), 1..8).prop_flat_map(|pieces| {
        let n = pieces.len();
        (
            Just(pieces),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
        )
    });
    check(cases, |(pieces, order)| {
        let mut gzip = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        let mut want = Vec::new();
        for &i in &order {
            let (text, maker) = &pieces[i];
            gzip.extend(make(*maker, text));
            want.extend_from_slice(text);
        }
        gzip.extend_from_slice(&FINAL_EMPTY_BLOCK);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&want);
        gzip.extend_from_slice(&crc.finalize().to_le_bytes());
        gzip.extend_from_slice(&(want.len() as u32).to_le_bytes());
        let got = gunzip(&gzip).map_err(TestCaseError::fail)?;
        prop_assert!(
            got == want,
            "{} bytes inflated, {} wanted",
            got.len(),
            want.len()
        );
        Ok(())
    });
}

/// The same through the exposition, both paths a scrape takes: segments of
/// text (UTF-8, as rendered), spliced, served gzip (shared pieces behind the
/// live part) and plain (inflated as written), each equal to the live part
/// followed by every segment in order.
#[test]
fn expositions_serve_the_same_text_gzip_and_plain() {
    let utf8 = || text().prop_map(|t| String::from_utf8_lossy(&t).into_owned());
    let cases = (prop::collection::vec(utf8(), 0..6), utf8());
    check(cases, |(segments, live)| {
        let spliced = Exposition::spliced(
            segments
                .iter()
                .map(|t| std::sync::Arc::new(Segment::new(t.clone().into())))
                .collect(),
        );
        let want: Vec<u8> = std::iter::once(live.as_str())
            .chain(segments.iter().map(String::as_str))
            .collect::<String>()
            .into_bytes();
        let plain = spliced
            .body(Format::Text, false, || live.clone().into_bytes())
            .concat();
        prop_assert!(
            plain == want,
            "plain: {} of {} bytes",
            plain.len(),
            want.len()
        );
        spliced.forget_live();
        let gzip = spliced
            .body(Format::Text, true, || live.clone().into_bytes())
            .concat();
        let inflated = gunzip(&gzip).map_err(TestCaseError::fail)?;
        prop_assert!(
            inflated == want,
            "gzip: {} of {} bytes",
            inflated.len(),
            want.len()
        );
        Ok(())
    });
}

/// The block walker: random bytes, and every cut of a real stream, end in
/// `None` or in a final block inside the input, never a panic; a stream
/// cut anywhere before its end is never taken for whole. (Each step of
/// the walk consumes at least a bit of a bounded input, so it ends.)
#[test]
fn the_block_walker_refuses_what_it_cannot_walk() {
    for (name, bytes) in corpus("deflate_walker") {
        if let Some((start, end)) = final_block_header(&bytes) {
            assert!(start < end && end <= bytes.len() * 8, "{name}");
        }
    }
    let cases = (
        prop::collection::vec(any::<u8>(), 0..4_096),
        prop::collection::vec(any::<u8>(), 1..6_000),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        any::<u8>(),
    );
    check(cases, |(noise, text, cut, flip_at, flip)| {
        if let Some((start, end)) = final_block_header(&noise) {
            prop_assert!(start < end && end <= noise.len() * 8);
        }
        let stream = deflate_once(&text);
        let (_, end) = final_block_header(&stream).ok_or_else(|| TestCaseError::fail("whole"))?;
        prop_assert!(end.div_ceil(8) == stream.len());
        let cut = cut.index(stream.len());
        prop_assert!(final_block_header(&stream[..cut]).is_none(), "cut at {cut}");
        let mut flipped = stream.clone();
        flipped[flip_at.index(stream.len())] ^= flip | 1;
        if let Some((start, end)) = final_block_header(&flipped) {
            prop_assert!(start < end && end <= flipped.len() * 8);
        }
        Ok(())
    });
}

/// A piece zlib cannot finish is an error, never a short piece: a
/// compressor that has already ended its stream takes no more input, and
/// `deflate_into` says so instead of returning what it wrote. (It returned
/// nothing of the kind before: the piece was silently cut.)
#[test]
fn a_failing_compressor_never_truncates_a_piece_silently() {
    let mut z = flate2::Compress::new(flate2::Compression::fast(), false);
    let mut out = Vec::new();
    assert_eq!(
        deflate_into(&mut z, b"first", &mut out, flate2::FlushCompress::Finish),
        Ok(())
    );
    let mut more = Vec::new();
    assert_eq!(
        deflate_into(
            &mut z,
            b"second text zlib will not take",
            &mut more,
            flate2::FlushCompress::Sync
        ),
        Err(DeflateFailed)
    );
}

/// One `Accept` media range: a type (offered, wildcards, others, junk),
/// a version, a weight (valid, zero in every spelling, invalid) and noise.
fn media_range() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just("application/openmetrics-text".to_owned()),
        Just("Application/OpenMetrics-Text".to_owned()),
        Just("text/plain".to_owned()),
        Just("*/*".to_owned()),
        Just("application/*".to_owned()),
        Just("application/vnd.google.protobuf".to_owned()),
        "[ -~]{0,12}",
    ];
    let version = prop_oneof![
        Just(String::new()),
        Just(";version=1.0.0".to_owned()),
        Just(";version=0.0.1".to_owned()),
        Just(";version=0.0.4".to_owned()),
        Just("; version=\"1.0.0\"".to_owned()),
        Just(";version=2.0.0".to_owned()),
    ];
    let q = prop_oneof![
        Just(String::new()),
        Just(";q=0".to_owned()),
        Just(";q=0.0".to_owned()),
        Just(";Q=0.000".to_owned()),
        Just(";q=1".to_owned()),
        Just(";q=0.5".to_owned()),
        Just(";q=0.001".to_owned()),
        Just(";q=NaN".to_owned()),
        Just(";q=inf".to_owned()),
        Just(";q=-1".to_owned()),
        Just(";q=".to_owned()),
        ";q=[ -~]{0,6}",
    ];
    let noise = prop_oneof![Just(String::new()), ";[ -~]{0,10}"];
    (kind, version, q, noise, " {0,2}").prop_map(|(k, v, q, n, sp)| format!("{sp}{k}{v}{n}{q}"))
}

/// What an `Accept` range asks of one offered format: its weight, if it
/// names it.
fn weight_for(range: &str, om_version: Option<&str>) -> Option<f32> {
    let mut params = range.split(';');
    let kind = params.next()?.trim().to_ascii_lowercase();
    let (mut q, mut version) = (1.0f32, None::<String>);
    for p in params {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        match k.trim().to_ascii_lowercase().as_str() {
            "q" => {
                q = v
                    .parse()
                    .ok()
                    .filter(|q: &f32| q.is_finite())
                    .unwrap_or(0.0)
            }
            "version" => version = Some(v.to_owned()),
            _ => {}
        }
    }
    match om_version {
        None => (kind == "text/plain").then_some(q),
        Some(want) => (kind == "application/openmetrics-text"
            && match version.as_deref() {
                None => want == "1.0.0",
                Some(v) => v == want,
            })
        .then_some(q),
    }
}

/// `Accept`: the answer is always one of the offered formats with its exact
/// Content-Type; a format is served only where some range gives it a
/// weight above 0 (q=0 refuses, in every spelling), unless nothing
/// acceptable is offered, where the text format is the fallback, as
/// client_golang serves.
#[test]
fn accept_negotiation_serves_an_offered_format_and_q0_refuses() {
    for (name, bytes) in corpus("accept") {
        for line in String::from_utf8_lossy(&bytes).lines() {
            let (_, ct) = negotiate(Some(line));
            assert!(
                [
                    TEXT_CONTENT_TYPE,
                    OPENMETRICS_CONTENT_TYPE,
                    OPENMETRICS_0_0_1_CONTENT_TYPE
                ]
                .contains(&ct),
                "{name}: {line}"
            );
        }
    }
    let cases = prop::collection::vec(media_range(), 0..6).prop_map(|r| r.join(","));
    check(cases, |accept| {
        let (format, ct) = negotiate(Some(&accept));
        let ranges: Vec<&str> = accept.split(',').collect();
        let best = |v: Option<&str>| {
            ranges
                .iter()
                .filter_map(|r| weight_for(r, v))
                .fold(None::<f32>, |b, q| Some(b.map_or(q, |b| b.max(q))))
        };
        let (text, om1, om001) = (best(None), best(Some("1.0.0")), best(Some("0.0.1")));
        let positive = |q: Option<f32>| q.is_some_and(|q| q > 0.0);
        match ct {
            OPENMETRICS_CONTENT_TYPE => {
                prop_assert_eq!(format, Format::OpenMetrics);
                prop_assert!(positive(om1), "{accept}");
            }
            OPENMETRICS_0_0_1_CONTENT_TYPE => {
                prop_assert_eq!(format, Format::OpenMetrics);
                prop_assert!(positive(om001), "{accept}");
            }
            TEXT_CONTENT_TYPE => {
                prop_assert_eq!(format, Format::Text);
                // Text with a weight of 0 only when nothing else is acceptable.
                if text.is_some_and(|q| q <= 0.0) {
                    prop_assert!(!positive(om1) && !positive(om001), "{accept}");
                }
            }
            other => prop_assert!(false, "{other} for {accept}"),
        }
        Ok(())
    });
}

/// `Accept-Encoding` (RFC 9110 12.5.3): gzip named with a weight above 0
/// is accepted; named only with weight 0 is refused, whatever `*` says;
/// not named, `*` decides; neither, no gzip.
#[test]
fn accept_encoding_gzip_follows_rfc_9110() {
    let coding = prop_oneof![
        Just("gzip"),
        Just("GZIP"),
        Just("x-gzip"),
        Just("*"),
        Just("br"),
        Just("identity"),
        Just("deflate"),
        Just("zstd"),
    ];
    let q = prop_oneof![
        Just(""),
        Just(";q=0"),
        Just(";q=0.000"),
        Just("; Q=0"),
        Just(";q=1"),
        Just(";q=0.5"),
        Just(";q=junk"),
    ];
    let cases = prop::collection::vec((coding, q, " {0,2}"), 0..6);
    check(cases, |entries| {
        let header = entries
            .iter()
            .map(|(c, q, sp)| format!("{sp}{c}{q}"))
            .collect::<Vec<_>>()
            .join(",");
        let value = hyper::header::HeaderValue::from_str(&header).unwrap();
        let got = accepts_gzip(Some(&value));
        let allowed = |q: &str| matches!(q, "" | ";q=1" | ";q=0.5");
        let gzip: Vec<bool> = entries
            .iter()
            .filter(|(c, _, _)| c.eq_ignore_ascii_case("gzip") || *c == "x-gzip")
            .map(|(_, q, _)| allowed(q))
            .collect();
        let any: Vec<bool> = entries
            .iter()
            .filter(|(c, _, _)| *c == "*")
            .map(|(_, q, _)| allowed(q))
            .collect();
        let want = if !gzip.is_empty() {
            gzip.contains(&true)
        } else {
            any.contains(&true)
        };
        prop_assert_eq!(got, want, "{}", header);
        Ok(())
    });
}

/// The shipped configurations and the config corpus: what mutations start
/// from.
fn config_seeds() -> Vec<(String, String)> {
    let mut seeds: Vec<(String, String)> = [
        "config/compute-optimizer-exporter.toml",
        "config/several-organizations.toml",
    ]
    .iter()
    .map(|p| {
        (
            (*p).to_owned(),
            std::fs::read_to_string(root().join(p)).unwrap(),
        )
    })
    .collect();
    seeds.extend(
        corpus("config")
            .into_iter()
            .map(|(n, b)| (n, String::from_utf8_lossy(&b).into_owned())),
    );
    seeds
}

/// A value of any TOML type, or none that parses: strings of every length
/// and Unicode class, numbers out of every range, arrays, inline tables.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>().prop_map(|s| format!("{s:?}")),
        "\\PC{0,40}".prop_map(|s| format!("\"{}\"", s.replace(['\\', '"'], ""))),
        (0usize..5_000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("true".to_owned()),
        Just("[]".to_owned()),
        Just("[1, \"a\", true]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("\"-1s\"".to_owned()),
        Just("\"99999999999999999999h\"".to_owned()),
        Just("\"1h1h\"".to_owned()),
        "[ -~]{0,20}",
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Drop(prop::sample::Index),
    Duplicate(prop::sample::Index),
    Swap(prop::sample::Index, prop::sample::Index),
    Retype(prop::sample::Index, String),
    Uncomment(prop::sample::Index),
    Insert(prop::sample::Index, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        index().prop_map(Mutation::Drop),
        index().prop_map(Mutation::Duplicate),
        (index(), index()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        (index(), toml_value()).prop_map(|(i, v)| Mutation::Retype(i, v)),
        index().prop_map(Mutation::Uncomment),
        (
            index(),
            prop_oneof![
                Just("[aws]".to_owned()),
                Just("[[organization]]".to_owned()),
                Just("[poll]".to_owned()),
                Just("[web]".to_owned()),
                Just("name = \"dup\"".to_owned()),
                "[ -~]{0,30}",
                "\\PC{0,30}",
            ]
        )
            .prop_map(|(i, l)| Mutation::Insert(i, l)),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for m in mutations {
        if lines.is_empty() {
            lines.push(String::new());
        }
        match m {
            Mutation::Drop(i) => {
                lines.remove(i.index(lines.len()));
            }
            Mutation::Duplicate(i) => {
                let i = i.index(lines.len());
                lines.insert(i, lines[i].clone());
            }
            Mutation::Swap(a, b) => {
                let (a, b) = (a.index(lines.len()), b.index(lines.len()));
                lines.swap(a, b);
            }
            Mutation::Retype(i, value) => {
                let i = i.index(lines.len());
                if let Some((key, _)) = lines[i].split_once(" = ") {
                    lines[i] = format!("{key} = {value}");
                }
            }
            Mutation::Uncomment(i) => {
                let i = i.index(lines.len());
                lines[i] = lines[i].trim_start_matches(['#', ' ']).to_owned();
            }
            Mutation::Insert(i, line) => lines.insert(i.index(lines.len() + 1), line.clone()),
        }
    }
    lines.join("\n") + "\n"
}

/// Config: mutations of every shipped configuration (keys dropped,
/// duplicated, retyped, uncommented, lines moved, tables inserted) load as
/// a valid configuration or fail with one line naming the file, never a
/// panic.
#[test]
fn mutated_configurations_load_or_fail_with_one_line() {
    let seeds = config_seeds();
    let dir = support::tempdir();
    let path = dir.join("mutated.toml");
    let load = |text: &str| -> Result<(), String> {
        std::fs::write(&path, text).unwrap();
        match compute_optimizer_exporter::app::load_config(Some(&path), &Default::default(), false)
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if e.contains('\n') || !e.starts_with(&path.display().to_string()) {
                    return Err(format!("not one line naming the file: {e:?}"));
                }
                Ok(())
            }
        }
    };
    for (name, text) in &seeds {
        load(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let cases = (0..seeds.len(), prop::collection::vec(mutation(), 1..5));
    check(cases, |(seed, mutations)| {
        let text = mutate(&seeds[seed].1, &mutations);
        load(&text).map_err(TestCaseError::fail)
    });
}

/// The binary, as `tests/shipped.rs` runs it: nothing of the developer's
/// AWS environment, a region, every endpoint on a closed loopback port.
fn exporter(dir: &Path) -> std::process::Command {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_compute-optimizer-exporter"));
    for var in ["AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"] {
        c.env_remove(var);
    }
    c.env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{closed}"))
        .env("AWS_ACCESS_KEY_ID", "AKIDFUZZ")
        .env("AWS_SECRET_ACCESS_KEY", "fuzz")
        .env("AWS_CONFIG_FILE", dir.join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .current_dir(dir);
    c
}

/// Whether a start of `config` gets as far as listening (killed then), or
/// exits first.
fn starts(dir: &Path, config: &Path) -> bool {
    use std::io::BufRead as _;
    let mut child = exporter(dir)
        .arg("--config.file")
        .arg(config)
        .args(["--web.listen-address", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("msg=listening") {
                let _ = tx.send(true);
                return;
            }
        }
        let _ = tx.send(false);
    });
    let listening = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("a start either listens or exits within 20 s");
    let _ = child.kill();
    let _ = child.wait();
    listening
}

/// `--config.check` and a start agree on mutated configurations: the check
/// passes exactly when a start listens. Through the binary, on a sample
/// (each input is two processes).
#[test]
fn the_check_and_a_start_agree_on_mutated_configurations() {
    let seeds = config_seeds();
    let dir = support::tempdir();
    let path = dir.join("mutated.toml");
    let mut runner = runner_of(12);
    let cases = (0..seeds.len(), prop::collection::vec(mutation(), 1..3));
    let result = runner.run(&cases, |(seed, mutations)| {
        let text = mutate(&seeds[seed].1, &mutations);
        // The external ID files the shipped examples name, present.
        for name in ["external-id-commercial", "external-id-govcloud"] {
            std::fs::write(dir.join(name), "fuzz-external-id\n").unwrap();
        }
        std::fs::write(&path, &text).unwrap();
        let checked = exporter(&dir)
            .arg("--config.file")
            .arg(&path)
            .arg("--config.check")
            .output()
            .unwrap()
            .status
            .success();
        let started = starts(&dir, &path);
        prop_assert_eq!(checked, started, "{}", text);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The web configuration (exporter-toolkit's YAML): mutations of the corpus
/// load or fail with one line naming the file, never a panic, and never
/// quote a password hash.
#[test]
fn mutated_web_configurations_load_or_fail_with_one_line() {
    let seeds: Vec<String> = corpus("web_config")
        .into_iter()
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
        .collect();
    let dir = support::tempdir();
    let path = dir.join("web.yml");
    // A real hash's prefix: "$2y$" and a cost (the advice's "$2y$..." is not one).
    let hash_like = |e: &str| {
        e.match_indices("$2").any(|(i, _)| {
            let rest = &e.as_bytes()[i..];
            rest.len() > 7
                && matches!(rest[2], b'a' | b'b' | b'y')
                && rest[3] == b'$'
                && rest[4].is_ascii_digit()
                && rest[5].is_ascii_digit()
                && rest[6] == b'$'
        })
    };
    let cases = (
        0..seeds.len(),
        prop::collection::vec(mutation(), 0..4),
        "\\PC{0,30}",
    );
    check(cases, |(seed, mutations, extra)| {
        let mut text = mutate(&seeds[seed].replace(": ", " = "), &mutations).replace(" = ", ": ");
        text.push_str(&extra);
        std::fs::write(&path, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Err(e) = compute_optimizer_exporter::web::websec::WebSecurity::load(&path) {
            prop_assert!(!e.contains('\n'), "{e:?}");
            prop_assert!(e.starts_with(&path.display().to_string()), "{e:?}");
            prop_assert!(!hash_like(&e), "a hash quoted: {e:?}");
        }
        Ok(())
    });
}

/// Snapshot files (`--storage.path`): random bytes, every cut and byte flip
/// of a real one, and files over the bound are refused or read, never a
/// panic; what is read renders.
#[test]
fn damaged_snapshots_are_absent_never_fatal() {
    use compute_optimizer_exporter::storage::{Storage, fit_to_labels};
    let dir = support::tempdir();
    let storage = Storage::open(&dir).unwrap().for_organization(None);
    let seeds = corpus("storage");
    for (name, bytes) in &seeds {
        std::fs::write(storage.path(), bytes).unwrap();
        let _ = storage.load().map(|r| {
            let labels = r.directory.tag_labels.clone();
            compute_optimizer_exporter::expose::metrics::render_walk(
                &fit_to_labels(r.directory, &labels),
                None,
            )
        });
        let _ = name;
    }
    let cases = (
        0..seeds.len(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..512),
        0u8..4,
    );
    check(cases, |(seed, cut, at, flip, noise, how)| {
        let bytes = &seeds[seed].1;
        let damaged = match how {
            0 => bytes[..cut.index(bytes.len() + 1)].to_vec(),
            1 => {
                let mut b = bytes.clone();
                if !b.is_empty() {
                    let i = at.index(b.len());
                    b[i] ^= flip | 1;
                }
                b
            }
            2 => noise,
            _ => {
                let mut b = bytes.clone();
                b.splice(at.index(b.len() + 1)..at.index(b.len() + 1), noise);
                b
            }
        };
        std::fs::write(storage.path(), &damaged).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Some(r) = storage.load() {
            let labels = r.directory.tag_labels.clone();
            let _ = compute_optimizer_exporter::expose::metrics::render_walk(
                &fit_to_labels(r.directory, &labels),
                None,
            );
        }
        Ok(())
    });
    // Over the bound: refused before it is read.
    let file = std::fs::File::create(storage.path()).unwrap();
    file.set_len(33 << 20).unwrap();
    assert!(storage.load().is_none());
}

/// Request targets, methods and headers through the router, over a real
/// connection to an exporter on loopback: a status line always, 404 with
/// its one line (or 400, hyper's refusal, without a body) for any path
/// that is not an endpoint, never a panic or a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_through_the_router_get_a_status_never_a_panic() {
    let exporter = support::Exporter::start_with(None, true).await;
    exporter.wait_polls(1).await;
    let addr = exporter.addr;
    let seeds: Vec<String> = corpus("router")
        .into_iter()
        .flat_map(|(_, b)| {
            String::from_utf8_lossy(&b)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let method = prop_oneof![
        Just("GET"),
        Just("HEAD"),
        Just("POST"),
        Just("PUT"),
        Just("DELETE"),
        Just("OPTIONS"),
        Just("get"),
        Just("BREW"),
    ];
    let target = prop_oneof![
        prop::sample::select(seeds.clone()),
        "/[ -~]{0,40}",
        "\\PC{0,20}",
        Just("*".to_owned()),
        Just("http://evil.example/metrics".to_owned()),
        (0usize..20_000).prop_map(|n| format!("/{}", "a".repeat(n))),
    ];
    let header = prop_oneof![
        Just("Accept-Encoding: gzip;q=0, *".to_owned()),
        Just("Accept: application/openmetrics-text;version=0.0.1;q=0.5".to_owned()),
        Just("Host: evil.example".to_owned()),
        Just("Host:".to_owned()),
        Just("Content-Length: 5".to_owned()),
        Just("Transfer-Encoding: chunked".to_owned()),
        Just("Authorization: Basic !!!".to_owned()),
        "[ -~]{0,40}",
    ];
    let cases = (method, target, prop::collection::vec(header, 0..4));
    let mut runner = runner();
    let mut inputs = Vec::new();
    let tree = |r: &mut TestRunner| {
        let mut all = Vec::new();
        for _ in 0..r.config().cases {
            all.push(cases.new_tree(r).unwrap().current());
        }
        all
    };
    inputs.extend(tree(&mut runner));
    for (method, target, headers) in inputs {
        let mut req = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
        if !headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("host:"))
        {
            req.push_str("Host: 127.0.0.1\r\n");
        }
        for h in &headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        let raw = raw_exchange(addr, req.as_bytes()).await;
        let head = String::from_utf8_lossy(&raw);
        let status: u16 = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line for {req:?}: {head:?}"));
        // The path the router sees: origin-form, or the path of an
        // absolute-form target.
        let uri = target.parse::<hyper::Uri>().ok();
        let path = uri.as_ref().map_or("", |u| u.path());
        let endpoint =
            path == "/metrics" || compute_optimizer_exporter::config::ENDPOINTS.contains(&path);
        if !endpoint && status != 400 && status != 431 && status != 414 {
            assert_eq!(status, 404, "{req:?}: {head}");
            let body = head.split("\r\n\r\n").nth(1).unwrap_or("");
            if method != "HEAD" {
                assert_eq!(body, "404 page not found\n", "{req:?}");
            }
        }
    }
    assert_eq!(
        support::get(addr, "/-/healthy").await.status,
        200,
        "still serving"
    );
    exporter.stop().await;
}

/// Writes `request`, reads to the end (the request says close), 10 s at most.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

/// Found by the splicing target: 31,845 zero bytes sync-flushed by zlib at
/// level 0 came out short (flate2's miniz_oxide held the rest of the flush
/// back, and the piece ended without it). Every level, around the sizes
/// where stored blocks fill the buffer.
#[test]
fn a_sync_flushed_piece_holds_all_its_text_at_every_level() {
    for len in [31_845usize, 65_535, 65_536, 70_000, 131_072] {
        for level in 0..=9 {
            for byte in [0u8, b'a'] {
                let text = vec![byte; len];
                let mut stream = sync_flushed(&text, flate2::Compression::new(level));
                stream.extend_from_slice(&FINAL_EMPTY_BLOCK);
                let mut out = Vec::new();
                flate2::read::DeflateDecoder::new(&stream[..])
                    .read_to_end(&mut out)
                    .unwrap();
                assert!(
                    out == text,
                    "level {level}, {len} bytes: {} came out",
                    out.len()
                );
            }
        }
    }
}

/// The same through `deflate_into` with a buffer far too small, so every
/// flush spans several calls.
#[test]
fn a_flush_across_many_calls_holds_all_its_text() {
    for len in [31_845usize, 70_000] {
        for level in [0, 1, 6, 9] {
            let text: Vec<u8> = (0..len)
                .map(|i| (i % 7) as u8 * (level as u8 % 2))
                .collect();
            let mut z = flate2::Compress::new(flate2::Compression::new(level), false);
            let mut stream = Vec::with_capacity(64);
            deflate_into(&mut z, &text, &mut stream, flate2::FlushCompress::Sync).unwrap();
            stream.extend_from_slice(&FINAL_EMPTY_BLOCK);
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(&stream[..])
                .read_to_end(&mut out)
                .unwrap();
            assert!(
                out == text,
                "level {level}, {len} bytes: {} came out",
                out.len()
            );
        }
    }
}

/// Found by the web-config target: a flow-mapping key holding a line break
/// (`{A`, a blank line, then `a`: YAML folds it to "A", a break, "a") made
/// an error of two lines. It is one,
/// the break escaped.
#[test]
fn a_web_config_key_with_a_line_break_is_named_on_one_line() {
    let dir = support::tempdir();
    let path = dir.join("web.yml");
    std::fs::write(&path, "{A\n\na").unwrap();
    let e = compute_optimizer_exporter::web::websec::WebSecurity::load(&path)
        .err()
        .expect("refused");
    assert!(!e.contains('\n'), "{e:?}");
    assert!(e.contains("unknown field `A\\na`"), "{e:?}");
}
