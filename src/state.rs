//! What the producers publish and the HTTP server reads.
//!
//! Each producer owns a segment of `/metrics` (the enrollment poll its
//! statuses, the organisation walk `account_info`), renders and compresses
//! it on its own, off every lock, and publishes by swapping its segment and
//! splicing a new [`Exposition`] (`Arc` swaps under a lock held for
//! microseconds). A scrape sees either the whole previous segment or the
//! whole new one, never waits for a producer, and one producer's news never
//! re-renders the other's segment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use crate::config::PollOptions;
use crate::error::PollError;
use crate::exposition::{Exposition, Segment};
use crate::metrics::{SelfMetrics, render_poll, render_walk};
use crate::model::{Directory, Learned, Snapshot, Status, unix_seconds};

/// Outcome of the latest poll, for the landing and status pages.
#[derive(Debug, Clone)]
pub struct PollOutcome {
    pub finished_at: SystemTime,
    pub duration: Duration,
    pub error: Option<String>,
}

pub struct State {
    pub metrics: SelfMetrics,
    pub version: &'static str,
    snapshot: RwLock<Arc<Snapshot>>,
    names: RwLock<Arc<Directory>>,
    /// The walk's segment (`account_info`) and the poll's, spliced into
    /// `exposition`.
    walk_segment: RwLock<Arc<Segment>>,
    poll_segment: RwLock<Arc<Segment>>,
    exposition: RwLock<Arc<Exposition>>,
    last_poll: RwLock<Option<PollOutcome>>,
    /// When the walk's data was learned (saved with it to storage).
    learned: Mutex<Learned>,
    ready: AtomicBool,
    simulated: AtomicBool,
    /// Serialises the swaps and splices of the two producers (microseconds;
    /// never held while rendering or compressing), so neither can splice
    /// the other's older segment over its newer one.
    publishing: Mutex<()>,
}

impl State {
    pub fn new(version: &'static str, revision: &str) -> State {
        State {
            metrics: SelfMetrics::new(version, revision),
            version,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            names: RwLock::new(Arc::new(Directory::default())),
            walk_segment: RwLock::new(Arc::new(Segment::empty())),
            poll_segment: RwLock::new(Arc::new(Segment::empty())),
            exposition: RwLock::new(Arc::new(Exposition::empty())),
            last_poll: RwLock::new(None),
            learned: Mutex::new(Learned::default()),
            ready: AtomicBool::new(false),
            simulated: AtomicBool::new(false),
            publishing: Mutex::new(()),
        }
    }

    /// Marks the data as simulated (`--demo`), for the pages.
    pub fn set_simulated(&self, simulated: bool) {
        self.simulated.store(simulated, Ordering::Relaxed);
    }

    pub fn is_simulated(&self) -> bool {
        self.simulated.load(Ordering::Relaxed)
    }

