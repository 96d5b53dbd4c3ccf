//! Memory soak: polls a stand-in organisation through the real SDK many
//! times (statuses changing every poll), publishing each result as the
//! daemon does, and checks that resident memory stays flat.
//!
//!     cargo run --release --example soak -- [ACCOUNTS=10000] [POLLS=1000]

#[path = "../tests/support/standin.rs"]
mod standin;

use std::sync::Arc;
use std::time::{Duration, Instant};

use compute_optimizer_exporter::config::Config;
use compute_optimizer_exporter::config::PollOptions;
use compute_optimizer_exporter::produce::poll::poll_once;
use compute_optimizer_exporter::source::aws::{AwsSource, StaticCredentials};
use compute_optimizer_exporter::state::State;

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let accounts: usize = args.next().map_or(10_000, |a| a.parse().expect("ACCOUNTS"));
    let polls: usize = args.next().map_or(1_000, |a| a.parse().expect("POLLS"));

    let mut org = standin::org(accounts);
    let s = standin::Standin::start(org.clone()).await;
    s.forget_requests();
    let mut config = Config::default();
    config.aws.region = Some("us-east-1".into());
    config.aws.endpoint_url = Some(s.url());
    let source = AwsSource::connect(
        &config.aws,
        Some(StaticCredentials {
            access_key_id: "soak".into(),
            secret_access_key: "soak".into(),
        }),
    )
    .await
    .expect("client");
    let opts = PollOptions::from_config(&config);
    let state = Arc::new(State::new("soak", "soak"));
    let only = state.set_orgs(&[None]).remove(0);

    let started = Instant::now();
    let mut baseline = 0.0;
    let mut report = Vec::new();
    for poll in 1..=polls {
        // A different 1% of accounts changes status every poll.
        for a in org.iter_mut().skip(poll % 100).step_by(100) {
            a.status = if a.status == "Active" {
                "Pending".into()
            } else {
                "Active".into()
            };
        }
        s.set_accounts(org.clone());
        let result = poll_once(&source, &opts, &only).await;
        assert!(result.is_ok(), "poll {poll}: {result:?}");
        compute_optimizer_exporter::produce::poll::publish(&only, result, Duration::ZERO, &opts);
        // Read what a scrape reads, so the cached bytes are really used.
        let exp = state.exposition();
        assert!(
            exp.text_len(compute_optimizer_exporter::expose::openmetrics::Format::Text)
                > accounts * 100
        );
        if poll == 100.min(polls) {
            baseline = rss_mb();
        }
        if [1, 10, 100, 250, 500, 750, 1000].contains(&poll) || poll == polls {
            report.push((poll, rss_mb()));
            println!(
                "poll {poll:>5}: rss {:.1} MB ({:.0}s)",
                rss_mb(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let last = rss_mb();
    let growth = last - baseline;
    println!(
        "accounts={accounts} polls={polls} rss_after_100={baseline:.1}MB rss_at_end={last:.1}MB growth={growth:.1}MB"
    );
    // Allocator noise is a few MB; a leak of even 10 KB a poll would show as 9 MB here.
    if polls >= 200 && growth > 4.0 {
        eprintln!("RSS grew by {growth:.1} MB after poll 100: leak?");
        std::process::exit(1);
    }
}
