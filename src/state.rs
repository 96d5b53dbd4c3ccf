//! The store: what the producers publish and the HTTP server reads.
//!
//! [`State`] is the exporter: its own metrics, the organisations it watches
//! (one [`Org`] each) and the exposition a scrape serves. Each organisation
//! holds its producers' segments of `/metrics`, one slot each (the walk's
//! `account_info`, the poll's statuses, then any other producer's), and
//! the data its pages show. A producer renders and compresses on its own,
//! off every lock, and publishes by swapping its slot and splicing a new
//! [`Exposition`] from every organisation's slots: the swap clones
//! references to compressed pieces, under a lock that is never held while
//! anything renders. A scrape sees either the whole previous segment or the
//! whole new one, never waits for a producer, and one producer's news never
//! re-renders another's segment, in its organisation or any other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use crate::expose::exposition::{Exposition, Segment, render_in_turn};
use crate::expose::metrics::{OrgMetrics, SelfMetrics, render_walk};
use crate::expose::openmetrics::Format;
use crate::model::{Directory, Learned, Snapshot};
use crate::sync::{lock, read, write};

/// The built-in producers' names (their slots, and their entries in
/// `fleet::PRODUCERS`), in the order a scrape serves their segments (the
/// walk's families sort before the poll's).
pub const WALK: &str = "walk";
pub const POLL: &str = "poll";
const SEGMENTS: [&str; 2] = [WALK, POLL];

/// A producer's data for the pages, of its own type.
type Details = Arc<dyn std::any::Any + Send + Sync>;

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
    /// In configuration order, which is the order of their series.
    orgs: RwLock<Vec<Arc<Org>>>,
    exposition: RwLock<Arc<Exposition>>,
    simulated: AtomicBool,
    /// Serialises the swaps and splices of every producer (microseconds;
    /// never held while rendering or compressing), so none can splice
    /// another's older segment over its newer one.
    publishing: Mutex<()>,
}

/// One organisation: its data, its producers' segments and its metrics.
pub struct Org {
    /// The `organization` label's value; `None` for the only organisation
    /// of a file without `[[organization]]` tables.
    pub name: Option<String>,
    pub metrics: OrgMetrics,
    /// Where its segments are spliced; weak, as the state holds the org.
    state: Weak<State>,
    snapshot: RwLock<Arc<Snapshot>>,
    names: RwLock<Arc<Directory>>,
    /// Its producers' segments, one slot each, in the order a scrape
    /// serves them: [`SEGMENTS`], then any a producer added at run time.
    segments: RwLock<Vec<(&'static str, Arc<Segment>)>>,
    /// What other producers publish for the pages besides their segment
    /// (Automation's accounts), by producer; each reads back its own type.
    details: RwLock<Vec<(&'static str, Details)>>,
    last_poll: RwLock<Option<PollOutcome>>,
    /// When the walk's data was learned (saved with it to storage).
    learned: Mutex<Learned>,
    ready: AtomicBool,
    /// Its saved walk is being read and rendered.
    restoring: AtomicBool,
}

impl State {
    pub fn new(version: &'static str, revision: &str) -> State {
        State {
            metrics: SelfMetrics::new(version, revision),
            version,
            orgs: RwLock::new(Vec::new()),
            exposition: RwLock::new(Arc::new(Exposition::empty())),
            simulated: AtomicBool::new(false),
            publishing: Mutex::new(()),
        }
    }

    /// Makes the organisations exactly `names`, in that order: one already
    /// there keeps its data, metrics and segments; one no longer named goes
    /// with its series. Returns them in order.
    pub fn set_orgs(self: &Arc<State>, names: &[Option<String>]) -> Vec<Arc<Org>> {
        let _publishing = lock(&self.publishing);
        let old = self.orgs();
        let orgs: Vec<Arc<Org>> = names
            .iter()
            .map(|name| {
                old.iter()
                    .find(|o| o.name == *name)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Org::new(name.clone(), Arc::downgrade(self))))
            })
            .collect();
        *write(&self.orgs) = orgs.clone();
        self.splice();
        orgs
    }

