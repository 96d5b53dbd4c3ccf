//! The render and encode path at 1k, 10k and 100k accounts:
//! once per poll (render, compress) and once per scrape (serve cached bytes
//! plus the live self-metrics).
//!
//!     cargo bench --bench render -- per_poll/compress   # the per-poll compression
//!
//!     cargo bench --bench render
//!
//! Under `cargo test --all-targets` (no `--bench` flag) criterion runs each
//! benchmark once as a test; there only the smallest size is built, so the
//! suite checks that the benchmarks compile and run without spending
//! minutes rendering 100,000 accounts in a debug build.

use std::time::SystemTime;

use compute_optimizer_exporter::expose::deflate::piece;
use compute_optimizer_exporter::expose::exposition::{Exposition, Segment};
use compute_optimizer_exporter::expose::metrics::{SelfMetrics, render_poll, render_snapshot};
use compute_optimizer_exporter::expose::openmetrics::Format;
use compute_optimizer_exporter::model::{Account, Directory, Snapshot, Status};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// The organisation sizes: all three under `cargo bench`, the smallest
/// under `cargo test`.
fn sizes() -> &'static [usize] {
    if std::env::args().any(|a| a == "--bench") {
        &[1_000, 10_000, 100_000]
    } else {
        &[1_000]
    }
}

fn organisation(n: usize) -> Snapshot {
    let mut snap = Snapshot {
        finished_at: Some(SystemTime::now()),
        ..Default::default()
    };
    for i in 0..n {
        let id = format!("{:012}", 100_000_000_000u64 + i as u64 * 7);
        let status = Status::KNOWN[i % 4].clone();
        snap.accounts.insert(Account {
            account_id: id,
            status,
            status_reason: None,
            last_updated: Some(1_700_000_000.0 + i as f64),
        });
    }
    snap
}

fn per_poll(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_poll");
    g.sample_size(10);
    for &n in sizes() {
        let snap = organisation(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("render", n), &snap, |b, s| {
            b.iter(|| render_snapshot(s, &Directory::default(), None, Format::Text))
        });
        let text = render_snapshot(&snap, &Directory::default(), None, Format::Text);
        // The per-poll compression alone (libdeflate level 12, or 9 above
        // 8 MiB of text, and the walk that makes it a piece): off the
        // scrape path, must stay under 2 s at 100k.
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::new("compress", n), &text, |b, t| {
            b.iter(|| piece(t.as_bytes()).len())
        });
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("render_and_compress", n), &snap, |b, s| {
            b.iter(|| Segment::new(render_poll(s, None)))
        });
        drop(text);
    }
    g.finish();
}

fn per_scrape(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_scrape");
    let metrics = SelfMetrics::new("bench", "bench");
    let org_metrics = compute_optimizer_exporter::expose::metrics::OrgMetrics::new(None);
    for &n in sizes() {
        let exposition = Exposition::new(render_snapshot(
            &organisation(n),
            &Directory::default(),
            None,
            Format::Text,
        ));
        for format in [Format::Text, Format::OpenMetrics] {
            let name = |kind: &str| match format {
                Format::Text => kind.to_owned(),
                Format::OpenMetrics => format!("{kind}_openmetrics"),
            };
            g.bench_function(BenchmarkId::new(name("plain"), n), |b| {
                b.iter(|| {
                    exposition
                        .plain_body(format, metrics.encode(format, [&org_metrics]))
                        .map(|c| c.len())
                        .sum::<usize>()
                })
            });
            g.bench_function(BenchmarkId::new(name("gzip"), n), |b| {
                b.iter(|| exposition.gzip_body(format, &metrics.encode(format, [&org_metrics])))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, per_poll, per_scrape);
criterion_main!(benches);
