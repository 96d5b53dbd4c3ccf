//! The producers, and the one driver that runs them all.
//!
//! node_exporter's collector model on cached bytes: each producer owns a
//! segment of `/metrics` (a slot of its organisation in [`crate::state`])
//! and publishes it when it has news, off the scrape path; one function,
//! [`drive`], runs every producer as `collector.go`'s `execute()` runs a
//! collector: it runs a round, records the producer's health (success, last
//! success, duration) and waits for the next round, every wait raced
//! against stop. A producer knows nothing of how it is served or scheduled.
//!
//! * [`poll`]: the enrollment poll (`GetEnrollmentStatusesForOrganization`,
//!   every page, and `GetEnrollmentStatus`);
//! * [`walk`]: the organisation walk (names, OUs, states, tags), kept in
//!   `--storage.path` across restarts;
//! * [`automation`]: Compute Optimizer Automation's enrollment of every
//!   account (`aws.automation`);
//! * [`access`]: Compute Optimizer's trusted access in Organizations and
//!   its delegated administrators (with `aws.organizations`).
//!
//! Adding a producer: a file here implementing [`Producer`], a slot name
//! for its segment, its [`Health`] series, and a line in
//! [`crate::fleet`]'s list of producers.

pub mod access;
pub mod automation;
pub mod poll;
pub mod walk;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::{GaugeVec, Histogram, IntCounterVec};
use tokio::time::{Instant, sleep_until};

use crate::model::unix_seconds;
use crate::shutdown::Shutdown;
use crate::state::Org;

/// Runs `work` on a blocking thread (a render, a file), in the caller's
/// span: a blocking thread does not inherit it, and the lines the work
/// logs must name their organisation. `None` only if the work panicked.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .ok()
}

/// The producer was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// How one round went.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub ok: bool,
    /// The part of the round its duration series measures, when that is
    /// not the whole round (the poll: its pages, not its render).
    pub took: Option<Duration>,
}

impl Round {
    pub fn ok(ok: bool) -> Round {
        Round { ok, took: None }
    }
}

/// A producer's health series, recorded by [`drive`] after every round:
/// whether the latest round succeeded (`up`), when one last did, how long
/// rounds take and how many there were by outcome. `up` and
/// `last_success` have no labels of their own (an organisation's are
/// constant labels), so a producer that is switched off can drop them.
#[derive(Clone)]
pub struct Health {
    pub up: GaugeVec,
    pub last_success: GaugeVec,
    pub duration: Option<Histogram>,
    /// By `result`: `success` or `failure`.
    pub rounds: Option<IntCounterVec>,
}

impl Health {
    /// Records a round that started at `started` (wall clock).
    pub fn record(&self, round: Round, started: SystemTime, elapsed: Duration) {
        let took = round.took.unwrap_or(elapsed);
        self.up
            .with_label_values(&[] as &[&str])
            .set(if round.ok { 1.0 } else { 0.0 });
        if round.ok {
            let finished = started + took;
            self.last_success
                .with_label_values(&[] as &[&str])
                .set(unix_seconds(finished));
        }
        if let Some(d) = &self.duration {
            d.observe(took.as_secs_f64());
        }
        if let Some(r) = &self.rounds {
            let result = if round.ok { "success" } else { "failure" };
            r.with_label_values(&[result]).inc();
        }
    }

    /// The producer is switched off: its `up` and `last_success` go.
    pub fn forget(&self) {
        self.up.reset();
        self.last_success.reset();
    }
}

/// One producer: what it does at start and in each round, and when it runs
/// again. It publishes through its organisation as often as it likes
/// within a round ([`Org::publish_segment`] for a segment of its own), and
/// never inside a wait for stop: a publish that has begun ends before the
/// round does.
pub trait Producer: Send + 'static {
    /// Before the first round (the walk serves its saved data).
    fn start(&mut self, _stop: &Shutdown) -> impl Future<Output = Result<(), Stopped>> + Send {
        async { Ok(()) }
    }

    /// One round; `Err(Stopped)` when told to stop on the way.
    fn round(&mut self, stop: &Shutdown) -> impl Future<Output = Result<Round, Stopped>> + Send;

    /// When the next round starts, after the one that started at `started`.
    fn next_round(&mut self, started: Instant, round: Round) -> Instant;

    /// Once the round's health is on record: what is logged about it goes
    /// here, so the log never runs ahead of `/metrics`.
    fn recorded(&mut self, _round: Round) {}
}

