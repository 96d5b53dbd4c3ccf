//! The organisation's structure from AWS Organizations, on its own slower
//! interval (`aws.organizations`): every account's name and place in the
//! tree, and the tags listed in `aws.account_tags`. It can never fail or
//! delay the enrollment poll: it runs in its own task, every failure is
//! counted and logged, and the last known data is kept.
//!
//! The walk starts at the roots (`ListRoots`) and, for every root and OU,
//! lists its accounts (`ListAccountsForParent`) and child OUs
//! (`ListOrganizationalUnitsForParent`): `1 + 2 × (OUs + roots)` requests
//! plus one more per 20 accounts or OUs under one parent. That is fewer than
//! `ListAccounts` plus `ListParents` for every account. Tags cost one
//! `ListTagsForResource` per account, so they come after the walk, accounts
//! new since the last walk first. Every request, retries included, waits its
//! turn at `aws.organizations_requests_per_second`. An account that leaves
//! the organisation during the tag pass (`TargetNotFoundException`) is
//! dropped and the pass goes on: at 10,000 accounts a pass takes half an
//! hour, and ordinary churn must not fail it.
//!
//! Stopping (shutdown, or a reload that restarts or switches off the walk)
//! is raced at every listing, the only long waits, and never inside a
//! publish: a publish that has begun finishes before the task ends, so once
//! the task is stopped nothing it learned can appear any more.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::config::PollOptions;
use crate::expose::metrics::OrgMetrics;
use crate::model::{AccountInfo, Directory, Learned, OrgAccount, Page, Root, unix_seconds};
use crate::produce::{Health, Producer, Round, Stopped, blocking, drive};
use crate::shutdown::Shutdown;
use crate::source::error::{ApiError, PollError};
use crate::source::paging::{self, Listing, Pace};
use crate::source::{
    LIST_ACCOUNTS_FOR_PARENT, LIST_OUS, LIST_ROOTS, LIST_TAGS, NameSource, ORGANIZATIONS_PAGE_SIZE,
};
use crate::state::Org;
use crate::storage::{self, Storage};

/// Deadline of one listing (one parent's accounts, one account's tags).
const LISTING_TIMEOUT: Duration = Duration::from_secs(300);

/// Roots and OUs visited at most in one walk (AWS allows a few thousand).
pub const MAX_PARENTS: usize = 100_000;

/// Tags are published every this many accounts, so new accounts' tags show
/// before a long refresh ends.
const PUBLISH_EVERY: usize = 500;

/// Why a refresh ended before its end.
#[derive(Debug)]
pub enum Halt {
    /// A listing failed; the last known data is kept.
    Failed(PollError),
    /// The walk was told to stop.
    Stopped,
}

impl From<PollError> for Halt {
    fn from(e: PollError) -> Halt {
        Halt::Failed(e)
    }
}

/// The error code Organizations gives for an account that is no longer in
/// the organisation.
const GONE: &str = "TargetNotFoundException";

/// What a refresh needs besides the source and the state.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    pub interval: Duration,
    /// `aws.organizations_requests_per_second`, shared with every other
    /// Organizations request of the organisation (the trusted-access check).
    pub pace: Arc<Pace>,
    /// `(label, tag key)`, sorted by label.
    pub tag_labels: Vec<(String, String)>,
    /// `--storage.path`: where each published walk is saved.
    pub storage: Option<Arc<Storage>>,
    /// Serve the saved walk before the first one of this run (at the
    /// organisation's start, not when a reload restarts the walk).
    pub restore: bool,
    /// `aws.organizations_max_age`: older data no longer counts as complete.
    pub max_age: Duration,
}

