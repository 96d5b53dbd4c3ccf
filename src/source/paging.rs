//! The one paging loop: every listing the exporter makes (enrollment
//! statuses, account names) follows `nextToken` here, under the same rules.
//!
//! * Every page until the token is absent or empty, as the SDK's own
//!   paginators end a listing.
//! * An empty page that carries a token is followed: AWS cuts a page before
//!   it applies a filter, so a filtered listing (`poll.statuses`) can hand
//!   out many empty pages before the next match.
//! * Loops are impossible all the same: a token seen before in the same
//!   listing, or more pages than [`MAX_ITEMS`] could fill, fails it.
//! * One deadline for the whole listing; each attempt is also cut at
//!   `aws.request_timeout`, which starts when the request is sent: a wait
//!   for a paced turn ([`Pace`]) comes before it, so a slow pace is never
//!   taken for a slow AWS. Failed attempts are retried with full-jitter
//!   exponential backoff, but only while the next attempt could still start
//!   before the deadline: otherwise the listing fails with the error it
//!   actually hit, not a generic timeout.
//! * Every attempt is counted in `aws_compute_optimizer_api_requests_total`.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, SystemTime};

use std::sync::Mutex;

use prometheus::IntCounterVec;

use tokio::time::{Instant, sleep_until, timeout_at};

use crate::config::{PollOptions, format_duration};
use crate::model::Page;
use crate::source::error::{ApiError, PollError};

/// One call that is not a listing (`GetEnrollmentStatus`,
/// `GetEnrollmentConfiguration`): one attempt, within what is left of
/// `deadline` and at most `request_timeout`, counted in `requests` under
/// `operation` as every listing's attempts are. `Ok(None)` when the
/// deadline has passed (nothing was sent) or the source has no such thing
/// to ask (nothing counted); a timeout is the error `timeout`, with
/// `timeout_message`. The caller keeps its last answer on an error.
pub async fn once<T>(
    operation: &'static str,
    deadline: Instant,
    request_timeout: Duration,
    requests: &IntCounterVec,
    timeout_message: &'static str,
    call: impl Future<Output = Result<Option<T>, ApiError>>,
) -> Result<Option<T>, ApiError> {
    let now = Instant::now();
    if now >= deadline {
        return Ok(None);
    }
    let result = match timeout_at(deadline.min(now + request_timeout), call).await {
        Ok(Ok(None)) => return Ok(None),
        Ok(result) => result,
        Err(_) => Err(ApiError::new("timeout", timeout_message, true)),
    };
    let label = match &result {
        Ok(_) => "success",
        Err(e) => e.code.as_str(),
    };
    requests.with_label_values(&[operation, label]).inc();
    result
}

/// No real organisation has more accounts than this; an upstream that keeps
/// handing out new tokens past it is broken, and we stop.
pub const MAX_ITEMS: usize = 1_000_000;

/// Longest wait between two attempts, whatever the backoff doubling says.
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// One listing: what it is called, how it pages, how long it may take.
#[derive(Clone, Copy)]
pub struct Listing<'a> {
    pub operation: &'static str,
    pub page_size: usize,
    pub timeout: Duration,
    pub deadline: Instant,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    pub request_timeout: Duration,
    /// `aws_compute_optimizer_api_requests_total`, where every attempt is
    /// counted by operation and result.
    pub requests: &'a IntCounterVec,
    /// Every attempt, retries included, first waits its turn here.
    pub pace: Option<&'a Pace>,
}

impl<'a> Listing<'a> {
    /// A listing that starts now, with the retry settings of `opts`.
    pub fn new(
        operation: &'static str,
        page_size: usize,
        timeout: Duration,
        opts: &PollOptions,
        requests: &'a IntCounterVec,
    ) -> Listing<'a> {
        Listing {
            operation,
            page_size: page_size.max(1),
            timeout,
            deadline: Instant::now() + timeout,
            max_attempts: opts.max_attempts.max(1),
            retry_backoff: opts.retry_backoff,
            request_timeout: opts.request_timeout,
            requests,
            pace: None,
        }
    }

    /// The same listing, each attempt waiting its turn at `pace` first.
    pub fn paced(self, pace: &'a Pace) -> Listing<'a> {
        Listing {
            pace: Some(pace),
            ..self
        }
    }

    pub fn max_pages(&self) -> usize {
        MAX_ITEMS.div_ceil(self.page_size)
    }
}

/// Spaces requests `1 / rate` apart, across every listing of a refresh,
/// and backs off when the upstream throttles: each throttled attempt
/// doubles the gap (up to [`MAX_SLOWDOWN`] times the configured one), each
/// success takes an eighth of the extra off again. A ceiling of our own is
/// not the upstream's: Organizations' quota is shared with every other
/// tool in the account, so a throttle means the room is smaller today.
#[derive(Debug)]
pub struct Pace {
    state: Mutex<PaceState>,
    base: Duration,
}

#[derive(Debug)]
struct PaceState {
    next: Instant,
    gap: Duration,
}

/// How far throttling can slow a pace down.
pub const MAX_SLOWDOWN: u32 = 16;