    /// True once a poll has finished, successfully or not (readiness): from
    /// then on a scrape says something true, either the statuses or
    /// `aws_compute_optimizer_up 0` with the last good data.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        read(&self.snapshot).clone()
    }

    pub fn names(&self) -> Arc<Directory> {
        read(&self.names).clone()
    }

    /// Publishes new account names (from AWS Organizations): the walk's
    /// segment only; the poll's stays as it is.
    pub fn set_names(&self, names: Directory) {
        if *self.names() == names {
            return;
        }
        let segment = Arc::new(Segment::new(render_walk(&names)));
        let _publishing = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        *write(&self.names) = Arc::new(names);
        *write(&self.walk_segment) = segment;
        self.splice();
    }

    /// A new exposition from the current segments (called under `publishing`).
    fn splice(&self) {
        let walk = read(&self.walk_segment).clone();
        let poll = read(&self.poll_segment).clone();
        *write(&self.exposition) = Arc::new(Exposition::spliced(vec![walk, poll]));
    }

    pub fn learned(&self) -> Learned {
        *self.learned.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_learned(&self, learned: Learned) {
        *self.learned.lock().unwrap_or_else(|e| e.into_inner()) = learned;
    }

    /// `aws_compute_optimizer_organizations_up` and, on success, its
    /// last-success timestamp: the latest walk, tags included, succeeded.
    pub fn set_organizations_up(&self, ok: bool) {
        let m = &self.metrics;
        m.organizations_up
            .with_label_values(&[] as &[&str])
            .set(if ok { 1.0 } else { 0.0 });
        if ok {
            m.organizations_last_success
                .with_label_values(&[] as &[&str])
                .set(unix_seconds(SystemTime::now()));
        }
    }

    /// `aws_compute_optimizer_organizations_complete`.
    pub fn set_organizations_complete(&self, complete: bool) {
        self.metrics
            .organizations_complete
            .with_label_values(&[] as &[&str])
            .set(if complete { 1.0 } else { 0.0 });
    }

    /// Names switched off: the walk's series and its health go.
    pub fn forget_organizations(&self) {
        let m = &self.metrics;
        m.organizations_up.reset();
        m.organizations_last_success.reset();
        m.organizations_complete.reset();
        self.set_learned(Learned::default());
        self.set_names(Directory::default());
    }

    pub fn exposition(&self) -> Arc<Exposition> {
        read(&self.exposition).clone()
    }

    pub fn last_poll(&self) -> Option<PollOutcome> {
        read(&self.last_poll).clone()
    }

    pub fn count_request(&self, operation: &str, result: &str) {
        self.metrics
            .api_requests
            .with_label_values(&[operation, result])
            .inc();
    }

    /// Records a finished poll: swaps in a complete organisation, or keeps the
    /// last good one and marks the exporter down.
    pub fn publish(&self, result: Result<Snapshot, PollError>, took: Duration, opts: &PollOptions) {
        // Only the poll writes the snapshot, so this reads the previous one.
        let result = result.map(|mut snap| {
            if snap.org.is_none() {
                // GetEnrollmentStatus failed this time: keep its last answer.
                snap.org = self.snapshot().org.clone();
            }
            snap
        });
        // Rendered and compressed before the lock: the walk publishes meanwhile.
        let segment = result
            .as_ref()
            .ok()
            .map(|snap| Arc::new(Segment::new(render_poll(snap))));
        let _publishing = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        let m = &self.metrics;
        m.poll_duration.observe(took.as_secs_f64());
        let outcome = match result {
            Ok(snap) => {
                let previous = self.snapshot();
                log_changes(&previous, &snap);
                self.count_transitions(&previous, &snap);
                let finished = snap.finished_at.unwrap_or_else(SystemTime::now);
                let (accounts, pages) = (snap.accounts.len(), snap.pages);
                let outcome = PollOutcome {
                    finished_at: finished,
                    duration: took,
                    error: None,
                };
                if let Some(segment) = segment {
                    *write(&self.poll_segment) = segment;
                }
                *write(&self.snapshot) = Arc::new(snap);
                self.splice();
                m.up.set(1.0);
                m.last_success.set(unix_seconds(finished));
                m.polls.with_label_values(&["success"]).inc();
                // Logged once published, so the log never runs ahead of /metrics.
                tracing::info!(
                    accounts,
                    pages,
                    duration_ms = took.as_millis() as u64,
                    outcome = "success",
                    "poll finished"
                );
                outcome
            }
            Err(err) => {
                let advice = err.advice(opts);
                m.up.set(0.0);
                m.polls.with_label_values(&["failure"]).inc();
                // The live part cached for up to 100 ms still says up 1.
                self.exposition().forget_live();
                tracing::error!(
                    duration_ms = took.as_millis() as u64,
                    outcome = "failure",
                    code = err.code(),
                    error = %err,
                    advice = advice.as_deref().unwrap_or(""),
                    "poll failed; keeping the last good data"
                );
                PollOutcome {
                    finished_at: SystemTime::now(),
                    duration: took,
                    error: Some(err.to_string()),
                }
            }
        };
        *write(&self.last_poll) = Some(outcome);
        // Ready once there is an outcome to report, good or bad: a failing
        // exporter must still be scraped, or nothing alerts on it.
        self.ready.store(true, Ordering::Release);
    }
}