/// Every item of one Organizations listing, paced, by the paging loop's
/// rules; items without a field we need are counted in
/// `aws_compute_optimizer_skipped_items_total`.
pub(crate) async fn listing<T, F, Fut>(
    operation: &'static str,
    state: &Org,
    opts: &PollOptions,
    pace: &Pace,
    stop: &Shutdown,
    fetch: F,
) -> Result<Vec<T>, Halt>
where
    F: Fn(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, ApiError>>,
{
    let listing = Listing::new(
        operation,
        usize::from(ORGANIZATIONS_PAGE_SIZE),
        LISTING_TIMEOUT,
        opts,
        &state.metrics.api_requests,
    )
    .paced(pace);
    let listed = tokio::select! {
        listed = paging::list_all(&listing, fetch) => listed?,
        _ = stop.wait() => return Err(Halt::Stopped),
    };
    listed.count_skipped(
        &state.metrics.accounts_skipped,
        crate::expose::metrics::SKIPPED_ORGANIZATIONS,
    );
    Ok(listed.items)
}

/// The organisation's roots, and its ID as their ARNs give it (empty when
/// they give none).
async fn roots<S: NameSource>(
    source: &S,
    state: &Org,
    opts: &PollOptions,
    pace: &Pace,
    stop: &Shutdown,
) -> Result<(Vec<Root>, String), Halt> {
    let roots = listing(LIST_ROOTS, state, opts, pace, stop, |t| {
        source.list_roots(t)
    })
    .await?;
    let organization = roots
        .iter()
        .find_map(|r| r.organization.clone())
        .unwrap_or_default();
    Ok((roots, organization))
}

/// Walks the tree from `roots`: each account's name, parent and path
/// (tags left empty).
pub async fn walk<S: NameSource>(
    source: &S,
    state: &Org,
    opts: &PollOptions,
    pace: &Pace,
    stop: &Shutdown,
    roots: Vec<Root>,
) -> Result<BTreeMap<String, AccountInfo>, Halt> {
    let mut queue: VecDeque<(String, String)> = roots.into_iter().map(|r| (r.id, r.name)).collect();
    let mut visited = HashSet::new();
    let mut accounts = BTreeMap::new();
    while let Some((parent, path)) = queue.pop_front() {
        // A parent seen twice (an organisation changing mid-walk) is walked once.
        if !visited.insert(parent.clone()) {
            continue;
        }
        if visited.len() > MAX_PARENTS {
            return Err(Halt::Failed(PollError::TooManyPages {
                operation: LIST_OUS,
                limit: MAX_PARENTS,
            }));
        }
        let children = listing(LIST_ACCOUNTS_FOR_PARENT, state, opts, pace, stop, |t| {
            source.list_accounts_for_parent(&parent, t)
        })
        .await?;
        for OrgAccount { id, name, state } in children {
            let info = AccountInfo {
                name,
                ou_id: parent.clone(),
                ou_path: path.clone(),
                tags: Vec::new(),
                state,
                tags_known: false,
            };
            accounts.insert(id, info);
        }
        let ous = listing(LIST_OUS, state, opts, pace, stop, |t| {
            source.list_ous(&parent, t)
        })
        .await?;
        for (id, name) in ous {
            queue.push_back((id, format!("{path}/{name}")));
        }
    }
    Ok(accounts)
}

/// The values of the wanted tags of one account, in label order.
async fn tags_of<S: NameSource>(
    source: &S,
    account: &str,
    labels: &[(String, String)],
    state: &Org,
    opts: &PollOptions,
    pace: &Pace,
    stop: &Shutdown,
) -> Result<Vec<String>, Halt> {
    let pairs = listing(LIST_TAGS, state, opts, pace, stop, |t| {
        source.list_tags(account, t)
    })
    .await?;
    Ok(labels
        .iter()
        .map(|(_, key)| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        })
        .collect())
}

/// Publishes `dir` (re-rendering `/metrics`) and saves it to storage, off
/// the async workers and in the walk's span (its log lines name the
/// organisation). A failed save is a warning and a counter: serving goes on
/// with what is in memory. Awaited to its end, never raced against a stop.
async fn publish(
    state: &Arc<Org>,
    dir: &Directory,
    storage: &Option<Arc<Storage>>,
    learned: Learned,
) {
    let (st, dir, storage) = (state.clone(), dir.clone(), storage.clone());
    blocking(move || {
        if let Some(s) = &storage
            && let Err(e) = s.save(&dir, learned)
        {
            st.metrics.storage_write_failures.inc();
            tracing::warn!(file = %s.path().display(), error = %e, "cannot save the organisation; a restart would walk it afresh");
        }
        let complete = dir.complete();
        st.publish_walk(dir, learned, complete);
    })
    .await;
}