impl Pace {
    pub fn new(requests_per_second: f64) -> Pace {
        let base = Duration::from_secs_f64(1.0 / requests_per_second.max(0.001));
        Pace {
            state: Mutex::new(PaceState {
                next: Instant::now(),
                gap: base,
            }),
            base,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PaceState> {
        crate::sync::lock(&self.state)
    }

    /// Resolves at this request's turn.
    pub async fn turn(&self) {
        let at = {
            let mut s = self.state();
            let at = s.next.max(Instant::now());
            s.next = at + s.gap;
            at
        };
        sleep_until(at).await;
    }

    /// The upstream throttled an attempt: slow down.
    pub fn throttled(&self) {
        let mut s = self.state();
        let slower = (s.gap * 2).min(self.base * MAX_SLOWDOWN);
        // The request already scheduled next waits the longer gap too.
        let extra = slower.saturating_sub(s.gap);
        s.next += extra;
        s.gap = slower;
    }

    /// An attempt succeeded: recover towards the configured pace.
    pub fn succeeded(&self) {
        let mut s = self.state();
        let extra = s.gap.saturating_sub(self.base);
        s.gap -= extra / 8;
    }

    /// The gap between two requests now.
    pub fn gap(&self) -> Duration {
        self.state().gap
    }
}

/// Every item of every page.
#[derive(Debug)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub pages: usize,
    pub skipped: usize,
}

impl<T> Listed<T> {
    /// Counts the items skipped (a field missing) under `reason` in
    /// `aws_compute_optimizer_skipped_items_total`.
    pub fn count_skipped(&self, skipped_items: &IntCounterVec, reason: &str) {
        if self.skipped > 0 {
            skipped_items
                .with_label_values(&[reason])
                .inc_by(self.skipped as u64);
        }
    }
}

/// Follows `nextToken` from the first page to the last; `fetch` asks for the
/// page after the token it is given (`None`: the first page).
pub async fn list_all<T, F, Fut>(l: &Listing<'_>, mut fetch: F) -> Result<Listed<T>, PollError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, ApiError>>,
{
    let mut out = Listed {
        items: Vec::new(),
        pages: 0,
        skipped: 0,
    };
    let mut seen = HashSet::new();
    let mut token: Option<String> = None;
    loop {
        let page_no = out.pages + 1;
        if page_no > l.max_pages() {
            return Err(PollError::TooManyPages {
                operation: l.operation,
                limit: l.max_pages(),
            });
        }
        let page = fetch_with_retries(l, page_no, || fetch(token.clone())).await?;
        out.pages = page_no;
        out.skipped += page.skipped;
        out.items.extend(page.items);
        match page.next_token {
            Some(t) if !t.is_empty() => {
                if !seen.insert(t.clone()) {
                    return Err(PollError::RepeatedToken {
                        operation: l.operation,
                        page: page_no,
                    });
                }
                token = Some(t);
            }
            _ => return Ok(out),
        }
    }
}

/// One page, retried within the listing's deadline.
async fn fetch_with_retries<T, F, Fut>(
    l: &Listing<'_>,
    page_no: usize,
    mut attempt_once: F,
) -> Result<Page<T>, PollError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Page<T>, ApiError>>,
{
    let timed_out = || PollError::Timeout {
        operation: l.operation,
        timeout: l.timeout,
        page: page_no,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        if let Some(pace) = l.pace {
            // Waiting for a turn is not waiting for AWS: only the listing's
            // own deadline bounds it.
            if timeout_at(l.deadline, pace.turn()).await.is_err() {
                return Err(timed_out());
            }
        }
        let now = Instant::now();
        if now >= l.deadline {
            return Err(timed_out());
        }
        let attempt_deadline = l.deadline.min(now + l.request_timeout);
        let err = match timeout_at(attempt_deadline, attempt_once()).await {
            Ok(Ok(page)) => {
                l.requests
                    .with_label_values(&[l.operation, "success"])
                    .inc();
                if let Some(pace) = l.pace {
                    pace.succeeded();
                }
                return Ok(page);
            }
            Ok(Err(e)) => e,
            Err(_) => ApiError::new(
                "timeout",
                format!(
                    "no response within {}",
                    format_duration(attempt_deadline - now)
                ),
                true,
            ),
        };
        l.requests
            .with_label_values(&[l.operation, err.code.as_str()])
            .inc();
        if let Some(pace) = l.pace.filter(|_| err.is_throttling()) {
            pace.throttled();
            tracing::debug!(
                operation = l.operation,
                gap_ms = pace.gap().as_millis() as u64,
                "throttled: slowing the pace"
            );
        }
        if err.code == "timeout" && Instant::now() >= l.deadline {
            return Err(timed_out());
        }
        let delay = backoff(l.retry_backoff, attempt);
        // No attempt could start before the deadline: fail with what we hit.
        if !err.retryable || attempt >= l.max_attempts || Instant::now() + delay >= l.deadline {
            return Err(PollError::Api {
                operation: l.operation,
                page: page_no,
                attempts: attempt,
                source: err,
            });
        }
        tracing::debug!(operation = l.operation, page = page_no, attempt, code = %err.code, delay_ms = delay.as_millis() as u64, "retrying page");
        tokio::time::sleep(delay).await;
    }
}

/// Full-jitter exponential backoff: uniform in [0, base * 2^(attempt-1)].
fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16))
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

