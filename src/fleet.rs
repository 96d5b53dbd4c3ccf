//! The organisations watched and their lifecycle: the one of `[aws]`, or
//! one per `[[organization]]` table, each with its own clients, producers
//! and data. Applying a configuration plans first (every client is built
//! before anything changes, so a configuration that cannot be applied is
//! refused whole) and then acts: an organisation whose settings are the
//! same is not touched, one that changed restarts only the producers its
//! change concerns, one that is new starts (its saved walk served first),
//! one that is gone stops and its series go.

use std::sync::Arc;

use tracing::Instrument as _;

use crate::config::{Config, OrgSettings};
use crate::produce::{access, automation, poll, walk};
use crate::shutdown::{self, Shutdown};
use crate::source::aws::{AwsSource, StaticCredentials};
use crate::source::demo::{DEMO_ACCOUNTS, DemoSource};
use crate::source::dispatch::Source;
use crate::source::paging::Pace;
use crate::state::{Org, POLL, State, WALK};
use crate::storage::Storage;

/// What `--config.check` adds to the file's own rules: each organisation's
/// clients built exactly as a start builds them, so the check refuses what
/// a start would (no region anywhere, say). Sends no request to AWS.
/// Returns the warnings a start would log (a profile not found).
pub async fn check(config: &Config, demo: bool) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    if demo {
        return Ok(warnings);
    }
    for (name, org) in config.organizations() {
        let (_, warning) = make_source(&None, &org, &None)
            .await
            .map_err(|e| of_organization(name.as_deref(), e))?;
        warnings.extend(warning.map(|w| of_organization(name.as_deref(), w)));
    }
    Ok(warnings)
}

/// An organisation's error, prefixed with its name when it has one.
fn of_organization(name: Option<&str>, e: String) -> String {
    match name {
        Some(name) => format!("organization {name:?}: {e}"),
        None => e,
    }
}

/// An organisation's clients, and a warning a start logs and a check
/// prints (a profile the shared files do not define).
async fn make_source(
    credentials: &Option<StaticCredentials>,
    config: &OrgSettings,
    demo: &Option<Arc<DemoSource>>,
) -> Result<(Source, Option<String>), String> {
    match demo {
        Some(d) => Ok((Source::Demo(d.clone()), None)),
        None => {
            let warning = crate::source::aws::missing_profile(&config.aws).await;
            let s = AwsSource::connect(&config.aws, credentials.clone()).await?;
            let a = &config.aws;
            tracing::info!(
                region = %s.region,
                endpoint = a.endpoint_url.as_deref().unwrap_or("default"),
                sts_endpoint = a.sts_endpoint_url.as_deref().unwrap_or("default"),
                organizations_endpoint = a.organizations_endpoint_url.as_deref().unwrap_or("default"),
                role_arn = a.role_arn.as_deref().unwrap_or(""),
                "AWS client ready"
            );
            Ok((Source::Aws(s), warning))
        }
    }
}

/// The span an organisation's work runs in: its lines carry
/// `organization=<name>` (none for the only, unnamed one).
fn span_of(name: Option<&str>) -> tracing::Span {
    match name {
        Some(name) => tracing::info_span!("organization", organization = %name),
        None => tracing::Span::none(),
    }
}

/// One running producer and the means to stop it.
struct Task {
    stop: shutdown::Trigger,
    handle: tokio::task::JoinHandle<()>,
}

impl Task {
    /// Runs the producer in its organisation's span, so every line it logs
    /// names the organisation.
    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(
        org: &Org,
        run: impl FnOnce(Shutdown) -> F,
    ) -> Task {
        let (stop, stopped) = shutdown::channel();
        Task {
            stop,
            handle: tokio::spawn(run(stopped).instrument(span_of(org.name.as_deref()))),
        }
    }

    async fn stop(self) {
        self.stop.trigger();
        let _ = self.handle.await;
    }
}

/// What a producer is started with.
struct Start<'a> {
    source: &'a Source,
    config: &'a OrgSettings,
    org: &'a Arc<Org>,
    storage: &'a Option<Arc<Storage>>,
    /// The pace every Organizations request of the organisation keeps.
    pace: &'a Arc<Pace>,
    /// The organisation is new: the walk serves its saved data first.
    at_start: bool,
}

/// One producer as the fleet runs it.
struct Registration {
    name: &'static str,
    /// Whether this configuration runs it.
    wanted: fn(&OrgSettings) -> bool,
    /// Whether a change from the first configuration to the second
    /// restarts it (new clients always do).
    changed: fn(&OrgSettings, &OrgSettings) -> bool,
    start: fn(&Start) -> Task,
    /// What switching it off leaves to clear (the walk's names go).
    switched_off: fn(&Org),
}