/// Whether data learned at `learned` (Unix seconds) is young enough to
/// count as complete.
fn fresh(learned: f64, max_age: Duration) -> bool {
    unix_seconds(SystemTime::now()) - learned <= max_age.as_secs_f64()
}

/// Serves the organisation's saved walk until the first walk of this run
/// ends, so a restart keeps every label. Read and parsed on a blocking
/// thread, raced against a stop (nothing is published then); rendered off
/// the startup path, so the server answers `/-/healthy` meanwhile (and
/// `/-/ready` only once it is served). It counts as complete only if it is
/// younger than `aws.organizations_max_age`; its last successful walk is
/// exported from the first scrape on.
async fn restore(state: &Arc<Org>, walk: &WalkOptions, stop: &Shutdown) -> Result<(), Stopped> {
    let Some(storage) = walk.storage.clone() else {
        return Ok(());
    };
    let labels = walk.tag_labels.clone();
    let load = blocking(move || {
        storage
            .load()
            .map(|r| (storage::fit_to_labels(r.directory, &labels), r.learned))
    });
    let loaded = tokio::select! {
        loaded = load => loaded.flatten(),
        _ = stop.wait() => return Err(Stopped),
    };
    if let Some((dir, learned)) = loaded {
        let young = fresh(learned.structure, walk.max_age);
        let complete = dir.complete() && young;
        tracing::info!(
            accounts = dir.len(),
            complete,
            organization_id = %dir.organization,
            age_seconds = (unix_seconds(SystemTime::now()) - learned.structure).max(0.0) as u64,
            "organisation restored from --storage.path; walking it again in the background"
        );
        if !young {
            tracing::warn!(
                max_age = %crate::config::format_duration(walk.max_age),
                "the saved organisation is older than aws.organizations_max_age: served, but not as complete, until a walk succeeds"
            );
        }
        let st = state.clone();
        blocking(move || {
            st.publish_walk(dir, learned, complete);
            st.set_organizations_last_success(learned.walked);
        })
        .await;
    }
    Ok(())
}

/// One refresh: the walk, published at once with each account's last known
/// tags, then the tags, new accounts first. A failed walk keeps everything
/// as it was; a tag listing that fails ends the tag pass and keeps the last
/// known tags of the accounts not reached.
pub async fn refresh<S: NameSource>(
    source: &S,
    state: &Arc<Org>,
    opts: &PollOptions,
    walk_opts: &WalkOptions,
    pace: &Pace,
    stop: &Shutdown,
) -> Result<(), Halt> {
    let mut previous = state.names();
    let labels = &walk_opts.tag_labels;
    let storage = &walk_opts.storage;
    let (roots, organization) = roots(source, state, opts, pace, stop).await?;
    if !previous.organization.is_empty()
        && !organization.is_empty()
        && previous.organization != organization
    {
        // A file from another organisation's exporter, or credentials that
        // now reach another organisation: none of it is this one's.
        tracing::warn!(
            held = %previous.organization,
            found = %organization,
            "the names, OUs and tags held are of another organisation; dropping them before walking this one"
        );
        publish(state, &Directory::default(), storage, Learned::default()).await;
        state.set_organizations_last_success(0.0);
        previous = state.names();
    }
    let mut dir = Directory {
        organization,
        tag_labels: labels.clone(),
        accounts: walk(source, state, opts, pace, stop, roots).await?,
    };
    let now = || unix_seconds(SystemTime::now());
    let mut learned = Learned {
        structure: now(),
        ..state.learned()
    };
    let mut new_accounts = Vec::new();
    let mut known = Vec::new();
    for (id, info) in dir.accounts.iter_mut() {
        match previous.accounts.get(id) {
            Some(old) if previous.tag_labels == *labels => {
                info.tags = old.tags.clone();
                info.tags_known = old.tags_known;
                if old.tags_known {
                    known.push(id.clone());
                } else {
                    new_accounts.push(id.clone());
                }
            }
            _ => {
                info.tags = vec![String::new(); labels.len()];
                info.tags_known = labels.is_empty();
                new_accounts.push(id.clone());
            }
        }
    }
    if labels.is_empty() {
        // The walk is the whole refresh.
        learned.walked = now();
    }
    publish(state, &dir, storage, learned).await;
    if labels.is_empty() {
        return Ok(());
    }
    for (n, id) in new_accounts.iter().chain(&known).enumerate() {
        let tags = match tags_of(source, id, labels, state, opts, pace, stop).await {
            Ok(tags) => tags,
            Err(Halt::Failed(e)) if e.code() == GONE => {
                // Left the organisation since the walk listed it.
                tracing::debug!(account_id = %id, "account left the organisation during the tag pass; dropped");
                dir.accounts.remove(id);
                continue;
            }
            Err(e) => {
                publish(state, &dir, storage, learned).await;
                return Err(e);
            }
        };
        if let Some(info) = dir.accounts.get_mut(id) {
            info.tags = tags;
            info.tags_known = true;
        }
        learned.tags = now();
        if (n + 1) % PUBLISH_EVERY == 0 {
            publish(state, &dir, storage, learned).await;
        }
    }
    learned.walked = now();
    publish(state, &dir, storage, learned).await;
    Ok(())
}

