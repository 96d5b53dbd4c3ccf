//! The poller: pages through the organisation on an interval.
//!
//! Following yet-another-cloudwatch-exporter: poll once at start, never
//! overlap polls, page under one deadline (the rules are in [`crate::source::paging`]),
//! and publish only a complete organisation, in one swap. A failed poll
//! leaves the last good data exactly as it was.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::config::{PollOptions, format_duration};
use crate::expose::exposition::{Segment, render_in_turn};
use crate::expose::metrics::OrgMetrics;
use crate::expose::metrics::render_poll;
use crate::model::Status;
use crate::model::{Accounts, OrgStatus, PageRequest, Snapshot};
use crate::produce::{Health, Producer, Round, Stopped, blocking, drive};
use crate::shutdown::Shutdown;
use crate::source::error::PollError;
use crate::source::paging::{self, Listing};
use crate::source::{ENROLLMENTS, ORG_STATUS, PageSource};
use crate::state::{Org, PollOutcome};

/// A successful poll that used more than this share of `poll.timeout` is
/// close to failing: it is logged as a warning.
const SLOW_POLL_SHARE: f64 = 0.8;

/// The enrollment poll as a producer: a round is one complete poll and its
/// publish; rounds start `poll.interval` apart (start to start).
pub struct Poll<S> {
    source: S,
    opts: PollOptions,
    org: Arc<Org>,
    /// What the latest round's publish has to log, once it is recorded.
    published: Option<Published>,
}

impl<S: PageSource> Poll<S> {
    pub fn new(source: S, opts: PollOptions, org: Arc<Org>) -> Poll<S> {
        Poll {
            source,
            opts,
            org,
            published: None,
        }
    }
}

/// The poll's health series: `aws_compute_optimizer_up`, its last success,
/// the duration of polls and their count by outcome.
pub fn health(m: &OrgMetrics) -> Health {
    Health {
        up: m.up.clone(),
        last_success: m.last_success.clone(),
        duration: Some(m.poll_duration.clone()),
        rounds: Some(m.polls.clone()),
    }
}

impl<S: PageSource> Producer for Poll<S> {
    async fn start(&mut self, _stop: &Shutdown) -> Result<(), Stopped> {
        let m = &self.org.metrics;
        m.poll_interval.set(self.opts.interval.as_secs_f64());
        Ok(())
    }

    async fn round(&mut self, stop: &Shutdown) -> Result<Round, Stopped> {
        let started = Instant::now();
        let result = tokio::select! {
            r = poll_once(&self.source, &self.opts, &self.org) => r,
            _ = stop.wait() => return Err(Stopped),
        };
        let took = started.elapsed();
        let ok = result.is_ok();
        if ok {
            warn_if_slow(took, &self.opts);
        }
        // Rendering a large organisation takes a while: keep it off the
        // runtime's worker threads so scrapes are never held up. In the
        // poll's span, so the lines it logs name the organisation (a
        // blocking thread does not inherit it). Never raced against stop.
        let (org, opts) = (self.org.clone(), self.opts.clone());
        self.published = blocking(move || publish(&org, result, took, &opts)).await;
        Ok(Round {
            ok,
            took: Some(took),
        })
    }

    fn next_round(&mut self, started: Instant, _round: Round) -> Instant {
        started + self.opts.interval
    }

    fn recorded(&mut self, _round: Round) {
        if let Some(published) = self.published.take() {
            published.log();
        }
    }
}

/// Polls now, then every `interval` (start to start), until shutdown.
pub async fn run<S: PageSource>(source: S, opts: PollOptions, org: Arc<Org>, shutdown: Shutdown) {
    let health = health(&org.metrics);
    drive(Poll::new(source, opts, org.clone()), health, org, shutdown).await;
}

/// What a poll's publish has to say, logged once its health is recorded.
#[derive(Debug, Clone)]
pub enum Published {
    Success {
        accounts: usize,
        pages: usize,
        took: Duration,
    },
    Failure {
        took: Duration,
        code: String,
        error: String,
        advice: String,
    },
}