/// Every producer an organisation runs, in one list. Adding one: a file in
/// `produce/`, and a line here.
const PRODUCERS: &[Registration] = &[
    Registration {
        name: POLL,
        wanted: |_| true,
        changed: |old, new| new.poll != old.poll,
        start: start_poll,
        switched_off: |_| {},
    },
    Registration {
        name: WALK,
        wanted: |c| c.aws.organizations,
        changed: |old, new| new.aws.walk_differs(&old.aws),
        start: start_walk,
        switched_off: Org::forget_organizations,
    },
    Registration {
        name: access::NAME,
        wanted: |c| c.aws.organizations,
        changed: |old, new| new.aws.walk_differs(&old.aws),
        start: start_access,
        switched_off: access::switched_off,
    },
    Registration {
        name: automation::NAME,
        wanted: |c| c.aws.automation,
        changed: |old, new| {
            new.aws.automation_differs(&old.aws) || automation_options_differ(old, new)
        },
        start: start_automation,
        switched_off: automation::switched_off,
    },
];

/// The Automation producer's interval follows `poll.interval` unless set,
/// and its listings take their retry settings from `[poll]`'s options.
fn automation_options_differ(old: &OrgSettings, new: &OrgSettings) -> bool {
    automation_interval(old) != automation_interval(new)
}

fn automation_interval(c: &OrgSettings) -> std::time::Duration {
    c.aws.automation_interval.unwrap_or(c.poll.interval)
}

fn start_poll(s: &Start) -> Task {
    let (source, opts, org) = (s.source.clone(), s.config.poll_options(), s.org.clone());
    Task::spawn(s.org, move |stopped| poll::run(source, opts, org, stopped))
}

fn start_walk(s: &Start) -> Task {
    let restore = s.at_start && s.storage.is_some();
    if restore {
        // Before the task exists, so readiness can never run ahead of it.
        s.org.set_restoring();
    }
    let a = &s.config.aws;
    let options = walk::WalkOptions {
        interval: a.organizations_interval,
        pace: s.pace.clone(),
        tag_labels: crate::config::tag_labels(&a.account_tags),
        storage: s.storage.clone(),
        restore,
        max_age: a.organizations_max_age(),
    };
    let (source, opts, org) = (s.source.clone(), s.config.poll_options(), s.org.clone());
    Task::spawn(s.org, move |stopped| {
        walk::run(source, options, opts, org, stopped)
    })
}

fn start_access(s: &Start) -> Task {
    let interval = s.config.aws.organizations_interval;
    let (source, opts, org, pace) = (
        s.source.clone(),
        s.config.poll_options(),
        s.org.clone(),
        s.pace.clone(),
    );
    Task::spawn(s.org, move |stopped| {
        access::run(source, interval, pace, opts, org, stopped)
    })
}

fn start_automation(s: &Start) -> Task {
    let a = &s.config.aws;
    let options = automation::AutomationOptions {
        interval: automation_interval(s.config),
        region: match s.source {
            Source::Aws(aws) => aws.automation_region.clone(),
            Source::Demo(_) => "demo".into(),
        },
        endpoint_url: a.automation_endpoint_url.clone(),
    };
    let (source, opts, org) = (s.source.clone(), s.config.poll_options(), s.org.clone());
    Task::spawn(s.org, move |stopped| {
        automation::run(source, options, opts, org, stopped)
    })
}

/// The pace of an organisation's Organizations requests.
fn pace_of(config: &OrgSettings) -> Arc<Pace> {
    Arc::new(Pace::new(config.aws.organizations_requests_per_second))
}

/// One organisation's running producers, each restarted on its own when
/// its settings change.
struct Producers {
    source: Source,
    storage: Option<Arc<Storage>>,
    pace: Arc<Pace>,
    running: Vec<(&'static str, Task)>,
}

impl Producers {
    fn start(
        source: Source,
        config: &OrgSettings,
        org: &Arc<Org>,
        storage: Option<Arc<Storage>>,
    ) -> Producers {
        let pace = pace_of(config);
        let start = Start {
            source: &source,
            config,
            org,
            storage: &storage,
            pace: &pace,
            at_start: true,
        };
        let running = PRODUCERS
            .iter()
            .filter(|p| (p.wanted)(config))
            .map(|p| (p.name, (p.start)(&start)))
            .collect();
        Producers {
            source,
            storage,
            pace,
            running,
        }
    }

    /// Applies a new configuration: new clients restart every producer;
    /// otherwise a producer restarts only when its own settings changed.
    /// A producer stops before anything of it is cleared or it starts
    /// again, so a stopped one can publish nothing afterwards.
    async fn reload(
        &mut self,
        old: &OrgSettings,
        new: &OrgSettings,
        source: Option<Source>,
        org: &Arc<Org>,
    ) {
        let clients = source.is_some();
        if let Some(source) = source {
            self.source = source;
        }
        // Every producer that shares the pace restarts with a new one.
        if clients || new.aws.walk_differs(&old.aws) {
            self.pace = pace_of(new);
        }
        for p in PRODUCERS {
            if !clients && !(p.changed)(old, new) {
                continue;
            }
            if let Some(i) = self.running.iter().position(|(name, _)| *name == p.name) {
                self.running.swap_remove(i).1.stop().await;
            }
            if (p.wanted)(new) {
                let start = Start {
                    source: &self.source,
                    config: new,
                    org,
                    storage: &self.storage,
                    pace: &self.pace,
                    at_start: false,
                };
                self.running.push((p.name, (p.start)(&start)));
            } else {
                (p.switched_off)(org);
            }
        }
    }