/// The first retry of a failed walk comes this long after it.
const WALK_RETRY: Duration = Duration::from_secs(60);

/// When to walk again after `failures` failed walks in a row: a minute,
/// doubling with each, never later than the interval. A throttled or
/// briefly refused walk is retried long before the next hour, and a
/// lasting failure costs no more than one walk an interval.
pub(crate) fn retry_after(failures: u32, interval: Duration) -> Duration {
    WALK_RETRY
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(interval)
}

/// The organisation walk as a producer: at start it serves the saved walk;
/// a round is one refresh; rounds start `aws.organizations_interval` apart
/// after a success, sooner after a failure ([`retry_after`]).
pub struct Walk<S> {
    source: S,
    walk: WalkOptions,
    opts: PollOptions,
    org: Arc<Org>,
    /// Failed rounds in a row.
    failures: u32,
    /// The latest round's outcome, logged once it is recorded.
    outcome: Option<(Result<(), PollError>, Duration)>,
}

impl<S: NameSource> Walk<S> {
    pub fn new(source: S, walk: WalkOptions, opts: PollOptions, org: Arc<Org>) -> Walk<S> {
        Walk {
            source,
            walk,
            opts,
            org,
            failures: 0,
            outcome: None,
        }
    }
}

/// The walk's health series: `aws_compute_optimizer_organizations_up` and
/// its last success, absent until the first walk ends.
pub fn health(m: &OrgMetrics) -> Health {
    Health {
        up: m.organizations_up.clone(),
        last_success: m.organizations_last_success.clone(),
        duration: None,
        rounds: None,
    }
}

impl<S: NameSource> Producer for Walk<S> {
    async fn start(&mut self, stop: &Shutdown) -> Result<(), Stopped> {
        if !self.walk.restore {
            return Ok(());
        }
        let restored = restore(&self.org, &self.walk, stop).await;
        self.org.set_restored();
        restored
    }

    async fn round(&mut self, stop: &Shutdown) -> Result<Round, Stopped> {
        let started = Instant::now();
        let result = match refresh(
            &self.source,
            &self.org,
            &self.opts,
            &self.walk,
            &self.walk.pace,
            stop,
        )
        .await
        {
            Err(Halt::Stopped) => return Err(Stopped),
            Err(Halt::Failed(e)) => Err(e),
            Ok(()) => Ok(()),
        };
        if result.is_err() && !fresh(self.org.learned().structure, self.walk.max_age) {
            // Kept, but no longer complete once too old.
            self.org.mark_incomplete();
        }
        let ok = result.is_ok();
        self.outcome = Some((result, started.elapsed()));
        Ok(Round::ok(ok))
    }