/// Runs `producer` until `stop`: its start, then round after round, each
/// recorded in `health`, the cached live part of `org`'s scrape dropped so
/// the next scrape shows it.
pub async fn drive<P: Producer>(mut producer: P, health: Health, org: Arc<Org>, stop: Shutdown) {
    if producer.start(&stop).await.is_err() {
        return;
    }
    loop {
        let (started, wall) = (Instant::now(), SystemTime::now());
        let Ok(round) = producer.round(&stop).await else {
            return;
        };
        health.record(round, wall, started.elapsed());
        org.forget_live();
        producer.recorded(round);
        let next = producer.next_round(started, round);
        tokio::select! {
            _ = sleep_until(next) => {}
            _ = stop.wait() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expose::exposition::{Rendered, Segment};
    use crate::expose::openmetrics::{Format, Kind};
    use crate::state::State;

    /// A producer that exists only here: each round counts its beats into
    /// a segment of its own; from the third round on it fails.
    struct Heartbeat {
        org: Arc<Org>,
        beats: u32,
    }

    impl Producer for Heartbeat {
        async fn round(&mut self, _stop: &Shutdown) -> Result<Round, Stopped> {
            self.beats += 1;
            if self.beats > 2 {
                return Ok(Round::ok(false));
            }
            let mut out = Rendered::new();
            out.header("test_heartbeat_beats", "Beats so far.", Kind::Gauge);
            out.push_str(&format!("test_heartbeat_beats {}\n", self.beats));
            self.org
                .publish_segment("heartbeat", Segment::new(out), || {});
            Ok(Round::ok(true))
        }

        fn next_round(&mut self, started: Instant, _round: Round) -> Instant {
            started + Duration::from_secs(10)
        }
    }

    fn health_of(org: &Org) -> Health {
        let gauge = |name: &str| {
            prometheus::GaugeVec::new(prometheus::Opts::new(name, "help"), &[]).unwrap()
        };
        let health = Health {
            up: gauge("test_heartbeat_up"),
            last_success: gauge("test_heartbeat_last_success_timestamp_seconds"),
            duration: Some(
                prometheus::Histogram::with_opts(prometheus::HistogramOpts::new(
                    "test_heartbeat_duration_seconds",
                    "help",
                ))
                .unwrap(),
            ),
            rounds: None,
        };
        org.metrics.register(vec![
            Box::new(health.up.clone()),
            Box::new(health.last_success.clone()),
            Box::new(health.duration.clone().unwrap()),
        ]);
        health
    }

    fn scrape(state: &State) -> String {
        let body = state
            .exposition()
            .body(Format::Text, false, || state.encode_live(Format::Text));
        String::from_utf8_lossy(&body.concat()).into_owned()
    }

    /// The proof that producers plug in through the driver: a producer
    /// that exists only in this test is served beside the built-in ones'
    /// segments, with its health series (success, last success, duration)
    /// recorded by the driver; a failed round keeps its segment and says so
    /// at once. On tokio's paused clock, so the rounds are exact.
    #[tokio::test(start_paused = true)]
    async fn a_producer_registered_only_here_is_served_with_its_health() {
        let state = Arc::new(State::new("test", "test"));
        let org = state.set_orgs(&[None]).remove(0);
        let health = health_of(&org);
        let (stop, stopped) = crate::shutdown::channel();
        let task = tokio::spawn(drive(
            Heartbeat {
                org: org.clone(),
                beats: 0,
            },
            health,
            org.clone(),
            stopped,
        ));
        let at = |t: &str, series: &str| {
            t.lines()
                .find_map(|l| l.strip_prefix(&format!("{series} ")))
                .and_then(|v| v.parse::<f64>().ok())
        };
        // After the first round.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = scrape(&state);
        assert_eq!(at(&text, "test_heartbeat_beats"), Some(1.0), "{text}");
        assert_eq!(at(&text, "test_heartbeat_up"), Some(1.0), "{text}");
        assert!(at(&text, "test_heartbeat_last_success_timestamp_seconds").unwrap() > 1e9);
        assert_eq!(
            at(&text, "test_heartbeat_duration_seconds_count"),
            Some(1.0)
        );
        // 30 ms before the third round: a scrape caches the live part, which
        // is reused for 100 ms.
        tokio::time::sleep(Duration::from_millis(18_970)).await;
        let text = scrape(&state);
        assert_eq!(at(&text, "test_heartbeat_beats"), Some(2.0), "{text}");
        assert_eq!(at(&text, "test_heartbeat_up"), Some(1.0), "{text}");
        // 20 ms after the third round (the first to fail): the last good
        // segment stays, and the scrape already says the round failed.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let text = scrape(&state);
        assert_eq!(at(&text, "test_heartbeat_beats"), Some(2.0), "{text}");
        assert_eq!(at(&text, "test_heartbeat_up"), Some(0.0), "{text}");
        assert_eq!(
            at(&text, "test_heartbeat_duration_seconds_count"),
            Some(3.0)
        );
        stop.trigger();
        task.await.unwrap();
    }
}
