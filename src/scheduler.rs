//! The poller: pages through the organisation on an interval.
//!
//! Following yet-another-cloudwatch-exporter: poll once at start, never
//! overlap polls, follow every `nextToken` under one deadline, retry failed
//! attempts with jittered exponential backoff, count every attempt, stop on a
//! repeated token, and publish only a complete organisation, in one swap.
//! A failed poll leaves the last good data exactly as it was.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, sleep_until, timeout_at};

use crate::error::{ApiError, PollError};
use crate::model::{OrgStatus, Page, PageRequest, Snapshot, Status};
use crate::shutdown::Shutdown;
use crate::state::State;

/// Anything that can serve pages of enrollment statuses: the AWS client, or
/// the simulated organisation of `--demo`.
pub trait PageSource: Send + Sync + 'static {
    /// Operation name used in the `operation` label.
    fn operation(&self) -> &'static str;
    fn fetch_page(&self, req: &PageRequest) -> impl Future<Output = Result<Page, ApiError>> + Send;

    /// The calling account's own enrollment (`GetEnrollmentStatus`), asked
    /// once per poll; `Ok(None)` where a source has no such thing.
    fn fetch_org_status(&self) -> impl Future<Output = Result<Option<OrgStatus>, ApiError>> + Send {
        async { Ok(None) }
    }
}

pub const ORG_STATUS_OPERATION: &str = "GetEnrollmentStatus";

/// No real organisation has more accounts than this; an upstream that keeps
/// handing out new tokens past it is broken, and we stop.
pub const MAX_ACCOUNTS: usize = 1_000_000;

/// Longest wait between two attempts, whatever the backoff doubling says.
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// Everything one poll needs to know.
#[derive(Debug, Clone)]
pub struct PollOptions {
    pub interval: Duration,
    pub timeout: Duration,
    pub page_size: u8,
    pub statuses: Vec<Status>,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    pub request_timeout: Duration,
    /// Only for the advice in error logs.
    pub role_arn: Option<String>,
}

impl PollOptions {
    pub fn from_config(c: &crate::config::Config) -> PollOptions {
        PollOptions {
            interval: c.poll.interval,
            timeout: c.poll.timeout,
            // Validated to 1..=100 at load time.
            page_size: c.poll.page_size.clamp(1, 100) as u8,
            statuses: c.poll.status_filter(),
            max_attempts: c.aws.max_attempts.max(1),
            retry_backoff: c.aws.retry_backoff,
            request_timeout: c.aws.request_timeout,
            role_arn: c.aws.role_arn.clone(),
        }
    }

    fn max_pages(&self) -> usize {
        MAX_ACCOUNTS.div_ceil(usize::from(self.page_size.max(1)))
    }
}