    async fn stop(self) {
        for (_, task) in self.running {
            task.stop().await;
        }
    }
}

/// Every organisation watched, each with its own clients, producers and
/// data: the one of `[aws]`, or one per `[[organization]]` table.
pub struct Fleet {
    /// `--storage.path`: each organisation has its own file there.
    storage: Option<Storage>,
    /// `--demo`: each organisation is a simulated one of its own.
    demo: bool,
    credentials: Option<StaticCredentials>,
    watched: Vec<Watched>,
}

/// One organisation and what runs for it.
struct Watched {
    org: Arc<Org>,
    /// Its settings as its producers see them.
    config: OrgSettings,
    demo: Option<Arc<DemoSource>>,
    producers: Producers,
}

impl Fleet {
    /// No organisation yet: [`Fleet::apply`] starts them.
    pub fn new(
        storage: Option<Storage>,
        demo: bool,
        credentials: Option<StaticCredentials>,
    ) -> Fleet {
        Fleet {
            storage,
            demo,
            credentials,
            watched: Vec::new(),
        }
    }

    /// Makes the running organisations those of `config`. Every client is
    /// built before anything changes, so a configuration that cannot be
    /// applied is refused whole. An organisation whose settings are the
    /// same is not touched (no request, no restart); one that changed
    /// restarts only the producers its change concerns; one that is new
    /// starts (from its saved walk, if any); one that is gone stops and its
    /// series go.
    pub async fn apply(&mut self, config: &Config, state: &Arc<State>) -> Result<(), String> {
        let wanted = config.organizations();
        // Plan: every client that must be built, built before anything
        // changes, so a configuration that cannot be applied is refused whole.
        let mut plans = Vec::with_capacity(wanted.len());
        for (name, new) in &wanted {
            let current = self.watched.iter().find(|w| w.org.name == *name);
            let build = |demo: Option<Arc<DemoSource>>| async {
                let built = async {
                    let (source, warning) = make_source(&self.credentials, new, &demo).await?;
                    if let Some(warning) = warning {
                        tracing::warn!(warning, "AWS profile not found");
                    }
                    Ok::<_, String>(source)
                };
                built
                    .instrument(span_of(name.as_deref()))
                    .await
                    .map_err(|e| of_organization(name.as_deref(), e))
                    .map(|source| (demo, source))
            };
            plans.push(match current {
                Some(w) if !new.aws.clients_differ(&w.config.aws) => Plan::Keep(None),
                Some(w) => Plan::Keep(Some(build(w.demo.clone()).await?.1)),
                None => {
                    let demo = self.demo.then(|| Arc::new(demo_for(name.as_deref())));
                    let (demo, source) = build(demo).await?;
                    Plan::Start(demo, source)
                }
            });
        }
        // Act.
        let (mut kept, gone): (Vec<Watched>, Vec<Watched>) = std::mem::take(&mut self.watched)
            .into_iter()
            .partition(|w| wanted.iter().any(|(name, _)| *name == w.org.name));
        for w in gone {
            tracing::info!(
                organization = w.org.name.as_deref().unwrap_or(""),
                "organization removed from the configuration; its series go"
            );
            w.producers.stop().await;
        }
        let names: Vec<Option<String>> = wanted.iter().map(|(n, _)| n.clone()).collect();
        let orgs = state.set_orgs(&names);
        for (((name, new), plan), org) in wanted.into_iter().zip(plans).zip(orgs) {
            let current = kept
                .iter()
                .position(|w| w.org.name == name)
                .map(|i| kept.swap_remove(i));
            let watched = match (plan, current) {
                (Plan::Keep(source), Some(mut w)) => {
                    w.producers.reload(&w.config, &new, source, &org).await;
                    w.config = new;
                    w
                }
                // Kept organisations are those planned from `self.watched`.
                (Plan::Keep(_), None) => {
                    return Err(format!(
                        "organization {name:?}: planned as running, but not running"
                    ));
                }
                (Plan::Start(demo, source), _) => {
                    let storage = self
                        .storage
                        .as_ref()
                        .map(|s| Arc::new(s.for_organization(name.as_deref())));
                    let producers = Producers::start(source, &new, &org, storage);
                    Watched {
                        org,
                        config: new,
                        demo,
                        producers,
                    }
                }
            };
            self.watched.push(watched);
        }
        Ok(())
    }

    pub async fn stop(self) {
        for w in self.watched {
            w.producers.stop().await;
        }
    }
}

/// What applying a configuration does to one organisation.
enum Plan {
    /// Running: reload it, with new clients if its AWS settings changed.
    Keep(Option<Source>),
    /// New: start it with these clients.
    Start(Option<Arc<DemoSource>>, Source),
}

/// The simulated organisation of `--demo`: the same for the same name.
fn demo_for(name: Option<&str>) -> DemoSource {
    let seed = name.map_or(0x5eed, |n| {
        n.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    });
    DemoSource::new(DEMO_ACCOUNTS, seed)
}