impl Published {
    pub fn log(&self) {
        match self {
            Published::Success {
                accounts,
                pages,
                took,
            } => tracing::info!(
                accounts,
                pages,
                duration_ms = took.as_millis() as u64,
                outcome = "success",
                "poll finished"
            ),
            Published::Failure {
                took,
                code,
                error,
                advice,
            } => tracing::error!(
                duration_ms = took.as_millis() as u64,
                outcome = "failure",
                code,
                error,
                advice,
                "poll failed; keeping the last good data"
            ),
        }
    }
}

/// Publishes a finished poll: a complete organisation rendered and swapped
/// in, or the last good one kept. Its health is the driver's to record, and
/// the line to log is returned, to be logged once that is done: the log
/// never runs ahead of `/metrics`.
pub fn publish(
    org: &Org,
    result: Result<Snapshot, PollError>,
    took: Duration,
    opts: &PollOptions,
) -> Published {
    // Only the poll writes the snapshot, so this reads the previous one.
    let result = result.map(|mut snap| {
        if snap.org.is_none() {
            // GetEnrollmentStatus failed this time: keep its last answer.
            snap.org = org.snapshot().org.clone();
        }
        snap
    });
    match result {
        Ok(snap) => {
            // Rendered and compressed before the lock: the walk publishes meanwhile.
            let segment = render_in_turn(|| Segment::new(render_poll(&snap, org.name.as_deref())));
            let previous = org.snapshot();
            log_changes(&previous, &snap);
            count_transitions(org, &previous, &snap);
            let finished = snap.finished_at.unwrap_or_else(SystemTime::now);
            let (accounts, pages) = (snap.accounts.len(), snap.pages);
            let outcome = PollOutcome {
                finished_at: finished,
                duration: took,
                error: None,
            };
            org.set_poll(Some((snap, segment)), outcome);
            Published::Success {
                accounts,
                pages,
                took,
            }
        }
        Err(err) => {
            let published = Published::Failure {
                took,
                code: err.code().to_owned(),
                error: err.to_string(),
                advice: err.advice(opts).unwrap_or_default(),
            };
            let outcome = PollOutcome {
                finished_at: SystemTime::now(),
                duration: took,
                error: Some(err.to_string()),
            };
            org.set_poll(None, outcome);
            published
        }
    }
}

/// Counts each account whose status changed since the previous poll.
fn count_transitions(org: &Org, previous: &Snapshot, next: &Snapshot) {
    if previous.finished_at.is_none() {
        return;
    }
    let label = |s: &Status| {
        if s.is_known() {
            s.as_str().to_owned()
        } else {
            "other".into()
        }
    };
    for account in &next.accounts {
        if let Some(old) = previous.accounts.get(&account.account_id)
            && old.status != account.status
        {
            org.metrics
                .transitions
                .with_label_values(&[label(&old.status), label(&account.status)])
                .inc();
        }
    }
}

/// One log line per account whose status changed, appeared or vanished.
/// The first poll establishes the baseline and logs nothing per account.
fn log_changes(previous: &Snapshot, next: &Snapshot) {
    if previous.finished_at.is_none() {
        return;
    }
    for account in &next.accounts {
        let id = &account.account_id;
        match previous.accounts.get(id) {
            Some(old) if old.status == account.status => {}
            Some(old) => tracing::info!(
                account_id = %id,
                from = %old.status,
                to = %account.status,
                reason = account.status_reason.as_deref().unwrap_or(""),
                "enrollment status changed"
            ),
            None => tracing::info!(
                account_id = %id,
                to = %account.status,
                reason = account.status_reason.as_deref().unwrap_or(""),
                "account appeared"
            ),
        }
    }
    for id in previous.accounts.values().map(|a| &a.account_id) {
        if !next.accounts.contains_key(id) {
            tracing::info!(account_id = %id, "account no longer listed");
        }
    }
}

fn warn_if_slow(took: Duration, opts: &PollOptions) {
    let share = took.as_secs_f64() / opts.timeout.as_secs_f64();
    if share > SLOW_POLL_SHARE {
        let raise = if opts.timeout >= opts.interval {
            "raise poll.interval (poll.timeout follows it unless set)"
        } else {
            "raise poll.timeout"
        };
        tracing::warn!(
            duration = %format_duration(took),
            timeout = %format_duration(opts.timeout),
            percent = (share * 100.0).round() as u64,
            advice = raise,
            "poll succeeded but used most of poll.timeout; a slightly slower organisation will fail"
        );
    }
}

