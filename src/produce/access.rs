//! Compute Optimizer as AWS Organizations sees it (with `aws.organizations`):
//! whether it has trusted access, since when
//! (`ListAWSServiceAccessForOrganization`), and which accounts are its
//! delegated administrators (`ListDelegatedAdministrators`). When member
//! accounts fail to enroll, that is the first thing to look at.
//!
//! A producer of its own, on `aws.organizations_interval`, whose requests
//! wait their turn at the same pace as the walk's: both share the
//! organisation's Organizations quota. Both calls are the management
//! account's: a delegated administrator is refused, and then the series
//! are absent and the refusal is logged once, not every round.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::PollOptions;
use crate::expose::exposition::{Segment, render_in_turn};
use crate::expose::metrics::{OrgMetrics, render_access};
use crate::model::TrustedAccess;
use crate::produce::walk::{Halt, listing, retry_after};
use crate::produce::{Health, Producer, Round, Stopped, drive};
use crate::shutdown::Shutdown;
use crate::source::error::PollError;
use crate::source::paging::Pace;
use crate::source::{
    COMPUTE_OPTIMIZER_PRINCIPAL, LIST_DELEGATED_ADMINISTRATORS, LIST_SERVICE_ACCESS, NameSource,
};
use crate::state::Org;

/// Its slot in the organisation's segments, and its name in the fleet.
pub const NAME: &str = "access";

pub const UP: &str = "aws_compute_optimizer_trusted_access_up";
pub const LAST_SUCCESS: &str =
    "aws_compute_optimizer_trusted_access_last_success_timestamp_seconds";

/// Codes with which Organizations refuses the caller these calls: they are
/// not for it (a delegated administrator, a member account).
const REFUSED: &[&str] = &["AccessDeniedException", "AWSOrganizationsNotInUseException"];

/// Its health series, the same for every start of the producer.
pub fn health(m: &OrgMetrics) -> Health {
    Health {
        up: m.gauge(
            UP,
            "1 if the latest check of Compute Optimizer's trusted access and delegated administrators in AWS Organizations succeeded, 0 if it failed or was refused. Absent while aws.organizations is off or before its first end.",
        ),
        last_success: m.gauge(
            LAST_SUCCESS,
            "Unix time at which the latest successful check of Compute Optimizer's trusted access ended.",
        ),
        duration: None,
        rounds: None,
    }
}

/// The trusted-access check as a producer.
pub struct Access<S> {
    source: S,
    interval: Duration,
    pace: Arc<Pace>,
    opts: PollOptions,
    org: Arc<Org>,
    failures: u32,
    /// The refusal was logged (once per start of the producer).
    refusal_logged: bool,
    outcome: Option<Result<(), PollError>>,
}

impl<S: NameSource> Access<S> {
    pub fn new(
        source: S,
        interval: Duration,
        pace: Arc<Pace>,
        opts: PollOptions,
        org: Arc<Org>,
    ) -> Access<S> {
        Access {
            source,
            interval,
            pace,
            opts,
            org,
            failures: 0,
            refusal_logged: false,
            outcome: None,
        }
    }

    async fn check(&self, stop: &Shutdown) -> Result<TrustedAccess, Halt> {
        let (source, org, opts, pace) = (&self.source, &self.org, &self.opts, &*self.pace);
        let services = listing(LIST_SERVICE_ACCESS, org, opts, pace, stop, |t| {
            source.list_service_access(t)
        })
        .await?;
        let mut administrators =
            listing(LIST_DELEGATED_ADMINISTRATORS, org, opts, pace, stop, |t| {
                source.list_delegated_administrators(t)
            })
            .await?;
        administrators.sort();
        administrators.dedup();
        Ok(TrustedAccess {
            enabled: services
                .into_iter()
                .find(|(principal, _)| principal == COMPUTE_OPTIMIZER_PRINCIPAL)
                .map(|(_, since)| since),
            delegated_administrators: administrators,
        })
    }

    fn publish(&self, access: Option<TrustedAccess>) {
        let segment = render_in_turn(|| {
            Segment::new(render_access(access.as_ref(), self.org.name.as_deref()))
        });
        let org = &self.org;
        org.publish_segment(NAME, segment, || match access {
            Some(access) => org.set_details(NAME, Arc::new(access)),
            None => org.clear_details(NAME),
        });
    }
}

impl<S: NameSource> Producer for Access<S> {
    async fn round(&mut self, stop: &Shutdown) -> Result<Round, Stopped> {
        let result = match self.check(stop).await {
            Ok(access) => {
                self.publish(Some(access));
                Ok(())
            }
            Err(Halt::Stopped) => return Err(Stopped),
            Err(Halt::Failed(e)) => {
                if REFUSED.contains(&e.code()) {
                    // Not this caller's to know: the series go.
                    self.publish(None);
                }
                Err(e)
            }
        };
        let ok = result.is_ok();
        self.outcome = Some(result);
        Ok(Round::ok(ok))
    }

    fn next_round(&mut self, started: Instant, round: Round) -> Instant {
        if round.ok {
            self.failures = 0;
            started + self.interval
        } else {
            self.failures += 1;
            Instant::now() + retry_after(self.failures, self.interval)
        }
    }