impl State {
    fn count_transitions(&self, previous: &Snapshot, next: &Snapshot) {
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
        for (id, account) in &next.accounts {
            if let Some(old) = previous.accounts.get(id)
                && old.status != account.status
            {
                self.metrics
                    .transitions
                    .with_label_values(&[label(&old.status), label(&account.status)])
                    .inc();
            }
        }
    }
}

/// One log line per account whose status changed, appeared or vanished.
/// The first poll establishes the baseline and logs nothing per account.
fn log_changes(previous: &Snapshot, next: &Snapshot) {
    if previous.finished_at.is_none() {
        return;
    }
    for (id, account) in &next.accounts {
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
    for id in previous.accounts.keys() {
        if !next.accounts.contains_key(id) {
            tracing::info!(account_id = %id, "account no longer listed");
        }
    }
}

// A panic while holding these locks cannot leave the data half-written (we
// only ever swap whole values), so poisoning is safe to ignore.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn body(state: &State) -> String {
        let format = crate::openmetrics::Format::Text;
        let body = state
            .exposition()
            .body(format, false, || state.metrics.encode(format));
        String::from_utf8_lossy(&body.concat()).into_owned()
    }

    #[test]
    fn each_producer_swaps_only_its_own_segment() {
        use crate::model::{AccountInfo, Directory};
        let state = State::new("test", "test");
        let opts = PollOptions::from_config(&Config::default());
        let snap = Snapshot {
            finished_at: Some(SystemTime::now()),
            ..Snapshot::default()
        };
        state.publish(Ok(snap), Duration::from_millis(5), &opts);
        let poll = read(&state.poll_segment).clone();
        let mut names = Directory::default();
        names.accounts.insert(
            "111111111111".into(),
            AccountInfo {
                name: "a".into(),
                ..AccountInfo::default()
            },
        );
        state.set_names(names);
        // The walk's news spliced in; the poll's segment not rendered again.
        assert!(Arc::ptr_eq(&poll, &read(&state.poll_segment)));
        let text = body(&state);
        assert!(text.contains("aws_compute_optimizer_account_info{account_id=\"111111111111\""));
        assert!(text.contains("aws_compute_optimizer_enrollment_accounts{status=\"Active\"} 0"));
        // And the poll's news leaves the walk's segment alone.
        let walk = read(&state.walk_segment).clone();
        let snap = Snapshot {
            finished_at: Some(SystemTime::now()),
            ..Snapshot::default()
        };
        state.publish(Ok(snap), Duration::from_millis(5), &opts);
        assert!(Arc::ptr_eq(&walk, &read(&state.walk_segment)));
        assert!(!Arc::ptr_eq(&poll, &read(&state.poll_segment)));
    }

    #[test]
    fn a_failed_poll_shows_at_once_not_after_the_live_part_expires() {
        let state = State::new("test", "test");
        let opts = PollOptions::from_config(&Config::default());
        let snap = Snapshot {
            finished_at: Some(SystemTime::now()),
            ..Snapshot::default()
        };
        state.publish(Ok(snap), Duration::from_millis(5), &opts);
        assert!(body(&state).contains("\naws_compute_optimizer_up 1\n"));
        let failure = PollError::RepeatedToken {
            operation: "GetEnrollmentStatusesForOrganization",
            page: 2,
        };
        state.publish(Err(failure), Duration::from_millis(5), &opts);
        // Within the live part's 100 ms, the scrape already says so.
        assert!(body(&state).contains("\naws_compute_optimizer_up 0\n"));
    }
}