    /// Holds every publish back while the guard lives (tests pin a publish
    /// in flight with it).
    #[cfg(test)]
    pub(crate) fn hold_publishing(&self) -> std::sync::MutexGuard<'_, ()> {
        lock(&self.publishing)
    }

    pub fn orgs(&self) -> Vec<Arc<Org>> {
        read(&self.orgs).clone()
    }

    /// Marks the data as simulated (`--demo`), for the pages.
    pub fn set_simulated(&self, simulated: bool) {
        self.simulated.store(simulated, Ordering::Relaxed);
    }

    pub fn is_simulated(&self) -> bool {
        self.simulated.load(Ordering::Relaxed)
    }

    /// True once every organisation's first poll has finished, successfully
    /// or not (readiness): from then on a scrape says something true about
    /// each, either its statuses or `aws_compute_optimizer_up 0` with its
    /// last good data.
    pub fn is_ready(&self) -> bool {
        let orgs = read(&self.orgs);
        !orgs.is_empty() && orgs.iter().all(|o| o.is_ready())
    }

    pub fn exposition(&self) -> Arc<Exposition> {
        read(&self.exposition).clone()
    }

    /// The live part of a scrape: the exporter's own metrics and every
    /// organisation's.
    pub fn encode_live(&self, format: Format) -> Vec<u8> {
        let orgs = self.orgs();
        self.metrics.encode(format, orgs.iter().map(|o| &o.metrics))
    }

    /// A new exposition from every organisation's segments (called under
    /// `publishing`).
    fn splice(&self) {
        let segments = read(&self.orgs)
            .iter()
            .flat_map(|o| {
                read(&o.segments)
                    .iter()
                    .map(|(_, s)| s.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        *write(&self.exposition) = Arc::new(Exposition::spliced(segments));
    }
}

impl Org {
    fn new(name: Option<String>, state: Weak<State>) -> Org {
        Org {
            metrics: OrgMetrics::new(name.as_deref()),
            name,
            state,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            names: RwLock::new(Arc::new(Directory::default())),
            segments: RwLock::new(
                SEGMENTS
                    .iter()
                    .map(|name| (*name, Arc::new(Segment::empty())))
                    .collect(),
            ),
            details: RwLock::new(Vec::new()),
            last_poll: RwLock::new(None),
            learned: Mutex::new(Learned::default()),
            ready: AtomicBool::new(false),
            restoring: AtomicBool::new(false),
        }
    }

    /// True once a poll of this organisation has finished and its saved
    /// walk, if any, is served.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.restoring.load(Ordering::Acquire)
    }

    /// The segment in `name`'s slot (empty until its producer publishes).
    pub fn segment(&self, name: &str) -> Option<Arc<Segment>> {
        read(&self.segments)
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.clone())
    }

    /// Puts `segment` in `name`'s slot, adding the slot (last) if this
    /// organisation has none of that name. Called under the publishing
    /// lock, before the splice.
    fn put_segment(&self, name: &'static str, segment: Arc<Segment>) {
        let mut slots = write(&self.segments);
        match slots.iter_mut().find(|(n, _)| *n == name) {
            Some((_, slot)) => *slot = segment,
            None => slots.push((name, segment)),
        }
    }

    /// Publishes a producer's new segment: swapped into its slot and spliced
    /// into the exposition in one step, then `then` (its live gauges) under
    /// the same lock. What the built-in producers do through their own
    /// publish, any producer does through this.
    pub fn publish_segment(
        &self,
        name: &'static str,
        segment: impl Into<Arc<Segment>>,
        then: impl FnOnce(),
    ) {
        let segment = segment.into();
        self.publishing(|| self.put_segment(name, segment), then);
    }

    /// Keeps `details` as what producer `name` last published for the
    /// pages (call it in [`Org::publish_segment`]'s `then`, so the pages
    /// and `/metrics` change together).
    pub fn set_details<T: std::any::Any + Send + Sync>(&self, name: &'static str, details: Arc<T>) {
        let mut all = write(&self.details);
        all.retain(|(n, _)| *n != name);
        all.push((name, details));
    }

    /// What producer `name` last published for the pages, if it is a `T`.
    pub fn details<T: std::any::Any + Send + Sync>(&self, name: &str) -> Option<Arc<T>> {
        let found = read(&self.details)
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| d.clone())?;
        found.downcast::<T>().ok()
    }

    /// Producer `name` is switched off: its details go.
    pub fn clear_details(&self, name: &str) {
        write(&self.details).retain(|(n, _)| *n != name);
    }

    /// Producer `name` is switched off: its segment and its details go
    /// together.
    pub fn withdraw(&self, name: &'static str) {
        self.publish_segment(name, Segment::empty(), || self.clear_details(name));
    }

    /// Publishes a poll's outcome: with a complete organisation, its
    /// snapshot and segment swapped in one step; without (a failed poll),
    /// the last good ones kept. Ready from the first outcome on, good or
    /// bad: a failing exporter must still be scraped, or nothing alerts.
    pub fn set_poll(&self, complete: Option<(Snapshot, Arc<Segment>)>, outcome: PollOutcome) {
        if let Some((snap, segment)) = complete {
            self.publishing(
                || {
                    self.put_segment(POLL, segment);
                    *write(&self.snapshot) = Arc::new(snap);
                },
                || {},
            );
        }
        *write(&self.last_poll) = Some(outcome);
        self.ready.store(true, Ordering::Release);
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        read(&self.snapshot).clone()
    }

    pub fn names(&self) -> Arc<Directory> {
        read(&self.names).clone()
    }

    /// Runs `swap` and splices a new exposition, under the state's
    /// publishing lock (just the swap if the state is gone).
    /// `then` runs after the splice, still under the lock; it sets live
    /// gauges that must change together with the segment, so the live part
    /// cached in between is dropped after it.
    fn publishing<T>(&self, swap: impl FnOnce() -> T, then: impl FnOnce()) -> T {
        match self.state.upgrade() {
            Some(state) => {
                let _publishing = lock(&state.publishing);
                let out = swap();
                state.splice();
                then();
                state.exposition().forget_live();
                out
            }
            None => {
                let out = swap();
                then();
                out
            }
        }
    }

    /// Drops the live part the exposition cached, which may still show this
    /// organisation's previous health.
    pub fn forget_live(&self) {
        if let Some(state) = self.state.upgrade() {
            state.exposition().forget_live();
        }
    }

    /// Publishes new account names (from AWS Organizations): the walk's
    /// segment only; the poll's stays as it is.
    pub fn set_names(&self, names: Directory) {
        self.set_names_then(names, || {});
    }

    /// [`Org::set_names`], then `then` under the same publishing lock once
    /// the new exposition is spliced (and the cached live part dropped).
    fn set_names_then(&self, names: Directory, then: impl FnOnce()) {
        if *self.names() == names {
            // Nothing to splice: just the gauges, with the cached live part.
            then();
            self.forget_live();
            return;
        }
        let segment = render_in_turn(|| Segment::new(render_walk(&names, self.name.as_deref())));
        self.publishing(
            || {
                *write(&self.names) = Arc::new(names);
                self.put_segment(WALK, segment);
            },
            then,
        );
    }

    pub fn learned(&self) -> Learned {
        *lock(&self.learned)
    }

    pub fn set_learned(&self, learned: Learned) {
        *lock(&self.learned) = learned;
    }

    /// Publishes what a walk learned as one: its names, OUs and tags,
    /// whether they are complete (`aws_compute_optimizer_organizations_complete`)
    /// and when they were learned. The gauge is set after the new segment is
    /// spliced, under the same lock, and the live part cached meanwhile is
    /// dropped, so a scrape never pairs the old `account_info` with the new
    /// completeness (which would tell the rules to hear an incomplete
    /// replica, or silence a complete one).
    pub fn publish_walk(&self, names: Directory, learned: Learned, complete: bool) {
        self.set_learned(learned);
        self.set_names_then(names, || {
            self.metrics
                .organizations_complete
                .with_label_values(&[] as &[&str])
                .set(if complete { 1.0 } else { 0.0 });
        });
    }

    /// `aws_compute_optimizer_organizations_complete` 0, the names kept
    /// (they grew older than `aws.organizations_max_age`).
    pub fn mark_incomplete(&self) {
        self.metrics
            .organizations_complete
            .with_label_values(&[] as &[&str])
            .set(0.0);
        self.forget_live();
    }

    /// `aws_compute_optimizer_organizations_last_success_timestamp_seconds`
    /// as a saved walk knew it (0: none known, the series is absent).
    pub fn set_organizations_last_success(&self, unix: f64) {
        let g = &self.metrics.organizations_last_success;
        if unix > 0.0 {
            g.with_label_values(&[] as &[&str]).set(unix);
        } else {
            g.reset();
        }
        self.forget_live();
    }

    /// The saved walk is served (or there was none): readiness no longer
    /// waits for it.
    pub fn set_restored(&self) {
        self.restoring.store(false, Ordering::Release);
    }

    /// A saved walk is about to be restored: not ready until it is served.
    pub fn set_restoring(&self) {
        self.restoring.store(true, Ordering::Release);
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

    pub fn last_poll(&self) -> Option<PollOutcome> {
        read(&self.last_poll).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, PollOptions};
    use crate::model::Status;
    use crate::model::{Account, AccountInfo};
    use crate::produce::poll::publish;
    use crate::source::error::PollError;

    fn body(state: &State) -> String {
        let format = Format::Text;
        let body = state
            .exposition()
            .body(format, false, || state.encode_live(format));
        String::from_utf8_lossy(&body.concat()).into_owned()
    }

    fn polled(ids: &[&str]) -> Snapshot {
        let mut snap = Snapshot {
            finished_at: Some(SystemTime::now()),
            ..Snapshot::default()
        };
        for id in ids {
            snap.accounts.insert(Account {
                account_id: (*id).into(),
                status: Status::Pending,
                status_reason: None,
                last_updated: None,
            });
        }
        snap
    }

    /// A poll's round as the driver ends it: published, its health
    /// recorded, the cached live part dropped (`produce::drive`).
    fn poll_round(org: &Org, result: Result<Snapshot, PollError>) {
        let ok = result.is_ok();
        let opts = PollOptions::from_config(&Config::default());
        publish(org, result, Duration::from_millis(5), &opts);
        crate::produce::poll::health(&org.metrics).record(
            crate::produce::Round::ok(ok),
            SystemTime::now(),
            Duration::from_millis(5),
        );
        org.forget_live();
    }

    fn named(id: &str) -> Directory {
        let mut names = Directory::default();
        names.accounts.insert(
            id.into(),
            AccountInfo {
                name: "a".into(),
                ..AccountInfo::default()
            },
        );
        names
    }

    /// `organizations_complete` changes with the walk's segment, never
    /// before it: while a new, incomplete walk waits to be spliced, scrapes
    /// still see the old names as complete.
    #[test]
    fn completeness_changes_together_with_the_names() {
        let state = Arc::new(State::new("test", "test"));
        let org = state.set_orgs(&[None]).remove(0);
        org.publish_walk(
            named("111111111111"),
            Learned {
                structure: 1.0,
                tags: 1.0,
                walked: 1.0,
            },
            true,
        );
        let complete = "aws_compute_optimizer_organizations_complete 1";
        assert!(body(&state).contains(complete));
        let mut incomplete = named("222222222222");
        incomplete.tag_labels = vec![("tag_team".into(), "team".into())];
        let held = state.hold_publishing();
        let publishing = {
            let org = org.clone();
            std::thread::spawn(move || {
                org.publish_walk(
                    incomplete,
                    Learned {
                        structure: 2.0,
                        tags: 1.0,
                        walked: 1.0,
                    },
                    false,
                )
            })
        };
        // The publish has begun (the learned times come first).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while org.learned().structure != 2.0 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::yield_now();
        }
        // The gauge itself, not a body (whose live part may be cached).
        let gauge = || {
            org.metrics
                .organizations_complete
                .with_label_values(&[] as &[&str])
                .get()
        };
        let text = body(&state);
        assert!(text.contains("account_id=\"111111111111\""), "{text}");
        assert_eq!(gauge(), 1.0, "completeness ran ahead of the names");
        drop(held);
        publishing.join().unwrap();
        let text = body(&state);
        assert!(text.contains("account_id=\"222222222222\""), "{text}");
        assert!(
            text.contains("aws_compute_optimizer_organizations_complete 0"),
            "{text}"
        );
    }

    #[test]
    fn each_producer_swaps_only_its_own_segment() {
        let state = Arc::new(State::new("test", "test"));
        let org = state.set_orgs(&[None]).remove(0);
        let opts = PollOptions::from_config(&Config::default());
        publish(&org, Ok(polled(&[])), Duration::from_millis(5), &opts);
        let poll = org.segment(POLL).unwrap();
        org.set_names(named("111111111111"));
        // The walk's news spliced in; the poll's segment not rendered again.
        assert!(Arc::ptr_eq(&poll, &org.segment(POLL).unwrap()));
        let text = body(&state);
        assert!(text.contains("aws_compute_optimizer_account_info{account_id=\"111111111111\""));
        assert!(text.contains("aws_compute_optimizer_enrollment_accounts{status=\"Active\"} 0"));
        // And the poll's news leaves the walk's segment alone.
        let walk = org.segment(WALK).unwrap();
        publish(&org, Ok(polled(&[])), Duration::from_millis(5), &opts);
        assert!(Arc::ptr_eq(&walk, &org.segment(WALK).unwrap()));
        assert!(!Arc::ptr_eq(&poll, &org.segment(POLL).unwrap()));
    }

    #[test]
    fn a_failed_poll_shows_at_once_not_after_the_live_part_expires() {
        let state = Arc::new(State::new("test", "test"));
        let org = state.set_orgs(&[None]).remove(0);
        poll_round(&org, Ok(polled(&[])));
        assert!(body(&state).contains("\naws_compute_optimizer_up 1\n"));
        let failure = PollError::RepeatedToken {
            operation: "GetEnrollmentStatusesForOrganization",
            page: 2,
        };
        poll_round(&org, Err(failure));
        // Within the live part's 100 ms, the scrape already says so.
        assert!(body(&state).contains("\naws_compute_optimizer_up 0\n"));
    }

    /// Every line of a family's metadata, counted.
    fn headers(text: &str, name: &str) -> usize {
        text.lines()
            .filter(|l| {
                *l == format!("# TYPE {name} gauge") || *l == format!("# TYPE {name} counter")
            })
            .count()
    }

    #[test]
    fn organisations_share_each_family_and_come_and_go_with_their_series() {
        let state = Arc::new(State::new("test", "test"));
        let names = [Some("blue".to_owned()), Some("green".to_owned())];
        let orgs = state.set_orgs(&names);
        poll_round(&orgs[0], Ok(polled(&["111111111111"])));
        poll_round(&orgs[1], Ok(polled(&["222222222222"])));
        orgs[1].set_names(named("222222222222"));
        let failure = PollError::RepeatedToken {
            operation: "GetEnrollmentStatusesForOrganization",
            page: 2,
        };
        poll_round(&orgs[0], Err(failure));
        let text = body(&state);
        for family in [
            "aws_compute_optimizer_enrollment_status",
            "aws_compute_optimizer_enrollment_accounts",
            "aws_compute_optimizer_account_info",
            "aws_compute_optimizer_up",
            "aws_compute_optimizer_polls_total",
        ] {
            assert_eq!(headers(&text, family), 1, "{family}: {text}");
        }
        for want in [
            "aws_compute_optimizer_enrollment_status{account_id=\"111111111111\",organization=\"blue\",status=\"Pending\"} 1\n",
            "aws_compute_optimizer_enrollment_accounts{organization=\"green\",status=\"Pending\"} 1",
            "aws_compute_optimizer_account_info{account_id=\"222222222222\",account_name=\"a\",account_state=\"\",organization=\"green\",ou_id=\"\"",
            "aws_compute_optimizer_up{organization=\"blue\"} 0\naws_compute_optimizer_up{organization=\"green\"} 1\n",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        assert!(
            !text.contains("\naws_compute_optimizer_up 1\n"),
            "an unlabelled series: {text}"
        );
        // Green goes: its series with it, blue's stay as they were.
        state.set_orgs(&names[..1]);
        let text = body(&state);
        assert!(!text.contains("green"), "{text}");
        assert!(
            text.contains("organization=\"blue\",status=\"Pending\"} 1"),
            "{text}"
        );
    }
}