    fn recorded(&mut self, _round: Round) {
        match self.outcome.take() {
            Some(Ok(())) => {
                self.refusal_logged = false;
                let access = self.org.details::<TrustedAccess>(NAME);
                tracing::info!(
                    trusted_access = access.as_ref().is_some_and(|a| a.enabled.is_some()),
                    delegated_administrators =
                        access.map_or(0, |a| a.delegated_administrators.len()),
                    "trusted access for Compute Optimizer read"
                );
            }
            // Logged once: the first refusal since a success.
            Some(Err(e))
                if REFUSED.contains(&e.code())
                    && !std::mem::replace(&mut self.refusal_logged, true) =>
            {
                tracing::warn!(
                    code = e.code(),
                    error = %e,
                    advice = "Organizations answers ListAWSServiceAccessForOrganization and ListDelegatedAdministrators to the management account (and grants them with organizations:ListAWSServiceAccessForOrganization and organizations:ListDelegatedAdministrators); run as a delegated administrator, the exporter goes without them. Logged once; every other series is unaffected",
                    "trusted access for Compute Optimizer cannot be read; its series are absent"
                );
            }
            Some(Err(e)) if REFUSED.contains(&e.code()) => {}
            Some(Err(e)) => tracing::warn!(
                code = e.code(),
                error = %e,
                retry_in = %crate::config::format_duration(retry_after(self.failures + 1, self.interval)),
                "reading Compute Optimizer's trusted access failed; keeping the last answer"
            ),
            None => {}
        }
    }
}

/// Checks now, then every `interval` (sooner after a failure), until `stop`.
pub async fn run<S: NameSource>(
    source: S,
    interval: Duration,
    pace: Arc<Pace>,
    opts: PollOptions,
    org: Arc<Org>,
    stop: Shutdown,
) {
    let health = health(&org.metrics);
    drive(
        Access::new(source, interval, pace, opts, org.clone()),
        health,
        org,
        stop,
    )
    .await;
}

/// Switched off with the walk: its segment, details and health go.
pub fn switched_off(org: &Org) {
    org.withdraw(NAME);
    health(&org.metrics).forget();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::{OrgAccount, Page, Root};
    use crate::source::error::ApiError;
    use crate::state::State;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Organizations that answers, or refuses as it refuses a delegated
    /// administrator.
    #[derive(Default)]
    struct Organizations {
        refuse: AtomicBool,
        asked: AtomicUsize,
    }

    impl NameSource for Arc<Organizations> {
        async fn list_roots(&self, _: Option<String>) -> Result<Page<Root>, ApiError> {
            Ok(Page::default())
        }
        async fn list_ous(
            &self,
            _: &str,
            _: Option<String>,
        ) -> Result<Page<(String, String)>, ApiError> {
            Ok(Page::default())
        }
        async fn list_accounts_for_parent(
            &self,
            _: &str,
            _: Option<String>,
        ) -> Result<Page<OrgAccount>, ApiError> {
            Ok(Page::default())
        }
        async fn list_tags(
            &self,
            _: &str,
            _: Option<String>,
        ) -> Result<Page<(String, String)>, ApiError> {
            Ok(Page::default())
        }
        async fn list_service_access(
            &self,
            _: Option<String>,
        ) -> Result<Page<(String, Option<f64>)>, ApiError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            if self.refuse.load(Ordering::SeqCst) {
                return Err(ApiError::new(
                    "AccessDeniedException",
                    "You don't have permissions to access this resource.",
                    false,
                ));
            }
            Ok(Page {
                items: vec![(COMPUTE_OPTIMIZER_PRINCIPAL.into(), Some(1.6e9))],
                ..Page::default()
            })
        }
        async fn list_delegated_administrators(
            &self,
            _: Option<String>,
        ) -> Result<Page<(String, String)>, ApiError> {
            Ok(Page {
                items: vec![("222233334444".into(), "finops".into())],
                ..Page::default()
            })
        }
    }

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            crate::sync::lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Refused (the exporter runs as a delegated administrator): the series
    /// that were there go, and the reason is logged once however many
    /// rounds are refused after it. On tokio's paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_logged_once_and_its_series_go() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        let state = Arc::new(State::new("test", "test"));
        let org = state.set_orgs(&[None]).remove(0);
        let source = Arc::new(Organizations::default());
        let (stop, stopped) = crate::shutdown::channel();
        let hour = Duration::from_secs(3600);
        let task = tokio::spawn(run(
            source.clone(),
            hour,
            Arc::new(Pace::new(1000.0)),
            PollOptions::from_config(&Config::default()),
            org.clone(),
            stopped,
        ));
        let served = |state: &State| {
            let body =
                state
                    .exposition()
                    .body(crate::expose::openmetrics::Format::Text, false, Vec::new);
            String::from_utf8_lossy(&body.concat()).into_owned()
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = served(&state);
        assert!(
            text.contains("aws_compute_optimizer_organization_trusted_access_enabled 1"),
            "{text}"
        );
        assert!(text.contains("account_id=\"222233334444\""), "{text}");
        source.refuse.store(true, Ordering::SeqCst);
        // The next round, then its retries (1, 2, 4, 8 minutes later).
        tokio::time::sleep(hour + Duration::from_secs(16 * 60)).await;
        assert!(source.asked.load(Ordering::SeqCst) >= 5);
        let text = served(&state);
        assert!(!text.contains("trusted_access"), "{text}");
        assert!(!text.contains("delegated_administrator"), "{text}");
        let logged = String::from_utf8_lossy(&crate::sync::lock(&lines.0)).into_owned();
        let refusals = logged
            .lines()
            .filter(|l| l.contains("trusted access for Compute Optimizer cannot be read"))
            .count();
        assert_eq!(refusals, 1, "{logged}");
        stop.trigger();
        task.await.unwrap();
    }
}