    fn next_round(&mut self, started: Instant, round: Round) -> Instant {
        if round.ok {
            self.failures = 0;
            started + self.walk.interval
        } else {
            self.failures += 1;
            Instant::now() + retry_after(self.failures, self.walk.interval)
        }
    }

    fn recorded(&mut self, _round: Round) {
        let Some((result, took)) = self.outcome.take() else {
            return;
        };
        let accounts = self.org.names().len();
        match result {
            Ok(()) => {
                tracing::info!(
                    accounts,
                    duration_ms = took.as_millis() as u64,
                    "organisation structure and tags refreshed"
                );
                if took > self.walk.interval {
                    tracing::warn!(
                        accounts,
                        "refreshing the organisation took longer than aws.organizations_interval; raise it or aws.organizations_requests_per_second"
                    );
                }
            }
            Err(e) => tracing::warn!(
                code = e.code(),
                error = %e,
                retry_in = %crate::config::format_duration(retry_after(self.failures + 1, self.walk.interval)),
                advice = "grant organizations:ListRoots, ListOrganizationalUnitsForParent, ListAccountsForParent and ListTagsForResource (management or delegated administrator account); on TooManyRequestsException lower aws.organizations_requests_per_second; check aws.organizations_endpoint_url. Enrollment data is unaffected",
                "refreshing the organisation failed; keeping the last known names, OUs and tags"
            ),
        }
    }
}