/// One complete poll: every page, under one deadline.
pub async fn poll_once<S: PageSource>(
    source: &S,
    opts: &PollOptions,
    state: &Org,
) -> Result<Snapshot, PollError> {
    let listing = Listing::new(
        ENROLLMENTS,
        usize::from(opts.page_size),
        opts.timeout,
        opts,
        &state.metrics.api_requests,
    );
    let listed = paging::list_all(&listing, |next_token| {
        let req = PageRequest {
            max_results: opts.page_size,
            next_token,
            statuses: opts.statuses.clone(),
        };
        async move { source.fetch_page(&req).await }
    })
    .await?;
    listed.count_skipped(
        &state.metrics.accounts_skipped,
        crate::expose::metrics::SKIPPED_MISSING,
    );
    let mut snap = Snapshot {
        pages: listed.pages,
        accounts: Accounts::from_listed(listed.items),
        ..Snapshot::default()
    };
    snap.org = fetch_org_status(source, opts, state, listing.deadline).await;
    snap.finished_at = Some(SystemTime::now());
    Ok(snap)
}

/// One attempt at `GetEnrollmentStatus` within what is left of the deadline.
/// Its failure is counted and logged but never fails the poll.
async fn fetch_org_status<S: PageSource>(
    source: &S,
    opts: &PollOptions,
    state: &Org,
    deadline: Instant,
) -> Option<OrgStatus> {
    let err = match paging::once(
        ORG_STATUS,
        deadline,
        opts.request_timeout,
        &state.metrics.api_requests,
        "no response before the poll deadline",
        source.fetch_org_status(),
    )
    .await
    {
        Ok(org) => return org,
        Err(e) => e,
    };
    tracing::warn!(
        code = %err.code,
        error = %err,
        advice = "grant compute-optimizer:GetEnrollmentStatus to see the organisation-wide opt-in; the per-account data is unaffected",
        "GetEnrollmentStatus failed; keeping its last answer"
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use crate::source::error::ApiError;

    #[test]
    fn advice_says_what_to_fix() {
        let mut o = PollOptions::from_config(&crate::config::Config::default());
        o.page_size = 50;
        o.statuses = vec![Status::Pending];
        o.role_arn = Some("arn:aws:iam::1:role/r".into());
        o.endpoint_url = Some("https://vpce-1.compute-optimizer.example".into());
        let api = |code: &str| PollError::Api {
            operation: ENROLLMENTS,
            page: 1,
            attempts: 1,
            source: ApiError::new(code, "x", false),
        };
        let denied = api("AccessDeniedException").advice(&o).unwrap();
        assert!(denied.contains("compute-optimizer:GetEnrollmentStatusesForOrganization"));
        assert!(denied.contains("management account or a delegated administrator"));
        assert!(denied.contains("arn:aws:iam::1:role/r"));
        let invalid = api("InvalidParameterValueException").advice(&o).unwrap();
        assert!(invalid.contains("maxResults=50"), "{invalid}");
        assert!(invalid.contains("[\"Pending\"]"), "{invalid}");
        let network = api("network").advice(&o).unwrap();
        for needle in ["DNS", "egress", "HTTPS_PROXY", "vpce-1.compute-optimizer"] {
            assert!(network.contains(needle), "{needle}: {network}");
        }
        // STS unreachable for the role hop: a network failure, about STS.
        let sts = PollError::Api {
            operation: ENROLLMENTS,
            page: 1,
            attempts: 3,
            source: ApiError::new(
                "network",
                "an error occurred while loading credentials: dispatch failure: io error",
                true,
            ),
        };
        let sts = sts.advice(&o).unwrap();
        assert!(sts.contains("aws.sts_endpoint_url"), "{sts}");
        assert!(!sts.contains("compute-optimizer:"), "{sts}");
        let throttled = api("ThrottlingException").advice(&o).unwrap();
        assert!(throttled.contains("poll.interval"), "{throttled}");
        let repeated = PollError::RepeatedToken {
            operation: ENROLLMENTS,
            page: 2,
        };
        assert!(repeated.advice(&o).is_none());
    }
}
