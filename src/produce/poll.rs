//! The poller: pages through the organisation on an interval.
//!
//! Following yet-another-cloudwatch-exporter: poll once at start, never
//! overlap polls, page under one deadline (the rules are in [`crate::source::paging`]),
//! and publish only a complete organisation, in one swap. A failed poll
//! leaves the last good data exactly as it was.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, timeout_at};

use crate::config::{PollOptions, format_duration};
use crate::expose::metrics::OrgMetrics;
use crate::model::{Accounts, OrgStatus, PageRequest, Snapshot};
use crate::produce::{Health, Producer, Round, Stopped, drive};
use crate::shutdown::Shutdown;
use crate::source::error::{ApiError, PollError};
use crate::source::paging::{self, Listing};
use crate::source::{ENROLLMENTS, ORG_STATUS, PageSource};
use crate::state::{Org, Published};

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
        let (org, opts, span) = (
            self.org.clone(),
            self.opts.clone(),
            tracing::Span::current(),
        );
        self.published =
            tokio::task::spawn_blocking(move || span.in_scope(|| org.publish(result, took, &opts)))
                .await
                .ok();
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
    let now = Instant::now();
    if now >= deadline {
        return None;
    }
    let result = timeout_at(
        deadline.min(now + opts.request_timeout),
        source.fetch_org_status(),
    )
    .await;
    let err = match result {
        Ok(Ok(None)) => return None,
        Ok(Ok(Some(org))) => {
            state.count_request(ORG_STATUS, "success");
            return Some(org);
        }
        Ok(Err(e)) => e,
        Err(_) => ApiError::new("timeout", "no response before the poll deadline", true),
    };
    state.count_request(ORG_STATUS, &err.code);
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