/// Polls now, then every `interval` (start to start), until shutdown.
pub async fn run<S: PageSource>(
    source: S,
    opts: PollOptions,
    state: Arc<State>,
    shutdown: Shutdown,
) {
    state.metrics.poll_interval.set(opts.interval.as_secs_f64());
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            r = poll_once(&source, &opts, &state) => r,
            _ = shutdown.wait() => return,
        };
        // Rendering a large organisation takes a while: keep it off the
        // runtime's worker threads so scrapes are never held up.
        let (st, o, took) = (state.clone(), opts.clone(), started.elapsed());
        let _ = tokio::task::spawn_blocking(move || st.publish(result, took, &o)).await;
        tokio::select! {
            _ = sleep_until(started + opts.interval) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// One complete poll: every page, under one deadline.
pub async fn poll_once<S: PageSource>(
    source: &S,
    opts: &PollOptions,
    state: &State,
) -> Result<Snapshot, PollError> {
    let deadline = Instant::now() + opts.timeout;
    let mut snap = Snapshot::default();
    let mut seen_tokens = HashSet::new();
    let mut req = PageRequest {
        max_results: opts.page_size,
        next_token: None,
        statuses: opts.statuses.clone(),
    };
    loop {
        let page_no = snap.pages + 1;
        if page_no > opts.max_pages() {
            return Err(PollError::TooManyPages {
                limit: opts.max_pages(),
            });
        }
        let page = fetch_with_retries(source, &req, opts, state, deadline, page_no).await?;
        snap.pages = page_no;
        if page.skipped > 0 {
            state
                .metrics
                .accounts_skipped
                .with_label_values(&["missing_account_id_or_status"])
                .inc_by(page.skipped as u64);
        }
        let empty = page.accounts.is_empty() && page.skipped == 0;
        for account in page.accounts {
            snap.accounts.insert(account.account_id.clone(), account);
        }
        match page.next_token {
            // An empty token ends the listing, as the SDK's own paginator treats it.
            None => break,
            Some(t) if t.is_empty() => break,
            Some(_) if empty => return Err(PollError::EmptyPageWithToken { page: page_no }),
            Some(t) => {
                if !seen_tokens.insert(t.clone()) {
                    return Err(PollError::RepeatedToken { page: page_no });
                }
                req.next_token = Some(t);
            }
        }
    }
    snap.org = fetch_org_status(source, opts, state, deadline).await;
    snap.finished_at = Some(SystemTime::now());
    Ok(snap)
}

/// One attempt at `GetEnrollmentStatus` within what is left of the deadline.
/// Its failure is counted and logged but never fails the poll.
async fn fetch_org_status<S: PageSource>(
    source: &S,
    opts: &PollOptions,
    state: &State,
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
            state.count_request(ORG_STATUS_OPERATION, "success");
            return Some(org);
        }
        Ok(Err(e)) => e,
        Err(_) => ApiError::new("timeout", "no response before the poll deadline", true),
    };
    state.count_request(ORG_STATUS_OPERATION, &err.code);
    tracing::warn!(
        code = %err.code,
        error = %err,
        advice = "grant compute-optimizer:GetEnrollmentStatus to see the organisation-wide opt-in; the per-account data is unaffected",
        "GetEnrollmentStatus failed; keeping its last answer"
    );
    None
}

async fn fetch_with_retries<S: PageSource>(
    source: &S,
    req: &PageRequest,
    opts: &PollOptions,
    state: &State,
    deadline: Instant,
    page_no: usize,
) -> Result<Page, PollError> {
    let timed_out = || PollError::Timeout {
        timeout: opts.timeout,
        page: page_no,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let now = Instant::now();
        if now >= deadline {
            return Err(timed_out());
        }
        let attempt_deadline = deadline.min(now + opts.request_timeout);
        let result = timeout_at(attempt_deadline, source.fetch_page(req)).await;
        let err = match result {
            Ok(Ok(page)) => {
                state.count_request(source.operation(), "success");
                return Ok(page);
            }
            Ok(Err(e)) => e,
            Err(_) => ApiError::new(
                "timeout",
                format!(
                    "no response within {}",
                    crate::config::format_duration(attempt_deadline - now)
                ),
                true,
            ),
        };
        state.count_request(source.operation(), &err.code);
        if err.code == "timeout" && Instant::now() >= deadline {
            return Err(timed_out());
        }
        if !err.retryable || attempt >= opts.max_attempts {
            return Err(PollError::Api {
                page: page_no,
                attempts: attempt,
                source: err,
            });
        }
        let delay = backoff(opts.retry_backoff, attempt);
        tracing::debug!(page = page_no, attempt, code = %err.code, delay_ms = delay.as_millis() as u64, "retrying page");
        if Instant::now() + delay >= deadline {
            sleep_until(deadline).await;
            return Err(timed_out());
        }
        tokio::time::sleep(delay).await;
    }
}

/// Full-jitter exponential backoff: uniform in [0, base * 2^(attempt-1)].
fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << (attempt - 1).min(16))
        .min(MAX_BACKOFF);
    ceiling.mul_f64(random_unit())
}