#[cfg(test)]
mod pace_tests {
    use super::*;

    /// On tokio's paused clock, so the gaps are exact whatever the machine.
    #[tokio::test(start_paused = true)]
    async fn a_throttle_slows_the_pace_and_successes_bring_it_back() {
        let pace = Pace::new(1.0);
        let base = Duration::from_secs(1);
        let start = Instant::now();
        pace.turn().await;
        pace.turn().await;
        assert_eq!(start.elapsed(), base);
        // Throttled twice: four times the gap, the next turn included.
        pace.throttled();
        pace.throttled();
        assert_eq!(pace.gap(), base * 4);
        let before = Instant::now();
        pace.turn().await;
        assert_eq!(before.elapsed(), base * 4);
        // Never slower than MAX_SLOWDOWN times the configured pace.
        for _ in 0..20 {
            pace.throttled();
        }
        assert_eq!(pace.gap(), base * MAX_SLOWDOWN);
        // Successes bring it back, and never below the configured pace.
        for _ in 0..200 {
            pace.succeeded();
        }
        assert!(pace.gap() >= base && pace.gap() < base + Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expose::metrics::OrgMetrics;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn listing(metrics: &OrgMetrics, page_size: usize, timeout: Duration) -> Listing<'_> {
        let mut opts = PollOptions::from_config(&crate::config::Config::default());
        opts.retry_backoff = Duration::from_millis(1);
        Listing::new("Test", page_size, timeout, &opts, &metrics.api_requests)
    }

    fn page(items: Vec<u32>, next: Option<&str>) -> Page<u32> {
        Page {
            items,
            next_token: next.map(str::to_owned),
            skipped: 0,
        }
    }

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

    #[tokio::test]
    async fn an_endless_listing_stops_at_the_page_limit() {
        let metrics = OrgMetrics::new(None);
        let l = listing(&metrics, 100, Duration::from_secs(60));
        let calls = AtomicUsize::new(0);
        let err = list_all(&l, |_| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move { Ok(page(vec![1], Some(&format!("t{n}")))) }
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err, PollError::TooManyPages { limit: 10_000, .. }),
            "{err}"
        );
        assert_eq!(calls.load(Ordering::Relaxed), 10_000);
    }

    #[tokio::test]
    async fn empty_pages_with_a_token_are_followed_to_the_end() {
        let metrics = OrgMetrics::new(None);
        let l = listing(&metrics, 10, Duration::from_secs(10));
        let got = list_all(&l, |token| async move {
            let n: usize = token.map_or(0, |t| t.parse().unwrap());
            // Nine empty pages between two matches, as a filter makes them.
            let items = if n.is_multiple_of(10) {
                vec![n as u32]
            } else {
                vec![]
            };
            Ok(page(
                items,
                (n < 49).then(|| (n + 1).to_string()).as_deref(),
            ))
        })
        .await
        .unwrap();
        assert_eq!(got.pages, 50);
        assert_eq!(got.items, [0, 10, 20, 30, 40]);
    }

    #[tokio::test]
    async fn a_repeated_token_stops_the_listing() {
        let metrics = OrgMetrics::new(None);
        let l = listing(&metrics, 10, Duration::from_secs(10));
        let calls = AtomicUsize::new(0);
        let err = list_all(&l, |_| {
            calls.fetch_add(1, Ordering::Relaxed);
            // Empty, and always the same token: a loop.
            async { Ok(page(vec![], Some("same"))) }
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err, PollError::RepeatedToken { page: 2, .. }),
            "{err}"
        );
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_backoff_past_the_deadline_fails_with_the_cause_it_hit() {
        let metrics = OrgMetrics::new(None);
        let mut l = listing(&metrics, 10, Duration::from_millis(300));
        // Each backoff is up to 10 s: the second attempt can never start in time.
        l.retry_backoff = Duration::from_secs(10);
        l.max_attempts = 10;
        let calls = AtomicUsize::new(0);
        let started = Instant::now();
        let err = list_all(&l, |_| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move {
                if n == 0 {
                    // Fails with 5 ms of the deadline left.
                    tokio::time::sleep(Duration::from_millis(295)).await;
                    Err(ApiError::new("ThrottlingException", "slow down", true))
                } else {
                    Ok(page(vec![], None))
                }
            }
        })
        .await;
        // Jitter draws a delay under 5 ms one time in 2,000: then the retry
        // starts in time and the page succeeds.
        match err {
            Ok(_) => assert_eq!(calls.load(Ordering::Relaxed), 2),
            Err(e) => {
                assert_eq!(e.code(), "ThrottlingException", "{e}");
                assert!(e.to_string().contains("after 1 attempt(s)"), "{e}");
                // It fails at once instead of sleeping to the deadline first.
                assert!(started.elapsed() < Duration::from_millis(300 + 200));
            }
        }
    }
}