/// Serves the saved walk (when `walk_opts.restore`), then refreshes now and
/// again every `interval` (sooner after a failure), until shutdown.
pub async fn run<S: NameSource>(
    source: S,
    walk_opts: WalkOptions,
    opts: PollOptions,
    org: Arc<Org>,
    shutdown: Shutdown,
) {
    let health = health(&org.metrics);
    drive(
        Walk::new(source, walk_opts, opts, org.clone()),
        health,
        org,
        shutdown,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::AccountInfo;
    use crate::shutdown;
    use crate::source::demo::DemoSource;
    use crate::state::State;

    /// Hourly, at a fast pace, without tags, max age three hours.
    fn options(storage: Option<Arc<Storage>>, restore: bool) -> WalkOptions {
        WalkOptions {
            interval: Duration::from_secs(3600),
            pace: Arc::new(Pace::new(1000.0)),
            tag_labels: Vec::new(),
            storage,
            restore,
            max_age: Duration::from_secs(3 * 3600),
        }
    }

    /// The demo organisation, whose first `ListRoots` is refused.
    struct RefusedOnce {
        demo: DemoSource,
        refused: std::sync::atomic::AtomicBool,
    }

    impl NameSource for RefusedOnce {
        async fn list_roots(&self, t: Option<String>) -> Result<Page<Root>, ApiError> {
            if !self.refused.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Err(ApiError::new("AccessDeniedException", "not yet", false));
            }
            self.demo.list_roots(t).await
        }
        async fn list_ous(
            &self,
            p: &str,
            t: Option<String>,
        ) -> Result<Page<(String, String)>, ApiError> {
            self.demo.list_ous(p, t).await
        }
        async fn list_accounts_for_parent(
            &self,
            p: &str,
            t: Option<String>,
        ) -> Result<Page<OrgAccount>, ApiError> {
            self.demo.list_accounts_for_parent(p, t).await
        }
        async fn list_tags(
            &self,
            a: &str,
            t: Option<String>,
        ) -> Result<Page<(String, String)>, ApiError> {
            self.demo.list_tags(a, t).await
        }
        async fn list_service_access(
            &self,
            t: Option<String>,
        ) -> Result<Page<(String, Option<f64>)>, ApiError> {
            self.demo.list_service_access(t).await
        }
        async fn list_delegated_administrators(
            &self,
            t: Option<String>,
        ) -> Result<Page<(String, String)>, ApiError> {
            self.demo.list_delegated_administrators(t).await
        }
    }

    #[test]
    fn a_failed_walk_is_retried_sooner_than_the_interval() {
        let hour = Duration::from_secs(3600);
        let minutes = |n: u64| Duration::from_secs(60 * n);
        assert_eq!(retry_after(1, hour), minutes(1));
        assert_eq!(retry_after(2, hour), minutes(2));
        assert_eq!(retry_after(6, hour), minutes(32));
        assert_eq!(retry_after(7, hour), hour);
        assert_eq!(retry_after(u32::MAX, hour), hour);
        assert_eq!(
            retry_after(1, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }

    /// On tokio's paused clock: the walk refused once is walked again a
    /// minute later, not an interval (an hour) later.
    #[tokio::test(start_paused = true)]
    async fn a_refused_walk_succeeds_a_minute_later() {
        let state = Arc::new(State::new("test", "test"));
        let org = state.set_orgs(&[None]).remove(0);
        let walk = options(None, false);
        let (stop, stopped) = shutdown::channel();
        let source = RefusedOnce {
            demo: DemoSource::new(5, 1),
            refused: false.into(),
        };
        let opts = PollOptions::from_config(&Config::default());
        let started = Instant::now();
        let task = tokio::spawn(run(source, walk, opts, org.clone(), stopped));
        while org.names().is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(3600),
                "not before the interval"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let took = started.elapsed();
        assert!(took >= WALK_RETRY && took < WALK_RETRY * 2, "{took:?}");
        stop.trigger();
        task.await.unwrap();
    }

    /// A saved walk counts as complete only while younger than
    /// `aws.organizations_max_age`; either way it is served, and its last
    /// success is exported.
    #[tokio::test]
    async fn a_restored_walk_is_complete_only_while_young() {
        let dir = std::env::temp_dir().join(format!("coe-restore-{}", std::process::id()));
        let storage = Arc::new(Storage::open(&dir).unwrap());
        let mut saved = Directory::default();
        saved
            .accounts
            .insert("111111111111".into(), AccountInfo::default());
        let now = unix_seconds(SystemTime::now());
        for (age, complete) in [(60.0, 1.0), (4.0 * 3600.0, 0.0)] {
            let learned = Learned {
                structure: now - age,
                tags: now - age,
                walked: now - age,
            };
            storage.save(&saved, learned).unwrap();
            let state = Arc::new(State::new("test", "test"));
            let org = state.set_orgs(&[None]).remove(0);
            let walk = options(Some(storage.clone()), true);
            let (_stop, stopped) = shutdown::channel();
            restore(&org, &walk, &stopped).await.unwrap();
            assert_eq!(org.names().len(), 1, "served at any age");
            let m = &org.metrics;
            let gauge = |g: &prometheus::GaugeVec| g.with_label_values(&[] as &[&str]).get();
            assert_eq!(gauge(&m.organizations_complete), complete, "{age}s old");
            assert!((gauge(&m.organizations_last_success) - (now - age)).abs() < 1e-3);
        }
    }

    /// A reload that stops the walk while it publishes: stopping waits for
    /// the publish, so once the task has ended nothing it learned can still
    /// appear (names switched off stay off).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // The guard is held across awaits on purpose: it pins a publish that
    // runs on a blocking thread, never on this task.
    #[allow(clippy::await_holding_lock)]
    async fn a_stopped_walk_publishes_nothing_after_it_ended() {
        let state = Arc::new(State::new("test", "test"));
        let org = state.set_orgs(&[None]).remove(0);
        let walk = options(None, false);
        let opts = PollOptions::from_config(&Config::default());
        let held = state.hold_publishing();
        let (stop, stopped) = shutdown::channel();
        let mut task = tokio::spawn(run(
            DemoSource::new(30, 1),
            walk,
            opts,
            org.clone(),
            stopped,
        ));
        // The walk has listed everything and its publish has begun (it
        // records when the data was learned first, then waits for the lock).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while org.learned().structure == 0.0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the walk never published"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.trigger();
        // Still publishing: the task cannot have ended, however long we wait.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut task)
                .await
                .is_err(),
            "the walk ended with its publish still in flight"
        );
        drop(held);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the walk ends once its publish is done")
            .unwrap();
        assert_eq!(org.names().len(), 30, "the publish that began finished");
        // What the reload does next: names off. Nothing is left to undo it.
        org.forget_organizations();
        assert_eq!(org.names().len(), 0);
    }
}