/// A uniform number in [0, 1) from std's randomly seeded hasher; jitter needs
/// no more than that.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Advice for the log line of a failed poll: what is wrong and how to fix it.
pub fn advice(err: &PollError, opts: &PollOptions) -> Option<String> {
    let role = match &opts.role_arn {
        Some(r) => format!(" (the exporter assumes role {r}: check that role's policy and trust)"),
        None => String::new(),
    };
    match err.code() {
        "AccessDeniedException"
        | "MissingAuthenticationToken"
        | "credentials"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "ExpiredTokenException"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch" => Some(format!(
            "the credentials need IAM permission compute-optimizer:GetEnrollmentStatusesForOrganization, and the call must come from the organisation's management account or a delegated administrator for Compute Optimizer{role}"
        )),
        "InvalidParameterValueException" => Some(format!(
            "the request was rejected as invalid: maxResults={} statuses={:?}; check poll.page_size and poll.statuses",
            opts.page_size,
            opts.statuses.iter().map(Status::as_str).collect::<Vec<_>>()
        )),
        "ThrottlingException" => {
            Some("AWS is throttling the exporter: raise poll.interval or aws.max_attempts".into())
        }
        "timeout" => Some(format!(
            "raise poll.timeout (now {}) or aws.request_timeout (now {})",
            crate::config::format_duration(opts.timeout),
            crate::config::format_duration(opts.request_timeout)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let base = Duration::from_millis(100);
        let mut distinct = HashSet::new();
        for attempt in 1..=20 {
            let d = backoff(base, attempt);
            let ceiling = (base * 2u32.pow((attempt - 1).min(16))).min(MAX_BACKOFF);
            assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
            distinct.insert(d);
        }
        assert!(distinct.len() > 10, "no jitter: {distinct:?}");
    }

    /// An upstream that never stops handing out fresh tokens.
    struct Endless(std::sync::atomic::AtomicUsize);

    impl PageSource for Endless {
        fn operation(&self) -> &'static str {
            "Test"
        }

        async fn fetch_page(&self, _: &PageRequest) -> Result<Page, ApiError> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Page {
                accounts: vec![crate::model::Account {
                    account_id: format!("{n:012}"),
                    status: Status::Active,
                    status_reason: None,
                    last_updated: None,
                }],
                next_token: Some(format!("t{n}")),
                skipped: 0,
            })
        }
    }

    #[tokio::test]
    async fn an_endless_listing_stops_at_the_page_limit() {
        let mut opts = PollOptions::from_config(&crate::config::Config::default());
        opts.timeout = Duration::from_secs(60);
        let state = State::new("t", "t");
        let source = Endless(Default::default());
        let err = poll_once(&source, &opts, &state).await.unwrap_err();
        assert!(
            matches!(err, PollError::TooManyPages { limit: 10_000 }),
            "{err}"
        );
        assert_eq!(source.0.load(std::sync::atomic::Ordering::Relaxed), 10_000);
    }

    #[test]
    fn advice_says_what_to_fix() {
        let mut o = PollOptions::from_config(&crate::config::Config::default());
        o.page_size = 50;
        o.statuses = vec![Status::Pending];
        o.role_arn = Some("arn:aws:iam::1:role/r".into());
        let api = |code: &str| PollError::Api {
            page: 1,
            attempts: 1,
            source: ApiError::new(code, "x", false),
        };
        let denied = advice(&api("AccessDeniedException"), &o).unwrap();
        assert!(denied.contains("compute-optimizer:GetEnrollmentStatusesForOrganization"));
        assert!(denied.contains("management account or a delegated administrator"));
        assert!(denied.contains("arn:aws:iam::1:role/r"));
        let invalid = advice(&api("InvalidParameterValueException"), &o).unwrap();
        assert!(invalid.contains("maxResults=50"), "{invalid}");
        assert!(invalid.contains("[\"Pending\"]"), "{invalid}");
        assert!(advice(&PollError::RepeatedToken { page: 2 }, &o).is_none());
    }

    #[test]
    fn page_limit_depends_on_page_size() {
        let mut o = PollOptions::from_config(&crate::config::Config::default());
        assert_eq!(o.max_pages(), 10_000);
        o.page_size = 1;
        assert_eq!(o.max_pages(), MAX_ACCOUNTS);
    }
}
